// Chunk format version 2 and the version dispatch. The byte layout is
// specified in docs/FORMAT.md ("Chunk format"); keep the two in sync.
// Version 1 lives in chunk_codec_v1.cc.
//
// In short: a byte-aligned header carrying everything ReadChunkSummary()
// needs (ranges and, for chunks of 8+ points, value aggregates), the value
// codec byte and raw exception values, then one bitstream holding the step
// column (absent when steps are regular), the time column and the value
// column. Steps and times use the integer column code; values use one of
// five codecs picked per chunk by what the values are.
#include "storage/chunk_codec.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "storage/bit_stream.h"

namespace stepdb::storage {
namespace {

constexpr uint8_t kVersion1 = 1;
constexpr uint8_t kVersion2 = 2;

// Decoders refuse larger counts so that a corrupt header can never make
// them allocate much; chunks are meant to hold ~1k points.
constexpr uint64_t kMaxChunkPoints = uint64_t{1} << 24;

// Every code of the integer column code covers at most kMaxRun points and
// costs at least 1 bit (a run of 255 costs 16), and a chunk of n >= 2
// points has a time column; so a body of b bits holds at most ~16 b points.
// Checked before allocating.
constexpr uint64_t kMaxPointsPerBodyBit = 16;

constexpr uint8_t kFlagValueStats = 1;
constexpr uint8_t kFlagRegularSteps = 2;
constexpr uint8_t kKnownFlags = kFlagValueStats | kFlagRegularSteps;

constexpr uint8_t kCodecMask = 7;
constexpr int kExponentShift = 3;
constexpr uint8_t kExponentMask = 15;
constexpr uint8_t kHasExceptions = 0x80;

// Decimal exponents 0..kMaxExponent; 10^e is exact in a double for all.
constexpr int kMaxExponent = 10;
constexpr std::array<double, kMaxExponent + 1> kPow10 = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10};

// A candidate codec is not used when more than 1/kMaxExceptionFraction of
// the values would be exceptions.
constexpr size_t kMaxExceptionFraction = 8;

uint64_t ZigZag(uint64_t v) {
  return (v << 1) ^ static_cast<uint64_t>(static_cast<int64_t>(v) >> 63);
}
uint64_t UnZigZag(uint64_t z) { return (z >> 1) ^ (~(z & 1) + 1); }

int Width(uint64_t v) { return std::bit_width(v); }

void PutVarint(uint64_t v, std::string* out) {
  char buf[10];
  int n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, static_cast<size_t>(n));
}

int VarintLength(uint64_t v) { return v == 0 ? 1 : (Width(v) + 6) / 7; }

// Parses a varint from the front of *in. False if truncated or longer than
// 64 bits.
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

void PutDouble(double d, std::string* out) {
  PutFixed64(std::bit_cast<uint64_t>(d), out);
}

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("corrupt chunk: ", what));
}

// ---------------------------------------------------------------------------
// Integer column code.
//
// A column of n uint64 (arithmetic mod 2^64) is transformed by its order k
// (0: the values, 1: deltas, 2: delta-of-deltas), minus a per-column base
// (the median of a sample of those differences, so that a regular cadence
// or a constant level costs nothing), zigzagged, and each residual written
// with one of two code shapes:
//   plain: "0" + w1 bits | "1" + w2 bits
//   runs:  "0" + gamma(run of zero residuals, 1..255) | "10" + w1 bits |
//          "11" + w2 bits
// The encoder computes the exact size of every (order, shape, w1) from
// width histograms and keeps the smallest; no trial encodes.

constexpr int kMaxW1 = 55;  // 1 + w1 bits are read with one Peek (<= 56)
constexpr uint32_t kMaxRun = 255;
constexpr int kWideLengthBits = 7;  // bit length 0..64 of a "wide" number

struct IntPlan {
  int order = 0;
  uint64_t base = 0;
  bool runs = false;
  int w1 = 0;
  int w2 = 0;
  uint64_t bits = std::numeric_limits<uint64_t>::max();
};

int GammaBits(uint64_t run) { return 2 * (Width(run) - 1) + 1; }

void PutWide(uint64_t v, BitWriter* w) {
  const int width = Width(v);
  w->Write(static_cast<uint64_t>(width), kWideLengthBits);
  w->Write(v, width);
}

bool GetWide(BitReader* r, uint64_t* v) {
  const int width = static_cast<int>(r->Read(kWideLengthBits));
  if (width > 64) return false;
  *v = r->Read(width);
  return true;
}

// The k-th differences d[i] of u for i in [k, n); d[0..k) are left alone.
void Differences(const uint64_t* u, size_t n, int order, uint64_t* d) {
  if (order == 0) {
    std::copy(u, u + n, d);
  } else if (order == 1) {
    for (size_t i = 1; i < n; ++i) d[i] = u[i] - u[i - 1];
  } else {
    for (size_t i = 2; i < n; ++i)
      d[i] = (u[i] - u[i - 1]) - (u[i - 1] - u[i - 2]);
  }
}

// The median of up to 33 evenly spaced entries of d[begin, n), as int64.
uint64_t SampleMedian(const uint64_t* d, size_t begin, size_t n) {
  constexpr size_t kSamples = 33;
  std::array<int64_t, kSamples> sample;
  const size_t m = n - begin;
  const size_t k = std::min(m, kSamples);
  for (size_t j = 0; j < k; ++j) {
    sample[j] = static_cast<int64_t>(d[begin + j * m / k]);
  }
  std::nth_element(sample.begin(), sample.begin() + k / 2, sample.begin() + k);
  return static_cast<uint64_t>(sample[k / 2]);
}

