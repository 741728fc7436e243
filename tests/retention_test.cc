// Retention with rollups kept longer than raw points (auth/retention.h,
// Engine::ExpireChunks, storage/downsample.h "Expired raw points"): what a
// pass deletes, compared with a brute force over what was stored; charts
// over spans whose raw points expired; restarts and kills in the middle of
// a pass; erasure; policy validation.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "auth/retention.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/downsample.h"
#include "storage/engine.h"
#include "storage/keys.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using storage::Axis;
using storage::Bucket;
using storage::Engine;
using storage::PointColumns;
using storage::ReadRange;
using storage::RollupPiece;
using storage::SeriesId;

constexpr uint64_t S = storage::kMicrosPerStep;
constexpr int64_t kHour = 3'600'000;
constexpr int64_t kDay = auth::kMillisPerDay;

// What a series had stored before any expiry: each chunk's first step, max
// time, its points and its rollup pieces.
struct StoredChunk {
  uint64_t first_step = 0;
  int64_t max_time_ms = 0;
  PointColumns points;
  std::vector<RollupPiece> pieces;
};

// The records (and, where the chunk is still there, its points) that
// ScanRollups visits.
struct Visited {
  uint64_t first_step = 0;
  bool has_chunk = false;
  std::vector<RollupPiece> pieces;
  PointColumns points;  // if has_chunk
};

std::vector<Visited> VisitAll(const Engine& engine, SeriesId id) {
  class Collect : public storage::RollupVisitor {
   public:
    absl::StatusOr<bool> OnChunkPieces(std::span<const RollupPiece> pieces,
                                       ChunkLoader load_chunk) override {
      Visited& v = out.emplace_back();
      v.first_step = pieces.front().first_step;
      v.pieces.assign(pieces.begin(), pieces.end());
      auto loaded = load_chunk();
      if (!loaded.ok()) return loaded.status();
      v.has_chunk = *loaded != nullptr;
      if (v.has_chunk) v.points = **loaded;
      return true;
    }
    void OnHead(const PointColumns&) override {}
    std::vector<Visited> out;
  } collect;
  EXPECT_TRUE(engine.ScanRollups(id, ReadRange{}, collect).ok());
  return collect.out;
}

std::vector<StoredChunk> Snapshot(const Engine& engine, SeriesId id) {
  std::vector<StoredChunk> out;
  for (Visited& v : VisitAll(engine, id)) {
    EXPECT_TRUE(v.has_chunk);
    StoredChunk& c = out.emplace_back();
    c.first_step = v.first_step;
    c.max_time_ms = *std::max_element(v.points.times_ms.begin(),
                                      v.points.times_ms.end());
    c.points = std::move(v.points);
    c.pieces = std::move(v.pieces);
  }
  return out;
}

std::vector<uint64_t> RawSteps(const Engine& engine, SeriesId id) {
  std::vector<uint64_t> steps;
  EXPECT_TRUE(engine
                  .Read(id, {}, 0,
                        [&](const PointColumns& p) {
                          steps.insert(steps.end(), p.steps.begin(),
                                       p.steps.end());
                          return true;
                        })
                  .ok());
  return steps;
}

