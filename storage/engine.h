// The storage engine: series index, in-memory head chunks, sealed compressed
// chunks in RocksDB, group-committed durable appends and merged reads.
//
// Write path. AppendAsync queues a request; one committer thread takes every
// queued request at once (a group), validates the points against each
// series' last step, and writes the accepted points of the whole group as
// ONE head-log record (a fragment per series) in one RocksDB WriteBatch with
// one fsync (group commit). Only then are the points published to the
// in-memory heads and the callbacks run. A head that reaches `chunk_points`
// is sealed by a background thread: its points become one compressed chunk
// plus its rollup record (storage/rollup.h), atomically with the deletion of
// the head-log records no series needs any more. After a crash the heads
// are rebuilt by replaying the head log; chunks and rollups never disagree.
//
// Thread-safety: every public method is thread-safe.
#ifndef STEPDB_STORAGE_ENGINE_H_
#define STEPDB_STORAGE_ENGINE_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/chunk_codec.h"
#include "storage/keys.h"
#include "storage/latency_histogram.h"
#include "storage/label_matcher.h"
#include "storage/rollup.h"
#include "storage/series_key.h"

namespace stepdb::storage {

struct EngineOptions {
  std::string data_dir;
  // fsync the write-ahead log before a write counts as durable. false is the
  // explicit --sync=none opt-out: the WAL is still written, not fsync'd.
  bool sync = true;
  // Points per sealed chunk.
  size_t chunk_points = 1024;
  // A head-log record is kept until every series in it is sealed; a series
  // that stops receiving points would pin it forever. Records older than
  // this get their series sealed early (into a shorter chunk), which bounds
  // the log and the replay time after a crash.
  absl::Duration max_head_age = absl::Minutes(2);
  // Small head fragments (small write batches) are re-encoded together on
  // the sealer's thread, which shrinks them about 2-fold, only while the
  // open heads hold at least this many bytes in all (128 MiB: about 16 M
  // points), or under memory pressure: below that, heads are a small part
  // of memory, and merging was up to half of the sealer's CPU at 10-step
  // batches.
  uint64_t merge_heads_above_bytes = 128 << 20;
  // Memory budget in bytes for points held in memory (the open heads'
  // allocations and the decoded appends queued for commit); 0 = none. Above
  // half of it the oldest heads are sealed early; see MemoryPressure().
  uint64_t memory_limit = 0;
  // Above half the budget, seal the oldest heads early (whole, into shorter
  // chunks) until a quarter of it is used. Off, the budget only slows and
  // refuses writers (and seals every head once over it for a second).
  bool seal_under_pressure = true;
  // Flow control before the budget: once the seal queue has not been empty
  // for `seal_assist_after` and the open heads hold at least
  // `seal_assist_above_bytes`, writers seal queued heads on their own
  // threads (see AppendAsync). Those bytes are the burst a sealer that
  // falls behind may build up (256 MiB: ~40 M points at 5120 series);
  // past them ingest slows to the rate sealing keeps up with, instead of
  // the heads growing on to early seals and refusals at the budget.
  absl::Duration seal_assist_after = absl::Seconds(1);
  uint64_t seal_assist_above_bytes = 256 << 20;
  // RocksDB's own memory, which counts in the process' RSS beside the
  // heads: all memtables of all column families together (a write buffer
  // manager flushes the largest when they pass it), and one block cache
  // shared by every column family. Left to RocksDB's defaults, each
  // family would get up to 2 x 64 MiB of memtables and its own cache.
  uint64_t rocksdb_memtable_bytes = 192 << 20;
  uint64_t rocksdb_block_cache_bytes = 32 << 20;
  // Appends are refused with ResourceExhausted while the data directory's
  // file system has less than this many bytes free, so that RocksDB never
  // runs out of room mid-write and flushes and compactions keep space to
  // work in; they are taken again as soon as space is freed. 0: no reserve
  // (writes then fail only when the disk is really full).
  uint64_t min_free_disk_bytes = 0;
  // RocksDB block cache of the rollups column family, in bytes. Chart and
  // aggregate reads walk rollup records, ~0.3 bytes per stored point (512
  // series x 100,000 steps: ~15 MB); a cache that holds the records read
  // often saves a pread and a copy per block.
  uint64_t rollup_cache_bytes = 256 << 20;
};

// How close the engine is to its memory budget.
enum class MemoryPressure {
  kNone,    // below half of the budget (or no budget)
  kHigh,    // above half: writers should slow down; the sealer seals the
            // oldest heads until a quarter of the budget is used
  kOverLimit,  // above the budget: writers must be refused
};

// A read-only view of points (columns), e.g. one series' slice of a batch.
struct PointSpan {
  std::span<const uint64_t> steps;
  std::span<const int64_t> times_ms;
  std::span<const double> values;

