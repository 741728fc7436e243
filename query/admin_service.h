// The gRPC admin service: stats and compaction.
#ifndef STEPDB_QUERY_ADMIN_SERVICE_H_
#define STEPDB_QUERY_ADMIN_SERVICE_H_

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "auth/authorizer.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"

namespace stepdb::query {

class AdminService final : public v1::Admin::CallbackService {
 public:
  // `engine` and `authorizer` must outlive the service; a null authorizer
  // is auth off. Every RPC needs a global admin token.
  explicit AdminService(storage::Engine* engine,
                        auth::Authorizer* authorizer = nullptr);
  // Waits for a running compaction.
  ~AdminService() override;

  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context,
                                  const v1::StatsRequest* request,
                                  v1::StatsResponse* response) override;
  // Runs on a thread of its own (it takes seconds to minutes); a second
  // Compact while one runs fails with ABORTED.
  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext* context,
                                    const v1::CompactRequest* request,
                                    v1::CompactResponse* response) override;

 private:
  storage::Engine* const engine_;
  auth::Authorizer* const authorizer_;
  absl::Mutex mu_;
  std::thread compactor_ ABSL_GUARDED_BY(mu_);
  bool compacting_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace stepdb::query

#endif  // STEPDB_QUERY_ADMIN_SERVICE_H_