// Sizes `plan` (order and base already set) over the zigzagged residuals
// r[0, m): picks the shape and widths. `fixed_bits` is what the column
// spends besides the residual codes.
void SizeResiduals(const uint64_t* r, size_t m, uint64_t fixed_bits,
                   IntPlan* plan) {
  std::array<uint64_t, 65> hist{};  // by bit width
  uint64_t run_bits = 0;
  uint64_t run = 0;
  for (size_t i = 0; i < m; ++i) {
    const uint64_t z = r[i];
    ++hist[static_cast<size_t>(Width(z))];
    if (z == 0) {
      if (++run == kMaxRun) {
        run_bits += 1 + GammaBits(run);
        run = 0;
      }
    } else if (run != 0) {
      run_bits += 1 + GammaBits(run);
      run = 0;
    }
  }
  if (run != 0) run_bits += 1 + GammaBits(run);
  int w2 = 64;
  while (w2 > 0 && hist[static_cast<size_t>(w2)] == 0) --w2;
  uint64_t le = 0;     // residuals of width <= w1
  uint64_t le_nz = 0;  // nonzero ones among them
  for (int w1 = 0; w1 <= std::min(w2, kMaxW1); ++w1) {
    le += hist[static_cast<size_t>(w1)];
    if (w1 > 0) le_nz += hist[static_cast<size_t>(w1)];
    const uint64_t wide = m - le;
    const uint64_t plain =
        m + le * static_cast<uint64_t>(w1) + wide * static_cast<uint64_t>(w2);
    const uint64_t runs = run_bits + le_nz * (2 + static_cast<uint64_t>(w1)) +
                          wide * (2 + static_cast<uint64_t>(w2));
    const bool use_runs = runs < plain;
    const uint64_t bits = fixed_bits + (use_runs ? runs : plain);
    if (bits < plan->bits) {
      plan->bits = bits;
      plan->runs = use_runs;
      plan->w1 = w1;
      plan->w2 = w2;
    }
  }
}

constexpr int kParamBits = 2 + 1 + 6 + 7;  // order, shape, w1, w2

// Residuals of u at `order` around `base`, zigzagged, into r (m entries).
size_t Residuals(const uint64_t* u, size_t n, int order, uint64_t base,
                 uint64_t* d, uint64_t* r) {
  Differences(u, n, order, d);
  const size_t m = n - static_cast<size_t>(order);
  for (size_t i = 0; i < m; ++i) r[i] = ZigZag(d[i + order] - base);
  return m;
}

// Plans the coding of u[0, n), n >= 1. With first_known the decoder knows
// u[0] (steps and times: it is in the header). `max_order` bounds the
// orders tried. scratch must hold 2n entries.
IntPlan PlanInts(const uint64_t* u, size_t n, bool first_known, int max_order,
                 uint64_t* scratch) {
  IntPlan best;
  uint64_t* d = scratch;
  uint64_t* r = scratch + n;
  const int top = static_cast<int>(std::min<size_t>(max_order, n - 1));
  for (int order = first_known && n > 1 ? 1 : 0; order <= top; ++order) {
    Differences(u, n, order, d);
    const uint64_t base = SampleMedian(d, static_cast<size_t>(order), n);
    const size_t m = Residuals(u, n, order, base, d, r);
    uint64_t fixed = kParamBits + kWideLengthBits + Width(ZigZag(base));
    if (order >= 1 && !first_known) {
      fixed += kWideLengthBits + Width(ZigZag(u[0]));
    }
    if (order == 2) fixed += kWideLengthBits + Width(ZigZag(u[1] - u[0]));
    IntPlan plan;
    plan.order = order;
    plan.base = base;
    SizeResiduals(r, m, fixed, &plan);
    if (plan.bits < best.bits) best = plan;
  }
  return best;
}

void WriteInts(const uint64_t* u, size_t n, bool first_known,
               const IntPlan& plan, uint64_t* scratch, BitWriter* w) {
  uint64_t* d = scratch;
  uint64_t* r = scratch + n;
  const size_t m = Residuals(u, n, plan.order, plan.base, d, r);
  w->Write(static_cast<uint64_t>(plan.order), 2);
  w->Write(plan.runs ? 1 : 0, 1);
  w->Write(static_cast<uint64_t>(plan.w1), 6);
  w->Write(static_cast<uint64_t>(plan.w2), 7);
  PutWide(ZigZag(plan.base), w);
  if (plan.order >= 1 && !first_known) PutWide(ZigZag(u[0]), w);
  if (plan.order == 2) PutWide(ZigZag(u[1] - u[0]), w);
  const int w1 = plan.w1;
  const int w2 = plan.w2;
  const uint64_t small = uint64_t{1} << w1;
  if (!plan.runs) {
    for (size_t i = 0; i < m; ++i) {
      const uint64_t z = r[i];
      if (z < small) {
        w->Write(z, w1 + 1);
      } else {
        w->Write(1, 1);
        w->Write(z, w2);
      }
    }
    return;
  }
  for (size_t i = 0; i < m;) {
    const uint64_t z = r[i];
    if (z == 0) {
      uint64_t run = 1;
      while (i + run < m && run < kMaxRun && r[i + run] == 0) ++run;
      // "0", then gamma: (width - 1) zeros and the run in width bits.
      w->Write(run, 2 * Width(run));
      i += run;
      continue;
    }
    if (z < small) {
      w->Write((uint64_t{0b10} << w1) | z, w1 + 2);
    } else {
      w->Write(0b11, 2);
      w->Write(z, w2);
    }
    ++i;
  }
}

