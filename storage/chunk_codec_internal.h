// Pieces shared by the chunk format versions (chunk_codec.cc for version 2
// and the dispatch, chunk_codec_v1.cc for version 1): byte helpers, the
// common header prefix with its validation, and the decode scaffolding.
// Internal to the chunk codec library; not part of its API.
#ifndef STEPDB_STORAGE_CHUNK_CODEC_INTERNAL_H_
#define STEPDB_STORAGE_CHUNK_CODEC_INTERNAL_H_

#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "storage/bit_stream.h"
#include "storage/chunk_codec.h"

namespace stepdb::storage::internal {

inline constexpr uint8_t kVersion1 = 1;
inline constexpr uint8_t kVersion2 = 2;
// Version 2's layout without the step and time columns, which live in the
// chunk of another series (the leader; see EncodeFollowerChunk).
inline constexpr uint8_t kVersion3 = 3;

// Decoders refuse larger counts so that a corrupt header can never make
// them allocate much; chunks are meant to hold ~1k points.
inline constexpr uint64_t kMaxChunkPoints = uint64_t{1} << 24;

inline uint64_t ZigZag(uint64_t v) {
  return (v << 1) ^ static_cast<uint64_t>(static_cast<int64_t>(v) >> 63);
}
inline uint64_t UnZigZag(uint64_t z) { return (z >> 1) ^ (~(z & 1) + 1); }

inline int VarintLength(uint64_t v) {
  return v == 0 ? 1 : (std::bit_width(v) + 6) / 7;
}

inline void PutVarint(uint64_t v, std::string* out) {
  char buf[10];
  int n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, static_cast<size_t>(n));
}

// Parses a varint from the front of *in. False if truncated or longer than
// 64 bits.
bool GetVarint(std::string_view* in, uint64_t* v);

// Little-endian 8 bytes.
void PutFixed64(uint64_t v, std::string* out);
bool GetFixed64(std::string_view* in, uint64_t* v);

// DataLossError("corrupt chunk: <what>").
absl::Status Corrupt(absl::string_view what);

// OK for the supported versions (1, 2, 3), DataLoss for an empty chunk,
// Unimplemented for any other version byte.
absl::Status CheckVersion(std::string_view chunk);

// Appends the prefix every version starts with: the version byte and six
// varints (count, first step, step span, zigzag first time, first − min
// time, max − first time). Same preconditions as EncodeChunk.
void PutCommonHeader(uint8_t version, std::span<const uint64_t> steps,
                     std::span<const int64_t> times_ms, std::string* out);
// The same with the times' minimum and maximum known.
void PutCommonHeader(uint8_t version, std::span<const uint64_t> steps,
                     std::span<const int64_t> times_ms, int64_t min_time,
                     int64_t max_time, std::string* out);

// The common prefix, parsed and validated (count in 1..2^24, step and time
// ranges consistent). The version byte is not checked.
struct CommonHeader {
  ChunkSummary summary;  // count, steps and times only
  int64_t first_time_ms = 0;
  std::string_view rest;  // the bytes after the six varints
};
absl::Status ParseCommonHeader(std::string_view chunk, CommonHeader* h);

// Checks decoded times against the header's range: times[0] must be the
// first time, their min and max the header's (n >= 1).
absl::Status CheckTimes(const int64_t* times, size_t n, const CommonHeader& h);
// The same with their min and max known.
absl::Status CheckTimeRange(const int64_t* times, int64_t min_time,
                            int64_t max_time, const CommonHeader& h);

// The end of a body: fewer than 8 bits left, all zero.
absl::Status CheckPadding(BitReader* r);

// Resizes *out by n points, calls decode(steps, times, values) on the new
// tail and on error shrinks *out back (stronger than the DecodeChunk
// contract: on error *out is unchanged).
template <typename DecodeBody>
absl::Status DecodeAppending(size_t n, PointColumns* out, DecodeBody decode) {
  const size_t old_size = out->size();
  out->steps.resize(old_size + n);
  out->times_ms.resize(old_size + n);
  out->values.resize(old_size + n);
  absl::Status s =
      decode(out->steps.data() + old_size, out->times_ms.data() + old_size,
             out->values.data() + old_size);
  if (!s.ok()) {
    out->steps.resize(old_size);
    out->times_ms.resize(old_size);
    out->values.resize(old_size);
  }
  return s;
}

}  // namespace stepdb::storage::internal

#endif  // STEPDB_STORAGE_CHUNK_CODEC_INTERNAL_H_
