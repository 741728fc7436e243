#include "server/allocator.h"

#include <dlfcn.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace stepdb::server {
namespace {

using Mallctl = int (*)(const char*, void*, size_t*, void*, size_t);

// jemalloc's mallctl when it is the process' allocator; looked up at run
// time so that the server also builds and runs without it.
Mallctl FindMallctl() {
  static const Mallctl mallctl =
      reinterpret_cast<Mallctl>(dlsym(RTLD_DEFAULT, "mallctl"));
  return mallctl;
}

// A value of jemalloc's by name; nullopt if it has none by that name.
template <typename T>
std::optional<T> Read(Mallctl mallctl, const char* name) {
  T value{};
  size_t size = sizeof(value);
  if (mallctl(name, &value, &size, nullptr, 0) != 0) return std::nullopt;
  return value;
}

// A decay setting (ms) of jemalloc's; nullopt if it has none by that name
// (an arena not made yet).
std::optional<ssize_t> ReadDecay(Mallctl mallctl, const std::string& name) {
  return Read<ssize_t>(mallctl, name.c_str());
}

bool WriteDecay(Mallctl mallctl, const std::string& name, ssize_t ms) {
  return mallctl(name.c_str(), nullptr, nullptr, &ms, sizeof(ms)) == 0;
}

// The default for arenas made from now on.
constexpr char kDefaultDecay[] = "arenas.dirty_decay_ms";

std::string ArenaDecay(unsigned index) {
  return absl::StrCat("arena.", index, ".dirty_decay_ms");
}

// Sets the dirty-page decay of arena `index`, unless it does not exist
// (yet: false) or purges at once (jemalloc's arena for allocations of 8 MiB
// and more, made on first use, is left as it is: true).
bool SetArenaDirtyDecay(Mallctl mallctl, unsigned index, ssize_t ms) {
  const std::string name = ArenaDecay(index);
  const std::optional<ssize_t> now = ReadDecay(mallctl, name);
  if (!now) return false;
  if (*now == 0) return true;
  return WriteDecay(mallctl, name, ms);
}

unsigned ArenaCount(Mallctl mallctl) {
  return Read<unsigned>(mallctl, "arenas.narenas").value_or(0);
}

}  // namespace

std::optional<AllocatorStats> ReadAllocatorStats() {
  Mallctl mallctl = FindMallctl();
  if (mallctl == nullptr) return std::nullopt;
  // jemalloc's statistics are a snapshot taken when the epoch advances.
  uint64_t epoch = 1;
  if (mallctl("epoch", &epoch, nullptr, &epoch, sizeof(epoch)) != 0) {
    return std::nullopt;
  }
  const auto allocated = Read<size_t>(mallctl, "stats.allocated");
  const auto resident = Read<size_t>(mallctl, "stats.resident");
  // Summed over all arenas (MALLCTL_ARENAS_ALL), in pages.
  const auto dirty_pages = Read<size_t>(mallctl, "stats.arenas.4096.pdirty");
  const auto page = Read<size_t>(mallctl, "arenas.page");
  if (!allocated || !resident || !dirty_pages || !page) return std::nullopt;
  return AllocatorStats{.allocated = *allocated,
                        .resident = *resident,
                        .dirty = *dirty_pages * *page};
}

bool AllocatorGovernor::Available() { return FindMallctl() != nullptr; }

std::optional<absl::Duration> AllocatorGovernor::DirtyDecay() {
  Mallctl mallctl = FindMallctl();
  if (mallctl == nullptr) return std::nullopt;
  const std::optional<ssize_t> ms = ReadDecay(mallctl, kDefaultDecay);
  if (!ms) return std::nullopt;
  return absl::Milliseconds(*ms);
}

std::vector<std::optional<absl::Duration>>
AllocatorGovernor::ArenaDirtyDecays() {
  std::vector<std::optional<absl::Duration>> decays;
  Mallctl mallctl = FindMallctl();
  if (mallctl == nullptr) return decays;
  decays.resize(ArenaCount(mallctl));
  for (unsigned i = 0; i < decays.size(); ++i) {
    if (auto ms = ReadDecay(mallctl, ArenaDecay(i))) {
      decays[i] = absl::Milliseconds(*ms);
    }
  }
  return decays;
}

AllocatorGovernor::AllocatorGovernor(
    absl::AnyInvocable<bool()> under_pressure, absl::Duration interval)
    : under_pressure_(std::move(under_pressure)) {
  if (!Available()) return;
  thread_.emplace("stepdb-alloc", interval,
                  storage::PeriodicThread::FirstRun::kNow, [this] { Tick(); });
}

void AllocatorGovernor::Tick() {
  if (failed_) return;
  Mallctl mallctl = FindMallctl();
  const absl::Duration wanted =
      under_pressure_() ? kTightDecay : kRelaxedDecay;
  const ssize_t ms = absl::ToInt64Milliseconds(wanted);
  if (wanted != current_) {
    if (!WriteDecay(mallctl, kDefaultDecay, ms)) {
      fprintf(stderr, "stepdb: cannot set the allocator's page decay\n");
      failed_ = true;
      return;
    }
    current_ = wanted;
    arena_set_.clear();
  }
  // Every arena, including those made after the last change (jemalloc
  // makes some lazily), but the one that purges at once (see
  // SetArenaDirtyDecay: its blocks are the largest, and the measurements
  // in docs/BENCHMARKS.md were taken with it eager). An arena is set once
  // per change: setting it restarts its decay.
  arena_set_.resize(ArenaCount(mallctl), false);
  for (unsigned i = 0; i < arena_set_.size(); ++i) {
    if (!arena_set_[i]) arena_set_[i] = SetArenaDirtyDecay(mallctl, i, ms);
  }
}

}  // namespace stepdb::server
