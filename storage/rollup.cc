#include "storage/rollup.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "storage/chunk_codec_internal.h"
#include "storage/engine.h"

namespace stepdb::storage {
namespace {

using internal::PutFixed64;
using internal::PutVarint;
using internal::UnZigZag;
using internal::ZigZag;

constexpr uint8_t kRollupVersion = 1;

// Record flags.
constexpr uint8_t kWholeSteps = 1;  // step gaps and spans in whole steps
// The chunk's raw points were deleted by retention; only this record is
// left (set by MarkRollupRawExpired, never by EncodeRollup).
constexpr uint8_t kRawExpired = 1 << 1;

// Piece flags.
constexpr uint8_t kNonFinite = 1 << 0;  // NaN/+Inf/-Inf counts follow
constexpr uint8_t kHasFinite = 1 << 1;  // min, max, sum follow
constexpr uint8_t kFirst32 = 1 << 2;    // first as float32, else float64
constexpr uint8_t kLast32 = 1 << 3;
constexpr uint8_t kMin32 = 1 << 4;
constexpr uint8_t kMax32 = 1 << 5;
constexpr uint8_t kKnownFlags = (1 << 6) - 1;

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("corrupt rollup record: ", what));
}

// Whether `v` survives a round trip through float32 bit for bit (NaN
// payloads included): training values usually do, and then cost 4 bytes.
bool IsFloat32(double v) {
  return std::bit_cast<uint64_t>(static_cast<double>(static_cast<float>(v))) ==
         std::bit_cast<uint64_t>(v);
}

void PutValue(double v, bool narrow, std::string* out) {
  if (narrow) {
    const uint32_t bits = std::bit_cast<uint32_t>(static_cast<float>(v));
    char buf[4];
    for (int i = 0; i < 4; ++i) buf[i] = static_cast<char>(bits >> (8 * i));
    out->append(buf, 4);
  } else {
    PutFixed64(std::bit_cast<uint64_t>(v), out);
  }
}

// Reads a record's fields front to back. Reads run over every record of a
// chart or an aggregate (~400,000 pieces for 512 series x 100,000 steps),
// so a read past the end (or a malformed varint) does not branch out: it
// sets a sticky failure and yields 0, and the decoder checks once per
// piece instead of once per field.
class FieldReader {
 public:
  explicit FieldReader(std::string_view in)
      : p_(reinterpret_cast<const uint8_t*>(in.data())), end_(p_ + in.size()) {}

  bool failed() const { return failed_; }
  bool at_end() const { return p_ == end_; }

  uint8_t Byte() {
    if (p_ == end_) return Fail();
    return *p_++;
  }
  uint64_t Varint() {
    // Up to 4 bytes inline (every field of a usual piece), longer ones by
    // the general decoder.
    const size_t avail = static_cast<size_t>(end_ - p_);
    uint64_t result = 0;
    for (size_t i = 0; i < 4 && i < avail; ++i) {
      result |= static_cast<uint64_t>(p_[i] & 0x7f) << (7 * i);
      if (p_[i] < 0x80) {
        p_ += i + 1;
        return result;
      }
    }
    std::string_view in(reinterpret_cast<const char*>(p_),
                        static_cast<size_t>(end_ - p_));
    uint64_t v;
    if (!internal::GetVarint(&in, &v)) return Fail();
    p_ = reinterpret_cast<const uint8_t*>(in.data());
    return v;
  }
  // A float32 (narrow) or float64 value, stored little-endian.
  double Value(bool narrow) {
    if (narrow) {
      if (end_ - p_ < 4) return Fail();
      uint32_t bits;
      std::memcpy(&bits, p_, 4);
      p_ += 4;
      return static_cast<double>(std::bit_cast<float>(bits));
    }
    if (end_ - p_ < 8) return Fail();
    uint64_t bits;
    std::memcpy(&bits, p_, 8);
    p_ += 8;
    return std::bit_cast<double>(bits);
  }

 private:
  uint8_t Fail() {
    failed_ = true;
    p_ = end_;
    return 0;
  }

  const uint8_t* p_;
  const uint8_t* const end_;
  bool failed_ = false;
};
// Values are read with memcpy: the stored order is little-endian.
static_assert(std::endian::native == std::endian::little);

// Number of grid cells of `width` that [first, last] touches.
uint64_t Cells(uint64_t first, uint64_t last, uint64_t width) {
  return last / width - first / width + 1;
}

}  // namespace