  size_t size() const { return steps.size(); }
  bool empty() const { return steps.empty(); }
  // The points from index `from` on.
  PointSpan Suffix(size_t from) const {
    return {steps.subspan(from), times_ms.subspan(from), values.subspan(from)};
  }
  // The first `n` points.
  PointSpan Prefix(size_t n) const {
    return {steps.first(n), times_ms.first(n), values.first(n)};
  }
};

// The points of one append request: every series' points in one set of
// columns, one series after the other, so that a request costs a handful of
// allocations however many series it holds.
class AppendBatch {
 public:
  struct Series {
    SeriesId id = 0;
    uint32_t begin = 0;  // first point in points()
    uint32_t count = 0;
    // The prepared head fragment in fragments() (see Prepare); size 0: not
    // prepared.
    uint32_t fragment_begin = 0;
    uint32_t fragment_size = 0;
  };

  // Starts the points of a series; push them with AddPoint.
  void StartSeries(SeriesId id) {
    series_.push_back({id, static_cast<uint32_t>(points_.size()), 0, 0, 0});
  }
  void AddPoint(uint64_t step, int64_t time_ms, double value) {
    points_.push_back(step, time_ms, value);
    ++series_.back().count;
  }
  // Convenience: a whole series at once.
  void Add(SeriesId id, const PointColumns& points);
  void Reserve(size_t series, size_t points) {
    series_.reserve(series);
    points_.reserve(points);
  }

  // Encodes each series' points as a head fragment, if its steps strictly
  // increase, so that the single commit thread only has to compare the first
  // step with the series' last one. Optional; call it on the caller's
  // thread. Thread-compatible; touches no engine state.
  void Prepare();

  const std::vector<Series>& series() const { return series_; }
  PointSpan points(const Series& s) const {
    return {std::span(points_.steps).subspan(s.begin, s.count),
            std::span(points_.times_ms).subspan(s.begin, s.count),
            std::span(points_.values).subspan(s.begin, s.count)};
  }
  std::string_view fragment(const Series& s) const {
    return std::string_view(fragments_).substr(s.fragment_begin, s.fragment_size);
  }
  size_t point_count() const { return points_.size(); }
  // Heap bytes the batch holds as allocated (columns, fragments, series
  // entries): what a queued append counts against the memory budget.
  uint64_t MemoryBytes() const;

