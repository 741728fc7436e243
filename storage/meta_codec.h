// Byte helpers shared by the encodings of meta records (run records, watch
// rules and events; docs/FORMAT.md "Meta records"): length-prefixed strings
// and single bytes on top of the chunk codec's varints.
#ifndef STEPDB_STORAGE_META_CODEC_H_
#define STEPDB_STORAGE_META_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "storage/chunk_codec_internal.h"

namespace stepdb::storage::meta {

// Debian's Abseil has its own string_view; StrCat takes only that.
inline absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

// varint length, then the bytes.
inline void PutString(std::string_view s, std::string* out) {
  internal::PutVarint(s.size(), out);
  out->append(s);
}

// Parses a PutString from the front of *in. False if truncated.
inline bool GetString(std::string_view* in, std::string* s) {
  uint64_t n;
  if (!internal::GetVarint(in, &n) || n > in->size()) return false;
  s->assign(in->substr(0, n));
  in->remove_prefix(n);
  return true;
}

inline bool GetByte(std::string_view* in, uint8_t* b) {
  if (in->empty()) return false;
  *b = static_cast<uint8_t>(in->front());
  in->remove_prefix(1);
  return true;
}

}  // namespace stepdb::storage::meta

#endif  // STEPDB_STORAGE_META_CODEC_H_