void BuildRollupPieces(std::span<const uint64_t> steps,
                       std::span<const int64_t> times_ms,
                       std::span<const double> values, uint64_t width,
                       std::vector<RollupPiece>* pieces) {
  if (steps.empty()) return;
  if (width == 0) width = 1;
  // Widen until the cells a chunk touches fit (an upper bound on pieces).
  while (Cells(steps.front(), steps.back(), width) > kMaxRollupPieces &&
         width <= std::numeric_limits<uint64_t>::max() / 2) {
    width *= 2;
  }
  size_t i = 0;
  while (i < steps.size()) {
    const uint64_t cell = steps[i] / width;
    RollupPiece& p = pieces->emplace_back();
    p.first_step = steps[i];
    p.first = values[i];
    p.min_time_ms = p.max_time_ms = times_ms[i];
    double min = std::numeric_limits<double>::infinity();
    double max = -min, sum = 0.0;
    for (; i < steps.size() && steps[i] / width == cell; ++i) {
      const double v = values[i];
      ++p.count;
      p.last = v;
      p.last_step = steps[i];
      p.min_time_ms = std::min(p.min_time_ms, times_ms[i]);
      p.max_time_ms = std::max(p.max_time_ms, times_ms[i]);
      if (std::isfinite(v)) {
        if (v < min) min = v;
        if (v > max) max = v;
        sum += v;
      } else if (std::isnan(v)) {
        ++p.nan_count;
      } else if (v > 0) {
        ++p.pos_inf_count;
      } else {
        ++p.neg_inf_count;
      }
    }
    if (p.finite_count() > 0) {
      p.min = min;
      p.max = max;
      p.sum = sum;
    }
  }
}

void EncodeRollup(std::span<const RollupPiece> pieces, uint64_t base_step,
                  std::string* out) {
  // Whole steps (the common case) make the step gaps one-byte varints.
  bool whole = true;
  uint64_t prev = base_step;
  for (const RollupPiece& p : pieces) {
    if ((p.first_step - prev) % kMicrosPerStep != 0 ||
        (p.last_step - p.first_step) % kMicrosPerStep != 0) {
      whole = false;
      break;
    }
    prev = p.last_step;
  }
  const uint64_t unit = whole ? kMicrosPerStep : 1;
  const int64_t base_time = pieces.empty() ? 0 : pieces[0].min_time_ms;
  out->push_back(static_cast<char>(kRollupVersion));
  out->push_back(static_cast<char>(whole ? kWholeSteps : 0));
  PutVarint(ZigZag(static_cast<uint64_t>(base_time)), out);
  PutVarint(pieces.size(), out);
  prev = base_step;
  for (const RollupPiece& p : pieces) {
    const bool finite = p.finite_count() > 0;
    const bool non_finite = p.finite_count() != p.count;
    uint8_t flags = (non_finite ? kNonFinite : 0) | (finite ? kHasFinite : 0);
    if (IsFloat32(p.first)) flags |= kFirst32;
    if (IsFloat32(p.last)) flags |= kLast32;
    if (finite && IsFloat32(p.min)) flags |= kMin32;
    if (finite && IsFloat32(p.max)) flags |= kMax32;
    out->push_back(static_cast<char>(flags));
    PutVarint(p.count, out);
    if (non_finite) {
      PutVarint(p.nan_count, out);
      PutVarint(p.pos_inf_count, out);
      PutVarint(p.neg_inf_count, out);
    }
    PutVarint((p.first_step - prev) / unit, out);
    PutVarint((p.last_step - p.first_step) / unit, out);
    PutVarint(ZigZag(static_cast<uint64_t>(p.min_time_ms) -
                     static_cast<uint64_t>(base_time)),
              out);
    PutVarint(static_cast<uint64_t>(p.max_time_ms) -
                  static_cast<uint64_t>(p.min_time_ms),
              out);
    PutValue(p.first, (flags & kFirst32) != 0, out);
    PutValue(p.last, (flags & kLast32) != 0, out);
    if (finite) {
      PutValue(p.min, (flags & kMin32) != 0, out);
      PutValue(p.max, (flags & kMax32) != 0, out);
      PutFixed64(std::bit_cast<uint64_t>(p.sum), out);
    }
    prev = p.last_step;
  }
}

