#include "storage/engine.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <atomic>
#include <chrono>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace stepdb::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t S = kMicrosPerStep;

// Waits (bounded) until the sealer has brought the head down to `points`.
void WaitForHeadPoints(const Engine& engine, uint64_t points) {
  for (int i = 0; i < 500 && engine.Stats().head_points > points; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

class EngineTest : public ::testing::Test {
 protected:
  void Open(size_t chunk_points = 8,
            absl::Duration max_head_age = absl::Minutes(2)) {
    EngineOptions options;
    options.chunk_points = chunk_points;
    options.max_head_age = max_head_age;
    Open(std::move(options));
  }

  void Open(EngineOptions options) {
    engine_.reset();
    options.data_dir = dir_.path();
    auto engine = Engine::Open(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
  }

  SeriesId Resolve(const std::string& metric, Labels labels = {},
                   const std::string& run = "run-1") {
    auto id = engine_->ResolveSeries({"proj", run, metric, std::move(labels)});
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : 0;
  }

  // Appends whole steps [first, first+n) with time = 1000*step, value = step/2.
  SeriesAppendResult AppendRange(SeriesId id, uint64_t first, uint64_t n) {
    PointColumns points;
    for (uint64_t s = first; s < first + n; ++s) {
      points.push_back(s * S, static_cast<int64_t>(s) * 1000, s / 2.0);
    }
    // Half the appends take the prepared fast path, as ingest's do.
    return AppendOne(id, points, /*prepare=*/first % 2 == 0);
  }

  SeriesAppendResult AppendOne(SeriesId id, const PointColumns& points,
                               bool prepare = false) {
    AppendBatch batch;
    batch.Add(id, points);
    if (prepare) batch.Prepare();
    auto result = engine_->Append(std::move(batch));
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? (*result)[0] : SeriesAppendResult{};
  }

  PointColumns ReadAll(SeriesId id, ReadRange range = {}, uint64_t limit = 0,
                       ReadResult* result_out = nullptr) {
    PointColumns out;
    auto result = engine_->Read(id, range, limit, [&](const PointColumns& p) {
      for (size_t i = 0; i < p.size(); ++i) {
        out.push_back(p.steps[i], p.times_ms[i], p.values[i]);
      }
      return true;
    });
    EXPECT_TRUE(result.ok()) << result.status();
    if (result.ok() && result_out != nullptr) *result_out = *result;
    return out;
  }

  static std::vector<uint64_t> WholeSteps(const PointColumns& p) {
    std::vector<uint64_t> out;
    for (uint64_t s : p.steps) out.push_back(s / S);
    return out;
  }

  stepdb::testing::TempDir dir_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, ReadsMergeSealedChunksAndHead) {
  Open(/*chunk_points=*/8);
  const SeriesId id = Resolve("train/loss");
  EXPECT_EQ(AppendRange(id, 0, 5).accepted, 5u);
  EXPECT_EQ(AppendRange(id, 5, 13).accepted, 13u);  // seals 18 points
  EXPECT_EQ(AppendRange(id, 18, 3).accepted, 3u);   // stays in the head
  const PointColumns all = ReadAll(id);
  ASSERT_EQ(all.size(), 21u);
  for (uint64_t s = 0; s < 21; ++s) {
    EXPECT_EQ(all.steps[s], s * S);
    EXPECT_EQ(all.times_ms[s], static_cast<int64_t>(s) * 1000);
    EXPECT_EQ(all.values[s], s / 2.0);
  }
  // Sealing runs behind the acks; give it a moment. Chunks are cut at
  // aligned windows of 8 steps, and the window the head ends in stays open.
  WaitForHeadPoints(*engine_, 5);
  const EngineStats stats = engine_->Stats();
  EXPECT_EQ(stats.points, 21u);
  EXPECT_EQ(stats.head_points, 5u);    // steps 16..20
  EXPECT_EQ(stats.sealed_chunks, 2u);  // steps 0..7 and 8..15
  EXPECT_EQ(ReadAll(id).size(), 21u);
}

TEST_F(EngineTest, ReadsStayExactWhileSealsRunConcurrently) {
  Open(/*chunk_points=*/16);
  const SeriesId id = Resolve("train/loss");
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done.load()) {
      const PointColumns all = ReadAll(id);
      // Whatever moment the read lands on, it sees a gap-free prefix.
      for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all.steps[i], i * S);
    }
  });
  for (uint64_t first = 0; first < 2000; first += 7) AppendRange(id, first, 7);
  done = true;
  reader.join();
  EXPECT_EQ(ReadAll(id).size(), 2002u);
}

