// Chunk format version 1, kept so that chunks written by older releases stay
// readable (and, for tests, writable). The byte layout is specified in
// docs/FORMAT.md ("Chunk format", version 1); keep the two in sync.
//
// In short: a byte-aligned header carrying everything ReadChunkSummary()
// needs, then one bitstream holding three columns in turn: step
// delta-of-deltas, time delta-of-deltas (both with a bucketed prefix code)
// and Gorilla-XOR values.
#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "storage/bit_stream.h"
#include "storage/chunk_codec.h"
#include "storage/chunk_codec_internal.h"

namespace stepdb::storage {
namespace {

using internal::CommonHeader;
using internal::Corrupt;
using internal::kMaxChunkPoints;
using internal::UnZigZag;
using internal::ZigZag;

// Every point after the first costs at least one bit in each of the three
// columns; the first value is stored as 64 raw bits.
constexpr uint64_t kMinBitsPerPoint = 3;
constexpr uint64_t kFirstValueBits = 64;

// Steps are micro-steps and consecutive whole steps are the common case, so
// the delta before the first one is taken to be one whole step: a chunk of
// consecutive steps then spends exactly one bit per step.
constexpr uint64_t kInitialStepDelta = 1'000'000;
constexpr uint64_t kInitialTimeDelta = 0;

// A delta-of-delta is zigzag-encoded and written as a prefix selecting a
// bucket followed by that bucket's payload width of bits. Bucket k < 5 has
// the prefix "1"*k "0" (k + 1 bits), bucket 5 the prefix "11111" (5 bits).
// Bucket 0 has no payload: it is dod == 0 in one bit. The last bucket is
// 64 bits wide, so any 64-bit delta is representable.
constexpr int kNumBuckets = 6;
constexpr int kMaxPrefixBits = kNumBuckets - 1;
using BucketWidths = std::array<int, kNumBuckets>;

// Step dods are 0 unless the logging interval changes; a change of one
// whole step (1e6 micro-steps) fits the 24-bit bucket.
constexpr BucketWidths kStepBuckets = {0, 8, 16, 24, 40, 64};
// Time dods of ~500 ms cadence with +-20 ms jitter lie in [-80, 80]: most
// fit 6 bits (|dod| <= 32), nearly all the rest 7 (<= 64); 12 bits covers
// +-2 s stalls, 32 bits gaps of +-24 days (a resumed run), 64 anything.
// (Measured on the codec_bench telemetry: {6, 7, ...} beats {6, 8, ...}
// and {5, 7, ...} by ~3%.)
constexpr BucketWidths kTimeBuckets = {0, 6, 7, 12, 32, 64};

// Gorilla value control codes: "0" same value, "10" XOR fits the previous
// window, "11" new window: 6 bits leading zeros (0..63, so no clamping), 6
// bits meaningful-bit count (1..64, 64 written as 0), then the bits.
constexpr int kWindowHeaderBits = 2 + 6 + 6;

void PutDod(uint64_t dod, const BucketWidths& widths, BitWriter* w) {
  const uint64_t zz = ZigZag(dod);
  if (zz == 0) {
    w->Write(0, 1);
    return;
  }
  for (int k = 1; k < kNumBuckets - 1; ++k) {
    if ((zz >> widths[k]) == 0) {
      // k ones, a zero, then the payload, in one write (<= 46 bits).
      const uint64_t prefix = ((uint64_t{1} << k) - 1) << 1;
      w->Write((prefix << widths[k]) | zz, k + 1 + widths[k]);
      return;
    }
  }
  w->Write((uint64_t{1} << kMaxPrefixBits) - 1, kMaxPrefixBits);
  w->Write(zz, widths[kNumBuckets - 1]);
}

uint64_t GetDod(const BucketWidths& widths, BitReader* r) {
  // The prefix is a run of up to 5 ones; peeking 5 bits and counting the
  // leading ones decodes it without a loop.
  const uint64_t peek = r->Peek(kMaxPrefixBits);
  const int k = std::countl_one(peek << (64 - kMaxPrefixBits));
  r->Skip(k < kMaxPrefixBits ? k + 1 : kMaxPrefixBits);
  return UnZigZag(r->Read(widths[k]));
}

void PutValues(std::span<const double> values, BitWriter* w) {
  uint64_t prev = std::bit_cast<uint64_t>(values[0]);
  w->Write(prev, 64);
  // The window starts as all 64 bits so "10" is always decodable.
  int prev_lead = 0;
  int prev_trail = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    const uint64_t cur = std::bit_cast<uint64_t>(values[i]);
    const uint64_t x = cur ^ prev;
    prev = cur;
    if (x == 0) {
      w->Write(0, 1);
      continue;
    }
    const int lead = std::countl_zero(x);
    const int trail = std::countr_zero(x);
    const int meaningful = 64 - lead - trail;
    const int prev_meaningful = 64 - prev_lead - prev_trail;
    // Reuse the window when it fits and is no more expensive than sending a
    // new one; unlike Gorilla's "reuse whenever it fits", this lets the
    // window shrink again after one outlier widened it.
    if (lead >= prev_lead && trail >= prev_trail &&
        prev_meaningful <= meaningful + kWindowHeaderBits - 2) {
      w->Write(0b10, 2);
      w->Write(x >> prev_trail, prev_meaningful);
    } else {
      const uint64_t header = (uint64_t{0b11} << 12) |
                              (static_cast<uint64_t>(lead) << 6) |
                              static_cast<uint64_t>(meaningful & 63);
      w->Write(header, kWindowHeaderBits);
      w->Write(x >> trail, meaningful);
      prev_lead = lead;
      prev_trail = trail;
    }
  }
}

absl::Status ParseHeader(std::string_view chunk, CommonHeader* h) {
  if (absl::Status s = internal::CheckVersion(chunk); !s.ok()) return s;
  if (static_cast<uint8_t>(chunk[0]) != internal::kVersion1) {
    return absl::UnimplementedError(
        absl::StrCat("not a version 1 chunk: version ",
                     static_cast<int>(static_cast<uint8_t>(chunk[0]))));
  }
  if (absl::Status s = internal::ParseCommonHeader(chunk, h); !s.ok()) {
    return s;
  }
  // Compare before allocating anything proportional to count.
  const uint64_t count = h->summary.count;
  const uint64_t body_bits = static_cast<uint64_t>(h->rest.size()) * 8;
  if (body_bits < kFirstValueBits ||
      (count - 1) > (body_bits - kFirstValueBits) / kMinBitsPerPoint) {
    return Corrupt("point count exceeds chunk size");
  }
  return absl::OkStatus();
}

absl::Status DecodeBody(const CommonHeader& h, uint64_t* steps, int64_t* times,
                        double* values) {
  const size_t n = h.summary.count;
  BitReader r(h.rest);

  uint64_t step = h.summary.min_step;
  uint64_t delta = kInitialStepDelta;
  steps[0] = step;
  for (size_t i = 1; i < n;) {
    // A run of zero bits is a run of zero dods (regular steps, the common
    // case): taken up to 56 at a time rather than a GetDod each.
    const int want = static_cast<int>(std::min<size_t>(n - i, 56));
    const uint64_t peek = r.Peek(want);
    const int zeros =
        peek == 0 ? want : std::countl_zero(peek) - (64 - want);
    r.Skip(zeros);
    // The one dod after the run, if the run ended before `want`.
    const size_t end = i + static_cast<size_t>(zeros) + (zeros < want ? 1 : 0);
    for (; i < end; ++i) {
      if (i == end - 1 && zeros < want) delta += GetDod(kStepBuckets, &r);
      const uint64_t next = step + delta;
      // Catches a zero delta and 64-bit overflow alike.
      if (next <= step) return Corrupt("steps not increasing");
      step = next;
      steps[i] = step;
    }
  }
  if (step != h.summary.max_step) return Corrupt("last step mismatch");

  // Times: arithmetic mod 2^64 mirrors the encoder's, so any int64 sequence
  // round-trips.
  uint64_t time = static_cast<uint64_t>(h.first_time_ms);
  delta = kInitialTimeDelta;
  times[0] = h.first_time_ms;
  for (size_t i = 1; i < n; ++i) {
    delta += GetDod(kTimeBuckets, &r);
    time += delta;
    times[i] = static_cast<int64_t>(time);
  }
  if (absl::Status s = internal::CheckTimes(times, n, h); !s.ok()) return s;

  uint64_t value = r.Read(64);
  values[0] = std::bit_cast<double>(value);
  int trail = 0;
  int meaningful = 64;
  for (size_t i = 1; i < n; ++i) {
    const uint64_t control = r.Peek(2);
    if (control < 0b10) {
      r.Skip(1);
    } else if (control == 0b10) {
      r.Skip(2);
      value ^= r.Read(meaningful) << trail;
    } else {
      const uint64_t header = r.Read(kWindowHeaderBits);
      const int lead = static_cast<int>((header >> 6) & 63);
      meaningful = static_cast<int>(header & 63);
      if (meaningful == 0) meaningful = 64;
      if (lead + meaningful > 64) return Corrupt("bad XOR window");
      trail = 64 - lead - meaningful;
      value ^= r.Read(meaningful) << trail;
    }
    values[i] = std::bit_cast<double>(value);
  }

  return internal::CheckPadding(&r);
}

}  // namespace

