#include "query/aggregate.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "proto/wire_convert.h"
#include "storage/downsample.h"

namespace stepdb::query {
namespace {

using Fn = v1::AggregateRequest::Fn;
using wire::MatchersFromWire;
using wire::StepFromWire;
using wire::StepToWire;
using storage::Axis;
using storage::ReadRange;

// The selected range: its axis and which of its ends the request left open.
struct RangeSpec {
  Axis axis = Axis::kStep;
  ReadRange range;
  bool open_from = true;
  bool open_to = true;
};

absl::StatusOr<RangeSpec> RangeFromWire(const v1::AggregateRequest& request) {
  RangeSpec spec;
  spec.axis = request.has_time() ? Axis::kTime : Axis::kStep;
  if (request.has_steps()) {
    if (request.steps().has_from()) {
      auto from = StepFromWire(request.steps().from(), "steps.from");
      if (!from.ok()) return from.status();
      spec.range.steps.from = *from;
      spec.open_from = false;
    }
    if (request.steps().has_to()) {
      auto to = StepFromWire(request.steps().to(), "steps.to");
      if (!to.ok()) return to.status();
      spec.range.steps.to = *to;
      spec.open_to = false;
    }
  } else if (request.has_time()) {
    if (request.time().has_from_ms()) {
      spec.range.times.from_ms = request.time().from_ms();
      spec.open_from = false;
    }
    if (request.time().has_to_ms()) {
      spec.range.times.to_ms = request.time().to_ms();
      spec.open_to = false;
    }
  }
  if (spec.range.steps.from > spec.range.steps.to ||
      spec.range.times.from_ms > spec.range.times.to_ms) {
    return absl::InvalidArgumentError("range: from is after to");
  }
  return spec;
}

// A group's bucket being reduced across series. `value` is the running
// min/max/sum (sum of means for MEAN, sum of counts for COUNT, the chosen
// last value for LAST); `series` counts the series that gave a value.
struct Cell {
  bool any = false;  // some series has a point in the bucket
  uint64_t series = 0;
  double value = 0.0;
  uint64_t last_step = 0;
  uint64_t nan_count = 0;
  uint64_t pos_inf_count = 0;
  uint64_t neg_inf_count = 0;
  bool coarse = false;  // some series' bucket was (storage::Bucket::coarse)
};

bool IsPercentile(Fn fn) {
  return fn == v1::AggregateRequest::P50 || fn == v1::AggregateRequest::P90 ||
         fn == v1::AggregateRequest::P99;
}

double Quantile(Fn fn) {
  switch (fn) {
    case v1::AggregateRequest::P50:
      return 0.5;
    case v1::AggregateRequest::P90:
      return 0.9;
    default:
      return 0.99;
  }
}

// Linear interpolation between closest ranks (R type 7) of sorted values.
double Percentile(std::span<const double> sorted, double q) {
  const double h = static_cast<double>(sorted.size() - 1) * q;
  const size_t lo = static_cast<size_t>(std::floor(h));
  if (lo + 1 >= sorted.size()) return sorted[lo];
  return sorted[lo] +
         (h - static_cast<double>(lo)) * (sorted[lo + 1] - sorted[lo]);
}

// What one series' bucket adds to its group's cell under fn: the part of
// storage::Bucket that the fold reads, 24 bytes instead of ~100, so that a
// helper thread hands a series' buckets to the folding thread cheaply. The
// NaN/Inf counts (almost always 0) travel apart (NonFiniteCounts).
struct Contribution {
  uint32_t index = 0;       // the bucket on the grid
  bool finite = false;      // Bucket::has_finite()
  bool coarse = false;      // Bucket::coarse
  bool non_finite = false;  // some NaN/Inf count is not 0
  double value = 0.0;       // per fn, see Contribute
  uint64_t last_step = 0;   // LAST: Bucket::last_step
};

struct NonFiniteCounts {
  uint64_t nan = 0, pos_inf = 0, neg_inf = 0;
};

Contribution Contribute(Fn fn, size_t index, const storage::Bucket& b) {
  Contribution x;
  x.index = static_cast<uint32_t>(index);
  x.finite = b.has_finite();
  x.coarse = b.coarse;
  x.non_finite = b.nan_count + b.pos_inf_count + b.neg_inf_count > 0;
  switch (fn) {
    case v1::AggregateRequest::MEAN:
      if (x.finite) x.value = b.sum / static_cast<double>(b.finite_count());
      break;
    case v1::AggregateRequest::MIN:
      x.value = b.min;
      break;
    case v1::AggregateRequest::MAX:
      x.value = b.max;
      break;
    case v1::AggregateRequest::SUM:
      x.value = b.sum;
      break;
    case v1::AggregateRequest::COUNT:
      x.value = static_cast<double>(b.count);
      break;
    case v1::AggregateRequest::LAST:
      x.value = b.last;
      x.last_step = b.last_step;
      break;
    default:  // percentiles rank each series' last value
      x.value = b.last;
      break;
  }
  return x;
}

// Folds one series' bucket into the group's cell (first stage of the
// semantics in stepdb.proto). Percentile values go to the caller.
void Fold(Fn fn, const Contribution& x, const NonFiniteCounts& counts,
          Cell& c) {
  c.any = true;
  c.coarse |= x.coarse;
  c.nan_count += counts.nan;
  c.pos_inf_count += counts.pos_inf;
  c.neg_inf_count += counts.neg_inf;
  switch (fn) {
    case v1::AggregateRequest::MEAN:
    case v1::AggregateRequest::SUM:
      if (!x.finite) return;
      c.value += x.value;
      break;
    case v1::AggregateRequest::MIN:
      if (!x.finite) return;
      if (c.series == 0 || x.value < c.value) c.value = x.value;
      break;
    case v1::AggregateRequest::MAX:
      if (!x.finite) return;
      if (c.series == 0 || x.value > c.value) c.value = x.value;
      break;
    case v1::AggregateRequest::COUNT:
      c.value += x.value;
      break;
    case v1::AggregateRequest::LAST:
      // Series come in registration order: a tie keeps the first.
      if (c.series == 0 || x.last_step > c.last_step) {
        c.value = x.value;
        c.last_step = x.last_step;
      }
      break;
    default:  // percentiles: the caller collects the value
      return;
  }
  ++c.series;
}

struct SeriesRef {
  storage::SeriesId id;
  std::vector<std::string> group;          // values of the group_by keys
  uint64_t points = 0;                     // stored points
  uint64_t first_step = 0, last_step = 0;  // valid if points > 0
};

// The points of a series in `range`, estimated from its statistics alone
// (no read): by step, its points scaled by the share of its step span that
// the range covers (exact for regular steps); by time, all of them.
uint64_t EstimatePoints(const SeriesRef& s, const RangeSpec& spec) {
  if (s.points == 0) return 0;
  if (spec.axis == Axis::kTime) return s.points;
  const uint64_t lo = std::max(s.first_step, spec.range.steps.from);
  const uint64_t hi = std::min(s.last_step, spec.range.steps.to);
  if (lo > hi) return 0;
  if (s.last_step == s.first_step) return s.points;
  const long double share =
      static_cast<long double>(hi - lo) /
      static_cast<long double>(s.last_step - s.first_step);
  return static_cast<uint64_t>(std::ceil(share * s.points));
}

// Counts the points a Scan of a range may visit, from chunk headers (a
// chunk overlapping the range counts whole) and the head, decoding nothing.
class CountVisitor : public storage::ChunkVisitor {
 public:
  absl::StatusOr<bool> OnChunk(const storage::ChunkSummary& s,
                               storage::ChunkLoader) override {
    points_ += s.count;
    return true;
  }
  void OnHead(const storage::PointColumns& p) override { points_ += p.size(); }
  uint64_t points() const { return points_; }

