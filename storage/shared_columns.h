// Sharing of step and time columns between the chunks of series logged
// together (format version 3 "follower" chunks, docs/FORMAT.md). Metrics
// written by one logging call (same project, run and labels; different
// metric) have identical step and time columns; storing them once per
// group instead of once per series is most of what their chunks cost
// besides the values. This file holds the seal-side bookkeeping: which
// chunk of a group may serve as the leader of a sibling's chunk.
//
// Invariants the engine keeps (docs/ARCHITECTURE.md, "Shared time
// columns"):
// - a follower names a leader of the same project and run with a LOWER
//   series id, whose chunk starts at the same step and stores its own
//   columns (format version 2; no chains);
// - the leader's chunk is written in an earlier RocksDB write than the
//   follower's (crash: a follower never survives without its leader);
// - nothing deletes a leader chunk before its followers: runs are erased
//   whole in one batch, and retention (same max time for both) walks the
//   series in descending id order.
#ifndef STEPDB_STORAGE_SHARED_COLUMNS_H_
#define STEPDB_STORAGE_SHARED_COLUMNS_H_

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "storage/chunk_codec.h"
#include "storage/keys.h"
#include "storage/series_key.h"

namespace stepdb::storage {

// The group of series that may share columns: project and run (the first 8
// bytes of a data key) and the label set. The metric is left out: it is
// what differs between the series of one logging call.
std::string ColumnGroupKey(std::string_view run_data_prefix,
                           const Labels& labels);

// A hash of a chunk's step and time columns (in-memory only; a match is a
// hint that the engine then checks against the leader's stored chunk).
uint64_t HashColumns(std::span<const uint64_t> steps,
                     std::span<const int64_t> times_ms);

// Remembers, per (group, chunk first step), the series that sealed a chunk
// holding its own columns there, so that a sibling sealing the same window
// later can refer to it. Bounded: past `capacity` entries the oldest are
// forgotten (siblings seal within moments of each other; a forgotten
// entry only costs a chunk that stores its columns itself).
// Thread-compatible (the engine uses it under its seal mutex).
class LeaderCache {
 public:
  explicit LeaderCache(size_t capacity) : capacity_(capacity) {}
  LeaderCache(const LeaderCache&) = delete;
  LeaderCache& operator=(const LeaderCache&) = delete;

  // The leader series recorded for (group, first_step) if its columns'
  // hash is `hash` and its id is below `follower` (see the invariants).
  std::optional<SeriesId> Find(std::string_view group, uint64_t first_step,
                               uint64_t hash, SeriesId follower) const;
  // Records that `series` sealed a version 2 chunk at (group, first_step)
  // with columns hashing to `hash`. A recorded leader is kept (its
  // followers may already refer to it), unless `series` has a lower id.
  void Add(std::string_view group, uint64_t first_step, uint64_t hash,
           SeriesId series);

  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    uint64_t hash;
    SeriesId series;
  };
  static std::string Key(std::string_view group, uint64_t first_step);

  const size_t capacity_;
  absl::flat_hash_map<std::string, Entry> entries_;
  std::deque<std::string> order_;  // insertion order, for eviction
};

// The step and time columns of the leader chunks sealed last, so that a
// sibling sealing the same window checks a LeaderCache hint against them
// rather than reading the leader's chunk back and decoding it (a RocksDB
// read and a decode per follower seal: ~8 % of the sealer's time).
// Bounded by bytes, oldest forgotten first; a forgotten entry only costs
// that read. The engine clears it whenever chunks are deleted.
// Thread-compatible (the engine uses it under its seal mutex).
class RecentLeaderColumns {
 public:
  explicit RecentLeaderColumns(size_t max_bytes) : max_bytes_(max_bytes) {}
  RecentLeaderColumns(const RecentLeaderColumns&) = delete;
  RecentLeaderColumns& operator=(const RecentLeaderColumns&) = delete;

  // The columns of the chunk `leader` sealed at `first_step`, or null if
  // they are not kept.
  const PointColumns* Find(SeriesId leader, uint64_t first_step) const;
  // Keeps the columns of the chunk `leader` just sealed (steps non-empty).
  void Add(SeriesId leader, std::span<const uint64_t> steps,
           std::span<const int64_t> times_ms);
  void Clear();

 private:
  using Key = std::pair<SeriesId, uint64_t>;  // leader, first step
  static size_t Bytes(const PointColumns& columns) {
    return columns.steps.size() * (sizeof(uint64_t) + sizeof(int64_t));
  }

  const size_t max_bytes_;
  size_t bytes_ = 0;
  absl::flat_hash_map<Key, PointColumns> entries_;  // values left empty
  std::deque<Key> order_;  // insertion order, for eviction
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_SHARED_COLUMNS_H_
