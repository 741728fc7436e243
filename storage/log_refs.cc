#include "storage/log_refs.h"

#include <string_view>

#include "storage/chunk_codec_internal.h"

namespace stepdb::storage {

namespace {

// Decodes the next reference of `in` after `previous`. The bytes are the
// process's own (never read from disk), so they always parse.
LogRefs::Ref Next(std::string_view* in, LogRefs::Ref previous) {
  uint64_t seq_delta = 0, step_delta = 0;
  internal::GetVarint(in, &seq_delta);
  internal::GetVarint(in, &step_delta);
  return {previous.seq + internal::UnZigZag(seq_delta),
          previous.last_step + internal::UnZigZag(step_delta)};
}

void Put(LogRefs::Ref ref, LogRefs::Ref previous, std::string* out) {
  internal::PutVarint(internal::ZigZag(ref.seq - previous.seq), out);
  internal::PutVarint(internal::ZigZag(ref.last_step - previous.last_step), out);
}

}  // namespace

void LogRefs::Append(Ref ref) {
  Put(ref, last_, &bytes_);
  last_ = ref;
  ++count_;
}

std::vector<LogRefs::Ref> LogRefs::ToVector() const {
  std::vector<Ref> refs;
  refs.reserve(count_);
  std::string_view in = bytes_;
  Ref ref{0, 0};
  for (uint32_t i = 0; i < count_; ++i) refs.push_back(ref = Next(&in, ref));
  return refs;
}

void LogRefs::EraseFirst(size_t n) {
  if (n == 0) return;
  if (n >= count_) {
    Clear();
    return;
  }
  std::string_view in = bytes_;
  Ref ref{0, 0};
  for (size_t i = 0; i < n; ++i) ref = Next(&in, ref);
  // The new first reference is re-based on 0; the rest keep their deltas.
  const Ref first = Next(&in, ref);
  std::string rest;
  rest.reserve(in.size() + 20);
  Put(first, Ref{0, 0}, &rest);
  rest.append(in);
  bytes_ = std::move(rest);
  count_ -= static_cast<uint32_t>(n);
}

}  // namespace stepdb::storage