// Checks that `id` holds exactly what the brute force says is left of
// `before` at the cut-offs: chunks with max time >= raw_cutoff, records
// with max time >= rollup_cutoff (flagged iff their chunk is gone), and
// statistics that count raw points plus flagged records' points.
void ExpectLeft(const Engine& engine, SeriesId id,
                const std::vector<StoredChunk>& before, int64_t raw_cutoff,
                int64_t rollup_cutoff) {
  std::vector<uint64_t> want_steps;
  uint64_t want_points = 0;
  std::optional<uint64_t> want_first;
  std::vector<const StoredChunk*> want_records;
  for (const StoredChunk& c : before) {
    if (c.max_time_ms >= raw_cutoff) {
      want_steps.insert(want_steps.end(), c.points.steps.begin(),
                        c.points.steps.end());
    }
    if (c.max_time_ms >= rollup_cutoff) {
      want_records.push_back(&c);
      want_points += c.points.size();
      if (!want_first) want_first = c.first_step;
    }
  }
  EXPECT_EQ(RawSteps(engine, id), want_steps);
  const std::vector<Visited> visited = VisitAll(engine, id);
  ASSERT_EQ(visited.size(), want_records.size());
  for (size_t i = 0; i < visited.size(); ++i) {
    const StoredChunk& c = *want_records[i];
    SCOPED_TRACE("record at step " + std::to_string(c.first_step));
    EXPECT_EQ(visited[i].first_step, c.first_step);
    EXPECT_EQ(visited[i].has_chunk, c.max_time_ms >= raw_cutoff);
    ASSERT_EQ(visited[i].pieces.size(), c.pieces.size());
    for (size_t k = 0; k < c.pieces.size(); ++k) {
      EXPECT_EQ(visited[i].pieces[k].first_step, c.pieces[k].first_step);
      EXPECT_EQ(visited[i].pieces[k].count, c.pieces[k].count);
      EXPECT_EQ(std::bit_cast<uint64_t>(visited[i].pieces[k].sum),
                std::bit_cast<uint64_t>(c.pieces[k].sum));
    }
  }
  bool truncated = false;
  storage::SeriesFilter filter;
  filter.project = engine.KeyOf(id)->project;
  for (const storage::SeriesInfo& info : engine.ListSeries(filter, 0, &truncated)) {
    if (info.id != id) continue;
    EXPECT_EQ(info.points, want_points);
    if (want_first) {
      EXPECT_EQ(info.first_step, *want_first);
    }
  }
}

class RetentionTest : public ::testing::Test {
 protected:
  void Open() {
    engine_.reset();
    storage::EngineOptions options;
    options.data_dir = dir_.path();
    options.sync = false;
    options.chunk_points = 16;
    auto opened = Engine::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    engine_ = *std::move(opened);
    policies_ = std::make_unique<auth::RetentionPolicies>(
        engine_.get(), [this] { return now_; });
  }

  SeriesId Resolve(const std::string& project, const std::string& run,
                   const std::string& metric) {
    auto id = engine_->ResolveSeries({project, run, metric, {}});
    EXPECT_TRUE(id.ok());
    return *id;
  }

  // `n` points, one per step from step 0, times from 0 on with random gaps
  // of 0.5 to 2 hours (now and then a step back in time), sealed.
  void Fill(SeriesId id, int n, std::mt19937_64& rng) {
    storage::AppendBatch batch;
    batch.StartSeries(id);
    int64_t t = 0;
    std::uniform_int_distribution<int64_t> gap(kHour / 2, 2 * kHour);
    std::normal_distribution<double> value(1.0, 0.5);
    for (int i = 0; i < n; ++i) {
      t += gap(rng);
      const int64_t time = rng() % 20 == 0 ? t - 3 * kHour : t;
      batch.AddPoint(storage::MicroStep(i, 0), time, value(rng));
    }
    ASSERT_TRUE(engine_->Append(std::move(batch)).ok());
  }

  testing::TempDir dir_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<auth::RetentionPolicies> policies_;
  int64_t now_ = 0;
};

