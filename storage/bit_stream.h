// Bit-granular writer and reader used by the chunk codecs.
//
// Bits are written MSB-first: the first bit written is the most significant
// bit of the first byte. Both classes keep a 64-bit buffer so that a call
// costs a few shifts, not a loop over bits.
//
// Speed: everything on the hot path is inline. A decoder loop should work
// on a local copy of its BitReader (it is copyable) and a local
// BitWriter::Cursor, so that the compiler keeps the state in registers
// instead of reloading it from memory around every store.
//
// Thread-safety: a BitWriter or BitReader is not thread-safe; distinct
// instances are independent.
#ifndef STEPDB_STORAGE_BIT_STREAM_H_
#define STEPDB_STORAGE_BIT_STREAM_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace stepdb::storage {

namespace bit_stream_internal {

inline uint64_t LoadBigEndian64(const void* p) {
  uint64_t word;
  std::memcpy(&word, p, sizeof(word));
  if constexpr (std::endian::native == std::endian::little) {
    word = __builtin_bswap64(word);
  }
  return word;
}

inline void StoreBigEndian64(void* p, uint64_t word) {
  if constexpr (std::endian::native == std::endian::little) {
    word = __builtin_bswap64(word);
  }
  std::memcpy(p, &word, sizeof(word));
}

}  // namespace bit_stream_internal

// Appends bits to a std::string it does not own. Bytes are stored as they
// fill; Finish() stores the last partial byte, padding it with zero bits.
// Bytes already in the string are untouched.
//
// Between construction and Finish() the string may be longer than what has
// been written (the writer grows it ahead and stores words in place);
// Finish() trims it to the written bytes. Use the string only after
// Finish().
class BitWriter {
 public:
  // Unchecked writes into room reserved with Reserve(): the writer's state
  // as a value, for hot loops. Obtain with Begin(), hand back with End().
  //
  // Branch-free: every write stores the whole 64-bit buffer at p (the room
  // past the written bits is scratch) and advances p by the whole bytes
  // completed, so that fewer than 8 bits stay pending.
  struct Cursor {
    uint64_t buf;  // pending bits, left-aligned
    int used;      // pending bits in buf, 0..7
    char* p;       // where the pending bits' byte goes

    // Writes the low `n` bits of `bits`, most significant first.
    // Preconditions: 1 <= n <= 64 (unlike BitWriter::Write, not 0), `bits`
    // has no bits set above bit n-1, and the room reserved covers them.
    void Write(uint64_t bits, int n) {
      if (n > 56) [[unlikely]] {
        WriteShort(bits >> 32, n - 32);
        WriteShort(bits & 0xffffffff, 32);
        return;
      }
      WriteShort(bits, n);
    }

    // As Write, for 1 <= n <= 56.
    void WriteShort(uint64_t bits, int n) {
      buf |= bits << (64 - used - n);  // used + n <= 63
      used += n;
      bit_stream_internal::StoreBigEndian64(p, buf);
      p += used >> 3;
      buf <<= used & ~7;  // <= 56
      used &= 7;
    }
  };

  // `out` must outlive the writer.
  explicit BitWriter(std::string* out) : out_(out), pos_(out->size()) {}

  BitWriter(const BitWriter&) = delete;
  BitWriter& operator=(const BitWriter&) = delete;

  // Makes room for `bits` more bits, to be written through a cursor.
  void Reserve(size_t bits) {
    const size_t need = pos_ + bits / 8 + 16;
    if (out_->size() < need) Grow(need);
  }

  Cursor Begin() { return Cursor{buf_, used_, out_->data() + pos_}; }
  void End(const Cursor& c) {
    buf_ = c.buf;
    used_ = c.used;
    pos_ = static_cast<size_t>(c.p - out_->data());
  }

  // Writes the low `n` bits of `bits`, most significant first.
  // Preconditions: 0 <= n <= 64 and `bits` has no bits set above bit n-1.
  void Write(uint64_t bits, int n) {
    if (n == 0) return;
    Reserve(static_cast<size_t>(n));
    Cursor c = Begin();
    c.Write(bits, n);
    End(c);
  }

  void WriteBit(bool bit) { Write(bit ? 1 : 0, 1); }

  // Stores the buffered bits, zero-padded to a whole byte, and trims the
  // string to the bytes written. The writer may be reused afterwards; it
  // then starts at a byte boundary.
  void Finish();

  // Bits written since construction (or the last Finish()) that do not
  // fill a whole byte yet (0..7).
  int pending_bits() const { return used_; }

 private:
  void Grow(size_t need);

