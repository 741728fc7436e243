#include "server/allocator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "gtest/gtest.h"

namespace stepdb::server {
namespace {

// Whether every existing arena (but the one that purges at once) and the
// default for new ones have `want`.
bool AllAre(absl::Duration want) {
  if (AllocatorGovernor::DirtyDecay() != want) return false;
  for (const auto& decay : AllocatorGovernor::ArenaDirtyDecays()) {
    if (decay.has_value() && *decay != absl::ZeroDuration() &&
        *decay != want) {
      return false;
    }
  }
  return true;
}

// Waits up to 5 s for the governor to have set `want` everywhere.
bool DecayBecomes(absl::Duration want) {
  for (int i = 0; i < 500; ++i) {
    if (AllAre(want)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(AllocatorGovernorTest, KeepsFreedPagesLongerUnlessUnderPressure) {
  if (!AllocatorGovernor::Available()) {
    GTEST_SKIP() << "not linked with jemalloc (e.g. a sanitizer build)";
  }
  std::atomic<bool> pressure{false};
  {
    AllocatorGovernor governor([&] { return pressure.load(); },
                               absl::Milliseconds(5));
    EXPECT_TRUE(DecayBecomes(AllocatorGovernor::kRelaxedDecay));
    // A block this large comes from an arena jemalloc makes on first use
    // and sets to purge at once; the governor leaves that one so.
    auto large = std::make_unique<char[]>(64 << 20);
    large[0] = 1;
    large.reset();
    EXPECT_TRUE(DecayBecomes(AllocatorGovernor::kRelaxedDecay));
    const auto decays = AllocatorGovernor::ArenaDirtyDecays();
    EXPECT_EQ(std::count(decays.begin(), decays.end(), absl::ZeroDuration()),
              1);
    pressure = true;
    EXPECT_TRUE(DecayBecomes(AllocatorGovernor::kTightDecay));
    pressure = false;
    EXPECT_TRUE(DecayBecomes(AllocatorGovernor::kRelaxedDecay));
    pressure = true;
    EXPECT_TRUE(DecayBecomes(AllocatorGovernor::kTightDecay));
  }
  // Stopped: the setting stays as it was last set.
  pressure = false;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(AllocatorGovernor::DirtyDecay(), AllocatorGovernor::kTightDecay);
}

}  // namespace
}  // namespace stepdb::server
