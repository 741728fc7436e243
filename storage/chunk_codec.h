// Chunk codec: the compressed, columnar encoding of a run of points of one
// series. A chunk is immutable once written; the first byte is a format
// version so that chunks written by older releases stay readable.
//
// Thread-safety: all functions are pure and safe to call concurrently.
#ifndef STEPDB_STORAGE_CHUNK_CODEC_H_
#define STEPDB_STORAGE_CHUNK_CODEC_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace stepdb::storage {

// Points of one series, column by column, in strictly increasing step order.
// Steps are fixed-point micro-steps (whole step * 1'000'000 + millionths).
struct PointColumns {
  std::vector<uint64_t> steps;
  std::vector<int64_t> times_ms;
  std::vector<double> values;

  size_t size() const { return steps.size(); }
  bool empty() const { return steps.empty(); }
  void clear() {
    steps.clear();
    times_ms.clear();
    values.clear();
  }
  void reserve(size_t n) {
    steps.reserve(n);
    times_ms.reserve(n);
    values.reserve(n);
  }
  void push_back(uint64_t step, int64_t time_ms, double value) {
    steps.push_back(step);
    times_ms.push_back(time_ms);
    values.push_back(value);
  }
};

// What a reader can learn from a chunk without decoding its points.
struct ChunkSummary {
  uint32_t count = 0;
  uint64_t min_step = 0;  // first step
  uint64_t max_step = 0;  // last step
  int64_t min_time_ms = 0;
  int64_t max_time_ms = 0;

  // Value aggregates. They are stored only in format version 2 chunks of at
  // least kMinPointsForValueStats points (for smaller chunks the header
  // bytes would cost more than decoding the few points saves); when
  // has_value_stats is false the fields below are zero and a reader that
  // needs them decodes the chunk.
  bool has_value_stats = false;
  uint32_t nan_count = 0;      // NaNs of any payload and sign
  uint32_t pos_inf_count = 0;  // +Inf
  uint32_t neg_inf_count = 0;  // -Inf
  // Over the finite values only (count - nan - inf of them); all three are
  // 0.0 when there is none. min/max compare with `<`, so of -0.0 and 0.0
  // the one seen first wins. sum adds in point order, in float64.
  double min_value = 0.0;
  double max_value = 0.0;
  double sum = 0.0;
  // The values of the first and the last point, bit-exactly (NaN too).
  double first_value = 0.0;
  double last_value = 0.0;

  uint32_t finite_count() const {
    return count - nan_count - pos_inf_count - neg_inf_count;
  }
};

// Chunks of fewer points carry no value aggregates (see ChunkSummary).
inline constexpr uint32_t kMinPointsForValueStats = 8;

// How a chunk's value column is encoded (format version 2 picks one per
// chunk, by what the values are; see docs/FORMAT.md).
enum class ChunkValueCodec : uint8_t {
  kGorillaV1 = 0,   // format version 1: Gorilla XOR on 64 bits
  kXor64 = 1,       // Chimp-style XOR on the 64-bit patterns (fallback)
  kXor32 = 2,       // Chimp-style XOR on float32 patterns
  kFloat32Int = 3,  // float32 patterns as ordered integers, integer coded
  kInteger = 4,     // integer values, integer coded
  kDecimal = 5,     // value * 10^e integers, integer coded
  kAlpRd = 6,       // ALP_rd: dictionary-coded top bits + fixed-width rest
};

// Describes the encoding of a chunk, for tests, benchmarks and tools.
struct ChunkDescription {
  int version = 0;
  ChunkValueCodec value_codec = ChunkValueCodec::kGorillaV1;
  int decimal_exponent = 0;    // kDecimal only: values are ints / 10^e
  uint32_t exceptions = 0;     // values stored raw beside the codec
  bool regular_steps = false;  // all step deltas equal (no step column)
  // Format version 3: the series whose chunk holds this chunk's step and
  // time columns (see EncodeFollowerChunk); 0 for versions 1 and 2.
  uint32_t leader_series = 0;
};

