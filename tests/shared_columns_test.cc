// Shared step and time columns (format version 3 follower chunks,
// storage/shared_columns.h): series logged together store their columns
// once, and every path that reads, rebuilds, expires or deletes sealed
// chunks gives back the points bit for bit.
#include "storage/shared_columns.h"

#include <bit>
#include <chrono>
#include <map>
#include <thread>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/downsample.h"
#include "storage/engine.h"
#include "storage/keys.h"
#include "storage/series_summary.h"
#include "tests/raw_db.h"
#include "tests/test_util.h"

namespace stepdb::storage {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t S = kMicrosPerStep;

std::vector<uint64_t> Bits(const std::vector<double>& values) {
  std::vector<uint64_t> bits;
  for (double v : values) bits.push_back(std::bit_cast<uint64_t>(v));
  return bits;
}

TEST(LeaderCacheTest, FindsOnlyALowerIdWithTheSameHash) {
  LeaderCache cache(2);
  cache.Add("g", 8, 111, 5);
  EXPECT_EQ(cache.Find("g", 8, 111, 6), SeriesId{5});
  EXPECT_EQ(cache.Find("g", 8, 111, 5), std::nullopt);  // itself
  EXPECT_EQ(cache.Find("g", 8, 111, 4), std::nullopt);  // lower id
  EXPECT_EQ(cache.Find("g", 8, 222, 6), std::nullopt);  // other columns
  EXPECT_EQ(cache.Find("g", 16, 111, 6), std::nullopt);  // other window
  EXPECT_EQ(cache.Find("h", 8, 111, 6), std::nullopt);  // other group
  cache.Add("g", 8, 333, 7);  // a higher id does not replace the leader
  EXPECT_EQ(cache.Find("g", 8, 111, 9), SeriesId{5});
  cache.Add("g", 8, 333, 3);  // a lower one does
  EXPECT_EQ(cache.Find("g", 8, 333, 9), SeriesId{3});
  cache.Add("g", 16, 1, 1);
  cache.Add("g", 24, 1, 1);  // capacity 2: the oldest is forgotten
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.Find("g", 8, 333, 9), std::nullopt);
  EXPECT_EQ(cache.Find("g", 24, 1, 2), SeriesId{1});
}

TEST(RecentLeaderColumnsTest, KeepsTheLastLeadersColumnsWithinItsBytes) {
  const std::vector<uint64_t> steps = {10, 20, 30, 40};
  const std::vector<int64_t> times = {1, 2, 3, 4};
  // Room for two entries of 4 points (64 bytes each).
  RecentLeaderColumns kept(128);
  kept.Add(3, steps, times);
  const PointColumns* found = kept.Find(3, 10);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->steps, steps);
  EXPECT_EQ(found->times_ms, times);
  EXPECT_EQ(kept.Find(3, 20), nullptr);  // another first step
  EXPECT_EQ(kept.Find(4, 10), nullptr);  // another leader

  const std::vector<uint64_t> later = {50, 60, 70, 80};
  kept.Add(5, later, times);
  kept.Add(6, later, times);  // the oldest (3 at 10) goes
  EXPECT_EQ(kept.Find(3, 10), nullptr);
  EXPECT_NE(kept.Find(5, 50), nullptr);
  EXPECT_NE(kept.Find(6, 50), nullptr);

  // Columns larger than the whole budget are not kept.
  const std::vector<uint64_t> many(9, 1);
  const std::vector<int64_t> many_times(9, 1);
  kept.Add(7, many, many_times);
  EXPECT_EQ(kept.Find(7, 1), nullptr);
  EXPECT_NE(kept.Find(6, 50), nullptr);

  kept.Clear();
  EXPECT_EQ(kept.Find(5, 50), nullptr);
  EXPECT_EQ(kept.Find(6, 50), nullptr);
}

TEST(LeaderCacheTest, GroupKeysSeparateRunsAndLabels) {
  const std::string run_a(8, 'a'), run_b(8, 'b');
  const Labels l1 = {{"rank", "1"}}, l2 = {{"rank", "2"}};
  const Labels joined = {{"rank", std::string("1\0rank", 6)}};
  EXPECT_EQ(ColumnGroupKey(run_a, l1), ColumnGroupKey(run_a, l1));
  EXPECT_NE(ColumnGroupKey(run_a, l1), ColumnGroupKey(run_b, l1));
  EXPECT_NE(ColumnGroupKey(run_a, l1), ColumnGroupKey(run_a, l2));
  EXPECT_NE(ColumnGroupKey(run_a, l1), ColumnGroupKey(run_a, {}));
}