  std::string* const out_;
  size_t pos_;        // bytes of *out_ complete
  uint64_t buf_ = 0;  // pending bits, left-aligned
  int used_ = 0;      // pending bits in buf_, 0..7
};

// Reads bits from a byte string it does not own, MSB-first. It never reads
// outside `data`: a read that goes past the end yields the bits left
// followed by zeros and sets a sticky error flag, so a decoder can run a
// whole loop on untrusted input and check ok() once at the end.
//
// Copyable: hot loops copy the reader into a local, read from the copy and
// assign it back.
class BitReader {
 public:
  // `data` must outlive the reader.
  explicit BitReader(std::string_view data)
      : p_(reinterpret_cast<const uint8_t*>(data.data())),
        end_(p_ + data.size()) {}

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
    Ensure(n);
    return buf_ >> (64 - n);
  }

  // Consumes `n` bits, as Read(n) would. Precondition: 0 <= n <= 56.
  void Skip(int n) { ReadFast(n); }

  // Consumes `n` bits after a Peek(m) with m >= n (no refill check).
  void Consume(int n) {
    buf_ <<= n;
    avail_ -= n;
  }

  // Buffers at least `n` bits (n <= 56) if the input has them; past the
  // end the buffer is zero-filled.
  void Ensure(int n) {
    if (avail_ < n) Refill();
  }

  // The next `n` bits after Ensure(m), m >= n >= 0; n == 0 yields 0.
  uint64_t Bits(int n) const { return (buf_ >> 1) >> (63 - n); }
  // As Bits(n) for 1 <= n <= 56 (one shift cheaper).
  uint64_t TopBits(int n) const { return buf_ >> (64 - n); }

  // False once any read went past the end of the input.
  bool ok() const { return !error_ && avail_ >= 0; }

  // The reader's state, for hot loops that read the same way outside this
  // class (storage/codec_kernels.h): they refill as Refill() does, only
  // while at least 8 bytes are left, and hand the state back with
  // set_raw_state(). Only while ok().
  struct RawState {
    const uint8_t* p;    // next byte not yet counted in avail
    const uint8_t* end;  // end of the input (not changed by set_raw_state)
    uint64_t buf;        // buffered bits, left-aligned
    int avail;           // valid bits at the top of buf, 0..63
  };
  RawState raw_state() const { return {p_, end_, buf_, avail_}; }
  void set_raw_state(const RawState& s) {
    p_ = s.p;
    buf_ = s.buf;
    avail_ = s.avail;
  }

  // Bits not yet consumed (when ok()).
  size_t bits_remaining() const {
    return static_cast<size_t>(end_ - p_) * 8 + static_cast<size_t>(avail_);
  }

 private:
  // Largest read served from one refill: a refill leaves at least 56 bits
  // buffered unless the input ends.
  static constexpr int kMaxFastBits = 56;

  uint64_t ReadFast(int n) {
    Ensure(n);
    const uint64_t v = Bits(n);
    Consume(n);
    return v;
  }

  // Tops the buffer up to >= 56 bits (or to the end of the input).
  void Refill() {
    if (end_ - p_ >= 8) [[likely]] {
      // Branch-free refill (F. Giesen, "Reading bits in far too many
      // ways"): OR in the next 8 bytes at the first free bit position and
      // count only the whole bytes that fit. The bits of the partly-fitting
      // byte land below avail_; they are the true next bits, and the next
      // refill ORs the same values into the same positions, so they never
      // corrupt anything. avail_ >= 0 here: it only goes negative once the
      // input is exhausted.
      buf_ |= bit_stream_internal::LoadBigEndian64(p_) >> avail_;
      p_ += (63 - avail_) >> 3;
      avail_ |= 56;
      return;
    }
    RefillTail();
  }

  void RefillTail() {
    if (avail_ < 0) {
      // Reads went past the end: buf_ holds only zeros. Reset the count so
      // that it cannot drift, and remember the error.
      error_ = true;
      avail_ = 0;
      return;
    }
    // Tail of the input: byte by byte, at most 7 iterations.
    while (avail_ <= 56 && p_ < end_) {
      buf_ |= static_cast<uint64_t>(*p_) << (56 - avail_);
      ++p_;
      avail_ += 8;
    }
  }

  const uint8_t* p_;    // next byte not yet counted in avail_
  const uint8_t* end_;  // end of the input
  uint64_t buf_ = 0;    // buffered bits, left-aligned; see Refill() for the
                        // bits below avail_; zero past the input's end
  int avail_ = 0;       // valid bits at the top of buf_; negative once reads
                        // went past the end
  bool error_ = false;
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_BIT_STREAM_H_