TEST_F(EngineTest, HeadLogReplaySkipsWhatWasSealed) {
  Open(/*chunk_points=*/8);
  const SeriesId busy = Resolve("busy");
  const SeriesId quiet = Resolve("quiet");
  // Both series share each group's head-log record; only `busy` fills its
  // head and gets sealed (steps 0..23: three aligned windows of 8; the seal
  // cuts its third fragment, 20..29), so the records stay, pinned by
  // `quiet`, and a restart must replay only 24..29 of `busy`.
  for (uint64_t r = 0; r < 3; ++r) {
    AppendBatch batch;
    batch.StartSeries(busy);
    for (uint64_t k = 0; k < 10; ++k) {
      batch.AddPoint((r * 10 + k) * S, 0, r * 10.0 + k);
    }
    batch.StartSeries(quiet);
    batch.AddPoint(r * S, 0, r * 1.0);
    batch.Prepare();
    ASSERT_TRUE(engine_->Append(std::move(batch)).ok());
  }
  WaitForHeadPoints(*engine_, 9);
  EXPECT_EQ(engine_->Stats().head_points, 9u);
  Open(8);
  const PointColumns all = ReadAll(busy);
  ASSERT_EQ(all.size(), 30u);  // each point once: chunks, then the replay
  for (uint64_t i = 0; i < 30; ++i) EXPECT_EQ(all.steps[i], i * S);
  EXPECT_EQ(ReadAll(quiet).size(), 3u);
  EXPECT_EQ(engine_->Stats().head_points, 9u);
  EXPECT_EQ(AppendRange(busy, 30, 1).accepted, 1u);
}

TEST_F(EngineTest, ChunksAreCutAtAlignedStepWindows) {
  Open(/*chunk_points=*/64);
  const SeriesId dense = Resolve("dense");
  const SeriesId sparse = Resolve("sparse");
  for (uint64_t first = 0; first < 1000; first += 30) AppendRange(dense, first, 30);
  for (uint64_t step = 0; step < 50'000; step += 100) {  // every 100 steps
    PointColumns p;
    p.push_back(step * S, 0, 1.0);
    AppendOne(sparse, p);
  }
  WaitForHeadPoints(*engine_, 64 + 64);
  struct Windows : ChunkVisitor {
    uint64_t window;
    int chunks = 0;
    absl::StatusOr<bool> OnChunk(const ChunkSummary& c, ChunkLoader) override {
      EXPECT_EQ(c.min_step / window, c.max_step / window)
          << c.min_step / S << ".." << c.max_step / S;
      ++chunks;
      return true;
    }
    void OnHead(const PointColumns&) override {}
  };
  Windows dense_windows;
  dense_windows.window = 64 * S;  // one point a step: windows of 64 steps
  ASSERT_TRUE(engine_->Scan(dense, {}, dense_windows).ok());
  EXPECT_GE(dense_windows.chunks, 14);
  Windows sparse_windows;
  sparse_windows.window = 8192 * S;  // 100 steps apart: bit_ceil(6400)
  ASSERT_TRUE(engine_->Scan(sparse, {}, sparse_windows).ok());
  EXPECT_GE(sparse_windows.chunks, 5);
  EXPECT_EQ(ReadAll(dense).size(), 1020u);
  EXPECT_EQ(ReadAll(sparse).size(), 500u);
}

TEST_F(EngineTest, OldHeadLogRecordsGetTheirSeriesSealed) {
  Open(/*chunk_points=*/1024, /*max_head_age=*/absl::Milliseconds(1));
  const SeriesId id = Resolve("idle");
  AppendRange(id, 0, 5);  // far from a full chunk, then nothing more
  WaitForHeadPoints(*engine_, 0);
  EXPECT_EQ(engine_->Stats().head_points, 0u);
  EXPECT_EQ(engine_->Stats().sealed_chunks, 1u);
  Open(1024);
  EXPECT_EQ(ReadAll(id).size(), 5u);
}

