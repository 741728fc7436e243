#include "storage/chunk_codec_internal.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storage/codec_kernels.h"

namespace stepdb::storage::internal {

bool GetVarint(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int i = 0; i < 10; ++i) {
    if (i >= static_cast<int>(in->size())) return false;
    const uint8_t byte = static_cast<uint8_t>((*in)[static_cast<size_t>(i)]);
    if (i == 9 && byte > 1) return false;  // would overflow 64 bits
    result |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) {
      in->remove_prefix(static_cast<size_t>(i) + 1);
      *v = result;
      return true;
    }
  }
  return false;
}

void PutFixed64(uint64_t v, std::string* out) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(v >> (8 * i));
  out->append(buf, sizeof(buf));
}

bool GetFixed64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  uint64_t result = 0;
  for (int i = 0; i < 8; ++i) {
    result |= static_cast<uint64_t>(static_cast<uint8_t>((*in)[i])) << (8 * i);
  }
  in->remove_prefix(8);
  *v = result;
  return true;
}

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("corrupt chunk: ", what));
}

absl::Status CheckVersion(std::string_view chunk) {
  if (chunk.empty()) return Corrupt("empty");
  const uint8_t version = static_cast<uint8_t>(chunk[0]);
  if (version != kVersion1 && version != kVersion2 && version != kVersion3) {
    return absl::UnimplementedError(
        absl::StrCat("unknown chunk format version ", version));
  }
  return absl::OkStatus();
}

void PutCommonHeader(uint8_t version, std::span<const uint64_t> steps,
                     std::span<const int64_t> times_ms, std::string* out) {
  int64_t min_time, max_time;
  ActiveCodecKernels().min_max(times_ms.data(), times_ms.size(), &min_time,
                               &max_time);
  PutCommonHeader(version, steps, times_ms, min_time, max_time, out);
}

void PutCommonHeader(uint8_t version, std::span<const uint64_t> steps,
                     std::span<const int64_t> times_ms, int64_t min_time,
                     int64_t max_time, std::string* out) {
  const size_t n = steps.size();
  const uint64_t first_time = static_cast<uint64_t>(times_ms[0]);
  out->push_back(static_cast<char>(version));
  PutVarint(n, out);
  PutVarint(steps[0], out);
  PutVarint(steps[n - 1] - steps[0], out);
  PutVarint(ZigZag(first_time), out);
  PutVarint(first_time - static_cast<uint64_t>(min_time), out);
  PutVarint(static_cast<uint64_t>(max_time) - first_time, out);
}

absl::Status ParseCommonHeader(std::string_view chunk, CommonHeader* h) {
  std::string_view in = chunk.substr(1);
  uint64_t count, first_step, step_span, first_time_zz, below_first,
      above_first;
  if (!GetVarint(&in, &count) || !GetVarint(&in, &first_step) ||
      !GetVarint(&in, &step_span) || !GetVarint(&in, &first_time_zz) ||
      !GetVarint(&in, &below_first) || !GetVarint(&in, &above_first)) {
    return Corrupt("truncated header");
  }
  if (count == 0 || count > kMaxChunkPoints) {
    return Corrupt(absl::StrCat("bad point count ", count));
  }
  // Steps strictly increase, so the span is at least count - 1, and a
  // single point spans nothing.
  const uint64_t last_step = first_step + step_span;
  if (last_step < first_step || step_span < count - 1 ||
      (count == 1 && step_span != 0)) {
    return Corrupt("bad step range");
  }
  const int64_t first_time = static_cast<int64_t>(UnZigZag(first_time_zz));
  const int64_t min_time =
      static_cast<int64_t>(static_cast<uint64_t>(first_time) - below_first);
  const int64_t max_time =
      static_cast<int64_t>(static_cast<uint64_t>(first_time) + above_first);
  // A wrapped subtraction/addition shows up as min > first or max < first.
  if (min_time > first_time || max_time < first_time ||
      (count == 1 && (below_first != 0 || above_first != 0))) {
    return Corrupt("bad time range");
  }
  h->summary = ChunkSummary();
  h->summary.count = static_cast<uint32_t>(count);
  h->summary.min_step = first_step;
  h->summary.max_step = last_step;
  h->summary.min_time_ms = min_time;
  h->summary.max_time_ms = max_time;
  h->first_time_ms = first_time;
  h->rest = in;
  return absl::OkStatus();
}

absl::Status CheckTimes(const int64_t* times, size_t n, const CommonHeader& h) {
  int64_t min_time, max_time;
  ActiveCodecKernels().min_max(times, n, &min_time, &max_time);
  return CheckTimeRange(times, min_time, max_time, h);
}

absl::Status CheckTimeRange(const int64_t* times, int64_t min_time,
                            int64_t max_time, const CommonHeader& h) {
  if (times[0] != h.first_time_ms) return Corrupt("first time mismatch");
  if (min_time != h.summary.min_time_ms || max_time != h.summary.max_time_ms) {
    return Corrupt("time range mismatch");
  }
  return absl::OkStatus();
}

absl::Status CheckPadding(BitReader* r) {
  if (!r->ok()) return Corrupt("truncated bitstream");
  // The encoder pads the last byte with zero bits and writes nothing after.
  const size_t rest = r->bits_remaining();
  if (rest >= 8) return Corrupt("trailing bytes");
  if (r->Read(static_cast<int>(rest)) != 0) return Corrupt("nonzero padding");
  return absl::OkStatus();
}

}  // namespace stepdb::storage::internal
