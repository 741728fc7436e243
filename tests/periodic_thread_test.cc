#include "storage/periodic_thread.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace stepdb::storage {
namespace {

using FirstRun = PeriodicThread::FirstRun;

TEST(PeriodicThreadTest, FirstRunNowCallsAtOnce) {
  std::atomic<int> calls{0};
  {
    // An interval far longer than the test: only the first call can come.
    PeriodicThread t("test-now", absl::Hours(1), FirstRun::kNow,
                     [&] { ++calls; });
    for (int i = 0; i < 500 && calls < 1; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  EXPECT_EQ(calls.load(), 1);
}

TEST(PeriodicThreadTest, CallsRepeatEveryInterval) {
  std::atomic<int> calls{0};
  {
    PeriodicThread t("test-repeat", absl::Milliseconds(5),
                     FirstRun::kAfterInterval, [&] { ++calls; });
    for (int i = 0; i < 500 && calls < 3; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  EXPECT_GE(calls.load(), 3);
}

TEST(PeriodicThreadTest, FirstRunAfterIntervalWaitsAndStopsPromptly) {
  std::atomic<int> calls{0};
  const auto start = std::chrono::steady_clock::now();
  {
    // Destroyed long before the first interval ends: never called, and the
    // destructor does not wait out the interval.
    PeriodicThread t("test-later", absl::Hours(1), FirstRun::kAfterInterval,
                     [&] { ++calls; });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(calls.load(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(PeriodicThreadTest, DestructionWaitsForTheCallInProgress) {
  std::atomic<bool> started{false}, finished{false};
  {
    PeriodicThread t("test-wait", absl::Hours(1), FirstRun::kNow, [&] {
      started = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      finished = true;
    });
    while (!started) std::this_thread::yield();
  }
  EXPECT_TRUE(finished.load());
}

}  // namespace
}  // namespace stepdb::storage
