// Right to erasure: Engine::DeleteRun / DeleteProject, their memory-side
// consumers (run store, watch rules, tails), restarts and crashes, and the
// Admin RPCs.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <thread>

#include "gmock/gmock.h"
#include "rocksdb/db.h"
#include "gtest/gtest.h"
#include "storage/engine.h"
#include "storage/keys.h"
#include "storage/run_store.h"
#include "storage/watch.h"
#include "tests/in_process_server.h"
#include "tests/raw_db.h"
#include "tests/test_util.h"

namespace stepdb::storage {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t S = kMicrosPerStep;

SeriesFilter Filter(const std::string& project,
                    std::optional<std::string> run = std::nullopt) {
  return SeriesFilter{project, std::move(run), std::nullopt, {}, {}};
}

// Whether any file under `dir` (or only those whose name ends with
// `suffix`) contains `needle`.
bool DirectoryContains(const std::string& dir, const std::string& needle,
                       const std::string& suffix = "") {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    if (!entry.path().string().ends_with(suffix)) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)),
                            std::istreambuf_iterator<char>());
    if (bytes.find(needle) != std::string::npos) return true;
  }
  return false;
}

// Records what the engine tells its observers.
class RecordingObserver : public CommitObserver {
 public:
  void OnCommit(std::span<const CommittedPoints>) override {}
  void OnSeriesDeleted(std::span<const SeriesId> series) override {
    absl::MutexLock lock(&mu_);
    deleted_.insert(deleted_.end(), series.begin(), series.end());
  }
  std::vector<SeriesId> deleted() const {
    absl::MutexLock lock(&mu_);
    return deleted_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<SeriesId> deleted_ ABSL_GUARDED_BY(mu_);
};

class ErasureTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    engine_.reset();
    EngineOptions options;
    options.data_dir = dir_.path();
    options.chunk_points = 64;
    auto engine = Engine::Open(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
  }

  SeriesId Resolve(const std::string& project, const std::string& run,
                   const std::string& metric, Labels labels = {}) {
    auto id = engine_->ResolveSeries({project, run, metric, std::move(labels)});
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : 0;
  }

  // Whole steps [first, first + n) of each series in one append (one
  // head-log record holding all of them).
  void Append(const std::vector<SeriesId>& series, uint64_t first, uint64_t n) {
    AppendBatch batch;
    for (SeriesId id : series) {
      batch.StartSeries(id);
      for (uint64_t s = first; s < first + n; ++s) {
        batch.AddPoint(s * S, static_cast<int64_t>(s) * 500 + id,
                       static_cast<double>(s * 7 + id) / 3.0);
      }
    }
    auto result = engine_->Append(std::move(batch));
    ASSERT_TRUE(result.ok()) << result.status();
    for (const auto& r : *result) ASSERT_EQ(r.rejected, 0u) << r.first_rejection;
  }

