// Downsampled reads (storage/downsample.h, Query.ReadDownsampled) against a
// brute-force scan of Engine::Read output.
//
// Sums are compared with a tolerance: ReadBuckets adds a merged chunk's
// stored partial sum, the brute force adds point by point, so the two may
// differ in the last bits. The tolerance is 1e-12 relative to the bucket's
// sum of |finite values| (relative to the sum itself it would not bound
// cancellation). Everything else is compared exactly, values bit for bit.
#include "storage/downsample.h"

#include <grpcpp/grpcpp.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "query/query_service.h"
#include "rocksdb/db.h"
#include "storage/keys.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"
#include "tests/test_util.h"

namespace stepdb::storage {
namespace {

constexpr uint64_t S = kMicrosPerStep;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kMinTime = std::numeric_limits<int64_t>::min();
constexpr int64_t kMaxTime = std::numeric_limits<int64_t>::max();

struct Expected {
  Bucket bucket;
  double abs_sum = 0;  // sum of |finite values|, for the sum tolerance
};

// The documented bucket layout and a point-by-point scan, written apart from
// the implementation (signed 128-bit arithmetic, a map from index to bucket).
std::vector<Expected> BruteForce(const Engine& engine, SeriesId id, Axis axis,
                                 const ReadRange& range, uint32_t max_buckets) {
  using i128 = __int128;
  i128 from, to;
  if (axis == Axis::kStep) {
    from = range.steps.from;
    to = range.steps.to;
  } else {
    from = range.times.from_ms;
    to = range.times.to_ms;
  }
  i128 width;
  i128 origin = from;
  if (axis == Axis::kStep && range.steps.from % S == 0 && to - from >= S) {
    // A power of two of whole steps, on the absolute grid of that width.
    const i128 whole = (to - from) / S + 1;
    i128 steps = 1;
    while (steps < (whole + max_buckets - 1) / max_buckets) steps *= 2;
    while (to / (steps * S) - from / (steps * S) + 1 > max_buckets) steps *= 2;
    width = steps * S;
    origin = from / width * width;
  } else {
    width = (to - from + 1 + max_buckets - 1) / max_buckets;
  }
  std::map<int64_t, Expected> buckets;
  auto status = engine.Read(id, range, 0, [&](const PointColumns& p) {
    for (size_t i = 0; i < p.size(); ++i) {
      const i128 x =
          axis == Axis::kStep ? i128(p.steps[i]) : i128(p.times_ms[i]);
      const int64_t index = static_cast<int64_t>((x - origin) / width);
      auto [it, inserted] = buckets.try_emplace(index);
      Expected& e = it->second;
      Bucket& b = e.bucket;
      if (inserted) {
        const i128 grid_start = origin + index * width;
        const i128 start = std::max(grid_start, from);
        const i128 end = std::min(grid_start + width - 1, to);
        if (axis == Axis::kStep) {
          b.start_step = static_cast<uint64_t>(start);
          b.end_step = static_cast<uint64_t>(end);
        } else {
          b.start_ms = static_cast<int64_t>(start);
          b.end_ms = static_cast<int64_t>(end);
        }
        b.first = p.values[i];
      }
      const double v = p.values[i];
      b.last = v;
      b.last_step = p.steps[i];
      ++b.count;
      if (std::isnan(v)) {
        ++b.nan_count;
      } else if (v == kInf) {
        ++b.pos_inf_count;
      } else if (v == -kInf) {
        ++b.neg_inf_count;
      } else {
        if (b.finite_count() == 1 || v < b.min) b.min = v;
        if (b.finite_count() == 1 || v > b.max) b.max = v;
        b.sum += v;
        e.abs_sum += std::abs(v);
      }
    }
    return true;
  });
  EXPECT_TRUE(status.ok()) << status.status();
  std::vector<Expected> out;
  for (auto& [index, e] : buckets) out.push_back(e);
  return out;
}

uint64_t Bits(double v) { return std::bit_cast<uint64_t>(v); }

void ExpectSameBuckets(const std::vector<Bucket>& got,
                       const std::vector<Expected>& want,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const Bucket& g = got[i];
    const Bucket& w = want[i].bucket;
    SCOPED_TRACE(what + " bucket " + std::to_string(i));
    EXPECT_EQ(g.start_step, w.start_step);
    EXPECT_EQ(g.end_step, w.end_step);
    EXPECT_EQ(g.start_ms, w.start_ms);
    EXPECT_EQ(g.end_ms, w.end_ms);
    EXPECT_EQ(g.count, w.count);
    EXPECT_EQ(g.nan_count, w.nan_count);
    EXPECT_EQ(g.pos_inf_count, w.pos_inf_count);
    EXPECT_EQ(g.neg_inf_count, w.neg_inf_count);
    EXPECT_EQ(Bits(g.first), Bits(w.first));
    EXPECT_EQ(Bits(g.last), Bits(w.last));
    EXPECT_EQ(g.last_step, w.last_step);
    EXPECT_EQ(g.has_finite(), w.has_finite());
    EXPECT_EQ(Bits(g.min), Bits(w.min));
    EXPECT_EQ(Bits(g.max), Bits(w.max));
    EXPECT_NEAR(g.sum, w.sum, 1e-12 * std::max(1.0, want[i].abs_sum));
  }
}

class DownsampleTest : public ::testing::Test {
 protected:
  void Open(size_t chunk_points = 16) {
    engine_.reset();
    EngineOptions options;
    options.data_dir = dir_.path();
    options.chunk_points = chunk_points;
    options.sync = false;
    auto engine = Engine::Open(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
  }

  SeriesId Resolve(const std::string& metric) {
    auto id = engine_->ResolveSeries({"proj", "run-1", metric, {}});
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : 0;
  }

  void Append(SeriesId id, const PointColumns& points) {
    AppendBatch batch;
    batch.Add(id, points);
    auto result = engine_->Append(std::move(batch));
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ((*result)[0].accepted, points.size());
  }

  void Compact() {
    auto result = engine_->Compact();
    ASSERT_TRUE(result.ok()) << result.status();
  }

  std::vector<Bucket> Buckets(SeriesId id, Axis axis, const ReadRange& range,
                              uint32_t max_buckets,
                              BucketReadStats* stats = nullptr) {
    auto got = ReadBuckets(*engine_, id, axis, range, max_buckets, stats);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : std::vector<Bucket>{};
  }

  void Check(SeriesId id, Axis axis, const ReadRange& range,
             uint32_t max_buckets, BucketReadStats* stats = nullptr) {
    const std::string what =
        std::string(axis == Axis::kStep ? "step" : "time") + " steps [" +
        std::to_string(range.steps.from) + "," +
        std::to_string(range.steps.to) + "] times [" +
        std::to_string(range.times.from_ms) + "," +
        std::to_string(range.times.to_ms) + "] buckets " +
        std::to_string(max_buckets);
    const std::vector<Bucket> got = Buckets(id, axis, range, max_buckets, stats);
    ExpectSameBuckets(got, BruteForce(*engine_, id, axis, range, max_buckets),
                      what);
    ExpectStreamedSame(id, axis, range, max_buckets, got, what);
  }

  // StreamBuckets hands over exactly ReadBuckets' buckets, bit for bit, in
  // order, at their index on the grid, with the same read statistics.
  void ExpectStreamedSame(SeriesId id, Axis axis, const ReadRange& range,
                          uint32_t max_buckets, const std::vector<Bucket>& want,
                          const std::string& what) {
    SCOPED_TRACE("StreamBuckets " + what);
    BucketReadStats want_stats, got_stats;
    ASSERT_TRUE(
        ReadBuckets(*engine_, id, axis, range, max_buckets, &want_stats).ok());
    const BucketGrid grid(axis, range, max_buckets);
    std::vector<Bucket> got;
    size_t last_index = 0;
    absl::Status status = StreamBuckets(
        *engine_, id, axis, range, max_buckets,
        [&](size_t index, const Bucket& b) {
          EXPECT_LT(index, grid.count());
          if (!got.empty()) {
            EXPECT_GT(index, last_index);
          }
          last_index = index;
          Bucket& copy = got.emplace_back(b);
          grid.SetBounds(index, &copy);
        },
        &got_stats);
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_EQ(got.size(), want.size());
    // Every field, values as bits.
    auto fields = [](const Bucket& b) {
      auto bits = [](double v) { return std::bit_cast<uint64_t>(v); };
      return std::vector<uint64_t>{
          b.start_step,     b.end_step,  static_cast<uint64_t>(b.start_ms),
          static_cast<uint64_t>(b.end_ms), b.count,   b.nan_count,
          b.pos_inf_count,  b.neg_inf_count, b.last_step,
          bits(b.first),    bits(b.last),    bits(b.min),
          bits(b.max),      bits(b.sum)};
    };
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(fields(got[i]), fields(want[i])) << "bucket " << i;
    }
    EXPECT_EQ(got_stats.pieces_merged, want_stats.pieces_merged);
    EXPECT_EQ(got_stats.chunks_merged, want_stats.chunks_merged);
    EXPECT_EQ(got_stats.chunks_decoded, want_stats.chunks_decoded);
    EXPECT_EQ(got_stats.head_points, want_stats.head_points);
  }