// Passes at successive simulated times remove exactly the chunks older
// than N days and the records older than M days, in the project with the
// policy only; the statistics follow.
TEST_F(RetentionTest, PassesRemoveExactlyWhatIsOlderThanEachPeriod) {
  Open();
  std::mt19937_64 rng(42);
  std::vector<SeriesId> ids;
  for (const char* metric : {"loss", "lr", "grad_norm"}) {
    ids.push_back(Resolve("p", "r", metric));
    Fill(ids.back(), 400 + 37 * ids.size(), rng);
  }
  const SeriesId other = Resolve("q", "r", "loss");
  Fill(other, 300, rng);
  ASSERT_TRUE(engine_->Compact().ok());
  std::map<SeriesId, std::vector<StoredChunk>> before;
  for (SeriesId id : ids) before[id] = Snapshot(*engine_, id);
  before[other] = Snapshot(*engine_, other);
  const uint64_t other_points = engine_->Stats().points;
  // Each series' last point, which expiry rewrites the statistics around.
  auto last_points = [&] {
    std::map<SeriesId, std::pair<int64_t, uint64_t>> last;
    bool truncated = false;
    for (const std::string project : {"p", "q"}) {
      storage::SeriesFilter filter;
      filter.project = project;
      for (const auto& info : engine_->ListSeries(filter, 0, &truncated)) {
        last[info.id] = {info.last_time_ms,
                         std::bit_cast<uint64_t>(info.last_value)};
      }
    }
    return last;
  };
  const auto last_before = last_points();
  ASSERT_EQ(last_before.size(), 4u);

  ASSERT_TRUE(policies_->Set("p", {3, 10}).ok());
  // Times run over ~20 days: at these moments, nothing, then raw points
  // only, then raw points and rollups go.
  uint64_t raw_points_gone = 0, rollup_points_gone = 0;
  for (int64_t day : {4, 8, 12, 16, 16, 24}) {
    SCOPED_TRACE("day " + std::to_string(day));
    now_ = day * kDay;
    auto result = policies_->Enforce();
    ASSERT_TRUE(result.ok()) << result.status();
    raw_points_gone += result->points;
    rollup_points_gone += result->rollup_points;
    for (SeriesId id : ids) {
      ExpectLeft(*engine_, id, before[id], now_ - 3 * kDay, now_ - 10 * kDay);
    }
    ExpectLeft(*engine_, other, before[other], INT64_MIN, INT64_MIN);
    if (day == 12) {
      // Some records outlive their chunks here.
      EXPECT_GT(raw_points_gone, rollup_points_gone);
    }
  }
  EXPECT_GT(rollup_points_gone, 0u);
  EXPECT_EQ(engine_->Stats().points, other_points - rollup_points_gone);
  // And the same after a restart (statistics and flags are durable), the
  // last point too (the state does not keep it: expiry reads it back).
  Open();
  for (SeriesId id : ids) {
    ExpectLeft(*engine_, id, before[id], now_ - 3 * kDay, now_ - 10 * kDay);
  }
  EXPECT_EQ(last_points(), last_before);
}