  // Waits (bounded) until the background sealer has written `chunks`
  // chunks, so a test that means to delete sealed data has some.
  void WaitForSealedChunks(uint64_t chunks) {
    for (int i = 0; i < 1000 && engine_->Stats().sealed_chunks < chunks; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_GE(engine_->Stats().sealed_chunks, chunks);
  }

  // Every point of every series of `project`, by series name, for exact
  // before/after comparisons.
  std::map<std::string, std::vector<std::tuple<uint64_t, int64_t, uint64_t>>>
  Snapshot(const std::string& project) {
    std::map<std::string, std::vector<std::tuple<uint64_t, int64_t, uint64_t>>> out;
    bool truncated = false;
    for (const SeriesInfo& info : engine_->ListSeries(Filter(project), 0, &truncated)) {
      auto& points = out[info.key.run + "/" + info.key.metric];
      auto read = engine_->Read(info.id, {}, 0, [&](const PointColumns& p) {
        for (size_t i = 0; i < p.size(); ++i) {
          points.emplace_back(p.steps[i], p.times_ms[i],
                              std::bit_cast<uint64_t>(p.values[i]));
        }
        return true;
      });
      EXPECT_TRUE(read.ok()) << read.status();
    }
    return out;
  }

  // Runs `work` in a child process on its own engine, which then dies
  // without closing anything (as with kill -9), and reopens the engine
  // here. The engine is opened after the fork: its threads would not
  // survive it.
  void CrashAfter(absl::FunctionRef<bool()> work) {
    engine_.reset();
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      Open();
      _exit(work() && !::testing::Test::HasFailure() ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    Open();
  }

  size_t SeriesCount(const std::string& project,
                     std::optional<std::string> run = std::nullopt) {
    bool truncated = false;
    return engine_->ListSeries(Filter(project, std::move(run)), 0, &truncated).size();
  }

  // Keys of `project` (or of its `run`) in the column family `family`,
  // read with RocksDB directly while the engine is closed: what a deletion
  // leaves behind at the storage level, whatever the engine's API shows.
  // The ids come from RememberPrefixes, since a deletion removes the names.
  size_t RawKeys(const char* family, const std::string& project,
                 std::optional<std::string> run) {
    const std::string prefix = run ? run_prefixes_[project + "/" + *run]
                                   : project_prefixes_[project];
    engine_.reset();
    size_t count = 0;
    {
      RawDb raw(dir_.path());
      std::unique_ptr<rocksdb::Iterator> it(
          raw.db->NewIterator(rocksdb::ReadOptions(), raw.family(family)));
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        ++count;
      }
    }
    Open();
    return count;
  }

  // Records the data-key prefixes of a project and its runs, from the
  // index, for RawKeys after they are deleted.
  void RememberPrefixes(const std::string& project, const std::vector<std::string>& runs) {
    engine_.reset();
    {
      RawDb raw(dir_.path());
      const uint32_t pid = raw.Id(ProjectIndexKey(project));
      project_prefixes_[project] = ProjectDataPrefix(pid);
      for (const std::string& run : runs) {
        run_prefixes_[project + "/" + run] =
            RunDataPrefix(pid, raw.Id(RunIndexKey(pid, run)));
      }
    }
    Open();
  }

  using RawDb = testing::RawDb;

  testing::TempDir dir_;
  std::unique_ptr<Engine> engine_;
  std::map<std::string, std::string> project_prefixes_, run_prefixes_;
};

// At the storage level: no key of a deleted run is left in any column
// family of run data (chunks and their rollup records), and the kept run's
// keys are all there.
TEST_F(ErasureTest, NoKeyOfADeletedRunIsLeftInAnyRunDataFamily) {
  const SeriesId gone = Resolve("p", "gone", "loss");
  const SeriesId kept = Resolve("p", "kept", "loss");
  Append({gone, kept}, 1, 500);  // several sealed chunks each
  ASSERT_TRUE(engine_->Compact().ok());
  RememberPrefixes("p", {"gone", "kept"});
  for (const char* family : {kChunksFamily, kRollupsFamily}) {
    SCOPED_TRACE(family);
    EXPECT_GT(RawKeys(family, "p", "gone"), 0u);
  }
  const size_t kept_chunks = RawKeys(kChunksFamily, "p", "kept");
  const size_t kept_rollups = RawKeys(kRollupsFamily, "p", "kept");
  ASSERT_TRUE(engine_->DeleteRun("p", "gone").ok());
  for (const char* family : {kChunksFamily, kRollupsFamily}) {
    SCOPED_TRACE(family);
    EXPECT_EQ(RawKeys(family, "p", "gone"), 0u);
  }
  EXPECT_EQ(RawKeys(kChunksFamily, "p", "kept"), kept_chunks);
  EXPECT_EQ(RawKeys(kRollupsFamily, "p", "kept"), kept_rollups);
  ASSERT_TRUE(engine_->DeleteProject("p").ok());
  for (const char* family : {kChunksFamily, kRollupsFamily}) {
    SCOPED_TRACE(family);
    EXPECT_EQ(RawKeys(family, "p", std::nullopt), 0u);
  }
}

TEST_F(ErasureTest, DeleteRunRemovesThatRunAndLeavesTheRestExactly) {
  const SeriesId a1 = Resolve("p1", "a", "loss");
  const SeriesId a2 = Resolve("p1", "a", "gpu/util", {{"gpu", "0"}});
  const SeriesId b1 = Resolve("p1", "b", "loss");
  const SeriesId c1 = Resolve("p2", "a", "loss");  // same run name elsewhere
  // Sealed chunks and head points in both runs, sharing head-log records.
  Append({a1, a2, b1, c1}, 1, 300);
  Append({a1, b1}, 301, 10);
  WaitForSealedChunks(16);  // 4 full 64-step windows of each series
  const auto p1_before = Snapshot("p1");
  const auto p2_before = Snapshot("p2");
  const EngineStats stats_before = engine_->Stats();
  RecordingObserver observer;
  engine_->AddCommitObserver(&observer);

  auto deleted = engine_->DeleteRun("p1", "a");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  engine_->RemoveCommitObserver(&observer);
  EXPECT_EQ(deleted->runs, 1u);
  EXPECT_EQ(deleted->series, 2u);
  EXPECT_EQ(deleted->points, 610u);
  EXPECT_GT(deleted->chunks, 0u);
  EXPECT_THAT(observer.deleted(), ::testing::ElementsAre(a1, a2));

  // Gone from reads, look-ups and listings.
  EXPECT_EQ(engine_->Read(a1, {}, 0, [](const PointColumns&) { return true; })
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->FindSeries({"p1", "a", "loss", {}}), std::nullopt);
  EXPECT_FALSE(engine_->KeyOf(a1).has_value());
  EXPECT_EQ(SeriesCount("p1", "a"), 0u);
  // The rest, exactly.
  auto p1_after = Snapshot("p1");
  auto p1_expected = p1_before;
  p1_expected.erase("a/loss");
  p1_expected.erase("a/gpu/util");
  EXPECT_EQ(p1_after, p1_expected);
  EXPECT_EQ(Snapshot("p2"), p2_before);
  const EngineStats stats_after = engine_->Stats();
  EXPECT_EQ(stats_after.runs, stats_before.runs - 1);
  EXPECT_EQ(stats_after.series, stats_before.series - 2);
  EXPECT_EQ(stats_after.points, stats_before.points - 610);

  // A second deletion finds nothing.
  auto again = engine_->DeleteRun("p1", "a");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->runs, 0u);
}

