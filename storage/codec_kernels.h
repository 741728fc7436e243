// The hot loops of the chunk codec's integer column decoder, as plain
// functions over raw arrays, compiled twice: once for the build's baseline
// target (any x86-64, or whatever the build machine is), and on x86-64 once
// more with AVX2, BMI1/2 and LZCNT (the x86-64-v3 level). One of the two
// tables is picked once per process by what the CPU supports, so that the
// binary still runs on any x86-64 machine. Internal to the chunk codec
// library; not part of its API.
//
// Why a second translation unit and not target attributes on the callers:
// the loops below need the compiler's auto-vectorizer (which -O2 does not
// run at full strength) and the v3 instructions for every inlined helper;
// a separate file gets both from its compile flags. That file uses no
// inline function of any header (only builtins and its own internal-linkage
// helpers), so that no v3 copy of a shared inline function can be picked by
// the linker for the portable code.
//
// Thread-safety: the kernels are pure. UseCodecKernelsForTesting must not
// race with encoding or decoding.
#ifndef STEPDB_STORAGE_CODEC_KERNELS_H_
#define STEPDB_STORAGE_CODEC_KERNELS_H_

#include <cstddef>
#include <cstdint>

namespace stepdb::storage::internal {

// A BitWriter::Cursor as plain data.
struct KernelWriter {
  uint64_t buf;  // pending bits, left-aligned
  int used;      // pending bits in buf, 0..7
  char* p;       // where the pending bits' byte goes
};

// A BitReader's state as plain data (see BitReader::raw_state()).
struct KernelBits {
  const uint8_t* p;    // next byte not yet counted in avail
  const uint8_t* end;  // end of the input
  uint64_t buf;        // buffered bits, left-aligned
  int avail;           // valid bits at the top of buf (>= 0)
};

// The lane columns check of a follower chunk (ColumnsCheckLanes in
// chunk_codec.cc) under way: the points [0, next) of steps and times are
// mixed in, point i into lane[i % 4]. unpack_sum_check also widens
// [min_time, max_time] to the times it writes (the decoder's range check
// comes free with them).
struct KernelColumnsCheck {
  const uint64_t* steps;
  const uint64_t* times;
  uint64_t lane[4];
  size_t next;
  int64_t min_time;
  int64_t max_time;
};

// The value stats of a chunk header (docs/FORMAT.md): the NaN, +Inf and
// -Inf counts, and over the finite values (if any) their minimum and
// maximum (compared with <, the first of equal values wins) and their sum
// in point order. Plain data (no member initializers: no inline
// constructor that the v3 kernels could supply to portable code).
struct KernelValueStats {
  uint64_t nan;
  uint64_t pos_inf;
  uint64_t neg_inf;
  bool any_finite;
  double min;
  double max;
  double sum;
};

// What CodecKernels::scan_points finds.
struct KernelScan {
  KernelValueStats stats;
  size_t float32_misses;  // values not exactly double(float(v)), bit for bit
  int64_t min_time;
  int64_t max_time;
  bool equal_deltas;  // n >= 2 and all step deltas (mod 2^64) are equal
};

struct CodecKernels {
  const char* name;

  // Unpack the codes of the integer column code's fixed shape (every code
  // w bits, 1 <= w <= 55) into z[0, m) for as long as the input has at
  // least 8 bytes left (no reads past bits->end). Return how many codes
  // they unpacked (0..m); the caller finishes the rest with a checked
  // reader from the updated *bits.
  size_t (*unpack_fixed)(KernelBits* bits, size_t m, int w, uint64_t* z);
  // The same for a column's residual codes, plain shape (flag bit, then w1
  // or w2 bits; w1 < w2 <= 55) or fixed shape (w1 == w2 >= 1), undoing
  // the column transform on the way: dst[i] is what `integrate` makes of
  // the codes (same order, base, prev and delta). One pass instead of
  // unpack_fixed and integrate, in blocks that stay in L1.
  size_t (*unpack_sum)(KernelBits* bits, size_t m, int w1, int w2, int order,
                       uint64_t base, uint64_t prev, uint64_t delta,
                       uint64_t* dst);

  // unpack_sum that also mixes the values it writes into *check, as it
  // integrates them (the check's multiply chains overlap the vector work).
  // Precondition: dst == check->times + check->next.
  size_t (*unpack_sum_check)(KernelBits* bits, size_t m, int w1, int w2,
                             int order, uint64_t base, uint64_t prev,
                             uint64_t delta, uint64_t* dst,
                             KernelColumnsCheck* check);
  // Mixes the points [check->next, end) into *check.
  void (*columns_check)(KernelColumnsCheck* check, size_t end);

  // Undoes the column transform: dst[i] = the order-`order` (0..2)
  // integral of UnZigZag(z[i]) + base, continuing from `prev` (value i - 1)
  // and `delta` (order 2: value i - 1 minus value i - 2); mod 2^64. dst may
  // be z.
  void (*integrate)(int order, const uint64_t* z, size_t m, uint64_t base,
                    uint64_t prev, uint64_t delta, uint64_t* dst);