 private:
  uint64_t points_ = 0;
};

absl::Status ResourceExhausted(std::string_view what, uint64_t limit,
                               std::string_view flag, std::string_view hint) {
  return absl::ResourceExhaustedError(
      absl::StrCat(std::string(what), ", more than the limit of ", limit, " (",
                   std::string(flag), "); ", std::string(hint)));
}

// Folds the series of one group, bucket by bucket, into its cells (and,
// for percentiles, the ranked values).
class GroupFold {
 public:
  GroupFold(Fn fn, const AggregateLimits& limits, std::vector<Cell>& cells,
            std::vector<std::pair<uint32_t, double>>& ranked)
      : fn_(fn),
        percentile_(IsPercentile(fn)),
        limits_(limits),
        cells_(cells),
        ranked_(ranked) {}

  // One bucket of the current series, at `index` on the grid.
  void Add(size_t index, const storage::Bucket& b) {
    Add(Contribute(fn_, index, b),
        {b.nan_count, b.pos_inf_count, b.neg_inf_count});
  }
  // The same, from a bucket's Contribution and counts.
  void Add(const Contribution& x, const NonFiniteCounts& counts) {
    Fold(fn_, x, counts, cells_[x.index]);
    if (percentile_ && std::isfinite(x.value)) {
      ranked_.emplace_back(x.index, x.value);
    }
  }
  // After the buckets of each series.
  absl::Status EndSeries() const {
    if (ranked_.size() > limits_.max_cells) {
      return ResourceExhausted(
          "aggregate: a percentile holds more values (series x buckets)",
          limits_.max_cells, "max_aggregate_cells",
          "use fewer buckets or group more finely");
    }
    return absl::OkStatus();
  }

