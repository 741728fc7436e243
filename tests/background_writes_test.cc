#include "storage/background_writes.h"

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace stepdb::storage {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

BackgroundWritePacer::Options TestOptions() {
  BackgroundWritePacer::Options options;
  options.min_bytes_per_sec = 32 * kMiB;
  options.max_bytes_per_sec = 1024 * kMiB;
  options.averaging = absl::Seconds(5);
  options.headroom = 2;
  return options;
}

// Feeds `steps` updates `step` apart, the writes growing by `bytes` each.
void Feed(BackgroundWritePacer* pacer, absl::Time* now, uint64_t* written,
          int steps, absl::Duration step, uint64_t bytes) {
  for (int i = 0; i < steps; ++i) {
    *now += step;
    *written += bytes;
    pacer->Update(*now, *written);
  }
}

TEST(BackgroundWritePacerTest, UnpacedUntilTheFirstUpdateThenAtTheFloor) {
  BackgroundWritePacer pacer(TestOptions());
  EXPECT_EQ(pacer.bytes_per_sec(), 1024 * kMiB);  // recovery at open
  pacer.Update(absl::UnixEpoch(), 0);
  EXPECT_EQ(pacer.bytes_per_sec(), 32 * kMiB);
  // Deletions go at twice the pace of writes.
  EXPECT_EQ(pacer.delete_bytes_per_sec(), 64 * kMiB);
  // A need far below the floor (1 MiB/s) keeps it there.
  absl::Time now = absl::UnixEpoch();
  uint64_t written = 0;
  Feed(&pacer, &now, &written, 100, absl::Milliseconds(100), kMiB / 10);
  EXPECT_EQ(pacer.bytes_per_sec(), 32 * kMiB);
}

TEST(BackgroundWritePacerTest, FollowsASteadyNeedWithHeadroom) {
  BackgroundWritePacer pacer(TestOptions());
  absl::Time now = absl::UnixEpoch();
  pacer.Update(now, 0);
  // 100 MiB/s for a minute, in 500 ms steps: the limit climbs (doubling
  // while the need fills it) and settles at twice the need.
  uint64_t written = 0;
  Feed(&pacer, &now, &written, 120, absl::Milliseconds(500), 50 * kMiB);
  EXPECT_NEAR(static_cast<double>(pacer.bytes_per_sec()), 200.0 * kMiB,
              2.0 * kMiB);
  // The need goes: back to the floor within a few averaging times.
  Feed(&pacer, &now, &written, 120, absl::Milliseconds(500), 0);
  EXPECT_EQ(pacer.bytes_per_sec(), 32 * kMiB);
}

TEST(BackgroundWritePacerTest, ANeedThatFillsTheLimitDoublesItAtOnce) {
  BackgroundWritePacer pacer(TestOptions());
  absl::Time now = absl::UnixEpoch();
  pacer.Update(now, 0);
  // 30 MiB in a second against a 32 MiB/s limit: the real need may be
  // higher, and an average would take seconds to show it.
  now += absl::Seconds(1);
  pacer.Update(now, 30 * kMiB);
  EXPECT_EQ(pacer.bytes_per_sec(), 64 * kMiB);
  EXPECT_EQ(pacer.delete_bytes_per_sec(), 128 * kMiB);
  now += absl::Seconds(1);
  pacer.Update(now, 30 * kMiB + 60 * kMiB);
  EXPECT_EQ(pacer.bytes_per_sec(), 128 * kMiB);
  // Never past the ceiling.
  uint64_t written = 90 * kMiB;
  Feed(&pacer, &now, &written, 10, absl::Seconds(1), 2048 * kMiB);
  EXPECT_EQ(pacer.bytes_per_sec(), 1024 * kMiB);
}

TEST(BackgroundWritePacerTest, UnpacedLiftsTheLimitWhileAlive) {
  BackgroundWritePacer pacer(TestOptions());
  absl::Time now = absl::UnixEpoch();
  pacer.Update(now, 0);
  {
    const BackgroundWritePacer::Unpaced unpaced(&pacer);
    EXPECT_EQ(pacer.bytes_per_sec(), 1024 * kMiB);
    EXPECT_EQ(pacer.delete_bytes_per_sec(), 2048 * kMiB);
    now += absl::Seconds(1);
    pacer.Update(now, 0);  // no need, but an explicit compaction runs
    EXPECT_EQ(pacer.bytes_per_sec(), 1024 * kMiB);
  }
  now += absl::Seconds(1);
  pacer.Update(now, 0);
  EXPECT_EQ(pacer.bytes_per_sec(), 32 * kMiB);
}

TEST(BackgroundWritePacerTest, AClockOrCountGoingBackOnlyRestartsIt) {
  BackgroundWritePacer pacer(TestOptions());
  absl::Time now = absl::UnixEpoch() + absl::Hours(1);
  pacer.Update(now, 100 * kMiB);
  // A wall-clock step back, then a count below the last one (two callers
  // out of order): neither reads as a huge or negative rate.
  pacer.Update(now - absl::Minutes(10), 200 * kMiB);
  EXPECT_EQ(pacer.bytes_per_sec(), 32 * kMiB);
  pacer.Update(now - absl::Minutes(10) + absl::Seconds(1), 150 * kMiB);
  EXPECT_EQ(pacer.bytes_per_sec(), 32 * kMiB);
  // From there it paces again: 30 MiB in the next second fills the limit.
  pacer.Update(now - absl::Minutes(10) + absl::Seconds(2), 180 * kMiB);
  EXPECT_EQ(pacer.bytes_per_sec(), 64 * kMiB);
}

TEST(BackgroundWritePacerTest, WaitForEmptyTrashRemovesWhatTheSchedulerLeft) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("pacer-trash-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  BackgroundWritePacer pacer(TestOptions());
  EXPECT_TRUE(pacer.WaitForEmptyTrash(dir.string(), absl::ZeroDuration()));
  // A trash file no deletion is scheduled for (one whose deletion failed):
  // waited for, then removed.
  std::ofstream(dir / "000012.log.trash") << "erased points";
  std::ofstream(dir / "000013.log") << "live log";
  EXPECT_TRUE(pacer.WaitForEmptyTrash(dir.string(), absl::Milliseconds(50)));
  EXPECT_FALSE(std::filesystem::exists(dir / "000012.log.trash"));
  EXPECT_TRUE(std::filesystem::exists(dir / "000013.log"));
  std::filesystem::remove_all(dir);
}

// Through RocksDB's limiter: what it lets through is what Update counts.
TEST(BackgroundWritePacerTest, CountsWhatTheLimiterLetsThrough) {
  BackgroundWritePacer pacer(TestOptions());
  pacer.Update(absl::Now());
  ASSERT_EQ(pacer.bytes_per_sec(), 32 * kMiB);
  const absl::Time start = absl::Now();
  // 3 MiB, within one 100 ms refill of a 32 MiB/s limit.
  for (int i = 0; i < 3; ++i) {
    pacer.limiter()->Request(static_cast<int64_t>(kMiB), rocksdb::Env::IO_HIGH,
                             nullptr, rocksdb::RateLimiter::OpType::kWrite);
  }
  EXPECT_EQ(pacer.limiter()->GetTotalBytesThrough(), static_cast<int64_t>(3 * kMiB));
  // Counted over (at least) the time the requests took: an update 50 ms
  // later sees >= 3 MiB in <= ~the refill period, i.e. the limit filled.
  pacer.Update(start + absl::Milliseconds(50));
  EXPECT_EQ(pacer.bytes_per_sec(), 64 * kMiB);
}

}  // namespace
}  // namespace stepdb::storage
