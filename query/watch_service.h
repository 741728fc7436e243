// The gRPC watch service (callback API): watch rules (create, list, delete)
// and the stream of their events. Rules are evaluated by a
// storage::WatchEvaluator on the engine's commit path; this service is only
// their wire face.
#ifndef STEPDB_QUERY_WATCH_SERVICE_H_
#define STEPDB_QUERY_WATCH_SERVICE_H_

#include <cstddef>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "auth/authorizer.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/watch.h"

namespace stepdb::query {

struct WatchServiceOptions {
  // Events read from the evaluator per fetch of an Events stream: a stream
  // holds at most this many events in memory.
  size_t page_events = 256;
  // Checks each call's scope on its project; nullptr: auth off. Must
  // outlive the service.
  auth::Authorizer* authorizer = nullptr;
};

class WatchService final : public v1::Watch::CallbackService {
 public:
  // `evaluator` must outlive the service.
  explicit WatchService(storage::WatchEvaluator* evaluator,
                        WatchServiceOptions options = {});
  ~WatchService() override;

  // Ends every open Events stream with UNAVAILABLE and refuses new ones, so
  // that grpc::Server::Shutdown need not wait for following clients to go
  // away. Call it before the server's Shutdown.
  void Shutdown();

  grpc::ServerUnaryReactor* CreateRule(grpc::CallbackServerContext* context,
                                       const v1::WatchRule* request,
                                       v1::WatchRule* response) override;
  grpc::ServerUnaryReactor* ListRules(
      grpc::CallbackServerContext* context,
      const v1::ListWatchRulesRequest* request,
      v1::ListWatchRulesResponse* response) override;
  grpc::ServerUnaryReactor* DeleteRule(
      grpc::CallbackServerContext* context,
      const v1::DeleteWatchRuleRequest* request,
      v1::DeleteWatchRuleResponse* response) override;
  // Replays the stored events after `after_seq`, then (with `follow`)
  // streams new ones. A stream writes one event at a time and fetches the
  // next page only when its client has taken the previous one, so a slow
  // reader never holds up evaluation: it reads the stored log as it
  // catches up.
  grpc::ServerWriteReactor<v1::WatchEvent>* Events(
      grpc::CallbackServerContext* context,
      const v1::WatchEventsRequest* request) override;

 private:
  class EventsReactor;
  // False if the service is shut down (the stream must end at once).
  bool Register(EventsReactor* stream);
  void Unregister(EventsReactor* stream);

  // Constant after construction.
  storage::WatchEvaluator* const evaluator_;
  const WatchServiceOptions options_;

  absl::Mutex mu_;
  absl::flat_hash_set<EventsReactor*> streams_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace stepdb::query

#endif  // STEPDB_QUERY_WATCH_SERVICE_H_
