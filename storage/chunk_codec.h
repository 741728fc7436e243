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
};

// Appends the encoding of points [0, n) to *out. Preconditions: the three
// spans have the same length n >= 1, steps strictly increase. Times may go
// in any direction. Values are stored bit-exactly (NaN payloads, -0.0,
// denormals, +-Inf). n must not exceed 2^24 (1 << 24): decoders reject
// larger counts so that a corrupt header cannot make them allocate much.
// The byte layout (format version 1) is in docs/FORMAT.md.
void EncodeChunk(std::span<const uint64_t> steps,
                 std::span<const int64_t> times_ms,
                 std::span<const double> values, std::string* out);

// Reads the summary of an encoded chunk (cheap: header only).
// Returns DataLossError if `chunk` is truncated or not a chunk,
// UnimplementedError for an unknown format version.
absl::StatusOr<ChunkSummary> ReadChunkSummary(std::string_view chunk);

// Decodes every point of `chunk` and appends them to *out.
// Returns DataLossError on corrupt or truncated input (never crashes or
// reads out of bounds, whatever the bytes), UnimplementedError for an
// unknown format version. On error *out may hold a prefix of the points.
absl::Status DecodeChunk(std::string_view chunk, PointColumns* out);

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_CHUNK_CODEC_H_
