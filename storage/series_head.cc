#include "storage/series_head.h"

#include <algorithm>
#include <span>
#include <vector>

#include "storage/keys.h"

namespace stepdb::storage {

// Points encoded here go into fragments of at most this many, well within
// what the decoder accepts, however long a head grows (seals failing for a
// while, e.g. on a full disk).
constexpr size_t kMaxPiecePoints = 65536;

void SeriesHead::AppendFragment(std::span<const uint64_t> steps,
                                std::span<const int64_t> times_ms,
                                std::span<const double> values,
                                std::string_view fragment) {
  // Grows by a quarter, not the string's (or the codec's) doubling: with a
  // million small heads, doubling's slack would cost as much as the points.
  const size_t at = bytes_.size();
  const size_t need =
      at + 4 + (fragment.empty() ? 64 + 6 * steps.size() : fragment.size());
  if (bytes_.capacity() < need) bytes_.reserve(std::max(need, at + at / 4));
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
  small_tail_ = steps.size() >= kSmallFragmentPoints ? 0
                : small_tail_ == 255                 ? 255
                                                     : small_tail_ + 1;
}

void SeriesHead::Append(std::span<const uint64_t> steps,
                        std::span<const int64_t> times_ms,
                        std::span<const double> values,
                        std::string_view fragment) {
  if (steps.empty()) return;
  if (!fragment.empty()) {
    AppendFragment(steps, times_ms, values, fragment);
  } else {
    for (size_t begin = 0; begin < steps.size(); begin += kMaxPiecePoints) {
      const size_t n = std::min(kMaxPiecePoints, steps.size() - begin);
      AppendFragment(steps.subspan(begin, n), times_ms.subspan(begin, n),
                     values.subspan(begin, n), {});
    }
  }
  if (count_ == 0) first_step_ = steps.front();
  count_ += static_cast<uint32_t>(steps.size());
}

namespace {

// Decodes framed fragments (size: 4 bytes big-endian, fragment)*, appending
// their points to *out.
absl::Status DecodeFrames(std::string_view in, PointColumns* out) {
  while (!in.empty()) {
    if (in.size() < 4) return absl::DataLossError("head: truncated fragment");
    const uint32_t size = ReadBigEndian32(in.data());
    in.remove_prefix(4);
    if (size > in.size()) return absl::DataLossError("head: truncated fragment");
    if (auto s = DecodeChunk(in.substr(0, size), out); !s.ok()) return s;
    in.remove_prefix(size);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SeriesHead::Decode(PointColumns* out) const {
  out->reserve(out->size() + count_);
  return DecodeFrames(bytes_, out);
}

absl::Status SeriesHead::DropFirst(size_t k) {
  if (k == 0) return absl::OkStatus();
  if (k >= count_) {
    *this = SeriesHead();
    return absl::OkStatus();
  }
  PointColumns points;
  if (auto s = Decode(&points); !s.ok()) return s;
  SeriesHead rest;
  rest.Append(std::span(points.steps).subspan(k),
              std::span(points.times_ms).subspan(k),
              std::span(points.values).subspan(k), {});
  rest.bytes_.shrink_to_fit();
  *this = std::move(rest);
  return absl::OkStatus();
}

absl::Status SeriesHead::MergeSmallTail() {
  if (small_tail_ < 2) return absl::OkStatus();
  // Where each fragment's frame starts; the tail is the last small_tail_.
  std::vector<size_t> frames;
  for (size_t at = 0; at + 4 <= bytes_.size();) {
    frames.push_back(at);
    at += 4 + ReadBigEndian32(bytes_.data() + at);
  }
  const size_t tail = frames[frames.size() - std::min<size_t>(
                                                  small_tail_, frames.size())];
  PointColumns points;
  if (auto s = DecodeFrames(std::string_view(bytes_).substr(tail), &points);
      !s.ok()) {
    return s;
  }
  bytes_.resize(tail);
  small_tail_ = 0;
  AppendFragment(points.steps, points.times_ms, points.values, {});
  if (bytes_.capacity() > bytes_.size() + bytes_.size() / 4 + 64) {
    bytes_.shrink_to_fit();
  }
  return absl::OkStatus();
}

}  // namespace stepdb::storage