 private:
  const Fn fn_;
  const bool percentile_;
  const AggregateLimits& limits_;
  std::vector<Cell>& cells_;
  std::vector<std::pair<uint32_t, double>>& ranked_;
};

void AddStats(const storage::BucketReadStats& read,
              storage::BucketReadStats* stats) {
  if (stats != nullptr) *stats += read;
}

// Reads the buckets of the series (StreamBuckets on the request's grid),
// one after the other, and folds them in series order: FoldNext(i) for
// i = 0, 1, ... (the groups are consecutive runs of series).
//
// Without helpers each bucket is folded as it is read, with nothing held
// per series. With helpers (threads of a storage::TaskPool), series are claimed one
// at a time by whichever thread is free and read into the slots of a
// window ahead of the fold; the calling thread folds them in series order,
// so the answer does not depend on the thread count (floating-point sums
// are added in the same order).
//
// The calling thread never waits for a helper: on a loaded machine a
// thread that sleeps (or wakes another) loses its core for a scheduler
// time slice, which cost more than the helper saved (a first version that
// waited on a mutex and condition was twice as slow with two threads as
// with one at load 7). So the threads share only atomics, and the calling
// thread reads series i itself if no helper has claimed it, reads ahead
// while it can, and when series i is held by a helper and nothing else can
// be claimed (the helper was descheduled, or the window is full) it takes
// series i back: reads it itself and drops the helper's copy. A helper
// that starts late (the pool serves other requests) just finds less to
// claim; a helper that cannot claim polls every 100 us instead of being
// woken.
class SeriesReads {
 public:
  SeriesReads(const storage::Engine& engine, std::span<const SeriesRef> series,
              Fn fn, const RangeSpec& spec, const ReadRange& range,
              uint32_t buckets, size_t grid_buckets,
              const AggregateLimits& limits)
      : engine_(engine),
        series_(series),
        axis_(spec.axis),
        range_(range),
        buckets_(buckets) {
    const size_t wanted = std::clamp<uint32_t>(limits.read_threads, 1, 64);
    const size_t available = limits.read_pool != nullptr
                                 ? size_t{limits.read_pool->threads()} + 1
                                 : wanted;
    const size_t threads = std::min(
        {wanted, available, series.size() / kMinSeriesPerThread});
    if (threads <= 1) return;  // read and fold on the calling thread alone
    // Slots hold whole series' buckets: a few per thread, fewer for very
    // fine grids (24 bytes a bucket).
    const size_t window = std::max(
        threads, std::min(kSlotsPerThread * threads,
                          kWindowBuckets / std::max<size_t>(grid_buckets, 1)));
    std::vector<storage::SeriesId> ids;
    ids.reserve(series.size());
    for (const SeriesRef& ref : series) ids.push_back(ref.id);
    job_ = std::make_shared<Job>(engine, std::move(ids), fn, axis_, range_,
                                 buckets_, window);
    storage::TaskPool* pool = limits.read_pool;
    if (pool == nullptr) {
      own_pool_ = std::make_unique<storage::TaskPool>(static_cast<uint32_t>(threads - 1),
                                                     "stepdb-agg");
      pool = own_pool_.get();
    }
    for (size_t t = 1; t < threads; ++t) {
      // The task owns the job (it may run after this read is over, and a
      // read it took may still be going): it needs nothing of the caller's
      // but the engine, which outlives the pool.
      pool->Submit([job = job_] { job->Help(); });
    }
  }

