// The series index: (project, run, metric, labels) -> compact, stable ids.
//
// Ids are allocated in memory and their records queued; the engine writes the
// queued records in the same RocksDB write batch as (or before) the first
// points that use them, so an id is durable before anything that refers to it
// is acked, and registering a million series costs no fsync of its own.
//
// Thread-safety: all methods are thread-safe.
#ifndef STEPDB_STORAGE_SERIES_INDEX_H_
#define STEPDB_STORAGE_SERIES_INDEX_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "storage/keys.h"
#include "storage/series_key.h"

namespace stepdb::storage {

struct SeriesRef {
  SeriesId id = 0;
  ProjectId project = 0;
  RunId run = 0;
  bool created = false;  // true if this call allocated the id
};

// A RocksDB put in the index column family.
struct IndexRecord {
  std::string key;
  std::string value;
};

class SeriesIndex {
 public:
  SeriesIndex() = default;
  SeriesIndex(const SeriesIndex&) = delete;
  SeriesIndex& operator=(const SeriesIndex&) = delete;

  // Restores one P/R/S/N record read from the index column family at open.
  // Returns DataLossError for a malformed record. Not for concurrent use
  // with other methods (open is single-threaded).
  absl::Status LoadRecord(std::string_view key, std::string_view value);

  // Finds the series, allocating ids (and queueing their records) for a new
  // project, run or series. Precondition: ValidateSeriesKey(key) is OK.
  // Returns ResourceExhaustedError when the id space is used up.
  absl::StatusOr<SeriesRef> Resolve(const SeriesKey& key);
  std::optional<SeriesRef> Find(const SeriesKey& key) const;

  // Moves the records queued since the last call into *out.
  void TakePendingRecords(std::vector<IndexRecord>* out);
  // Puts records back after a failed write, so the next write retries them.
  void RestorePendingRecords(std::vector<IndexRecord> records);

  std::optional<ProjectId> FindProject(const std::string& project) const;
  std::optional<RunId> FindRun(ProjectId project, const std::string& run) const;
  // Every series id of a project (optionally one run), in id order.
  std::vector<SeriesId> SeriesOf(ProjectId project,
                                 std::optional<RunId> run) const;
  std::optional<SeriesRef> RefOf(SeriesId id) const;

  // Forgets `run` of `project` (or, without `run`, the project and every
  // run of it) and their series, and drops their queued records, so that
  // the names resolve to new ids afterwards. Returns the series ids
  // removed, in id order. Ids are never reused (see HighWaterRecord);
  // KeyOf and RefOf of a removed id return nothing.
  std::vector<SeriesId> Remove(ProjectId project, std::optional<RunId> run);
  // The record of the largest ids allocated so far: written with a
  // deletion, so that a restart does not hand out a deleted run's or
  // series' id again when it was the largest.
  IndexRecord HighWaterRecord() const;
  // The key of a series, built from the compact entry (a few small
  // allocations: not for per-point paths); nullopt for an unknown or
  // removed id.
  std::optional<SeriesKey> KeyOf(SeriesId id) const;

  size_t project_count() const;
  size_t run_count() const;
  size_t series_count() const;
  // The largest allocated series id (ids are dense from 1).
  SeriesId max_series_id() const;

 private:
  // What the index holds per series: about 70 bytes. A full SeriesKey per
  // series (project and run names repeated, labels as a vector of string
  // pairs) took ~300 bytes, a third of a million-series server's memory.
  struct SeriesEntry {
    ProjectId project = 0;  // 0: removed, or an id never allocated
    RunId run = 0;
    // SeriesIdentity (metric and canonical labels), in identities_.
    const char* identity_data = nullptr;
    uint32_t identity_size = 0;

    std::string_view identity() const { return {identity_data, identity_size}; }
    // Points the entry at `stored` (bytes in identities_).
    void SetIdentity(std::string_view stored) {
      identity_data = stored.data();
      identity_size = static_cast<uint32_t>(stored.size());
    }
  };
  // The identity bytes of every series, back to back in blocks that never
  // move: at a million series a std::string each took its 32 bytes plus a
  // heap block of the next size class (~24 MB more in all). A removed
  // series' bytes stay until the next start.
  class IdentityArena {
   public:
    std::string_view Store(std::string_view bytes);

   private:
    static constexpr size_t kBlockBytes = 256 << 10;
    std::vector<std::unique_ptr<char[]>> blocks_;
    size_t block_size_ = 0;  // of blocks_.back()
    size_t used_ = 0;        // of blocks_.back(), from its start
  };
  // A deque: entries never move, and growing it copies none of them.
  using Entries = std::deque<SeriesEntry>;

  // The series set holds ids only and hashes and compares their entries,
  // so that each identity is stored once. Lookups go by SeriesProbe.
  struct SeriesProbe {
    ProjectId project;
    RunId run;
    std::string_view identity;
  };
  struct SeriesHash {
    using is_transparent = void;
    const Entries* entries;
    size_t operator()(const SeriesProbe& p) const;
    size_t operator()(SeriesId id) const;
  };
  struct SeriesEq {
    using is_transparent = void;
    const Entries* entries;
    static SeriesProbe Probe(const Entries& entries, SeriesId id);
    bool operator()(const SeriesProbe& a, const SeriesProbe& b) const;
    bool operator()(SeriesId a, SeriesId b) const { return a == b; }
    bool operator()(SeriesId a, const SeriesProbe& b) const {
      return (*this)(Probe(*entries, a), b);
    }
    bool operator()(const SeriesProbe& a, SeriesId b) const {
      return (*this)(a, Probe(*entries, b));
    }
  };

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, ProjectId> projects_ ABSL_GUARDED_BY(mu_);
  // Names by id, for KeyOf (and, at load, to check 'S' records: 'P' and
  // 'R' records sort before them).
  absl::flat_hash_map<ProjectId, std::string> project_names_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<RunId, std::string> run_names_ ABSL_GUARDED_BY(mu_);
  // Key: RunIndexKey(project, run).
  absl::flat_hash_map<std::string, RunId> runs_ ABSL_GUARDED_BY(mu_);
  // Indexed by SeriesId - 1.
  Entries entries_ ABSL_GUARDED_BY(mu_);
  IdentityArena identities_ ABSL_GUARDED_BY(mu_);
  // Every series, by (project, run, metric, labels); see SeriesHash.
  absl::flat_hash_set<SeriesId, SeriesHash, SeriesEq> series_ ABSL_GUARDED_BY(
      mu_){0, SeriesHash{&entries_}, SeriesEq{&entries_}};
  absl::flat_hash_map<ProjectId, std::vector<SeriesId>> series_by_project_
      ABSL_GUARDED_BY(mu_);
  ProjectId max_project_ ABSL_GUARDED_BY(mu_) = 0;
  RunId max_run_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<IndexRecord> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_SERIES_INDEX_H_