TEST_F(ErasureTest, NothingComesBackAfterARestartAndIdsAreNotReused) {
  const SeriesId keep = Resolve("p", "keep", "loss");
  const SeriesId gone = Resolve("p", "gone", "loss");  // the largest id
  Append({keep, gone}, 1, 200);
  Append({gone, keep}, 201, 5);  // head points of both, in one record
  const auto before = Snapshot("p");
  ASSERT_TRUE(engine_->DeleteRun("p", "gone").ok());
  Open();
  EXPECT_EQ(engine_->FindSeries({"p", "gone", "loss", {}}), std::nullopt);
  EXPECT_EQ(SeriesCount("p"), 1u);
  auto expected = before;
  expected.erase("gone/loss");
  EXPECT_EQ(Snapshot("p"), expected);
  // Written again: a new run with new ids, empty (step 1 is accepted).
  const SeriesId again = Resolve("p", "gone", "loss");
  EXPECT_GT(again, gone);
  Append({again}, 1, 3);
  EXPECT_EQ(Snapshot("p")["gone/loss"].size(), 3u);
  Open();
  EXPECT_EQ(Snapshot("p")["gone/loss"].size(), 3u);
  EXPECT_EQ(Snapshot("p")["keep/loss"], before.at("keep/loss"));
}

TEST_F(ErasureTest, RecreatedRunStartsEmptyWithNewIds) {
  const SeriesId old_id = Resolve("p", "r", "loss");
  Append({old_id}, 1, 100);
  ASSERT_TRUE(engine_->DeleteRun("p", "r").ok());
  const SeriesId new_id = Resolve("p", "r", "loss");
  EXPECT_NE(new_id, old_id);
  // Step 5 went "backwards" against the deleted series; now it is new.
  Append({new_id}, 5, 2);
  const auto points = Snapshot("p")["r/loss"];
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(std::get<0>(points[0]), 5 * S);
}

