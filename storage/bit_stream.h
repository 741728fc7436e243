// Bit-granular writer and reader used by the chunk codecs.
//
// Bits are written MSB-first: the first bit written is the most significant
// bit of the first byte. Both classes keep a 64-bit buffer so that a call
// costs a few shifts, not a loop over bits.
//
// Thread-safety: a BitWriter or BitReader is not thread-safe; distinct
// instances are independent.
#ifndef STEPDB_STORAGE_BIT_STREAM_H_
#define STEPDB_STORAGE_BIT_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace stepdb::storage {

// Appends bits to a std::string it does not own. Whole 64-bit words are
// appended as they fill; Finish() appends the last partial word, padding
// the last byte with zero bits. Bytes already in the string are untouched.
class BitWriter {
 public:
  // `out` must outlive the writer; nothing is appended to it before the
  // first 64 bits are written or Finish() is called.
  explicit BitWriter(std::string* out) : out_(out) {}

  BitWriter(const BitWriter&) = delete;
  BitWriter& operator=(const BitWriter&) = delete;

  // Writes the low `n` bits of `bits`, most significant first.
  // Preconditions: 0 <= n <= 64 and `bits` has no bits set above bit n-1.
  void Write(uint64_t bits, int n) {
    if (n == 0) return;
    if (n < free_) {
      free_ -= n;
      buf_ |= bits << free_;
      return;
    }
    // The word fills up: `free_` bits go into it, the `rest` low bits start
    // the next word. free_ is in [1, 64] here, so every shift is < 64.
    const int rest = n - free_;
    buf_ |= bits >> rest;
    FlushWord();
    buf_ = rest == 0 ? 0 : bits << (64 - rest);
    free_ = 64 - rest;
  }

  void WriteBit(bool bit) { Write(bit ? 1 : 0, 1); }

  // Appends the buffered bits, zero-padded to a whole byte. The writer may
  // be reused afterwards; it then starts at a byte boundary.
  void Finish();

  // Bits written since construction (or the last Finish()) that are not
  // yet appended to the string.
  int pending_bits() const { return 64 - free_; }

 private:
  void FlushWord();

  std::string* const out_;
  uint64_t buf_ = 0;  // pending bits, left-aligned
  int free_ = 64;     // unused low bits of buf_; always in [1, 64]
};

// Reads bits from a byte string it does not own, MSB-first. It never reads
// outside `data`: a read that would go past the end returns 0 and sets a
// sticky error flag, so a decoder can run a whole loop on untrusted input
// and check ok() once at the end.
class BitReader {
 public:
  // `data` must outlive the reader.
  explicit BitReader(std::string_view data)
      : data_(reinterpret_cast<const uint8_t*>(data.data())),
        size_(data.size()) {}

  BitReader(const BitReader&) = delete;
  BitReader& operator=(const BitReader&) = delete;

  // Reads `n` bits as an unsigned integer. Precondition: 0 <= n <= 64.
  uint64_t Read(int n) {
    if (n <= kMaxFastBits) return ReadFast(n);
    const uint64_t hi = ReadFast(n - 32);
    return (hi << 32) | ReadFast(32);
  }

  bool ReadBit() { return ReadFast(1) != 0; }

  // Returns the next `n` bits without consuming them, zero-filled past the
  // end of the input (peeking never sets the error flag).
  // Precondition: 1 <= n <= 56.
  uint64_t Peek(int n) {
    if (avail_ < n) Refill();
    return buf_ >> (64 - n);
  }

  // Consumes `n` bits, as Read(n) would. Precondition: 0 <= n <= 56.
  void Skip(int n) { ReadFast(n); }

  // False once any read went past the end of the input.
  bool ok() const { return !error_; }

  // Bits not yet consumed.
  size_t bits_remaining() const {
    return (size_ - pos_) * 8 + static_cast<size_t>(avail_);
  }

 private:
  // Largest read served from one refill: a refill leaves at least 56 bits
  // buffered unless the input ends.
  static constexpr int kMaxFastBits = 56;

  uint64_t ReadFast(int n) {
    if (n == 0) return 0;
    if (avail_ < n) {
      Refill();
      if (avail_ < n) return Fail();
    }
    const uint64_t v = buf_ >> (64 - n);
    buf_ <<= n;  // n <= 56
    avail_ -= n;
    return v;
  }

  // Tops the buffer up to >= 56 bits (or to the end of the input).
  void Refill();
  uint64_t Fail();

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;    // next byte of data_ not yet counted in avail_
  uint64_t buf_ = 0;  // buffered bits, left-aligned; see Refill() for the
                      // bits below avail_
  int avail_ = 0;     // valid bits at the top of buf_
  bool error_ = false;
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_BIT_STREAM_H_
