// The gRPC admin service: stats, compaction, and deleting a run or a
// project (right to erasure).
#ifndef STEPDB_QUERY_ADMIN_SERVICE_H_
#define STEPDB_QUERY_ADMIN_SERVICE_H_

#include <atomic>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "auth/authorizer.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"
#include "storage/run_store.h"
#include "storage/watch.h"

namespace stepdb::query {

class AdminService final : public v1::Admin::CallbackService {
 public:
  // `engine`, `authorizer`, `runs` and `watch` must outlive the service; a
  // null authorizer is auth off. Stats and Compact need a global admin
  // token, the deletions an admin token of the project. Deletions go
  // through `runs` (the run metadata cache) and `watch` (the project's
  // rules) when given; without them, straight to the engine (a server
  // without a run store or watch rules has no such state in memory).
  explicit AdminService(storage::Engine* engine,
                        auth::Authorizer* authorizer = nullptr,
                        storage::RunStore* runs = nullptr,
                        storage::WatchEvaluator* watch = nullptr);
  // Waits for a running compaction and running deletions.
  ~AdminService() override;

  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context,
                                  const v1::StatsRequest* request,
                                  v1::StatsResponse* response) override;
  // Runs on a thread of its own (it takes seconds to minutes); a second
  // Compact while one runs fails with ABORTED.
  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext* context,
                                    const v1::CompactRequest* request,
                                    v1::CompactResponse* response) override;
  // Delete, then compact the deleted ranges (ReclaimDeleted), on a thread
  // of their own; audited with what was deleted. See the proto.
  grpc::ServerUnaryReactor* DeleteRun(grpc::CallbackServerContext* context,
                                      const v1::DeleteRunRequest* request,
                                      v1::DeleteResponse* response) override;
  grpc::ServerUnaryReactor* DeleteProject(
      grpc::CallbackServerContext* context,
      const v1::DeleteProjectRequest* request,
      v1::DeleteResponse* response) override;

 private:
  // The shared body of the two deletions (`run` unset: the project).
  grpc::ServerUnaryReactor* StartDelete(grpc::CallbackServerContext* context,
                                        std::string project,
                                        std::optional<std::string> run,
                                        v1::DeleteResponse* response);
  // Deletes and reclaims; fills *response.
  absl::Status Delete(const std::string& project,
                      const std::optional<std::string>& run,
                      v1::DeleteResponse* response);

  // Constant after construction.
  storage::Engine* const engine_;
  auth::Authorizer* const authorizer_;
  storage::RunStore* const runs_;
  storage::WatchEvaluator* const watch_;

  absl::Mutex mu_;
  // Deletion threads; finished ones are joined when the next one starts.
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::list<Worker> deleters_ ABSL_GUARDED_BY(mu_);
  std::thread compactor_ ABSL_GUARDED_BY(mu_);
  bool compacting_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace stepdb::query

#endif  // STEPDB_QUERY_ADMIN_SERVICE_H_