// With rollup_days unset, a chunk and its record go together (the old
// behaviour); a record left by a longer rollup period goes once the period
// is shortened.
TEST_F(RetentionTest, RollupsAsLongAsRawByDefaultAndAfterShortening) {
  Open();
  std::mt19937_64 rng(5);
  const SeriesId id = Resolve("p", "r", "loss");
  Fill(id, 400, rng);
  ASSERT_TRUE(engine_->Compact().ok());
  const std::vector<StoredChunk> before = Snapshot(*engine_, id);
  ASSERT_TRUE(policies_->Set("p", 5).ok());
  now_ = 10 * kDay;
  ASSERT_TRUE(policies_->Enforce().ok());
  ExpectLeft(*engine_, id, before, now_ - 5 * kDay, now_ - 5 * kDay);
  ASSERT_TRUE(policies_->Set("p", {2, 20}).ok());
  ASSERT_TRUE(policies_->Enforce().ok());
  ExpectLeft(*engine_, id, before, now_ - 2 * kDay, now_ - 5 * kDay);
  ASSERT_TRUE(policies_->Set("p", {2, 3}).ok());
  ASSERT_TRUE(policies_->Enforce().ok());
  ExpectLeft(*engine_, id, before, now_ - 2 * kDay, now_ - 3 * kDay);
  // The engine refuses a rollup cut-off after the raw one.
  EXPECT_EQ(engine_->ExpireChunks("p", 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Charts over a span whose raw points expired: buckets at least as wide as
// the pieces are what they were; finer ones and range edges inside a piece
// take the piece whole at its last point and say so.
TEST_F(RetentionTest, ChartsOverExpiredRawPointsComeFromWholePieces) {
  Open();
  // One point per step, one per hour: chunks of 16 steps, pieces of 2.
  const SeriesId id = Resolve("p", "r", "loss");
  {
    storage::AppendBatch batch;
    batch.StartSeries(id);
    for (int i = 0; i < 128; ++i) {
      batch.AddPoint(storage::MicroStep(i, 0), i * kHour,
                     i % 13 == 0 ? std::nan("") : std::sin(i));
    }
    ASSERT_TRUE(engine_->Append(std::move(batch)).ok());
  }
  ASSERT_TRUE(engine_->Compact().ok());
  const std::vector<StoredChunk> chunks = Snapshot(*engine_, id);
  const uint64_t piece_width = chunks[0].pieces[0].last_step + S;
  ASSERT_EQ(piece_width, 2 * S);

  ReadRange all;
  all.steps = {0, 127 * S};
  auto read = [&](const ReadRange& range, uint32_t buckets,
                  storage::BucketReadStats* stats = nullptr) {
    auto r = storage::ReadBuckets(*engine_, id, Axis::kStep, range, buckets,
                                  stats);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<Bucket>{};
  };
  const std::vector<Bucket> wide_before = read(all, 16);   // 8 steps
  const std::vector<Bucket> fine_before = read(all, 128);  // 1 step

  // Raw points of steps 0-63 (times < 64 h) expire, their rollups stay.
  ASSERT_TRUE(engine_->ExpireChunks("p", 64 * kHour, 0).ok());
  ASSERT_EQ(RawSteps(*engine_, id).front(), 64 * S);

  storage::BucketReadStats stats;
  const std::vector<Bucket> wide = read(all, 16, &stats);
  ASSERT_EQ(wide.size(), wide_before.size());
  for (size_t i = 0; i < wide.size(); ++i) {
    EXPECT_EQ(wide[i].count, wide_before[i].count);
    EXPECT_EQ(wide[i].nan_count, wide_before[i].nan_count);
    EXPECT_EQ(std::bit_cast<uint64_t>(wide[i].first),
              std::bit_cast<uint64_t>(wide_before[i].first));
    EXPECT_EQ(wide[i].min, wide_before[i].min);
    EXPECT_EQ(wide[i].max, wide_before[i].max);
    EXPECT_EQ(wide[i].sum, wide_before[i].sum);
    EXPECT_FALSE(wide[i].coarse);
  }
  EXPECT_EQ(stats.pieces_coarse, 0u);

  // One-step buckets: over steps 0-63, one bucket per piece, at the
  // piece's last step, with the piece's aggregates; from 64 on, exact.
  const std::vector<Bucket> fine = read(all, 128, &stats);
  EXPECT_EQ(stats.pieces_coarse, 32u);
  std::vector<Bucket> want;
  for (const StoredChunk& c : chunks) {
    for (const RollupPiece& p : c.pieces) {
      if (p.last_step >= 64 * S) continue;
      Bucket& b = want.emplace_back();
      b.start_step = b.end_step = p.last_step;
      b.count = p.count;
      b.nan_count = p.nan_count;
      b.first = p.first;
      b.last = p.last;
      b.sum = p.sum;
      b.coarse = true;
    }
  }
  for (const Bucket& b : fine_before) {
    if (b.start_step >= 64 * S) want.push_back(b);
  }
  ASSERT_EQ(fine.size(), want.size());
  for (size_t i = 0; i < fine.size(); ++i) {
    SCOPED_TRACE("bucket " + std::to_string(i));
    EXPECT_EQ(fine[i].start_step, want[i].start_step);
    EXPECT_EQ(fine[i].count, want[i].count);
    EXPECT_EQ(fine[i].nan_count, want[i].nan_count);
    EXPECT_EQ(std::bit_cast<uint64_t>(fine[i].first),
              std::bit_cast<uint64_t>(want[i].first));
    EXPECT_EQ(std::bit_cast<uint64_t>(fine[i].last),
              std::bit_cast<uint64_t>(want[i].last));
    EXPECT_EQ(fine[i].sum, want[i].sum);
    EXPECT_EQ(fine[i].coarse, want[i].coarse);
  }

  // Range edges inside pieces: [3, 12] takes piece 2-3 (last step 3 in
  // range) whole, not piece 12-13 (last step 13 outside): 2 + 8 points, in
  // one 16-step bucket.
  ReadRange edges;
  edges.steps = {3 * S, 12 * S};
  const std::vector<Bucket> cut = read(edges, 1, &stats);
  ASSERT_EQ(cut.size(), 1u);
  EXPECT_EQ(cut[0].count, 10u);
  EXPECT_TRUE(cut[0].coarse);
  EXPECT_EQ(cut[0].last_step, 11 * S);
  EXPECT_EQ(stats.pieces_coarse, 1u);
  // By time the same rule: pieces placed at their max time.
  ReadRange times;
  times.times = {3 * kHour, 12 * kHour};
  auto by_time = storage::ReadBuckets(*engine_, id, Axis::kTime, times, 1);
  ASSERT_TRUE(by_time.ok());
  ASSERT_EQ(by_time->size(), 1u);
  EXPECT_EQ((*by_time)[0].count, 10u);
  EXPECT_TRUE((*by_time)[0].coarse);

  // An open range starts at the first record, not at the first raw point.
  auto extent = storage::ReadSeriesExtent(*engine_, id);
  ASSERT_TRUE(extent.ok() && extent->has_value());
  EXPECT_EQ((*extent)->min_step, 0u);
  EXPECT_EQ((*extent)->min_time_ms, 0);
}

// A pass killed at any moment leaves each series all done or untouched
// (one atomic write per series): the store stays consistent, and the next
// pass finishes the work.
TEST_F(RetentionTest, APassKilledAnywhereIsFinishedByTheNext) {
  Open();
  std::mt19937_64 rng(9);
  std::vector<SeriesId> ids;
  for (int i = 0; i < 40; ++i) {
    ids.push_back(Resolve("p", "r" + std::to_string(i % 4),
                          "m" + std::to_string(i)));
    Fill(ids.back(), 200, rng);
  }
  ASSERT_TRUE(engine_->Compact().ok());
  std::map<SeriesId, std::vector<StoredChunk>> before;
  for (SeriesId id : ids) before[id] = Snapshot(*engine_, id);
  ASSERT_TRUE(policies_->Set("p", {2, 4}).ok());
  engine_.reset();

  for (int cycle = 0; cycle < 4; ++cycle) {
    SCOPED_TRACE("cycle " + std::to_string(cycle));
    now_ = (6 + 2 * cycle) * kDay;
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      storage::EngineOptions options;
      options.data_dir = dir_.path();
      options.sync = false;
      options.chunk_points = 16;
      auto engine = Engine::Open(options);
      if (!engine.ok()) _exit(2);
      auth::RetentionPolicies policies(engine->get(), [&] { return now_; });
      char c = 1;
      if (write(ready[1], &c, 1) != 1) _exit(3);
      (void)policies.Enforce();
      _exit(0);  // as if killed after the pass: no clean close
    }
    close(ready[1]);
    char c;
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    close(ready[0]);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);

    Open();
    // Consistent whatever was done: each series is at this cut-off or at
    // the previous one (or, in cycle 0, untouched).
    const int64_t prev = cycle == 0 ? INT64_MIN : now_ - 2 * kDay;
    for (SeriesId id : ids) {
      const std::vector<uint64_t> raw = RawSteps(*engine_, id);
      size_t want_now = 0, want_prev = 0;
      for (const StoredChunk& c : before[id]) {
        if (c.max_time_ms >= now_ - 2 * kDay) want_now += c.points.size();
        if (prev == INT64_MIN || c.max_time_ms >= prev - 2 * kDay) {
          want_prev += c.points.size();
        }
      }
      EXPECT_TRUE(raw.size() == want_now || raw.size() == want_prev)
          << "series " << id << ": " << raw.size() << " raw points";
      for (const Visited& v : VisitAll(*engine_, id)) {
        EXPECT_EQ(v.has_chunk, std::find(raw.begin(), raw.end(),
                                         v.first_step) != raw.end());
      }
    }
    ASSERT_TRUE(policies_->Enforce().ok());
    for (SeriesId id : ids) {
      ExpectLeft(*engine_, id, before[id], now_ - 2 * kDay, now_ - 4 * kDay);
    }
    engine_.reset();
  }
}

// Erasure still removes everything: chunks, flagged records, statistics.
TEST_F(RetentionTest, DeleteRunRemovesRecordsWhoseChunksExpired) {
  Open();
  std::mt19937_64 rng(3);
  const SeriesId id = Resolve("p", "gone", "loss");
  Fill(id, 300, rng);
  ASSERT_TRUE(engine_->Compact().ok());
  ASSERT_TRUE(policies_->Set("p", {2, 30}).ok());
  now_ = 8 * kDay;
  auto expired = policies_->Enforce();
  ASSERT_TRUE(expired.ok());
  ASSERT_GT(expired->chunks, 0u);
  ASSERT_EQ(expired->rollup_records, 0u);
  auto deleted = engine_->DeleteRun("p", "gone");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->points, 300u);
  ASSERT_TRUE(engine_->ReclaimDeleted().ok());
  EXPECT_EQ(engine_->Stats().points, 0u);
  engine_.reset();

  // No key is left in the rollups family but the "rollups built" marker.
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir_.path(),
                                              &names)
                  .ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) {
    families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir_.path(),
                                           families, &handles, &raw)
                  .ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] != storage::kRollupsFamily) continue;
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), handles[i]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      EXPECT_EQ(it->key().size(), sizeof(storage::kRollupsBuiltKey))
          << "rollup record left after DeleteRun";
    }
  }
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
}