// Every chunk of a closed engine's data directory: data key -> bytes.
std::map<std::string, std::string> Chunks(const testing::RawDb& raw) {
  std::map<std::string, std::string> out;
  std::unique_ptr<rocksdb::Iterator> it(
      raw.db->NewIterator(rocksdb::ReadOptions(), raw.family(kChunksFamily)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    out[it->key().ToString()] = it->value().ToString();
  }
  return out;
}

SeriesId SeriesOfKey(const std::string& key) {
  return ReadBigEndian32(key.data() + 8);
}

class SharedColumnsTest : public ::testing::Test {
 protected:
  static constexpr int kMetrics = 4;
  static constexpr uint64_t kSteps = 100;  // windows of 8: 12 full + 4

  void Open() {
    engine_.reset();
    EngineOptions options;
    options.data_dir = dir_.path();
    options.chunk_points = 8;
    auto engine = Engine::Open(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
  }

  void SetUp() override { Open(); }

  // Per rank, kMetrics series logged in one call each step (same steps and
  // jittered times, different values), with times shifted per rank. A
  // fifth series per rank ("eval") has its own times.
  // Waits (bounded) until the sealer has brought the heads down to
  // `points`, so that each append's seals run in the order the committer
  // queued them (series by series, as written): the test then knows which
  // chunk leads.
  void WaitForHeadPoints(uint64_t points) {
    for (int i = 0; i < 500 && engine_->Stats().head_points > points; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(engine_->Stats().head_points, points);
  }

  void Write(const std::string& run = "r1", int ranks = 2) {
    std::mt19937_64 rng(run.size() * 7 + ranks);
    for (int r = 0; r < ranks; ++r) {
      const uint64_t heads_before = engine_->Stats().head_points;
      const Labels labels = {{"rank", std::to_string(r)}};
      std::vector<SeriesId> ids;
      for (int m = 0; m < kMetrics; ++m) {
        auto id = engine_->ResolveSeries(
            {"p", run, "m" + std::to_string(m), labels});
        ASSERT_TRUE(id.ok()) << id.status();
        ids.push_back(*id);
      }
      auto eval = engine_->ResolveSeries({"p", run, "eval", labels});
      ASSERT_TRUE(eval.ok());
      // Ten steps per append, all series of the rank in one batch.
      for (uint64_t first = 0; first < kSteps; first += 10) {
        AppendBatch batch;
        std::vector<PointColumns> cols(kMetrics + 1);
        for (uint64_t s = first; s < first + 10; ++s) {
          const int64_t t = 1'700'000'000'000 + 500 * static_cast<int64_t>(s) +
                            static_cast<int64_t>(rng() % 41) - 20 + 7 * r;
          for (int m = 0; m < kMetrics; ++m) {
            double v = static_cast<double>(static_cast<float>(
                0.001 * static_cast<double>(rng() % 100000)));
            if (m == 3 && s % 17 == 0) v = std::bit_cast<double>(0x7ff8dead0000beefULL);
            cols[m].push_back(s * S, t, v);
          }
          cols[kMetrics].push_back(s * S, t + 3, static_cast<double>(s));
        }
        for (int m = 0; m < kMetrics; ++m) batch.Add(ids[m], cols[m]);
        batch.Add(*eval, cols[kMetrics]);
        auto result = engine_->Append(std::move(batch));
        ASSERT_TRUE(result.ok()) << result.status();
        // The window the head ends in stays open.
        const uint64_t next = first + 10;
        WaitForHeadPoints(heads_before +
                          (kMetrics + 1) * (next - (next - 1) / 8 * 8));
        for (int m = 0; m <= kMetrics; ++m) {
          expected_[m == kMetrics ? *eval : ids[m]].steps.insert(
              expected_[m == kMetrics ? *eval : ids[m]].steps.end(),
              cols[m].steps.begin(), cols[m].steps.end());
          PointColumns& e = expected_[m == kMetrics ? *eval : ids[m]];
          e.times_ms.insert(e.times_ms.end(), cols[m].times_ms.begin(),
                            cols[m].times_ms.end());
          e.values.insert(e.values.end(), cols[m].values.begin(),
                          cols[m].values.end());
        }
      }
      leaders_.push_back(ids[0]);
      evals_.push_back(*eval);
    }
  }

  PointColumns ReadAll(SeriesId id, absl::StatusCode want = absl::StatusCode::kOk,
                       std::string* error = nullptr) {
    PointColumns out;
    auto result = engine_->Read(id, {}, 0, [&](const PointColumns& p) {
      for (size_t i = 0; i < p.size(); ++i) {
        out.push_back(p.steps[i], p.times_ms[i], p.values[i]);
      }
      return true;
    });
    EXPECT_EQ(result.status().code(), want) << result.status();
    if (error != nullptr) *error = std::string(result.status().message());
    return out;
  }

  // Every series written reads back bit for bit (only `from_step` on).
  void ExpectAllExact(uint64_t from_step = 0) {
    for (const auto& [id, all] : expected_) {
      PointColumns want;
      for (size_t i = 0; i < all.size(); ++i) {
        if (all.steps[i] >= from_step) {
          want.push_back(all.steps[i], all.times_ms[i], all.values[i]);
        }
      }
      const PointColumns got = ReadAll(id);
      EXPECT_EQ(got.steps, want.steps) << "series " << id;
      EXPECT_EQ(got.times_ms, want.times_ms) << "series " << id;
      EXPECT_EQ(Bits(got.values), Bits(want.values)) << "series " << id;
    }
  }

  // Closes the engine and returns (follower chunks, chunks) by series, with
  // each follower's leader checked: a lower id of the same rank.
  std::pair<int, int> CountFollowers() {
    engine_.reset();
    testing::RawDb raw(dir_.path());
    int followers = 0, chunks = 0;
    for (const auto& [key, chunk] : Chunks(raw)) {
      auto d = DescribeChunk(chunk);
      EXPECT_TRUE(d.ok()) << d.status();
      ++chunks;
      if (d->leader_series == 0) continue;
      ++followers;
      EXPECT_EQ(d->version, 3);
      EXPECT_LT(d->leader_series, SeriesOfKey(key));
      EXPECT_THAT(leaders_, ::testing::Contains(d->leader_series));
      EXPECT_THAT(evals_, ::testing::Not(::testing::Contains(SeriesOfKey(key))));
    }
    return {followers, chunks};
  }

  testing::TempDir dir_;
  std::unique_ptr<Engine> engine_;
  std::map<SeriesId, PointColumns> expected_;
  std::vector<SeriesId> leaders_, evals_;
};

TEST_F(SharedColumnsTest, SiblingsShareTheirColumnsAndReadBackExactly) {
  Write();
  ASSERT_TRUE(engine_->Compact().ok());
  ExpectAllExact();
  auto [followers, chunks] = CountFollowers();
  // 2 ranks x 3 followers x 13 chunks (12 windows + the partial one).
  EXPECT_EQ(followers, 2 * 3 * 13);
  EXPECT_EQ(chunks, 2 * 5 * 13);
  // After a restart (and RocksDB's own full compaction) too.
  Open();
  ExpectAllExact();
  ASSERT_TRUE(engine_->Compact().ok());
  ExpectAllExact();
}

TEST_F(SharedColumnsTest, ChartsSummariesAndRollupReadsResolveFollowers) {
  Write();
  ASSERT_TRUE(engine_->Compact().ok());
  for (const auto& [id, all] : expected_) {
    // A chart whose buckets cut chunks (edge decodes) and one of raw points.
    ReadRange range;
    range.steps = {3 * S, 91 * S};
    auto buckets = ReadBuckets(*engine_, id, Axis::kStep, range, 7);
    ASSERT_TRUE(buckets.ok()) << buckets.status();
    uint64_t count = 0;
    for (const Bucket& b : *buckets) count += b.count;
    EXPECT_EQ(count, 89u);
    // Every rollup piece's chunk loads to the written points.
    class Pieces : public RollupVisitor {
     public:
      absl::StatusOr<bool> OnChunkPieces(std::span<const RollupPiece>,
                                         ChunkLoader load_chunk) override {
        auto points = load_chunk();
        if (!points.ok()) return points.status();
        got.steps.insert(got.steps.end(), (*points)->steps.begin(),
                         (*points)->steps.end());
        got.times_ms.insert(got.times_ms.end(), (*points)->times_ms.begin(),
                            (*points)->times_ms.end());
        return true;
      }
      void OnHead(const PointColumns&) override {}
      PointColumns got;
    } pieces;
    ASSERT_TRUE(engine_->ScanRollups(id, {}, pieces).ok());
    EXPECT_EQ(pieces.got.steps, all.steps);
    EXPECT_EQ(pieces.got.times_ms, all.times_ms);
    // The summary takes the last point's time through the resolver.
    auto summary = SummarizeSeries(*engine_, id, {});
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->count, all.size());
    EXPECT_EQ(summary->last_time_ms, all.times_ms.back());
  }
}

TEST_F(SharedColumnsTest, MissingLeaderIsDataLossNotACrash) {
  Write("r1", 1);
  ASSERT_TRUE(engine_->Compact().ok());
  const SeriesId leader = leaders_[0];
  engine_.reset();
  {
    testing::RawDb raw(dir_.path(), /*writable=*/true);
    int deleted = 0;
    for (const auto& [key, chunk] : Chunks(raw)) {
      if (SeriesOfKey(key) == leader &&
          ReadBigEndian64(key.data() + kSeriesPrefixSize) == 16 * S) {
        ASSERT_TRUE(raw.db->Delete(rocksdb::WriteOptions(),
                                   raw.family(kChunksFamily), key)
                        .ok());
        ++deleted;
      }
    }
    ASSERT_EQ(deleted, 1);
  }
  Open();
  for (const auto& [id, all] : expected_) {
    if (id == leader || std::count(evals_.begin(), evals_.end(), id)) continue;
    std::string error;
    ReadAll(id, absl::StatusCode::kDataLoss, &error);
    EXPECT_THAT(error, HasSubstr("shares the step and time columns of series"));
    EXPECT_THAT(error, HasSubstr("missing"));
    // Reads that do not touch that window are unaffected.
    ReadRange before;
    before.steps = {0, 15 * S};
    auto result = engine_->Read(id, before, 0, [](const PointColumns&) {
      return true;
    });
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->points, 16u);
  }
}

TEST_F(SharedColumnsTest, RetentionExpiresLeadersAndFollowersTogether) {
  Write();
  ASSERT_TRUE(engine_->Compact().ok());
  // Everything up to step 40 is older than this (steps 500 ms apart, +-20
  // ms of jitter and 7 ms per rank): windows [0, 40) go.
  const int64_t cutoff = 1'700'000'000'000 + 500 * 40 - 30;
  auto expired = engine_->ExpireChunks("p", cutoff);
  ASSERT_TRUE(expired.ok()) << expired.status();
  EXPECT_EQ(expired->chunks, 2u * 5 * 5);  // windows 0..4 of every series
  ExpectAllExact(40 * S);
  Open();
  ExpectAllExact(40 * S);
  auto [followers, chunks] = CountFollowers();
  EXPECT_EQ(followers, 2 * 3 * 8);
  EXPECT_EQ(chunks, 2 * 5 * 8);
}

TEST_F(SharedColumnsTest, ErasingARunLeavesTheOtherExact) {
  Write("r1");
  Write("r2");
  ASSERT_TRUE(engine_->Compact().ok());
  auto deleted = engine_->DeleteRun("p", "r1");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  for (auto it = expected_.begin(); it != expected_.end();) {
    const std::optional<SeriesKey> key = engine_->KeyOf(it->first);
    it = !key ? expected_.erase(it) : std::next(it);
  }
  EXPECT_EQ(expected_.size(), 2u * 5);
  ExpectAllExact();
  ASSERT_TRUE(engine_->ReclaimDeleted().ok());
  Open();
  ExpectAllExact();
}

TEST_F(SharedColumnsTest, RollupsRebuiltAtOpenResolveFollowers) {
  Write();
  ASSERT_TRUE(engine_->Compact().ok());
  engine_.reset();
  {
    // As a directory from before rollups: no records, no marker.
    testing::RawDb raw(dir_.path(), /*writable=*/true);
    ASSERT_TRUE(raw.db->DeleteRange(rocksdb::WriteOptions(),
                                    raw.family(kRollupsFamily), "",
                                    std::string(32, '\xff'))
                    .ok());
  }
  Open();
  ExpectAllExact();
  for (const auto& [id, all] : expected_) {
    auto buckets = ReadBuckets(*engine_, id, Axis::kStep, {}, 10);
    ASSERT_TRUE(buckets.ok()) << buckets.status();
    uint64_t count = 0;
    for (const Bucket& b : *buckets) count += b.count;
    EXPECT_EQ(count, all.size());
  }
}

}  // namespace
}  // namespace stepdb::storage
