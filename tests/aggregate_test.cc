// Cross-series aggregates (query/aggregate.h, Query.Aggregate) against a
// brute-force computation over the raw points of Engine::Read, written from
// the semantics documented with AggregateRequest in stepdb.proto.
//
// The brute force takes each bucket's bounds from the answer (the grid is
// ReadBuckets', tested in downsample_test) and checks that every point in
// range lands in a returned bucket and every returned bucket holds a point.
// Sums and means are compared with a tolerance (stored rollup piece partial
// sums are added, not points); everything else exactly.
#include "query/aggregate.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "query/query_service.h"
#include "storage/task_pool.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/downsample.h"
#include "storage/engine.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using storage::Engine;
using storage::PointColumns;
using storage::SeriesId;
using storage::SeriesKey;
using Fn = v1::AggregateRequest::Fn;

constexpr uint64_t S = storage::kMicrosPerStep;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

uint64_t Bits(double v) { return std::bit_cast<uint64_t>(v); }

v1::LabelMatcher Matcher(const std::string& key, v1::LabelMatcher::Op op,
                         const std::string& value) {
  v1::LabelMatcher m;
  m.set_key(key);
  m.set_value(value);
  m.set_op(op);
  return m;
}

std::string LabelOf(const SeriesKey& key, const std::string& name) {
  if (name == "run") return key.run;
  for (const auto& [k, v] : key.labels) {
    if (k == name) return v;
  }
  return "";
}

// One series' points in one bucket, reduced.
struct SeriesBucket {
  uint64_t count = 0, nan = 0, pos_inf = 0, neg_inf = 0, finite = 0;
  double sum = 0, abs_sum = 0, min = 0, max = 0, last = 0;
  uint64_t last_step = 0;
};

class AggregateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::EngineOptions options;
    options.data_dir = dir_.path();
    options.chunk_points = 16;
    options.sync = false;
    auto engine = Engine::Open(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
  }

  SeriesId Resolve(SeriesKey key) {
    auto id = engine_->ResolveSeries(std::move(key));
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : 0;
  }

  void Append(SeriesId id, const PointColumns& points) {
    storage::AppendBatch batch;
    batch.Add(id, points);
    auto result = engine_->Append(std::move(batch));
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ((*result)[0].accepted, points.size());
  }

  // 3 runs x 2 nodes x 4 GPUs of gpu/util, one series per run with no gpu
  // label, and a train/loss series per run (another metric). Random steps
  // (whole and fractional), jittered times, NaN, +-Inf and NaN-only runs;
  // sealed chunks, then points left in the head.
  void Populate() {
    std::mt19937_64 rng(7);
    struct Gen {
      SeriesId id;
      uint64_t step;
      int64_t time;
    };
    std::vector<Gen> gens;
    for (const std::string run : {"r1", "r2", "r3"}) {
      for (const std::string node : {"n1", "n2"}) {
        for (int gpu = 0; gpu < 4; ++gpu) {
          gens.push_back({Resolve({"proj", run, "gpu/util",
                                   {{"gpu", std::to_string(gpu)}, {"node", node}}}),
                          rng() % 40 * S, 1'700'000'000'000});
        }
      }
      gens.push_back({Resolve({"proj", run, "gpu/util", {{"node", "n3"}}}), 0,
                      1'700'000'000'000});
      gens.push_back({Resolve({"proj", run, "train/loss", {}}), 0, 1'700'000'000'000});
    }
    std::uniform_real_distribution<double> unit(0, 1);
    std::normal_distribution<double> normal(50, 30);
    auto points = [&](Gen& g, size_t n) {
      PointColumns p;
      for (size_t i = 0; i < n; ++i) {
        const double r = unit(rng);
        g.step += r < 0.8 ? S : (r < 0.9 ? 1 + rng() % (3 * S) : 1 + rng() % 100);
        g.time += static_cast<int64_t>(rng() % 1000) - 100;
        const double c = unit(rng);
        double v = normal(rng);
        if ((g.step / S) % 89 < 4) {
          v = kNaN;  // NaN-only stretches
        } else if (c < 0.03) {
          v = kNaN;
        } else if (c < 0.05) {
          v = kInf;
        } else if (c < 0.07) {
          v = -kInf;
        }
        p.push_back(g.step, g.time, v);
      }
      return p;
    };
    for (Gen& g : gens) Append(g.id, points(g, 150 + rng() % 100));
    ASSERT_TRUE(engine_->Compact().ok());
    for (Gen& g : gens) Append(g.id, points(g, 100));
    ASSERT_TRUE(engine_->Compact().ok());
    for (Gen& g : gens) Append(g.id, points(g, 10));  // the head
  }

  absl::Status Run(const v1::AggregateRequest& req, v1::AggregateResponse* resp,
                   const query::AggregateLimits& limits = {}) {
    return query::Aggregate(*engine_, req, limits, resp);
  }

  // Checks `got` for `req` against the raw points of the series that
  // `selected` accepts (the test's own reading of the matchers).
  void Check(const v1::AggregateRequest& req,
             const std::function<bool(const SeriesKey&)>& selected) {
    SCOPED_TRACE(req.ShortDebugString());
    v1::AggregateResponse got;
    absl::Status status = Run(req, &got);
    ASSERT_TRUE(status.ok()) << status;

    // Expected groups: values of group_by -> series ids (in id order).
    std::map<std::vector<std::string>, std::vector<SeriesId>> groups;
    bool truncated;
    for (const storage::SeriesInfo& info :
         engine_->ListSeries({"proj", {}, {}, {}, {}}, 0, &truncated)) {
      if (info.key.metric != req.metric() || !selected(info.key)) continue;
      if (req.runs_size() > 0 &&
          std::find(req.runs().begin(), req.runs().end(), info.key.run) ==
              req.runs().end()) {
        continue;
      }
      std::vector<std::string> values;
      for (const std::string& k : req.group_by()) values.push_back(LabelOf(info.key, k));
      groups[values].push_back(info.id);
    }
    ASSERT_EQ(got.groups_size(), static_cast<int>(groups.size()));
    int g = 0;
    for (const auto& [values, ids] : groups) {
      const v1::AggregateGroup& group = got.groups(g++);
      std::map<std::string, std::string> labels;
      for (int k = 0; k < req.group_by_size(); ++k) {
        if (!values[k].empty()) labels[req.group_by(k)] = values[k];
      }
      const std::map<std::string, std::string> got_labels(group.labels().begin(),
                                                          group.labels().end());
      EXPECT_EQ(got_labels, labels);
      EXPECT_EQ(group.series_count(), ids.size());
      CheckGroup(req, ids, group);
    }
  }

  void CheckGroup(const v1::AggregateRequest& req,
                  const std::vector<SeriesId>& ids,
                  const v1::AggregateGroup& group) {
    const bool by_time = req.has_time();
    auto start = [&](const v1::AggregateBucket& b) {
      return by_time ? static_cast<__int128>(b.start_ms())
                     : static_cast<__int128>(storage::MicroStep(
                           b.start_step().whole(), b.start_step().micros()));
    };
    auto end = [&](const v1::AggregateBucket& b) {
      return by_time ? static_cast<__int128>(b.end_ms())
                     : static_cast<__int128>(storage::MicroStep(
                           b.end_step().whole(), b.end_step().micros()));
    };
    for (int i = 1; i < group.buckets_size(); ++i) {
      ASSERT_GT(start(group.buckets(i)), end(group.buckets(i - 1)));
    }
    // Per bucket, per series (in id order).
    std::vector<std::vector<SeriesBucket>> per(group.buckets_size(),
                                               std::vector<SeriesBucket>(ids.size()));
    storage::ReadRange range;  // the request's closed ends
    if (req.has_steps()) {
      if (req.steps().has_from())
        range.steps.from = storage::MicroStep(req.steps().from().whole(), req.steps().from().micros());
      if (req.steps().has_to())
        range.steps.to = storage::MicroStep(req.steps().to().whole(), req.steps().to().micros());
    } else if (req.has_time()) {
      if (req.time().has_from_ms()) range.times.from_ms = req.time().from_ms();
      if (req.time().has_to_ms()) range.times.to_ms = req.time().to_ms();
    }
    for (size_t s = 0; s < ids.size(); ++s) {
      auto read = engine_->Read(ids[s], range, 0, [&](const PointColumns& p) {
        for (size_t i = 0; i < p.size(); ++i) {
          const __int128 x = by_time ? __int128(p.times_ms[i]) : __int128(p.steps[i]);
          int found = -1;
          for (int b = 0; b < group.buckets_size(); ++b) {
            if (start(group.buckets(b)) <= x && x <= end(group.buckets(b))) found = b;
          }
          EXPECT_GE(found, 0) << "point at " << static_cast<int64_t>(x) << " in no bucket";
          if (found < 0) continue;
          SeriesBucket& sb = per[found][s];
          const double v = p.values[i];
          ++sb.count;
          sb.last = v;
          sb.last_step = p.steps[i];
          if (std::isnan(v)) {
            ++sb.nan;
          } else if (v == kInf) {
            ++sb.pos_inf;
          } else if (v == -kInf) {
            ++sb.neg_inf;
          } else {
            if (sb.finite == 0 || v < sb.min) sb.min = v;
            if (sb.finite == 0 || v > sb.max) sb.max = v;
            ++sb.finite;
            sb.sum += v;
            sb.abs_sum += std::abs(v);
          }
        }
        return true;
      });
      ASSERT_TRUE(read.ok()) << read.status();
    }
    for (int b = 0; b < group.buckets_size(); ++b) {
      SCOPED_TRACE("bucket " + std::to_string(b));
      const v1::AggregateBucket& got = group.buckets(b);
      uint64_t count = 0, nan = 0, pos_inf = 0, neg_inf = 0, series = 0;
      double value = 0, tolerance = 0;
      std::vector<double> ranked;
      uint64_t best_step = 0;
      for (const SeriesBucket& sb : per[b]) {
        count += sb.count;
        nan += sb.nan;
        pos_inf += sb.pos_inf;
        neg_inf += sb.neg_inf;
        if (sb.count == 0) continue;
        switch (req.fn()) {
          case v1::AggregateRequest::MEAN:
            if (sb.finite == 0) continue;
            value += sb.sum / sb.finite;
            tolerance += 1e-12 * sb.abs_sum / sb.finite;
            break;
          case v1::AggregateRequest::MIN:
            if (sb.finite == 0) continue;
            if (series == 0 || sb.min < value) value = sb.min;
            break;
          case v1::AggregateRequest::MAX:
            if (sb.finite == 0) continue;
            if (series == 0 || sb.max > value) value = sb.max;
            break;
          case v1::AggregateRequest::SUM:
            if (sb.finite == 0) continue;
            value += sb.sum;
            tolerance += 1e-12 * sb.abs_sum;
            break;
          case v1::AggregateRequest::COUNT:
            value += sb.count;
            break;
          case v1::AggregateRequest::LAST:
            if (series == 0 || sb.last_step > best_step) {
              value = sb.last;
              best_step = sb.last_step;
            }
            break;
          default:
            if (!std::isfinite(sb.last)) continue;
            ranked.push_back(sb.last);
            break;
        }
        ++series;
      }
      EXPECT_GT(count, 0u) << "empty bucket returned";
      EXPECT_EQ(got.nan_count(), nan);
      EXPECT_EQ(got.pos_inf_count(), pos_inf);
      EXPECT_EQ(got.neg_inf_count(), neg_inf);
      if (!ranked.empty()) {
        std::sort(ranked.begin(), ranked.end());
        const double q = req.fn() == v1::AggregateRequest::P50   ? 0.5
                         : req.fn() == v1::AggregateRequest::P90 ? 0.9
                                                                 : 0.99;
        const double h = (ranked.size() - 1) * q;
        const size_t lo = static_cast<size_t>(h);
        const size_t hi = std::min(lo + 1, ranked.size() - 1);
        value = ranked[lo] + (h - lo) * (ranked[hi] - ranked[lo]);
        tolerance = 1e-12 * (std::abs(ranked[lo]) + std::abs(ranked[hi]));
      }
      EXPECT_EQ(got.series(), series);
      ASSERT_EQ(got.has_value(), series > 0);
      if (series == 0) continue;
      if (req.fn() == v1::AggregateRequest::MEAN) {
        value /= series;
        tolerance /= series;
      }
      if (tolerance > 0) {
        EXPECT_NEAR(got.value(), value, tolerance);
      } else {
        EXPECT_EQ(Bits(got.value()), Bits(value)) << got.value() << " vs " << value;
      }
    }
  }

  stepdb::testing::TempDir dir_;
  std::unique_ptr<Engine> engine_;
};

