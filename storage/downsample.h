// Downsampled reads: one series over a step or time range, cut into at most
// N equal-width buckets, each holding first, last, min, max, sum, count and
// the NaN/+Inf/-Inf counts. What a chart of ~1000 pixels needs from a series
// of a million points, without hiding a spike (min/max) or a NaN (counts).
//
// The read walks the rollup records of the sealed chunks
// (Engine::ScanRollups, storage/rollup.h): a piece (1/8 of a chunk window,
// 128 steps for the usual chunks) that lies wholly in one bucket is merged
// from its aggregates; only chunks with a piece straddling a bucket edge or
// the range are read and decoded (and only those pieces' points added),
// plus the head. The result equals a point-by-point scan of Engine::Read
// output, except that `sum` adds a merged piece's partial sum (itself added
// in point order) instead of its points one by one, so it may differ from a
// naive running sum in the last bits (floating-point addition is not
// associative).
//
// Thread-safety: the functions are thread-safe (Engine is).
#ifndef STEPDB_STORAGE_DOWNSAMPLE_H_
#define STEPDB_STORAGE_DOWNSAMPLE_H_

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/engine.h"

namespace stepdb::storage {

// Upper bound on the buckets of one read (bounds the answer's memory).
inline constexpr uint32_t kMaxBuckets = 100'000;

// The axis along which a read is cut into buckets.
enum class Axis {
  kStep,  // micro-steps (ReadRange::steps)
  kTime,  // Unix milliseconds (ReadRange::times)
};

// The aggregates of the points of one bucket.
struct Bucket {
  // Inclusive bounds of the bucket on the read's axis: start_step/end_step
  // (micro-steps) for Axis::kStep, start_ms/end_ms for Axis::kTime; the
  // other pair is 0.
  uint64_t start_step = 0;
  uint64_t end_step = 0;
  int64_t start_ms = 0;
  int64_t end_ms = 0;

  // Every point of the bucket, NaN and +-Inf included (always > 0: empty
  // buckets are not returned).
  uint64_t count = 0;
  uint64_t nan_count = 0;  // NaNs of any payload and sign
  uint64_t pos_inf_count = 0;
  uint64_t neg_inf_count = 0;

  // The values of the bucket's first and last point in step order, bit for
  // bit (NaN and +-Inf too). On the time axis too: "first" is the point of
  // the lowest step among those whose time falls in the bucket, which is
  // also the earliest one unless the series' times go backwards.
  double first = 0.0;
  double last = 0.0;

  // Over the finite values only. When there is none (has_finite() is
  // false: the bucket holds only NaN/Inf), min and max are 0.0 and
  // meaningless, and sum is 0.0. min/max compare with `<` / `>`, so of -0.0
  // and 0.0 the one seen first (in step order) wins, as in ChunkSummary.
  double min = 0.0;
  double max = 0.0;
  double sum = 0.0;  // float64; see the file comment on its last bits

  // The step of the bucket's last point (the one `last` is the value of).
  uint64_t last_step = 0;

  // Some of the bucket's points come from a rollup piece whose raw points
  // retention has deleted and that did not lie wholly in this bucket and
  // the range: the piece was taken whole, placed at its last point (see
  // "Expired raw points" at ReadBuckets). The bucket's aggregates are then
  // those of whole pieces, and some of its points may lie outside its
  // bounds (never outside the piece's own bounds).
  bool coarse = false;

  uint64_t finite_count() const {
    return count - nan_count - pos_inf_count - neg_inf_count;
  }
  bool has_finite() const { return finite_count() > 0; }
};

// The buckets of a read along one axis (widths as documented at
// ReadBuckets). Exposed so that a reader combining several series can cut
// them all on one grid: reads with the same axis, range and max_buckets
// return buckets with the same bounds, and IndexOf maps them to a dense
// index.
//
// Positions on the grid are coordinates: micro-steps on the step axis,
// Unix milliseconds with the sign bit flipped (order-preserving) on the time
// axis, so the arithmetic is written once for both.
class BucketGrid {
 public:
  // Precondition: 1 <= max_buckets <= kMaxBuckets, and the axis interval of
  // `range` has from <= to (ReadBuckets checks both).
  BucketGrid(Axis axis, const ReadRange& range, uint32_t max_buckets);