// Decodes a column written by WriteInts into out[0, n). False if the
// parameters are invalid; truncation shows in r->ok().
bool ReadInts(BitReader* r, size_t n, bool first_known, uint64_t first,
              uint64_t* __restrict out) {
  const int order = static_cast<int>(r->Read(2));
  const bool runs = r->Read(1) != 0;
  const int w1 = static_cast<int>(r->Read(6));
  const int w2 = static_cast<int>(r->Read(7));
  uint64_t base;
  if (order > 2 || static_cast<size_t>(order) >= n + (order == 0 ? 1 : 0) ||
      w1 > kMaxW1 || w2 > 64 || !GetWide(r, &base)) {
    return false;
  }
  base = UnZigZag(base);
  uint64_t d1 = 0;
  if (order >= 1) {
    if (first_known) {
      out[0] = first;
    } else {
      uint64_t z;
      if (!GetWide(r, &z)) return false;
      out[0] = UnZigZag(z);
    }
  }
  if (order == 2) {
    uint64_t z;
    if (!GetWide(r, &z)) return false;
    d1 = UnZigZag(z);
    out[1] = out[0] + d1;
  }
  const size_t begin = static_cast<size_t>(order);
  const uint64_t small = uint64_t{1} << w1;
  if (!runs && w2 < 56 && w1 <= w2) {
    // Branch-free: peek the longer code, then pick.
    const int w1p = w1 + 1;
    const int w2p = w2 + 1;
    const int shift = w2 - w1;
    const uint64_t mask2 = (uint64_t{1} << w2) - 1;
    for (size_t i = begin; i < n; ++i) {
      const uint64_t p = r->Peek(w2p);
      const bool wide = (p >> w2) != 0;
      const uint64_t z = wide ? (p & mask2) : (p >> shift);
      r->Skip(wide ? w2p : w1p);
      out[i] = UnZigZag(z) + base;
    }
  } else if (!runs) {
    const int w1p = w1 + 1;
    for (size_t i = begin; i < n; ++i) {
      const uint64_t p = r->Peek(w1p);
      uint64_t z;
      if (p < small) {
        r->Skip(w1p);
        z = p;
      } else {
        r->Skip(1);
        z = r->Read(w2);
      }
      out[i] = UnZigZag(z) + base;
    }
  } else {
    for (size_t i = begin; i < n;) {
      const uint64_t p = r->Peek(2);
      if (p < 0b10) {
        r->Skip(1);
        const int zeros = std::countl_zero(r->Peek(16) << 48);
        if (zeros > 7) return false;  // runs are at most 255
        r->Skip(zeros);
        const uint64_t run = r->Read(zeros + 1);
        if (run == 0 || run > n - i) return false;
        std::fill(out + i, out + i + run, base);
        i += run;
        continue;
      }
      r->Skip(2);
      const uint64_t z = r->Read(p == 0b10 ? w1 : w2);
      out[i++] = UnZigZag(z) + base;
    }
  }
  if (order == 1) {
    for (size_t i = 1; i < n; ++i) out[i] += out[i - 1];
  } else if (order == 2) {
    uint64_t delta = d1;
    for (size_t i = 2; i < n; ++i) {
      delta += out[i];
      out[i] = out[i - 1] + delta;
    }
  }
  return r->ok();
}

// ---------------------------------------------------------------------------
// XOR codes (Gorilla's idea with Chimp's refinements) on W-bit patterns.
//   "0"                          same pattern as the previous value
//   "10"  (W - lead) bits        XOR with at least the previous lead's
//                                leading zeros
//   "110" lead:3 (W - lead) bits new lead (an index into kLeads)
//   "111" lead:3 len:L len bits  a centre window when the XOR has many
//                                trailing zeros; trail = W - lead - len
// Leads are rounded down to the table, as in Chimp, so 3 bits suffice.

template <int W>
struct XorTraits;
template <>
struct XorTraits<64> {
  static constexpr std::array<int, 8> kLeads = {0, 8, 12, 16, 18, 20, 22, 24};
  static constexpr int kLenBits = 6;
};
template <>
struct XorTraits<32> {
  static constexpr std::array<int, 8> kLeads = {0, 4, 8, 9, 10, 11, 12, 14};
  static constexpr int kLenBits = 5;
};

template <int W>
constexpr std::array<uint8_t, W + 1> LeadIndexTable() {
  std::array<uint8_t, W + 1> t{};
  for (int lead = 0; lead <= W; ++lead) {
    uint8_t idx = 0;
    for (int k = 0; k < 8; ++k) {
      if (XorTraits<W>::kLeads[static_cast<size_t>(k)] <= lead) {
        idx = static_cast<uint8_t>(k);
      }
    }
    t[static_cast<size_t>(lead)] = idx;
  }
  return t;
}

template <int W>
struct XorStep {
  int code;  // 0: same, 1: "10", 2: "110", 3: "111"
  int bits;
  int lead_idx;
};