 private:
  std::vector<Series> series_;
  PointColumns points_;
  std::string fragments_;
};

struct SeriesAppendResult {
  uint64_t accepted = 0;
  uint64_t duplicates = 0;  // repeated an existing (step, value): dropped
  uint64_t rejected = 0;    // step went backwards with another value
  std::string first_rejection;  // why the first rejected point was rejected
};

struct StepRange {
  uint64_t from = 0;  // inclusive, micro-steps
  uint64_t to = std::numeric_limits<uint64_t>::max();  // inclusive
};

struct TimeRange {
  int64_t from_ms = std::numeric_limits<int64_t>::min();  // inclusive
  int64_t to_ms = std::numeric_limits<int64_t>::max();    // inclusive
};

// What a read selects: points whose step and time are both in range.
struct ReadRange {
  StepRange steps;
  TimeRange times;
};

struct ReadResult {
  uint64_t points = 0;
  bool truncated = false;  // more points matched than the limit allowed
};

// Reads and decodes a sealed chunk on demand, resolving a chunk that shares
// another series' step and time columns (format version 3) with one more
// point lookup: the one way sealed chunks are decoded. Returns the points
// (valid until the visitor's call returns), DataLossError for a corrupt
// chunk or a missing leader chunk.
using ChunkLoader = absl::FunctionRef<absl::StatusOr<const PointColumns*>()>;

// Receives the pieces of a series that Engine::Scan finds in a range: first
// the sealed chunks (in step order), then the head. Lets a reader use a
// chunk's header summary (count, min, max, sum, NaN/Inf counts, step and
// time bounds) and decode it (`load_chunk`) only when it must.
class ChunkVisitor {
 public:
  virtual ~ChunkVisitor() = default;
  // A sealed chunk that may overlap the range (it may also hold points
  // outside it). Returns false to stop the scan (OnHead is then not
  // called), or an error to fail it.
  virtual absl::StatusOr<bool> OnChunk(const ChunkSummary& summary,
                                       ChunkLoader load_chunk) = 0;
  // The head's points within the range, in step order (maybe none).
  virtual void OnHead(const PointColumns& points) = 0;
};

// Receives what Engine::ScanRollups finds in a range: first each sealed
// chunk's rollup pieces (storage/rollup.h; chunks in step order), then the
// head. A reader takes the pieces that serve it whole and calls
// `load_chunk` only when it needs the points of some piece (the call reads
// and decodes the chunk; its result stays valid until OnChunkPieces
// returns). `load_chunk` returns nullptr when retention has deleted the
// chunk and kept only its record (Engine::ExpireChunks): the pieces are
// then all there is.
class RollupVisitor {
 public:
  using ChunkLoader = storage::ChunkLoader;
  virtual ~RollupVisitor() = default;
  // The pieces of a sealed chunk that may overlap the range (some pieces
  // may lie outside it), in step order; pieces[k] holds the chunk's points
  // from index (count of pieces[0..k)) on. Returns false to stop the scan
  // (OnHead is then not called), or an error to fail it.
  virtual absl::StatusOr<bool> OnChunkPieces(
      std::span<const RollupPiece> pieces, ChunkLoader load_chunk) = 0;
  // The head's points within the range, in step order (maybe none).
  virtual void OnHead(const PointColumns& points) = 0;
};

// Receives successive slices of a read in step order; returns false to stop.
using ReadSink = absl::FunctionRef<bool(const PointColumns&)>;

struct SeriesFilter {
  std::string project;                // required
  std::optional<std::string> run;     // exact
  std::optional<std::string> metric;  // exact
  Labels labels;                      // each must be present and equal
  // Each must match (see label_matcher.h; compiled once by the caller).
  std::vector<LabelMatcher> matchers;