  Axis axis() const { return axis_; }
  size_t count() const { return count_; }
  // The index of a bucket a read on this grid returned.
  size_t IndexOf(const Bucket& b) const {
    return Index(axis_ == Axis::kStep ? b.start_step : TimeCoord(b.start_ms));
  }
  // Sets the bounds of bucket i (start/end step or ms, per the axis) in *b.
  void SetBounds(size_t i, Bucket* b) const;

  static uint64_t TimeCoord(int64_t t) {
    return static_cast<uint64_t>(t) ^ (uint64_t{1} << 63);
  }
  static int64_t CoordTime(uint64_t c) {
    return static_cast<int64_t>(c ^ (uint64_t{1} << 63));
  }
  // The bucket of coordinate x. Precondition: from <= x <= to.
  size_t Index(uint64_t x) const {
    return width_ == 0 ? 0 : static_cast<size_t>((x - origin_) / width_);
  }
  // Bucket i is [origin + i*width, origin + (i+1)*width - 1] clipped to
  // [from, to]; origin <= from and i * width <= to - origin, so nothing
  // overflows.
  uint64_t Start(size_t i) const {
    return std::max(from_, origin_ + i * width_);
  }
  uint64_t End(size_t i) const {
    const uint64_t start = origin_ + i * width_;
    return width_ == 0 || to_ - start < width_ ? to_ : start + width_ - 1;
  }

 private:
  Axis axis_;
  uint64_t from_;
  uint64_t to_;
  uint64_t origin_;  // start of bucket 0 before clipping (<= from)
  uint64_t width_;   // 0: 2^64
  size_t count_;
};

// How a read used the chunks it visited (for tests and metrics).
struct BucketReadStats {
  uint64_t pieces_merged = 0;   // rollup pieces taken whole
  uint64_t chunks_merged = 0;   // chunks whose pieces were all merged (or
                                // outside the range): no chunk bytes read
  uint64_t chunks_decoded = 0;  // chunks read and decoded (some piece
                                // straddled a bucket edge or the range)
  uint64_t head_points = 0;     // head points added
  uint64_t pieces_coarse = 0;   // pieces of expired raw points taken whole
                                // where decoding was needed (Bucket::coarse)

