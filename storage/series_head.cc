#include "storage/series_head.h"

#include <algorithm>
#include <bit>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/keys.h"

namespace stepdb::storage {

// Points encoded here go into fragments of at most this many, well within
// what the decoder accepts, however long a head grows (seals failing for a
// while, e.g. on a full disk).
constexpr size_t kMaxPiecePoints = 65536;

namespace {

// The smallest allocation size of at least n bytes that allocators hand
// out anyway: jemalloc's size classes are multiples of 16 up to 128, then
// four per power of two (glibc's malloc rounds to 16). Growing a buffer to
// the whole class costs no memory and saves reallocations.
size_t AllocationSizeAtLeast(size_t n) {
  if (n <= 128) return (n + 15) & ~size_t{15};
  const size_t step = size_t{1} << (std::bit_width(n - 1) - 3);
  return (n + step - 1) & ~(step - 1);
}

}  // namespace

void SeriesHead::AppendFragment(std::span<const uint64_t> steps,
                                std::span<const int64_t> times_ms,
                                std::span<const double> values,
                                std::string_view fragment) {
  // Grows by a quarter, not the string's (or the codec's) doubling: with a
  // million small heads, doubling's slack would cost as much as the points.
  const size_t at = bytes_.size();
  const size_t need =
      at + 4 + (fragment.empty() ? 64 + 6 * steps.size() : fragment.size());
  if (bytes_.capacity() < need) {
    // Into a new string: libstdc++'s reserve() of a non-empty string at
    // least doubles its capacity, which left heads up to half empty.
    // (+1 and -1: the string's terminator.)
    std::string grown;
    grown.reserve(AllocationSizeAtLeast(std::max(need, at + at / 4) + 1) - 1);
    grown.append(bytes_);
    bytes_.swap(grown);
  }
  // Room for the size first, then the fragment in place (no temporary).
  bytes_.resize(at + 4);
  if (fragment.empty()) {
    internal::EncodeChunkV1(steps, times_ms, values, &bytes_);
  } else {
    bytes_.append(fragment);
  }
  const uint32_t size = static_cast<uint32_t>(bytes_.size() - at - 4);
  for (int i = 0; i < 4; ++i) {
    bytes_[at + i] = static_cast<char>(size >> (24 - 8 * i));
  }
  CountFragment(steps.size(), at);
}

void SeriesHead::CountFragment(size_t points, size_t frame_at) {
  if (points >= kSmallFragmentPoints || frame_at > UINT32_MAX) {
    small_tail_ = 0;  // (a head of 4 GiB is not merged: never in practice)
    return;
  }
  if (small_tail_ == 0) small_tail_at_ = static_cast<uint32_t>(frame_at);
  if (small_tail_ < 255) ++small_tail_;
}

void SeriesHead::AppendFrame(std::string_view fragment, size_t points,
                             uint64_t first_step) {
  const size_t at = bytes_.size();
  AppendBigEndian32(static_cast<uint32_t>(fragment.size()), &bytes_);
  bytes_.append(fragment);
  CountFragment(points, at);
  if (count_ == 0) first_step_ = first_step;
  count_ += static_cast<uint32_t>(points);
}

void SeriesHead::EncodeFragments(std::span<const uint64_t> steps,
                                 std::span<const int64_t> times_ms,
                                 std::span<const double> values) {
  for (size_t begin = 0; begin < steps.size(); begin += kMaxPiecePoints) {
    const size_t n = std::min(kMaxPiecePoints, steps.size() - begin);
    AppendFragment(steps.subspan(begin, n), times_ms.subspan(begin, n),
                   values.subspan(begin, n), {});
  }
}

void SeriesHead::Clear() {
  *this = SeriesHead();  // swaps: the old buffer goes with the temporary
}

void SeriesHead::Append(std::span<const uint64_t> steps,
                        std::span<const int64_t> times_ms,
                        std::span<const double> values,
                        std::string_view fragment) {
  if (steps.empty()) return;
  if (!fragment.empty()) {
    AppendFragment(steps, times_ms, values, fragment);
  } else {
    EncodeFragments(steps, times_ms, values);
  }
  if (count_ == 0) first_step_ = steps.front();
  count_ += static_cast<uint32_t>(steps.size());
}

namespace {

// Calls visit(fragment) for each framed fragment of `in` (size: 4 bytes
// big-endian, fragment)*, in order, until it returns false or an error.
// Returns DataLossError for a truncated frame, or the visitor's error.
template <typename Visit>
absl::Status ForEachFrame(std::string_view in, Visit visit) {
  while (!in.empty()) {
    if (in.size() < 4) return absl::DataLossError("head: truncated fragment");
    const uint32_t size = ReadBigEndian32(in.data());
    in.remove_prefix(4);
    if (size > in.size()) return absl::DataLossError("head: truncated fragment");
    absl::StatusOr<bool> more = visit(in.substr(0, size));
    if (!more.ok()) return more.status();
    if (!*more) break;
    in.remove_prefix(size);
  }
  return absl::OkStatus();
}

// Decodes framed fragments, appending their points to *out.
absl::Status DecodeFrames(std::string_view in, PointColumns* out) {
  return ForEachFrame(in, [out](std::string_view fragment) -> absl::StatusOr<bool> {
    if (auto s = DecodeChunk(fragment, out); !s.ok()) return s;
    return true;
  });
}

}  // namespace

absl::Status SeriesHead::Decode(PointColumns* out) const {
  out->reserve(out->size() + count_);
  return DecodeFrames(bytes_, out);
}

absl::Status SeriesHead::DecodeRange(const ReadRange& range,
                                     PointColumns* out) const {
  PointColumns part;  // a fragment that straddles an edge of the range
  return ForEachFrame(bytes_, [&](std::string_view fragment) -> absl::StatusOr<bool> {
    auto summary = ReadChunkSummary(fragment);
    if (!summary.ok()) return summary.status();
    // Fragments follow each other in step order: none after this one can
    // hold a point in range either.
    if (summary->min_step > range.steps.to) return false;
    if (summary->max_step < range.steps.from ||
        summary->max_time_ms < range.times.from_ms ||
        summary->min_time_ms > range.times.to_ms) {
      return true;
    }
    if (summary->min_step >= range.steps.from &&
        summary->max_step <= range.steps.to &&
        summary->min_time_ms >= range.times.from_ms &&
        summary->max_time_ms <= range.times.to_ms) {
      if (auto s = DecodeChunk(fragment, out); !s.ok()) return s;
      return true;
    }
    part.clear();
    if (auto s = DecodeChunk(fragment, &part); !s.ok()) return s;
    AppendInRange(part, range, out);
    return true;
  });
}

void AppendInRange(const PointColumns& in, const ReadRange& range,
                   PointColumns* out) {
  const size_t begin =
      std::lower_bound(in.steps.begin(), in.steps.end(), range.steps.from) -
      in.steps.begin();
  for (size_t i = begin; i < in.size() && in.steps[i] <= range.steps.to; ++i) {
    if (in.times_ms[i] >= range.times.from_ms &&
        in.times_ms[i] <= range.times.to_ms) {
      out->push_back(in.steps[i], in.times_ms[i], in.values[i]);
    }
  }
}

absl::Status SeriesHead::DropFirst(size_t k) {
  if (k == 0) return absl::OkStatus();
  if (k >= count_) {
    Clear();
    return absl::OkStatus();
  }
  // Fragments wholly before the cut go, those after it are kept byte for
  // byte, and only the one the cut falls into is decoded and re-encoded: a
  // seal used to decode and re-encode the whole head, a tenth of the
  // sealer's time at 10-step fragments.
  SeriesHead rest;
  size_t skipped = 0;  // points before the current fragment
  auto s = ForEachFrame(bytes_, [&](std::string_view fragment) -> absl::StatusOr<bool> {
    auto summary = ReadChunkSummary(fragment);
    if (!summary.ok()) return summary.status();
    const size_t n = summary->count;
    if (skipped >= k) {
      rest.AppendFrame(fragment, n, summary->min_step);
    } else if (skipped + n > k) {
      PointColumns points;
      if (auto d = DecodeChunk(fragment, &points); !d.ok()) return d;
      const size_t from = k - skipped;
      rest.Append(std::span(points.steps).subspan(from),
                  std::span(points.times_ms).subspan(from),
                  std::span(points.values).subspan(from), {});
    }
    skipped += n;
    return true;
  });
  if (!s.ok()) return s;
  if (rest.count_ + k != count_) {
    return absl::DataLossError("head: fragment counts do not add up");
  }
  rest.bytes_.shrink_to_fit();
  *this = std::move(rest);
  return absl::OkStatus();
}

absl::Status SeriesHead::MergeSmallTail() {
  if (small_tail_ < 2) return absl::OkStatus();
  // The small fragments start at small_tail_at_: no walk over the frames
  // before them (that walk was a twentieth of the sealer's time).
  const size_t tail = small_tail_at_;
  if (tail > bytes_.size()) return absl::InternalError("head: bad small tail");
  PointColumns points;
  if (auto s = DecodeFrames(std::string_view(bytes_).substr(tail), &points);
      !s.ok()) {
    return s;
  }
  bytes_.resize(tail);
  small_tail_ = 0;
  // In pieces like any encoding here: with merges off for a while (see
  // EngineOptions::merge_heads_above_bytes) the tail can be long.
  EncodeFragments(points.steps, points.times_ms, points.values);
  if (bytes_.capacity() > bytes_.size() + bytes_.size() / 4 + 64) {
    bytes_.shrink_to_fit();
  }
  return absl::OkStatus();
}

}  // namespace stepdb::storage