  stepdb::testing::TempDir dir_;
  std::unique_ptr<Engine> engine_;
};

// Random points: mostly whole steps, some fractional; jittered times that
// sometimes go backwards; values with NaN, +Inf, -Inf and NaN-only runs.
PointColumns RandomPoints(std::mt19937_64& rng, size_t n, uint64_t* step,
                          int64_t* time) {
  PointColumns p;
  std::uniform_real_distribution<double> unit(0, 1);
  std::normal_distribution<double> normal(0, 100);
  for (size_t i = 0; i < n; ++i) {
    const double r = unit(rng);
    *step += r < 0.7 ? S : (r < 0.9 ? 1 + rng() % (3 * S) : 1 + rng() % 100);
    *time += static_cast<int64_t>(rng() % 2000) - 200;
    double v;
    const double c = unit(rng);
    if ((*step / S) % 97 < 3) {
      v = kNaN;  // a run of NaN only
    } else if (c < 0.03) {
      v = kNaN;
    } else if (c < 0.05) {
      v = kInf;
    } else if (c < 0.07) {
      v = -kInf;
    } else if (c < 0.09) {
      v = c < 0.08 ? 0.0 : -0.0;
    } else {
      v = normal(rng);
    }
    p.push_back(*step, *time, v);
  }
  return p;
}

TEST_F(DownsampleTest, RandomDataMatchesBruteForce) {
  Open(16);
  std::mt19937_64 rng(20240501);
  const SeriesId id = Resolve("train/loss");
  uint64_t step = 0;
  int64_t time = 1'700'000'000'000;
  // Sealed chunks (Compact seals the head), then more points in the head.
  Append(id, RandomPoints(rng, 700, &step, &time));
  Compact();
  Append(id, RandomPoints(rng, 300, &step, &time));
  Compact();
  Append(id, RandomPoints(rng, 13, &step, &time));  // stays in the head
  const uint64_t last_step = step;
  const int64_t first_time = 1'700'000'000'000 - 300'000;
  const int64_t last_time = time + 300'000;

  BucketReadStats total;
  const uint32_t kBucketCounts[] = {1, 2, 3, 7, 10, 64, 100, 1000, 5000};
  for (int q = 0; q < 400; ++q) {
    const Axis axis = q % 3 == 0 ? Axis::kTime : Axis::kStep;
    const uint32_t buckets = kBucketCounts[rng() % std::size(kBucketCounts)];
    ReadRange range;
    auto pick_step = [&] {
      // Whole steps half the time, slightly outside the data sometimes.
      uint64_t s = rng() % (last_step + 10 * S);
      return q % 2 == 0 ? s / S * S : s;
    };
    auto pick_time = [&] {
      return first_time +
             static_cast<int64_t>(rng() % (last_time - first_time));
    };
    if (axis == Axis::kStep) {
      range.steps.from = pick_step();
      range.steps.to = pick_step();
      if (range.steps.from > range.steps.to) {
        std::swap(range.steps.from, range.steps.to);
      }
      if (q % 7 == 1) {  // and a time filter
        range.times.from_ms = pick_time();
        range.times.to_ms = kMaxTime;
      }
    } else {
      range.times.from_ms = pick_time();
      range.times.to_ms = pick_time();
      if (range.times.from_ms > range.times.to_ms) {
        std::swap(range.times.from_ms, range.times.to_ms);
      }
      if (q % 7 == 3) range.steps.to = pick_step();  // and a step filter
    }
    BucketReadStats stats;
    Check(id, axis, range, buckets, &stats);
    total.chunks_merged += stats.chunks_merged;
    total.chunks_decoded += stats.chunks_decoded;
    total.head_points += stats.head_points;
  }
  // The whole series, on either axis.
  for (uint32_t buckets : kBucketCounts) {
    ReadRange all;
    all.steps = {0, last_step};
    Check(id, Axis::kStep, all, buckets);
    ReadRange times;
    times.times = {first_time, last_time};
    Check(id, Axis::kTime, times, buckets);
  }
  // The summaries were used, and chunks were decoded, and the head read.
  EXPECT_GT(total.chunks_merged, 100u);
  EXPECT_GT(total.chunks_decoded, 100u);
  EXPECT_GT(total.head_points, 0u);
}

TEST_F(DownsampleTest, OpenAndHugeRangesDoNotOverflow) {
  Open(16);
  std::mt19937_64 rng(7);
  const SeriesId id = Resolve("m");
  uint64_t step = 0;
  int64_t time = -5000;  // negative times too
  Append(id, RandomPoints(rng, 100, &step, &time));
  Compact();
  Append(id, RandomPoints(rng, 5, &step, &time));
  for (uint32_t buckets : {1u, 2u, 3u, 1000u, kMaxBuckets}) {
    Check(id, Axis::kStep, ReadRange{}, buckets);  // [0, 2^64 - 1]
    Check(id, Axis::kTime, ReadRange{}, buckets);  // [-2^63, 2^63 - 1]
  }
  // A single bucket covering the whole axis.
  auto all = Buckets(id, Axis::kStep, ReadRange{}, 1);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].count, 105u);
  EXPECT_EQ(all[0].start_step, 0u);
  EXPECT_EQ(all[0].end_step, std::numeric_limits<uint64_t>::max());
  auto all_times = Buckets(id, Axis::kTime, ReadRange{}, 1);
  ASSERT_EQ(all_times.size(), 1u);
  EXPECT_EQ(all_times[0].start_ms, kMinTime);
  EXPECT_EQ(all_times[0].end_ms, kMaxTime);
}

