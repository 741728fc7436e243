#include "query/aggregate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
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

// Folds one series' bucket into the group's cell (first stage of the
// semantics in stepdb.proto). Percentile values go to the caller.
void Fold(Fn fn, const storage::Bucket& b, Cell& c) {
  c.any = true;
  c.coarse |= b.coarse;
  c.nan_count += b.nan_count;
  c.pos_inf_count += b.pos_inf_count;
  c.neg_inf_count += b.neg_inf_count;
  switch (fn) {
    case v1::AggregateRequest::MEAN:
      if (!b.has_finite()) return;
      c.value += b.sum / static_cast<double>(b.finite_count());
      break;
    case v1::AggregateRequest::MIN:
      if (!b.has_finite()) return;
      if (c.series == 0 || b.min < c.value) c.value = b.min;
      break;
    case v1::AggregateRequest::MAX:
      if (!b.has_finite()) return;
      if (c.series == 0 || b.max > c.value) c.value = b.max;
      break;
    case v1::AggregateRequest::SUM:
      if (!b.has_finite()) return;
      c.value += b.sum;
      break;
    case v1::AggregateRequest::COUNT:
      c.value += static_cast<double>(b.count);
      break;
    case v1::AggregateRequest::LAST:
      // Series come in registration order: a tie keeps the first.
      if (c.series == 0 || b.last_step > c.last_step) {
        c.value = b.last;
        c.last_step = b.last_step;
      }
      break;
    default:  // percentiles: the caller collects b.last
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
    Fold(fn_, b, cells_[index]);
    if (percentile_ && std::isfinite(b.last)) {
      ranked_.emplace_back(static_cast<uint32_t>(index), b.last);
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

// Reads the buckets of each of `series` (StreamBuckets on the request's
// grid) and folds them in series order. On one thread each bucket is folded
// as it is read, with nothing held per series. On more, the series of a
// batch are read on up to `threads` threads (the calling one included),
// each series' buckets kept, and folded on the calling thread in order:
// either way the answer does not depend on the thread count
// (floating-point sums are added in the same order). Stops at the first
// error of a read or fold.
absl::Status ReadEach(const storage::Engine& engine,
                      std::span<const SeriesRef> series, const RangeSpec& spec,
                      const ReadRange& range, uint32_t buckets,
                      uint32_t threads, storage::BucketReadStats* stats,
                      GroupFold& fold) {
  threads = std::clamp<uint32_t>(threads, 1, 16);
  storage::BucketReadStats read;
  if (threads == 1 || series.size() == 1) {
    for (const SeriesRef& ref : series) {
      absl::Status s = storage::StreamBuckets(
          engine, ref.id, spec.axis, range, buckets,
          [&](size_t index, const storage::Bucket& b) { fold.Add(index, b); },
          &read);
      if (!s.ok()) return s;
      AddStats(read, stats);
      s = fold.EndSeries();
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  // A batch's buckets are held at once: 64 series x 1000 buckets is ~6 MB.
  constexpr size_t kBatch = 64;
  struct Read {
    absl::Status status;
    std::vector<std::pair<uint32_t, storage::Bucket>> buckets;
    storage::BucketReadStats stats;
  };
  std::vector<Read> results(std::min(kBatch, series.size()));
  for (size_t base = 0; base < series.size(); base += kBatch) {
    const size_t n = std::min(kBatch, series.size() - base);
    // Worker t reads the series t, t + threads, ... of the batch.
    auto work = [&](size_t t) {
      for (size_t i = t; i < n; i += threads) {
        Read& r = results[i];
        r.buckets.clear();
        r.status = storage::StreamBuckets(
            engine, series[base + i].id, spec.axis, range, buckets,
            [&](size_t index, const storage::Bucket& b) {
              r.buckets.emplace_back(static_cast<uint32_t>(index), b);
            },
            &r.stats);
      }
    };
    std::vector<std::thread> workers;
    for (size_t t = 1; t < std::min<size_t>(threads, n); ++t) {
      workers.emplace_back(work, t);
    }
    work(0);
    for (std::thread& w : workers) w.join();
    for (size_t i = 0; i < n; ++i) {
      if (!results[i].status.ok()) return results[i].status;
      AddStats(results[i].stats, stats);
      for (const auto& [index, b] : results[i].buckets) fold.Add(index, b);
      if (absl::Status s = fold.EndSeries(); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

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
    absl::Status folded = ReadEach(
        engine, std::span(series).subspan(begin, end - begin), *spec, range,
        request.buckets(), limits.read_threads, stats, fold);
    if (!folded.ok()) return folded;
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
