#include "storage/periodic_thread.h"

#include <utility>

#include "storage/thread_name.h"

namespace stepdb::storage {

PeriodicThread::PeriodicThread(const char* name, absl::Duration interval,
                               FirstRun first,
                               absl::AnyInvocable<void()> task)
    : interval_(interval), task_(std::move(task)) {
  thread_ = std::thread([this, name, first] { Loop(name, first); });
}

PeriodicThread::~PeriodicThread() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void PeriodicThread::Loop(const char* name, FirstRun first) {
  NameThisThread(name);
  bool wait = first == FirstRun::kAfterInterval;
  for (;;) {
    if (wait) {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_)) return;
    } else {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    wait = true;
    task_();
  }
}

}  // namespace stepdb::storage
