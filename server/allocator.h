// Tunes the allocator to the memory budget: while the engine is well within
// its budget, freed pages stay with the allocator for reuse for
// kRelaxedDecay before going back to the kernel; under pressure they go
// back within kTightDecay. Only with jemalloc (the server's allocator, see
// CMakeLists.txt); elsewhere it does nothing.
//
// Why: pages handed back are faulted in again at their next use, and on
// this project's VMs a fault and its madvise cost ~12 % of the server's
// CPU at 2.5 M points/s, most of it RocksDB's memtable arenas, freed at each
// flush and allocated again a few seconds later (docs/ARCHITECTURE.md,
// "Allocator"). At a million series under a tight budget the same retained
// pages were ~50-180 MB of RSS, so there they go back fast.
#ifndef STEPDB_SERVER_ALLOCATOR_H_
#define STEPDB_SERVER_ALLOCATOR_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "storage/periodic_thread.h"

namespace stepdb::server {

// What the allocator holds, in bytes (jemalloc's `stats.*`): `allocated`
// by the program, `resident` in physical memory (allocator metadata and
// freed pages not yet returned included), of which `dirty` are freed pages
// kept for reuse (see AllocatorGovernor).
struct AllocatorStats {
  uint64_t allocated = 0;
  uint64_t resident = 0;
  uint64_t dirty = 0;
};

// nullopt without jemalloc. Refreshes jemalloc's statistics (a few
// microseconds; meant for a metrics scrape, not a hot path). Thread-safe.
std::optional<AllocatorStats> ReadAllocatorStats();

class AllocatorGovernor {
 public:
  static constexpr absl::Duration kRelaxedDecay = absl::Seconds(10);
  static constexpr absl::Duration kTightDecay = absl::Milliseconds(500);

  // Calls `under_pressure` every `interval` on its own thread until
  // destroyed (the server passes whether the engine holds more than a
  // quarter of its budget) and sets the decay to match. Does nothing unless
  // Available().
  AllocatorGovernor(absl::AnyInvocable<bool()> under_pressure,
                    absl::Duration interval);
  AllocatorGovernor(const AllocatorGovernor&) = delete;
  AllocatorGovernor& operator=(const AllocatorGovernor&) = delete;

  // Whether the process' allocator can be tuned (jemalloc's mallctl found).
  static bool Available();
  // The decay set for new arenas, when Available().
  static std::optional<absl::Duration> DirtyDecay();
  // Each arena's decay, by index (nullopt: not created yet).
  static std::vector<std::optional<absl::Duration>> ArenaDirtyDecays();

 private:
  // Called on thread_ only.
  void Tick();

  absl::AnyInvocable<bool()> under_pressure_;
  absl::Duration current_ = absl::ZeroDuration();  // none set yet
  std::vector<bool> arena_set_;  // by arena index: current_ applied
  bool failed_ = false;
  std::optional<storage::PeriodicThread> thread_;
};

}  // namespace stepdb::server

#endif  // STEPDB_SERVER_ALLOCATOR_H_
