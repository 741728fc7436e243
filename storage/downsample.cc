#include "storage/downsample.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <string>

#include "absl/numeric/int128.h"
#include "absl/strings/str_cat.h"

namespace stepdb::storage {
namespace {

// The number of buckets of width `width_steps` whole steps on the absolute
// grid that [from, to] touches.
uint64_t GridCount(uint64_t from, uint64_t to, uint64_t width_steps) {
  const absl::uint128 width = absl::uint128(width_steps) * kMicrosPerStep;
  return static_cast<uint64_t>(to / width - from / width + 1);
}

}  // namespace

// On the step axis, when `from` is a whole step, the width is a power of two
// of whole steps and the buckets sit on the absolute grid of that width
// (the first and last one clipped to the range): the engine cuts sealed
// chunks at aligned power-of-two step windows, so a chunk then lies wholly in
// one bucket and its header aggregates serve without decoding.
BucketGrid::BucketGrid(Axis axis, const ReadRange& range, uint32_t max_buckets)
    : axis_(axis),
      from_(axis == Axis::kStep ? range.steps.from
                                : TimeCoord(range.times.from_ms)),
      to_(axis == Axis::kStep ? range.steps.to : TimeCoord(range.times.to_ms)) {
  const uint64_t from = from_, to = to_;
  // to - from + 1 may be 2^64 (a whole axis): hence 128 bits.
  const absl::uint128 span = absl::uint128(to - from) + 1;
  if (axis == Axis::kStep && from % kMicrosPerStep == 0 &&
      to - from >= kMicrosPerStep) {
    const uint64_t whole_steps = (to - from) / kMicrosPerStep + 1;
    uint64_t width_steps = std::bit_ceil((whole_steps + max_buckets - 1) / max_buckets);
    // The grid may add one bucket at the edges; widen until it fits.
    while (GridCount(from, to, width_steps) > max_buckets) width_steps *= 2;
    if (width_steps <= std::numeric_limits<uint64_t>::max() / kMicrosPerStep) {
      width_ = width_steps * kMicrosPerStep;
      origin_ = from_ / width_ * width_;
      count_ = static_cast<size_t>(to_ / width_ - from_ / width_ + 1);
      return;
    }
  }
  origin_ = from_;
  const absl::uint128 width = (span + max_buckets - 1) / max_buckets;
  count_ = static_cast<size_t>((span + width - 1) / width);
  // Only one bucket of a 2^64-wide axis needs more than 64 bits.
  width_ = width > std::numeric_limits<uint64_t>::max()
               ? 0
               : static_cast<uint64_t>(width);
}

void BucketGrid::SetBounds(size_t i, Bucket* b) const {
  if (axis_ == Axis::kStep) {
    b->start_step = Start(i);
    b->end_step = End(i);
  } else {
    b->start_ms = CoordTime(Start(i));
    b->end_ms = CoordTime(End(i));
  }
}

namespace {

// A bucket being built. min/max start at +-Inf, which no finite value
// equals, so the first finite value always replaces them.
struct Accumulator {
  uint64_t count = 0;
  uint64_t nan_count = 0;
  uint64_t pos_inf_count = 0;
  uint64_t neg_inf_count = 0;
  double first = 0.0;
  double last = 0.0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  double sum = 0.0;
  uint64_t last_step = 0;
  bool coarse = false;  // see Bucket::coarse
};

inline void AddValue(uint64_t step, double v, Accumulator& a) {
  if (a.count == 0) a.first = v;
  a.last = v;
  a.last_step = step;
  ++a.count;
  if (std::isfinite(v)) {
    if (v < a.min) a.min = v;
    if (v > a.max) a.max = v;
    a.sum += v;
  } else if (std::isnan(v)) {
    ++a.nan_count;
  } else if (v > 0) {
    ++a.pos_inf_count;
  } else {
    ++a.neg_inf_count;
  }
}

// AddValue over a run of values, with the hot state in registers.
void AddValues(const uint64_t* steps, const double* v, size_t n,
               Accumulator& a) {
  if (n == 0) return;
  if (a.count == 0) a.first = v[0];
  a.last = v[n - 1];
  a.last_step = steps[n - 1];
  a.count += n;
  double min = a.min, max = a.max, sum = a.sum;
  uint64_t nan = 0, pos_inf = 0, neg_inf = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = v[i];
    if (std::isfinite(x)) {
      if (x < min) min = x;
      if (x > max) max = x;
      sum += x;
    } else if (std::isnan(x)) {
      ++nan;
    } else if (x > 0) {
      ++pos_inf;
    } else {
      ++neg_inf;
    }
  }
  a.min = min;
  a.max = max;
  a.sum = sum;
  a.nan_count += nan;
  a.pos_inf_count += pos_inf;
  a.neg_inf_count += neg_inf;
}

// Adds a whole rollup piece.
void AddPiece(const RollupPiece& p, Accumulator& a) {
  if (a.count == 0) a.first = p.first;
  a.last = p.last;
  a.last_step = p.last_step;
  a.count += p.count;
  a.nan_count += p.nan_count;
  a.pos_inf_count += p.pos_inf_count;
  a.neg_inf_count += p.neg_inf_count;
  if (p.finite_count() > 0) {
    if (p.min < a.min) a.min = p.min;
    if (p.max > a.max) a.max = p.max;
    a.sum += p.sum;
  }
}

bool InRange(const ReadRange& r, uint64_t step, int64_t time_ms) {
  return step >= r.steps.from && step <= r.steps.to &&
         time_ms >= r.times.from_ms && time_ms <= r.times.to_ms;
}

// The output of a read, per bucket index: a dense grid of accumulators
// (std::vector<Accumulator>), or StreamCells.
template <typename Cells>
class BucketVisitor : public RollupVisitor {
 public:
  BucketVisitor(Axis axis, const ReadRange& range, const BucketGrid& layout,
                Cells& buckets, BucketReadStats& stats)
      : axis_(axis),
        range_(range),
        layout_(layout),
        buckets_(buckets),
        stats_(stats),
        all_times_(range.times.from_ms == std::numeric_limits<int64_t>::min() &&
                   range.times.to_ms == std::numeric_limits<int64_t>::max()) {}

