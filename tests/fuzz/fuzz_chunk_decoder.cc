// libFuzzer target for the chunk decoder (storage/chunk_codec.h).
//
// Properties checked on every input, whatever the bytes:
//   - ReadChunkSummary, DescribeChunk and DecodeChunk never crash, hang or
//     read out of bounds (ASan/UBSan), and fail only with DATA_LOSS or
//     UNIMPLEMENTED;
//   - if DecodeChunk succeeds, it produced at least one point with the three
//     columns of equal length, and the header summary agrees with the points
//     (count, first/last step);
//   - round trip: when the decoded steps strictly increase (EncodeChunk's
//     precondition), re-encoding the decoded points with EncodeChunk and
//     decoding again gives the same points bit-exactly, and the summary of
//     the re-encoded chunk describes them.
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "storage/chunk_codec.h"

namespace {

using stepdb::storage::ChunkSummary;
using stepdb::storage::PointColumns;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "fuzz_chunk_decoder: property violated: %s\n", what);
  std::abort();
}

void Check(bool ok, const char* what) {
  if (!ok) Fail(what);
}

bool IsDecodeError(const absl::Status& s) {
  return s.code() == absl::StatusCode::kDataLoss ||
         s.code() == absl::StatusCode::kUnimplemented;
}

bool SameBits(double a, double b) {
  return std::bit_cast<uint64_t>(a) == std::bit_cast<uint64_t>(b);
}

void CheckSameColumns(const PointColumns& a, const PointColumns& b) {
  Check(a.size() == b.size(), "round trip: point count differs");
  Check(a.times_ms.size() == b.times_ms.size() &&
            a.values.size() == b.values.size(),
        "round trip: column lengths differ");
  for (size_t i = 0; i < a.size(); ++i) {
    Check(a.steps[i] == b.steps[i], "round trip: step differs");
    Check(a.times_ms[i] == b.times_ms[i], "round trip: time differs");
    Check(SameBits(a.values[i], b.values[i]), "round trip: value bits differ");
  }
}

// The summary EncodeChunk writes must describe the encoded points.
void CheckSummaryOf(const ChunkSummary& s, const PointColumns& p) {
  Check(s.count == p.size(), "summary: count");
  Check(s.min_step == p.steps.front(), "summary: min_step");
  Check(s.max_step == p.steps.back(), "summary: max_step");
  Check(SameBits(s.first_value, p.values.front()) || !s.has_value_stats,
        "summary: first_value");
  Check(SameBits(s.last_value, p.values.back()) || !s.has_value_stats,
        "summary: last_value");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view chunk(reinterpret_cast<const char*>(data), size);

  auto summary = stepdb::storage::ReadChunkSummary(chunk);
  if (!summary.ok()) Check(IsDecodeError(summary.status()), "summary: code");
  auto description = stepdb::storage::DescribeChunk(chunk);
  if (!description.ok()) {
    Check(IsDecodeError(description.status()), "describe: code");
  }

  PointColumns points;
  const absl::Status decoded = stepdb::storage::DecodeChunk(chunk, &points);
  if (!decoded.ok()) {
    Check(IsDecodeError(decoded), "decode: error code");
    return 0;
  }
  Check(!points.empty(), "decode: OK with no points");
  Check(points.times_ms.size() == points.size() &&
            points.values.size() == points.size(),
        "decode: column lengths differ");
  Check(summary.ok(), "decode OK but summary failed");
  Check(summary->count == points.size(), "decode: count != header count");
  Check(summary->min_step == points.steps.front(), "decode: first step");
  Check(summary->max_step == points.steps.back(), "decode: last step");

  for (size_t i = 1; i < points.size(); ++i) {
    if (points.steps[i] <= points.steps[i - 1]) return 0;  // not encodable
  }
  std::string reencoded;
  stepdb::storage::EncodeChunk(points.steps, points.times_ms, points.values,
                               &reencoded);
  PointColumns again;
  const absl::Status redecoded =
      stepdb::storage::DecodeChunk(reencoded, &again);
  Check(redecoded.ok(), "round trip: re-encoded chunk does not decode");
  CheckSameColumns(points, again);
  auto resummary = stepdb::storage::ReadChunkSummary(reencoded);
  Check(resummary.ok(), "round trip: summary of re-encoded chunk");
  CheckSummaryOf(*resummary, points);
  return 0;
}