// Chooses the cheapest code for x given the previous lead (a table value).
template <int W>
XorStep<W> ChooseXor(uint64_t x, int prev_lead) {
  static constexpr std::array<uint8_t, W + 1> kIndex = LeadIndexTable<W>();
  if (x == 0) return {0, 1, 0};
  const int lead = std::countl_zero(x) - (64 - W);
  const int idx = kIndex[static_cast<size_t>(lead)];
  const int rlead = XorTraits<W>::kLeads[static_cast<size_t>(idx)];
  XorStep<W> best{2, 3 + 3 + W - rlead, idx};
  if (lead >= prev_lead && 2 + W - prev_lead <= best.bits) {
    best = {1, 2 + W - prev_lead, idx};
  }
  const int trail = std::countr_zero(x);
  const int centre = 3 + 3 + XorTraits<W>::kLenBits + (W - rlead - trail);
  if (centre < best.bits) best = {3, centre, idx};
  return best;
}

template <int W>
uint64_t XorBits(const uint64_t* u, size_t n) {
  uint64_t bits = W;
  int prev_lead = 0;
  for (size_t i = 1; i < n; ++i) {
    const XorStep<W> s = ChooseXor<W>(u[i] ^ u[i - 1], prev_lead);
    bits += static_cast<uint64_t>(s.bits);
    if (s.code >= 2) prev_lead = XorTraits<W>::kLeads[s.lead_idx];
  }
  return bits;
}

template <int W>
void WriteXor(const uint64_t* u, size_t n, BitWriter* w) {
  w->Write(u[0], W);
  int prev_lead = 0;
  for (size_t i = 1; i < n; ++i) {
    const uint64_t x = u[i] ^ u[i - 1];
    const XorStep<W> s = ChooseXor<W>(x, prev_lead);
    switch (s.code) {
      case 0:
        w->Write(0, 1);
        break;
      case 1:
        w->Write(0b10, 2);
        w->Write(x, W - prev_lead);
        break;
      case 2: {
        prev_lead = XorTraits<W>::kLeads[s.lead_idx];
        w->Write((0b110 << 3) | static_cast<uint64_t>(s.lead_idx), 6);
        w->Write(x, W - prev_lead);
        break;
      }
      default: {
        prev_lead = XorTraits<W>::kLeads[s.lead_idx];
        const int trail = std::countr_zero(x);
        const int len = W - prev_lead - trail;
        w->Write(
            (uint64_t{0b111} << (3 + XorTraits<W>::kLenBits)) |
                (static_cast<uint64_t>(s.lead_idx) << XorTraits<W>::kLenBits) |
                static_cast<uint64_t>(len),
            6 + XorTraits<W>::kLenBits);
        w->Write(x >> trail, len);
        break;
      }
    }
  }
}

template <int W>
bool ReadXor(BitReader* r, size_t n, uint64_t* __restrict out) {
  uint64_t value = r->Read(W);
  out[0] = value;
  int lead = 0;
  for (size_t i = 1; i < n; ++i) {
    const uint64_t p = r->Peek(3);
    if (p < 0b100) {
      r->Skip(1);
    } else if (p < 0b110) {
      r->Skip(2);
      value ^= r->Read(W - lead);
    } else if (p == 0b110) {
      lead = XorTraits<W>::kLeads[r->Read(6) & 7];
      value ^= r->Read(W - lead);
    } else {
      const uint64_t h = r->Read(6 + XorTraits<W>::kLenBits);
      lead = XorTraits<W>::kLeads[(h >> XorTraits<W>::kLenBits) & 7];
      const int len =
          static_cast<int>(h & ((1u << XorTraits<W>::kLenBits) - 1));
      if (len == 0 || lead + len > W) return false;
      value ^= r->Read(len) << (W - lead - len);
    }
    out[i] = value;
  }
  return r->ok();
}

// ---------------------------------------------------------------------------
// Value mappings: each codec but kXor64 maps values to integers (or float32
// patterns); a value that does not map is an exception, stored raw, and its
// slot takes the previous mapped value so that it costs ~nothing.

uint64_t Bits(double v) { return std::bit_cast<uint64_t>(v); }

// Decimal: v == double(i) / 10^e, bit-exactly. Returns false if not.
bool ToDecimal(double v, int e, int64_t* i) {
  if (e == 0) {
    if (!(std::fabs(v) < 9.0e18)) return false;
    *i = static_cast<int64_t>(v);
  } else {
    const double s = v * kPow10[static_cast<size_t>(e)];
    // Round to nearest with the 1.5 * 2^52 trick; exact for |s| < 2^51.
    if (!(std::fabs(s) < 2251799813685248.0)) return false;
    constexpr double kMagic = 6755399441055744.0;
    *i = static_cast<int64_t>((s + kMagic) - kMagic);
  }
  return Bits(static_cast<double>(*i) / kPow10[static_cast<size_t>(e)]) ==
         Bits(v);
}

double FromDecimal(uint64_t i, int e) {
  return static_cast<double>(static_cast<int64_t>(i)) /
         kPow10[static_cast<size_t>(e)];
}

bool ToFloat32(double v, uint32_t* bits) {
  const float f = static_cast<float>(v);
  if (Bits(static_cast<double>(f)) != Bits(v)) return false;
  *bits = std::bit_cast<uint32_t>(f);
  return true;
}

double FromFloat32(uint64_t bits) {
  return static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(bits)));
}

// float32 patterns as integers ordered like the floats (-0.0 just below
// +0.0), so that deltas of nearby values are small.
uint64_t OrderedFromFloat32(uint32_t b) {
  const int64_t s = (b >> 31) != 0 ? -static_cast<int64_t>(b & 0x7fffffff) - 1
                                   : static_cast<int64_t>(b);
  return static_cast<uint64_t>(s);
}