TEST_F(RetentionTest, PoliciesAreValidatedAndOldRecordsStillRead) {
  Open();
  auto code = [&](auth::ProjectRetention p) {
    return policies_->Set("p", p).code();
  };
  EXPECT_EQ(code({7, 3}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({0, 3}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(policies_->Set("", {1, 1}).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status less = policies_->Set("p", {7, 3});
  EXPECT_NE(less.message().find("rollup_days: 3 is less than raw_days 7"),
            std::string::npos)
      << less;
  EXPECT_FALSE(policies_->Get("p")->has_value());  // nothing was stored

  ASSERT_TRUE(policies_->Set("p", {7, 7}).ok());
  ASSERT_TRUE(policies_->Set("q", {7, 0}).ok());
  ASSERT_TRUE(policies_->Set("r", {7, 365}).ok());
  EXPECT_EQ(**policies_->Get("r"), (auth::ProjectRetention{7, 365}));
  EXPECT_EQ((**policies_->Get("q")).effective_rollup_days(), 7u);
  // A record from before rollup periods: raw days only.
  std::string old_value;
  storage::AppendBigEndian32(30, &old_value);
  storage::MetaWrite old{std::string(1, storage::kRetentionTag) + "old",
                         old_value};
  ASSERT_TRUE(engine_->WriteMeta({&old, 1}).ok());
  EXPECT_EQ(**policies_->Get("old"), (auth::ProjectRetention{30, 0}));
  auto list = policies_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 4u);
  // Removing: both zero.
  ASSERT_TRUE(policies_->Set("r", {0, 0}).ok());
  EXPECT_FALSE(policies_->Get("r")->has_value());
}

}  // namespace
}  // namespace stepdb
