#include "storage/log_refs.h"

#include <string_view>

#include "storage/chunk_codec_internal.h"
#include "storage/keys.h"

namespace stepdb::storage {

namespace {

// A step delta: steps are micro-steps (kMicrosPerStep a whole step), so a
// fragment's last step usually moves by whole steps; those are coded as
// whole steps, 1 byte where the micro-step delta took 4 (a million series
// with 4-step requests: ~25 MB). One varint v:
//   v odd:  the delta is ZigZag^-1(v >> 1) whole steps;
//   v even, not 0: the delta is ZigZag^-1(v >> 1) micro-steps;
//   v == 0: a second varint holds the delta's full ZigZag (a jump of 2^62
//           micro-steps or more; a zero delta is whole, so 0 is free).
constexpr int64_t kStep = static_cast<int64_t>(kMicrosPerStep);

void PutStepDelta(uint64_t delta, std::string* out) {
  const int64_t signed_delta = static_cast<int64_t>(delta);
  if (signed_delta % kStep == 0) {
    const uint64_t whole = static_cast<uint64_t>(signed_delta / kStep);
    internal::PutVarint((internal::ZigZag(whole) << 1) | 1, out);
    return;
  }
  const uint64_t zz = internal::ZigZag(delta);
  if (zz >> 63 == 0) {
    internal::PutVarint(zz << 1, out);
  } else {
    internal::PutVarint(0, out);
    internal::PutVarint(zz, out);
  }
}

uint64_t GetStepDelta(std::string_view* in) {
  uint64_t v = 0;
  internal::GetVarint(in, &v);
  if (v & 1) {
    const int64_t whole = static_cast<int64_t>(internal::UnZigZag(v >> 1));
    return static_cast<uint64_t>(whole * kStep);
  }
  if (v == 0) internal::GetVarint(in, &v);
  else v >>= 1;
  return internal::UnZigZag(v);
}

// Decodes the next reference of `in` after `previous`. The bytes are the
// process's own (never read from disk), so they always parse.
LogRefs::Ref Next(std::string_view* in, LogRefs::Ref previous) {
  uint64_t seq_delta = 0;
  internal::GetVarint(in, &seq_delta);
  const uint64_t step_delta = GetStepDelta(in);
  return {previous.seq + internal::UnZigZag(seq_delta),
          previous.last_step + step_delta};
}

void Put(LogRefs::Ref ref, LogRefs::Ref previous, std::string* out) {
  internal::PutVarint(internal::ZigZag(ref.seq - previous.seq), out);
  PutStepDelta(ref.last_step - previous.last_step, out);
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