  // Whether `key` passes the filter.
  bool Matches(const SeriesKey& key) const;
};

struct SeriesInfo {
  SeriesId id = 0;
  SeriesKey key;
  uint64_t points = 0;
  uint64_t first_step = 0;  // valid if points > 0
  uint64_t last_step = 0;
  int64_t last_time_ms = 0;
  double last_value = 0;
};

struct EngineStats {
  uint64_t projects = 0;
  uint64_t runs = 0;
  uint64_t series = 0;
  uint64_t points = 0;
  uint64_t head_points = 0;
  uint64_t head_bytes = 0;  // what the open heads hold, compressed
  uint64_t sealed_chunks = 0;
  uint64_t bytes_on_disk = 0;  // whole data directory
  uint64_t memory_used = 0;    // against the budget (Engine::MemoryUsage)
  uint64_t seals_queued = 0;   // heads waiting for the sealer
  uint64_t seal_assists = 0;   // seals run by writers since open (AppendAsync)
  // Memory RocksDB holds outside the budget (EngineOptions::
  // rocksdb_memtable_bytes and the block caches): mutable and immutable
  // memtables of every family, and the caches' charged blocks.
  uint64_t rocksdb_memtable_bytes = 0;
  uint64_t rocksdb_block_cache_bytes = 0;
  // Since open:
  uint64_t write_groups = 0;  // RocksDB writes of the commit path (fsyncs)
  uint64_t appends = 0;       // AppendAsync calls committed
  uint64_t points_accepted = 0;
  uint64_t points_duplicate = 0;
  uint64_t points_rejected = 0;
  // Bytes written to disk since open, for write amplification: RocksDB's
  // write-ahead log, memtable flushes and compactions.
  uint64_t wal_bytes = 0;
  uint64_t flush_bytes = 0;
  uint64_t compaction_bytes = 0;
  // Bytes per second flushes and compactions may write now
  // (storage/background_writes.h).
  uint64_t background_write_limit = 0;
  // Bytes flushes and compactions wrote through that limit since open.
  uint64_t background_bytes_paced = 0;
  // How long each group commit's RocksDB write took (WAL write and, with
  // sync on, the fsync): the disk's share of ack latency.
  LatencyHistogram::Snapshot group_write_seconds;
};

struct CompactResult {
  uint64_t chunks_sealed = 0;
  uint64_t bytes_before = 0;
  uint64_t bytes_after = 0;
};

struct ExpireResult {
  uint64_t chunks = 0;  // sealed chunks deleted
  uint64_t points = 0;  // raw points they held
  uint64_t rollup_records = 0;  // rollup records deleted
  uint64_t rollup_points = 0;   // points those records counted
};

// What a deletion removed (Engine::DeleteRun, DeleteProject).
struct DeleteResult {
  uint64_t runs = 0;    // runs the series index knew (with series)
  uint64_t series = 0;
  uint64_t points = 0;  // points they held, sealed and in heads
  uint64_t chunks = 0;  // sealed chunks
};

// One write to the meta column family: a put, or a delete if `value` is
// unset.
struct MetaWrite {
  std::string key;
  std::optional<std::string> value;
};

// The accepted points of one series in a committed group.
struct CommittedPoints {
  SeriesId series = 0;
  PointSpan points;
};

// Sees the points of every commit group once they are durable and readable,
// before their acks are sent. Runs on the engine's commit thread: it must be
// quick, must not block and must not call into the engine's write path;
// copy what you need (the spans die when OnCommit returns).
class CommitObserver {
 public:
  virtual ~CommitObserver() = default;
  virtual void OnCommit(std::span<const CommittedPoints> committed) = 0;
  // The series were deleted (Engine::DeleteRun, DeleteProject): drop every
  // state kept for them. Called on the deleting thread, while commits are
  // paused: no OnCommit runs meanwhile and none names these ids again (ids
  // are never reused). Must be quick and must not call into the engine.
  virtual void OnSeriesDeleted(std::span<const SeriesId> /*series*/) {}
};

class Engine {
 public:
  using AppendCallback = absl::AnyInvocable<void(
      absl::Status, std::vector<SeriesAppendResult>) &&>;

  // Opens (creating if missing) the data directory and recovers the heads.
  // A directory written before rollups existed gets the rollup record of
  // every chunk built first (one pass decoding every chunk, once).
  // Returns the RocksDB error if the directory cannot be opened (another
  // process holds its lock, permissions, corruption).
  static absl::StatusOr<std::unique_ptr<Engine>> Open(EngineOptions options);

  // Commits everything queued, syncs the WAL and closes the database.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Returns the id of the series, registering it if new. Returns
  // InvalidArgumentError (naming the field) if the key breaks
  // ValidateSeriesKey. Labels need not be sorted.
  absl::StatusOr<SeriesId> ResolveSeries(SeriesKey key);
  std::optional<SeriesId> FindSeries(SeriesKey key) const;
  // The series' key (built on each call: not for per-point paths), or
  // nullopt for an unknown or deleted id.
  std::optional<SeriesKey> KeyOf(SeriesId id) const;

