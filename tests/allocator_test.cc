#include "server/allocator.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace stepdb::server {
namespace {

// Waits up to 5 s for the governor to have set `want`.
bool DecayBecomes(absl::Duration want) {
  for (int i = 0; i < 500; ++i) {
    if (AllocatorGovernor::DirtyDecay() == want) return true;
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