uint64_t Float32FromOrdered(uint64_t u) {
  const int64_t s = static_cast<int64_t>(u);
  return s < 0 ? (static_cast<uint64_t>(-(s + 1)) & 0x7fffffff) | 0x80000000
               : u & 0xffffffff;
}

// Smallest decimal exponent that holds (most of) a sample of the values, or
// -1 if too many of them are not decimals of <= kMaxExponent digits.
int DetectExponent(std::span<const double> values) {
  constexpr size_t kSamples = 16;
  const size_t n = values.size();
  const size_t k = std::min(n, kSamples);
  int exponent = 0;
  size_t misses = 0;
  for (size_t j = 0; j < k; ++j) {
    const double v = values[j * n / k];
    int e = 0;
    int64_t unused;
    while (e <= kMaxExponent && !ToDecimal(v, e, &unused)) ++e;
    if (e > kMaxExponent) {
      ++misses;
    } else {
      exponent = std::max(exponent, e);
    }
  }
  return misses * 4 > k ? -1 : exponent;
}

struct Exceptions {
  std::vector<uint32_t> positions;

  uint64_t bits() const {
    if (positions.empty()) return 0;
    uint64_t bytes = static_cast<uint64_t>(VarintLength(positions.size()));
    uint32_t prev = 0;
    for (size_t j = 0; j < positions.size(); ++j) {
      const uint32_t gap = j == 0 ? positions[j] : positions[j] - prev - 1;
      bytes += static_cast<uint64_t>(VarintLength(gap)) + 8;
      prev = positions[j];
    }
    return bytes * 8;
  }
};

// Maps values with `map` (bool(double, uint64_t*)) into u; false if too many
// exceptions. Exception slots repeat the previous mapped value (the first
// mapped value for leading exceptions).
template <typename Map>
bool MapValues(std::span<const double> values, Map map, uint64_t* u,
               Exceptions* exc) {
  const size_t n = values.size();
  const size_t limit = n / kMaxExceptionFraction;
  exc->positions.clear();
  bool have = false;
  uint64_t prev = 0;
  for (size_t i = 0; i < n; ++i) {
    uint64_t m;
    if (map(values[i], &m)) {
      if (!have) {
        std::fill(u, u + i, m);
        have = true;
      }
      u[i] = m;
      prev = m;
    } else {
      if (exc->positions.size() >= limit) return false;
      exc->positions.push_back(static_cast<uint32_t>(i));
      u[i] = prev;
    }
  }
  return have;
}

struct ValuePlan {
  ChunkValueCodec codec = ChunkValueCodec::kXor64;
  int exponent = 0;
  IntPlan ints;  // integer codecs
  uint64_t bits = std::numeric_limits<uint64_t>::max();
  std::vector<uint64_t> u;  // mapped values (or patterns)
  Exceptions exc;
};

// Picks the value codec: detection passes and exact sizes, no trial
// encodes. `scratch` holds 2n entries.
void PlanValues(std::span<const double> values, uint64_t* scratch,
                ValuePlan* best) {
  const size_t n = values.size();
  std::vector<uint64_t> u(n);
  Exceptions exc;

  // Integers and few-digit decimals.
  const int e = DetectExponent(values);
  if (e >= 0 && MapValues(
                    values,
                    [e](double v, uint64_t* m) {
                      int64_t i;
                      if (!ToDecimal(v, e, &i)) return false;
                      *m = static_cast<uint64_t>(i);
                      return true;
                    },
                    u.data(), &exc)) {
    IntPlan plan = PlanInts(u.data(), n, false, 2, scratch);
    const uint64_t bits = plan.bits + exc.bits();
    best->codec =
        e == 0 ? ChunkValueCodec::kInteger : ChunkValueCodec::kDecimal;
    best->exponent = e;
    best->ints = plan;
    best->bits = bits;
    best->u.swap(u);
    best->exc = std::move(exc);
    u.resize(n);
  }
  // float32 widened to float64: not worth a look when the decimal codec
  // already spends under 12 bits a value.
  if (best->bits > 12 * n + 64 && MapValues(
                                      values,
                                      [](double v, uint64_t* m) {
                                        uint32_t b;
                                        if (!ToFloat32(v, &b)) return false;
                                        *m = b;
                                        return true;
                                      },
                                      u.data(), &exc)) {
    const uint64_t exc_bits = exc.bits();
    const uint64_t xor_bits = XorBits<32>(u.data(), n) + exc_bits;
    std::vector<uint64_t> ordered(n);
    for (size_t i = 0; i < n; ++i) {
      ordered[i] = OrderedFromFloat32(static_cast<uint32_t>(u[i]));
    }
    IntPlan plan = PlanInts(ordered.data(), n, false, 2, scratch);
    const uint64_t int_bits = plan.bits + exc_bits;
    if (std::min(xor_bits, int_bits) < best->bits) {
      best->exponent = 0;
      best->exc = std::move(exc);
      if (int_bits < xor_bits) {
        best->codec = ChunkValueCodec::kFloat32Int;
        best->ints = plan;
        best->bits = int_bits;
        best->u.swap(ordered);
      } else {
        best->codec = ChunkValueCodec::kXor32;
        best->bits = xor_bits;
        best->u.swap(u);
      }
    }
  }
  // The fallback; sized only when the others did poorly.
  if (best->bits > 40 * n + 64) {
    for (size_t i = 0; i < n; ++i) u[i] = Bits(values[i]);
    const uint64_t bits = XorBits<64>(u.data(), n);
    if (bits < best->bits) {
      best->codec = ChunkValueCodec::kXor64;
      best->exponent = 0;
      best->bits = bits;
      best->exc.positions.clear();
      best->u.swap(u);
    }
  }
}