  // Each piece that lies in one bucket and wholly in range is merged; a
  // piece wholly outside the range is skipped; the others need the chunk's
  // points (loaded once per chunk), of that piece only.
  absl::StatusOr<bool> OnChunkPieces(std::span<const RollupPiece> pieces,
                                     ChunkLoader load_chunk) override {
    const PointColumns* points = nullptr;
    bool raw_expired = false;  // load_chunk said so
    bool decoded = false;
    bool all_merged = true;
    size_t offset = 0;
    for (const RollupPiece& p : pieces) {
      const size_t begin = offset;
      offset += p.count;
      if (Outside(p)) continue;
      if (const std::optional<size_t> bucket = WholePieceBucket(p)) {
        AddPiece(p, buckets_[*bucket]);
        ++stats_.pieces_merged;
        continue;
      }
      all_merged = false;
      if (points == nullptr && !raw_expired) {
        auto loaded = load_chunk();
        if (!loaded.ok()) return loaded.status();
        points = *loaded;
        raw_expired = points == nullptr;
      }
      if (raw_expired) {
        AddCoarsePiece(p);
        continue;
      }
      if (!decoded) {
        decoded = true;
        ++stats_.chunks_decoded;
      }
      if (points->size() < offset) {
        return absl::DataLossError("rollup record counts more points than its chunk");
      }
      AddPoints(PointSpan{points->steps, points->times_ms, points->values}
                    .Suffix(begin)
                    .Prefix(p.count));
    }
    if (all_merged) ++stats_.chunks_merged;
    return true;
  }

  void OnHead(const PointColumns& points) override {
    stats_.head_points += points.size();
    AddPoints({points.steps, points.times_ms, points.values});
  }