  // Queues an append. Precondition: each series id came from ResolveSeries.
  // Within a series, points are checked
  // in order against the last stored step: a greater step is accepted; a
  // point that repeats a stored (step, value) bit for bit is a duplicate;
  // anything else is rejected. `done` runs exactly once, on an internal
  // thread, after the accepted points are durable (status OK, one result per
  // batch series, in order) or could not be written (the write error; then
  // nothing of the append was stored). `done` must not block.
  // Flow control: once sealing has fallen behind (see
  // EngineOptions::seal_assist_after), the call seals queued heads on the
  // caller's thread, about as many points as it appends, before it
  // returns; so writers slow to the rate sealing keeps up with. The caller
  // must hold no lock the engine's callbacks take.
  void AppendAsync(AppendBatch batch, AppendCallback done);
  // Blocking form of AppendAsync.
  absl::StatusOr<std::vector<SeriesAppendResult>> Append(AppendBatch batch);

  // Streams the points of a series within `range` to `sink`, in step order,
  // at most `limit` of them (0 = no limit). Sealed chunks and head points
  // are read as of one consistent moment. Chunks outside the step range are
  // not read; chunks outside the time range are not decoded. Returns
  // NotFoundError for an unknown series id, DataLossError for a corrupt
  // chunk.
  absl::StatusOr<ReadResult> Read(SeriesId series, const ReadRange& range,
                                  uint64_t limit, ReadSink sink) const;

  // Visits the chunks and head of a series that may hold points in `range`,
  // as of one consistent moment (see ChunkVisitor). Returns NotFoundError for
  // an unknown series id, DataLossError for a corrupt chunk header, or the
  // visitor's error.
  absl::Status Scan(SeriesId series, const ReadRange& range,
                    ChunkVisitor& visitor) const;

  // As Scan, through the chunks' rollup records (see RollupVisitor): a
  // reader that can use a chunk's piece aggregates reads ~1/10 of the
  // chunk's bytes and decodes nothing. Returns NotFoundError for an unknown
  // series id, DataLossError for a corrupt record or chunk (or a record
  // whose chunk is missing), or the visitor's error.
  absl::Status ScanRollups(SeriesId series, const ReadRange& range,
                           RollupVisitor& visitor) const;

  // Series matching the filter, in id order, at most `limit` (0 = all);
  // *truncated says whether more matched.
  std::vector<SeriesInfo> ListSeries(const SeriesFilter& filter, size_t limit,
                                     bool* truncated) const;

  EngineStats Stats() const;

  // Where memory use stands against EngineOptions::memory_limit. Cheap
  // (two atomic loads); ingest consults it per request.
  MemoryPressure Pressure() const;
  // Bytes of points in memory (heads and queued appends), as budgeted.
  uint64_t MemoryUsage() const;
  // Bytes of the appends queued and not yet committed (their
  // AppendBatch::MemoryBytes()). Cheap (an atomic load).
  uint64_t QueuedAppendBytes() const;

  // Seals every head and compacts the database fully.
  absl::StatusOr<CompactResult> Compact();

  // Retention, with rollups kept at least as long as raw points
  // (auth/retention.h). For every series of `project`:
  //   - a sealed chunk whose points are all older than `raw_cutoff_ms` (its
  //     max time, from its header) is deleted;
  //   - its rollup record is deleted with it if also older than
  //     `rollup_cutoff_ms`, else kept and flagged raw-expired
  //     (MarkRollupRawExpired): reads then serve the chunk's span from the
  //     record's pieces alone (storage/downsample.h);
  //   - a flagged record older than `rollup_cutoff_ms` is deleted.
  // Head points, chunks holding any newer point, and records of chunks
  // that stay, are kept. Each series' changes and its statistics are one
  // atomic RocksDB write, and the pass is idempotent: after a crash, the
  // next pass finishes the work. Statistics afterwards (ListSeries,
  // Stats): `points` counts raw points plus the points of flagged records
  // (what a chart over the whole series counts; Read returns the raw
  // ones), `first_step` is that of the first chunk or record left,
  // `sealed_chunks` counts chunks. Costs a walk over the project's chunk
  // headers and rollup records (flagged records are decoded); the space is
  // reclaimed by RocksDB compaction. Returns InvalidArgumentError if
  // rollup_cutoff_ms > raw_cutoff_ms, DataLossError for a corrupt chunk
  // header or rollup record, or the RocksDB error (series written before
  // it keep their expiry).
  absl::StatusOr<ExpireResult> ExpireChunks(std::string_view project,
                                            int64_t raw_cutoff_ms,
                                            int64_t rollup_cutoff_ms);
  // Both periods equal: chunks and their records expire together.
  absl::StatusOr<ExpireResult> ExpireChunks(std::string_view project,
                                            int64_t cutoff_ms);