  // Stops the helpers' claims (a read a helper is in does not hold this
  // thread up: it owns what it reads into).
  ~SeriesReads() {
    if (job_ != nullptr) job_->stop.store(true, std::memory_order_relaxed);
  }

  // Folds series i into `fold`: its buckets, then EndSeries. Precondition:
  // i is 0, then each next one. Returns the read's or the fold's error.
  absl::Status FoldNext(size_t i, GroupFold& fold,
                        storage::BucketReadStats* stats) {
    if (job_ == nullptr) return ReadAndFold(i, fold, stats);
    Job& job = *job_;
    Slot& slot = job.slots[i % job.slots.size()];
    for (;;) {
      int state = slot.state.load(std::memory_order_acquire);
      if (state == kDone) break;  // (the slot's series is i: see Slot)
      size_t unclaimed = i;
      if (job.next.compare_exchange_strong(unclaimed, i + 1)) {
        return ReadAndFoldHere(i, fold, stats);  // no helper took it
      }
      if (size_t j; job.TryClaim(&j)) {  // read ahead
        job.Read(j);
        continue;
      }
      // A helper holds series i (kReading), or has won the claim and not
      // marked it yet (kFree): take it back.
      if ((state == kReading || state == kFree) &&
          slot.state.compare_exchange_strong(state, kAbandoned,
                                             std::memory_order_acq_rel)) {
        return ReadAndFoldHere(i, fold, stats);
      }
      // The state moved under us (kDone, most likely): look again.
    }
    // The slot is the caller's until it is freed below: no series can be
    // claimed into it before.
    absl::Status s = slot.status;
    if (s.ok()) {
      AddStats(slot.stats, stats);
      auto counts = slot.non_finite.begin();
      for (const Contribution& x : slot.buckets) {
        fold.Add(x, x.non_finite ? *counts++ : NonFiniteCounts{});
      }
      s = fold.EndSeries();
    }
    slot.state.store(kFree, std::memory_order_release);
    job.folded.store(i + 1, std::memory_order_release);
    return s;
  }

 private:
  // Below this many series per thread, a helper's handoff costs more than
  // its share of the reading.
  static constexpr size_t kMinSeriesPerThread = 4;
  static constexpr size_t kSlotsPerThread = 64;
  static constexpr size_t kWindowBuckets = size_t{1} << 18;

  absl::Status ReadAndFold(size_t i, GroupFold& fold,
                           storage::BucketReadStats* stats) const {
    storage::BucketReadStats read;
    absl::Status s = storage::StreamBuckets(
        engine_, series_[i].id, axis_, range_, buckets_,
        [&](size_t index, const storage::Bucket& b) { fold.Add(index, b); },
        &read);
    if (!s.ok()) return s;
    AddStats(read, stats);
    return fold.EndSeries();
  }
  // ReadAndFold of a series the caller has taken, then the window moves on.
  absl::Status ReadAndFoldHere(size_t i, GroupFold& fold,
                               storage::BucketReadStats* stats) {
    absl::Status s = ReadAndFold(i, fold, stats);
    job_->folded.store(i + 1, std::memory_order_release);
    return s;
  }

  // Slot states. A slot holds series i, i + window, ... in turn; when the
  // caller is at series i, its slot is kFree (i not read into it yet, or
  // not claimed), kReading (a helper reads i), kDone (i is read), or
  // kAbandoned (the caller took back series i - window from a helper that
  // is still reading it; i cannot be claimed into the slot until it ends).
  static constexpr int kFree = 0, kReading = 1, kDone = 2, kAbandoned = 3;
  struct Slot {
    std::atomic<int> state{kFree};
    // The reader's while kReading or kAbandoned, the caller's once kDone
    // (published by the state's release store).
    absl::Status status;
    std::vector<Contribution> buckets;
    std::vector<NonFiniteCounts> non_finite;  // of buckets[k].non_finite
    storage::BucketReadStats stats;
  };

