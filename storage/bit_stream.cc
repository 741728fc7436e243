#include "storage/bit_stream.h"

#include <algorithm>

namespace stepdb::storage {

void BitWriter::Grow(size_t need) {
  // Some slack so that a run of small writes does not resize every word.
  out_->resize(std::max(need, pos_ + 256));
}

void BitWriter::Finish() {
  Reserve(64);
  bit_stream_internal::StoreBigEndian64(out_->data() + pos_, buf_);
  pos_ += static_cast<size_t>(used_ + 7) / 8;
  out_->resize(pos_);
  buf_ = 0;
  used_ = 0;
}

}  // namespace stepdb::storage
