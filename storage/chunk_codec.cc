// Chunk format version 2 and the version dispatch. The byte layout is
// specified in docs/FORMAT.md ("Chunk format"); keep the two in sync.
// Version 1 lives in chunk_codec_v1.cc, the pieces both share in
// chunk_codec_internal.{h,cc}.
//
// In short: a byte-aligned header carrying everything ReadChunkSummary()
// needs (ranges and, for chunks of 8+ points, value aggregates), the value
// codec byte and raw exception values, then one bitstream holding the step
// column (absent when steps are regular), the time column and the value
// column. Steps and times use the integer column code; values use one of
// five codecs picked per chunk by what the values are.
//
// Speed notes: the encoder sizes every candidate from width histograms
// gathered in one fused pass per column (no trial encodes, no difference
// arrays), skips candidates that provably cannot win, and works in
// thread-local scratch; the bit reader and writer state lives in locals
// inside the hot loops (see bit_stream.h).
#include "storage/chunk_codec.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "storage/bit_stream.h"
#include "storage/chunk_codec_internal.h"
#include "storage/codec_kernels.h"

namespace stepdb::storage {
namespace {

using internal::CommonHeader;
using internal::Corrupt;
using internal::GetFixed64;
using internal::GetVarint;
using internal::kMaxChunkPoints;
using internal::kVersion1;
using internal::kVersion2;
using internal::kVersion3;
using internal::PutFixed64;
using internal::PutVarint;
using internal::UnZigZag;
using internal::VarintLength;
using internal::ZigZag;

// Every code of the integer column code covers at most kMaxRun points and
// costs at least 1 bit (a run of 255 costs 16), and a chunk of n >= 2
// points has a time column; so a body of b bits holds at most ~16 b points.
// Checked before allocating.
constexpr uint64_t kMaxPointsPerBodyBit = 16;

constexpr uint8_t kFlagValueStats = 1;
constexpr uint8_t kFlagRegularSteps = 2;
// Version 3 only: the check is ColumnsCheckLanes, not ColumnsCheck.
constexpr uint8_t kFlagLaneCheck = 4;
constexpr uint8_t kKnownFlags =
    kFlagValueStats | kFlagRegularSteps | kFlagLaneCheck;

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

// std::bit_width, without a branch for 0 when the target lacks lzcnt:
// bsr(v | 1) is the index of the top bit for v >= 1 and 0 for v <= 1.
int Width(uint64_t v) {
  return (63 ^ __builtin_clzll(v | 1)) + static_cast<int>(v != 0);
}

uint64_t Bits(double v) { return std::bit_cast<uint64_t>(v); }

// ---------------------------------------------------------------------------
// Thread-local scratch, so that encoding and decoding allocate nothing in
// the steady state. Chunks are ~1k points; buffers grown past kKeepEntries
// by an unusually large chunk are released again after use.

constexpr size_t kKeepEntries = size_t{1} << 16;

struct Scratch {
  std::vector<uint64_t> a, b, c, d, e, f;
  std::vector<uint64_t> z;  // decoding: an integer column before mapping
  std::vector<uint32_t> positions, positions2, positions3;

