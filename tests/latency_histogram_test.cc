#include "storage/latency_histogram.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace stepdb::storage {
namespace {

using Bounds = decltype(LatencyHistogram::kBounds);

size_t BucketOf(double seconds) {
  const Bounds& b = LatencyHistogram::kBounds;
  for (size_t i = 0; i < b.size(); ++i) {
    if (seconds <= b[i]) return i;
  }
  return b.size();  // +Inf
}

TEST(LatencyHistogramTest, EmptyHistogramCountsNothing) {
  LatencyHistogram h;
  const LatencyHistogram::Snapshot s = h.Take();
  EXPECT_EQ(s.count(), 0u);
  EXPECT_EQ(s.sum_seconds, 0);
  for (uint64_t c : s.cumulative) EXPECT_EQ(c, 0u);
}

TEST(LatencyHistogramTest, BucketsAreCumulativeWithInclusiveUpperBounds) {
  LatencyHistogram h;
  h.Record(absl::Microseconds(100));   // <= 0.5 ms
  h.Record(absl::Microseconds(500));   // exactly 0.5 ms: still the first
  h.Record(absl::Milliseconds(3));     // <= 5 ms
  h.Record(absl::Milliseconds(30));    // <= 50 ms
  h.Record(absl::Seconds(60));         // only +Inf
  h.Record(absl::Milliseconds(-1));    // a clock step back counts as 0
  const LatencyHistogram::Snapshot s = h.Take();
  ASSERT_EQ(BucketOf(0.0005), 0u);
  EXPECT_EQ(s.cumulative[0], 3u);
  EXPECT_EQ(s.cumulative[BucketOf(0.0025)], 3u);
  EXPECT_EQ(s.cumulative[BucketOf(0.003)], 4u);
  EXPECT_EQ(s.cumulative[BucketOf(0.03)], 5u);
  EXPECT_EQ(s.cumulative[LatencyHistogram::kBounds.size() - 1], 5u);  // 10 s
  EXPECT_EQ(s.count(), 6u);
  EXPECT_NEAR(s.sum_seconds, 0.0001 + 0.0005 + 0.003 + 0.03 + 60, 1e-6);
}

TEST(LatencyHistogramTest, ConcurrentRecordsAreAllCounted) {
  LatencyHistogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 10000; ++i) h.Record(absl::Milliseconds(t + 1));
    });
  }
  for (auto& t : threads) t.join();
  const LatencyHistogram::Snapshot s = h.Take();
  EXPECT_EQ(s.count(), 40000u);
  EXPECT_EQ(s.cumulative[BucketOf(0.001)], 10000u);
  EXPECT_EQ(s.cumulative[BucketOf(0.0025)], 20000u);
  EXPECT_EQ(s.cumulative[BucketOf(0.005)], 40000u);
  EXPECT_NEAR(s.sum_seconds, 10000 * (0.001 + 0.002 + 0.003 + 0.004), 1e-6);
}

}  // namespace
}  // namespace stepdb::storage
