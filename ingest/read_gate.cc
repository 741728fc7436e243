#include "ingest/read_gate.h"

#include <algorithm>
#include <cassert>
#include <utility>
#include <vector>

namespace stepdb::ingest {

ReadGate::ReadGate(uint64_t limit, absl::AnyInvocable<uint64_t() const> queued)
    : limit_(limit), queued_(std::move(queued)) {}

bool ReadGate::HasRoomLocked() const {
  return limit_ == 0 || queued_() + reserved_ < limit_;
}

void ReadGate::ReserveLocked(Waiter* waiter, uint64_t expected) {
  if (limit_ == 0) return;
  Reservation& r = reservations_[waiter];
  reserved_ = reserved_ - r.bytes + expected;
  r = {expected, absl::Now()};
}

bool ReadGate::Admit(Waiter* waiter, uint64_t expected) {
  absl::MutexLock lock(&mu_);
  // Those already waiting go first.
  if (waiting_.empty() && HasRoomLocked()) {
    ReserveLocked(waiter, expected);
    return true;
  }
  waiting_.push_back({waiter, expected});
  ++waits_;
  return false;
}

void ReadGate::Release(Waiter* waiter) {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(waiter);
  if (it == reservations_.end()) return;
  assert(reserved_ >= it->second.bytes);
  reserved_ -= it->second.bytes;
  reservations_.erase(it);
}

void ReadGate::ExpireReservations(absl::Duration age) {
  absl::MutexLock lock(&mu_);
  const absl::Time before = absl::Now() - age;
  absl::erase_if(reservations_, [&](const auto& entry) {
    if (entry.second.since >= before) return false;
    reserved_ -= entry.second.bytes;
    return true;
  });
}

void ReadGate::Wake() {
  std::vector<Waiter*> resumed;
  {
    absl::MutexLock lock(&mu_);
    while (!waiting_.empty() && HasRoomLocked()) {
      ReserveLocked(waiting_.front().waiter, waiting_.front().expected);
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
