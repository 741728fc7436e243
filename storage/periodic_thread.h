// A background thread that runs a task at a fixed interval until it is
// destroyed: the shape of the server's housekeeping loops (retention, the
// idle-stream reaper, the allocator governor).
#ifndef STEPDB_STORAGE_PERIODIC_THREAD_H_
#define STEPDB_STORAGE_PERIODIC_THREAD_H_

#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace stepdb::storage {

class PeriodicThread {
 public:
  enum class FirstRun { kNow, kAfterInterval };

  // Starts a thread named `name` (at most 15 characters) that calls `task`
  // every `interval` (measured from the end of one call to the start of the
  // next), the first time as `first` says. `task` may block; it runs on
  // that thread only.
  PeriodicThread(const char* name, absl::Duration interval, FirstRun first,
                 absl::AnyInvocable<void()> task);
  // Waits for a call in progress to return, then stops the thread.
  ~PeriodicThread();
  PeriodicThread(const PeriodicThread&) = delete;
  PeriodicThread& operator=(const PeriodicThread&) = delete;

 private:
  void Loop(const char* name, FirstRun first);

  // Constant after construction.
  const absl::Duration interval_;
  absl::AnyInvocable<void()> task_;  // called on thread_ only

  // A mutex and flag rather than absl::Notification: its timed wait locks
  // inside Debian's (uninstrumented) Abseil, which ThreadSanitizer then
  // sees unlocked by our (annotated) Mutex::Unlock.
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_PERIODIC_THREAD_H_