bool IsIntCodec(ChunkValueCodec c) {
  return c == ChunkValueCodec::kFloat32Int || c == ChunkValueCodec::kInteger ||
         c == ChunkValueCodec::kDecimal;
}

// ---------------------------------------------------------------------------
// Header.

struct Header {
  int version = 0;
  ChunkSummary summary;
  int64_t first_time_ms = 0;
  // Version 2 only.
  bool regular_steps = false;
  ChunkValueCodec codec = ChunkValueCodec::kGorillaV1;
  int exponent = 0;
  uint64_t num_exceptions = 0;
  std::string_view rest;  // exception list and bitstream
};

absl::Status ParseHeaderV2(std::string_view chunk, Header* h) {
  std::string_view in = chunk.substr(1);
  uint64_t count, first_step, step_span, first_time_zz, below_first,
      above_first;
  if (!GetVarint(&in, &count) || !GetVarint(&in, &first_step) ||
      !GetVarint(&in, &step_span) || !GetVarint(&in, &first_time_zz) ||
      !GetVarint(&in, &below_first) || !GetVarint(&in, &above_first) ||
      in.empty()) {
    return Corrupt("truncated header");
  }
  if (count == 0 || count > kMaxChunkPoints) {
    return Corrupt(absl::StrCat("bad point count ", count));
  }
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
  if (min_time > first_time || max_time < first_time ||
      (count == 1 && (below_first != 0 || above_first != 0))) {
    return Corrupt("bad time range");
  }
  const uint8_t flags = static_cast<uint8_t>(in[0]);
  in.remove_prefix(1);
  if ((flags & ~kKnownFlags) != 0) return Corrupt("unknown flags");
  h->regular_steps = (flags & kFlagRegularSteps) != 0;
  if (h->regular_steps && (count < 2 || step_span % (count - 1) != 0)) {
    return Corrupt("bad regular steps");
  }
  ChunkSummary& s = h->summary;
  s = ChunkSummary();
  if ((flags & kFlagValueStats) != 0) {
    uint64_t nan, pinf, ninf;
    if (!GetVarint(&in, &nan) || !GetVarint(&in, &pinf) ||
        !GetVarint(&in, &ninf)) {
      return Corrupt("truncated value stats");
    }
    if (nan > count || pinf > count - nan || ninf > count - nan - pinf) {
      return Corrupt("bad NaN/Inf counts");
    }
    uint64_t min = 0, max = 0, sum = 0, first = 0, last = 0;
    if (nan + pinf + ninf < count &&
        (!GetFixed64(&in, &min) || !GetFixed64(&in, &max) ||
         !GetFixed64(&in, &sum))) {
      return Corrupt("truncated value stats");
    }
    if (!GetFixed64(&in, &first) || !GetFixed64(&in, &last)) {
      return Corrupt("truncated value stats");
    }
    s.has_value_stats = true;
    s.nan_count = static_cast<uint32_t>(nan);
    s.pos_inf_count = static_cast<uint32_t>(pinf);
    s.neg_inf_count = static_cast<uint32_t>(ninf);
    s.min_value = std::bit_cast<double>(min);
    s.max_value = std::bit_cast<double>(max);
    s.sum = std::bit_cast<double>(sum);
    s.first_value = std::bit_cast<double>(first);
    s.last_value = std::bit_cast<double>(last);
  }
  if (in.empty()) return Corrupt("truncated header");
  const uint8_t codec_byte = static_cast<uint8_t>(in[0]);
  in.remove_prefix(1);
  const int codec = codec_byte & kCodecMask;
  const int exponent = (codec_byte >> kExponentShift) & kExponentMask;
  if (codec < static_cast<int>(ChunkValueCodec::kXor64) ||
      codec > static_cast<int>(ChunkValueCodec::kDecimal)) {
    return Corrupt("unknown value codec");
  }
  h->codec = static_cast<ChunkValueCodec>(codec);
  const bool decimal = h->codec == ChunkValueCodec::kDecimal;
  if (decimal ? (exponent < 1 || exponent > kMaxExponent) : exponent != 0) {
    return Corrupt("bad decimal exponent");
  }
  h->exponent = exponent;
  h->num_exceptions = 0;
  if ((codec_byte & kHasExceptions) != 0) {
    if (!IsIntCodec(h->codec) && h->codec != ChunkValueCodec::kXor32) {
      return Corrupt("exceptions with the XOR64 codec");
    }
    if (!GetVarint(&in, &h->num_exceptions)) return Corrupt("truncated header");
    if (h->num_exceptions == 0 || h->num_exceptions > count ||
        h->num_exceptions * 9 > in.size()) {
      return Corrupt("bad exception count");
    }
  }
  // Compare before allocating anything proportional to count.
  if ((count - 1) / kMaxPointsPerBodyBit >
      static_cast<uint64_t>(in.size()) * 8) {
    return Corrupt("point count exceeds chunk size");
  }
  h->version = kVersion2;
  s.count = static_cast<uint32_t>(count);
  s.min_step = first_step;
  s.max_step = last_step;
  s.min_time_ms = min_time;
  s.max_time_ms = max_time;
  h->first_time_ms = first_time;
  h->rest = in;
  return absl::OkStatus();
}

