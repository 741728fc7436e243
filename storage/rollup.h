// Rollup records: pre-aggregated pieces of a sealed chunk, stored beside it
// in the `rollups` column family (docs/FORMAT.md, "Rollups").
//
// A chunk's points are cut at an aligned grid of the step axis, a power of
// two of micro-steps wide (the engine uses 1/8 of the chunk window: 128
// steps for the usual 1024-step chunks), and each non-empty cell becomes a
// piece holding count, NaN/+Inf/-Inf counts, first, last, min, max and sum,
// plus its step and time bounds. A chart or aggregate read whose buckets
// are at least as wide as a piece takes each piece whole (no chunk bytes
// read, nothing decoded); only pieces straddling a bucket edge or the range
// make it load and decode the chunk.
//
// Pure functions of their inputs; thread-safe.
#ifndef STEPDB_STORAGE_ROLLUP_H_
#define STEPDB_STORAGE_ROLLUP_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace stepdb::storage {

// The aggregates of one run of consecutive points of a chunk (a piece).
// Values as in ChunkSummary: min/max over the finite values compared with
// `<` / `>` in point order (the first of equal values wins), sum the
// float64 sum of the finite values in point order; min, max and sum are 0
// when there is no finite value. first/last are bit patterns kept exactly.
struct RollupPiece {
  uint64_t first_step = 0;  // micro-steps of the first and last point
  uint64_t last_step = 0;
  int64_t min_time_ms = 0;
  int64_t max_time_ms = 0;
  uint32_t count = 0;  // >= 1
  uint32_t nan_count = 0;
  uint32_t pos_inf_count = 0;
  uint32_t neg_inf_count = 0;
  double first = 0.0;
  double last = 0.0;
  double min = 0.0;
  double max = 0.0;
  double sum = 0.0;

  uint32_t finite_count() const {
    return count - nan_count - pos_inf_count - neg_inf_count;
  }
};

// At most this many pieces per chunk: a chunk that spans more grid cells
// than that (irregular steps, a head sealed whole) is cut on a coarser grid
// (the width doubled until it fits), so a record never outgrows its chunk.
inline constexpr size_t kMaxRollupPieces = 16;

// Cuts the points (steps strictly increasing; the three spans of equal,
// non-zero size) into pieces at multiples of `width` micro-steps (a power
// of two, >= 1; doubled as needed for kMaxRollupPieces) and appends them to
// *pieces in step order.
void BuildRollupPieces(std::span<const uint64_t> steps,
                       std::span<const int64_t> times_ms,
                       std::span<const double> values, uint64_t width,
                       std::vector<RollupPiece>* pieces);

// Appends the encoding of `pieces` (non-empty, in step order, each
// first_step >= base_step, as BuildRollupPieces makes them) to *out.
// `base_step` is the chunk's first step, which the record's key carries, so
// it is not repeated in the value.
void EncodeRollup(std::span<const RollupPiece> pieces, uint64_t base_step,
                  std::string* out);

// Decodes a record written by EncodeRollup with the same `base_step`,
// replacing *pieces. Returns DataLossError for a truncated or malformed
// record (never reads outside `in`), UnimplementedError for an unknown
// version byte.
absl::Status DecodeRollup(std::string_view in, uint64_t base_step,
                          std::vector<RollupPiece>* pieces);

// Retention with a longer rollup period (auth/retention.h) deletes a chunk
// but keeps its record, flagged so that readers know the record's points
// can no longer be decoded and take its pieces whole (storage/downsample.h).
//
// Whether `record` carries that flag; false for a record too short to
// tell (DecodeRollup reports those). Reads two bytes: cheap enough for a
// retention pass to test every record.
bool RollupRawExpired(std::string_view record);
// Sets the flag in place (the rest of the record is unchanged, so it still
// decodes to the same pieces). Returns DataLossError for a truncated
// record, UnimplementedError for an unknown version byte.
absl::Status MarkRollupRawExpired(std::string* record);

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_ROLLUP_H_