namespace {

// DecodeRollup, leaving *pieces unspecified on error. Every field of every
// piece is assigned, so a vector reused from the previous record (a scan's
// usual case: the same piece count) is resized without value-initializing
// its elements again.
absl::Status DecodePieces(std::string_view in, uint64_t base_step,
                          std::vector<RollupPiece>* pieces) {
  if (in.size() < 2) return Corrupt("truncated header");
  if (static_cast<uint8_t>(in[0]) != kRollupVersion) {
    return absl::UnimplementedError(absl::StrCat(
        "rollup record version ", static_cast<int>(static_cast<uint8_t>(in[0]))));
  }
  const uint8_t record_flags = static_cast<uint8_t>(in[1]);
  if ((record_flags & ~(kWholeSteps | kRawExpired)) != 0) {
    return Corrupt("unknown flags");
  }
  const uint64_t unit = (record_flags & kWholeSteps) ? kMicrosPerStep : 1;
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t max_units = max / unit;  // once, not per piece
  FieldReader r(in.substr(2));
  const uint64_t base_time = UnZigZag(r.Varint());
  const uint64_t n = r.Varint();
  if (r.failed()) return Corrupt("truncated header");
  if (n == 0 || n > kMaxRollupPieces) return Corrupt("bad piece count");
  pieces->resize(n);
  uint64_t prev = base_step;
  for (uint64_t k = 0; k < n; ++k) {
    RollupPiece& p = (*pieces)[k];
    const uint8_t flags = r.Byte();
    const uint64_t count = r.Varint();
    uint64_t nan = 0, pos = 0, neg = 0;
    if (flags & kNonFinite) {
      nan = r.Varint();
      pos = r.Varint();
      neg = r.Varint();
    }
    const uint64_t gap = r.Varint();
    const uint64_t span = r.Varint();
    const uint64_t time_zz = r.Varint();
    const uint64_t time_span = r.Varint();
    p.first = r.Value((flags & kFirst32) != 0);
    p.last = r.Value((flags & kLast32) != 0);
    if (flags & kHasFinite) {
      p.min = r.Value((flags & kMin32) != 0);
      p.max = r.Value((flags & kMax32) != 0);
      p.sum = r.Value(/*narrow=*/false);
    } else {
      p.min = p.max = p.sum = 0.0;
    }
    if (r.failed()) return Corrupt("truncated piece");
    if ((flags & ~kKnownFlags) != 0) return Corrupt("unknown piece flags");
    const uint64_t non_finite = nan + pos + neg;
    if (count == 0 || count > std::numeric_limits<uint32_t>::max() ||
        nan > count || pos > count || neg > count || non_finite > count ||
        ((flags & kHasFinite) != 0) != (non_finite < count) ||
        ((flags & kNonFinite) != 0) != (non_finite > 0)) {
      return Corrupt("bad counts");
    }
    // Steps strictly increase from piece to piece, without wrapping.
    if ((k > 0 && gap == 0) || gap > max_units || span > max_units ||
        gap * unit > max - prev || span * unit > max - prev - gap * unit) {
      return Corrupt("bad steps");
    }
    p.first_step = prev + gap * unit;
    p.last_step = p.first_step + span * unit;
    if ((count == 1) != (span == 0)) return Corrupt("bad steps");
    p.min_time_ms = static_cast<int64_t>(base_time + UnZigZag(time_zz));
    p.max_time_ms = static_cast<int64_t>(static_cast<uint64_t>(p.min_time_ms) +
                                         time_span);
    if (p.max_time_ms < p.min_time_ms) return Corrupt("bad times");
    p.count = static_cast<uint32_t>(count);
    p.nan_count = static_cast<uint32_t>(nan);
    p.pos_inf_count = static_cast<uint32_t>(pos);
    p.neg_inf_count = static_cast<uint32_t>(neg);
    prev = p.last_step;
  }
  if (!r.at_end()) return Corrupt("trailing bytes");
  return absl::OkStatus();
}

}  // namespace

absl::Status DecodeRollup(std::string_view in, uint64_t base_step,
                          std::vector<RollupPiece>* pieces) {
  absl::Status status = DecodePieces(in, base_step, pieces);
  if (!status.ok()) pieces->clear();
  return status;
}

bool RollupRawExpired(std::string_view record) {
  return record.size() >= 2 &&
         (static_cast<uint8_t>(record[1]) & kRawExpired) != 0;
}

absl::Status MarkRollupRawExpired(std::string* record) {
  if (record->size() < 2) return Corrupt("truncated");
  if (static_cast<uint8_t>((*record)[0]) != kRollupVersion) {
    return absl::UnimplementedError(absl::StrCat(
        "rollup record version ",
        static_cast<int>(static_cast<uint8_t>((*record)[0]))));
  }
  (*record)[1] = static_cast<char>(static_cast<uint8_t>((*record)[1]) | kRawExpired);
  return absl::OkStatus();
}

}  // namespace stepdb::storage
