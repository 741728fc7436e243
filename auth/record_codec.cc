#include "auth/record_codec.h"

#include "storage/keys.h"

namespace stepdb::auth {

void RecordWriter::I64(int64_t v) {
  storage::AppendBigEndian64(static_cast<uint64_t>(v), &out_);
}

void RecordWriter::Str(std::string_view s) {
  storage::AppendBigEndian32(static_cast<uint32_t>(s.size()), &out_);
  out_.append(s);
}

bool RecordReader::Need(size_t n) {
  if (!ok_ || in_.size() - pos_ < n) ok_ = false;
  return ok_;
}

uint8_t RecordReader::U8() {
  if (!Need(1)) return 0;
  return static_cast<uint8_t>(in_[pos_++]);
}

int64_t RecordReader::I64() {
  if (!Need(8)) return 0;
  const uint64_t v = storage::ReadBigEndian64(in_.data() + pos_);
  pos_ += 8;
  return static_cast<int64_t>(v);
}

std::string RecordReader::Str() {
  if (!Need(4)) return {};
  const uint32_t n = storage::ReadBigEndian32(in_.data() + pos_);
  pos_ += 4;
  if (!Need(n)) return {};
  std::string out(in_.substr(pos_, n));
  pos_ += n;
  return out;
}

}  // namespace stepdb::auth
