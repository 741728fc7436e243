// A minimal encoding of meta records: fixed-width big-endian integers and
// length-prefixed strings, in a fixed order per record kind, behind a
// version byte. docs/FORMAT.md ("Auth records") lists the fields.
#ifndef STEPDB_AUTH_RECORD_CODEC_H_
#define STEPDB_AUTH_RECORD_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace stepdb::auth {

class RecordWriter {
 public:
  void U8(uint8_t v) { out_ += static_cast<char>(v); }
  void I64(int64_t v);
  void Str(std::string_view s);  // 4-byte length, then the bytes
  const std::string& data() const { return out_; }
  std::string Release() { return std::move(out_); }

 private:
  std::string out_;
};

// Reads fields in the order they were written; any overrun makes ok() false
// and every later read return zero values.
class RecordReader {
 public:
  explicit RecordReader(std::string_view in) : in_(in) {}
  uint8_t U8();
  int64_t I64();
  std::string Str();
  bool ok() const { return ok_; }
  size_t position() const { return pos_; }

 private:
  bool Need(size_t n);
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_RECORD_CODEC_H_