 private:
  // A piece whose points are gone (retention kept only its chunk's rollup
  // record) and that does not lie in one bucket inside the range: taken
  // whole, as if all its points sat at its last point (step last_step,
  // time max_time_ms), like a downsampled sample stamped at the end of its
  // window; the bucket is marked coarse.
  void AddCoarsePiece(const RollupPiece& p) {
    if (!InRange(range_, p.last_step, p.max_time_ms)) return;
    Accumulator& a =
        buckets_[axis_ == Axis::kStep
                     ? StepBucket(p.last_step)
                     : layout_.Index(BucketGrid::TimeCoord(p.max_time_ms))];
    AddPiece(p, a);
    a.coarse = true;
    ++stats_.pieces_coarse;
  }

  // Whether no point of the piece can be in range.
  bool Outside(const RollupPiece& p) const {
    return p.last_step < range_.steps.from || p.first_step > range_.steps.to ||
           p.max_time_ms < range_.times.from_ms ||
           p.min_time_ms > range_.times.to_ms;
  }

  // The bucket that holds every point of the piece, if the piece lies in
  // one bucket and wholly in range.
  std::optional<size_t> WholePieceBucket(const RollupPiece& p) {
    if (!InRange(range_, p.first_step, p.min_time_ms) ||
        !InRange(range_, p.last_step, p.max_time_ms)) {
      return std::nullopt;
    }
    const size_t first = axis_ == Axis::kStep
                             ? StepBucket(p.first_step)
                             : layout_.Index(BucketGrid::TimeCoord(p.min_time_ms));
    const size_t last = axis_ == Axis::kStep
                            ? StepBucket(p.last_step)
                            : layout_.Index(BucketGrid::TimeCoord(p.max_time_ms));
    if (first != last) return std::nullopt;
    return first;
  }

  // The bucket of step x (in range). Pieces come in step order, so it is
  // mostly the bucket of the previous call or the next one: checking those
  // first saves BucketGrid::Index's 64-bit division for most of the
  // ~800,000 lookups of a 512-series aggregate.
  size_t StepBucket(uint64_t x) {
    if (cursor_valid_ && x >= cursor_start_ && x <= cursor_end_) return cursor_;
    if (cursor_valid_ && x > cursor_end_ && cursor_ + 1 < layout_.count() &&
        x <= layout_.End(cursor_ + 1)) {
      ++cursor_;  // buckets are contiguous: x >= Start(cursor_ + 1)
    } else {
      cursor_ = layout_.Index(x);
    }
    cursor_valid_ = true;
    cursor_start_ = layout_.Start(cursor_);
    cursor_end_ = layout_.End(cursor_);
    return cursor_;
  }

  // Adds the points of `p` (in step order) that are in range.
  void AddPoints(PointSpan p) {
    if (axis_ == Axis::kTime) {
      // Times need not be monotonic: place each point on its own.
      for (size_t i = 0; i < p.size(); ++i) {
        if (InRange(range_, p.steps[i], p.times_ms[i])) {
          AddValue(p.steps[i], p.values[i],
                   buckets_[layout_.Index(BucketGrid::TimeCoord(p.times_ms[i]))]);
        }
      }
      return;
    }
    // Steps increase: take each bucket's run of points at once.
    const auto begin = p.steps.begin();
    const auto end = std::upper_bound(begin, p.steps.end(), range_.steps.to);
    auto it = std::lower_bound(begin, end, range_.steps.from);
    while (it != end) {
      const size_t bucket = layout_.Index(*it);
      const auto next = std::upper_bound(it, end, layout_.End(bucket));
      const size_t i = it - begin, j = next - begin;
      if (all_times_) {
        AddValues(p.steps.data() + i, p.values.data() + i, j - i,
                  buckets_[bucket]);
      } else {
        for (size_t k = i; k < j; ++k) {
          const int64_t t = p.times_ms[k];
          if (t >= range_.times.from_ms && t <= range_.times.to_ms) {
            AddValue(p.steps[k], p.values[k], buckets_[bucket]);
          }
        }
      }
      it = next;
    }
  }

