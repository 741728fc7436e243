#include "server/allocator.h"

#include <dlfcn.h>

#include <cstdio>
#include <string>
#include <utility>

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

// Sets the dirty-page decay of every arena, present and future. Returns
// false if jemalloc refused.
bool SetDirtyDecay(absl::Duration decay) {
  Mallctl mallctl = FindMallctl();
  if (mallctl == nullptr) return false;
  ssize_t ms = absl::ToInt64Milliseconds(decay);
  // Arenas made from now on, then each existing one (jemalloc has no "all
  // arenas" form of this setting; an index not in use yet fails, harmlessly).
  if (mallctl("arenas.dirty_decay_ms", nullptr, nullptr, &ms, sizeof(ms)) !=
      0) {
    return false;
  }
  unsigned arenas = 0;
  size_t size = sizeof(arenas);
  if (mallctl("arenas.narenas", &arenas, &size, nullptr, 0) != 0) return false;
  for (unsigned i = 0; i < arenas; ++i) {
    const std::string name = absl::StrCat("arena.", i, ".dirty_decay_ms");
    mallctl(name.c_str(), nullptr, nullptr, &ms, sizeof(ms));
  }
  return true;
}

}  // namespace

bool AllocatorGovernor::Available() { return FindMallctl() != nullptr; }

std::optional<absl::Duration> AllocatorGovernor::DirtyDecay() {
  Mallctl mallctl = FindMallctl();
  ssize_t ms = 0;
  size_t size = sizeof(ms);
  if (mallctl == nullptr ||
      mallctl("arenas.dirty_decay_ms", &ms, &size, nullptr, 0) != 0) {
    return std::nullopt;
  }
  return absl::Milliseconds(ms);
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
  const absl::Duration wanted =
      under_pressure_() ? kTightDecay : kRelaxedDecay;
  if (wanted == current_) return;
  if (!SetDirtyDecay(wanted)) {
    fprintf(stderr, "stepdb: cannot set the allocator's page decay\n");
    failed_ = true;
    return;
  }
  current_ = wanted;
}

}  // namespace stepdb::server
