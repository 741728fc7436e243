// A fixed set of helper threads that reads share (query/aggregate.h): one
// pool per server bounds the threads all concurrent aggregates use
// together, so many aggregates at once queue for the pool's threads
// instead of each starting its own and oversubscribing the cores.
//
// Tasks run in submission order, each on one of the pool's threads. A task
// may start late (the threads are busy with other requests' tasks): a
// submitter must not wait for its tasks to start, only for work they have
// claimed (query/aggregate.cc does so: the calling thread reads whatever
// no helper has claimed yet, so a busy pool costs a request its helpers,
// never its progress).
//
// Thread-safety: Submit is thread-safe.
#ifndef STEPDB_QUERY_READ_POOL_H_
#define STEPDB_QUERY_READ_POOL_H_

#include <cstdint>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace stepdb::query {

class ReadPool {
 public:
  // Starts `threads` threads (0: none; Submit then drops its tasks, so
  // callers read on their own thread).
  explicit ReadPool(uint32_t threads);
  // Runs the tasks still queued, then joins the threads.
  ~ReadPool();
  ReadPool(const ReadPool&) = delete;
  ReadPool& operator=(const ReadPool&) = delete;

  uint32_t threads() const { return static_cast<uint32_t>(threads_.size()); }

  // Queues `task` to run on one of the threads. With no threads it is
  // destroyed without running.
  void Submit(absl::AnyInvocable<void() &&> task);

 private:
  void Loop();

  absl::Mutex mu_;
  // Protected by mu_.
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Constant after construction.
  std::vector<std::thread> threads_;
};

}  // namespace stepdb::query

#endif  // STEPDB_QUERY_READ_POOL_H_