  // What the caller and its helpers share; helpers own it with the caller
  // (shared_ptr), and it holds copies of what a read needs, so that a read
  // the caller has taken back can finish after the request is answered.
  struct Job {
    Job(const storage::Engine& engine, std::vector<storage::SeriesId> ids,
        Fn fn, Axis axis, const ReadRange& range, uint32_t buckets,
        size_t window)
        : engine(engine),
          ids(std::move(ids)),
          fn(fn),
          axis(axis),
          range(range),
          buckets(buckets),
          slots(window) {}

    // Claims the next series if it exists, lies in the window ahead of the
    // fold and its slot is free, and marks the slot kReading; false if not
    // (or the caller took the series back first).
    bool TryClaim(size_t* claimed) {
      size_t n = next.load(std::memory_order_relaxed);
      for (;;) {
        if (stop.load(std::memory_order_relaxed) || n >= ids.size() ||
            n >= folded.load(std::memory_order_acquire) + slots.size() ||
            slots[n % slots.size()].state.load(std::memory_order_acquire) !=
                kFree) {
          return false;
        }
        if (next.compare_exchange_weak(n, n + 1)) break;
      }
      int state = kFree;
      if (!slots[n % slots.size()].state.compare_exchange_strong(
              state, kReading, std::memory_order_acq_rel)) {
        // The caller took series n back before it was marked: the slot is
        // kAbandoned with no reader, and free again.
        slots[n % slots.size()].state.store(kFree, std::memory_order_release);
        return false;
      }
      *claimed = n;
      return true;
    }
    // Reads claimed series n into its slot and publishes it (kDone), or
    // frees the slot if the caller took the series back meanwhile.
    void Read(size_t n) {
      Slot& slot = slots[n % slots.size()];
      slot.buckets.clear();
      slot.non_finite.clear();
      slot.status = storage::StreamBuckets(
          engine, ids[n], axis, range, buckets,
          [&](size_t index, const storage::Bucket& b) {
            const Contribution& x =
                slot.buckets.emplace_back(Contribute(fn, index, b));
            if (x.non_finite) {
              slot.non_finite.push_back(
                  {b.nan_count, b.pos_inf_count, b.neg_inf_count});
            }
          },
          &slot.stats);
      int state = kReading;
      if (!slot.state.compare_exchange_strong(state, kDone,
                                              std::memory_order_acq_rel)) {
        slot.state.store(kFree, std::memory_order_release);  // kAbandoned
      }
    }
    // A helper: reads what it can claim until every series is claimed or
    // the read stops, polling while the window ahead of the fold is full.
    void Help() {
      while (!stop.load(std::memory_order_relaxed) &&
             next.load(std::memory_order_relaxed) < ids.size()) {
        if (size_t n; TryClaim(&n)) {
          Read(n);
        } else {
          absl::SleepFor(absl::Microseconds(100));
        }
      }
    }

    // Constant after construction.
    const storage::Engine& engine;  // outlives the pool
    const std::vector<storage::SeriesId> ids;
    const Fn fn;
    const Axis axis;
    const ReadRange range;
    const uint32_t buckets;

    std::atomic<size_t> next{0};    // first series not claimed
    std::atomic<size_t> folded{0};  // series the caller is done with
    std::atomic<bool> stop{false};  // claim nothing more
    std::vector<Slot> slots;        // series n is read into slots[n % size]
  };