// Reads the value codec from the header of `chunk` (cheap). Errors as
// ReadChunkSummary.
absl::StatusOr<ChunkDescription> DescribeChunk(std::string_view chunk);

// Appends the encoding of points [0, n) to *out. Preconditions: the three
// spans have the same length n >= 1, steps strictly increase. Times may go
// in any direction. Values are stored bit-exactly (NaN payloads, -0.0,
// denormals, +-Inf). n must not exceed 2^24 (1 << 24): decoders reject
// larger counts so that a corrupt header cannot make them allocate much.
// Writes format version 2. The byte layout is in
// docs/FORMAT.md.
void EncodeChunk(std::span<const uint64_t> steps,
                 std::span<const int64_t> times_ms,
                 std::span<const double> values, std::string* out);

// Format version 3, a "follower" chunk: the same as version 2 without the
// step and time columns, which are those of another chunk (the leader: a
// version 2 chunk of series `leader_series` that starts at the same step).
// Metrics logged together (one call, one step, one time) have identical
// step and time columns; storing them once per group is most of what their
// chunks cost besides the values. Preconditions: as EncodeChunk, plus
// leader_series != 0 and the leader chunk holding exactly these steps and
// times (the caller checks; the format stores only the reference and the
// header's ranges, which DecodeFollowerChunk compares).
void EncodeFollowerChunk(std::span<const uint64_t> steps,
                         std::span<const int64_t> times_ms,
                         std::span<const double> values,
                         uint32_t leader_series, std::string* out);

// Reads the summary of an encoded chunk of any supported format version
// (cheap: header only, the body is not touched; a follower chunk's header
// has its own count and step and time ranges).
// Returns DataLossError if `chunk` is truncated or not a chunk,
// UnimplementedError for an unknown format version.
absl::StatusOr<ChunkSummary> ReadChunkSummary(std::string_view chunk);

// Decodes every point of `chunk` and appends them to *out.
// Returns DataLossError on corrupt or truncated input (never crashes or
// reads out of bounds, whatever the bytes), UnimplementedError for an
// unknown format version, FailedPreconditionError for a follower chunk
// (version 3: use DecodeFollowerChunk). On error *out may hold a prefix of
// the points.
absl::Status DecodeChunk(std::string_view chunk, PointColumns* out);

// Decodes the follower chunk `chunk` (format version 3) with the leader
// chunk it names (DescribeChunk(chunk)->leader_series; the caller finds
// it), taking steps and times from the leader (whose values are not
// decoded) and values from the follower. Returns InvalidArgumentError if
// `chunk` is not a version 3 chunk; DataLossError if either is corrupt, if
// the leader is not a version 2 chunk, or if its count, step or time
// ranges differ from the follower's header; UnimplementedError for an
// unknown version. On error *out is unchanged.
absl::Status DecodeFollowerChunk(std::string_view chunk,
                                 std::string_view leader_chunk,
                                 PointColumns* out);

namespace internal {

// Format version 1, kept for reading old chunks; EncodeChunkV1 exists so
// that tests can produce such chunks. Same contracts as the functions above.
void EncodeChunkV1(std::span<const uint64_t> steps,
                   std::span<const int64_t> times_ms,
                   std::span<const double> values, std::string* out);
absl::StatusOr<ChunkSummary> ReadChunkSummaryV1(std::string_view chunk);
absl::Status DecodeChunkV1(std::string_view chunk, PointColumns* out);

// A follower chunk as written before the lane check (docs/FORMAT.md,
// version 3: the serial ColumnsCheck, flag bit 2 clear), for tests that
// such chunks still decode. Same contract as EncodeFollowerChunk.
void EncodeFollowerChunkSerialCheck(std::span<const uint64_t> steps,
                                    std::span<const int64_t> times_ms,
                                    std::span<const double> values,
                                    uint32_t leader_series, std::string* out);

}  // namespace internal

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_CHUNK_CODEC_H_