  const Axis axis_;
  const ReadRange& range_;
  const BucketGrid& layout_;
  Cells& buckets_;
  BucketReadStats& stats_;
  const bool all_times_;
  // StepBucket's last answer and its bounds.
  bool cursor_valid_ = false;
  size_t cursor_ = 0;
  uint64_t cursor_start_ = 0;
  uint64_t cursor_end_ = 0;
};

// The aggregates of an accumulated bucket, bounds aside.
void ToBucket(const Accumulator& a, Bucket* b) {
  b->last_step = a.last_step;
  b->coarse = a.coarse;
  b->count = a.count;
  b->nan_count = a.nan_count;
  b->pos_inf_count = a.pos_inf_count;
  b->neg_inf_count = a.neg_inf_count;
  b->first = a.first;
  b->last = a.last;
  if (b->has_finite()) {
    b->min = a.min;
    b->max = a.max;
    b->sum = a.sum;
  } else {
    b->min = b->max = b->sum = 0.0;
  }
}

// The cells of a step-axis read, handed to a sink one bucket at a time:
// pieces and points arrive in step order, so the index asked for never
// decreases, and a bucket is complete once a later one is asked for.
class StreamCells {
 public:
  explicit StreamCells(BucketSink sink) : sink_(sink) {}

  Accumulator& operator[](size_t index) {
    if (index != open_) {
      Flush();
      open_ = index;
    }
    return acc_;
  }
  // Hands over the open bucket, if it holds a point.
  void Flush() {
    if (acc_.count == 0) return;
    ToBucket(acc_, &bucket_);
    sink_(open_, bucket_);
    acc_ = Accumulator{};
  }

 private:
  BucketSink sink_;
  size_t open_ = 0;
  Accumulator acc_;
  Bucket bucket_;
};

absl::Status CheckReadArgs(Axis axis, const ReadRange& range,
                           uint32_t max_buckets) {
  if (max_buckets == 0 || max_buckets > kMaxBuckets) {
    return absl::InvalidArgumentError(absl::StrCat(
        "buckets: ", max_buckets, " is not in [1, ", kMaxBuckets, "]"));
  }
  if (axis == Axis::kStep && range.steps.from > range.steps.to) {
    return absl::InvalidArgumentError("steps: from is after to");
  }
  if (axis == Axis::kTime && range.times.from_ms > range.times.to_ms) {
    return absl::InvalidArgumentError("time: from is after to");
  }
  return absl::OkStatus();
}

// Over the rollup records rather than the chunk headers: they also cover
// spans whose chunks retention deleted, and are ~1/10 of the chunk bytes.
class ExtentVisitor : public RollupVisitor {
 public:
  absl::StatusOr<bool> OnChunkPieces(std::span<const RollupPiece> pieces,
                                     ChunkLoader) override {
    for (const RollupPiece& p : pieces) {
      Add(p.first_step, p.last_step, p.min_time_ms, p.max_time_ms);
    }
    return true;
  }
  void OnHead(const PointColumns& p) override {
    for (size_t i = 0; i < p.size(); ++i) {
      Add(p.steps[i], p.steps[i], p.times_ms[i], p.times_ms[i]);
    }
  }
  const std::optional<SeriesExtent>& extent() const { return extent_; }

 private:
  void Add(uint64_t min_step, uint64_t max_step, int64_t min_time,
           int64_t max_time) {
    if (!extent_) {
      extent_ = SeriesExtent{min_step, max_step, min_time, max_time};
      return;
    }
    extent_->min_step = std::min(extent_->min_step, min_step);
    extent_->max_step = std::max(extent_->max_step, max_step);
    extent_->min_time_ms = std::min(extent_->min_time_ms, min_time);
    extent_->max_time_ms = std::max(extent_->max_time_ms, max_time);
  }

  std::optional<SeriesExtent> extent_;
};

}  // namespace

