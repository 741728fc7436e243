#include "storage/series_head.h"

#include <algorithm>
#include <span>

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

absl::Status SeriesHead::Decode(PointColumns* out) const {
  out->reserve(out->size() + count_);
  std::string_view in = bytes_;
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

absl::Status SeriesHead::DecodeRange(const ReadRange& range,
                                     PointColumns* out) const {
  std::string_view in = bytes_;
  PointColumns part;  // a fragment that straddles an edge of the range
  while (!in.empty()) {
    if (in.size() < 4) return absl::DataLossError("head: truncated fragment");
    const uint32_t size = ReadBigEndian32(in.data());
    in.remove_prefix(4);
    if (size > in.size()) return absl::DataLossError("head: truncated fragment");
    const std::string_view fragment = in.substr(0, size);
    in.remove_prefix(size);
    auto summary = ReadChunkSummary(fragment);
    if (!summary.ok()) return summary.status();
    // Fragments follow each other in step order: none after this one can
    // hold a point in range either.
    if (summary->min_step > range.steps.to) break;
    if (summary->max_step < range.steps.from ||
        summary->max_time_ms < range.times.from_ms ||
        summary->min_time_ms > range.times.to_ms) {
      continue;
    }
    if (summary->min_step >= range.steps.from &&
        summary->max_step <= range.steps.to &&
        summary->min_time_ms >= range.times.from_ms &&
        summary->max_time_ms <= range.times.to_ms) {
      if (auto s = DecodeChunk(fragment, out); !s.ok()) return s;
      continue;
    }
    part.clear();
    if (auto s = DecodeChunk(fragment, &part); !s.ok()) return s;
    AppendInRange(part, range, out);
  }
  return absl::OkStatus();
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

}  // namespace stepdb::storage