TEST_F(EngineTest, ChunkPointsOutOfRangeIsRejected) {
  EngineOptions options;
  options.data_dir = dir_.path();
  options.chunk_points = 1 << 20;
  EXPECT_EQ(Engine::Open(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, HugeAppendIsSplitIntoDecodableFragments) {
  Open(65536);
  const SeriesId id = Resolve("train/loss");
  EXPECT_EQ(AppendRange(id, 0, 200'000).accepted, 200'000u);
  engine_.reset();  // before any seal can finish is not guaranteed; reopen
  Open(65536);      // must decode every fragment or sealed chunk
  EXPECT_EQ(ReadAll(id).size(), 200'000u);
}

TEST_F(EngineTest, StepAndTimeRangesAndLimit) {
  Open(4);
  const SeriesId id = Resolve("train/loss");
  AppendRange(id, 0, 30);
  ReadRange range;
  range.steps = {5 * S, 9 * S};
  EXPECT_THAT(WholeSteps(ReadAll(id, range)), ElementsAre(5, 6, 7, 8, 9));
  ReadRange times;
  times.times.from_ms = 27'000;
  times.times.to_ms = 100'000;
  EXPECT_THAT(WholeSteps(ReadAll(id, times)), ElementsAre(27, 28, 29));
  ReadResult result;
  EXPECT_THAT(WholeSteps(ReadAll(id, {}, 3, &result)), ElementsAre(0, 1, 2));
  EXPECT_TRUE(result.truncated);
  EXPECT_EQ(ReadAll(id, {}, 30, &result).size(), 30u);
  EXPECT_FALSE(result.truncated);
  range.steps = {100 * S, 200 * S};
  EXPECT_TRUE(ReadAll(id, range).empty());
}

TEST_F(EngineTest, DuplicatesAreDroppedAndBackwardsStepsRejected) {
  Open(4);
  const SeriesId id = Resolve("train/loss");
  AppendRange(id, 0, 10);  // 8 sealed, 2 in the head
  // A retry of already stored points, sealed and head alike: all duplicates.
  SeriesAppendResult retry = AppendRange(id, 1, 9);
  EXPECT_EQ(retry.duplicates, 9u);
  EXPECT_EQ(retry.accepted, 0u);
  EXPECT_EQ(retry.rejected, 0u);
  // Backwards with another value: rejected; the later new point still lands.
  PointColumns mixed;
  mixed.push_back(3 * S, 3000, 99.0);    // conflicts with a sealed point
  mixed.push_back(10 * S, 10000, 5.0);   // new
  mixed.push_back(7 * S, 1, 1.0);        // backwards, different value
  mixed.push_back(11 * S, 11000, 5.5);   // new
  SeriesAppendResult r = AppendOne(id, mixed);
  EXPECT_EQ(r.accepted, 2u);
  EXPECT_EQ(r.rejected, 2u);
  EXPECT_THAT(r.first_rejection, HasSubstr("step 3"));
  EXPECT_THAT(r.first_rejection, HasSubstr("different value"));
  // A gap filled later is backwards too.
  PointColumns gap;
  gap.push_back(10 * S + 500'000, 0, 0.0);
  EXPECT_EQ(AppendOne(id, gap).rejected, 1u);
  const PointColumns all = ReadAll(id);
  EXPECT_EQ(all.size(), 12u);
  EXPECT_EQ(all.values[3], 1.5);
}

// The duplicate check of a resent step in the head decodes only the head
// fragment that can hold it (Engine::FindStoredValue): it must still find
// the stored value in any fragment, first, middle or last, and know a gap
// between fragments holds no point.
TEST_F(EngineTest, DuplicateChecksFindStepsInEveryHeadFragment) {
  Open(1024);  // nothing is sealed: every append stays a head fragment
  const SeriesId id = Resolve("train/loss");
  for (uint64_t first : {0, 10, 20, 40}) AppendRange(id, first, 5);
  // Steps 0-4, 10-14, 20-24, 40-44: resend each stored step but the last.
  for (uint64_t step : {0, 2, 4, 10, 13, 20, 24, 40, 43}) {
    PointColumns resend;
    resend.push_back(step * S, static_cast<int64_t>(step) * 1000, step / 2.0);
    SeriesAppendResult r = AppendOne(id, resend);
    EXPECT_EQ(r.duplicates, 1u) << "step " << step;
    EXPECT_EQ(r.rejected, 0u) << "step " << step;
    resend.values[0] = -1.0;  // the same step with another value
    r = AppendOne(id, resend);
    EXPECT_EQ(r.rejected, 1u) << "step " << step;
    EXPECT_THAT(r.first_rejection, HasSubstr("different value"));
  }
  // A step in a gap between fragments is new but backwards: rejected, and
  // the message says no point was stored there.
  for (uint64_t step : {5, 17, 30}) {
    PointColumns gap;
    gap.push_back(step * S, 0, 1.0);
    SeriesAppendResult r = AppendOne(id, gap);
    EXPECT_EQ(r.rejected, 1u) << "step " << step;
    EXPECT_EQ(r.duplicates, 0u) << "step " << step;
    EXPECT_THAT(r.first_rejection, ::testing::Not(HasSubstr("different value")));
  }
  EXPECT_EQ(ReadAll(id).size(), 20u);
}

// A resend of a long stretch, sealed and in the head, checks each point
// against the chunk that holds it (Engine's StoredValues keeps the last one
// decoded): every answer must be as if each step were looked up alone, in
// any order, across chunk edges and gaps.
TEST_F(EngineTest, LongResendsAreCheckedAgainstTheRightChunk) {
  Open(16);
  const SeriesId id = Resolve("train/loss");
  // Even steps 0-398 only (odd steps are gaps), then sealed into chunks of
  // 16 points (32-step windows), then a head of even steps 400-418.
  PointColumns even;
  for (uint64_t step = 0; step < 400; step += 2) {
    even.push_back(step * S, static_cast<int64_t>(step) * 1000, step / 2.0);
  }
  AppendOne(id, even);
  ASSERT_TRUE(engine_->Compact().ok());
  // The seal the append queued may still be pending: let it run first, or
  // it would seal part of the head below.
  for (int i = 0; i < 500 && engine_->Stats().seals_queued > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(engine_->Stats().seals_queued, 0u);
  PointColumns head;
  for (uint64_t step = 400; step < 420; step += 2) {
    head.push_back(step * S, static_cast<int64_t>(step) * 1000, step / 2.0);
  }
  AppendOne(id, head);
  ASSERT_GT(engine_->Stats().sealed_chunks, 10u);
  ASSERT_EQ(engine_->Stats().head_points, 10u);

  // Everything resent, ascending and then descending: all duplicates.
  PointColumns all = ReadAll(id);
  ASSERT_EQ(all.size(), 210u);
  EXPECT_EQ(AppendOne(id, all).duplicates, 210u);
  PointColumns descending;
  for (size_t i = all.size(); i-- > 0;) {
    descending.push_back(all.steps[i], all.times_ms[i], all.values[i]);
  }
  SeriesAppendResult r = AppendOne(id, descending);
  EXPECT_EQ(r.duplicates, 210u);
  EXPECT_EQ(r.rejected, 0u);

  // Changed values inside chunks (14, 16), at a chunk edge (30 | 32), at
  // the sealed/head edge (398 | 400) and in the head, and gap steps, in one
  // resend that zigzags between chunks: exactly those are rejected.
  PointColumns mixed;
  const std::vector<uint64_t> changed = {14, 16, 30, 32, 398, 400, 418};
  const std::vector<uint64_t> gaps = {1, 15, 17, 399, 401};
  const std::vector<uint64_t> same = {0, 200, 2, 398 - 2, 412, 100};
  for (uint64_t step : changed) mixed.push_back(step * S, 0, -1.0);
  for (uint64_t step : gaps) mixed.push_back(step * S, 0, step / 2.0);
  for (uint64_t step : same) {
    mixed.push_back(step * S, static_cast<int64_t>(step) * 1000, step / 2.0);
  }
  r = AppendOne(id, mixed);
  EXPECT_EQ(r.rejected, changed.size() + gaps.size());
  EXPECT_EQ(r.duplicates, same.size());
  EXPECT_EQ(r.accepted, 0u);
  EXPECT_THAT(r.first_rejection, HasSubstr("step 14 is already stored"));

  // The resend in small appends queued at once, so that appends of one
  // commit group share the chunks they decode: every point a duplicate.
  constexpr size_t kPerAppend = 7;
  std::atomic<uint64_t> duplicates{0}, other{0};
  std::atomic<int> pending{0};
  for (size_t begin = 0; begin < all.size(); begin += kPerAppend) {
    PointColumns part;
    for (size_t i = begin; i < std::min(all.size(), begin + kPerAppend); ++i) {
      part.push_back(all.steps[i], all.times_ms[i], all.values[i]);
    }
    AppendBatch batch;
    batch.Add(id, part);
    ++pending;
    engine_->AppendAsync(std::move(batch),
                         [&](absl::Status status,
                             std::vector<SeriesAppendResult> results) {
                           EXPECT_TRUE(status.ok()) << status;
                           duplicates += results[0].duplicates;
                           other += results[0].accepted + results[0].rejected;
                           --pending;
                         });
  }
  for (int i = 0; i < 500 && pending > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(pending.load(), 0);
  EXPECT_EQ(duplicates.load(), 210u);
  EXPECT_EQ(other.load(), 0u);
  EXPECT_EQ(ReadAll(id).size(), 210u);
}

// Read's limit cuts the answer after exactly `limit` points wherever it
// falls (inside a chunk, on a chunk edge, in the head), and the slices the
// sink gets are the points in order, whether a decoded chunk is passed on
// as it is or copied into a slice.
TEST_F(EngineTest, LimitCutsAnywhereAndSlicesKeepOrder) {
  Open(16);
  const SeriesId id = Resolve("train/loss");
  AppendRange(id, 0, 1000);
  ASSERT_TRUE(engine_->Compact().ok());
  AppendRange(id, 1000, 37);  // a head
  ReadRange from_7;
  from_7.steps.from = 7 * S;
  for (uint64_t limit : {1, 15, 16, 17, 32, 500, 1000, 1029, 1030, 1031, 5000}) {
    for (const ReadRange& range : {ReadRange{}, from_7}) {
      const uint64_t first = range.steps.from / S;
      const uint64_t total = 1037 - first;
      ReadResult result;
      const PointColumns got = ReadAll(id, range, limit, &result);
      const uint64_t want = std::min<uint64_t>(limit, total);
      ASSERT_EQ(got.size(), want) << "limit " << limit;
      EXPECT_EQ(result.points, want);
      EXPECT_EQ(result.truncated, limit < total) << "limit " << limit;
      for (uint64_t i = 0; i < want; ++i) {
        ASSERT_EQ(got.steps[i], (first + i) * S) << "limit " << limit;
        ASSERT_EQ(got.values[i], (first + i) / 2.0);
      }
    }
  }
}

TEST_F(EngineTest, NanAndInfinityAreStoredBitExactly) {
  Open(4);
  const SeriesId id = Resolve("train/loss");
  const double nan_payload =
      std::bit_cast<double>(uint64_t{0x7FF8'0000'DEAD'BEEF});
  const std::vector<double> values = {
      1.0, nan_payload, std::numeric_limits<double>::infinity(),
      -std::numeric_limits<double>::infinity(), -0.0,
      std::numeric_limits<double>::denorm_min(),
      std::numeric_limits<double>::max()};
  PointColumns append;
  for (size_t i = 0; i < values.size(); ++i) {
    append.push_back(i * S, static_cast<int64_t>(i), values[i]);
  }
  EXPECT_EQ(AppendOne(id, append).accepted, values.size());
  // Retrying the NaN point is a duplicate (same bits), not a rejection.
  PointColumns retry;
  retry.push_back(1 * S, 1, nan_payload);
  EXPECT_EQ(AppendOne(id, retry).duplicates, 1u);
  Open(4);  // and across a restart
  const PointColumns all = ReadAll(id);
  ASSERT_EQ(all.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint64_t>(all.values[i]),
              std::bit_cast<uint64_t>(values[i]))
        << i;
  }
}

// The index finds series by (project, run, metric, labels) without keeping
// a second copy of the key: keys that differ in one part only, labels given
// in any order, before and after a restart, across runs and projects.
// Enough series that their identities cross a block of the index's arena
// (256 KiB).
TEST_F(EngineTest, SeriesAreFoundByEveryPartOfTheirKeyAcrossRestarts) {
  Open(8);
  std::vector<std::pair<SeriesKey, SeriesId>> made;
  for (const std::string project : {"proj", "other"}) {
    for (const std::string run : {"run-1", "run-2"}) {
      for (int m = 0; m < 400; ++m) {
        for (int g = 0; g < 8; ++g) {
          SeriesKey key{project, run, absl::StrCat("gpu/m", m),
                        {{"node", absl::StrCat("n", g / 4)},
                         {"gpu", absl::StrCat(g % 4)}}};
          auto id = engine_->ResolveSeries(key);
          ASSERT_TRUE(id.ok()) << id.status();
          made.emplace_back(std::move(key), *id);
        }
      }
    }
  }
  absl::flat_hash_set<SeriesId> distinct;
  for (const auto& [key, id] : made) distinct.insert(id);
  ASSERT_EQ(distinct.size(), made.size());
  for (int reopen = 0; reopen < 2; ++reopen) {
    for (auto [key, id] : made) {
      EXPECT_EQ(engine_->FindSeries(key), id);
      std::reverse(key.labels.begin(), key.labels.end());  // any order
      EXPECT_EQ(engine_->FindSeries(key), id);
      EXPECT_EQ(*engine_->ResolveSeries(key), id);
      const std::optional<SeriesKey> stored = engine_->KeyOf(id);
      ASSERT_TRUE(stored.has_value());
      EXPECT_EQ(stored->metric, key.metric);
      EXPECT_EQ(stored->run, key.run);
      EXPECT_EQ(stored->labels.size(), 2u);
    }
    EXPECT_EQ(engine_->FindSeries({"proj", "run-1", "gpu/m0", {{"node", "n0"}}}),
              std::nullopt);
    EXPECT_EQ(engine_->FindSeries({"proj", "run-3", "gpu/m0",
                                   {{"node", "n0"}, {"gpu", "0"}}}),
              std::nullopt);
    EXPECT_EQ(engine_->Stats().series, made.size());
    Open(8);
  }
  EXPECT_GT(Resolve("fresh"), static_cast<SeriesId>(made.size()));
}

// A head-log record with entries of several series (one group) comes back
// into each series' compressed head, whichever entry it is in the record.
TEST_F(EngineTest, RestartRecoversHeadsFromRecordsOfManySeries) {
  Open(1024);
  std::vector<SeriesId> ids;
  for (int m = 0; m < 5; ++m) ids.push_back(Resolve(absl::StrCat("m", m)));
  for (uint64_t first = 0; first < 12; first += 4) {
    AppendBatch batch;
    for (size_t k = 0; k < ids.size(); ++k) {
      batch.StartSeries(ids[k]);
      for (uint64_t s = first; s < first + 4; ++s) {
        batch.AddPoint(s * S, static_cast<int64_t>(s * 1000 + k), s + 0.25 * k);
      }
    }
    if (first != 4) batch.Prepare();  // both kinds of fragments
    auto results = engine_->Append(std::move(batch));
    ASSERT_TRUE(results.ok()) << results.status();
  }
  for (int reopen = 0; reopen < 2; ++reopen) {
    Open(1024);
    for (size_t k = 0; k < ids.size(); ++k) {
      const PointColumns got = ReadAll(ids[k]);
      ASSERT_EQ(got.size(), 12u);
      for (uint64_t s = 0; s < 12; ++s) {
        EXPECT_EQ(got.steps[s], s * S);
        EXPECT_EQ(got.times_ms[s], static_cast<int64_t>(s * 1000 + k));
        EXPECT_EQ(got.values[s], s + 0.25 * k);
      }
    }
  }
}

TEST_F(EngineTest, RestartRecoversHeadsSealedChunksAndIds) {
  Open(8);
  const SeriesId loss = Resolve("train/loss", {{"node", "n1"}});
  const SeriesId lr = Resolve("train/lr");
  AppendRange(loss, 0, 20);
  AppendRange(lr, 0, 3);
  Open(8);
  EXPECT_EQ(Resolve("train/loss", {{"node", "n1"}}), loss);
  EXPECT_EQ(Resolve("train/lr"), lr);
  EXPECT_EQ(ReadAll(loss).size(), 20u);
  EXPECT_EQ(ReadAll(lr).size(), 3u);
  // The rules still hold after recovery: the last step is known.
  EXPECT_EQ(AppendRange(loss, 19, 2).duplicates, 1u);
  EXPECT_EQ(AppendRange(loss, 21, 1).accepted, 1u);
  const SeriesId fresh = Resolve("train/new");
  EXPECT_GT(fresh, lr);  // ids are not reused
  // Full keys come back from the index, project and run included.
  ASSERT_TRUE(engine_->KeyOf(loss).has_value());
  EXPECT_EQ(*engine_->KeyOf(loss),
            (SeriesKey{"proj", "run-1", "train/loss", {{"node", "n1"}}}));
  bool truncated;
  auto listed = engine_->ListSeries({"proj", "run-1", "train/loss", {}, {}}, 0, &truncated);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].key.project, "proj");
  EXPECT_EQ(listed[0].key.run, "run-1");
  EXPECT_EQ(listed[0].points, 22u);
  Open(8);
  EXPECT_EQ(ReadAll(loss).size(), 22u);
}

TEST_F(EngineTest, FractionalSteps) {
  Open(4);
  const SeriesId id = Resolve("eval/acc");
  PointColumns append;
  append.push_back(0, 0, 0.1);
  append.push_back(1, 0, 0.2);  // 0.000001
  append.push_back(S / 2, 0, 0.3);
  append.push_back(S, 0, 0.4);
  EXPECT_EQ(AppendOne(id, append).accepted, 4u);
  ReadRange range;
  range.steps = {1, S / 2};
  EXPECT_EQ(ReadAll(id, range).size(), 2u);
}

TEST_F(EngineTest, ListSeriesFilters) {
  Open();
  Resolve("gpu/util", {{"gpu", "0"}, {"node", "n1"}});
  Resolve("gpu/util", {{"gpu", "1"}, {"node", "n1"}});
  Resolve("gpu/util", {{"gpu", "0"}, {"node", "n2"}});
  Resolve("train/loss", {}, "run-2");
  bool truncated;
  EXPECT_EQ(engine_->ListSeries({"proj", {}, {}, {}, {}}, 0, &truncated).size(), 4u);
  EXPECT_EQ(engine_->ListSeries({"proj", "run-1", {}, {}, {}}, 0, &truncated).size(), 3u);
  EXPECT_EQ(engine_->ListSeries({"proj", {}, "gpu/util", {{"node", "n1"}}, {}}, 0,
                                &truncated)
                .size(),
            2u);
  EXPECT_EQ(engine_->ListSeries({"proj", {}, {}, {}, {}}, 2, &truncated).size(), 2u);
  EXPECT_TRUE(truncated);
  EXPECT_TRUE(engine_->ListSeries({"other", {}, {}, {}, {}}, 0, &truncated).empty());
}

TEST_F(EngineTest, ConcurrentWritersShareGroupCommits) {
  Open(64);
  constexpr int kThreads = 4;
  constexpr int kRequests = 50;
  std::vector<SeriesId> ids;
  for (int t = 0; t < kThreads; ++t) ids.push_back(Resolve("m" + std::to_string(t)));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRequests; ++r) {
        AppendBatch batch;
        batch.StartSeries(ids[t]);
        for (int k = 0; k < 10; ++k) {
          const uint64_t step = r * 10 + k;
          batch.AddPoint(step * S, step, t + step * 0.5);
        }
        if (t % 2 == 0) batch.Prepare();
        auto result = engine_->Append(std::move(batch));
        ASSERT_TRUE(result.ok());
        ASSERT_EQ((*result)[0].accepted, 10u);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (SeriesId id : ids) EXPECT_EQ(ReadAll(id).size(), kRequests * 10u);
  const EngineStats stats = engine_->Stats();
  EXPECT_EQ(stats.appends, kThreads * kRequests * 1u);
  EXPECT_LE(stats.write_groups, stats.appends);
}

// With seal assists always on, every append finding a seal queued seals
// it on the writer's thread, concurrently with the sealer thread and the
// other writers: every point must still read back exactly, in order, at
// any moment, and every complete window end up sealed.
TEST_F(EngineTest, WritersSealWhenSealingFallsBehind) {
  EngineOptions options;
  options.chunk_points = 16;
  options.seal_assist_after = absl::ZeroDuration();
  options.seal_assist_above_bytes = 0;
  Open(std::move(options));
  constexpr int kThreads = 4;
  constexpr int kSeriesPerThread = 8;
  constexpr uint64_t kRequests = 100;
  constexpr uint64_t kSteps = 10;  // per request
  std::vector<std::vector<SeriesId>> ids(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int k = 0; k < kSeriesPerThread; ++k) {
      ids[t].push_back(Resolve("m" + std::to_string(k),
                               {{"rank", std::to_string(t)}}));
    }
  }
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done.load()) {
      const PointColumns all = ReadAll(ids[0][0]);
      for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all.steps[i], i * S);
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (uint64_t r = 0; r < kRequests; ++r) {
        AppendBatch batch;
        for (SeriesId id : ids[t]) {
          batch.StartSeries(id);
          for (uint64_t s = r * kSteps; s < (r + 1) * kSteps; ++s) {
            batch.AddPoint(s * S, static_cast<int64_t>(s) * 1000,
                           static_cast<double>(id) + s * 0.25);
          }
        }
        batch.Prepare();
        auto result = engine_->Append(std::move(batch));
        ASSERT_TRUE(result.ok()) << result.status();
        for (const SeriesAppendResult& series : *result) {
          ASSERT_EQ(series.accepted, kSteps);
        }
      }
    });
  }
  for (auto& writer : writers) writer.join();
  done = true;
  reader.join();
  for (int t = 0; t < kThreads; ++t) {
    for (SeriesId id : ids[t]) {
      const PointColumns all = ReadAll(id);
      ASSERT_EQ(all.size(), kRequests * kSteps);
      for (uint64_t s = 0; s < all.size(); ++s) {
        ASSERT_EQ(all.steps[s], s * S);
        ASSERT_EQ(all.times_ms[s], static_cast<int64_t>(s) * 1000);
        ASSERT_EQ(all.values[s], static_cast<double>(id) + s * 0.25);
      }
    }
  }
  // 1000 steps a series: windows of 16 up to step 991 are complete.
  const uint64_t series = kThreads * kSeriesPerThread;
  WaitForHeadPoints(*engine_, series * (1000 - 992));
  const EngineStats stats = engine_->Stats();
  EXPECT_EQ(stats.points, series * kRequests * kSteps);
  EXPECT_EQ(stats.head_points, series * (1000 - 992));
  EXPECT_EQ(stats.sealed_chunks, series * (992 / 16));
  EXPECT_GT(stats.seal_assists, 0u);  // the writers did seal
}

// Small fragments are merged (on the sealer's thread) only once the heads
// hold merge_heads_above_bytes bytes: with few series the merge's CPU
// buys nothing worth having.
TEST_F(EngineTest, SmallFragmentsAreMergedOnlyWhenHeadsAreLarge) {
  uint64_t head_bytes[2] = {0, 0};
  for (int merge = 0; merge < 2; ++merge) {
    engine_.reset();
    stepdb::testing::TempDir dir;
    EngineOptions options;
    options.data_dir = dir.path();
    options.chunk_points = 1024;
    options.merge_heads_above_bytes = merge ? 0 : UINT64_MAX;
    options.sync = false;  // 64 appends; durability is not the point here
    auto engine = Engine::Open(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    std::vector<SeriesId> ids;
    for (int i = 0; i < 50; ++i) ids.push_back(Resolve("m" + std::to_string(i)));
    for (uint64_t step = 0; step < 128; step += 2) {
      AppendBatch batch;  // a 2-point fragment of every series
      for (SeriesId id : ids) {
        batch.StartSeries(id);
        for (uint64_t k = step; k < step + 2; ++k) {
          batch.AddPoint(k * S, static_cast<int64_t>(k) * 1000, k * 0.25);
        }
      }
      batch.Prepare();
      ASSERT_TRUE(engine_->Append(std::move(batch)).ok());
    }
    // The sealer merges in the background: wait until the bytes settle.
    uint64_t last = 0;
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const uint64_t now = engine_->Stats().head_bytes;
      if (now == last) break;
      last = now;
    }
    head_bytes[merge] = last;
    for (SeriesId id : ids) ASSERT_EQ(ReadAll(id).size(), 128u);
    engine_.reset();  // before its directory goes
  }
  EXPECT_LT(head_bytes[1] * 2, head_bytes[0])
      << "merged " << head_bytes[1] << " bytes, unmerged " << head_bytes[0];
}

// Above half the memory budget the sealer moves heads out of memory, oldest
// head-log record first, until a quarter of the budget is used: with many
// series no head would fill a chunk before memory runs out.
TEST_F(EngineTest, MemoryPressureSealsTheOldestHeadsFirst) {
  constexpr int kSeries = 40;
  constexpr uint64_t kPoints = 300;
  std::vector<SeriesId> ids;
  Open(1024, absl::Hours(1));  // neither full chunks nor old records
  for (int i = 0; i < kSeries; ++i) {
    ids.push_back(Resolve("m" + std::to_string(i)));
    PointColumns points;  // noisy values: a few bytes a point
    for (uint64_t s = 0; s < kPoints; ++s) {
      points.push_back(s * S, static_cast<int64_t>(s) * 1000,
                       std::sin(static_cast<double>(s * (i + 1))));
    }
    AppendOne(ids.back(), points);  // one head-log record per series
  }
  ASSERT_EQ(engine_->Stats().head_points, kSeries * kPoints);
  Open(1024, absl::Hours(1));  // heads recovered as one fragment each
  const uint64_t recovered = engine_->MemoryUsage();
  ASSERT_EQ(recovered, engine_->Stats().head_bytes);

  // Reopened with a budget the recovered heads fill to two thirds: above
  // half of it, so heads are sealed down to a quarter of it.
  engine_.reset();
  EngineOptions options;
  options.data_dir = dir_.path();
  options.chunk_points = 1024;
  options.max_head_age = absl::Hours(1);
  options.memory_limit = recovered * 3 / 2;
  auto engine = Engine::Open(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  engine_ = std::move(*engine);
  EXPECT_EQ(engine_->Pressure(), MemoryPressure::kHigh);
  // Until the sealer has swapped the last head of its batch.
  for (int i = 0; i < 500 && engine_->MemoryUsage() > options.memory_limit / 4;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_LE(engine_->MemoryUsage(), options.memory_limit / 4);
  EXPECT_EQ(engine_->Pressure(), MemoryPressure::kNone);

  // Sealed whole, in record order: the oldest series are all in chunks,
  // the newest still in memory, and nothing is lost.
  struct Where : ChunkVisitor {
    uint64_t sealed = 0, head = 0;
    absl::StatusOr<bool> OnChunk(const ChunkSummary& c, ChunkLoader) override {
      sealed += c.count;
      return true;
    }
    void OnHead(const PointColumns& p) override { head += p.size(); }
  };
  int sealed_series = 0;
  for (int i = 0; i < kSeries; ++i) {
    Where where;
    ASSERT_TRUE(engine_->Scan(ids[i], {}, where).ok());
    EXPECT_EQ(where.sealed + where.head, kPoints);
    EXPECT_TRUE(where.sealed == 0 || where.head == 0) << i;
    if (where.sealed > 0) {
      EXPECT_EQ(sealed_series, i) << "series " << i << " sealed out of order";
      ++sealed_series;
    }
    EXPECT_EQ(ReadAll(ids[i]).size(), kPoints);
  }
  EXPECT_GE(sealed_series, kSeries / 2);
  EXPECT_LT(sealed_series, kSeries);
  // The budget's count is what the heads really hold: sealed heads freed.
  EXPECT_EQ(engine_->MemoryUsage(), engine_->Stats().head_bytes);
}

TEST_F(EngineTest, CompactSealsEverything) {
  Open(1024);
  const SeriesId id = Resolve("train/loss");
  AppendRange(id, 0, 100);
  EXPECT_EQ(engine_->Stats().head_points, 100u);
  auto result = engine_->Compact();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->chunks_sealed, 1u);
  EXPECT_EQ(engine_->Stats().head_points, 0u);
  EXPECT_EQ(ReadAll(id).size(), 100u);
  Open(1024);
  EXPECT_EQ(ReadAll(id).size(), 100u);
  EXPECT_EQ(AppendRange(id, 99, 2).accepted, 1u);
}

// Flushes and compactions write through the pacer's limiter
// (storage/background_writes.h).
TEST_F(EngineTest, FlushesAndCompactionsGoThroughThePacer) {
  Open(1024);
  const SeriesId id = Resolve("train/loss");
  AppendRange(id, 0, 5000);
  ASSERT_TRUE(engine_->Compact().ok());
  const EngineStats stats = engine_->Stats();
  EXPECT_GT(stats.flush_bytes, 0u);
  // Most of it (RocksDB does not charge every byte of a table).
  EXPECT_LE(stats.background_bytes_paced,
            stats.flush_bytes + stats.compaction_bytes);
  EXPECT_GT(stats.background_bytes_paced * 4,
            (stats.flush_bytes + stats.compaction_bytes) * 3);
  EXPECT_GT(stats.background_write_limit, 0u);
}

TEST_F(EngineTest, InvalidKeysAreRejected) {
  Open();
  auto id = engine_->ResolveSeries({"proj", "", "loss", {}});
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(id.status().message()), HasSubstr("run"));
  EXPECT_FALSE(engine_->FindSeries({"proj", "run-1", "missing", {}}).has_value());
}

TEST_F(EngineTest, SecondOpenOfALockedDirectoryFails) {
  Open();
  EngineOptions options;
  options.data_dir = dir_.path();
  EXPECT_FALSE(Engine::Open(options).ok());
}

TEST_F(EngineTest, MetaRecordsAreDurableAndScannedByPrefix) {
  Open();
  std::vector<MetaWrite> writes = {
      {"r-a", "1"}, {"r-b", "2"}, {"w-a", "3"}};
  ASSERT_TRUE(engine_->WriteMeta(writes).ok());
  std::vector<MetaWrite> erase = {{"r-a", std::nullopt}};
  ASSERT_TRUE(engine_->WriteMeta(erase).ok());
  Open();  // survives a restart
  std::vector<std::string> seen;
  ASSERT_TRUE(engine_
                  ->ScanMeta("r-",
                             [&](std::string_view k, std::string_view v) {
                               seen.push_back(std::string(k) + "=" + std::string(v));
                               return true;
                             })
                  .ok());
  EXPECT_THAT(seen, ElementsAre("r-b=2"));
  auto missing = engine_->GetMeta("r-a");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  auto present = engine_->GetMeta("w-a");
  ASSERT_TRUE(present.ok());
  EXPECT_EQ(present->value_or(""), "3");
}

TEST_F(EngineTest, CommitObserverSeesAcceptedPointsOnly) {
  Open();
  struct Recorder : CommitObserver {
    void OnCommit(std::span<const CommittedPoints> committed) override {
      for (const CommittedPoints& c : committed) {
        for (uint64_t step : c.points.steps) steps.push_back(step / S);
      }
    }
    std::vector<uint64_t> steps;  // written on the commit thread only
  } recorder;
  engine_->AddCommitObserver(&recorder);
  const SeriesId id = Resolve("loss");
  AppendRange(id, 0, 3);
  AppendRange(id, 1, 1);  // a duplicate: not seen again
  AppendRange(id, 3, 2);
  engine_->RemoveCommitObserver(&recorder);
  AppendRange(id, 5, 1);  // not observed any more
  EXPECT_THAT(recorder.steps, ElementsAre(0, 1, 2, 3, 4));
}

}  // namespace
}  // namespace stepdb::storage