  // Right to erasure. Deletes every point of `run` of `project` in one
  // atomic, durable (fsync'd) RocksDB write: range deletions over every
  // run-data column family (keys project(4) run(4) ...), the run's index
  // records (R, S, T), the head-log entries of its series (records are
  // rewritten without them, or deleted), and its metadata record (meta
  // kRunMetaTag project NUL run). A crash leaves all of it or none of it.
  //
  // Then, in memory: the run's series leave the index, their heads are
  // dropped, commit observers are told (OnSeriesDeleted). Group commits
  // and seals are paused for the duration (one write), so that no commit
  // can straddle the deletion: an append committed before is deleted, an
  // append to the old series ids committed after is rejected per series
  // ("series was deleted"), never half-stored. The names may be written
  // again afterwards: they resolve to a new run with new ids and start
  // empty. Deleted ids are never reused.
  //
  // The space comes back with compaction; ReclaimDeleted compacts the
  // deleted ranges now. Returns what the index knew of the run (all zero,
  // with the metadata record still deleted, if it never had points), or
  // the RocksDB error with nothing deleted.
  absl::StatusOr<DeleteResult> DeleteRun(std::string_view project,
                                         std::string_view run);
  // As DeleteRun for every run of `project`, plus the project's index
  // record and its per-project meta records: run metadata (kRunMetaTag),
  // watch rules (kWatchRuleTag) and the retention policy (kRetentionTag).
  // Kept: tokens, the audit log and watch events, which are not keyed by
  // project (docs/ARCHITECTURE.md, "Deleting runs and projects").
  absl::StatusOr<DeleteResult> DeleteProject(std::string_view project);
  // Compacts the key ranges deleted since the last call (after flushing
  // the memtables, so that no write-ahead log file keeps deleted bytes
  // either), so that the deleted bytes leave the disk now rather than
  // whenever compaction reaches them (files RocksDB deletes go through a
  // trash; this waits until it is empty). Returns the RocksDB error, or
  // DeadlineExceeded if the trash is not empty within a minute; the ranges
  // are then kept for the next call.
  absl::Status ReclaimDeleted();

  // Meta records (see kMetaFamily in keys.h). WriteMeta applies `writes`
  // atomically and durably (fsync'd unless EngineOptions::sync is false);
  // returns the RocksDB error otherwise, with nothing applied.
  absl::Status WriteMeta(std::span<const MetaWrite> writes);
  // The value under `key`, nullopt if there is none.
  absl::StatusOr<std::optional<std::string>> GetMeta(std::string_view key) const;
  // Visits the records whose key starts with `prefix`, in key order, until
  // `visit` returns false.
  absl::Status ScanMeta(
      std::string_view prefix,
      absl::FunctionRef<bool(std::string_view key, std::string_view value)>
          visit) const;

  // Registers an observer of committed points (see CommitObserver); it must
  // outlive the engine or be removed first. Thread-safe.
  void AddCommitObserver(CommitObserver* observer);
  void RemoveCommitObserver(CommitObserver* observer);

 private:
  class Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Micro-steps from whole steps and millionths.
inline uint64_t MicroStep(uint64_t whole, uint32_t micros) {
  return whole * kMicrosPerStep + micros;
}

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_ENGINE_H_