TEST_F(DownsampleTest, WholeStepRangesGetWholeStepBuckets) {
  Open(16);
  const SeriesId id = Resolve("m");
  PointColumns p;
  for (uint64_t s = 0; s < 1000; ++s) p.push_back(s * S, 1000 * s, s);
  p.push_back(999 * S + 500'000, 999'999, 1e9);  // after `to` below
  Append(id, p);
  Compact();

  ReadRange range;
  range.steps = {0, 999 * S};
  auto b = Buckets(id, Axis::kStep, range, 1000);
  ASSERT_EQ(b.size(), 1000u);
  for (uint64_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(b[i].start_step, i * S);
    EXPECT_EQ(b[i].end_step, i == 999 ? 999 * S : i * S + S - 1);
    EXPECT_EQ(b[i].count, 1u);
    EXPECT_EQ(b[i].first, static_cast<double>(i));
  }
  // 1000 steps into 300 buckets: 4 steps each (ceil(1000 / 300)), 250 buckets.
  b = Buckets(id, Axis::kStep, range, 300);
  ASSERT_EQ(b.size(), 250u);
  EXPECT_EQ(b[1].start_step, 4 * S);
  EXPECT_EQ(b[1].end_step, 8 * S - 1);
  EXPECT_EQ(b[1].sum, 4 + 5 + 6 + 7);
  // More buckets than points: one per step, fractional steps join theirs.
  range.steps = {990 * S, 999 * S + 999'999};
  b = Buckets(id, Axis::kStep, range, 100'000);
  ASSERT_EQ(b.size(), 10u);
  EXPECT_EQ(b[9].count, 2u);
  EXPECT_EQ(b[9].last, 1e9);
  EXPECT_EQ(b[9].max, 1e9);
  // Less than a step from a whole step: micro-step buckets.
  range.steps = {999 * S, 999 * S + 999'999};
  b = Buckets(id, Axis::kStep, range, 4);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].start_step, 999 * S);
  EXPECT_EQ(b[0].end_step, 999 * S + 249'999);
  EXPECT_EQ(b[1].start_step, 999 * S + 500'000);
  EXPECT_EQ(b[1].end_step, 999 * S + 749'999);
  // A fractional `from`: micro-step widths.
  range.steps = {1, 10 * S};  // 10'000'000 micro-steps into 3 buckets
  b = Buckets(id, Axis::kStep, range, 3);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].start_step, 1u);
  EXPECT_EQ(b[0].end_step, 3'333'334u);
  EXPECT_EQ(b[0].count, 3u);  // steps 1, 2, 3
  EXPECT_EQ(b[2].end_step, 10 * S);
  Check(id, Axis::kStep, range, 3);
}

TEST_F(DownsampleTest, Boundaries) {
  Open(16);
  const SeriesId empty = Resolve("empty");
  EXPECT_TRUE(Buckets(empty, Axis::kStep, ReadRange{}, 10).empty());
  EXPECT_TRUE(Buckets(empty, Axis::kTime, ReadRange{}, 10).empty());

  const SeriesId id = Resolve("m");
  PointColumns p;
  // Steps 10..41 (two chunks of 16), then steps 100..103 in the head.
  for (uint64_t s = 10; s < 42; ++s) p.push_back(s * S, 1000 * s, 0.5 * s);
  Append(id, p);
  Compact();
  p.clear();
  for (uint64_t s = 100; s < 104; ++s) p.push_back(s * S, 1000 * s, -1.0 * s);
  Append(id, p);

  // Outside the data, on either side and on either axis.
  ReadRange range;
  range.steps = {0, 9 * S};
  EXPECT_TRUE(Buckets(id, Axis::kStep, range, 10).empty());
  range.steps = {200 * S, 300 * S};
  EXPECT_TRUE(Buckets(id, Axis::kStep, range, 10).empty());
  range = {};
  range.times = {0, 9999};
  EXPECT_TRUE(Buckets(id, Axis::kTime, range, 10).empty());
  // Between the sealed data and the head: nothing.
  range = {};
  range.steps = {42 * S, 99 * S};
  EXPECT_TRUE(Buckets(id, Axis::kStep, range, 10).empty());

  // A single point.
  range.steps = {20 * S, 20 * S};
  auto b = Buckets(id, Axis::kStep, range, 10);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].start_step, 20 * S);
  EXPECT_EQ(b[0].end_step, 20 * S);
  EXPECT_EQ(b[0].count, 1u);
  EXPECT_EQ(b[0].first, 10.0);
  EXPECT_EQ(b[0].last, 10.0);
  EXPECT_EQ(b[0].min, 10.0);
  EXPECT_EQ(b[0].max, 10.0);
  EXPECT_EQ(b[0].sum, 10.0);
  range = {};
  range.times = {101'000, 101'000};
  b = Buckets(id, Axis::kTime, range, 10);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].start_ms, 101'000);
  EXPECT_EQ(b[0].first, -101.0);

  // Sealed chunks are cut at aligned windows (here 16 steps): 10..15,
  // 16..31, 32..41, and their rollup pieces at 2 steps. Exactly the window
  // 16..31 in one bucket: merged from its 8 pieces, nothing decoded.
  BucketReadStats stats;
  range = {};
  range.steps = {16 * S, 31 * S};
  b = Buckets(id, Axis::kStep, range, 1, &stats);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(stats.chunks_merged, 1u);
  EXPECT_EQ(stats.chunks_decoded, 0u);
  EXPECT_EQ(b[0].count, 16u);
  EXPECT_EQ(b[0].first, 8.0);
  EXPECT_EQ(b[0].last, 15.5);
  EXPECT_EQ(b[0].sum, 0.5 * (16 + 31) * 16 / 2);
  EXPECT_EQ(stats.pieces_merged, 8u);
  // The same chunk cut in two buckets of 8 steps: still whole pieces.
  b = Buckets(id, Axis::kStep, range, 2, &stats);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(stats.chunks_merged, 1u);
  EXPECT_EQ(stats.chunks_decoded, 0u);
  Check(id, Axis::kStep, range, 2);
  // Buckets of one step are finer than a piece: the chunk is decoded.
  b = Buckets(id, Axis::kStep, range, 16, &stats);
  ASSERT_EQ(b.size(), 16u);
  EXPECT_EQ(stats.chunks_merged, 0u);
  EXPECT_EQ(stats.chunks_decoded, 1u);
  EXPECT_EQ(stats.pieces_merged, 0u);
  Check(id, Axis::kStep, range, 16);
  // A range starting inside a piece: that piece's points come from the
  // decoded chunk, the other pieces whole.
  range.steps = {17 * S, 31 * S};
  b = Buckets(id, Axis::kStep, range, 1, &stats);
  EXPECT_EQ(stats.chunks_decoded, 1u);
  EXPECT_EQ(stats.pieces_merged, 7u);
  Check(id, Axis::kStep, range, 1);
  range.steps = {16 * S, 31 * S};

  // Empty buckets are omitted: over 10..109 at most 10 buckets means a
  // width of 16 steps on the grid 0, 16, 32, ...: 10-15, 16-31, 32-47 and
  // 96-109 hold points.
  range.steps = {10 * S, 109 * S};
  b = Buckets(id, Axis::kStep, range, 10);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0].start_step, 10 * S);
  EXPECT_EQ(b[0].end_step, 16 * S - 1);  // inclusive, in micro-steps
  EXPECT_EQ(b[2].start_step, 32 * S);
  EXPECT_EQ(b[2].count, 10u);
  EXPECT_EQ(b[3].start_step, 96 * S);
  EXPECT_EQ(b[3].end_step, 109 * S);
  EXPECT_EQ(b[3].count, 4u);
  Check(id, Axis::kStep, range, 10);

  // More buckets than points.
  range.steps = {0, 200 * S};
  b = Buckets(id, Axis::kStep, range, kMaxBuckets);
  EXPECT_EQ(b.size(), 36u);
  Check(id, Axis::kStep, range, kMaxBuckets);
  range = {};
  range.times = {0, 200'000};
  Check(id, Axis::kTime, range, kMaxBuckets);
}