  static uint64_t* Get(std::vector<uint64_t>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
  void ReleaseIfLarge() {
    if (a.size() > kKeepEntries) std::vector<uint64_t>().swap(a);
    if (b.size() > kKeepEntries) std::vector<uint64_t>().swap(b);
    if (c.size() > kKeepEntries) std::vector<uint64_t>().swap(c);
    if (d.size() > kKeepEntries) std::vector<uint64_t>().swap(d);
    if (e.size() > kKeepEntries) std::vector<uint64_t>().swap(e);
    if (f.size() > kKeepEntries) std::vector<uint64_t>().swap(f);
    if (z.size() > kKeepEntries) std::vector<uint64_t>().swap(z);
    if (positions.capacity() > kKeepEntries) {
      std::vector<uint32_t>().swap(positions);
    }
    if (positions2.capacity() > kKeepEntries) {
      std::vector<uint32_t>().swap(positions2);
    }
    if (positions3.capacity() > kKeepEntries) {
      std::vector<uint32_t>().swap(positions3);
    }
  }
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
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
constexpr int kParamBits = 2 + 1 + 6 + 7;  // order, shape, w1, w2

struct IntPlan {
  int order = 0;
  uint64_t base = 0;
  bool runs = false;
  int w1 = 0;
  int w2 = 0;
  uint64_t bits = std::numeric_limits<uint64_t>::max();
};

// The k-th difference of u at i >= k, mod 2^64.
template <int K>
uint64_t Diff(const uint64_t* u, size_t i) {
  if constexpr (K == 0) {
    return u[i];
  } else if constexpr (K == 1) {
    return u[i] - u[i - 1];
  } else {
    return (u[i] - u[i - 1]) - (u[i - 1] - u[i - 2]);
  }
}

// Calls f(order_constant) with the order as a compile-time constant.
template <typename F>
decltype(auto) WithOrder(int order, F&& f) {
  switch (order) {
    case 0:
      return f(std::integral_constant<int, 0>());
    case 1:
      return f(std::integral_constant<int, 1>());
    default:
      return f(std::integral_constant<int, 2>());
  }
}

// The evenly spaced sample indices j * m / k, j = 0, 1, ... (k >= 1),
// without a division each (a division per sample, ~20 cycles, was a tenth
// of planning a column).
class EvenlySpaced {
 public:
  EvenlySpaced(size_t m, size_t k) : step_(m / k), rem_step_(m % k), k_(k) {}
  size_t index() const { return index_; }
  void Next() {
    index_ += step_;
    rem_ += rem_step_;
    const bool wrap = rem_ >= k_;
    index_ += wrap ? 1 : 0;
    rem_ -= wrap ? k_ : 0;
  }

 private:
  size_t step_, rem_step_, k_;
  size_t index_ = 0;
  size_t rem_ = 0;  // (j * m) % k
};

constexpr size_t kMedianSamples = 33;

// The rank-th smallest (from 0) of s[0, m), 1 <= m <= kMedianSamples;
// overwrites s. Quickselect whose partition writes every element to both
// sides' buffers and advances the index of the side it belongs to, so that
// no branch depends on a comparison (std::nth_element's branches on them
// mispredicted about half the time: a twentieth of an encode).
int64_t SelectRank(int64_t* s, size_t m, size_t rank) {
  std::array<int64_t, kMedianSamples> buffers[2];
  int64_t* spare[2] = {buffers[0].data(), buffers[1].data()};
  while (m > 1) {
    const int64_t pivot = s[m / 2];
    int64_t* const less = spare[0];
    int64_t* const greater = spare[1];
    size_t num_less = 0, num_greater = 0;
    for (size_t i = 0; i < m; ++i) {
      const int64_t v = s[i];
      less[num_less] = v;
      num_less += v < pivot ? 1 : 0;
      greater[num_greater] = v;
      num_greater += v > pivot ? 1 : 0;
    }
    if (rank < num_less) {
      spare[0] = s;
      s = less;
      m = num_less;
    } else if (rank >= m - num_greater) {
      rank -= m - num_greater;
      spare[1] = s;
      s = greater;
      m = num_greater;
    } else {
      return pivot;  // among the elements equal to it
    }
  }
  return s[0];
}

// The median of up to 33 evenly spaced k-th differences of u[0, n), as
// int64 (entries begin + j * m / samples, m = n - k).
template <int K>
uint64_t SampleMedian(const uint64_t* u, size_t n) {
  std::array<int64_t, kMedianSamples> sample;
  const size_t m = n - K;
  const size_t k = std::min(m, kMedianSamples);
  if (k == 0) return 0;  // no differences (callers pass n > K today)
  EvenlySpaced at(m, k);
  for (size_t j = 0; j < k; ++j, at.Next()) {
    sample[j] = static_cast<int64_t>(Diff<K>(u, K + at.index()));
  }
  return static_cast<uint64_t>(SelectRank(sample.data(), k, k / 2));
}

using WidthHistogram = std::array<uint32_t, 65>;

// Sizes `plan` (order and base already set) from the width histogram of its
// m residuals: picks the shape and widths. `fixed_bits` is what the column
// spends besides the residual codes.
void SizeResiduals(const uint64_t* u, size_t n, const WidthHistogram& hist,
                   size_t m, uint64_t fixed_bits, IntPlan* plan) {
  int w2 = 64;
  while (w2 > 0 && hist[static_cast<size_t>(w2)] == 0) --w2;
  const int top_w1 = std::min(w2, kMaxW1);
  // runs - plain = run_bits + (m - zeros) - zeros * (1 + w1), and
  // run_bits >= 2 when there are zeros: skip counting the runs when they
  // cannot win for any w1.
  const uint64_t zeros = hist[0];
  uint64_t run_bits = std::numeric_limits<uint64_t>::max() / 4;
  if (zeros != 0 && 2 + m - zeros < zeros * (1 + top_w1)) {
    // What the runs shape spends on the zero residuals (the "0" + gamma
    // codes).
    run_bits = internal::ActiveCodecKernels().run_bits(u, n, plan->order,
                                                       plan->base);
  }
  uint64_t le = 0;     // residuals of width <= w1
  uint64_t le_nz = 0;  // nonzero ones among them
  for (int w1 = 0; w1 <= top_w1; ++w1) {
    le += hist[static_cast<size_t>(w1)];
    if (w1 > 0) le_nz += hist[static_cast<size_t>(w1)];
    const uint64_t wide = m - le;
    // w1 == w2 >= 1 is the fixed shape: w2 bits each, no flag bit.
    const uint64_t plain = w1 == w2 && w2 >= 1
                               ? m * static_cast<uint64_t>(w2)
                               : m + le * static_cast<uint64_t>(w1) +
                                     wide * static_cast<uint64_t>(w2);
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

// The smallest plain or fixed-shape size of m residuals with width
// histogram `hist` (the runs shape left out).
uint64_t PlainBits(const WidthHistogram& hist, uint64_t m) {
  int w2 = 64;
  while (w2 > 0 && hist[static_cast<size_t>(w2)] == 0) --w2;
  uint64_t best = std::numeric_limits<uint64_t>::max();
  uint64_t le = 0;
  for (int w1 = 0; w1 <= std::min(w2, kMaxW1); ++w1) {
    le += hist[static_cast<size_t>(w1)];
    const uint64_t bits = w1 == w2 && w2 >= 1
                              ? m * static_cast<uint64_t>(w2)
                              : m + le * static_cast<uint64_t>(w1) +
                                    (m - le) * static_cast<uint64_t>(w2);
    best = std::min(best, bits);
  }
  return best;
}

// Orders that a sample shows cannot win are dropped from want[] before the
// exact sizing (which costs a pass per order): on chunks of kPruneMinPoints
// or more, kPruneSamples evenly spaced residuals of each order are sized,
// and an order estimated at more than kPruneMarginHalfBits / 2 bits per
// residual above the best is not tried (the runs shape, which a sample
// cannot size exactly, is estimated roughly). A wrong guess only costs a
// little size; the chunk stays valid.
constexpr size_t kPruneMinPoints = 256;
constexpr size_t kPruneSamples = 256;
constexpr uint64_t kPruneMarginHalfBits = 1;  // half-bits per residual

void PruneOrders(const uint64_t* u, size_t n, const uint64_t* base,
                 bool* want) {
  if (n < kPruneMinPoints || int{want[0]} + want[1] + want[2] < 2) return;
  WidthHistogram hist[3] = {};
  static_assert(sizeof(hist) == 3 * 65 * sizeof(uint32_t));
  const size_t stride = (n - 2) / kPruneSamples;
  internal::ActiveCodecKernels().sample_histograms(
      u, 2, stride, kPruneSamples, base,
      int{want[0]} | int{want[1]} << 1 | int{want[2]} << 2, hist[0].data());
  uint64_t est[3];
  uint64_t best = std::numeric_limits<uint64_t>::max();
  for (int k = 0; k < 3; ++k) {
    if (!want[k]) continue;
    est[k] = PlainBits(hist[k], kPruneSamples);
    const uint64_t zeros = hist[k][0];
    if (zeros * 8 > kPruneSamples) {
      // Many zeros: the runs shape may win. A sample shows no runs, so
      // assume the zeros lie in one run per nonzero residual: each nonzero
      // costs at most 2 + its width, each run about 2 * Width(mean run).
      const uint64_t nonzero = kPruneSamples - zeros;
      const uint64_t runs = std::max<uint64_t>(1, std::min(nonzero, zeros));
      uint64_t bits = runs * 2 * Width(zeros / runs + 1);
      for (size_t w = 1; w <= 64; ++w) bits += hist[k][w] * (2 + w);
      est[k] = std::min(est[k], bits);
    }
    best = std::min(best, est[k]);
  }
  for (int k = 0; k < 3; ++k) {
    if (want[k] && est[k] > best + kPruneMarginHalfBits * kPruneSamples / 2) {
      want[k] = false;
    }
  }
}

// Plans the coding of u[0, n), n >= 1. With first_known the decoder knows
// u[0] (steps and times: it is in the header); orders 1 and 2 are tried
// then, else 0..2 (each at most n - 1).
IntPlan PlanInts(const uint64_t* u, size_t n, bool first_known) {
  const int lo = first_known && n > 1 ? 1 : 0;
  const int top = static_cast<int>(std::min<size_t>(2, n - 1));
  uint64_t base[3] = {0, 0, 0};
  if (lo <= 0) base[0] = SampleMedian<0>(u, n);
  if (lo <= 1 && top >= 1) base[1] = SampleMedian<1>(u, n);
  if (top >= 2) base[2] = SampleMedian<2>(u, n);
  bool want[3] = {lo <= 0, lo <= 1 && top >= 1, top >= 2};
  PruneOrders(u, n, base, want);
  WidthHistogram hist[3] = {};
  static_assert(sizeof(hist) == 3 * 65 * sizeof(uint32_t));
  internal::ActiveCodecKernels().width_histograms(
      u, n, base, int{want[0]} | int{want[1]} << 1 | int{want[2]} << 2,
      hist[0].data());
  IntPlan best;
  for (int order = lo; order <= top; ++order) {
    if (!want[order]) continue;
    uint64_t fixed = kParamBits + kWideLengthBits + Width(ZigZag(base[order]));
    if (order >= 1 && !first_known) {
      fixed += kWideLengthBits + Width(ZigZag(u[0]));
    }
    if (order == 2) fixed += kWideLengthBits + Width(ZigZag(u[1] - u[0]));
    IntPlan plan;
    plan.order = order;
    plan.base = base[order];
    SizeResiduals(u, n, hist[order], n - static_cast<size_t>(order), fixed,
                  &plan);
    if (plan.bits < best.bits) best = plan;
  }
  return best;
}

// Bits a column written with `plan` can take at most (for reserving room).
size_t MaxIntBits(const IntPlan& plan, size_t n) {
  return kParamBits + 3 * (kWideLengthBits + 64) +
         n * static_cast<size_t>(std::max(plan.w2 + 2, 16));
}

void PutWide(uint64_t v, BitWriter::Cursor* c) {
  const int width = Width(v);
  c->Write(static_cast<uint64_t>(width), kWideLengthBits);
  if (width > 0) c->Write(v, width);
}

template <int K>
void WriteResiduals(const uint64_t* u, size_t n, const IntPlan& plan,
                    BitWriter::Cursor* cursor) {
  BitWriter::Cursor c = *cursor;
  const uint64_t base = plan.base;
  const int w1 = plan.w1;
  const int w2 = plan.w2;
  const uint64_t small = uint64_t{1} << w1;
  if (!plan.runs && w2 >= 1 && w2 <= kMaxW1) {
    // The plain and fixed shapes of the common widths: in the kernels.
    internal::KernelWriter kw = {c.buf, c.used, c.p};
    internal::ActiveCodecKernels().write_plain(u, n, K, base, w1, w2, &kw);
    *cursor = {kw.buf, kw.used, kw.p};
    return;
  }
  if (!plan.runs && w1 == w2 && w2 >= 1) {
    for (size_t i = K; i < n; ++i) c.Write(ZigZag(Diff<K>(u, i) - base), w2);
    *cursor = c;
    return;
  }
  if (!plan.runs && w2 < 64) {
    // Branch-free: the flag is data.
    const int shift = w2 - w1;
    for (size_t i = K; i < n; ++i) {
      const uint64_t z = ZigZag(Diff<K>(u, i) - base);
      const uint64_t wide = z >= small ? 1 : 0;
      c.Write(z | (wide << w2), w1 + 1 + (shift & -static_cast<int>(wide)));
    }
    *cursor = c;
    return;
  }
  if (!plan.runs) {
    for (size_t i = K; i < n; ++i) {
      const uint64_t z = ZigZag(Diff<K>(u, i) - base);
      if (z < small) {
        c.Write(z, w1 + 1);
      } else {
        c.Write(1, 1);
        c.Write(z, w2);
      }
    }
    *cursor = c;
    return;
  }
  for (size_t i = K; i < n;) {
    const uint64_t z = ZigZag(Diff<K>(u, i) - base);
    if (z == 0) {
      uint64_t run = 1;
      while (i + run < n && run < kMaxRun && Diff<K>(u, i + run) == base) {
        ++run;
      }
      // "0", then gamma: (width - 1) zeros and the run in width bits.
      c.Write(run, 2 * Width(run));
      i += run;
      continue;
    }
    if (z < small) {
      c.Write((uint64_t{0b10} << w1) | z, w1 + 2);
    } else if (w2 < 63) {
      c.Write((uint64_t{0b11} << w2) | z, w2 + 2);
    } else {
      c.Write(0b11, 2);
      c.Write(z, w2);
    }
    ++i;
  }
  *cursor = c;
}

void WriteInts(const uint64_t* u, size_t n, bool first_known,
               const IntPlan& plan, BitWriter* w) {
  w->Reserve(MaxIntBits(plan, n));
  BitWriter::Cursor c = w->Begin();
  c.Write((static_cast<uint64_t>(plan.order) << 14) |
              (static_cast<uint64_t>(plan.runs ? 1 : 0) << 13) |
              (static_cast<uint64_t>(plan.w1) << 7) |
              static_cast<uint64_t>(plan.w2),
          kParamBits);
  PutWide(ZigZag(plan.base), &c);
  if (plan.order >= 1 && !first_known) PutWide(ZigZag(u[0]), &c);
  if (plan.order == 2) PutWide(ZigZag(u[1] - u[0]), &c);
  WithOrder(plan.order, [&](auto k) {
    WriteResiduals<decltype(k)::value>(u, n, plan, &c);
  });
  w->End(c);
}

bool GetWide(BitReader* r, uint64_t* v) {
  const int width = static_cast<int>(r->Read(kWideLengthBits));
  if (width > 64) return false;
  *v = r->Read(width);
  return true;
}

// Decoding runs in two phases: the residual codes are unpacked into an
// array of zigzagged residuals (the bit-serial part), then one tight loop
// undoes the differencing and another maps the integers to the output
// (float32 patterns, int64, decimals). Apart, each loop is simple enough to
// be vectorized or to run at one value per cycle; fused, they were one long
// dependency chain per value. The bulk of both phases runs in the kernels
// of codec_kernels.h (portable or x86-64-v3, chosen at startup); the
// unpackers below do the last few codes of a column (within 8 bytes of the
// input's end) with the checked reader, and the rare shapes.

BitReader::RawState ToRaw(const internal::KernelBits& k) {
  return {k.p, k.end, k.buf, k.avail};
}
internal::KernelBits ToKernel(const BitReader::RawState& s) {
  return {s.p, s.end, s.buf, s.avail};
}

// Fixed shape, the codes [i, m) with the checked reader (the rest of a
// column whose bulk a kernel unpacked).
void ReadFixedRest(BitReader* reader, size_t i, size_t m, int w,
                   uint64_t* __restrict z) {
  BitReader r = *reader;
  for (; i < m; ++i) {
    r.Ensure(w);
    z[i] = r.TopBits(w);
    r.Consume(w);
  }
  *reader = r;
}

// Fixed shape: every residual in w bits, 1 <= w <= 55. z[0, m).
void ReadFixed(BitReader* reader, size_t m, int w, uint64_t* __restrict z) {
  size_t i = 0;
  if (reader->ok()) {
    internal::KernelBits k = ToKernel(reader->raw_state());
    i = internal::ActiveCodecKernels().unpack_fixed(&k, m, w, z);
    reader->set_raw_state(ToRaw(k));
  }
  ReadFixedRest(reader, i, m, w, z);
}

// Plain shape with w1 <= w2 <= 55, the codes [i, m): peeks the longer code
// and picks, branch-free.
void ReadPlainNarrowRest(BitReader* reader, size_t i, size_t m, int w1,
                         int w2, uint64_t* __restrict z) {
  BitReader r = *reader;
  const int w1p = w1 + 1;
  const int w2p = w2 + 1;
  const int shift = w2 - w1;
  const uint64_t mask2 = (uint64_t{1} << w2) - 1;
  for (; i < m; ++i) {
    r.Ensure(w2p);
    const uint64_t p = r.TopBits(w2p);
    const uint64_t wide = p >> w2;  // the flag bit, 0 or 1
    // Arithmetic, not a select: the flag is data, a branch on it would
    // mispredict. A short code is the w1 + 1 top bits of p.
    const int sh = shift & static_cast<int>(wide - 1);
    z[i] = (p >> sh) & mask2;
    r.Consume(w1p + (shift & -static_cast<int>(wide)));
  }
  *reader = r;
}

// Plain shape, any widths.
void ReadPlain(BitReader* reader, size_t m, int w1, int w2,
               uint64_t* __restrict z) {
  BitReader r = *reader;
  const int w1p = w1 + 1;
  const uint64_t small = uint64_t{1} << w1;
  for (size_t i = 0; i < m; ++i) {
    const uint64_t p = r.Peek(w1p);
    if (p < small) {
      r.Consume(w1p);
      z[i] = p;
    } else {
      r.Consume(1);
      z[i] = r.Read(w2);
    }
  }
  *reader = r;
}

// Runs shape (a run of zero residuals unpacks as zigzag codes 0). False on
// a bad run.
bool ReadRuns(BitReader* reader, size_t m, int w1, int w2,
              uint64_t* __restrict z) {
  BitReader r = *reader;
  bool ok = true;
  for (size_t i = 0; i < m;) {
    r.Ensure(18);
    const uint64_t p = r.Bits(2);
    if (p < 0b10) {
      r.Consume(1);
      const int zeros = std::countl_zero(r.Bits(16) << 48);
      if (zeros > 7) {  // runs are at most 255
        ok = false;
        break;
      }
      r.Consume(zeros);
      const uint64_t run = r.Bits(zeros + 1);
      r.Consume(zeros + 1);
      if (run == 0 || run > m - i) {
        ok = false;
        break;
      }
      std::fill(z + i, z + i + run, uint64_t{0});
      i += run;
      continue;
    }
    r.Consume(2);
    z[i++] = r.Read(p == 0b10 ? w1 : w2);
  }
  *reader = r;
  return ok;
}

// Where ReadInts puts a decoded column.
struct IntOutput {
  enum Kind { kU64, kFloat32, kInteger, kDecimal };
  Kind kind = kU64;
  uint64_t* u64 = nullptr;  // kU64
  double* values = nullptr;  // the others
  double pow10 = 1.0;        // kDecimal
  // kU64, optional: also mixes the column, as times, into this check
  // (check->times == u64, no points mixed yet) and leaves the column's
  // range in check->min_time and max_time.
  internal::KernelColumnsCheck* check = nullptr;
};

// Completes IntOutput::check for the column u[0, n), of which the kernel
// checked u[begin, end) (its range included).
void FinishCheck(const uint64_t* u, size_t n, size_t begin, size_t end,
                 internal::KernelColumnsCheck* check) {
  const internal::CodecKernels& kernels = internal::ActiveCodecKernels();
  kernels.columns_check(check, n);
  const int64_t* t = reinterpret_cast<const int64_t*>(u);
  const auto widen = [&](size_t b, size_t e) {
    if (b == e) return;
    int64_t lo, hi;
    kernels.min_max(t + b, e - b, &lo, &hi);
    check->min_time = std::min(check->min_time, lo);
    check->max_time = std::max(check->max_time, hi);
  };
  widen(0, begin);
  widen(end, n);
}

// Decodes a column written by WriteInts, n values, into `out`. False if
// the parameters are invalid; truncation shows in r->ok() (the values are
// then unspecified but every write stays within the n outputs).
bool ReadInts(BitReader* r, size_t n, bool first_known, uint64_t first,
              const IntOutput& out) {
  const uint64_t params = r->Read(kParamBits);
  const int order = static_cast<int>(params >> 14);
  const bool runs = ((params >> 13) & 1) != 0;
  const int w1 = static_cast<int>((params >> 7) & 63);
  const int w2 = static_cast<int>(params & 127);
  uint64_t base;
  if (order > 2 || static_cast<size_t>(order) >= n + (order == 0 ? 1 : 0) ||
      w1 > kMaxW1 || w2 > 64 || !GetWide(r, &base)) {
    return false;
  }
  base = UnZigZag(base);
  Scratch& scratch = ThreadScratch();
  uint64_t* const u =
      out.kind == IntOutput::kU64 ? out.u64 : Scratch::Get(scratch.z, n);
  uint64_t u0 = 0;
  uint64_t d1 = 0;
  if (order >= 1) {
    if (first_known) {
      u0 = first;
    } else {
      uint64_t z;
      if (!GetWide(r, &z)) return false;
      u0 = UnZigZag(z);
    }
    u[0] = u0;
  }
  if (order == 2) {
    uint64_t z;
    if (!GetWide(r, &z)) return false;
    d1 = UnZigZag(z);
    u[1] = u0 + d1;
  }
  const size_t k = static_cast<size_t>(order);
  const size_t m = n - k;
  uint64_t* const z = u + k;
  const internal::CodecKernels& kernels = internal::ActiveCodecKernels();
  if (!runs && w2 <= kMaxW1 && w1 <= w2 && w2 >= 1) {
    // The plain and fixed shapes (w1 == w2 >= 1) of the common widths:
    // unpacked and integrated in one kernel pass; the last codes (within 8
    // bytes of the input's end) with the checked reader, integrated from
    // where the kernel stopped.
    size_t done = 0;
    if (r->ok()) {
      internal::KernelBits bits = ToKernel(r->raw_state());
      const uint64_t prev = order == 2 ? u0 + d1 : u0;
      if (out.check != nullptr) {
        kernels.columns_check(out.check, k);  // u[0, k), set above
        done = kernels.unpack_sum_check(&bits, m, w1, w2, order, base, prev, d1,
                                        z, out.check);
      } else {
        done = kernels.unpack_sum(&bits, m, w1, w2, order, base, prev, d1, z);
      }
      r->set_raw_state(ToRaw(bits));
    }
    if (w1 == w2) {
      ReadFixedRest(r, done, m, w2, z);
    } else {
      ReadPlainNarrowRest(r, done, m, w1, w2, z);
    }
    // u[k + done - 1] and the delta before it exist for order >= 1 (u[0],
    // u[1] are set above); order 0 needs neither.
    const uint64_t prev = order >= 1 ? u[k + done - 1] : 0;
    const uint64_t delta = order == 2 ? prev - u[k + done - 2] : 0;
    kernels.integrate(order, z + done, m - done, base, prev, delta, z + done);
    if (out.check != nullptr) FinishCheck(u, n, k, k + done, out.check);
  } else {
    if (runs) {
      if (!ReadRuns(r, m, w1, w2, z)) return false;
    } else {
      ReadPlain(r, m, w1, w2, z);
    }
    kernels.integrate(order, z, m, base, order == 2 ? u0 + d1 : u0, d1, z);
    if (out.check != nullptr) FinishCheck(u, n, 0, 0, out.check);
  }
  switch (out.kind) {
    case IntOutput::kU64:
      break;
    case IntOutput::kFloat32:
      kernels.map_float32(u, n, out.values);
      break;
    case IntOutput::kInteger:
      kernels.map_integer(u, n, out.values);
      break;
    case IntOutput::kDecimal:
      kernels.map_decimal(u, n, out.pow10, out.values);
      break;
  }
  if (n > kKeepEntries) scratch.ReleaseIfLarge();
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
// Written with selects rather than branches: the choice is data.
template <int W>
inline __attribute__((always_inline)) XorStep<W> ChooseXor(uint64_t x,
                                                           int prev_lead) {
  static constexpr std::array<uint8_t, W + 1> kIndex = LeadIndexTable<W>();
  if (x == 0) return {0, 1, 0};
  const int lead = std::countl_zero(x) - (64 - W);
  const int idx = kIndex[static_cast<size_t>(lead)];
  const int rlead = XorTraits<W>::kLeads[static_cast<size_t>(idx)];
  const int new_lead_bits = 3 + 3 + W - rlead;
  const int same_lead_bits = 2 + W - prev_lead;
  const bool use_same = lead >= prev_lead && same_lead_bits <= new_lead_bits;
  int code = use_same ? 1 : 2;
  int bits = use_same ? same_lead_bits : new_lead_bits;
  const int trail = std::countr_zero(x);
  const int centre = 3 + 3 + XorTraits<W>::kLenBits + (W - rlead - trail);
  code = centre < bits ? 3 : code;
  bits = centre < bits ? centre : bits;
  return {code, bits, idx};
}

// Bits of the codes for values [begin, end) (begin >= 1), starting with
// lead 0: ChooseXor's sizes, with all that does not depend on the previous
// lead taken off the loop's chain. ChooseXor keeps the previous lead (code
// "0" or "10") exactly when lo <= prev_lead <= hi below (for "10": at
// least rlead - 4, so that it costs no more than a new lead, and at least
// 2 + W - centre, so that it costs no more than a centre window), else
// takes rlead at min(new lead, centre) bits; the chain is two compares and
// a select (ChooseXor's was ~8 operations).
template <int W>
uint64_t XorCodeBits(const uint64_t* u, size_t begin, size_t end) {
  static constexpr std::array<uint8_t, W + 1> kIndex = LeadIndexTable<W>();
  uint64_t bits = 0;
  int prev_lead = 0;
  for (size_t i = begin; i < end; ++i) {
    const uint64_t x = u[i] ^ u[i - 1];
    const bool zero = x == 0;
    const int lead = zero ? W : std::countl_zero(x) - (64 - W);
    const int rlead = XorTraits<W>::kLeads[kIndex[static_cast<size_t>(lead)]];
    const int trail = zero ? W : std::countr_zero(x);
    const int centre = 3 + 3 + XorTraits<W>::kLenBits + (W - rlead - trail);
    const int renew = std::min(3 + 3 + W - rlead, centre);
    const int lo = zero ? 0 : std::max(rlead - 4, 2 + W - centre);
    const bool keep = lo <= prev_lead && prev_lead <= lead;
    bits +=
        static_cast<uint64_t>(keep ? (zero ? 1 : 2 + W - prev_lead) : renew);
    prev_lead = keep ? prev_lead : rlead;
  }
  return bits;
}

template <int W>
uint64_t XorBits(const uint64_t* u, size_t n) {
  return W + XorCodeBits<W>(u, 1, n);
}

// Whether an estimate of XorBits from kXorSampleBlocks evenly spaced
// blocks of kXorBlock values (exact for short columns) is at most `limit`.
// The estimate only grows with each block: it stops at the first that
// takes it past the limit (on float32 telemetry, XOR is often far worse).
constexpr size_t kXorSampleBlocks = 8;
constexpr uint64_t kXorPruneMargin = 32;
constexpr size_t kXorBlock = 32;

template <int W>
bool XorEstimateAtMost(const uint64_t* u, size_t n, uint64_t limit) {
  if (n < 4 * kXorSampleBlocks * kXorBlock) return XorBits<W>(u, n) <= limit;
  const size_t stride = (n - 1 - kXorBlock) / (kXorSampleBlocks - 1);
  uint64_t bits = 0;
  for (size_t b = 0; b < kXorSampleBlocks; ++b) {
    const size_t begin = 1 + b * stride;
    bits += XorCodeBits<W>(u, begin, begin + kXorBlock);
    if (W + bits * (n - 1) / (kXorSampleBlocks * kXorBlock) > limit) {
      return false;
    }
  }
  return true;
}

// Bits of a column of n values at most (for reserving room).
template <int W>
size_t MaxXorBits(size_t n) {
  return n * (6 + XorTraits<W>::kLenBits + W);
}

template <int W>
void WriteXor(const uint64_t* u, size_t n, BitWriter* w) {
  constexpr int kLenBits = XorTraits<W>::kLenBits;
  w->Reserve(MaxXorBits<W>(n));
  BitWriter::Cursor c = w->Begin();
  c.Write(u[0], W);
  int prev_lead = 0;
  for (size_t i = 1; i < n; ++i) {
    const uint64_t x = u[i] ^ u[i - 1];
    const XorStep<W> s = ChooseXor<W>(x, prev_lead);
    switch (s.code) {
      case 0:
        c.Write(0, 1);
        break;
      case 1:
        // 2 + W - lead bits; for W = 64 that fits one write if lead >= 2.
        if (W + 2 - prev_lead <= 64) {
          c.Write((uint64_t{0b10} << (W - prev_lead)) | x, W + 2 - prev_lead);
        } else {
          c.Write(0b10, 2);
          c.Write(x, W - prev_lead);
        }
        break;
      case 2:
        prev_lead = XorTraits<W>::kLeads[s.lead_idx];
        c.Write((0b110 << 3) | static_cast<uint64_t>(s.lead_idx), 6);
        c.Write(x, W - prev_lead);
        break;
      default: {
        prev_lead = XorTraits<W>::kLeads[s.lead_idx];
        const int trail = std::countr_zero(x);
        const int len = W - prev_lead - trail;
        c.Write((uint64_t{0b111} << (3 + kLenBits)) |
                    (static_cast<uint64_t>(s.lead_idx) << kLenBits) |
                    static_cast<uint64_t>(len),
                6 + kLenBits);
        c.Write(x >> trail, len);
        break;
      }
    }
  }
  w->End(c);
}

// Reads up to 64 bits (n in 1..64) from a local reader.
inline uint64_t ReadUpTo64(BitReader& r, int n) {
  if (n <= 56) {
    r.Ensure(n);
    const uint64_t v = r.Bits(n);
    r.Consume(n);
    return v;
  }
  return r.Read(n);
}

template <int W>
bool ReadXor(BitReader* reader, size_t n, uint64_t* __restrict out) {
  constexpr int kLenBits = XorTraits<W>::kLenBits;
  constexpr int kHeaderBits = 6 + kLenBits;
  BitReader r = *reader;
  uint64_t value = r.Read(W);
  out[0] = value;
  int lead = 0;
  bool ok = true;
  for (size_t i = 1; i < n; ++i) {
    r.Ensure(kHeaderBits);
    const uint64_t h = r.TopBits(kHeaderBits);
    const uint64_t p = h >> (kHeaderBits - 3);
    if (p == 0b111) [[unlikely]] {
      lead = XorTraits<W>::kLeads[(h >> kLenBits) & 7];
      r.Consume(kHeaderBits);
      const int len = static_cast<int>(h & ((1u << kLenBits) - 1));
      if (len == 0 || lead + len > W) {
        ok = false;
        break;
      }
      value ^= ReadUpTo64(r, len) << (W - lead - len);
      out[i] = value;
      continue;
    }
    // "0", "10" and "110" with selects, not branches: the code is data.
    const bool same = p < 0b100;
    const bool new_lead = p == 0b110;
    lead = new_lead ? XorTraits<W>::kLeads[(h >> kLenBits) & 7] : lead;
    r.Consume(same ? 1 : new_lead ? 6 : 2);
    const int len = same ? 0 : W - lead;
    if (len <= 56) [[likely]] {
      r.Ensure(len);
      value ^= r.Bits(len);
      r.Consume(len);
    } else {
      value ^= r.Read(len);
    }
    out[i] = value;
  }
  *reader = r;
  return ok && reader->ok();
}

// ---------------------------------------------------------------------------
// ALP_rd, the "real doubles" codec of ALP (Afroozeh, Kuffo, Boncz, SIGMOD
// 2024), for values that are neither float32, integers nor short decimals
// (a computed rate, say). Each 64-bit pattern is cut into a left part (the
// top L bits: sign, exponent and the top of the mantissa, which take few
// distinct values in a chunk) coded as an index into a dictionary of
// 2^b entries, and a right part (the low 64 - L bits, noise) stored
// verbatim. Both are fixed-width, so the decoder unpacks them without a
// per-value dependency and joins them in a vectorized loop: unlike the
// XOR code, whose every code's length depends on the previous one.
// A value whose left part is not in the dictionary is an exception.
//   L:5 (kAlpMinLeft..kAlpMaxLeft)  b:2  dict: 2^b x L bits
//   indices: n x b bits  rights: n x (64 - L) bits
// L >= 9 keeps the right parts within the 55 bits the fixed unpacker
// reads at once; real doubles need L >= 12 anyway (sign and exponent).

constexpr int kAlpMinLeft = 9;
constexpr int kAlpMaxLeft = 16;
constexpr int kAlpLeftBits = 5;
constexpr int kAlpIndexBits = 2;  // the field holding b, 0..3
constexpr int kAlpMaxDict = 8;
constexpr size_t kAlpSamples = 256;
// What an exception costs in the exception list (gap varint + 8 bytes),
// for the sample estimate; the exact size counts the real varints.
constexpr uint64_t kAlpExceptionBits = 80;

struct AlpRdPlan {
  int left_bits = 0;  // 0: the codec does not apply
  int index_bits = 0;
  std::array<uint64_t, kAlpMaxDict> dict{};  // padded with dict[0]
};

// Picks L and the dictionary from a sample of the values: the distinct
// left parts at L = kAlpMaxLeft are counted and sorted, and each shorter L
// merges adjacent ones (its left parts are theirs shifted by one bit). For
// every L the 2^b most frequent left parts make the dictionary, and the
// (L, b) with the smallest estimated size wins. An encoder heuristic: any
// choice writes a valid column (values outside the dictionary become
// exceptions); the exact size is computed afterwards.
AlpRdPlan PlanAlpRd(std::span<const double> values) {
  const size_t n = values.size();
  const size_t k = std::min(n, kAlpSamples);
  // The distinct top-16-bit keys of the sample and their counts, in a
  // small open-addressing table (a sort of the sample, comparison or
  // radix, was a fifth of the encode time of noise values: mispredictions,
  // and counters incremented in a chain through memory). Only the few
  // distinct keys are sorted.
  constexpr size_t kSlots = 512;  // >= 2 * kAlpSamples: probes stay short
  std::array<uint32_t, kSlots> slot_key;  // key + 1; 0: empty
  std::array<uint32_t, kSlots> slot_count;
  slot_key.fill(0);
  std::array<uint64_t, kAlpSamples> run_left;
  std::array<uint32_t, kAlpSamples> run_count;
  std::array<uint16_t, kAlpSamples> slot_of;
  size_t runs = 0;
  EvenlySpaced at(n, k);
  for (size_t j = 0; j < k; ++j, at.Next()) {
    const uint32_t key = static_cast<uint32_t>(Bits(values[at.index()]) >>
                                               (64 - kAlpMaxLeft));
    size_t h = (key * 0x9e3779b1u) >> (32 - 9);
    while (slot_key[h] != 0 && slot_key[h] != key + 1) h = (h + 1) % kSlots;
    if (slot_key[h] == 0) {
      slot_key[h] = key + 1;
      slot_count[h] = 0;
      slot_of[runs++] = static_cast<uint16_t>(h);
    }
    ++slot_count[h];
  }
  static_assert(kSlots == 1 << 9 && kSlots >= 2 * kAlpSamples);
  std::sort(slot_of.begin(), slot_of.begin() + runs,
            [&](uint16_t a, uint16_t b) { return slot_key[a] < slot_key[b]; });
  // The runs of equal left parts, in order: run_left[r] occurs
  // run_count[r] times.
  for (size_t r = 0; r < runs; ++r) {
    run_left[r] = slot_key[slot_of[r]] - 1;
    run_count[r] = slot_count[slot_of[r]];
  }
  AlpRdPlan best;
  uint64_t best_bits = std::numeric_limits<uint64_t>::max();
  for (int left = kAlpMaxLeft; left >= kAlpMinLeft; --left) {
    if (left < kAlpMaxLeft) {
      size_t merged = 0;
      for (size_t r = 0; r < runs; ++r) {
        const uint64_t l = run_left[r] >> 1;
        if (merged != 0 && run_left[merged - 1] == l) {
          run_count[merged - 1] += run_count[r];
        } else {
          run_left[merged] = l;
          run_count[merged++] = run_count[r];
        }
      }
      runs = merged;
    }
    // The kAlpMaxDict largest runs, by count (insertion into a short
    // sorted list).
    std::array<uint64_t, kAlpMaxDict> top_left{};
    std::array<uint32_t, kAlpMaxDict> top_count{};
    for (size_t r = 0; r < runs; ++r) {
      uint32_t count = run_count[r];
      uint64_t l = run_left[r];
      for (int t = 0; t < kAlpMaxDict && count > top_count[kAlpMaxDict - 1];
           ++t) {
        if (count > top_count[t]) {
          std::swap(count, top_count[t]);
          std::swap(l, top_left[t]);
        }
      }
    }
    const int right = 64 - left;
    size_t covered = 0;
    for (int b = 0; b <= 3; ++b) {
      for (int t = b == 0 ? 0 : 1 << (b - 1); t < 1 << b; ++t) {
        covered += top_count[t];
      }
      const uint64_t misses = k - covered;
      if (misses * kMaxExceptionFraction > k) continue;
      const uint64_t bits = k * static_cast<uint64_t>(b + right) +
                            misses * kAlpExceptionBits +
                            (uint64_t{1} << b) * left * k / n;
      if (bits < best_bits) {
        best_bits = bits;
        best.left_bits = left;
        best.index_bits = b;
        for (int t = 0; t < kAlpMaxDict; ++t) {
          best.dict[t] = t < 1 << b && top_count[t] != 0 ? top_left[t]
                                                         : top_left[0];
        }
      }
      if (covered == k) break;  // a larger dictionary only costs more
    }
  }
  return best;
}

// Bits of the column besides the per-value codes.
uint64_t AlpRdFixedBits(const AlpRdPlan& plan) {
  return kAlpLeftBits + kAlpIndexBits +
         (uint64_t{1} << plan.index_bits) *
             static_cast<uint64_t>(plan.left_bits);
}

// idx and right as AlpRdSplit made them (exception slots: index 0).
void WriteAlpRd(const AlpRdPlan& plan, const uint64_t* idx,
                const uint64_t* right, size_t n, BitWriter* w) {
  const int b = plan.index_bits;
  const int rbits = 64 - plan.left_bits;
  w->Reserve(AlpRdFixedBits(plan) + n * static_cast<size_t>(b + rbits));
  BitWriter::Cursor c = w->Begin();
  c.Write(static_cast<uint64_t>(plan.left_bits) << kAlpIndexBits |
              static_cast<uint64_t>(b),
          kAlpLeftBits + kAlpIndexBits);
  for (int t = 0; t < 1 << b; ++t) c.Write(plan.dict[t], plan.left_bits);
  if (b > 0) {
    // Up to 8 indices per write (<= 24 bits).
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t group = 0;
      for (size_t j = 0; j < 8; ++j) group = group << b | idx[i + j];
      c.WriteShort(group, 8 * b);
    }
    for (; i < n; ++i) c.WriteShort(idx[i], b);
  }
  for (size_t i = 0; i < n; ++i) c.WriteShort(right[i], rbits);
  w->End(c);
}

// Decodes an ALP_rd column of n values into out. False if its parameters
// are invalid; truncation shows in r->ok().
bool ReadAlpRd(BitReader* r, size_t n, double* out) {
  const uint64_t params = r->Read(kAlpLeftBits + kAlpIndexBits);
  const int left = static_cast<int>(params >> kAlpIndexBits);
  const int b = static_cast<int>(params & 3);
  if (left < kAlpMinLeft || left > kAlpMaxLeft) return false;
  uint64_t dict[kAlpMaxDict];
  for (int t = 0; t < 1 << b; ++t) dict[t] = r->Read(left);
  for (int t = 1 << b; t < kAlpMaxDict; ++t) dict[t] = dict[0];
  if (!r->ok()) return false;
  Scratch& scratch = ThreadScratch();
  uint64_t* const idx = b > 0 ? Scratch::Get(scratch.z, n) : nullptr;
  uint64_t* const right = Scratch::Get(scratch.a, n);
  if (b > 0) ReadFixed(r, n, b, idx);
  ReadFixed(r, n, 64 - left, right);
  internal::ActiveCodecKernels().alp_rd_join(idx, right, n, dict, 64 - left,
                                             out);
  if (n > kKeepEntries) scratch.ReleaseIfLarge();
  return r->ok();
}

// ---------------------------------------------------------------------------
// Value mappings: each codec but kXor64 maps values to integers (or float32
// patterns); a value that does not map is an exception, stored raw, and its
// slot takes the previous mapped value so that it costs ~nothing.

// Decimal: v == double(i) / 10^e, bit-exactly. Returns false if not.
template <bool kInteger>
bool ToDecimalImpl(double v, double pow10, int64_t* i) {
  if constexpr (kInteger) {
    if (!(std::fabs(v) < 9.0e18)) return false;
    *i = static_cast<int64_t>(v);
    return Bits(static_cast<double>(*i)) == Bits(v);
  } else {
    const double s = v * pow10;
    // Round to nearest with the 1.5 * 2^52 trick; exact for |s| < 2^51.
    if (!(std::fabs(s) < 2251799813685248.0)) return false;
    constexpr double kMagic = 6755399441055744.0;
    *i = static_cast<int64_t>((s + kMagic) - kMagic);
    return Bits(static_cast<double>(*i) / pow10) == Bits(v);
  }
}

bool ToDecimal(double v, int e, int64_t* i) {
  return e == 0 ? ToDecimalImpl<true>(v, 1.0, i)
                : ToDecimalImpl<false>(v, kPow10[static_cast<size_t>(e)], i);
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
// +0.0), so that deltas of nearby values are small. The decoder's inverse
// is CodecKernels::map_float32.
uint64_t OrderedFromFloat32(uint32_t b) {
  const int64_t s = (b >> 31) != 0 ? -static_cast<int64_t>(b & 0x7fffffff) - 1
                                   : static_cast<int64_t>(b);
  return static_cast<uint64_t>(s);
}

// Smallest decimal exponent that holds (most of) a sample of the values, or
// -1 if too many of them are not decimals of <= kMaxExponent digits.
int DetectExponent(std::span<const double> values) {
  constexpr size_t kSamples = 16;
  const size_t n = values.size();
  const size_t k = std::min(n, kSamples);
  int exponent = 0;
  size_t misses = 0;
  EvenlySpaced at(n, k);
  for (size_t j = 0; j < k; ++j, at.Next()) {
    const double v = values[at.index()];
    int e = 0;
    int64_t unused;
    while (e <= kMaxExponent && !ToDecimal(v, e, &unused)) ++e;
    if (e > kMaxExponent) {
      if (++misses * 4 > k) return -1;  // the answer cannot change
    } else {
      exponent = std::max(exponent, e);
    }
  }
  return exponent;
}

uint64_t ExceptionBits(const std::vector<uint32_t>& positions) {
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

// Maps values with `map` (bool(double, uint64_t*)) into u; false if too many
// exceptions (or none mapped). Exception slots repeat the previous mapped
// value (the first mapped value for leading exceptions).
template <typename Map>
bool MapValues(std::span<const double> values, Map map, uint64_t* u,
               std::vector<uint32_t>* exc) {
  const size_t n = values.size();
  const size_t limit = n / kMaxExceptionFraction;
  exc->clear();
  size_t i = 0;
  // Leading exceptions, until the first mapped value.
  for (; i < n; ++i) {
    uint64_t m;
    if (map(values[i], &m)) {
      std::fill(u, u + i, m);
      u[i] = m;
      break;
    }
    if (exc->size() >= limit) return false;
    exc->push_back(static_cast<uint32_t>(i));
  }
  if (i == n) return false;
  for (++i; i < n; ++i) {
    if (!map(values[i], &u[i])) [[unlikely]] {
      if (exc->size() >= limit) return false;
      exc->push_back(static_cast<uint32_t>(i));
      u[i] = u[i - 1];
    }
  }
  return true;
}

struct ValuePlan {
  ChunkValueCodec codec = ChunkValueCodec::kXor64;
  int exponent = 0;
  IntPlan ints;  // integer codecs
  AlpRdPlan alp;  // kAlpRd
  const uint64_t* alp_idx = nullptr;  // kAlpRd: indices; u: right parts
  uint64_t bits = std::numeric_limits<uint64_t>::max();
  const uint64_t* u = nullptr;  // mapped values (or patterns), in scratch
  const std::vector<uint32_t>* exc = nullptr;  // exception positions
};

template <bool kInteger>
bool MapDecimals(std::span<const double> values, int e, uint64_t* u,
                 std::vector<uint32_t>* exc) {
  const double pow10 = kPow10[static_cast<size_t>(e)];
  if constexpr (!kInteger) {
    // One vectorized pass maps every value; only a chunk with values that
    // do not map takes the scalar path that collects them as exceptions.
    if (internal::ActiveCodecKernels().decimal_patterns(
            values.data(), values.size(), pow10, u) == 0) {
      exc->clear();
      return true;
    }
  }
  return MapValues(
      values,
      [pow10](double v, uint64_t* m) {
        int64_t i;
        if (!ToDecimalImpl<kInteger>(v, pow10, &i)) return false;
        *m = static_cast<uint64_t>(i);
        return true;
      },
      u, exc);
}

// Picks the value codec: detection passes and exact sizes, no trial
// encodes; a candidate is sized only when it can still win. s.b and s.c
// hold the values' float32 patterns as the scan_points kernel maps them,
// f32_misses how many values are not float32.
void PlanValues(std::span<const double> values, size_t f32_misses, Scratch& s,
                ValuePlan* best) {
  const size_t n = values.size();
  static const std::vector<uint32_t> kNoExceptions;
  best->exc = &kNoExceptions;

  // Integers and few-digit decimals.
  const int e = DetectExponent(values);
  uint64_t* const dec = Scratch::Get(s.a, n);
  if (e >= 0 && (e == 0 ? MapDecimals<true>(values, e, dec, &s.positions)
                        : MapDecimals<false>(values, e, dec, &s.positions))) {
    const IntPlan plan = PlanInts(dec, n, false);
    best->codec =
        e == 0 ? ChunkValueCodec::kInteger : ChunkValueCodec::kDecimal;
    best->exponent = e;
    best->ints = plan;
    best->bits = plan.bits + ExceptionBits(s.positions);
    best->u = dec;
    best->exc = &s.positions;
  }
  // float32 widened to float64: not worth a look when the decimal codec
  // already spends under 12 bits a value. The kernel mapped every value;
  // only a chunk with values that are not float32 takes the scalar path
  // that collects them as exceptions.
  uint64_t* const f32 = s.b.data();
  uint64_t* const ordered = s.c.data();
  const auto map_float32 = [&] {
    if (f32_misses == 0) {
      s.positions2.clear();
      return true;
    }
    if (!MapValues(
            values,
            [](double v, uint64_t* m) {
              uint32_t b;
              if (!ToFloat32(v, &b)) return false;
              *m = b;
              return true;
            },
            f32, &s.positions2)) {
      return false;
    }
    for (size_t i = 0; i < n; ++i) {
      ordered[i] = OrderedFromFloat32(static_cast<uint32_t>(f32[i]));
    }
    return true;
  };
  if (best->bits > 12 * n + 64 && map_float32()) {
    const uint64_t exc_bits = ExceptionBits(s.positions2);
    const IntPlan plan = PlanInts(ordered, n, false);
    const uint64_t int_bits = plan.bits + exc_bits;
    // The XOR code is sized exactly only if a sample says it may win
    // (kXorPruneMargin: an estimate 1/32 above the integer code's size
    // rules it out).
    uint64_t xor_bits = std::numeric_limits<uint64_t>::max();
    const uint64_t margin = int_bits + int_bits / kXorPruneMargin;
    if (exc_bits <= margin &&
        XorEstimateAtMost<32>(f32, n, margin - exc_bits)) {
      xor_bits = XorBits<32>(f32, n) + exc_bits;
    }
    if (std::min(xor_bits, int_bits) < best->bits) {
      best->exponent = 0;
      best->exc = &s.positions2;
      if (int_bits < xor_bits) {
        best->codec = ChunkValueCodec::kFloat32Int;
        best->ints = plan;
        best->bits = int_bits;
        best->u = ordered;
      } else {
        best->codec = ChunkValueCodec::kXor32;
        best->bits = xor_bits;
        best->u = f32;
      }
    }
  }
  // The codecs for real doubles, when the others did poorly: ALP_rd if its
  // left parts take few values (sized exactly: one pass), else the XOR
  // code. The XOR code is sized exactly only if ALP_rd does not apply or a
  // sample puts it within 1/32 of ALP_rd's size; with nothing to compare
  // with it is taken unsized.
  if (best->bits > 40 * n + 64) {
    uint64_t alp_bits = std::numeric_limits<uint64_t>::max();
    const AlpRdPlan alp = PlanAlpRd(values);
    uint64_t* const idx = Scratch::Get(s.e, n);
    uint64_t* const right = Scratch::Get(s.f, n);
    if (alp.left_bits != 0) {
      const size_t misses = internal::ActiveCodecKernels().alp_rd_split(
          values.data(), n, 64 - alp.left_bits, alp.dict.data(), idx, right);
      s.positions3.clear();
      if (misses * kMaxExceptionFraction <= n) {
        for (size_t i = 0; misses != 0 && i < n; ++i) {
          if (idx[i] == kAlpMaxDict) {
            s.positions3.push_back(static_cast<uint32_t>(i));
            idx[i] = 0;
          }
        }
        alp_bits = AlpRdFixedBits(alp) +
                   n * static_cast<uint64_t>(alp.index_bits + 64 -
                                             alp.left_bits) +
                   ExceptionBits(s.positions3);
      }
    }
    if (alp_bits < best->bits) {
      best->codec = ChunkValueCodec::kAlpRd;
      best->exponent = 0;
      best->bits = alp_bits;
      best->exc = &s.positions3;
      best->alp = alp;
      best->alp_idx = idx;
      best->u = right;
    }
    uint64_t* const raw = Scratch::Get(s.d, n);
    std::memcpy(raw, values.data(), n * sizeof(double));
    uint64_t xor_bits = 0;  // unsized
    if (best->bits != std::numeric_limits<uint64_t>::max()) {
      xor_bits = std::numeric_limits<uint64_t>::max();
      if (best->codec != ChunkValueCodec::kAlpRd ||
          XorEstimateAtMost<64>(raw, n,
                                alp_bits + alp_bits / kXorPruneMargin)) {
        xor_bits = XorBits<64>(raw, n);
      }
    }
    if (xor_bits < best->bits) {
      best->codec = ChunkValueCodec::kXor64;
      best->exponent = 0;
      best->bits = xor_bits;
      best->exc = &kNoExceptions;
      best->u = raw;
    }
  }
}

// ---------------------------------------------------------------------------
// Header.

struct Header {
  CommonHeader common;
  uint8_t version = 0;  // 2, or 3: no step and time columns
  uint32_t leader = 0;  // version 3: the series holding those columns
  uint32_t columns_check = 0;  // version 3: ColumnsCheck of those columns
  bool lane_check = false;     // version 3: ... or ColumnsCheckLanes
  bool regular_steps = false;
  ChunkValueCodec codec = ChunkValueCodec::kGorillaV1;
  int exponent = 0;
  uint64_t num_exceptions = 0;
  std::string_view rest;  // exception list and bitstream
};

absl::Status ParseHeaderV2(std::string_view chunk, Header* h) {
  if (absl::Status s = internal::ParseCommonHeader(chunk, &h->common);
      !s.ok()) {
    return s;
  }
  ChunkSummary& s = h->common.summary;
  const uint64_t count = s.count;
  std::string_view in = h->common.rest;
  h->version = static_cast<uint8_t>(chunk[0]);
  h->leader = 0;
  if (h->version == kVersion3) {
    uint64_t leader;
    if (!GetVarint(&in, &leader)) return Corrupt("truncated header");
    if (leader == 0 || leader > std::numeric_limits<uint32_t>::max()) {
      return Corrupt("bad leader series");
    }
    h->leader = static_cast<uint32_t>(leader);
    if (in.size() < 4) return Corrupt("truncated header");
    h->columns_check = static_cast<uint32_t>(
        static_cast<uint8_t>(in[0]) | static_cast<uint8_t>(in[1]) << 8 |
        static_cast<uint8_t>(in[2]) << 16 |
        static_cast<uint32_t>(static_cast<uint8_t>(in[3])) << 24);
    in.remove_prefix(4);
  }
  if (in.empty()) return Corrupt("truncated header");
  const uint8_t flags = static_cast<uint8_t>(in[0]);
  in.remove_prefix(1);
  if ((flags & ~kKnownFlags) != 0) return Corrupt("unknown flags");
  h->regular_steps = (flags & kFlagRegularSteps) != 0;
  h->lane_check = (flags & kFlagLaneCheck) != 0;
  if (h->lane_check && h->version != kVersion3) {
    return Corrupt("lane check flag in a chunk that is not a follower");
  }
  // A follower has no step column to leave out.
  if (h->regular_steps && h->version == kVersion3) {
    return Corrupt("regular steps flag in a follower chunk");
  }
  if (h->regular_steps &&
      (count < 2 || (s.max_step - s.min_step) % (count - 1) != 0)) {
    return Corrupt("bad regular steps");
  }
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
      codec > static_cast<int>(ChunkValueCodec::kAlpRd)) {
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
    if (h->codec == ChunkValueCodec::kXor64) {
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
  h->rest = in;
  return absl::OkStatus();
}

// Walks the exception list at the front of *in (n of them), checking the
// positions (< count); with `values`, patches them in. Leaves *in after it.
absl::Status ReadExceptions(std::string_view* in, uint64_t n, size_t count,
                            double* values) {
  uint64_t next = 0;
  for (uint64_t j = 0; j < n; ++j) {
    uint64_t gap, raw;
    if (!GetVarint(in, &gap) || !GetFixed64(in, &raw)) {
      return Corrupt("truncated exceptions");
    }
    if (gap >= count || next + gap >= count) {
      return Corrupt("bad exception position");
    }
    next += gap;
    if (values != nullptr) values[next] = std::bit_cast<double>(raw);
    ++next;
  }
  return absl::OkStatus();
}

// Decodes the body of a version 2 or 3 chunk. Version 2: all three columns,
// or only steps and times if `values` is null (a leader's columns for its
// followers; then `check`, if not null, gets some or all of the points
// mixed in as the time column is decoded: see IntOutput::check). Version
// 3: the values only; steps and times are the caller's (from the leader).
absl::Status DecodeBodyV2(const Header& h, uint64_t* steps, int64_t* times,
                          double* values,
                          internal::KernelColumnsCheck* check = nullptr) {
  const ChunkSummary& summary = h.common.summary;
  const size_t n = summary.count;
  // Exceptions first (byte-aligned), applied after the value column.
  const std::string_view exceptions = h.rest;
  std::string_view in = h.rest;
  if (absl::Status s = ReadExceptions(&in, h.num_exceptions, n, nullptr);
      !s.ok()) {
    return s;
  }

  BitReader r(in);
  if (h.version == kVersion3) {
    // No step or time column.
  } else if (h.regular_steps) {
    internal::ActiveCodecKernels().arithmetic(
        summary.min_step, (summary.max_step - summary.min_step) / (n - 1), n,
        steps);
  } else if (n == 1) {
    steps[0] = summary.min_step;
  } else {
    if (!ReadInts(&r, n, true, summary.min_step,
                  {.kind = IntOutput::kU64, .u64 = steps})) {
      return Corrupt("bad step column");
    }
    if (steps[0] != summary.min_step) return Corrupt("first step mismatch");
    bool increasing = true;
    for (size_t i = 1; i < n; ++i) increasing &= steps[i] > steps[i - 1];
    if (!increasing) return Corrupt("steps not increasing");
    if (steps[n - 1] != summary.max_step) return Corrupt("last step mismatch");
  }
  // Times.
  if (h.version == kVersion3) {
    // The leader's.
  } else if (n == 1) {
    times[0] = h.common.first_time_ms;
  } else {
    uint64_t* const t = reinterpret_cast<uint64_t*>(times);
    if (!ReadInts(&r, n, true, static_cast<uint64_t>(h.common.first_time_ms),
                  {.kind = IntOutput::kU64, .u64 = t, .check = check})) {
      return Corrupt("bad time column");
    }
    if (absl::Status s =
            check != nullptr
                ? internal::CheckTimeRange(times, check->min_time,
                                           check->max_time, h.common)
                : internal::CheckTimes(times, n, h.common);
        !s.ok()) {
      return s;
    }
  }
  if (values == nullptr) return absl::OkStatus();
  // Values.
  bool ok = true;
  switch (h.codec) {
    case ChunkValueCodec::kXor64:
    case ChunkValueCodec::kXor32: {
      Scratch& scratch = ThreadScratch();
      uint64_t* const u = Scratch::Get(scratch.a, n);
      if (h.codec == ChunkValueCodec::kXor64) {
        ok = ReadXor<64>(&r, n, u);
        std::memcpy(values, u, n * sizeof(double));
      } else {
        ok = ReadXor<32>(&r, n, u);
        for (size_t i = 0; i < n; ++i) values[i] = FromFloat32(u[i]);
      }
      if (n > kKeepEntries) scratch.ReleaseIfLarge();
      break;
    }
    case ChunkValueCodec::kFloat32Int:
      ok = ReadInts(&r, n, false, 0,
                    {.kind = IntOutput::kFloat32, .values = values});
      break;
    case ChunkValueCodec::kInteger:
      ok = ReadInts(&r, n, false, 0,
                    {.kind = IntOutput::kInteger, .values = values});
      break;
    case ChunkValueCodec::kDecimal:
      ok = ReadInts(&r, n, false, 0,
                    {.kind = IntOutput::kDecimal,
                     .values = values,
                     .pow10 = kPow10[static_cast<size_t>(h.exponent)]});
      break;
    case ChunkValueCodec::kAlpRd:
      ok = ReadAlpRd(&r, n, values);
      break;
    case ChunkValueCodec::kGorillaV1:
      ok = false;
      break;
  }
  if (!ok || !r.ok()) return Corrupt("bad value column");
  if (h.num_exceptions != 0) {
    std::string_view again = exceptions;
    if (absl::Status s = ReadExceptions(&again, h.num_exceptions, n, values);
        !s.ok()) {
      return s;
    }
  }
  return internal::CheckPadding(&r);
}

// Writes the value stats (as the scan_points kernel computes them).
void PutValueStats(const internal::KernelValueStats& s,
                   std::span<const double> values, std::string* out) {
  PutVarint(s.nan, out);
  PutVarint(s.pos_inf, out);
  PutVarint(s.neg_inf, out);
  if (s.any_finite) {
    PutFixed64(Bits(s.min), out);
    PutFixed64(Bits(s.max), out);
    PutFixed64(Bits(s.sum), out);
  }
  PutFixed64(Bits(values.front()), out);
  PutFixed64(Bits(values.back()), out);
}

// A check of a follower's step and time columns, stored in its header and
// compared with the leader's decoded columns: a leader that is not the
// chunk the follower was encoded against (same ranges, other points) is
// DataLoss, not wrong times. The first followers (no kFlagLaneCheck) have
// this serial hash: its chain of two dependent multiplies per point,
// ~10 cycles, was a third of their decode time.
uint32_t ColumnsCheck(const uint64_t* steps, const int64_t* times, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
  for (size_t i = 0; i < n; ++i) {
    h = (h ^ steps[i]) * 0xff51afd7ed558ccdULL;
    h = (h ^ static_cast<uint64_t>(times[i])) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;
  }
  return static_cast<uint32_t>(h ^ (h >> 32));
}

// The same mixing in kCheckLanes independent chains (point i feeds lane
// i % kCheckLanes), joined at the end in lane order: the chains overlap in
// the pipeline, so it costs the multiplies' throughput (~2 cycles a point)
// instead of their latency. As strong a 32-bit check of the same columns;
// written by every follower encoder since (flag kFlagLaneCheck).
constexpr size_t kCheckLanes = 4;

inline uint64_t CheckMix(uint64_t h, uint64_t step, uint64_t time) {
  h = (h ^ step) * 0xff51afd7ed558ccdULL;
  h = (h ^ time) * 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 29);
}

// The lanes' chains run in the kernels (KernelColumnsCheck), which the
// follower decoder also feeds from inside the time column's decoding.
internal::KernelColumnsCheck StartColumnsCheck(const uint64_t* steps,
                                               const int64_t* times, size_t n) {
  internal::KernelColumnsCheck c = {
      .steps = steps,
      .times = reinterpret_cast<const uint64_t*>(times),
      .lane = {},
      .next = 0,
      .min_time = std::numeric_limits<int64_t>::max(),
      .max_time = std::numeric_limits<int64_t>::min()};
  for (size_t j = 0; j < kCheckLanes; ++j) {
    c.lane[j] = (0x9e3779b97f4a7c15ULL + j) ^ n;
  }
  return c;
}

// The lanes joined, once all n points are mixed in.
uint32_t FinishColumnsCheck(const internal::KernelColumnsCheck& c) {
  uint64_t all = CheckMix(c.lane[0], c.lane[1], 1);
  all = CheckMix(all, c.lane[2], 2);
  all = CheckMix(all, c.lane[3], 3);
  return static_cast<uint32_t>(all ^ (all >> 32));
}

uint32_t ColumnsCheckLanes(const uint64_t* steps, const int64_t* times,
                           size_t n) {
  internal::KernelColumnsCheck c = StartColumnsCheck(steps, times, n);
  internal::ActiveCodecKernels().columns_check(&c, n);
  return FinishColumnsCheck(c);
}

// Writes a version 2 chunk, or with leader != 0 a version 3 one (the same
// without the step and time columns, which are the leader's).
void EncodeChunkImpl(std::span<const uint64_t> steps,
                     std::span<const int64_t> times_ms,
                     std::span<const double> values, uint32_t leader,
                     bool lane_check, std::string* out) {
  const size_t n = steps.size();
  assert(n >= 1 && n <= kMaxChunkPoints);
  assert(times_ms.size() == n && values.size() == n);

  // Headroom for typical telemetry (~1-4 bytes/point); grow geometrically
  // so that callers appending many chunks to one string stay linear.
  const size_t want = out->size() + 96 + 4 * n;
  if (out->capacity() < want) out->reserve(std::max(want, 2 * out->size()));

  // One pass for the value stats, the values' float32 patterns, the time
  // range and the step regularity: the stats' chain of adds hides the rest
  // (see CodecKernels::scan_points).
  Scratch& scratch = ThreadScratch();
  internal::KernelScan scan;
  internal::ActiveCodecKernels().scan_points(
      steps.data(), times_ms.data(), values.data(), n,
      Scratch::Get(scratch.b, n), Scratch::Get(scratch.c, n), &scan);
  const bool regular = leader == 0 && scan.equal_deltas;
  const bool stats = n >= kMinPointsForValueStats;

  ValuePlan vp;
  PlanValues(values, scan.float32_misses, scratch, &vp);

  internal::PutCommonHeader(leader == 0 ? kVersion2 : kVersion3, steps,
                            times_ms, scan.min_time, scan.max_time, out);
  if (leader != 0) {
    PutVarint(leader, out);
    const uint32_t check =
        lane_check ? ColumnsCheckLanes(steps.data(), times_ms.data(), n)
                   : ColumnsCheck(steps.data(), times_ms.data(), n);
    for (int b = 0; b < 4; ++b) out->push_back(static_cast<char>(check >> (8 * b)));
  }
  out->push_back(static_cast<char>((stats ? kFlagValueStats : 0) |
                                   (regular ? kFlagRegularSteps : 0) |
                                   (leader != 0 && lane_check ? kFlagLaneCheck
                                                              : 0)));
  if (stats) PutValueStats(scan.stats, values, out);
  const std::vector<uint32_t>& exc = *vp.exc;
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
  if (!regular && n >= 2 && leader == 0) {
    const IntPlan plan = PlanInts(steps.data(), n, true);
    WriteInts(steps.data(), n, true, plan, &w);
  }
  if (n >= 2 && leader == 0) {
    const uint64_t* t = reinterpret_cast<const uint64_t*>(times_ms.data());
    const IntPlan plan = PlanInts(t, n, true);
    WriteInts(t, n, true, plan, &w);
  }
  switch (vp.codec) {
    case ChunkValueCodec::kXor64:
      WriteXor<64>(vp.u, n, &w);
      break;
    case ChunkValueCodec::kXor32:
      WriteXor<32>(vp.u, n, &w);
      break;
    case ChunkValueCodec::kAlpRd:
      WriteAlpRd(vp.alp, vp.alp_idx, vp.u, n, &w);
      break;
    default:
      WriteInts(vp.u, n, false, vp.ints, &w);
      break;
  }
  w.Finish();
  if (n > kKeepEntries) scratch.ReleaseIfLarge();
}

}  // namespace

void EncodeChunk(std::span<const uint64_t> steps,
                 std::span<const int64_t> times_ms,
                 std::span<const double> values, std::string* out) {
  EncodeChunkImpl(steps, times_ms, values, /*leader=*/0, false, out);
}

void EncodeFollowerChunk(std::span<const uint64_t> steps,
                         std::span<const int64_t> times_ms,
                         std::span<const double> values,
                         uint32_t leader_series, std::string* out) {
  assert(leader_series != 0);
  EncodeChunkImpl(steps, times_ms, values, leader_series, true, out);
}

void internal::EncodeFollowerChunkSerialCheck(
    std::span<const uint64_t> steps, std::span<const int64_t> times_ms,
    std::span<const double> values, uint32_t leader_series,
    std::string* out) {
  assert(leader_series != 0);
  EncodeChunkImpl(steps, times_ms, values, leader_series, false, out);
}

absl::StatusOr<ChunkSummary> ReadChunkSummary(std::string_view chunk) {
  if (absl::Status s = internal::CheckVersion(chunk); !s.ok()) return s;
  if (static_cast<uint8_t>(chunk[0]) == kVersion1) {
    return internal::ReadChunkSummaryV1(chunk);
  }
  Header h;
  if (absl::Status s = ParseHeaderV2(chunk, &h); !s.ok()) return s;
  return h.common.summary;
}

absl::StatusOr<ChunkDescription> DescribeChunk(std::string_view chunk) {
  if (absl::Status s = internal::CheckVersion(chunk); !s.ok()) return s;
  ChunkDescription d;
  if (static_cast<uint8_t>(chunk[0]) == kVersion1) {
    absl::StatusOr<ChunkSummary> s = internal::ReadChunkSummaryV1(chunk);
    if (!s.ok()) return s.status();
    d.version = kVersion1;
    return d;
  }
  Header h;
  if (absl::Status s = ParseHeaderV2(chunk, &h); !s.ok()) return s;
  d.version = h.version;
  d.leader_series = h.leader;
  d.value_codec = h.codec;
  d.decimal_exponent = h.exponent;
  d.exceptions = static_cast<uint32_t>(h.num_exceptions);
  d.regular_steps = h.regular_steps;
  return d;
}

absl::Status DecodeChunk(std::string_view chunk, PointColumns* out) {
  if (absl::Status s = internal::CheckVersion(chunk); !s.ok()) return s;
  if (static_cast<uint8_t>(chunk[0]) == kVersion1) {
    return internal::DecodeChunkV1(chunk, out);
  }
  Header h;
  if (absl::Status s = ParseHeaderV2(chunk, &h); !s.ok()) return s;
  if (h.version == kVersion3) {
    return absl::FailedPreconditionError(absl::StrCat(
        "chunk shares the step and time columns of series ", h.leader,
        ": decode it with its leader chunk (DecodeFollowerChunk)"));
  }
  return internal::DecodeAppending(
      h.common.summary.count, out,
      [&h](uint64_t* steps, int64_t* times, double* values) {
        return DecodeBodyV2(h, steps, times, values);
      });
}

absl::Status DecodeFollowerChunk(std::string_view chunk,
                                 std::string_view leader_chunk,
                                 PointColumns* out) {
  if (absl::Status s = internal::CheckVersion(chunk); !s.ok()) return s;
  Header h;
  if (static_cast<uint8_t>(chunk[0]) != kVersion3) {
    return absl::InvalidArgumentError("not a follower chunk (version 3)");
  }
  if (absl::Status s = ParseHeaderV2(chunk, &h); !s.ok()) return s;
  if (leader_chunk.empty() ||
      static_cast<uint8_t>(leader_chunk[0]) != kVersion2) {
    return absl::DataLossError(absl::StrCat(
        "corrupt chunk: the leader chunk of series ", h.leader,
        " is not a version 2 chunk"));
  }
  Header lh;
  if (absl::Status s = ParseHeaderV2(leader_chunk, &lh); !s.ok()) return s;
  // The header's ranges are the follower's own: they must be the leader's,
  // or the reference does not point where the encoder left it.
  const ChunkSummary& f = h.common.summary;
  const ChunkSummary& l = lh.common.summary;
  if (f.count != l.count || f.min_step != l.min_step ||
      f.max_step != l.max_step || f.min_time_ms != l.min_time_ms ||
      f.max_time_ms != l.max_time_ms ||
      h.common.first_time_ms != lh.common.first_time_ms) {
    return absl::DataLossError(absl::StrCat(
        "corrupt chunk: step and time ranges differ from the leader chunk of "
        "series ", h.leader));
  }
  return internal::DecodeAppending(
      f.count, out, [&](uint64_t* steps, int64_t* times, double* values) {
        // The lane check's chains overlap the time column's decoding.
        internal::KernelColumnsCheck lanes =
            StartColumnsCheck(steps, times, f.count);
        if (absl::Status s = DecodeBodyV2(lh, steps, times, nullptr,
                                          h.lane_check ? &lanes : nullptr);
            !s.ok()) {
          return s;
        }
        uint32_t check;
        if (h.lane_check) {
          internal::ActiveCodecKernels().columns_check(&lanes, f.count);
          check = FinishColumnsCheck(lanes);
        } else {
          check = ColumnsCheck(steps, times, f.count);
        }
        if (check != h.columns_check) {
          return absl::DataLossError(absl::StrCat(
              "corrupt chunk: steps and times differ from those it was "
              "written with in the leader chunk of series ",
              h.leader));
        }
        return DecodeBodyV2(h, steps, times, values);
      });
}

}  // namespace stepdb::storage
