// A fixed set of threads that run closures handed to them: the engine's
// callback thread (one thread, so its tasks run in submission order) and
// the pool that concurrent aggregates share (query/aggregate.h: one pool
// per server bounds the threads all aggregates use together, instead of
// each starting its own and oversubscribing the cores).
//
// A task may start late (the threads are busy with earlier tasks): a
// submitter that must make progress does not wait for its tasks to start,
// only for work they have claimed (query/aggregate.cc: the calling thread
// reads whatever no helper has claimed yet).
//
// Thread-safety: Submit and Stop are thread-safe.
#ifndef STEPDB_STORAGE_TASK_POOL_H_
#define STEPDB_STORAGE_TASK_POOL_H_

#include <cstdint>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace stepdb::storage {

class TaskPool {
 public:
  // Starts `threads` threads named `name` (0: none; Submit then drops its
  // tasks, so callers do the work on their own thread).
  explicit TaskPool(uint32_t threads, const char* name = "stepdb-pool");
  // Stop().
  ~TaskPool();
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;

  uint32_t threads() const { return static_cast<uint32_t>(threads_.size()); }

  // Queues `task` to run on one of the threads, in submission order. With
  // no threads it is destroyed without running.
  void Submit(absl::AnyInvocable<void() &&> task);

  // Runs every task submitted so far, then ends the threads. Idempotent.
  void Stop();

 private:
  void Loop();

  absl::Mutex mu_;
  // Protected by mu_.
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Constant after construction (started last, once the rest exists).
  std::vector<std::thread> threads_;
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_TASK_POOL_H_