TEST_F(DownsampleTest, NonFiniteOnlyBuckets) {
  Open(16);
  const SeriesId id = Resolve("m");
  PointColumns p;
  for (uint64_t s = 0; s < 32; ++s) p.push_back(s * S, s, kNaN);  // chunk 1
  for (uint64_t s = 32; s < 48; ++s) {
    p.push_back(s * S, s, s % 2 ? kInf : -kInf);  // chunk 2
  }
  Append(id, p);
  Compact();
  p.clear();
  p.push_back(48 * S, 48, kNaN);  // head
  p.push_back(49 * S, 49, 3.0);
  Append(id, p);

  ReadRange range;
  range.steps = {0, 63 * S};
  auto b = Buckets(id, Axis::kStep, range, 4);  // 16 steps each
  ASSERT_EQ(b.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(b[i].has_finite());
    EXPECT_EQ(b[i].min, 0.0);
    EXPECT_EQ(b[i].max, 0.0);
    EXPECT_EQ(b[i].sum, 0.0);
    EXPECT_EQ(b[i].count, 16u);
  }
  EXPECT_EQ(b[0].nan_count, 16u);
  EXPECT_TRUE(std::isnan(b[0].first));
  EXPECT_EQ(b[2].pos_inf_count, 8u);
  EXPECT_EQ(b[2].neg_inf_count, 8u);
  EXPECT_EQ(b[2].first, -kInf);
  EXPECT_EQ(b[2].last, kInf);
  EXPECT_TRUE(b[3].has_finite());
  EXPECT_EQ(b[3].count, 2u);
  EXPECT_EQ(b[3].nan_count, 1u);
  EXPECT_EQ(b[3].min, 3.0);
  EXPECT_EQ(b[3].sum, 3.0);
  EXPECT_TRUE(std::isnan(b[3].first));
  Check(id, Axis::kStep, range, 4);
  Check(id, Axis::kStep, range, 3);
}