  const storage::Engine& engine_;
  const std::span<const SeriesRef> series_;
  const Axis axis_;
  const ReadRange range_;
  const uint32_t buckets_;
  std::unique_ptr<storage::TaskPool> own_pool_;  // when the limits give no pool
  std::shared_ptr<Job> job_;            // null: no helpers
};

}  // namespace

absl::Status Aggregate(const storage::Engine& engine,
                       const v1::AggregateRequest& request,
                       const AggregateLimits& limits,
                       v1::AggregateResponse* response,
                       storage::BucketReadStats* stats) {
  response->Clear();
  if (stats != nullptr) *stats = {};
  if (request.project().empty()) {
    return absl::InvalidArgumentError("project: empty");
  }
  if (request.metric().empty()) {
    return absl::InvalidArgumentError("metric: empty");
  }
  if (request.buckets() == 0 || request.buckets() > storage::kMaxBuckets) {
    return absl::InvalidArgumentError(
        absl::StrCat("buckets: ", request.buckets(), " is not in [1, ",
                     storage::kMaxBuckets, "]"));
  }
  const Fn fn = request.fn();
  if (!v1::AggregateRequest::Fn_IsValid(fn)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fn: unknown function ", static_cast<int>(fn)));
  }
  for (const std::string& key : request.group_by()) {
    if (key.empty()) return absl::InvalidArgumentError("group_by: empty key");
  }
  auto spec = RangeFromWire(request);
  if (!spec.ok()) return spec.status();
  auto matchers = MatchersFromWire(request.matchers());
  if (!matchers.ok()) return matchers.status();

  // Select the series: per requested run (each once), or the whole project.
  storage::SeriesFilter filter;
  filter.project = request.project();
  filter.metric = request.metric();
  filter.matchers = *std::move(matchers);
  std::vector<std::optional<std::string>> runs;
  for (const std::string& run :
       std::set<std::string>(request.runs().begin(), request.runs().end())) {
    runs.emplace_back(run);
  }
  if (runs.empty()) runs.emplace_back(std::nullopt);
  std::vector<SeriesRef> series;
  for (const auto& run : runs) {
    filter.run = run;
    bool truncated = false;
    const size_t room = limits.max_series -
                        std::min<uint64_t>(limits.max_series, series.size());
    for (storage::SeriesInfo& info :
         engine.ListSeries(filter, room + 1, &truncated)) {
      if (series.size() == limits.max_series) {
        return ResourceExhausted(
            "aggregate: more series match", limits.max_series,
            "--max_aggregate_series",
            "narrow the selection with runs or label matchers");
      }
      SeriesRef& ref = series.emplace_back();
      ref.id = info.id;
      ref.points = info.points;
      ref.first_step = info.first_step;
      ref.last_step = info.last_step;
      for (const std::string& key : request.group_by()) {
        if (key == "run") {
          ref.group.push_back(info.key.run);
          continue;
        }
        const auto it =
            std::find_if(info.key.labels.begin(), info.key.labels.end(),
                         [&](const auto& label) { return label.first == key; });
        ref.group.push_back(it == info.key.labels.end() ? "" : it->second);
      }
    }
  }

  // Bound the work before reading anything: the series' statistics give an
  // estimate for free (a pass over chunk headers would cost as much I/O as
  // the read itself).
  uint64_t points = 0;
  for (const SeriesRef& ref : series) points += EstimatePoints(ref, *spec);
  if (points > limits.max_points && spec->axis == Axis::kTime) {
    // By time the statistics only give an upper bound (all points); before
    // refusing, count from chunk headers, which costs one pass of I/O.
    points = 0;
    for (const SeriesRef& ref : series) {
      CountVisitor count;
      if (absl::Status s = engine.Scan(ref.id, spec->range, count); !s.ok()) {
        return s;
      }
      points += count.points();
      if (points > limits.max_points) break;
    }
  }
  if (points > limits.max_points) {
    return ResourceExhausted(
        absl::StrCat("aggregate: about ", points, " points in range"),
        limits.max_points, "--max_aggregate_points",
        "narrow the range or the selection");
  }
  // Open range ends: the first / last point of all the series together.
  ReadRange& range = spec->range;
  bool empty = points == 0;
  if (!empty && spec->axis == Axis::kStep) {
    uint64_t lo = std::numeric_limits<uint64_t>::max(), hi = 0;
    for (const SeriesRef& ref : series) {
      if (ref.points == 0) continue;
      lo = std::min(lo, ref.first_step);
      hi = std::max(hi, ref.last_step);
    }
    if (spec->open_from) range.steps.from = std::max(range.steps.from, lo);
    if (spec->open_to) range.steps.to = std::min(range.steps.to, hi);
    empty = range.steps.from > range.steps.to;
  } else if (!empty && (spec->open_from || spec->open_to)) {
    // Times need not be monotonic: the extent comes from chunk headers.
    int64_t lo = std::numeric_limits<int64_t>::max();
    int64_t hi = std::numeric_limits<int64_t>::min();
    for (const SeriesRef& ref : series) {
      auto extent = storage::ReadSeriesExtent(engine, ref.id);
      if (!extent.ok()) return extent.status();
      if (!extent->has_value()) continue;
      lo = std::min(lo, (*extent)->min_time_ms);
      hi = std::max(hi, (*extent)->max_time_ms);
    }
    if (spec->open_from) range.times.from_ms = lo;
    if (spec->open_to) range.times.to_ms = hi;
    empty = range.times.from_ms > range.times.to_ms;
  }

  // Groups in the order of their values; within one, series in id order.
  std::sort(series.begin(), series.end(),
            [](const SeriesRef& a, const SeriesRef& b) {
              return std::tie(a.group, a.id) < std::tie(b.group, b.id);
            });
  std::optional<storage::BucketGrid> grid;
  if (!empty) {
    grid.emplace(spec->axis, range, request.buckets());
    // Each group costs a pass over the grid and may fill it: bound both.
    size_t groups = series.empty() ? 0 : 1;
    for (size_t i = 1; i < series.size(); ++i) {
      groups += series[i].group != series[i - 1].group;
    }
    if (groups * grid->count() > limits.max_cells) {
      return ResourceExhausted(absl::StrCat("aggregate: ", groups, " groups x ",
                                            grid->count(), " buckets"),
                               limits.max_cells, "max_aggregate_cells",
                               "use fewer buckets or fewer groups");
    }
  }
  std::vector<Cell> cells(grid ? grid->count() : 0);
  std::optional<SeriesReads> reads;
  if (!empty) {
    reads.emplace(engine, series, fn, *spec, range, request.buckets(),
                  grid->count(), limits);
  }
  std::vector<std::pair<uint32_t, double>>
      ranked;  // percentiles: (bucket, value)
  std::vector<double> values;
  for (size_t begin = 0; begin < series.size();) {
    size_t end = begin;
    while (end < series.size() && series[end].group == series[begin].group)
      ++end;
    v1::AggregateGroup* group = response->add_groups();
    for (int k = 0; k < request.group_by_size(); ++k) {
      if (!series[begin].group[k].empty()) {
        (*group->mutable_labels())[request.group_by(k)] =
            series[begin].group[k];
      }
    }
    group->set_series_count(end - begin);
    if (empty) {
      begin = end;
      continue;
    }
    std::fill(cells.begin(), cells.end(), Cell{});
    ranked.clear();
    GroupFold fold(fn, limits, cells, ranked);
    for (size_t i = begin; i < end; ++i) {
      if (limits.cancelled && limits.cancelled()) {
        return absl::CancelledError("aggregate: cancelled by the client");
      }
      if (absl::Status s = reads->FoldNext(i, fold, stats); !s.ok()) return s;
    }
    // By bucket, then value: each bucket's values come out ranked.
    std::sort(ranked.begin(), ranked.end());
    size_t r = 0;
    for (size_t index = 0; index < cells.size(); ++index) {
      Cell& c = cells[index];
      if (!c.any) continue;
      v1::AggregateBucket* out = group->add_buckets();
      storage::Bucket bounds;
      grid->SetBounds(index, &bounds);
      if (spec->axis == Axis::kStep) {
        StepToWire(bounds.start_step, out->mutable_start_step());
        StepToWire(bounds.end_step, out->mutable_end_step());
      } else {
        out->set_start_ms(bounds.start_ms);
        out->set_end_ms(bounds.end_ms);
      }
      if (IsPercentile(fn)) {
        values.clear();
        for (; r < ranked.size() && ranked[r].first == index; ++r) {
          values.push_back(ranked[r].second);
        }
        c.series = values.size();
        if (!values.empty()) out->set_value(Percentile(values, Quantile(fn)));
      } else if (c.series > 0) {
        out->set_value(fn == v1::AggregateRequest::MEAN
                           ? c.value / static_cast<double>(c.series)
                           : c.value);
      }
      out->set_series(c.series);
      out->set_nan_count(c.nan_count);
      out->set_pos_inf_count(c.pos_inf_count);
      out->set_neg_inf_count(c.neg_inf_count);
      out->set_coarse(c.coarse);
    }
    begin = end;
  }
  return absl::OkStatus();
}

}  // namespace stepdb::query
