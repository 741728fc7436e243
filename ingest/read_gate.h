// Bounds the memory of write requests that have been read off their streams
// but not yet committed, across all streams.
//
// Why: a request's decoded form (columns and prepared head fragments) is
// two to three times its wire size, and it waits decoded in the engine's
// commit queue. With many streams and a commit thread that is the
// bottleneck (a million series: ~2 s of queue), every stream's request sat
// there decoded at once, ~200 MB at 64 streams (docs/ARCHITECTURE.md,
// "Read gate"). A stream that may not read leaves its
// next request to gRPC flow control, on the wire or at the client, and the
// commit thread still has a full queue to take its groups from.
//
// The bound holds for streams that send back to back (the case that fills
// the queue). A reservation expires (see IngestService) so that a quiet
// client cannot hold room for good; a client that sends every few seconds
// then has its request read and queued unchecked, one per such stream.
#ifndef STEPDB_INGEST_READ_GATE_H_
#define STEPDB_INGEST_READ_GATE_H_

#include <cstdint>
#include <deque>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace stepdb::ingest {

class ReadGate {
 public:
  // A stream waiting for room to read.
  class Waiter {
   public:
    // Called (outside the gate's lock) once room was reserved for the
    // waiter; it must start its read, or Release.
    virtual void Resume() = 0;

   protected:
    ~Waiter() = default;
  };

  // `queued()`: the bytes of requests the engine holds queued now (called
  // under the gate's lock; must not call back into the gate). A read may
  // start while queued() plus the bytes reserved for reads under way stays
  // below `limit`; the one that crosses it is let through (so that a
  // request larger than the limit still goes), the next waits. limit 0: no
  // bound, every read starts at once.
  ReadGate(uint64_t limit, absl::AnyInvocable<uint64_t() const> queued);
  ReadGate(const ReadGate&) = delete;
  ReadGate& operator=(const ReadGate&) = delete;

  // Before `waiter` reads a request expected to bring `expected` bytes (its
  // decoded size, as the engine will count it). True: the bytes are
  // reserved for it, read now. False: it waits, first come first served,
  // and Resume() is called once there is room (the bytes then reserved).
  // Callers may hold their own lock (the gate's lock is taken after
  // theirs, never before).
  bool Admit(Waiter* waiter, uint64_t expected);
  // Ends `waiter`'s reservation, if it has one: its request is now queued
  // at the engine (and counted by queued()), or there will be no read.
  // Then call Wake(). Same locking as Admit.
  void Release(Waiter* waiter);
  // Ends the reservations older than `age`: a client that is quiet while
  // its read waits must not hold room that others could use. Its read
  // still goes through when it comes. Then call Wake().
  void ExpireReservations(absl::Duration age);
  // Resumes waiters while there is room. Call after queued() fell (a group
  // committed) or after Release. Must be called without any lock a
  // waiter's Resume takes.
  void Wake();
  // Takes `waiter` out of the queue if it waits there; true if it did
  // (Resume() will then not be called). Same locking as Admit.
  bool Cancel(Waiter* waiter);

  // Reads that had to wait, since start (for /metrics).
  uint64_t waits() const;

 private:
  bool HasRoomLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReserveLocked(Waiter* waiter, uint64_t expected)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t limit_;
  const absl::AnyInvocable<uint64_t() const> queued_;

  mutable absl::Mutex mu_;
  struct Reservation {
    uint64_t bytes;
    absl::Time since;
  };
  absl::flat_hash_map<Waiter*, Reservation> reservations_ ABSL_GUARDED_BY(mu_);
  uint64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;  // their bytes
  struct Waiting {
    Waiter* waiter;
    uint64_t expected;
  };
  std::deque<Waiting> waiting_ ABSL_GUARDED_BY(mu_);
  uint64_t waits_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace stepdb::ingest

#endif  // STEPDB_INGEST_READ_GATE_H_
