// The open head of one series: its durable points that are not sealed into
// a chunk yet, kept compressed.
//
// The head holds the encoded fragments the write path already made for the
// head log (format version 1, docs/FORMAT.md), one after the other, each
// behind its byte size, rather than three uncompressed columns: a point
// costs its share of a fragment (about 3-11 bytes, by the batch size)
// instead of 24 bytes plus the slack of three growing vectors. With a
// million active series the heads were most of the server's memory.
// Readers and sealing decode; appends only copy bytes.
//
// Thread-compatible: the engine guards each head with its series' mutex.
#ifndef STEPDB_STORAGE_SERIES_HEAD_H_
#define STEPDB_STORAGE_SERIES_HEAD_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "storage/chunk_codec.h"
#include "storage/engine.h"

namespace stepdb::storage {

class SeriesHead {
 public:
  // Not `= default`: value-initialising in place would then zero the whole
  // object, tail padding included, where the engine's SeriesState keeps
  // flags ([[no_unique_address]]). For the same reason every assignment
  // stays member-wise.
  SeriesHead() noexcept {}
  SeriesHead(const SeriesHead&) = default;
  SeriesHead(SeriesHead&&) = default;
  SeriesHead& operator=(const SeriesHead&) = default;
  // Swaps rather than moves: libstdc++'s move-assignment from an inline
  // (short) string keeps the target's heap buffer, so a head replaced by
  // an emptied one (a seal of the whole head) kept its old allocation.
  SeriesHead& operator=(SeriesHead&& other) noexcept {
    bytes_.swap(other.bytes_);
    std::swap(count_, other.count_);
    std::swap(small_tail_at_, other.small_tail_at_);
    std::swap(first_step_, other.first_step_);
    std::swap(small_tail_, other.small_tail_);
    return *this;
  }

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  // Precondition: !empty().
  uint64_t first_step() const { return first_step_; }
  // Bytes allocated for the encoded fragments and their sizes (0 while they
  // fit in the string object itself).
  size_t bytes() const {
    return bytes_.capacity() > kInlineCapacity ? bytes_.capacity() : 0;
  }

  // Appends points whose steps strictly increase and follow the head's
  // last step. `fragment` is their encoding (EncodeChunkV1 of exactly these
  // points), or empty to have them encoded here.
  void Append(std::span<const uint64_t> steps, std::span<const int64_t> times_ms,
              std::span<const double> values, std::string_view fragment);

  // Appends every point, in step order, to *out. Returns DataLossError if
  // a fragment does not decode (memory corruption: never in practice).
  absl::Status Decode(PointColumns* out) const;

  // Appends the points within `range` (step and time both in range), in
  // step order, to *out. Decodes only the fragments that can hold such a
  // point, read from their headers: a fragment wholly outside `range` is
  // skipped, one wholly inside is decoded straight into *out, and only one
  // straddling an edge is decoded and filtered. Readers ask for a range
  // (a chart's, an aggregate's, the one step of a duplicate check) once per
  // series while holding its lock, so the whole head is not decoded each
  // time. Errors as Decode.
  absl::Status DecodeRange(const ReadRange& range, PointColumns* out) const;

  // Removes the first `k` points (k <= size()). Only the fragment holding
  // the k-th point is decoded (its remainder is re-encoded); later ones are
  // kept as they are. Returns the decoding error, leaving the head
  // unchanged.
  absl::Status DropFirst(size_t k);

  // True when the head ends in kMergeFragments or more fragments of fewer
  // than kSmallFragmentPoints points each. Small write batches make such
  // fragments, and a fragment is mostly its header (about 17 bytes a point
  // at 4 points, against 4-6 for a few dozen points in one fragment).
  bool WantsMerge() const { return small_tail_ >= kMergeFragments; }
  // Re-encodes all the trailing small fragments as one fragment (as several
  // if they hold more than 65,536 points); the points stay the same.
  // Returns the decoding error, leaving the head unchanged.
  absl::Status MergeSmallTail();

  // Empties the head and frees its buffer.
  void Clear();

  static constexpr size_t kSmallFragmentPoints = 16;
  static constexpr uint8_t kMergeFragments = 4;

 private:
  // Appends one fragment: `fragment`, or the encoding of the points.
  void AppendFragment(std::span<const uint64_t> steps,
                      std::span<const int64_t> times_ms,
                      std::span<const double> values, std::string_view fragment);
  // Encodes the points as fragments of at most kMaxPiecePoints each.
  void EncodeFragments(std::span<const uint64_t> steps,
                       std::span<const int64_t> times_ms,
                       std::span<const double> values);
  // Appends an already framed-out fragment of `points` points, the first
  // at `first_step`, byte for byte.
  void AppendFrame(std::string_view fragment, size_t points,
                   uint64_t first_step);
  // Updates small_tail_ for a new last fragment of `points` points whose
  // frame starts at byte `frame_at`.
  void CountFragment(size_t points, size_t frame_at);

  // What a std::string holds without a heap allocation (15 in libstdc++).
  static inline const size_t kInlineCapacity = std::string().capacity();
  std::string bytes_;  // (size: 4 bytes big-endian, fragment)*
  uint32_t count_ = 0;
  // Where the frame of the first trailing small fragment starts (when
  // small_tail_ > 0).
  uint32_t small_tail_at_ = 0;
  uint64_t first_step_ = 0;
  // How many trailing fragments have fewer than kSmallFragmentPoints points
  // (the count saturates at 255; a merge takes all of them, from
  // small_tail_at_).
  uint8_t small_tail_ = 0;
};

// Appends the points of `in` (steps ascending) whose step and time are both
// within `range` to *out.
void AppendInRange(const PointColumns& in, const ReadRange& range,
                   PointColumns* out);

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_SERIES_HEAD_H_
