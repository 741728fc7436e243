// ThreadSanitizer annotations for Debian's prebuilt Abseil synchronization
// library (see docs/RELIABILITY.md, "ThreadSanitizer").
//
// libabsl_synchronization.so is not built with -fsanitize=thread, so the
// __tsan_mutex_* annotations inside absl::Mutex are compiled out and TSan
// cannot see that absl::Mutex orders memory: every ABSL_GUARDED_BY member
// would be reported as racy. This shared library, linked before Abseil into
// every TSan binary (cmake/tsan.cmake), interposes the out-of-line entry
// points of absl::Mutex, absl::CondVar and absl::Notification, calls the real
// ones (dlsym RTLD_NEXT) and adds the same annotations Abseil adds when it is
// built with TSan itself. Nothing else changes: locking semantics are
// Abseil's own.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace {

// The real function `mangled` of libabsl_synchronization.so.
template <typename Fn>
Fn Real(const char* mangled) {
  void* sym = dlsym(RTLD_NEXT, mangled);
  if (sym == nullptr) {
    std::fprintf(stderr,
                 "absl_sync_annotations: %s not found in Abseil (does its "
                 "inline namespace still match?)\n",
                 mangled);
    std::abort();
  }
  return reinterpret_cast<Fn>(sym);
}

#define STEPDB_ABSL_NS "_ZN4absl7debian3"
#define STEPDB_ABSL_NSK "_ZNK4absl7debian3"

constexpr unsigned kRead = __tsan_mutex_read_lock;
constexpr unsigned kTry = __tsan_mutex_try_lock;
constexpr unsigned kTryFailed = __tsan_mutex_try_lock_failed;

// The mutex whose interposed entry point this thread is inside. Abseil's
// entry points call each other (AwaitWithTimeout -> AwaitWithDeadline, ...);
// only the outermost call on a mutex is annotated.
thread_local const void* active_mutex = nullptr;

class Outermost {
 public:
  explicit Outermost(const void* mu) : outermost_(active_mutex != mu) {
    if (outermost_) {
      saved_ = active_mutex;
      active_mutex = mu;
    }
  }
  ~Outermost() {
    if (outermost_) active_mutex = saved_;
  }
  Outermost(const Outermost&) = delete;
  Outermost& operator=(const Outermost&) = delete;
  bool operator!() const { return !outermost_; }

 private:
  const void* saved_ = nullptr;
  const bool outermost_;
};

// Annotates "mu is released, then acquired again" around a call that waits
// (Await, CondVar::Wait): accesses inside the call (Abseil's, and Condition
// functions evaluated by it) are ignored, as Abseil does.
template <typename F>
auto Reacquire(void* mu, unsigned flags, F&& f) {
  __tsan_mutex_pre_unlock(mu, flags);
  auto result = f();
  __tsan_mutex_post_unlock(mu, flags);
  __tsan_mutex_pre_lock(mu, flags);
  __tsan_mutex_post_lock(mu, flags, 0);
  return result;
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static auto real = Real<void (*)(Mutex*)>(STEPDB_ABSL_NS "5Mutex4LockEv");
  Outermost guard(this);
  if (!guard) return real(this);
  __tsan_mutex_pre_lock(this, 0);
  real(this);
  __tsan_mutex_post_lock(this, 0, 0);
}

void Mutex::Unlock() {
  static auto real = Real<void (*)(Mutex*)>(STEPDB_ABSL_NS "5Mutex6UnlockEv");
  Outermost guard(this);
  if (!guard) return real(this);
  __tsan_mutex_pre_unlock(this, 0);
  real(this);
  __tsan_mutex_post_unlock(this, 0);
}

bool Mutex::TryLock() {
  static auto real = Real<bool (*)(Mutex*)>(STEPDB_ABSL_NS "5Mutex7TryLockEv");
  Outermost guard(this);
  if (!guard) return real(this);
  __tsan_mutex_pre_lock(this, kTry);
  const bool ok = real(this);
  __tsan_mutex_post_lock(this, ok ? kTry : kTry | kTryFailed, 0);
  return ok;
}

void Mutex::ReaderLock() {
  static auto real =
      Real<void (*)(Mutex*)>(STEPDB_ABSL_NS "5Mutex10ReaderLockEv");
  Outermost guard(this);
  if (!guard) return real(this);
  __tsan_mutex_pre_lock(this, kRead);
  real(this);
  __tsan_mutex_post_lock(this, kRead, 0);
}

