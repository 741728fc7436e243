// Live tails: Query.Tail subscribers receive the points of matching series
// as the engine commits them, before their acks go out.
//
// The hub is an engine CommitObserver. On the commit thread it only looks
// up, per committed series, the subscribers whose filter matches (cached
// per series id, rebuilt when subscribers come or go) and hands each a copy
// of the points; a subscriber queues them and writes from its own gRPC
// reactor. A subscriber that reads too slowly loses points past its queue
// bound instead of slowing ingest, and its next message counts them
// (TailResponse.dropped_points): a gap marker.
#ifndef STEPDB_QUERY_TAIL_H_
#define STEPDB_QUERY_TAIL_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"

namespace stepdb::query {

struct TailOptions {
  // Points a subscriber may have queued; more are dropped (a gap).
  size_t max_pending_points = 262'144;
  // Points per TailResponse message.
  size_t page_points = 32'768;
  // Stored points a resuming subscriber (after_step) is sent first; past
  // it the rest of the backlog counts as dropped.
  size_t max_backfill_points = 1'000'000;
  size_t max_subscribers = 10'000;
};

// One subscriber, as the hub sees it.
class TailSubscriber {
 public:
  virtual ~TailSubscriber() = default;
  virtual const storage::SeriesFilter& filter() const = 0;
  // New points of a matching series, on the commit thread: copy and return
  // quickly.
  virtual void Offer(storage::SeriesId series, const storage::PointSpan& points) = 0;
  // The hub is shutting down: finish the stream with `status`.
  virtual void Close(const grpc::Status& status) = 0;
};

class TailHub : public storage::CommitObserver {
 public:
  // `engine` must outlive the hub. Register the hub with
  // engine->AddCommitObserver yourself (and remove it before the engine
  // closes).
  TailHub(const storage::Engine* engine, TailOptions options);
  TailHub(const TailHub&) = delete;
  TailHub& operator=(const TailHub&) = delete;

  void OnCommit(std::span<const storage::CommittedPoints> committed) override;
  // Drops the cached matches of deleted series. Open tails stay open: their
  // filter names a run or a project, not ids, so a run written again
  // under the same name is tailed as before.
  void OnSeriesDeleted(std::span<const storage::SeriesId> series) override;

  // Starts a Query.Tail stream (see the proto) and returns its reactor.
  grpc::ServerWriteReactor<v1::TailResponse>* StartTail(
      const v1::TailRequest& request);

  // Closes every subscriber's stream (UNAVAILABLE, "server shutting down")
  // and refuses new ones. Call before shutting the gRPC server down, so
  // that open tails do not hold it up.
  void Shutdown();

  size_t subscribers() const;

 private:
  class Reactor;

  // Returns false (and does not add) when shut down or full.
  bool Subscribe(TailSubscriber* subscriber);
  // After it returns, no Offer to `subscriber` is running or will run.
  void Unsubscribe(TailSubscriber* subscriber);

  // Constant after construction.
  const storage::Engine* const engine_;
  const TailOptions options_;

  mutable absl::Mutex mu_;
  std::vector<TailSubscriber*> subscribers_ ABSL_GUARDED_BY(mu_);
  // The subscribers matching each series seen since subscribers changed.
  absl::flat_hash_map<storage::SeriesId, std::vector<TailSubscriber*>> matches_
      ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace stepdb::query

#endif  // STEPDB_QUERY_TAIL_H_