  // Adds another read's counts (a reader of many series sums them here, so
  // a new field is not forgotten by one of them).
  BucketReadStats& operator+=(const BucketReadStats& o) {
    pieces_merged += o.pieces_merged;
    chunks_merged += o.chunks_merged;
    chunks_decoded += o.chunks_decoded;
    head_points += o.head_points;
    pieces_coarse += o.pieces_coarse;
    return *this;
  }
};

// Reads the points of `series` within `range` and aggregates them into
// equal-width buckets along `axis`.
//
// The axis' interval of `range` (range.steps for kStep, range.times for
// kTime), [from, to] inclusive, is cut into at most `max_buckets` buckets
// of width w. The other interval of `range` only filters points (as in
// Engine::Read; its default lets everything through). The width is chosen
// so:
//   - kStep, `from` a whole step and `to` at least one step above it: w is
//     a power of two of whole steps, the smallest >= ceil(W / max_buckets)
//     (W = floor((to - from) / 1'000'000) + 1 whole steps in [from, to])
//     for which the grid below needs at most max_buckets buckets. Bucket i
//     is [o + i*w, o + (i+1)*w - 1] clipped to [from, to], with o = from
//     rounded down to a multiple of w. The engine cuts sealed chunks and
//     their rollup pieces at aligned power-of-two windows, so a piece lies
//     in one bucket and its aggregates serve without decoding (1e6 points
//     into 1000 buckets: 977 buckets of 1024 steps, 8 pieces each).
//   - kTime: w = ceil((to - from + 1) / max_buckets) milliseconds, and
//     kStep otherwise (a fractional `from`, or less than one step):
//     w = ceil((to - from + 1) / max_buckets) micro-steps; bucket i is
//     [from + i*w, min(from + (i+1)*w - 1, to)].
// Empty buckets are omitted: the result holds the non-empty buckets in
// axis order (empty if no point is in range).
//
// Rollup pieces lying wholly inside one bucket and inside `range` are
// merged from their aggregates; chunks holding any other piece that
// overlaps the range are decoded. On the step axis, buckets of at least 1/8
// of the chunk window (whole steps, aligned as above) decode only the
// chunks at the range's edges. `stats`, if not null, receives how.
//
// Expired raw points. Retention may delete a chunk and keep its rollup
// record for longer (auth/retention.h, Engine::ExpireChunks); over such a
// span the answer comes from the pieces alone, as a downsampling TSDB
// (Thanos, VictoriaMetrics) answers from its downsampled data:
//   - a piece that lies in one bucket and inside `range` is merged as
//     always: the bucket is exact;
//   - a piece that would have needed decoding (it straddles a bucket edge,
//     or an edge of either interval of `range`) is taken whole, as if all
//     of its points sat at its last point (step last_step, time
//     max_time_ms), like a downsampled sample stamped at the end of its
//     window: it counts iff that point is in `range`, in that point's
//     bucket, and the bucket is marked `coarse`. So no piece is split or
//     counted twice, a chart whose buckets are at least as wide as the
//     pieces (128 steps for the usual chunks; whole steps, aligned) is
//     exact, and a finer one shows one non-empty bucket per piece.
// Raw reads (Engine::Read) return only the surviving raw points.
//
// Returns InvalidArgumentError if max_buckets is 0 or above kMaxBuckets, or
// the axis interval has from > to; NotFoundError for an unknown series;
// DataLossError for a corrupt chunk.
absl::StatusOr<std::vector<Bucket>> ReadBuckets(
    const Engine& engine, SeriesId series, Axis axis, const ReadRange& range,
    uint32_t max_buckets, BucketReadStats* stats = nullptr);

// Receives the buckets of StreamBuckets: the bucket's index on the grid and
// its aggregates, as ReadBuckets would return them except that the bounds
// are not to be relied on (set on the time axis, not on the step axis;
// BucketGrid::SetBounds gives them). The Bucket is valid only during the
// call.
using BucketSink = absl::FunctionRef<void(size_t index, const Bucket& bucket)>;

// ReadBuckets of one series with the non-empty buckets handed to `sink`, in
// axis order, with their index on BucketGrid(axis, range, max_buckets),
// instead of returned: for a reader that folds many series into one grid
// (query/aggregate.h), to which a vector of buckets and their bounds per
// series costs more than the read itself. Every bucket equals, bit for bit,
// the one ReadBuckets returns at that index. On the step axis pieces and
// points arrive in step order, so one bucket is open at a time and no
// per-series grid is built.
//
// Errors as ReadBuckets; after an error the sink may have received some of
// the buckets.
absl::Status StreamBuckets(const Engine& engine, SeriesId series, Axis axis,
                           const ReadRange& range, uint32_t max_buckets,
                           BucketSink sink, BucketReadStats* stats = nullptr);

// A piece of a read spread over several stored series: the points of
// `series` with steps in [from_step, to_step]. A forked run's series reads
// as its lineage's slices (storage/run_store.h, Lineage).
struct SeriesSlice {
  SeriesId series = 0;
  uint64_t from_step = 0;
  uint64_t to_step = std::numeric_limits<uint64_t>::max();
};

// ReadBuckets over the points of `slices` taken together, as one series.
// Precondition: the slices' step ranges ascend and do not overlap (so the
// points arrive in step order and "first"/"last" stay right). Errors as
// ReadBuckets; NotFoundError if a slice's series is unknown.
absl::StatusOr<std::vector<Bucket>> ReadBuckets(
    const Engine& engine, std::span<const SeriesSlice> slices, Axis axis,
    const ReadRange& range, uint32_t max_buckets,
    BucketReadStats* stats = nullptr);

// The bounds of all points of a series on both axes.
struct SeriesExtent {
  uint64_t min_step = 0;
  uint64_t max_step = 0;
  int64_t min_time_ms = 0;
  int64_t max_time_ms = 0;
};

// The extent of every stored point of `series` (nullopt if it has none),
// from rollup records (so spans kept only as rollups count) and the head,
// without decoding any chunk. Used to give a read with an open range end
// concrete bucket bounds. Costs one pass over the series' rollup records. Returns NotFoundError for an unknown series,
// DataLossError for a corrupt rollup record.
absl::StatusOr<std::optional<SeriesExtent>> ReadSeriesExtent(
    const Engine& engine, SeriesId series);

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_DOWNSAMPLE_H_