TEST_F(ErasureTest, ACrashRightAfterTheDeleteBringsNothingBack) {
  // Head points only live in the head log.
  CrashAfter([&] {
    const SeriesId keep = Resolve("p", "keep", "loss");
    const SeriesId gone = Resolve("p", "gone", "loss");
    const SeriesId gone2 = Resolve("p", "gone", "lr");
    Append({keep, gone, gone2}, 1, 130);  // sealed chunks and heads
    Append({gone, keep}, 131, 3);
    return engine_->DeleteRun("p", "gone").ok();
  });
  EXPECT_EQ(engine_->FindSeries({"p", "gone", "loss", {}}), std::nullopt);
  EXPECT_EQ(engine_->FindSeries({"p", "gone", "lr", {}}), std::nullopt);
  EXPECT_EQ(SeriesCount("p"), 1u);
  const auto keep = Snapshot("p")["keep/loss"];
  ASSERT_EQ(keep.size(), 133u);
  EXPECT_EQ(engine_->Stats().points, 133u);
}

TEST_F(ErasureTest, ACrashBeforeTheDeleteKeepsEverything) {
  // The deletion is one atomic write: before it, everything is there.
  CrashAfter([&] {
    Append({Resolve("p", "gone", "loss")}, 1, 130);
    return true;
  });
  EXPECT_EQ(Snapshot("p")["gone/loss"].size(), 130u);
  auto deleted = engine_->DeleteRun("p", "gone");
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(deleted->points, 130u);
  Open();
  EXPECT_EQ(SeriesCount("p"), 0u);
}