void Mutex::ReaderUnlock() {
  static auto real =
      Real<void (*)(Mutex*)>(STEPDB_ABSL_NS "5Mutex12ReaderUnlockEv");
  Outermost guard(this);
  if (!guard) return real(this);
  __tsan_mutex_pre_unlock(this, kRead);
  real(this);
  __tsan_mutex_post_unlock(this, kRead);
}

bool Mutex::ReaderTryLock() {
  static auto real =
      Real<bool (*)(Mutex*)>(STEPDB_ABSL_NS "5Mutex13ReaderTryLockEv");
  Outermost guard(this);
  if (!guard) return real(this);
  __tsan_mutex_pre_lock(this, kRead | kTry);
  const bool ok = real(this);
  __tsan_mutex_post_lock(this, ok ? kRead | kTry : kRead | kTry | kTryFailed,
                         0);
  return ok;
}

void Mutex::LockWhen(const Condition& cond) {
  static auto real = Real<void (*)(Mutex*, const Condition&)>(
      STEPDB_ABSL_NS "5Mutex8LockWhenERKNS0_9ConditionE");
  Outermost guard(this);
  if (!guard) return real(this, cond);
  __tsan_mutex_pre_lock(this, 0);
  real(this, cond);
  __tsan_mutex_post_lock(this, 0, 0);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static auto real = Real<void (*)(Mutex*, const Condition&)>(
      STEPDB_ABSL_NS "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Outermost guard(this);
  if (!guard) return real(this, cond);
  __tsan_mutex_pre_lock(this, kRead);
  real(this, cond);
  __tsan_mutex_post_lock(this, kRead, 0);
}

// The caller holds the mutex; we do not know in which mode, and writers
// are what matter for Await, so annotate as exclusive.
void Mutex::Await(const Condition& cond) {
  static auto real = Real<void (*)(Mutex*, const Condition&)>(
      STEPDB_ABSL_NS "5Mutex5AwaitERKNS0_9ConditionE");
  Outermost guard(this);
  if (!guard) return real(this, cond);
  Reacquire(this, 0, [&] {
    real(this, cond);
    return 0;
  });
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      STEPDB_ABSL_NS
      "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Outermost guard(this);
  if (!guard) return real(this, cond, timeout);
  return Reacquire(this, 0, [&] { return real(this, cond, timeout); });
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      STEPDB_ABSL_NS "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Outermost guard(this);
  if (!guard) return real(this, cond, deadline);
  return Reacquire(this, 0, [&] { return real(this, cond, deadline); });
}

void CondVar::Wait(Mutex* mu) {
  static auto real = Real<void (*)(CondVar*, Mutex*)>(
      STEPDB_ABSL_NS "7CondVar4WaitEPNS0_5MutexE");
  Outermost guard(mu);
  if (!guard) return real(this, mu);
  Reacquire(mu, 0, [&] {
    real(this, mu);
    return 0;
  });
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static auto real = Real<bool (*)(CondVar*, Mutex*, absl::Duration)>(
      STEPDB_ABSL_NS "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Outermost guard(mu);
  if (!guard) return real(this, mu, timeout);
  return Reacquire(mu, 0, [&] { return real(this, mu, timeout); });
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static auto real = Real<bool (*)(CondVar*, Mutex*, absl::Time)>(
      STEPDB_ABSL_NS "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Outermost guard(mu);
  if (!guard) return real(this, mu, deadline);
  return Reacquire(mu, 0, [&] { return real(this, mu, deadline); });
}

// Notify happens-before every wait that returns true. (Notification's own
// mutex is annotated by the functions above when Abseil calls them.)
void Notification::Notify() {
  static auto real =
      Real<void (*)(Notification*)>(STEPDB_ABSL_NS "12Notification6NotifyEv");
  __tsan_release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  static auto real = Real<void (*)(const Notification*)>(
      STEPDB_ABSL_NSK "12Notification19WaitForNotificationEv");
  real(this);
  __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(
    absl::Duration timeout) const {
  static auto real = Real<bool (*)(const Notification*, absl::Duration)>(
      STEPDB_ABSL_NSK
      "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool notified = real(this, timeout);
  if (notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
