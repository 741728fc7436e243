#include "storage/bit_stream.h"

#include <bit>
#include <cstring>

namespace stepdb::storage {

void BitWriter::FlushWord() {
  char bytes[8];
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<char>(buf_ >> (56 - 8 * i));
  }
  out_->append(bytes, sizeof(bytes));
}

void BitWriter::Finish() {
  const int used = 64 - free_;
  const int nbytes = (used + 7) / 8;
  char bytes[8];
  for (int i = 0; i < nbytes; ++i) {
    bytes[i] = static_cast<char>(buf_ >> (56 - 8 * i));
  }
  out_->append(bytes, static_cast<size_t>(nbytes));
  buf_ = 0;
  free_ = 64;
}

void BitReader::Refill() {
  if (size_ - pos_ >= 8) {
    // Branch-free refill (F. Giesen, "Reading bits in far too many ways"):
    // OR in the next 8 bytes at the first free bit position and count only
    // the whole bytes that fit. The bits of the partly-fitting byte land
    // below avail_; they are the true next bits, and the next refill ORs the
    // same values into the same positions, so they never corrupt anything.
    uint64_t word;
    std::memcpy(&word, data_ + pos_, sizeof(word));
    if constexpr (std::endian::native == std::endian::little) {
      word = __builtin_bswap64(word);
    }
    buf_ |= word >> avail_;
    pos_ += static_cast<size_t>((63 - avail_) >> 3);
    avail_ |= 56;
    return;
  }
  // Tail of the input: byte by byte, at most 7 iterations.
  while (avail_ <= 56 && pos_ < size_) {
    buf_ |= static_cast<uint64_t>(data_[pos_]) << (56 - avail_);
    ++pos_;
    avail_ += 8;
  }
}

uint64_t BitReader::Fail() {
  // Make every later read fail too, so that a decoder loop can check once.
  error_ = true;
  pos_ = size_;
  buf_ = 0;
  avail_ = 0;
  return 0;
}

}  // namespace stepdb::storage