absl::Status CheckVersion(std::string_view chunk) {
  if (chunk.empty()) return Corrupt("empty");
  const uint8_t version = static_cast<uint8_t>(chunk[0]);
  if (version != kVersion1 && version != kVersion2) {
    return absl::UnimplementedError(
        absl::StrCat("unknown chunk format version ", version));
  }
  return absl::OkStatus();
}

absl::Status DecodeBodyV2(const Header& h, uint64_t* steps, int64_t* times,
                          double* values) {
  const size_t n = h.summary.count;
  std::string_view in = h.rest;
  // Exceptions first (byte-aligned), applied after the value column.
  std::vector<std::pair<uint32_t, uint64_t>> exceptions;
  exceptions.reserve(h.num_exceptions);
  uint64_t next = 0;
  for (uint64_t j = 0; j < h.num_exceptions; ++j) {
    uint64_t gap, raw;
    if (!GetVarint(&in, &gap) || !GetFixed64(&in, &raw)) {
      return Corrupt("truncated exceptions");
    }
    if (gap >= n || next + gap >= n) return Corrupt("bad exception position");
    next += gap;
    exceptions.emplace_back(static_cast<uint32_t>(next), raw);
    ++next;
  }

  BitReader r(in);
  // Steps.
  if (h.regular_steps) {
    const uint64_t delta = (h.summary.max_step - h.summary.min_step) / (n - 1);
    for (size_t i = 0; i < n; ++i) steps[i] = h.summary.min_step + i * delta;
  } else if (n == 1) {
    steps[0] = h.summary.min_step;
  } else {
    if (!ReadInts(&r, n, true, h.summary.min_step, steps)) {
      return Corrupt("bad step column");
    }
    if (steps[0] != h.summary.min_step) return Corrupt("first step mismatch");
    for (size_t i = 1; i < n; ++i) {
      if (steps[i] <= steps[i - 1]) return Corrupt("steps not increasing");
    }
    if (steps[n - 1] != h.summary.max_step) {
      return Corrupt("last step mismatch");
    }
  }
  // Times.
  uint64_t* const t = reinterpret_cast<uint64_t*>(times);
  if (n == 1) {
    times[0] = h.first_time_ms;
  } else {
    if (!ReadInts(&r, n, true, static_cast<uint64_t>(h.first_time_ms), t)) {
      return Corrupt("bad time column");
    }
    if (times[0] != h.first_time_ms) return Corrupt("first time mismatch");
    int64_t min_time = times[0];
    int64_t max_time = times[0];
    for (size_t i = 1; i < n; ++i) {
      min_time = std::min(min_time, times[i]);
      max_time = std::max(max_time, times[i]);
    }
    if (min_time != h.summary.min_time_ms ||
        max_time != h.summary.max_time_ms) {
      return Corrupt("time range mismatch");
    }
  }
  // Values.
  std::vector<uint64_t> u(n);
  bool ok = true;
  switch (h.codec) {
    case ChunkValueCodec::kXor64:
      ok = ReadXor<64>(&r, n, u.data());
      if (ok) std::memcpy(values, u.data(), n * sizeof(double));
      break;
    case ChunkValueCodec::kXor32:
      ok = ReadXor<32>(&r, n, u.data());
      for (size_t i = 0; i < n; ++i) values[i] = FromFloat32(u[i]);
      break;
    case ChunkValueCodec::kFloat32Int:
      ok = ReadInts(&r, n, false, 0, u.data());
      for (size_t i = 0; i < n; ++i) {
        values[i] = FromFloat32(Float32FromOrdered(u[i]));
      }
      break;
    case ChunkValueCodec::kInteger:
      ok = ReadInts(&r, n, false, 0, u.data());
      for (size_t i = 0; i < n; ++i) {
        values[i] = static_cast<double>(static_cast<int64_t>(u[i]));
      }
      break;
    case ChunkValueCodec::kDecimal:
      ok = ReadInts(&r, n, false, 0, u.data());
      for (size_t i = 0; i < n; ++i) values[i] = FromDecimal(u[i], h.exponent);
      break;
    case ChunkValueCodec::kGorillaV1:
      ok = false;
      break;
  }
  if (!ok || !r.ok()) return Corrupt("bad value column");
  for (const auto& [pos, raw] : exceptions) {
    values[pos] = std::bit_cast<double>(raw);
  }
  // The encoder pads the last byte with zero bits and writes nothing after.
  const size_t rest = r.bits_remaining();
  if (rest >= 8) return Corrupt("trailing bytes");
  if (r.Read(static_cast<int>(rest)) != 0) return Corrupt("nonzero padding");
  return absl::OkStatus();
}

void PutValueStats(std::span<const double> values, std::string* out) {
  uint64_t nan = 0, pinf = 0, ninf = 0;
  double min = 0.0, max = 0.0, sum = 0.0;
  bool any = false;
  for (const double v : values) {
    if (std::isnan(v)) {
      ++nan;
    } else if (std::isinf(v)) {
      ++(v > 0 ? pinf : ninf);
    } else {
      if (!any) {
        min = max = v;
        any = true;
      } else {
        if (v < min) min = v;
        if (max < v) max = v;
      }
      sum += v;
    }
  }
  PutVarint(nan, out);
  PutVarint(pinf, out);
  PutVarint(ninf, out);
  if (any) {
    PutDouble(min, out);
    PutDouble(max, out);
    PutDouble(sum, out);
  }
  PutDouble(values.front(), out);
  PutDouble(values.back(), out);
}

}  // namespace