absl::StatusOr<std::vector<Bucket>> ReadBuckets(const Engine& engine,
                                                SeriesId series, Axis axis,
                                                const ReadRange& range,
                                                uint32_t max_buckets,
                                                BucketReadStats* stats) {
  const SeriesSlice whole{series};
  return ReadBuckets(engine, std::span(&whole, 1), axis, range, max_buckets,
                     stats);
}

absl::StatusOr<std::vector<Bucket>> ReadBuckets(
    const Engine& engine, std::span<const SeriesSlice> slices, Axis axis,
    const ReadRange& range, uint32_t max_buckets, BucketReadStats* stats) {
  if (absl::Status s = CheckReadArgs(axis, range, max_buckets); !s.ok()) {
    return s;
  }
  if (stats != nullptr) *stats = {};
  const BucketGrid layout(axis, range, max_buckets);
  // Reused by the thread's next read: an aggregate reads every series on
  // the same grid, one after the other.
  thread_local std::vector<Accumulator> acc;
  acc.assign(layout.count(), Accumulator{});
  BucketReadStats local_stats;
  // Every slice adds to the same accumulators, in step order.
  for (const SeriesSlice& slice : slices) {
    ReadRange clipped = range;
    clipped.steps.from = std::max(range.steps.from, slice.from_step);
    clipped.steps.to = std::min(range.steps.to, slice.to_step);
    if (clipped.steps.from > clipped.steps.to) continue;
    BucketVisitor<std::vector<Accumulator>> visitor(axis, clipped, layout, acc,
                          stats != nullptr ? *stats : local_stats);
    if (absl::Status s = engine.ScanRollups(slice.series, clipped, visitor);
        !s.ok()) {
      return s;
    }
  }

  std::vector<Bucket> out;
  out.reserve(std::count_if(acc.begin(), acc.end(),
                            [](const Accumulator& a) { return a.count > 0; }));
  for (size_t i = 0; i < acc.size(); ++i) {
    const Accumulator& a = acc[i];
    if (a.count == 0) continue;
    Bucket& b = out.emplace_back();
    layout.SetBounds(i, &b);
    ToBucket(a, &b);
  }
  // Large grids (up to kMaxBuckets) are not kept alive per thread.
  if (acc.size() > 4096) std::vector<Accumulator>().swap(acc);
  return out;
}

absl::Status StreamBuckets(const Engine& engine, SeriesId series, Axis axis,
                           const ReadRange& range, uint32_t max_buckets,
                           BucketSink sink, BucketReadStats* stats) {
  if (axis == Axis::kTime) {
    // Times need not be monotonic: a bucket is complete only at the end, so
    // the grid of ReadBuckets is needed anyway.
    auto buckets = ReadBuckets(engine, series, axis, range, max_buckets, stats);
    if (!buckets.ok()) return buckets.status();
    const BucketGrid grid(axis, range, max_buckets);
    for (const Bucket& b : *buckets) sink(grid.IndexOf(b), b);
    return absl::OkStatus();
  }
  if (absl::Status s = CheckReadArgs(axis, range, max_buckets); !s.ok()) {
    return s;
  }
  BucketReadStats local_stats;
  BucketReadStats& read_stats = stats != nullptr ? *stats : local_stats;
  read_stats = {};
  const BucketGrid grid(axis, range, max_buckets);
  StreamCells cells(sink);
  BucketVisitor<StreamCells> visitor(axis, range, grid, cells, read_stats);
  if (absl::Status s = engine.ScanRollups(series, range, visitor); !s.ok()) {
    return s;
  }
  cells.Flush();
  return absl::OkStatus();
}

absl::StatusOr<std::optional<SeriesExtent>> ReadSeriesExtent(
    const Engine& engine, SeriesId series) {
  ExtentVisitor visitor;
  if (absl::Status s = engine.ScanRollups(series, ReadRange{}, visitor);
      !s.ok()) {
    return s;
  }
  return visitor.extent();
}

}  // namespace stepdb::storage