TEST_F(DownsampleTest, InvalidArgumentsAndUnknownSeries) {
  Open(16);
  const SeriesId id = Resolve("m");
  EXPECT_EQ(ReadBuckets(*engine_, id, Axis::kStep, {}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadBuckets(*engine_, id, Axis::kStep, {}, kMaxBuckets + 1)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  ReadRange range;
  range.steps = {5, 4};
  EXPECT_EQ(ReadBuckets(*engine_, id, Axis::kStep, range, 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  range = {};
  range.times = {5, 4};
  EXPECT_EQ(ReadBuckets(*engine_, id, Axis::kTime, range, 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ReadBuckets(*engine_, id + 1000, Axis::kStep, {}, 10).status().code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadSeriesExtent(*engine_, id + 1000).status().code(),
            absl::StatusCode::kNotFound);
  // StreamBuckets refuses the same, and hands nothing over.
  size_t handed = 0;
  auto sink = [&](size_t, const Bucket&) { ++handed; };
  EXPECT_EQ(StreamBuckets(*engine_, id, Axis::kStep, {}, 0, sink).code(),
            absl::StatusCode::kInvalidArgument);
  range = {};
  range.steps = {5, 4};
  EXPECT_EQ(StreamBuckets(*engine_, id, Axis::kStep, range, 10, sink).code(),
            absl::StatusCode::kInvalidArgument);
  range = {};
  range.times = {5, 4};
  EXPECT_EQ(StreamBuckets(*engine_, id, Axis::kTime, range, 10, sink).code(),
            absl::StatusCode::kInvalidArgument);
  for (Axis axis : {Axis::kStep, Axis::kTime}) {
    EXPECT_EQ(StreamBuckets(*engine_, id + 1000, axis, {}, 10, sink).code(),
              absl::StatusCode::kNotFound);
  }
  EXPECT_EQ(handed, 0u);
}

// Not a benchmark: logs how long a 1000-bucket read of 1,000,000 points in
// 1024-point chunks takes (no assertion on time).
TEST_F(DownsampleTest, MillionPointsIntoThousandBucketsLogsTime) {
  Open(1024);
  const SeriesId id = Resolve("train/loss");
  std::mt19937_64 rng(1);
  std::normal_distribution<double> normal(2, 0.5);
  constexpr uint64_t kPoints = 1'000'000;
  for (uint64_t begin = 0; begin < kPoints; begin += 100'000) {
    PointColumns p;
    for (uint64_t s = begin; s < begin + 100'000; ++s) {
      p.push_back(s * S, 1'700'000'000'000 + 100 * static_cast<int64_t>(s),
                  static_cast<float>(normal(rng)));
    }
    Append(id, p);
  }
  Compact();
  ReadRange range;
  range.steps = {0, (kPoints - 1) * S};
  for (Axis axis : {Axis::kStep, Axis::kTime}) {
    ReadRange r = range;
    if (axis == Axis::kTime) {
      r = {};
      r.times = {1'700'000'000'000,
                 1'700'000'000'000 + 100 * static_cast<int64_t>(kPoints - 1)};
    }
    std::vector<double> ms;
    BucketReadStats stats;
    for (int i = 0; i < 20; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto b = ReadBuckets(*engine_, id, axis, r, 1000, &stats);
      ms.push_back(std::chrono::duration<double, std::milli>(
                       std::chrono::steady_clock::now() - start)
                       .count());
      ASSERT_TRUE(b.ok());
      // Step axis: 1024-step buckets on the grid (977); time axis: 1000.
      ASSERT_EQ(b->size(), axis == Axis::kStep ? 977u : 1000u);
    }
    std::sort(ms.begin(), ms.end());
    std::printf(
        "ReadBuckets %s axis, 1e6 points, chunk_points 1024, 1000 buckets: "
        "p50 %.3f ms, min %.3f ms, max %.3f ms (pieces merged %llu, chunks "
        "merged %llu, decoded %llu)\n",
        axis == Axis::kStep ? "step" : "time", ms[ms.size() / 2], ms.front(),
        ms.back(), static_cast<unsigned long long>(stats.pieces_merged),
        static_cast<unsigned long long>(stats.chunks_merged),
        static_cast<unsigned long long>(stats.chunks_decoded));
  }
  // For comparison: a full decoding scan of the same points.
  const auto start = std::chrono::steady_clock::now();
  uint64_t points = 0;
  ASSERT_TRUE(engine_
                  ->Read(id, range, 0,
                         [&](const PointColumns& p) {
                           points += p.size();
                           return true;
                         })
                  .ok());
  std::printf("Engine::Read of the same %llu points: %.3f ms\n",
              static_cast<unsigned long long>(points),
              std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - start)
                  .count());
  Check(id, Axis::kStep, range, 1000);
}

// ---- Query.ReadDownsampled over gRPC ---------------------------------------

class ReadDownsampledServiceTest : public DownsampleTest {
 protected:
  void SetUp() override {
    Open(16);
    query_ = std::make_unique<query::QueryService>(engine_.get(),
                                                   query::QueryOptions{});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(query_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Query::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                            grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
    server_->Wait();
  }

  static v1::ReadDownsampledRequest Request(const std::string& metric,
                                            uint32_t buckets) {
    v1::ReadDownsampledRequest req;
    req.mutable_series()->set_project("proj");
    req.mutable_series()->set_run("run-1");
    req.mutable_series()->set_metric(metric);
    req.set_buckets(buckets);
    return req;
  }

  grpc::Status Call(const v1::ReadDownsampledRequest& req,
                    v1::ReadDownsampledResponse* resp) {
    grpc::ClientContext ctx;
    return stub_->ReadDownsampled(&ctx, req, resp);
  }

  std::unique_ptr<query::QueryService> query_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Query::Stub> stub_;
};

TEST_F(ReadDownsampledServiceTest, StepTimeAndWholeSeries) {
  const SeriesId id = Resolve("m");
  PointColumns p;
  // Steps 5.5, 6.5, ..., 44.5; time = 1000 * whole step; one NaN-only step.
  for (uint64_t s = 5; s < 45; ++s) {
    p.push_back(s * S + 500'000, 1000 * static_cast<int64_t>(s),
                s == 40 ? kNaN : static_cast<double>(s));
  }
  Append(id, p);
  Compact();
  p.clear();
  p.push_back(50 * S, 50'000, kInf);  // head
  Append(id, p);

  // No range: by step over the whole series, 5.5 .. 50.
  v1::ReadDownsampledResponse resp;
  ASSERT_TRUE(Call(Request("m", 1), &resp).ok());
  ASSERT_EQ(resp.buckets_size(), 1);
  const v1::DownsampledBucket& all = resp.buckets(0);
  EXPECT_EQ(all.start_step().whole(), 5);
  EXPECT_EQ(all.start_step().micros(), 500'000u);
  EXPECT_EQ(all.end_step().whole(), 50);
  EXPECT_EQ(all.end_step().micros(), 0u);
  EXPECT_FALSE(all.has_start_ms());
  EXPECT_EQ(all.count(), 41u);
  EXPECT_EQ(all.nan_count(), 1u);
  EXPECT_EQ(all.pos_inf_count(), 1u);
  EXPECT_EQ(all.first(), 5.0);
  EXPECT_EQ(all.last(), kInf);
  EXPECT_EQ(all.min(), 5.0);
  EXPECT_EQ(all.max(), 44.0);
  EXPECT_EQ(all.sum(), (5 + 44) * 40 / 2 - 40);

  // A step range with an open end, against ReadBuckets.
  auto req = Request("m", 7);
  req.mutable_steps()->mutable_from()->set_whole(10);
  resp.Clear();
  ASSERT_TRUE(Call(req, &resp).ok());
  ReadRange range;
  range.steps = {10 * S, 50 * S};
  auto want = Buckets(id, Axis::kStep, range, 7);
  ASSERT_EQ(resp.buckets_size(), static_cast<int>(want.size()));
  for (int i = 0; i < resp.buckets_size(); ++i) {
    const auto& b = resp.buckets(i);
    EXPECT_EQ(b.start_step().whole() * S + b.start_step().micros(),
              want[i].start_step);
    EXPECT_EQ(b.end_step().whole() * S + b.end_step().micros(),
              want[i].end_step);
    EXPECT_EQ(b.count(), want[i].count);
    EXPECT_EQ(b.has_min(), want[i].has_finite());
    EXPECT_EQ(Bits(b.sum()), Bits(want[i].sum));
  }

  // A time range: the NaN-only bucket has no min/max.
  req = Request("m", 100);
  req.mutable_time()->set_from_ms(40'000);
  req.mutable_time()->set_to_ms(40'999);
  resp.Clear();
  ASSERT_TRUE(Call(req, &resp).ok());
  ASSERT_EQ(resp.buckets_size(), 1);
  EXPECT_EQ(resp.buckets(0).start_ms(), 40'000);
  EXPECT_EQ(resp.buckets(0).end_ms(), 40'009);
  EXPECT_FALSE(resp.buckets(0).has_start_step());
  EXPECT_FALSE(resp.buckets(0).has_min());
  EXPECT_FALSE(resp.buckets(0).has_max());
  EXPECT_EQ(resp.buckets(0).nan_count(), 1u);

  // An open time range: the series' earliest to latest time.
  req = Request("m", 3);
  req.mutable_time();
  resp.Clear();
  ASSERT_TRUE(Call(req, &resp).ok());
  ASSERT_EQ(resp.buckets_size(), 3);
  EXPECT_EQ(resp.buckets(0).start_ms(), 5'000);
  EXPECT_EQ(resp.buckets(2).end_ms(), 50'000);
  // An open end beyond the data: nothing.
  req = Request("m", 3);
  req.mutable_steps()->mutable_from()->set_whole(51);
  resp.Clear();
  ASSERT_TRUE(Call(req, &resp).ok());
  EXPECT_EQ(resp.buckets_size(), 0);
}

TEST_F(ReadDownsampledServiceTest, Errors) {
  Resolve("m");
  v1::ReadDownsampledResponse resp;
  EXPECT_EQ(Call(Request("nope", 10), &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Call(Request("m", 0), &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Call(Request("m", kMaxBuckets + 1), &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto req = Request("m", 10);
  req.mutable_steps()->mutable_from()->set_whole(5);
  req.mutable_steps()->mutable_to()->set_whole(4);
  EXPECT_EQ(Call(req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req = Request("m", 10);
  req.mutable_steps()->mutable_from()->set_whole(-1);
  EXPECT_EQ(Call(req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A series without points: no buckets.
  resp.Clear();
  EXPECT_TRUE(Call(Request("m", 10), &resp).ok());
  EXPECT_EQ(resp.buckets_size(), 0);
}

// Every sealed chunk of `id` has exactly one rollup record, and each piece's
// aggregates are those of its points, recomputed here point by point (bit
// for bit: a piece's sum is added in point order too).
void ExpectRollupsMatchChunks(const Engine& engine, SeriesId id) {
  class Chunks : public ChunkVisitor {
   public:
    absl::StatusOr<bool> OnChunk(const ChunkSummary& s,
                                 ChunkLoader) override {
      first_steps.push_back(s.min_step);
      points += s.count;
      return true;
    }
    void OnHead(const PointColumns&) override {}
    std::vector<uint64_t> first_steps;
    uint64_t points = 0;
  } chunks;
  ASSERT_TRUE(engine.Scan(id, ReadRange{}, chunks).ok());

  class Records : public RollupVisitor {
   public:
    absl::StatusOr<bool> OnChunkPieces(std::span<const RollupPiece> pieces,
                                       ChunkLoader load_chunk) override {
      auto loaded = load_chunk();
      if (!loaded.ok()) return loaded.status();
      const PointColumns& p = **loaded;
      first_steps.push_back(p.steps.front());
      size_t i = 0;
      for (const RollupPiece& piece : pieces) {
        SCOPED_TRACE("piece at step " + std::to_string(piece.first_step));
        EXPECT_EQ(piece.first_step, p.steps[i]);
        EXPECT_EQ(Bits(piece.first), Bits(p.values[i]));
        RollupPiece want;
        want.min_time_ms = p.times_ms[i];
        want.max_time_ms = p.times_ms[i];
        bool any_finite = false;
        for (uint32_t k = 0; k < piece.count; ++k, ++i) {
          if (i >= p.size()) {
            ADD_FAILURE() << "piece counts more points than the chunk";
            return false;
          }
          const double v = p.values[i];
          want.last = v;
          want.last_step = p.steps[i];
          want.min_time_ms = std::min(want.min_time_ms, p.times_ms[i]);
          want.max_time_ms = std::max(want.max_time_ms, p.times_ms[i]);
          if (std::isnan(v)) {
            ++want.nan_count;
          } else if (v == kInf) {
            ++want.pos_inf_count;
          } else if (v == -kInf) {
            ++want.neg_inf_count;
          } else {
            if (!any_finite || v < want.min) want.min = v;
            if (!any_finite || v > want.max) want.max = v;
            want.sum += v;
            any_finite = true;
          }
        }
        EXPECT_EQ(Bits(piece.last), Bits(want.last));
        EXPECT_EQ(piece.last_step, want.last_step);
        EXPECT_EQ(piece.min_time_ms, want.min_time_ms);
        EXPECT_EQ(piece.max_time_ms, want.max_time_ms);
        EXPECT_EQ(piece.nan_count, want.nan_count);
        EXPECT_EQ(piece.pos_inf_count, want.pos_inf_count);
        EXPECT_EQ(piece.neg_inf_count, want.neg_inf_count);
        EXPECT_EQ(Bits(piece.min), Bits(want.min));
        EXPECT_EQ(Bits(piece.max), Bits(want.max));
        EXPECT_EQ(Bits(piece.sum), Bits(want.sum));
      }
      EXPECT_EQ(i, p.size()) << "pieces do not cover the chunk";
      points += p.size();
      return true;
    }
    void OnHead(const PointColumns&) override {}
    std::vector<uint64_t> first_steps;
    uint64_t points = 0;
  } records;
  ASSERT_TRUE(engine.ScanRollups(id, ReadRange{}, records).ok());
  EXPECT_EQ(records.first_steps, chunks.first_steps);
  EXPECT_EQ(records.points, chunks.points);
}

// Random data through writes, restart, compaction and retention: after
// each, the rollup records match their chunks and reads equal brute force.
TEST_F(DownsampleTest, RollupsMatchChunksAfterRestartCompactionAndExpiry) {
  Open(16);
  std::mt19937_64 rng(7);
  const SeriesId id = Resolve("train/loss");
  uint64_t step = 0;
  int64_t time = 1'000'000;
  auto check_all = [&](const std::string& when) {
    SCOPED_TRACE(when);
    ExpectRollupsMatchChunks(*engine_, id);
    for (uint32_t buckets : {1u, 5u, 64u, 300u, 5000u}) {
      ReadRange all;
      all.steps = {0, step};
      Check(id, Axis::kStep, all, buckets);
      ReadRange times;
      times.times = {0, time + 10'000};
      Check(id, Axis::kTime, times, buckets);
    }
  };
  // Sealed by the background sealer as heads fill (not only by Compact).
  for (int i = 0; i < 6; ++i) Append(id, RandomPoints(rng, 150, &step, &time));
  for (int i = 0; i < 100 && engine_->Stats().head_points > 40; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  check_all("after writes");
  Open(16);
  check_all("after restart");
  Append(id, RandomPoints(rng, 333, &step, &time));
  Compact();
  check_all("after compaction");
  const uint64_t chunks_before = engine_->Stats().sealed_chunks;
  auto expired = engine_->ExpireChunks("proj", 1'000'000 + 200'000);
  ASSERT_TRUE(expired.ok()) << expired.status();
  ASSERT_GT(expired->chunks, 0u);
  EXPECT_EQ(engine_->Stats().sealed_chunks, chunks_before - expired->chunks);
  check_all("after expiry");
  Compact();
  Open(16);
  check_all("after expiry, compaction and restart");
}

// A data directory written before rollups existed has chunks and no
// rollups column family: opening it builds every chunk's record.
TEST_F(DownsampleTest, OpeningAnOldDirectoryBuildsRollups) {
  Open(16);
  std::mt19937_64 rng(11);
  const SeriesId a = Resolve("a");
  const SeriesId b = Resolve("b");
  uint64_t step_a = 0, step_b = 0;
  int64_t time_a = 0, time_b = 0;
  Append(a, RandomPoints(rng, 500, &step_a, &time_a));
  Append(b, RandomPoints(rng, 300, &step_b, &time_b));
  Compact();
  Append(a, RandomPoints(rng, 7, &step_a, &time_a));  // and a head
  engine_.reset();

  // Make it an old directory: drop the rollups family.
  {
    rocksdb::DBOptions db_options;
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const char* name : {rocksdb::kDefaultColumnFamilyName.c_str(),
                             kIndexFamily, kHeadLogFamily, kChunksFamily,
                             kMetaFamily, kRollupsFamily}) {
      families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(
        rocksdb::DB::Open(db_options, dir_.path(), families, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->DropColumnFamily(handles.back()).ok());
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(db->Close().ok());
  }

  Open(16);
  for (SeriesId id : {a, b}) {
    ExpectRollupsMatchChunks(*engine_, id);
    ReadRange all;
    all.steps = {0, std::max(step_a, step_b)};
    for (uint32_t buckets : {1u, 37u, 512u}) Check(id, Axis::kStep, all, buckets);
  }
  // Whole-piece buckets are merged, not decoded.
  ReadRange window;
  window.steps = {0, 255 * S};
  BucketReadStats stats;
  Buckets(a, Axis::kStep, window, 8, &stats);
  EXPECT_GT(stats.pieces_merged, 0u);
  // Built once: a second open finds the marker and still reads the same.
  Open(16);
  ExpectRollupsMatchChunks(*engine_, a);
}

}  // namespace
}  // namespace stepdb::storage
