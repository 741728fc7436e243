#include "ingest/read_gate.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace stepdb::ingest {

ReadGate::ReadGate(uint64_t limit, absl::AnyInvocable<uint64_t() const> queued)
    : limit_(limit), queued_(std::move(queued)) {}

bool ReadGate::HasRoomLocked() const {
  return limit_ == 0 || queued_() + reserved_ < limit_;
}

bool ReadGate::Admit(Waiter* waiter, uint64_t expected) {
  absl::MutexLock lock(&mu_);
  // Those already waiting go first.
  if (waiting_.empty() && HasRoomLocked()) {
    reserved_ += expected;
    return true;
  }
  waiting_.push_back({waiter, expected});
  ++waits_;
  return false;
}

void ReadGate::Release(uint64_t expected) {
  absl::MutexLock lock(&mu_);
  reserved_ -= std::min(reserved_, expected);
}

void ReadGate::Wake() {
  std::vector<Waiter*> resumed;
  {
    absl::MutexLock lock(&mu_);
    while (!waiting_.empty() && HasRoomLocked()) {
      reserved_ += waiting_.front().expected;
      resumed.push_back(waiting_.front().waiter);
      waiting_.pop_front();
    }
  }
  for (Waiter* waiter : resumed) waiter->Resume();
}

bool ReadGate::Cancel(Waiter* waiter) {
  absl::MutexLock lock(&mu_);
  auto it = std::find_if(waiting_.begin(), waiting_.end(),
                         [waiter](const Waiting& w) { return w.waiter == waiter; });
  if (it == waiting_.end()) return false;
  waiting_.erase(it);
  return true;
}

uint64_t ReadGate::waits() const {
  absl::MutexLock lock(&mu_);
  return waits_;
}

}  // namespace stepdb::ingest