namespace internal {

void EncodeChunkV1(std::span<const uint64_t> steps,
                   std::span<const int64_t> times_ms,
                   std::span<const double> values, std::string* out) {
  const size_t n = steps.size();
  assert(n >= 1 && n <= kMaxChunkPoints);
  assert(times_ms.size() == n && values.size() == n);

  // Headroom for typical telemetry (~2-6 bytes/point); grow geometrically
  // so that callers appending many chunks to one string stay linear.
  const size_t want = out->size() + 64 + 6 * n;
  if (out->capacity() < want) out->reserve(std::max(want, 2 * out->size()));

  internal::PutCommonHeader(internal::kVersion1, steps, times_ms, out);

  BitWriter w(out);
  uint64_t prev_delta = kInitialStepDelta;
  for (size_t i = 1; i < n;) {
    // A run of repeated deltas (regular steps) is a run of zero bits,
    // written up to 64 at a time.
    size_t same = 0;
    while (i + same < n && same < 64 &&
           steps[i + same] - steps[i + same - 1] == prev_delta) {
      ++same;
    }
    if (same > 0) {
      w.Write(0, static_cast<int>(same));
      i += same;
      continue;
    }
    assert(steps[i] > steps[i - 1]);
    const uint64_t delta = steps[i] - steps[i - 1];
    PutDod(delta - prev_delta, kStepBuckets, &w);
    prev_delta = delta;
    ++i;
  }
  prev_delta = kInitialTimeDelta;
  for (size_t i = 1; i < n; ++i) {
    const uint64_t delta = static_cast<uint64_t>(times_ms[i]) -
                           static_cast<uint64_t>(times_ms[i - 1]);
    PutDod(delta - prev_delta, kTimeBuckets, &w);
    prev_delta = delta;
  }
  PutValues(values, &w);
  w.Finish();
}

absl::StatusOr<ChunkSummary> ReadChunkSummaryV1(std::string_view chunk) {
  CommonHeader h;
  if (absl::Status s = ParseHeader(chunk, &h); !s.ok()) return s;
  return h.summary;
}

absl::Status DecodeChunkV1(std::string_view chunk, PointColumns* out) {
  CommonHeader h;
  if (absl::Status s = ParseHeader(chunk, &h); !s.ok()) return s;
  return DecodeAppending(h.summary.count, out,
                         [&h](uint64_t* steps, int64_t* times, double* values) {
                           return DecodeBody(h, steps, times, values);
                         });
}

}  // namespace internal
}  // namespace stepdb::storage