TEST_F(ErasureTest, DeletedBytesAreGoneAfterReclaiming) {
  // Distinctive names, to look for in the files afterwards.
  const std::string run = "erase-me-7f3a9c";
  const std::string metric = "secret/metric-51d2";
  std::vector<SeriesId> gone, keep;
  for (int i = 0; i < 8; ++i) {
    gone.push_back(Resolve("p", run, metric, {{"rank", std::to_string(i)}}));
    keep.push_back(Resolve("p", "keep", "loss", {{"rank", std::to_string(i)}}));
  }
  for (uint64_t first = 1; first <= 20'000; first += 2'000) Append(gone, first, 2'000);
  Append(keep, 1, 2'000);
  ASSERT_TRUE(engine_->Compact().ok());
  ASSERT_TRUE(DirectoryContains(dir_.path(), run));
  const uint64_t before = engine_->Stats().bytes_on_disk;

  const auto start = std::chrono::steady_clock::now();
  auto deleted = engine_->DeleteRun("p", run);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  const auto deleted_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(engine_->ReclaimDeleted().ok());
  const auto reclaimed_at = std::chrono::steady_clock::now();
  const uint64_t after = engine_->Stats().bytes_on_disk;
  EXPECT_EQ(deleted->points, 160'000u);
  // The deleted run held most of the bytes (160k of 176k points).
  EXPECT_LT(after, before - (before - after) / 2);
  EXPECT_LT(after * 2, before) << before << " -> " << after;
  // Neither the tables nor the write-ahead log hold any of it...
  // (deleted files pass through a trash first; it is empty by now).
  for (const char* files : {".sst", ".log", ".trash"}) {
    EXPECT_FALSE(DirectoryContains(dir_.path(), run, files)) << files;
    EXPECT_FALSE(DirectoryContains(dir_.path(), metric, files)) << files;
  }
  EXPECT_EQ(SeriesCount("p"), 8u);
  std::cout << "deleted " << deleted->points << " points in "
            << std::chrono::duration<double, std::milli>(deleted_at - start).count()
            << " ms, reclaimed in "
            << std::chrono::duration<double, std::milli>(reclaimed_at - deleted_at).count()
            << " ms; bytes on disk " << before << " -> " << after << "\n";
  // ...and after a restart (which rewrites RocksDB's MANIFEST, whose log
  // of table boundary keys may still name the run's index keys until
  // then) no file does.
  ASSERT_TRUE(engine_->Compact().ok());
  Open();
  EXPECT_FALSE(DirectoryContains(dir_.path(), run));
  EXPECT_FALSE(DirectoryContains(dir_.path(), metric));
  EXPECT_EQ(SeriesCount("p"), 8u);
}

TEST_F(ErasureTest, AppendsRacingADeleteAreStoredWholeOrRejected) {
  const SeriesId gone = Resolve("p", "gone", "loss");
  const SeriesId keep = Resolve("p", "keep", "loss");
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> gone_accepted_after{0}, gone_rejected{0};
  std::atomic<bool> deleted{false};
  uint64_t keep_written = 0;
  std::thread writer([&] {
    for (uint64_t step = 1; !stop.load(); step += 10) {
      AppendBatch batch;
      for (SeriesId id : {gone, keep}) {
        batch.StartSeries(id);
        for (uint64_t s = step; s < step + 10; ++s) batch.AddPoint(s * S, s, 1.0);
      }
      const bool was_deleted = deleted.load();
      auto result = engine_->Append(std::move(batch));
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_EQ((*result)[1].accepted, 10u);
      keep_written += 10;
      const SeriesAppendResult& g = (*result)[0];
      // All or nothing per series, per append.
      EXPECT_TRUE((g.accepted == 10 && g.rejected == 0) ||
                  (g.accepted == 0 && g.rejected == 10));
      if (g.rejected > 0) {
        EXPECT_EQ(g.first_rejection, "series was deleted");
        ++gone_rejected;
      } else if (was_deleted) {
        ++gone_accepted_after;
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto result = engine_->DeleteRun("p", "gone");
  deleted = true;
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->points, 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  stop = true;
  writer.join();
  EXPECT_EQ(gone_accepted_after.load(), 0u);
  EXPECT_GT(gone_rejected.load(), 0u);
  EXPECT_EQ(engine_->FindSeries({"p", "gone", "loss", {}}), std::nullopt);
  EXPECT_EQ(Snapshot("p")["keep/loss"].size(), keep_written);
  // Nothing of it comes back, and no head-log record is left pinned by it.
  Open();
  EXPECT_EQ(SeriesCount("p"), 1u);
  EXPECT_EQ(Snapshot("p")["keep/loss"].size(), keep_written);
  EXPECT_EQ(engine_->Stats().points, keep_written);
}

TEST_F(ErasureTest, DeleteProjectRemovesItsRecordsAndKeepsOthers) {
  const SeriesId a = Resolve("p1", "a", "loss");
  const SeriesId b = Resolve("p1", "b", "loss");
  const SeriesId other = Resolve("p2", "a", "loss");
  Append({a, b, other}, 1, 150);
  // Per-project meta records of both projects, and one that is not keyed
  // by project (a token-like record).
  const std::vector<MetaWrite> meta = {
      {RunMetaKey("p1", "a"), "run"},
      {ProjectMetaPrefix(kWatchRuleTag, "p1") + "1", "rule"},
      {std::string(1, kRetentionTag) + "p1", "days"},
      {RunMetaKey("p2", "a"), "run"},
      {ProjectMetaPrefix(kWatchRuleTag, "p2") + "1", "rule"},
      {std::string(1, kRetentionTag) + "p2", "days"},
      // A project whose name extends "p1" is another project.
      {RunMetaKey("p10", "a"), "run"},
      {std::string(1, kRetentionTag) + "p10", "days"},
      {std::string(1, kTokenTag) + "0123", "token"},
  };
  ASSERT_TRUE(engine_->WriteMeta(meta).ok());
  const auto p2_before = Snapshot("p2");

  auto deleted = engine_->DeleteProject("p1");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->runs, 2u);
  EXPECT_EQ(deleted->series, 2u);
  EXPECT_EQ(deleted->points, 300u);
  EXPECT_EQ(SeriesCount("p1"), 0u);
  EXPECT_EQ(Snapshot("p2"), p2_before);
  EXPECT_EQ(engine_->Stats().projects, 1u);
  for (const MetaWrite& w : meta) {
    auto value = engine_->GetMeta(w.key);
    ASSERT_TRUE(value.ok());
    const bool p1 = w.key.substr(1).starts_with("p1") &&
                    !w.key.substr(1).starts_with("p10");
    EXPECT_EQ(value->has_value(), !p1) << w.key;
  }

  // The name may be used again: a new project id, new series.
  Open();
  EXPECT_EQ(SeriesCount("p1"), 0u);
  EXPECT_EQ(Snapshot("p2"), p2_before);
  const SeriesId again = Resolve("p1", "a", "loss");
  EXPECT_GT(again, other);
  Append({again}, 1, 1);
  Open();
  EXPECT_EQ(SeriesCount("p1"), 1u);
  EXPECT_EQ(Snapshot("p1")["a/loss"].size(), 1u);
}

TEST_F(ErasureTest, RunStoreForgetsTheRunAndItsRecord) {
  auto runs = RunStore::Open(engine_.get());
  ASSERT_TRUE(runs.ok());
  RunRecord record;
  record.project = "p";
  record.run_id = "meta-only";
  ASSERT_TRUE((*runs)->Create(record).ok());
  record.run_id = "with-points";
  ASSERT_TRUE((*runs)->Create(record).ok());
  Append({Resolve("p", "with-points", "loss")}, 1, 10);

  auto meta_only = (*runs)->DeleteRun("p", "meta-only");
  ASSERT_TRUE(meta_only.ok()) << meta_only.status();
  EXPECT_EQ(meta_only->run_records, 1u);
  EXPECT_EQ(meta_only->data.runs, 0u);
  auto with_points = (*runs)->DeleteRun("p", "with-points");
  ASSERT_TRUE(with_points.ok());
  EXPECT_EQ(with_points->run_records, 1u);
  EXPECT_EQ(with_points->data.points, 10u);
  EXPECT_EQ((*runs)->Get("p", "with-points"), std::nullopt);
  EXPECT_EQ((*runs)->DeleteRun("p", "with-points").status().code(),
            absl::StatusCode::kNotFound);
  bool truncated = false;
  EXPECT_THAT((*runs)->List("p", {}, {}, 0, &truncated), IsEmpty());
  // Nothing on disk either.
  runs->reset();
  auto reopened = RunStore::Open(engine_.get());
  ASSERT_TRUE(reopened.ok());
  EXPECT_THAT((*reopened)->List("p", {}, {}, 0, &truncated), IsEmpty());
}

TEST_F(ErasureTest, WatchForgetsDeletedSeriesAndTheProjectsRules) {
  WatchOptions options;
  options.stall_check_interval = absl::Milliseconds(10);
  auto watch = WatchEvaluator::Open(engine_.get(), nullptr, options);
  ASSERT_TRUE(watch.ok());
  engine_->AddCommitObserver(watch->get());
  WatchRuleSpec rule;
  rule.project = "p";
  rule.condition = "stalled 200ms";
  ASSERT_TRUE((*watch)->CreateRule(rule).ok());
  Append({Resolve("p", "gone", "loss"), Resolve("p", "keep", "loss")}, 1, 3);
  ASSERT_TRUE(engine_->DeleteRun("p", "gone").ok());
  // Both series were seen; only the one left may stall.
  uint64_t through = 0;
  std::vector<WatchEventRecord> events;
  for (int i = 0; i < 200 && events.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto read = (*watch)->ReadEvents("p", "", 0, 100, &through);
    ASSERT_TRUE(read.ok());
    events = *read;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto read = (*watch)->ReadEvents("p", "", 0, 100, &through);
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->size(), 1u);
  EXPECT_EQ((*read)[0].series.run, "keep");

  auto rules = (*watch)->DeleteProjectRules("p");
  ASSERT_TRUE(rules.ok());
  EXPECT_EQ(*rules, 1u);
  EXPECT_THAT((*watch)->ListRules("p"), IsEmpty());
  engine_->RemoveCommitObserver(watch->get());
}

// ---- the Admin RPCs ----------------------------------------------------------

TEST(ErasureServiceTest, DeleteRunAndProjectOverGrpc) {
  testing::TempDir dir;
  testing::InProcessServer server(dir.path());
  ASSERT_TRUE(server.ok());
  auto write = [&](const std::string& project, const std::string& run) {
    grpc::ClientContext ctx;
    v1::WriteRequest req;
    v1::SeriesPoints* s = req.add_series();
    s->mutable_key()->set_project(project);
    s->mutable_key()->set_run(run);
    s->mutable_key()->set_metric("loss");
    for (int step = 1; step <= 100; ++step) {
      s->add_steps(step);
      s->add_values(step * 0.5);
      s->add_times_ms(1000 + step);
    }
    v1::WriteResponse resp;
    ASSERT_TRUE(server.ingest_stub->WriteOne(&ctx, req, &resp).ok());
  };
  for (const char* run : {"a", "b"}) {
    RunRecord record;
    record.project = "p";
    record.run_id = run;
    ASSERT_TRUE(server.runs().Create(record).ok());
    write("p", run);
  }
  write("q", "a");
  auto list_runs = [&](const std::string& project) {
    grpc::ClientContext ctx;
    v1::ListRunsRequest req;
    req.set_project(project);
    v1::ListRunsResponse resp;
    EXPECT_TRUE(server.query_stub->ListRuns(&ctx, req, &resp).ok());
    std::vector<std::string> ids;
    for (const auto& run : resp.runs()) ids.push_back(run.run_id());
    return ids;
  };
  auto list_series = [&](const std::string& project) {
    grpc::ClientContext ctx;
    v1::ListSeriesRequest req;
    req.set_project(project);
    v1::ListSeriesResponse resp;
    EXPECT_TRUE(server.query_stub->ListSeries(&ctx, req, &resp).ok());
    std::vector<std::string> runs;
    for (const auto& s : resp.series()) runs.push_back(s.key().run());
    return runs;
  };
  EXPECT_THAT(list_runs("p"), ::testing::ElementsAre("a", "b"));

  {
    grpc::ClientContext ctx;
    v1::DeleteRunRequest req;
    req.set_project("p");
    req.set_run("a");
    v1::DeleteResponse resp;
    const grpc::Status status = server.admin_stub->DeleteRun(&ctx, req, &resp);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(resp.runs(), 1u);
    EXPECT_EQ(resp.points(), 100u);
    EXPECT_EQ(resp.run_records(), 1u);
    EXPECT_GT(resp.bytes_on_disk_before(), 0u);
  }
  EXPECT_THAT(list_runs("p"), ::testing::ElementsAre("b"));
  EXPECT_THAT(list_series("p"), ::testing::ElementsAre("b"));
  {
    grpc::ClientContext ctx;
    v1::ReadRangeRequest req;
    req.mutable_series()->set_project("p");
    req.mutable_series()->set_run("a");
    req.mutable_series()->set_metric("loss");
    auto reader = server.query_stub->ReadRange(&ctx, req);
    v1::ReadRangeResponse resp;
    uint64_t points = 0;
    while (reader->Read(&resp)) points += resp.steps_size();
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.error_code() == grpc::StatusCode::NOT_FOUND ||
                (status.ok() && points == 0))
        << status.error_message();
  }
  // Errors: unknown run, empty names.
  for (const auto& [project, run, code] :
       {std::tuple{"p", "a", grpc::StatusCode::NOT_FOUND},
        std::tuple{"p", "", grpc::StatusCode::INVALID_ARGUMENT},
        std::tuple{"", "a", grpc::StatusCode::INVALID_ARGUMENT}}) {
    grpc::ClientContext ctx;
    v1::DeleteRunRequest req;
    req.set_project(project);
    req.set_run(run);
    v1::DeleteResponse resp;
    EXPECT_EQ(server.admin_stub->DeleteRun(&ctx, req, &resp).error_code(), code)
        << project << "/" << run;
  }
  {
    grpc::ClientContext ctx;
    v1::DeleteProjectRequest req;
    req.set_project("p");
    v1::DeleteResponse resp;
    ASSERT_TRUE(server.admin_stub->DeleteProject(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.runs(), 1u);
    EXPECT_EQ(resp.run_records(), 1u);
  }
  EXPECT_THAT(list_runs("p"), IsEmpty());
  EXPECT_THAT(list_series("p"), IsEmpty());
  EXPECT_THAT(list_series("q"), ::testing::ElementsAre("a"));
  {
    grpc::ClientContext ctx;
    v1::DeleteProjectRequest req;
    req.set_project("p");
    v1::DeleteResponse resp;
    EXPECT_EQ(server.admin_stub->DeleteProject(&ctx, req, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  // Written again: starts empty.
  write("p", "a");
  EXPECT_THAT(list_series("p"), ::testing::ElementsAre("a"));
}

}  // namespace
}  // namespace stepdb::storage