v1::AggregateRequest Request(Fn fn, uint32_t buckets) {
  v1::AggregateRequest req;
  req.set_project("proj");
  req.set_metric("gpu/util");
  req.set_fn(fn);
  req.set_buckets(buckets);
  return req;
}

const std::vector<Fn> kAllFns = {
    v1::AggregateRequest::MEAN, v1::AggregateRequest::MIN,
    v1::AggregateRequest::MAX,  v1::AggregateRequest::SUM,
    v1::AggregateRequest::COUNT, v1::AggregateRequest::LAST,
    v1::AggregateRequest::P50,  v1::AggregateRequest::P90,
    v1::AggregateRequest::P99};

TEST_F(AggregateTest, EveryFunctionMatchesBruteForce) {
  Populate();
  auto all = [](const SeriesKey&) { return true; };
  for (Fn fn : kAllFns) {
    for (uint32_t buckets : {1u, 7u, 64u, 1000u}) {
      // Open range by step, grouped by nothing, by run, by node and gpu.
      v1::AggregateRequest req = Request(fn, buckets);
      Check(req, all);
      req.add_group_by("run");
      Check(req, all);
      req.clear_group_by();
      req.add_group_by("node");
      req.add_group_by("gpu");
      Check(req, all);
      // A closed whole-step range, a fractional one, and time ranges.
      req.mutable_steps()->mutable_from()->set_whole(50);
      req.mutable_steps()->mutable_to()->set_whole(300);
      Check(req, all);
      req.mutable_steps()->mutable_from()->set_micros(250'000);
      Check(req, all);
      req.mutable_time()->set_from_ms(1'700'000'010'000);
      Check(req, all);
      req.mutable_time()->set_to_ms(1'700'000'100'000);
      Check(req, all);
    }
  }
}

// Series are read on several threads but folded in order: the answer is
// the same, bit for bit, for any thread count (sums included).
TEST_F(AggregateTest, ReadThreadsDoNotChangeTheAnswer) {
  Populate();
  for (Fn fn : kAllFns) {
    for (uint32_t buckets : {7u, 1000u}) {
      v1::AggregateRequest req = Request(fn, buckets);
      req.add_group_by("gpu");
      std::string want;
      for (uint32_t threads : {1u, 2u, 3u, 16u}) {
        query::AggregateLimits limits;
        limits.read_threads = threads;
        v1::AggregateResponse resp;
        ASSERT_TRUE(query::Aggregate(*engine_, req, limits, &resp).ok());
        ASSERT_GT(resp.groups_size(), 0);
        std::string got;
        ASSERT_TRUE(resp.SerializeToString(&got));
        if (threads == 1) {
          want = got;
        } else {
          EXPECT_EQ(got, want) << "threads " << threads;
        }
      }
    }
  }
}

// The answer with read_threads = 1 (no helper: each bucket folded as it is
// read), serialized.
std::string SerialAnswer(const Engine& engine, const v1::AggregateRequest& req) {
  query::AggregateLimits limits;
  limits.read_threads = 1;
  v1::AggregateResponse resp;
  absl::Status s = query::Aggregate(engine, req, limits, &resp);
  EXPECT_TRUE(s.ok()) << s;
  std::string out;
  EXPECT_TRUE(resp.SerializeToString(&out));
  return out;
}

// One pool shared by concurrent aggregates (QueryService holds one): four
// requests at once on a pool of two helpers, with group-by (groups of one
// to nine series, read across group boundaries) and every function, each
// give the serial answer bit for bit.
TEST_F(AggregateTest, SharedReadPoolGivesTheSerialAnswer) {
  Populate();
  std::vector<v1::AggregateRequest> reqs;
  std::vector<std::string> want;
  for (Fn fn : kAllFns) {
    for (const char* group_by : {"", "run", "node", "gpu"}) {
      v1::AggregateRequest req = Request(fn, fn == v1::AggregateRequest::MEAN ? 1000 : 33);
      if (*group_by != '\0') req.add_group_by(group_by);
      reqs.push_back(req);
      want.push_back(SerialAnswer(*engine_, req));
    }
  }
  storage::TaskPool pool(2);
  std::vector<std::thread> clients;
  std::atomic<int> mismatches{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int round = 0; round < 3; ++round) {
        for (size_t k = 0; k < reqs.size(); ++k) {
          const size_t r = (k + c) % reqs.size();  // clients out of step
          query::AggregateLimits limits;
          limits.read_threads = 3;
          limits.read_pool = &pool;
          v1::AggregateResponse resp;
          std::string got;
          if (!query::Aggregate(*engine_, reqs[r], limits, &resp).ok() ||
              !resp.SerializeToString(&got) || got != want[r]) {
            ++mismatches;
          }
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// A request never waits for a helper to start: with the pool's only thread
// held by another task, the calling thread reads every series itself.
TEST_F(AggregateTest, BusyReadPoolDoesNotBlockARequest) {
  Populate();
  const v1::AggregateRequest req = Request(v1::AggregateRequest::SUM, 100);
  const std::string want = SerialAnswer(*engine_, req);
  storage::TaskPool pool(1);
  absl::Notification release;
  pool.Submit([&] { release.WaitForNotification(); });
  query::AggregateLimits limits;
  limits.read_threads = 2;
  limits.read_pool = &pool;
  v1::AggregateResponse resp;
  ASSERT_TRUE(query::Aggregate(*engine_, req, limits, &resp).ok());
  std::string got;
  ASSERT_TRUE(resp.SerializeToString(&got));
  EXPECT_EQ(got, want);
  release.Notify();
}

// A limit hit part way through the reads, and a cancellation, end the
// aggregate with the same status on any thread count, with the helpers
// stopped (the pool is destroyed right after, which joins them).
TEST_F(AggregateTest, LimitsAndCancellationStopEveryThreadCount) {
  Populate();
  for (uint32_t threads : {1u, 2u, 6u}) {
    SCOPED_TRACE(absl::StrCat("threads ", threads));
    storage::TaskPool pool(threads - 1);
    query::AggregateLimits limits;
    limits.read_threads = threads;
    limits.read_pool = &pool;
    v1::AggregateResponse resp;
    // 10 buckets fit 50 cells; the ranked values of 27 series do not.
    limits.max_cells = 50;
    absl::Status s = query::Aggregate(
        *engine_, Request(v1::AggregateRequest::P90, 10), limits, &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
    EXPECT_NE(s.message().find("max_aggregate_cells"), std::string::npos) << s;
    limits.max_cells = query::AggregateLimits{}.max_cells;

    // Cancelled after 5 series are folded: the 6th poll stops it.
    int polls = 0;
    limits.cancelled = [&] { return ++polls > 5; };
    s = query::Aggregate(*engine_, Request(v1::AggregateRequest::MEAN, 100),
                         limits, &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
    EXPECT_EQ(polls, 6);
    // Not cancelled: the same limits answer.
    limits.cancelled = [] { return false; };
    EXPECT_TRUE(query::Aggregate(*engine_, Request(v1::AggregateRequest::MEAN, 100),
                                 limits, &resp)
                    .ok());
  }
}

TEST(TaskPoolTest, RunsTasksOnItsThreadsAndDrainsOnDestruction) {
  std::atomic<int> ran{0};
  std::mutex mu;
  std::set<std::thread::id> ids;
  {
    storage::TaskPool pool(2);
    EXPECT_EQ(pool.threads(), 2u);
    for (int i = 0; i < 100; ++i) {
      pool.Submit([&] {
        {
          std::lock_guard<std::mutex> lock(mu);
          ids.insert(std::this_thread::get_id());
        }
        ++ran;
      });
    }
  }  // joins after running what is queued
  EXPECT_EQ(ran.load(), 100);
  EXPECT_EQ(ids.count(std::this_thread::get_id()), 0u);
  EXPECT_LE(ids.size(), 2u);
  storage::TaskPool none(0);
  none.Submit([&] { ++ran; });  // dropped: no thread to run it
  EXPECT_EQ(ran.load(), 100);
}

// The aggregate folds each series' buckets as StreamBuckets hands them over;
// the answer equals, bit for bit (sums and means included), the fold of
// each series' ReadBuckets answer in series order.
TEST_F(AggregateTest, EqualsFoldOfReadBucketsBitForBit) {
  Populate();
  bool truncated;
  std::vector<SeriesId> ids;  // gpu/util, in id order (the aggregate's)
  for (const storage::SeriesInfo& info :
       engine_->ListSeries({"proj", {}, {}, {}, {}}, 0, &truncated)) {
    if (info.key.metric == "gpu/util") ids.push_back(info.id);
  }
  std::sort(ids.begin(), ids.end());
  ASSERT_EQ(ids.size(), 27u);
  for (Fn fn : {v1::AggregateRequest::MEAN, v1::AggregateRequest::SUM,
                v1::AggregateRequest::MIN, v1::AggregateRequest::MAX,
                v1::AggregateRequest::COUNT, v1::AggregateRequest::LAST}) {
    for (uint32_t buckets : {7u, 64u, 1000u}) {
      for (bool by_time : {false, true}) {
        SCOPED_TRACE(absl::StrCat("fn ", fn, " buckets ", buckets,
                                  by_time ? " by time" : " by step"));
        v1::AggregateRequest req = Request(fn, buckets);
        storage::ReadRange range;
        storage::Axis axis = storage::Axis::kStep;
        if (by_time) {
          axis = storage::Axis::kTime;
          range.times = {1'700'000'010'000, 1'700'000'100'000};
          req.mutable_time()->set_from_ms(range.times.from_ms);
          req.mutable_time()->set_to_ms(range.times.to_ms);
        } else {
          range.steps = {16 * S, 300 * S};
          req.mutable_steps()->mutable_from()->set_whole(16);
          req.mutable_steps()->mutable_to()->set_whole(300);
        }
        for (uint32_t threads : {1u, 2u}) {
          query::AggregateLimits limits;
          limits.read_threads = threads;
          v1::AggregateResponse resp;
          ASSERT_TRUE(query::Aggregate(*engine_, req, limits, &resp).ok());
          ASSERT_EQ(resp.groups_size(), 1);
          // The reference: ReadBuckets per series, folded in id order.
          struct Ref {
            uint64_t series = 0;
            double value = 0;
            uint64_t last_step = 0;
          };
          std::map<uint64_t, Ref> want;  // by bucket start
          for (SeriesId id : ids) {
            auto got = storage::ReadBuckets(*engine_, id, axis, range, buckets);
            ASSERT_TRUE(got.ok()) << got.status();
            for (const storage::Bucket& b : *got) {
              Ref& r = want[by_time ? static_cast<uint64_t>(b.start_ms)
                                    : b.start_step];
              const bool finite = b.has_finite();
              switch (fn) {
                case v1::AggregateRequest::MEAN:
                  if (!finite) continue;
                  r.value += b.sum / static_cast<double>(b.finite_count());
                  break;
                case v1::AggregateRequest::SUM:
                  if (!finite) continue;
                  r.value += b.sum;
                  break;
                case v1::AggregateRequest::MIN:
                  if (!finite) continue;
                  if (r.series == 0 || b.min < r.value) r.value = b.min;
                  break;
                case v1::AggregateRequest::MAX:
                  if (!finite) continue;
                  if (r.series == 0 || b.max > r.value) r.value = b.max;
                  break;
                case v1::AggregateRequest::COUNT:
                  r.value += static_cast<double>(b.count);
                  break;
                default:  // LAST
                  if (r.series == 0 || b.last_step > r.last_step) {
                    r.value = b.last;
                    r.last_step = b.last_step;
                  }
                  break;
              }
              ++r.series;
            }
          }
          const v1::AggregateGroup& group = resp.groups(0);
          ASSERT_EQ(group.buckets_size(), static_cast<int>(want.size()));
          int i = 0;
          for (const auto& [start, r] : want) {
            const v1::AggregateBucket& got = group.buckets(i++);
            EXPECT_EQ(by_time ? static_cast<uint64_t>(got.start_ms())
                              : storage::MicroStep(got.start_step().whole(),
                                                   got.start_step().micros()),
                      start);
            EXPECT_EQ(got.series(), r.series);
            if (r.series == 0) continue;
            const double value = fn == v1::AggregateRequest::MEAN
                                     ? r.value / static_cast<double>(r.series)
                                     : r.value;
            EXPECT_EQ(Bits(got.value()), Bits(value))
                << got.value() << " vs " << value;
          }
        }
      }
    }
  }
}

TEST_F(AggregateTest, MatchersAndRuns) {
  Populate();
  using Op = v1::LabelMatcher;
  struct Case {
    std::vector<v1::LabelMatcher> matchers;
    std::function<bool(const SeriesKey&)> selected;
  };
  const std::vector<Case> cases = {
      {{Matcher("node", Op::EQUAL, "n1")},
       [](const SeriesKey& k) { return LabelOf(k, "node") == "n1"; }},
      {{Matcher("gpu", Op::NOT_EQUAL, "2")},  // includes the series without gpu
       [](const SeriesKey& k) { return LabelOf(k, "gpu") != "2"; }},
      {{Matcher("gpu", Op::REGEX, "[01]")},
       [](const SeriesKey& k) {
         const std::string g = LabelOf(k, "gpu");
         return g == "0" || g == "1";
       }},
      {{Matcher("gpu", Op::REGEX, "1")},  // full match: not "10", not "x1"
       [](const SeriesKey& k) { return LabelOf(k, "gpu") == "1"; }},
      {{Matcher("node", Op::NOT_REGEX, "n[12]"), Matcher("gpu", Op::EQUAL, "")},
       [](const SeriesKey& k) { return LabelOf(k, "node") == "n3"; }},
      {{Matcher("node", Op::REGEX, "n.*"), Matcher("gpu", Op::NOT_REGEX, "3|2")},
       [](const SeriesKey& k) {
         const std::string g = LabelOf(k, "gpu");
         return g != "3" && g != "2";
       }},
  };
  for (const Case& c : cases) {
    for (Fn fn : {v1::AggregateRequest::MEAN, v1::AggregateRequest::LAST,
                  v1::AggregateRequest::P90}) {
      v1::AggregateRequest req = Request(fn, 50);
      for (const auto& m : c.matchers) *req.add_matchers() = m;
      req.add_group_by("node");
      Check(req, c.selected);
      req.add_runs("r2");
      req.add_runs("r3");
      req.add_runs("r2");  // repeated: once
      req.add_runs("no-such-run");
      Check(req, c.selected);
    }
  }
}

TEST_F(AggregateTest, LiveHeadOnly) {
  // A live run: nothing sealed yet, every point in the heads.
  for (int gpu = 0; gpu < 3; ++gpu) {
    const SeriesId id =
        Resolve({"proj", "live", "gpu/util", {{"gpu", std::to_string(gpu)}}});
    PointColumns p;
    for (uint64_t s = 0; s < 10; ++s) {
      p.push_back(s * S, 1000 * static_cast<int64_t>(s), gpu * 10.0 + s);
    }
    Append(id, p);
  }
  for (Fn fn : kAllFns) Check(Request(fn, 5), [](const SeriesKey&) { return true; });
  v1::AggregateResponse resp;
  ASSERT_TRUE(Run(Request(v1::AggregateRequest::MEAN, 5), &resp).ok());
  ASSERT_EQ(resp.groups_size(), 1);
  ASSERT_EQ(resp.groups(0).buckets_size(), 5);
  // Steps 0-1: series means 0.5, 10.5, 20.5.
  EXPECT_EQ(resp.groups(0).buckets(0).value(), 10.5);
  EXPECT_EQ(resp.groups(0).buckets(0).series(), 3u);
}

// Buckets on the chunk windows: every sealed chunk is merged from its
// rollup pieces, none decoded; the head is added point by point.
TEST_F(AggregateTest, WholeChunksAreNotDecoded) {
  for (int gpu = 0; gpu < 4; ++gpu) {
    const SeriesId id =
        Resolve({"proj", "r", "gpu/util", {{"gpu", std::to_string(gpu)}}});
    PointColumns p;
    for (uint64_t s = 0; s < 256; ++s) {
      p.push_back(s * S, static_cast<int64_t>(s), gpu + 0.5 * (s % 7));
    }
    Append(id, p);
  }
  ASSERT_TRUE(engine_->Compact().ok());
  for (int gpu = 0; gpu < 4; ++gpu) {
    PointColumns p;
    p.push_back(256 * S, 256, 1.0);
    Append(*engine_->FindSeries({"proj", "r", "gpu/util", {{"gpu", std::to_string(gpu)}}}), p);
  }
  for (Fn fn : kAllFns) {
    v1::AggregateRequest req = Request(fn, 20);  // 257 steps: 16-step buckets
    req.mutable_steps()->mutable_from()->set_whole(0);
    v1::AggregateResponse resp;
    storage::BucketReadStats stats;
    ASSERT_TRUE(query::Aggregate(*engine_, req, {}, &resp, &stats).ok());
    EXPECT_EQ(stats.chunks_decoded, 0u);
    EXPECT_EQ(stats.chunks_merged, 4u * 256 / 16);
    EXPECT_EQ(stats.head_points, 4u);
    Check(req, [](const SeriesKey&) { return true; });
  }
}

// Buckets finer than a chunk but as wide as its rollup pieces (1/8 of the
// 16-step window: 2 steps): still no chunk decoded, the pieces merged.
TEST_F(AggregateTest, BucketsFinerThanChunksUseRollupPieces) {
  for (int gpu = 0; gpu < 3; ++gpu) {
    const SeriesId id =
        Resolve({"proj", "r", "gpu/util", {{"gpu", std::to_string(gpu)}}});
    PointColumns p;
    for (uint64_t s = 0; s < 256; ++s) {
      const double v = s % 29 == 3 ? std::numeric_limits<double>::quiet_NaN()
                                   : gpu + 0.25 * (s % 11);
      p.push_back(s * S, static_cast<int64_t>(s), v);
    }
    Append(id, p);
  }
  ASSERT_TRUE(engine_->Compact().ok());
  for (Fn fn : kAllFns) {
    v1::AggregateRequest req = Request(fn, 128);  // 2-step buckets
    req.mutable_steps()->mutable_from()->set_whole(0);
    req.mutable_steps()->mutable_to()->set_whole(255);
    v1::AggregateResponse resp;
    storage::BucketReadStats stats;
    ASSERT_TRUE(query::Aggregate(*engine_, req, {}, &resp, &stats).ok());
    EXPECT_EQ(stats.chunks_decoded, 0u);
    EXPECT_EQ(stats.pieces_merged, 3u * 128);
    Check(req, [](const SeriesKey&) { return true; });
    // Off the piece grid (from step 1): the edge chunk is decoded.
    req.mutable_steps()->mutable_from()->set_whole(1);
    ASSERT_TRUE(query::Aggregate(*engine_, req, {}, &resp, &stats).ok());
    EXPECT_EQ(stats.chunks_decoded, 3u);
    Check(req, [](const SeriesKey&) { return true; });
  }
}

TEST_F(AggregateTest, NonFiniteBuckets) {
  const SeriesId a = Resolve({"proj", "r", "m", {{"k", "a"}}});
  const SeriesId b = Resolve({"proj", "r", "m", {{"k", "b"}}});
  PointColumns pa, pb;
  pa.push_back(1 * S, 1, kNaN);
  pa.push_back(2 * S, 2, kInf);
  pb.push_back(1 * S, 1, -kInf);
  pb.push_back(2 * S, 2, kNaN);
  pb.push_back(5 * S, 5, 3.0);
  Append(a, pa);
  Append(b, pb);
  v1::AggregateRequest req = Request(v1::AggregateRequest::MEAN, 1);
  req.set_metric("m");
  req.mutable_steps()->mutable_from()->set_whole(0);
  req.mutable_steps()->mutable_to()->set_whole(3);
  v1::AggregateResponse resp;
  ASSERT_TRUE(Run(req, &resp).ok());
  ASSERT_EQ(resp.groups(0).buckets_size(), 1);
  const v1::AggregateBucket& bucket = resp.groups(0).buckets(0);
  EXPECT_FALSE(bucket.has_value());  // only NaN/Inf: no mean
  EXPECT_EQ(bucket.series(), 0u);
  EXPECT_EQ(bucket.nan_count(), 2u);
  EXPECT_EQ(bucket.pos_inf_count(), 1u);
  EXPECT_EQ(bucket.neg_inf_count(), 1u);
  // LAST keeps the value bit for bit: both series end at step 2, the tie
  // goes to the series registered first (a: +Inf).
  req.set_fn(v1::AggregateRequest::LAST);
  ASSERT_TRUE(Run(req, &resp).ok());
  EXPECT_EQ(resp.groups(0).buckets(0).value(), kInf);
  req.set_fn(v1::AggregateRequest::COUNT);
  ASSERT_TRUE(Run(req, &resp).ok());
  EXPECT_EQ(resp.groups(0).buckets(0).value(), 4.0);
  req.set_fn(v1::AggregateRequest::P50);  // no finite last value
  ASSERT_TRUE(Run(req, &resp).ok());
  EXPECT_FALSE(resp.groups(0).buckets(0).has_value());
}

TEST_F(AggregateTest, EmptyResults) {
  Populate();
  v1::AggregateResponse resp;
  v1::AggregateRequest req = Request(v1::AggregateRequest::SUM, 10);
  req.set_metric("no/such/metric");
  ASSERT_TRUE(Run(req, &resp).ok());
  EXPECT_EQ(resp.groups_size(), 0);
  req = Request(v1::AggregateRequest::SUM, 10);
  req.set_project("no-such-project");
  ASSERT_TRUE(Run(req, &resp).ok());
  EXPECT_EQ(resp.groups_size(), 0);
  // Series match, but no point is in range: the groups, without buckets.
  req = Request(v1::AggregateRequest::SUM, 10);
  req.add_group_by("run");
  req.mutable_steps()->mutable_from()->set_whole(1'000'000);
  ASSERT_TRUE(Run(req, &resp).ok());
  ASSERT_EQ(resp.groups_size(), 3);
  EXPECT_EQ(resp.groups(0).labels().at("run"), "r1");
  EXPECT_EQ(resp.groups(0).series_count(), 9u);
  EXPECT_EQ(resp.groups(0).buckets_size(), 0);
}

TEST_F(AggregateTest, InvalidArguments) {
  Populate();
  v1::AggregateResponse resp;
  auto code = [&](const v1::AggregateRequest& req) { return Run(req, &resp).code(); };
  v1::AggregateRequest req = Request(v1::AggregateRequest::MEAN, 10);
  *req.add_matchers() = Matcher("gpu", v1::LabelMatcher::REGEX, "(unclosed");
  absl::Status s = Run(req, &resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("gpu=~(unclosed"), std::string::npos) << s;
  req = Request(v1::AggregateRequest::MEAN, 0);
  EXPECT_EQ(code(req), absl::StatusCode::kInvalidArgument);
  req.set_buckets(100'001);
  EXPECT_EQ(code(req), absl::StatusCode::kInvalidArgument);
  req = Request(static_cast<Fn>(42), 10);
  EXPECT_EQ(code(req), absl::StatusCode::kInvalidArgument);
  req = Request(v1::AggregateRequest::MEAN, 10);
  req.clear_metric();
  EXPECT_EQ(code(req), absl::StatusCode::kInvalidArgument);
  req = Request(v1::AggregateRequest::MEAN, 10);
  req.clear_project();
  EXPECT_EQ(code(req), absl::StatusCode::kInvalidArgument);
  req = Request(v1::AggregateRequest::MEAN, 10);
  req.mutable_time()->set_from_ms(10);
  req.mutable_time()->set_to_ms(9);
  EXPECT_EQ(code(req), absl::StatusCode::kInvalidArgument);
  req = Request(v1::AggregateRequest::MEAN, 10);
  req.add_group_by("");
  EXPECT_EQ(code(req), absl::StatusCode::kInvalidArgument);
}

TEST_F(AggregateTest, ResourceLimits) {
  Populate();
  v1::AggregateResponse resp;
  v1::AggregateRequest req = Request(v1::AggregateRequest::MEAN, 100);
  // 27 series of gpu/util match.
  query::AggregateLimits limits;
  limits.max_series = 26;
  absl::Status s = Run(req, &resp, limits);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("max_aggregate_series"), std::string::npos) << s;
  limits.max_series = 27;
  EXPECT_TRUE(Run(req, &resp, limits).ok());
  // Narrowing to one run fits again.
  limits.max_series = 9;
  req.add_runs("r1");
  EXPECT_TRUE(Run(req, &resp, limits).ok());
  req.clear_runs();

  limits = {};
  limits.max_points = 1000;
  s = Run(req, &resp, limits);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("max_aggregate_points"), std::string::npos) << s;
  // A narrow range touches few chunks.
  req.mutable_steps()->mutable_from()->set_whole(100);
  req.mutable_steps()->mutable_to()->set_whole(101);
  EXPECT_TRUE(Run(req, &resp, limits).ok()) << Run(req, &resp, limits);

  // By time: every point is the first estimate, chunk headers the second.
  req.clear_steps();
  req.mutable_time()->set_from_ms(0);
  s = Run(req, &resp, limits);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  req.mutable_time()->set_from_ms(1'700'000'000'000);
  req.mutable_time()->set_to_ms(1'700'000'000'500);
  EXPECT_TRUE(Run(req, &resp, limits).ok()) << Run(req, &resp, limits);

  limits = {};
  limits.max_cells = 50;
  req = Request(v1::AggregateRequest::P50, 100);
  s = Run(req, &resp, limits);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  req.add_group_by("run");
  req.set_buckets(20);  // 3 groups x 20 buckets > 50
  s = Run(req, &resp, limits);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
}

// Through gRPC: the service maps the statuses, ListSeries takes the new
// matcher ops, and the limits come from QueryOptions.
TEST_F(AggregateTest, Service) {
  Populate();
  query::QueryOptions options;
  options.max_aggregate_series = 10;
  options.aggregate_read_threads = 2;  // the service's pool (one helper)
  query::QueryService service(engine_.get(), options);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::Query::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

  v1::AggregateRequest req = Request(v1::AggregateRequest::MAX, 10);
  req.add_runs("r1");
  req.add_group_by("gpu");
  v1::AggregateResponse resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Aggregate(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.groups_size(), 5);  // "", 0, 1, 2, 3
    EXPECT_TRUE(resp.groups(0).labels().empty());
    EXPECT_EQ(resp.groups(1).labels().at("gpu"), "0");
    // Read on two threads (9 series), the same answer as on one.
    std::string got;
    ASSERT_TRUE(resp.SerializeToString(&got));
    EXPECT_EQ(got, SerialAnswer(*engine_, req));
  }
  {
    req.clear_runs();
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->Aggregate(&ctx, req, &resp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  {
    *req.add_matchers() = Matcher("gpu", v1::LabelMatcher::REGEX, "[");
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->Aggregate(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  auto list = [&](std::vector<v1::LabelMatcher> matchers, grpc::Status* status) {
    v1::ListSeriesRequest lreq;
    lreq.set_project("proj");
    lreq.set_metric("gpu/util");
    for (auto& m : matchers) *lreq.add_labels() = m;
    v1::ListSeriesResponse lresp;
    grpc::ClientContext ctx;
    *status = stub->ListSeries(&ctx, lreq, &lresp);
    return lresp.series_size();
  };
  grpc::Status status;
  EXPECT_EQ(list({Matcher("node", v1::LabelMatcher::EQUAL, "n1")}, &status), 12);
  EXPECT_EQ(list({Matcher("node", v1::LabelMatcher::NOT_EQUAL, "n1")}, &status), 15);
  EXPECT_EQ(list({Matcher("gpu", v1::LabelMatcher::REGEX, "[12]")}, &status), 12);
  EXPECT_EQ(list({Matcher("gpu", v1::LabelMatcher::NOT_REGEX, ".+")}, &status), 3);
  EXPECT_EQ(list({Matcher("gpu", v1::LabelMatcher::REGEX, "(")}, &status), 0);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
}

}  // namespace
}  // namespace stepdb