  // Value mappings of the integer-coded value codecs, out[i] from u[i]:
  // float32 patterns ordered as integers (kFloat32Int), int64 (kInteger),
  // int64 / pow10 (kDecimal; a true division, as the encoder checked).
  void (*map_float32)(const uint64_t* u, size_t m, double* out);
  void (*map_integer)(const uint64_t* u, size_t m, double* out);
  void (*map_decimal)(const uint64_t* u, size_t m, double pow10, double* out);

  // The minimum and maximum of t[0, m), m >= 1 (decoder and encoder).
  void (*min_max)(const int64_t* t, size_t m, int64_t* min, int64_t* max);

  // Encoder helpers.
  // Adds the bit widths of the zigzagged residuals of u[0, n) of orders
  // 0..2 (those whose bit is set in `orders`), minus base[order], to the
  // histograms hist[order * 65 + width], in one pass over u.
  void (*width_histograms)(const uint64_t* u, size_t n, const uint64_t* base,
                           int orders, uint32_t* hist);
  // Writes the residual codes of u[0, n) of the integer column code's
  // plain or fixed shape (w1 == w2): for i in [order, n), the zigzagged
  // order-`order` difference minus base, as "0" + w1 bits or "1" + w2 bits
  // (fixed: w2 bits). Preconditions: 0 <= w1 <= w2 <= 55, w2 >= 1, every
  // residual fits w2 bits, and the writer has room for them (as
  // BitWriter::Reserve gives).
  void (*write_plain)(const uint64_t* u, size_t n, int order, uint64_t base,
                      int w1, int w2, KernelWriter* writer);
  // One pass over the n >= 1 points the encoder is given, for what it
  // needs of all of them: see KernelScan; and for every value v[i], f32[i]
  // = the float32 pattern of float(v[i]) and ordered[i] = that pattern as
  // an integer ordered like the floats (see OrderedFromFloat32 in
  // chunk_codec.cc). The value stats' sum is a chain of dependent adds in
  // point order (as the format wants, ~3 cycles a value), in whose shadow
  // the rest is free.
  void (*scan_points)(const uint64_t* steps, const int64_t* times,
                      const double* v, size_t n, uint64_t* f32,
                      uint64_t* ordered, KernelScan* scan);

  // The value codec ALP_rd (kAlpRd in chunk_codec.cc): each 64-bit pattern
  // of v[0, n) split into its top 64 - right_bits bits, looked up in
  // dict[0, 8) (the first equal entry wins; a smaller dictionary is padded
  // with its entry 0), and its low right_bits bits (1 <= right_bits <= 63).
  // idx[i] is the
  // entry's index, or 8 if the top bits are not in the dictionary;
  // right[i] the low bits. Returns how many were not.
  size_t (*alp_rd_split)(const double* v, size_t n, int right_bits,
                         const uint64_t* dict, uint64_t* idx,
                         uint64_t* right);
  // Its inverse: out[i] has the pattern dict[idx[i] & 7] << right_bits |
  // right[i] (dict has 8 entries; idx null: every index is 0).
  // Preconditions: right[i] < 2^right_bits, 1 <= right_bits <= 63.
  void (*alp_rd_join)(const uint64_t* idx, const uint64_t* right, size_t n,
                      const uint64_t* dict, int right_bits, double* out);

  // Encoder helpers of the integer column code's planning.
  // The width histograms (as width_histograms, the orders whose bit is
  // set in `orders`) at `count` sample points i = first + j * stride
  // (first >= 2), added to hist[order * 65 + width].
  void (*sample_histograms)(const uint64_t* u, size_t first, size_t stride,
                            size_t count, const uint64_t* base, int orders,
                            uint32_t* hist);
  // What the runs shape spends on the zero residuals of order `order` of
  // u[0, n) (the residual i, order <= i < n, is zero when the difference
  // equals base): per maximal run of r zeros, 16 bits for every full run
  // of 255 and 2 * bit_width(r % 255) for the rest.
  uint64_t (*run_bits)(const uint64_t* u, size_t n, int order, uint64_t base);
  // The decimal value codec's mapping: u[i] = v[i] * pow10 as an int64
  // if that is an integer i with |i| < 2^51 and i / pow10 == v[i] bit for
  // bit (as ToDecimal in chunk_codec.cc decides it), else unspecified.
  // Returns how many v[i] do not map.
  size_t (*decimal_patterns)(const double* v, size_t n, double pow10,
                             uint64_t* u);
  // The decoder's regular step column: out[i] = first + i * delta, mod
  // 2^64.
  void (*arithmetic)(uint64_t first, uint64_t delta, size_t n, uint64_t* out);
};

extern const CodecKernels kPortableKernels;
#if defined(STEPDB_HAVE_X86V3_KERNELS)
extern const CodecKernels kX86V3Kernels;
#endif

// The kernels in use: x86-64-v3 if built and the CPU has AVX2, BMI1, BMI2
// and LZCNT, else portable. The environment variable
// STEPDB_CODEC_KERNELS=portable forces the portable ones (read once).
const CodecKernels& ActiveCodecKernels();

// Switches to the kernels named `name` ("portable" or "x86-64-v3"). False
// (nothing changed) if they are not built in or this CPU cannot run them.
// For tests, which must cover both.
bool UseCodecKernelsForTesting(const char* name);

}  // namespace stepdb::storage::internal

#endif  // STEPDB_STORAGE_CODEC_KERNELS_H_