void EncodeChunk(std::span<const uint64_t> steps,
                 std::span<const int64_t> times_ms,
                 std::span<const double> values, std::string* out) {
  const size_t n = steps.size();
  assert(n >= 1 && n <= kMaxChunkPoints);
  assert(times_ms.size() == n && values.size() == n);

  // Headroom for typical telemetry (~1-4 bytes/point); grow geometrically
  // so that callers appending many chunks to one string stay linear.
  const size_t want = out->size() + 96 + 4 * n;
  if (out->capacity() < want) out->reserve(std::max(want, 2 * out->size()));

  int64_t min_time = times_ms[0];
  int64_t max_time = times_ms[0];
  for (const int64_t t : times_ms) {
    min_time = std::min(min_time, t);
    max_time = std::max(max_time, t);
  }
  const uint64_t first_time = static_cast<uint64_t>(times_ms[0]);
  bool regular = n >= 2;
  if (regular) {
    const uint64_t delta = steps[1] - steps[0];
    for (size_t i = 2; i < n && regular; ++i) {
      regular = steps[i] - steps[i - 1] == delta;
    }
  }
  const bool stats = n >= kMinPointsForValueStats;

  std::vector<uint64_t> scratch(2 * n);
  ValuePlan vp;
  PlanValues(values, scratch.data(), &vp);

  out->push_back(static_cast<char>(kVersion2));
  PutVarint(n, out);
  PutVarint(steps[0], out);
  PutVarint(steps[n - 1] - steps[0], out);
  PutVarint(ZigZag(first_time), out);
  PutVarint(first_time - static_cast<uint64_t>(min_time), out);
  PutVarint(static_cast<uint64_t>(max_time) - first_time, out);
  out->push_back(static_cast<char>((stats ? kFlagValueStats : 0) |
                                   (regular ? kFlagRegularSteps : 0)));
  if (stats) PutValueStats(values, out);
  const std::vector<uint32_t>& exc = vp.exc.positions;
  out->push_back(static_cast<char>(static_cast<uint8_t>(vp.codec) |
                                   (vp.exponent << kExponentShift) |
                                   (exc.empty() ? 0 : kHasExceptions)));
  if (!exc.empty()) {
    PutVarint(exc.size(), out);
    uint32_t next = 0;
    for (const uint32_t pos : exc) {
      PutVarint(pos - next, out);
      PutFixed64(Bits(values[pos]), out);
      next = pos + 1;
    }
  }

  BitWriter w(out);
  if (!regular && n >= 2) {
    const IntPlan plan = PlanInts(steps.data(), n, true, 2, scratch.data());
    WriteInts(steps.data(), n, true, plan, scratch.data(), &w);
  }
  if (n >= 2) {
    const uint64_t* t = reinterpret_cast<const uint64_t*>(times_ms.data());
    const IntPlan plan = PlanInts(t, n, true, 2, scratch.data());
    WriteInts(t, n, true, plan, scratch.data(), &w);
  }
  switch (vp.codec) {
    case ChunkValueCodec::kXor64:
      WriteXor<64>(vp.u.data(), n, &w);
      break;
    case ChunkValueCodec::kXor32:
      WriteXor<32>(vp.u.data(), n, &w);
      break;
    default:
      WriteInts(vp.u.data(), n, false, vp.ints, scratch.data(), &w);
      break;
  }
  w.Finish();
}

absl::StatusOr<ChunkSummary> ReadChunkSummary(std::string_view chunk) {
  if (absl::Status s = CheckVersion(chunk); !s.ok()) return s;
  if (static_cast<uint8_t>(chunk[0]) == kVersion1) {
    return internal::ReadChunkSummaryV1(chunk);
  }
  Header h;
  if (absl::Status s = ParseHeaderV2(chunk, &h); !s.ok()) return s;
  return h.summary;
}

absl::StatusOr<ChunkDescription> DescribeChunk(std::string_view chunk) {
  if (absl::Status s = CheckVersion(chunk); !s.ok()) return s;
  ChunkDescription d;
  if (static_cast<uint8_t>(chunk[0]) == kVersion1) {
    absl::StatusOr<ChunkSummary> s = internal::ReadChunkSummaryV1(chunk);
    if (!s.ok()) return s.status();
    d.version = kVersion1;
    return d;
  }
  Header h;
  if (absl::Status s = ParseHeaderV2(chunk, &h); !s.ok()) return s;
  d.version = kVersion2;
  d.value_codec = h.codec;
  d.decimal_exponent = h.exponent;
  d.exceptions = static_cast<uint32_t>(h.num_exceptions);
  d.regular_steps = h.regular_steps;
  return d;
}

absl::Status DecodeChunk(std::string_view chunk, PointColumns* out) {
  if (absl::Status s = CheckVersion(chunk); !s.ok()) return s;
  if (static_cast<uint8_t>(chunk[0]) == kVersion1) {
    return internal::DecodeChunkV1(chunk, out);
  }
  Header h;
  if (absl::Status s = ParseHeaderV2(chunk, &h); !s.ok()) return s;
  const size_t old_size = out->size();
  const size_t n = h.summary.count;
  out->steps.resize(old_size + n);
  out->times_ms.resize(old_size + n);
  out->values.resize(old_size + n);
  absl::Status s = DecodeBodyV2(h, out->steps.data() + old_size,
                                out->times_ms.data() + old_size,
                                out->values.data() + old_size);
  if (!s.ok()) {
    // Stronger than the contract requires: on error *out is unchanged.
    out->steps.resize(old_size);
    out->times_ms.resize(old_size);
    out->values.resize(old_size);
  }
  return s;
}

}  // namespace stepdb::storage
