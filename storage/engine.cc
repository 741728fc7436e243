#include "storage/engine.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdio>
#include <cstring>
#include <cerrno>
#include <sys/statvfs.h>
#include <deque>
#include <map>
#include <filesystem>
#include <span>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/listener.h"
#include "rocksdb/options.h"
#include "rocksdb/statistics.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "rocksdb/write_buffer_manager.h"
#include "storage/background_writes.h"
#include "storage/info_log.h"
#include "storage/log_refs.h"
#include "storage/periodic_thread.h"
#include "storage/series_head.h"
#include "storage/series_index.h"
#include "storage/shared_columns.h"
#include "storage/task_pool.h"
#include "storage/thread_name.h"

namespace stepdb::storage {
namespace {

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsIOError()) return absl::UnavailableError(msg);
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

// Switches off RocksDB's own recovery from a full disk, which waits until
// twice the write buffer (128 MiB) is free again: a disk that gets back a
// few megabytes would keep the store read-only. Engine::Impl::Write resumes
// on the next write instead (see there).
class ManualRecovery : public rocksdb::EventListener {
 public:
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/,
                            rocksdb::Status /*bg_error*/,
                            bool* auto_recovery) override {
    *auto_recovery = false;
  }
};

uint64_t Bits(double v) { return std::bit_cast<uint64_t>(v); }

// Bounds that keep every encoded chunk and fragment well within what the
// decoder accepts, and one commit group's memory bounded.
constexpr size_t kMaxChunkPoints = 65536;
constexpr size_t kMaxFragmentPoints = 65536;
constexpr size_t kMaxGroupPoints = 4'000'000;
// A group's own memory (its per-series map, fragment list, results, head-log
// record) grows with its series entries, not its points: with a million
// series, 4 M points of 4-step requests made groups of a million entries
// and ~200 bytes of transient memory per active series.
constexpr size_t kMaxGroupSeries = 1 << 18;

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) {
      const auto size = it->file_size(size_ec);
      if (!size_ec) total += size;
    }
  }
  return total;
}

// What a series' state keeps about its sealed chunks.
struct SealedStats {
  uint64_t points = 0;
  uint64_t chunks = 0;
  uint64_t first_step = 0;
  uint64_t last_step = 0;
};

// What the index keeps about a series' sealed chunks ('T' records), so that
// open needs no chunk reads: the statistics and the last sealed point's
// time and value. The state does not keep those two (a million series: 16
// MB, and the state's allocator size class with them); a seal knows them,
// and retention, which rewrites the record, reads them back.
struct SealedRecord {
  SealedStats stats;
  int64_t last_time_ms = 0;
  double last_value = 0;

  std::string Encode() const {
    std::string v;
    AppendBigEndian64(stats.points, &v);
    AppendBigEndian64(stats.chunks, &v);
    AppendBigEndian64(stats.first_step, &v);
    AppendBigEndian64(stats.last_step, &v);
    AppendBigEndian64(static_cast<uint64_t>(last_time_ms), &v);
    AppendBigEndian64(Bits(last_value), &v);
    return v;
  }
  static absl::StatusOr<SealedRecord> Decode(std::string_view v) {
    if (v.size() != 48) return absl::DataLossError("sealed stats: bad size");
    SealedRecord r;
    r.stats.points = ReadBigEndian64(v.data());
    r.stats.chunks = ReadBigEndian64(v.data() + 8);
    r.stats.first_step = ReadBigEndian64(v.data() + 16);
    r.stats.last_step = ReadBigEndian64(v.data() + 24);
    r.last_time_ms = static_cast<int64_t>(ReadBigEndian64(v.data() + 32));
    r.last_value = std::bit_cast<double>(ReadBigEndian64(v.data() + 40));
    return r;
  }
};

// In-memory state of one series: its open head and what is known of its
// sealed chunks. The committer thread is the only writer of the head and
// of `last`; readers and sealing take `mu`.
struct SeriesState {
  // Bits of `queued`.
  static constexpr uint8_t kSealQueued = 1;
  static constexpr uint8_t kSealAll = 2;  // the seal takes the whole head
  static constexpr uint8_t kMergeQueued = 4;

  // Constant after construction. The key prefix of the series' chunks is
  // built when needed rather than kept: a million series would hold 32
  // bytes each for it.
  SeriesId id = 0;
  ProjectId project = 0;
  RunId run = 0;
  // The commit thread's own (no lock): the series' slot in the group being
  // committed, valid when that slot names this state (see CommitGroup).
  uint32_t group_slot = 0;

  std::string DataPrefix() const { return SeriesDataPrefix(project, run, id); }

  mutable absl::Mutex mu;
  // Durable points not yet sealed, in step order, compressed. The flags
  // below go in its tail padding ([[no_unique_address]] lets them): 216
  // bytes a state took jemalloc's 224-byte size class, 192 fit their own
  // (32 MB at a million series).
  [[no_unique_address]] SeriesHead head ABSL_GUARDED_BY(mu);
  // Set once, by a deletion (the state is then empty for good): a seal or
  // an expiry that picked the state up before must not write for it.
  bool deleted ABSL_GUARDED_BY(mu) = false;
  bool has_last ABSL_GUARDED_BY(mu) = false;
  // Which of the sealer's queues hold the state (kSealQueued etc.), under
  // the engine's seal_queue_mu_: flags here rather than sets of a million
  // pointers beside the queues (~35 MB when every head is queued).
  uint8_t queued = 0;

  // The head-log record of each head fragment and the fragment's last
  // step, in order (a record may repeat when one group holds several
  // fragments of the series). A seal may cut a fragment; its record is
  // released only once the fragment's last step is sealed.
  LogRefs log_records ABSL_GUARDED_BY(mu);
  SealedStats sealed ABSL_GUARDED_BY(mu);
  uint64_t last_step ABSL_GUARDED_BY(mu) = 0;
  int64_t last_time_ms ABSL_GUARDED_BY(mu) = 0;
  double last_value ABSL_GUARDED_BY(mu) = 0;

  // `fragment`: the encoding of exactly `points` if there is one at hand
  // (see SeriesHead::Append), else empty.
  void AppendHeadLocked(PointSpan points, std::string_view fragment)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (points.empty()) return;
    head.Append(points.steps, points.times_ms, points.values, fragment);
    has_last = true;
    last_step = points.steps.back();
    last_time_ms = points.times_ms.back();
    last_value = points.values.back();
  }
};
static_assert(sizeof(SeriesState) <= 192,
              "a million series: keep the state in jemalloc's 192-byte class");

// Head fragments live only until their series is sealed: they are encoded
// for speed (format version 1) rather than size.
void EncodeFragment(std::span<const uint64_t> steps,
                    std::span<const int64_t> times_ms,
                    std::span<const double> values, std::string* out) {
  internal::EncodeChunkV1(steps, times_ms, values, out);
}

// The aligned step window that chunks of these points are cut at: a power
// of two (in whole steps when the points are at least a step apart) of
// about `chunk_points` points. Aligned chunks are what lets a chart read
// take a bucket's aggregates from a chunk's rollup pieces instead of
// decoding.
uint64_t ChunkWindow(std::span<const uint64_t> steps, size_t chunk_points) {
  const uint64_t n = steps.size();
  const uint64_t span = n < 2 ? 0 : steps.back() - steps.front();
  const uint64_t delta = n < 2 ? kMicrosPerStep : std::max<uint64_t>(1, span / (n - 1));
  constexpr uint64_t kMaxWindow = uint64_t{1} << 62;
  if (delta >= kMicrosPerStep) {
    const uint64_t whole = (delta + kMicrosPerStep - 1) / kMicrosPerStep;
    const uint64_t window_steps = std::bit_ceil(std::min<uint64_t>(
        whole * chunk_points, kMaxWindow / kMicrosPerStep));
    return window_steps * kMicrosPerStep;
  }
  return std::bit_ceil(std::min<uint64_t>(delta * chunk_points, kMaxWindow));
}

// Rollup pieces are cut at 1/8 of the chunk window: 128 steps for the usual
// 1024-step chunks, so that a 1000-bucket chart of 100,000 steps (buckets of
// 128 steps) is served from pieces.
constexpr uint64_t kPiecesPerWindow = 8;

// Appends to *batch the rollup record of the chunk of `points` keyed at
// their first step.
void PutRollup(rocksdb::WriteBatch* batch, rocksdb::ColumnFamilyHandle* cf,
               std::string_view series_prefix, std::span<const uint64_t> steps,
               std::span<const int64_t> times_ms,
               std::span<const double> values, uint64_t window,
               std::vector<RollupPiece>* pieces, std::string* encoded) {
  pieces->clear();
  BuildRollupPieces(steps, times_ms, values,
                    std::max<uint64_t>(1, window / kPiecesPerWindow), pieces);
  encoded->clear();
  EncodeRollup(*pieces, steps.front(), encoded);
  batch->Put(cf, RollupKey(series_prefix, kChunkPiecesTier, steps.front()),
             *encoded);
}

PointSpan AsSpan(const PointColumns& p) {
  return {p.steps, p.times_ms, p.values};
}

// Index of the first point with step >= `step`.
size_t LowerBound(std::span<const uint64_t> steps, uint64_t step) {
  return std::lower_bound(steps.begin(), steps.end(), step) - steps.begin();
}

// A head-log record (entries: series-id(4) size(4) fragment) without the
// entries of the series in `drop`; *kept gets the series of the others.
// DataLossError for a malformed record.
absl::StatusOr<std::string> WithoutEntries(
    std::string_view record, const absl::flat_hash_set<SeriesId>& drop,
    std::vector<SeriesId>* kept) {
  std::string out;
  while (!record.empty()) {
    if (record.size() < 8) return absl::DataLossError("truncated head-log entry");
    const SeriesId id = ReadBigEndian32(record.data());
    const uint32_t size = ReadBigEndian32(record.data() + 4);
    if (size > record.size() - 8) {
      return absl::DataLossError("truncated head-log entry");
    }
    if (!drop.contains(id)) {
      out.append(record.substr(0, 8 + size));
      kept->push_back(id);
    }
    record.remove_prefix(8 + size);
  }
  return out;
}

// Appends points [begin, begin + n) of `in` to *out, a column at a time.
void AppendColumns(const PointColumns& in, size_t begin, size_t n,
                   PointColumns* out) {
  out->steps.insert(out->steps.end(), in.steps.begin() + begin,
                    in.steps.begin() + begin + n);
  out->times_ms.insert(out->times_ms.end(), in.times_ms.begin() + begin,
                       in.times_ms.begin() + begin + n);
  out->values.insert(out->values.end(), in.values.begin() + begin,
                     in.values.begin() + begin + n);
}

// Feeds points to a sink in bounded slices while enforcing a limit.
class LimitedEmitter {
 public:
  LimitedEmitter(uint64_t limit, ReadSink sink) : limit_(limit), sink_(sink) {}

  // Returns false once the reader should stop (limit reached or sink done).
  // A decoded chunk of at most a slice that fits under the limit while
  // nothing is buffered goes to the sink as it is; otherwise runs of points are copied into the
  // slice a column at a time. A raw read of a long series passes ~1,000
  // chunks of 1,024 points: copying them point by point was ~15 % of a
  // streamed read's CPU.
  bool Emit(const PointColumns& points) {
    if (stopped_) return false;
    const size_t n = points.size();
    if (slice_.empty() && n > 0 && n <= kSlicePoints &&
        (limit_ == 0 || n <= limit_ - result_.points)) {
      result_.points += n;
      if (!sink_(points)) stopped_ = true;
      return !stopped_;
    }
    for (size_t i = 0; i < n;) {
      if (limit_ != 0 && result_.points == limit_) {
        result_.truncated = true;
        stopped_ = true;
        break;
      }
      size_t take = std::min(n - i, kSlicePoints - slice_.size());
      if (limit_ != 0) take = std::min<uint64_t>(take, limit_ - result_.points);
      AppendColumns(points, i, take, &slice_);
      result_.points += take;
      i += take;
      if (slice_.size() == kSlicePoints && !Flush()) return false;
    }
    return !stopped_;
  }

  // Sends what is buffered. Returns false if the sink asked to stop.
  bool Flush() {
    if (!slice_.empty()) {
      const bool more = sink_(slice_);
      slice_.clear();
      if (!more) stopped_ = true;
    }
    return !stopped_;
  }

  ReadResult result() const { return result_; }

 private:
  static constexpr size_t kSlicePoints = 8192;
  const uint64_t limit_;
  ReadSink sink_;
  PointColumns slice_;
  ReadResult result_;
  bool stopped_ = false;
};

}  // namespace

// How long Compact and ReclaimDeleted wait for RocksDB's deleted files to
// leave the trash (unpaced, so in a second or two).
constexpr absl::Duration kTrashWait = absl::Minutes(1);

class Engine::Impl {
 public:
  explicit Impl(EngineOptions options) : options_(std::move(options)) {}

  ~Impl() {
    // Flushes and compactions still running finish as fast as the disk
    // allows (closing waits for them).
    pacer_thread_.reset();
    const BackgroundWritePacer::Unpaced unpaced(&pacer_);
    {
      absl::MutexLock lock(&queue_mu_);
      stopping_ = true;
    }
    if (committer_.joinable()) committer_.join();
    callbacks_.Stop();  // after the committer: runs what it handed over
    {
      absl::MutexLock lock(&seal_queue_mu_);
      sealer_stopping_ = true;
    }
    // Heads left unsealed stay durable in the head log.
    if (sealer_.joinable()) sealer_.join();
    if (db_ != nullptr) {
      // Series registered but never written to still keep their ids.
      std::vector<IndexRecord> records;
      index_.TakePendingRecords(&records);
      if (!records.empty()) {
        rocksdb::WriteBatch batch;
        for (const auto& r : records) batch.Put(index_cf_, r.key, r.value);
        rocksdb::WriteOptions sync;
        sync.sync = true;
        db_->Write(sync, &batch).PermitUncheckedError();
      }
      // With --sync=none acks did not wait for fsync; a clean stop still must.
      db_->SyncWAL().PermitUncheckedError();
      for (auto* cf : families_) db_->DestroyColumnFamilyHandle(cf);
      db_->Close().PermitUncheckedError();
    }
  }

  absl::Status Open() {
    rocksdb::Options db_options;
    db_options.create_if_missing = true;
    db_options.create_missing_column_families = true;
    db_options.IncreaseParallelism(2);
    // Many writers share one WAL write and fsync (group commit) in RocksDB
    // too; our committer already batches, this helps the seal writes.
    db_options.enable_pipelined_write = false;
    db_options.max_total_wal_size = 256 << 20;
    // Flushes, compactions and file deletions at the pace they are needed
    // at, not in bursts that the acks queue behind (storage/
    // background_writes.h), and files written back as they go rather than
    // in one fsync at the end.
    db_options.rate_limiter = pacer_.limiter();
    db_options.sst_file_manager = pacer_.file_manager();
    // Left 0, RocksDB would take the rate limiter's (4 GiB/s at open) as the
    // rate writers are slowed to before a stall, which then never slows
    // them. 16 MiB/s is RocksDB's default.
    db_options.delayed_write_rate = 16 << 20;
    db_options.bytes_per_sync = 1 << 20;
    // Tickers only (no histograms): cheap, and they give write amplification.
    statistics_ = rocksdb::CreateDBStatistics();
    statistics_->set_stats_level(rocksdb::StatsLevel::kExceptHistogramOrTimers);
    db_options.statistics = statistics_;
    db_options.listeners.push_back(std::make_shared<ManualRecovery>());
    db_options.info_log = OpenInfoLog(options_.data_dir);

    // Memory RocksDB may hold, set deliberately (see EngineOptions): one
    // budget for every memtable, one block cache for every family.
    write_buffers_ = std::make_shared<rocksdb::WriteBufferManager>(
        options_.rocksdb_memtable_bytes);
    db_options.write_buffer_manager = write_buffers_;
    block_cache_ = rocksdb::NewLRUCache(
        std::max<uint64_t>(options_.rocksdb_block_cache_bytes, 1 << 20));
    rocksdb::BlockBasedTableOptions table_options;
    table_options.block_cache = block_cache_;
    rocksdb::ColumnFamilyOptions family_options;
    family_options.table_factory.reset(
        rocksdb::NewBlockBasedTableFactory(table_options));
    // Paced flushes take longer: a family may fill its next memtable (or
    // have it switched when the WAL is full) while one is still flushing,
    // and at 2 unflushed memtables RocksDB stops every write. The write
    // buffer manager flushes at its budget but does not count memtables
    // already waiting for a flush: with 3, those can add up to twice a
    // family's write buffer (the head log's: a sixth of the budget each).
    family_options.max_write_buffer_number = 3;
    // A family's memtable is flushed at a sixth of the budget, so that a
    // burst of series registrations in the index cannot take it all. The
    // head log gets a third: most of its records are deleted again within
    // a few seconds (when their series seal), and a put and its delete in
    // the same memtable never reach an SST.
    family_options.write_buffer_size = static_cast<size_t>(std::max<uint64_t>(
        options_.rocksdb_memtable_bytes / 6, 1 << 20));
    rocksdb::ColumnFamilyOptions index_options = family_options;
    rocksdb::ColumnFamilyOptions head_options = family_options;
    head_options.write_buffer_size = static_cast<size_t>(std::max<uint64_t>(
        options_.rocksdb_memtable_bytes / 3, 1 << 20));
    rocksdb::ColumnFamilyOptions chunk_options = family_options;
    rocksdb::ColumnFamilyOptions meta_options = family_options;
    // Rollups keep their own cache (EngineOptions::rollup_cache_bytes),
    // so that chart reads do not evict the index and chunk blocks.
    rocksdb::ColumnFamilyOptions rollup_options = family_options;
    // Rollup records are floats and varints that zstd shrinks by a third;
    // reads hit the block cache, which holds blocks uncompressed. zstd's
    // default level (3) on every level: level 19 on the bottommost level
    // saved 0.013 bytes/point of ~2.39 (rollups 0.164 -> 0.151), but while
    // the database is young L1 is its bottommost level, so every L0 -> L1
    // compaction ran at level 19: 3.35 CPU-s for one 13 MB compaction at
    // 2.5 M points/s, the ack p99's worst spike of a 60 s run
    // (docs/BENCHMARKS.md, ingest, session 13).
    rollup_options.compression = rocksdb::kZSTD;
    rocksdb::BlockBasedTableOptions rollup_table;
    rollup_cache_ = rocksdb::NewLRUCache(options_.rollup_cache_bytes);
    rollup_table.block_cache = rollup_cache_;
    // Records are read in long runs (a chart or an aggregate walks every
    // record of a series in range), and each data block costs a block-cache
    // lookup, pin and release when the iterator enters it (~12 % of a
    // 512-series aggregate with 4 KB blocks of ~16 records): 32 KB blocks
    // cut that 8-fold. A short read pays at most one larger block.
    rollup_table.block_size = 32 << 10;
    rollup_options.table_factory.reset(
        rocksdb::NewBlockBasedTableFactory(rollup_table));
    // Chunks are compressed by our codecs; a second compression pass would
    // cost CPU and win little.
    chunk_options.compression = rocksdb::kNoCompression;
    head_options.compression = rocksdb::kNoCompression;
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
        {rocksdb::kDefaultColumnFamilyName, family_options},
        {kIndexFamily, index_options},
        {kHeadLogFamily, head_options},
        {kChunksFamily, chunk_options},
        {kMetaFamily, meta_options},
        {kRollupsFamily, rollup_options},
    };
    std::error_code ec;
    std::filesystem::create_directories(options_.data_dir, ec);
    rocksdb::DB* db = nullptr;
    auto s = rocksdb::DB::Open(db_options, options_.data_dir, descriptors,
                               &families_, &db);
    if (!s.ok()) return FromRocks(s, "open " + options_.data_dir);
    db_.reset(db);
    index_cf_ = families_[1];
    head_log_cf_ = families_[2];
    chunks_cf_ = families_[3];
    meta_cf_ = families_[4];
    rollups_cf_ = families_[5];
    if (auto st = Recover(); !st.ok()) return st;
    committer_ = std::thread([this] {
      NameThisThread("stepdb-commit");
      CommitLoop();
    });
    sealer_ = std::thread([this] {
      NameThisThread("stepdb-seal");
      SealLoop();
    });
    // After recovery, which is not paced.
    pacer_thread_ = std::make_unique<PeriodicThread>(
        "stepdb-iopace", absl::Milliseconds(500),
        PeriodicThread::FirstRun::kNow, [this] { pacer_.Update(absl::Now()); });
    return absl::OkStatus();
  }

  absl::StatusOr<SeriesId> ResolveSeries(SeriesKey key) {
    if (auto s = CanonicalizeLabels(&key.labels); !s.ok()) return s;
    if (auto s = ValidateSeriesKey(key); !s.ok()) return s;
    for (;;) {
      auto ref = index_.Resolve(key);
      if (!ref.ok()) return ref.status();
      // Whoever resolves first creates the state; a concurrent resolver of
      // the same new key must not return before it exists.
      absl::MutexLock lock(&states_mu_);
      // A deletion (which removes index entries under states_mu_) may have
      // taken the series since: resolve again, to a new id.
      if (!index_.RefOf(ref->id)) continue;
      EnsureStateLocked(*ref);
      return ref->id;
    }
  }

  std::optional<SeriesId> FindSeries(SeriesKey key) const {
    if (!CanonicalizeLabels(&key.labels).ok()) return std::nullopt;
    auto ref = index_.Find(key);
    if (!ref) return std::nullopt;
    return ref->id;
  }

  std::optional<SeriesKey> KeyOf(SeriesId id) const { return index_.KeyOf(id); }

  void AppendAsync(AppendBatch batch, AppendCallback done)
      ABSL_LOCKS_EXCLUDED(seal_queue_mu_, seal_mu_) {
    const size_t points = batch.point_count();
    const uint64_t bytes = batch.MemoryBytes();
    queued_bytes_.fetch_add(bytes, std::memory_order_relaxed);
    {
      absl::MutexLock lock(&queue_mu_);
      queue_.push_back(
          PendingAppend{std::move(batch), std::move(done), points, bytes});
    }
    // After queueing: the append commits (and is acked) meanwhile; what
    // waits is the caller's next request.
    AssistSeals(points);
  }

  absl::StatusOr<ReadResult> Read(SeriesId id, const ReadRange& range,
                                  uint64_t limit, ReadSink sink) const {
    // A scan that decodes every chunk and passes on the points in range.
    class Reader : public ChunkVisitor {
     public:
      Reader(const ReadRange& range, uint64_t limit, ReadSink sink)
          : range_(range), emitter_(limit, sink) {}
      absl::StatusOr<bool> OnChunk(const ChunkSummary& summary,
                                   ChunkLoader load_chunk) override {
        auto points = load_chunk();
        if (!points.ok()) return points.status();
        if (summary.min_step >= range_.steps.from &&
            summary.max_step <= range_.steps.to &&
            summary.min_time_ms >= range_.times.from_ms &&
            summary.max_time_ms <= range_.times.to_ms) {
          return emitter_.Emit(**points);  // wholly in range: no filtering
        }
        part_.clear();
        AppendInRange(**points, range_, &part_);
        return emitter_.Emit(part_);
      }
      void OnHead(const PointColumns& head) override { emitter_.Emit(head); }
      ReadResult Finish() {
        emitter_.Flush();
        return emitter_.result();
      }

     private:
      const ReadRange& range_;
      LimitedEmitter emitter_;
      PointColumns part_;
    };
    Reader reader(range, limit, sink);
    if (auto s = Scan(id, range, reader); !s.ok()) return s;
    return reader.Finish();
  }

  std::vector<SeriesInfo> ListSeries(const SeriesFilter& filter, size_t limit,
                                     bool* truncated) const {
    *truncated = false;
    std::vector<SeriesInfo> out;
    auto project = index_.FindProject(filter.project);
    if (!project) return out;
    std::optional<RunId> run;
    if (filter.run) {
      run = index_.FindRun(*project, *filter.run);
      if (!run) return out;
    }
    for (SeriesId id : index_.SeriesOf(*project, run)) {
      const std::optional<SeriesKey> key = index_.KeyOf(id);
      if (!key) continue;
      if (!filter.Matches(*key)) continue;
      if (limit != 0 && out.size() == limit) {
        *truncated = true;
        break;
      }
      SeriesInfo info;
      info.id = id;
      info.key = *key;
      if (const SeriesState* state = State(id)) {
        absl::ReaderMutexLock lock(&state->mu);
        info.points = state->sealed.points + state->head.size();
        info.first_step = state->sealed.points > 0 ? state->sealed.first_step
                          : state->head.empty()    ? 0
                                                   : state->head.first_step();
        info.last_step = state->last_step;
        info.last_time_ms = state->last_time_ms;
        info.last_value = state->last_value;
      }
      out.push_back(std::move(info));
    }
    return out;
  }

  EngineStats Stats() const {
    EngineStats stats;
    stats.memory_used = MemoryUsage();
    {
      absl::MutexLock lock(&seal_queue_mu_);
      stats.seals_queued = seal_queue_.size();
    }
    stats.projects = index_.project_count();
    stats.runs = index_.run_count();
    stats.series = index_.series_count();
    {
      absl::ReaderMutexLock lock(&states_mu_);
      for (const auto& state : states_) {
        if (state == nullptr) continue;
        absl::ReaderMutexLock series_lock(&state->mu);
        stats.head_points += state->head.size();
        stats.head_bytes += state->head.bytes();
        stats.points += state->sealed.points + state->head.size();
        stats.sealed_chunks += state->sealed.chunks;
      }
    }
    stats.bytes_on_disk = DirectoryBytes(options_.data_dir);
    stats.wal_bytes = statistics_->getTickerCount(rocksdb::WAL_FILE_BYTES);
    stats.flush_bytes = statistics_->getTickerCount(rocksdb::FLUSH_WRITE_BYTES);
    stats.compaction_bytes =
        statistics_->getTickerCount(rocksdb::COMPACT_WRITE_BYTES);
    stats.background_write_limit = pacer_.bytes_per_sec();
    stats.background_bytes_paced = static_cast<uint64_t>(
        pacer_.limiter()->GetTotalBytesThrough());
    stats.rocksdb_memtable_bytes = write_buffers_->memory_usage();
    stats.rocksdb_block_cache_bytes =
        block_cache_->GetUsage() + rollup_cache_->GetUsage();
    stats.group_write_seconds = group_write_seconds_.Take();
    absl::MutexLock lock(&counters_mu_);
    stats.seal_assists = seal_assists_.load(std::memory_order_relaxed);
    stats.write_groups = counters_.write_groups;
    stats.appends = counters_.appends;
    stats.points_accepted = counters_.points_accepted;
    stats.points_duplicate = counters_.points_duplicate;
    stats.points_rejected = counters_.points_rejected;
    return stats;
  }

  absl::Status WriteMeta(std::span<const MetaWrite> writes) {
    rocksdb::WriteBatch batch;
    for (const MetaWrite& w : writes) {
      if (w.value.has_value()) {
        batch.Put(meta_cf_, w.key, *w.value);
      } else {
        batch.Delete(meta_cf_, w.key);
      }
    }
    rocksdb::WriteOptions write_options;
    write_options.sync = options_.sync;
    return Write(write_options, &batch, "write meta");
  }

  absl::StatusOr<std::optional<std::string>> GetMeta(
      std::string_view key) const {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), meta_cf_, key, &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return FromRocks(s, "read meta");
    return value;
  }

  absl::Status ScanMeta(
      std::string_view prefix,
      absl::FunctionRef<bool(std::string_view, std::string_view)> visit) const {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), meta_cf_));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
         it->Next()) {
      if (!visit(std::string_view(it->key().data(), it->key().size()),
                 std::string_view(it->value().data(), it->value().size()))) {
        break;
      }
    }
    return FromRocks(it->status(), "scan meta");
  }

  void AddCommitObserver(CommitObserver* observer) {
    absl::MutexLock lock(&observers_mu_);
    observers_.push_back(observer);
  }
  void RemoveCommitObserver(CommitObserver* observer) {
    absl::MutexLock lock(&observers_mu_);
    std::erase(observers_, observer);
  }

  // See Engine::ExpireChunks. Holds seal_mu_ throughout: a seal works on a
  // copy of the sealed statistics and must not overwrite these updates.
  absl::StatusOr<ExpireResult> ExpireChunks(std::string_view project,
                                            int64_t raw_cutoff_ms,
                                            int64_t rollup_cutoff_ms)
      ABSL_LOCKS_EXCLUDED(seal_mu_) {
    if (rollup_cutoff_ms > raw_cutoff_ms) {
      return absl::InvalidArgumentError(
          "expire: the rollup cut-off is after the raw cut-off (rollups are "
          "kept at least as long as raw points)");
    }
    SeriesFilter filter;
    filter.project = std::string(project);
    bool truncated = false;
    ExpireResult result;
    const MaintenanceScope maintenance(this);
    absl::MutexLock seal_lock(&seal_mu_);
    leader_columns_.Clear();  // kept columns must name existing chunks
    // Listed under seal_mu_: a series registered before it is taken may
    // already have sealed a follower of a listed leader, and must be walked
    // (and its chunk deleted) before that leader's.
    const std::vector<SeriesInfo> series = ListSeries(filter, 0, &truncated);
    // Descending ids: a follower chunk (shared columns) has a higher id than
    // its leader and the same max time, so it goes in an earlier write, and
    // a crash part way never leaves a follower without its leader.
    for (auto info_it = series.rbegin(); info_it != series.rend(); ++info_it) {
      const SeriesInfo& info = *info_it;
      SeriesState* state = State(info.id);
      if (state == nullptr) continue;
      SealedStats sealed;
      {
        absl::ReaderMutexLock lock(&state->mu);
        if (state->deleted) continue;  // deleted since ListSeries
        sealed = state->sealed;
      }
      if (sealed.points == 0) continue;
      rocksdb::WriteBatch batch;
      auto expired = ExpireSeries(*state, raw_cutoff_ms, rollup_cutoff_ms,
                                  &batch);
      if (!expired.ok()) return expired.status();
      if (batch.Count() == 0) continue;
      // Rollup-only points still count (charts read them); a series' first
      // step is that of its first chunk or rollup record left.
      sealed.points -= std::min(expired->rollup_points, sealed.points);
      sealed.chunks -= std::min(expired->chunks, sealed.chunks);
      // With nothing left, points == 0 marks first_step unused; last_step
      // stays, as recovery and step ordering need it.
      if (expired->first_kept) sealed.first_step = *expired->first_kept;
      // The last sealed point stays what the stored record says.
      std::string stored;
      if (auto s = db_->Get(rocksdb::ReadOptions(), index_cf_,
                            SealedStatsKey(state->id), &stored);
          !s.ok()) {
        return FromRocks(s, absl::StrCat("expire: sealed stats of series ",
                                         state->id));
      }
      auto record = SealedRecord::Decode(stored);
      if (!record.ok()) return record.status();
      record->stats = sealed;
      batch.Put(index_cf_, SealedStatsKey(state->id), record->Encode());
      absl::MutexLock lock(&state->mu);
      // One batch per series: its chunks, rollup records and statistics
      // change together. No fsync: what a crash brings back is expired
      // again by the next pass (every step is idempotent).
      if (auto s = Write(rocksdb::WriteOptions(), &batch, "expire"); !s.ok()) {
        return s;
      }
      state->sealed = sealed;
      result.chunks += expired->chunks;
      result.points += expired->points;
      result.rollup_records += expired->rollup_records;
      result.rollup_points += expired->rollup_points;
    }
    return result;
  }

 private:
  struct SeriesExpiry : ExpireResult {
    // First step of the first chunk or rollup record that stays.
    std::optional<uint64_t> first_kept;
  };

  // Adds to *batch the expiry of one series: chunks whose points are all
  // older than `raw_cutoff_ms` are deleted, their rollup records with them
  // if also older than `rollup_cutoff_ms`, else flagged (the record alone
  // stays); records left by earlier passes (flagged) older than
  // `rollup_cutoff_ms` are deleted. Two walks, over the series' chunk
  // headers and over its rollup records; only flagged records are decoded.
  absl::StatusOr<SeriesExpiry> ExpireSeries(const SeriesState& state,
                                            int64_t raw_cutoff_ms,
                                            int64_t rollup_cutoff_ms,
                                            rocksdb::WriteBatch* batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seal_mu_) {
    SeriesExpiry out;
    // The chunks expiring now (first step, whether the record goes too), in
    // step order.
    struct Expiring {
      uint64_t first_step;
      bool delete_record;
    };
    std::vector<Expiring> expiring;
    const std::string data_prefix = state.DataPrefix();
    const rocksdb::Slice prefix(data_prefix);
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), chunks_cf_));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
         it->Next()) {
      auto summary = ReadChunkSummary(it->value().ToStringView());
      if (!summary.ok()) return summary.status();
      if (summary->max_time_ms >= raw_cutoff_ms) continue;
      batch->Delete(chunks_cf_, it->key());
      const bool delete_record = summary->max_time_ms < rollup_cutoff_ms;
      expiring.push_back(
          {ReadBigEndian64(it->key().data() + kSeriesPrefixSize), delete_record});
      out.points += summary->count;
      ++out.chunks;
      if (delete_record) out.rollup_points += summary->count;
    }
    if (!it->status().ok()) return FromRocks(it->status(), "expire");

    const std::string lower = RollupKey(data_prefix, kChunkPiecesTier, 0);
    const std::string upper = PrefixEnd(
        std::string_view(lower).substr(0, kSeriesPrefixSize + 1));
    rocksdb::Slice lower_slice(lower), upper_slice(upper);
    rocksdb::ReadOptions read_options;
    read_options.iterate_lower_bound = &lower_slice;
    read_options.iterate_upper_bound = &upper_slice;
    it.reset(db_->NewIterator(read_options, rollups_cf_));
    auto next = expiring.begin();
    std::vector<RollupPiece> pieces;
    std::string record;
    for (it->Seek(lower_slice); it->Valid(); it->Next()) {
      if (it->key().size() != kRollupKeySize) {
        return absl::DataLossError("bad rollup key");
      }
      const uint64_t first_step =
          ReadBigEndian64(it->key().data() + kSeriesPrefixSize + 1);
      while (next != expiring.end() && next->first_step < first_step) ++next;
      bool keep = true;
      if (next != expiring.end() && next->first_step == first_step) {
        // Its chunk goes in this batch.
        if (next->delete_record) {
          batch->Delete(rollups_cf_, it->key());
          ++out.rollup_records;
          keep = false;
        } else {
          record.assign(it->value().data(), it->value().size());
          if (auto s = MarkRollupRawExpired(&record); !s.ok()) return s;
          batch->Put(rollups_cf_, it->key(), record);
        }
      } else if (RollupRawExpired(it->value().ToStringView())) {
        if (auto s = DecodeRollup(it->value().ToStringView(), first_step, &pieces);
            !s.ok()) {
          return s;
        }
        int64_t max_time = std::numeric_limits<int64_t>::min();
        uint64_t points = 0;
        for (const RollupPiece& p : pieces) {
          max_time = std::max(max_time, p.max_time_ms);
          points += p.count;
        }
        if (max_time < rollup_cutoff_ms) {
          batch->Delete(rollups_cf_, it->key());
          ++out.rollup_records;
          out.rollup_points += points;
          keep = false;
        }
      }
      if (keep && !out.first_kept) out.first_kept = first_step;
    }
    if (!it->status().ok()) return FromRocks(it->status(), "expire rollups");
    return out;
  }

 public:
  absl::StatusOr<CompactResult> Compact() {
    const BackgroundWritePacer::Unpaced unpaced(&pacer_);
    CompactResult result;
    result.bytes_before = DirectoryBytes(options_.data_dir);
    std::vector<SeriesState*> all;
    {
      absl::ReaderMutexLock lock(&states_mu_);
      for (const auto& state : states_) {
        if (state != nullptr) all.push_back(state.get());
      }
    }
    for (SeriesState* state : all) {
      auto sealed = Seal(state, /*all=*/true);
      if (!sealed.ok()) return sealed.status();
      result.chunks_sealed += *sealed;
    }
    rocksdb::FlushOptions flush;
    if (auto s = db_->Flush(flush, families_); !s.ok()) {
      return FromRocks(s, "flush");
    }
    rocksdb::CompactRangeOptions compact;
    compact.bottommost_level_compaction =
        rocksdb::BottommostLevelCompaction::kForce;
    for (auto* cf : families_) {
      if (auto s = db_->CompactRange(compact, cf, nullptr, nullptr); !s.ok()) {
        return FromRocks(s, "compact");
      }
    }
    // Old WAL files are deleted once their memtables are flushed.
    db_->FlushWAL(true).PermitUncheckedError();
    pacer_.WaitForEmptyTrash(options_.data_dir, kTrashWait);  // else counted
    result.bytes_after = DirectoryBytes(options_.data_dir);
    return result;
  }

  // See Engine::DeleteRun (`run` set) and Engine::DeleteProject.
  absl::StatusOr<DeleteResult> Delete(std::string_view project,
                                      std::optional<std::string_view> run)
      ABSL_LOCKS_EXCLUDED(commit_mu_, seal_mu_) {
    // No commit and no seal (nor expiry) may run meanwhile: a commit could
    // write a head-log entry, a seal a chunk or 'T' record, for a series
    // being deleted after the deletion's batch.
    const MaintenanceScope maintenance(this);
    absl::MutexLock commit_lock(&commit_mu_);
    absl::MutexLock seal_lock(&seal_mu_);
    leader_columns_.Clear();  // kept columns must name existing chunks
    DeleteResult result;
    rocksdb::WriteBatch batch;
    std::vector<ReclaimRange> ranges;
    auto delete_range = [&](rocksdb::ColumnFamilyHandle* family,
                            std::string begin) {
      std::string end = PrefixEnd(begin);
      batch.DeleteRange(family, begin, end);
      ranges.push_back({family, std::move(begin), std::move(end)});
    };
    // Meta records go by name, whether or not the index knows the run.
    // Even the tombstone of a point deletion carries the name, so its key
    // is compacted too.
    auto delete_key = [&](rocksdb::ColumnFamilyHandle* family, std::string key) {
      batch.Delete(family, key);
      std::string end = key;
      end.push_back('\0');  // the next key after `key`
      ranges.push_back({family, std::move(key), std::move(end)});
    };
    if (run) {
      delete_key(meta_cf_, RunMetaKey(project, *run));
    } else {
      delete_range(meta_cf_, ProjectMetaPrefix(kRunMetaTag, project));
      delete_range(meta_cf_, ProjectMetaPrefix(kWatchRuleTag, project));
      delete_key(meta_cf_, std::string(1, kRetentionTag) + std::string(project));
    }

    // What the index knows: `known` unless it has nothing to delete.
    const std::optional<ProjectId> found = index_.FindProject(std::string(project));
    const ProjectId project_id = found.value_or(0);
    std::optional<RunId> run_id;
    if (found && run) run_id = index_.FindRun(project_id, std::string(*run));
    const bool known = found && (!run || run_id);
    std::vector<SeriesId> series;
    if (known) {
      series = index_.SeriesOf(project_id, run_id);
      const std::string data = run_id ? RunDataPrefix(project_id, *run_id)
                                      : ProjectDataPrefix(project_id);
      for (rocksdb::ColumnFamilyHandle* family : RunDataFamilies()) {
        delete_range(family, data);
      }
      // Index: S project [run] ..., R project [run-name], P name, and each
      // series' T record.
      delete_range(index_cf_, std::string(1, kSeriesTag) + data);
      if (run) {
        batch.Delete(index_cf_, RunIndexKey(project_id, *run));
      } else {
        delete_range(index_cf_, RunIndexKey(project_id, ""));
        batch.Delete(index_cf_, ProjectIndexKey(project));
      }
      for (SeriesId id : series) batch.Delete(index_cf_, SealedStatsKey(id));
      const IndexRecord high_water = index_.HighWaterRecord();
      batch.Put(index_cf_, high_water.key, high_water.value);
    }

    // What the series hold, and their head-log entries not yet sealed.
    absl::flat_hash_set<SeriesId> doomed(series.begin(), series.end());
    absl::flat_hash_set<RunId> runs;
    absl::flat_hash_map<uint64_t, uint32_t> unreleased;  // seq -> entries
    std::vector<SeriesState*> states;
    for (SeriesId id : series) {
      if (auto ref = index_.RefOf(id)) runs.insert(ref->run);
      SeriesState* state = State(id);
      if (state == nullptr) continue;
      states.push_back(state);
      absl::ReaderMutexLock lock(&state->mu);
      result.points += state->sealed.points + state->head.size();
      result.chunks += state->sealed.chunks;
      for (const LogRefs::Ref& ref : state->log_records.ToVector()) {
        ++unreleased[ref.seq];
      }
    }
    result.runs = runs.size();
    result.series = series.size();

    // Head-log records with an entry of a deleted series (sealed or not:
    // its bytes must go too) are rewritten without those entries, or
    // deleted when no unsealed entry remains.
    struct LogEdit {
      uint64_t seq;
      bool drop;
      uint32_t released;
      std::vector<SeriesId> remaining;
    };
    std::vector<LogEdit> edits;
    if (!doomed.empty()) {
      absl::MutexLock log_lock(&log_mu_);
      for (const auto& [seq, record] : log_) {
        if (std::none_of(record.series.begin(), record.series.end(),
                         [&](SeriesId id) { return doomed.contains(id); })) {
          continue;
        }
        std::string key;
        AppendBigEndian64(seq, &key);
        std::string value;
        if (auto st = db_->Get(rocksdb::ReadOptions(), head_log_cf_, key, &value);
            !st.ok()) {
          return FromRocks(st, "delete: read head log");
        }
        LogEdit edit{seq, false, 0, {}};
        auto it = unreleased.find(seq);
        if (it != unreleased.end()) edit.released = it->second;
        auto kept = WithoutEntries(value, doomed, &edit.remaining);
        if (!kept.ok()) return kept.status();
        edit.drop = kept->empty() || record.live <= edit.released;
        if (edit.drop) {
          batch.Delete(head_log_cf_, key);
        } else {
          batch.Put(head_log_cf_, key, *kept);
        }
        edits.push_back(std::move(edit));
      }
      ranges.push_back({head_log_cf_, "", ""});
    }

    rocksdb::WriteOptions write_options;
    write_options.sync = options_.sync;
    if (auto st = Write(write_options, &batch, "delete");
        !st.ok()) {
      return st;
    }

    // Durable; now memory. The index entries and the states go together
    // under states_mu_, which ResolveSeries checks (see there).
    std::vector<SeriesId> removed;
    {
      absl::MutexLock lock(&states_mu_);
      if (known) removed = index_.Remove(project_id, run_id);
      for (SeriesId id : removed) {
        if (id > states_.size() || states_[id - 1] == nullptr) continue;
        std::unique_ptr<SeriesState>& state = states_[id - 1];
        {
          absl::MutexLock series_lock(&state->mu);
          state->deleted = true;
          const size_t head_bytes = state->head.bytes();
          state->head.Clear();
          CountHeadBytes(head_bytes, state->head.bytes());
          state->log_records.Clear();
          state->sealed = SealedStats();
          state->has_last = false;
        }
        deleted_states_.push_back(std::move(state));
      }
    }
    {
      absl::MutexLock log_lock(&log_mu_);
      for (LogEdit& edit : edits) {
        auto it = log_.find(edit.seq);
        if (it == log_.end()) continue;
        if (edit.drop) {
          log_.erase(it);
        } else {
          it->second.live -= edit.released;
          it->second.series = std::move(edit.remaining);
        }
      }
    }
    {
      absl::MutexLock lock(&seal_queue_mu_);
      for (SeriesState* state : states) {
        state->queued &= SeriesState::kMergeQueued;
        std::erase(seal_queue_, state);
        // Left in merge_queue_ (it can be long, and commits wait here):
        // MergeHeads skips deleted states, which stay allocated.
      }
    }
    if (!removed.empty()) {
      absl::MutexLock lock(&observers_mu_);
      for (CommitObserver* observer : observers_) {
        observer->OnSeriesDeleted(removed);
      }
    }
    absl::MutexLock lock(&reclaim_mu_);
    for (ReclaimRange& range : ranges) reclaim_.push_back(std::move(range));
    return result;
  }

  absl::Status ReclaimDeleted() {
    std::vector<ReclaimRange> ranges;
    {
      absl::MutexLock lock(&reclaim_mu_);
      ranges = reclaim_;
    }
    if (ranges.empty()) return absl::OkStatus();
    // Deleted data leaves the disk when this returns, not at a pace.
    const BackgroundWritePacer::Unpaced unpaced(&pacer_);
    // Flushing every family lets RocksDB drop the write-ahead log files
    // that still hold the deleted points.
    if (auto s = db_->Flush(rocksdb::FlushOptions(), families_); !s.ok()) {
      return FromRocks(s, "reclaim: flush");
    }
    rocksdb::CompactRangeOptions compact;
    compact.bottommost_level_compaction =
        rocksdb::BottommostLevelCompaction::kForce;
    // The index is small, and its deleted records are point deletes too
    // (T): it is compacted whole.
    if (auto s = db_->CompactRange(compact, index_cf_, nullptr, nullptr);
        !s.ok()) {
      return FromRocks(s, "reclaim: compact index");
    }
    for (const ReclaimRange& range : ranges) {
      // An empty range stands for the whole family (the head log).
      const rocksdb::Slice begin(range.begin), end(range.end);
      const bool whole = range.begin.empty() && range.end.empty();
      if (auto s = db_->CompactRange(compact, range.family,
                                     whole ? nullptr : &begin,
                                     whole ? nullptr : &end);
          !s.ok()) {
        return FromRocks(s, "reclaim: compact");
      }
    }
    db_->FlushWAL(true).PermitUncheckedError();
    // The files RocksDB deleted are moved to a trash first.
    if (!pacer_.WaitForEmptyTrash(options_.data_dir, kTrashWait)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "reclaim: deleted files still in the trash of ", options_.data_dir,
          " after ",
          absl::FormatDuration(kTrashWait)));
    }
    absl::MutexLock lock(&reclaim_mu_);
    reclaim_.erase(reclaim_.begin(), reclaim_.begin() + ranges.size());
    return absl::OkStatus();
  }

 private:
  struct PendingAppend {
    AppendBatch batch;
    AppendCallback done;
    size_t points = 0;
    uint64_t bytes = 0;  // batch.MemoryBytes(), as counted in queued_bytes_
  };

  // Per-series state of one commit group.
  struct GroupSeries {
    SeriesState* state = nullptr;
    // Points accepted so far in this group, in step order, piece by piece.
    // Inline: a group touches up to a million series, most of them once,
    // and a heap vector each was a malloc/free pair per series per group
    // on the commit thread.
    absl::InlinedVector<PointSpan, 1> accepted;
    bool has_last = false;
    uint64_t last_step = 0;
    uint64_t last_value_bits = 0;
  };

  // Accepted points of one series to write as head fragment(s).
  struct Fragment {
    SeriesState* state;
    PointSpan points;
    std::string_view encoded;  // prepared encoding, or empty: encode here
  };

  // What a commit group builds, kept from group to group by the commit
  // thread: allocated (and page-faulted) afresh for each group of up to
  // kMaxGroupSeries series, it was about half of the committer's time at
  // a million series, and a transient peak of ~100 MB.
  struct CommitScratch {
    std::vector<GroupSeries> series;  // the group's distinct series
    std::vector<Fragment> fragments;
    std::string record;  // the group's head-log record
    std::vector<CommittedPoints> committed;  // what observers are shown
    // Per series, the sealed chunk its duplicate checks decoded last
    // (StoredValues), shared by the group's appends: a resend brings a
    // chunk's steps in many small requests. Cleared with each group.
    absl::flat_hash_map<const SeriesState*, PointColumns> decoded_chunks;
  };

  struct Counters {
    uint64_t write_groups = 0;
    uint64_t appends = 0;
    uint64_t points_accepted = 0;
    uint64_t points_duplicate = 0;
    uint64_t points_rejected = 0;
  };

  void EnsureStateLocked(const SeriesRef& ref)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(states_mu_) {
    if (states_.size() < ref.id) states_.resize(ref.id);
    if (states_[ref.id - 1] != nullptr) return;
    auto state = std::make_unique<SeriesState>();
    state->id = ref.id;
    state->project = ref.project;
    state->run = ref.run;
    states_[ref.id - 1] = std::move(state);
  }

  // The column families whose keys begin project(4) run(4): a run's or a
  // project's range there is deleted with it. A new family of run data is
  // added here.
  std::vector<rocksdb::ColumnFamilyHandle*> RunDataFamilies() const {
    return {chunks_cf_, rollups_cf_};
  }

  SeriesState* State(SeriesId id) const {
    absl::ReaderMutexLock lock(&states_mu_);
    return StateLocked(id);
  }
  SeriesState* StateLocked(SeriesId id) const
      ABSL_SHARED_LOCKS_REQUIRED(states_mu_) {
    if (id == 0 || id > states_.size()) return nullptr;
    return states_[id - 1].get();
  }

  // Rebuilds the index and the heads from the database.
  absl::Status Recover() {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), index_cf_));
    std::vector<std::pair<SeriesId, SealedRecord>> sealed;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key = it->key().ToStringView();
      if (!key.empty() && key[0] == kSealedTag) {
        if (key.size() != 5) return absl::DataLossError("bad sealed-stats key");
        auto record = SealedRecord::Decode(it->value().ToStringView());
        if (!record.ok()) return record.status();
        sealed.emplace_back(ReadBigEndian32(key.data() + 1), *record);
        continue;
      }
      if (auto s = index_.LoadRecord(key, it->value().ToStringView());
          !s.ok()) {
        return s;
      }
    }
    if (auto s = FromRocks(it->status(), "read index"); !s.ok()) return s;
    if (auto s = BuildMissingRollups(); !s.ok()) return s;

    absl::MutexLock lock(&states_mu_);
    for (SeriesId id = 1; id <= index_.max_series_id(); ++id) {
      if (auto ref = index_.RefOf(id)) EnsureStateLocked(*ref);
    }
    for (const auto& [id, record] : sealed) {
      if (id == 0 || id > states_.size() || states_[id - 1] == nullptr) {
        return absl::DataLossError(absl::StrCat("sealed stats of unknown series ", id));
      }
      SeriesState& state = *states_[id - 1];
      absl::MutexLock series_lock(&state.mu);
      state.sealed = record.stats;
      if (record.stats.points > 0) {
        state.has_last = true;
        state.last_step = record.stats.last_step;
        state.last_time_ms = record.last_time_ms;
        state.last_value = record.last_value;
      }
    }

    // Replay the head log. A fragment whose series was sealed after the
    // record was written is skipped: seals cover whole fragments.
    it.reset(db_->NewIterator(rocksdb::ReadOptions(), head_log_cf_));
    PointColumns fragment;
    rocksdb::WriteBatch emptied;
    absl::MutexLock log_lock(&log_mu_);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      if (it->key().size() != 8) return absl::DataLossError("bad head-log key");
      const uint64_t seq = ReadBigEndian64(it->key().data());
      next_log_seq_ = seq + 1;
      LogRecord record;
      record.created = absl::Now();
      std::string_view in = it->value().ToStringView();
      while (!in.empty()) {
        if (in.size() < 8) return absl::DataLossError("truncated head-log entry");
        const SeriesId id = ReadBigEndian32(in.data());
        const uint32_t size = ReadBigEndian32(in.data() + 4);
        in.remove_prefix(8);
        if (size > in.size() || id == 0 || id > index_.max_series_id()) {
          return absl::DataLossError(
              absl::StrCat("head-log record ", seq, ": bad entry"));
        }
        if (id > states_.size() || states_[id - 1] == nullptr) {
          // An id below the high-water mark without an index record: a
          // deleted series. A deletion rewrites the records it touches in
          // its own atomic batch, so this is only a safety net.
          in.remove_prefix(size);
          continue;
        }
        // The entry's fragment; a head that takes all of it keeps it as is.
        const std::string_view bytes = in.substr(0, size);
        in.remove_prefix(size);
        fragment.clear();
        if (auto st = DecodeChunk(bytes, &fragment); !st.ok()) return st;
        SeriesState& state = *states_[id - 1];
        absl::MutexLock series_lock(&state.mu);
        // Points up to the sealed last step were sealed before the crash
        // (a seal may have cut this fragment).
        const uint64_t sealed_to = state.has_last ? state.last_step : 0;
        if (state.has_last && fragment.steps.back() <= sealed_to) continue;
        size_t keep = 0;
        if (state.has_last) keep = LowerBound(fragment.steps, sealed_to + 1);
        state.log_records.Append({seq, fragment.steps.back()});
        const size_t head_bytes = state.head.bytes();
        state.AppendHeadLocked(AsSpan(fragment).Suffix(keep),
                               keep == 0 ? bytes : std::string_view());
        CountHeadBytes(head_bytes, state.head.bytes());
        ++record.live;
        record.series.push_back(id);
      }
      if (record.live == 0) {
        emptied.Delete(head_log_cf_, it->key());
      } else {
        log_.emplace(seq, std::move(record));
      }
    }
    if (auto st = FromRocks(it->status(), "read head log"); !st.ok()) return st;
    if (emptied.Count() > 0) {
      if (auto st = FromRocks(db_->Write(rocksdb::WriteOptions(), &emptied),
                              "prune head log");
          !st.ok()) {
        return st;
      }
    }
    return absl::OkStatus();

  }

  // Calls `visit` with the summary and bytes of each chunk of `state` that
  // may hold steps in [from, to] (and times in *time_range if given), in
  // order, until it returns false.
  absl::Status VisitChunks(
      const SeriesState& state, const rocksdb::Snapshot* snapshot,
      uint64_t from, uint64_t to, const TimeRange* time_range,
      absl::FunctionRef<absl::StatusOr<bool>(const ChunkSummary&, ChunkLoader)>
          visit) const {
    rocksdb::ReadOptions read_options;
    read_options.snapshot = snapshot;
    const std::string lower = state.DataPrefix();
    std::string upper = lower;
    AppendBigEndian64(to, &upper);
    upper.push_back('\0');  // just past the key of a chunk starting at `to`
    rocksdb::Slice upper_slice(upper), lower_slice(lower);
    read_options.iterate_upper_bound = &upper_slice;
    read_options.iterate_lower_bound = &lower_slice;
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(read_options, chunks_cf_));
    std::string start = lower;
    AppendBigEndian64(from, &start);
    // The chunk that starts at or before `from` may hold it.
    it->SeekForPrev(start);
    if (!it->Valid()) it->Seek(start);
    PointColumns points;
    for (; it->Valid(); it->Next()) {
      const std::string_view chunk = it->value().ToStringView();
      auto summary = ReadChunkSummary(chunk);
      if (!summary.ok()) return summary.status();
      if (summary->max_step < from) continue;
      if (time_range != nullptr && (summary->max_time_ms < time_range->from_ms ||
                                    summary->min_time_ms > time_range->to_ms)) {
        continue;
      }
      auto load = [&]() -> absl::StatusOr<const PointColumns*> {
        points.clear();
        if (auto s = DecodeSealed(it->key().ToStringView(), chunk, snapshot,
                                  &points);
            !s.ok()) {
          return s;
        }
        return &points;
      };
      auto more = visit(*summary, load);
      if (!more.ok()) return more.status();
      if (!*more) return absl::OkStatus();
    }
    return FromRocks(it->status(), "read chunks");
  }

  // The one decoder of sealed chunks (see ChunkLoader): appends the points
  // of `chunk`, stored under the data key `key`, to *out. A follower chunk
  // (format version 3) is decoded with its leader's chunk, read at
  // `snapshot` (nullptr: the latest) under the leader's data key: the same
  // project, run and first step. Returns DataLossError if that chunk is
  // missing or does not match, or the codec's error.
  absl::Status DecodeSealed(std::string_view key, std::string_view chunk,
                            const rocksdb::Snapshot* snapshot,
                            PointColumns* out) const {
    auto described = DescribeChunk(chunk);
    if (!described.ok()) return described.status();
    if (described->leader_series == 0) return DecodeChunk(chunk, out);
    if (key.size() != kDataKeySize) return absl::DataLossError("bad chunk key");
    std::string leader_key(key.substr(0, kSeriesPrefixSize - 4));
    AppendBigEndian32(described->leader_series, &leader_key);
    leader_key.append(key.substr(kSeriesPrefixSize));
    rocksdb::ReadOptions read_options;
    read_options.snapshot = snapshot;
    std::string leader;
    auto s = db_->Get(read_options, chunks_cf_, leader_key, &leader);
    if (s.IsNotFound()) {
      return absl::DataLossError(absl::StrCat(
          "chunk of series ", ReadBigEndian32(key.data() + 8), " at step ",
          ReadBigEndian64(key.data() + kSeriesPrefixSize),
          " shares the step and time columns of series ",
          described->leader_series, ", whose chunk is missing"));
    }
    if (!s.ok()) return FromRocks(s, "read leader chunk");
    return DecodeFollowerChunk(chunk, leader, out);
  }

  // As VisitChunks, with each chunk's points decoded.
  absl::Status ScanChunks(
      const SeriesState& state, const rocksdb::Snapshot* snapshot,
      uint64_t from, uint64_t to, const TimeRange* time_range,
      absl::FunctionRef<bool(const PointColumns&)> visit) const {
    return VisitChunks(
        state, snapshot, from, to, time_range,
        [&](const ChunkSummary&, ChunkLoader load) -> absl::StatusOr<bool> {
          auto points = load();
          if (!points.ok()) return points.status();
          return visit(**points);
        });
  }

  // Implements Engine::Scan (here, beside the chunk iteration it uses).
 public:
  absl::Status Scan(SeriesId id, const ReadRange& range,
                    ChunkVisitor& visitor) const {
    return AtOneMoment(
        id, range,
        [&](const SeriesState& state, const rocksdb::Snapshot* snapshot) {
          return VisitChunks(
              state, snapshot, range.steps.from, range.steps.to, &range.times,
              [&](const ChunkSummary& summary,
                  ChunkLoader load) -> absl::StatusOr<bool> {
                return visitor.OnChunk(summary, load);
              });
        },
        [&](const PointColumns& head) { visitor.OnHead(head); });
  }

  // Implements Engine::ScanRollups: as Scan, over the rollup records, with
  // a chunk read (same snapshot) only when the visitor asks for it.
  absl::Status ScanRollups(SeriesId id, const ReadRange& range,
                           RollupVisitor& visitor) const {
    return AtOneMoment(
        id, range,
        [&](const SeriesState& state, const rocksdb::Snapshot* snapshot) {
          return VisitRollups(state, snapshot, range, visitor);
        },
        [&](const PointColumns& head) { visitor.OnHead(head); });
  }

 private:
  // Runs `sealed` over the series' sealed data at a snapshot, then (if it
  // succeeded) `head` with the head's points in range, both as of one
  // moment: the snapshot is taken and the head copied under the series
  // mutex, which a seal holds while it moves points from head to chunk, so
  // a reader sees each point exactly once.
  absl::Status AtOneMoment(
      SeriesId id, const ReadRange& range,
      absl::FunctionRef<absl::Status(const SeriesState&,
                                     const rocksdb::Snapshot*)>
          sealed,
      absl::FunctionRef<void(const PointColumns&)> head_visitor) const {
    const SeriesState* state = State(id);
    if (state == nullptr) return absl::NotFoundError("unknown series");
    PointColumns head;
    const rocksdb::Snapshot* snapshot;
    {
      absl::ReaderMutexLock lock(&state->mu);
      if (auto s = state->head.DecodeRange(range, &head); !s.ok()) return s;
      snapshot = db_->GetSnapshot();
    }
    absl::Status status = sealed(*state, snapshot);
    db_->ReleaseSnapshot(snapshot);
    if (!status.ok()) return status;
    head_visitor(head);
    return absl::OkStatus();
  }

  // ScanRollups' walk over the sealed chunks' records.
  absl::Status VisitRollups(const SeriesState& state,
                            const rocksdb::Snapshot* snapshot,
                            const ReadRange& range,
                            RollupVisitor& visitor) const {
    rocksdb::ReadOptions read_options;
    read_options.snapshot = snapshot;
    const std::string data_prefix = state.DataPrefix();
    const std::string lower = RollupKey(data_prefix, kChunkPiecesTier, 0);
    // Just past the record of a chunk starting at `to`.
    const std::string upper =
        RollupKey(data_prefix, kChunkPiecesTier, range.steps.to) +
        '\0';
    rocksdb::Slice upper_slice(upper), lower_slice(lower);
    read_options.iterate_upper_bound = &upper_slice;
    read_options.iterate_lower_bound = &lower_slice;
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(read_options, rollups_cf_));
    const std::string start =
        RollupKey(data_prefix, kChunkPiecesTier, range.steps.from);
    // The chunk that starts at or before `from` may hold it.
    it->SeekForPrev(start);
    if (!it->Valid()) it->Seek(start);
    std::vector<RollupPiece> pieces;
    PointColumns points;
    std::string chunk;
    for (; it->Valid(); it->Next()) {
      if (it->key().size() != kRollupKeySize) {
        return absl::DataLossError("bad rollup key");
      }
      const uint64_t first_step =
          ReadBigEndian64(it->key().data() + kSeriesPrefixSize + 1);
      if (absl::Status s =
              DecodeRollup(it->value().ToStringView(), first_step, &pieces);
          !s.ok()) {
        return s;
      }
      if (pieces.back().last_step < range.steps.from) continue;
      const bool raw_expired = RollupRawExpired(it->value().ToStringView());
      auto load = [&]() -> absl::StatusOr<const PointColumns*> {
        if (raw_expired) return nullptr;  // retention deleted the chunk
        std::string key = data_prefix;
        AppendBigEndian64(first_step, &key);
        rocksdb::ReadOptions get_options;
        get_options.snapshot = snapshot;
        auto s = db_->Get(get_options, chunks_cf_, key, &chunk);
        if (s.IsNotFound()) {
          return absl::DataLossError(absl::StrCat(
              "rollup record of series ", state.id, " at step ", first_step,
              " has no chunk"));
        }
        if (!s.ok()) return FromRocks(s, "read chunk");
        points.clear();
        if (auto st = DecodeSealed(key, chunk, snapshot, &points); !st.ok()) {
          return st;
        }
        return &points;
      };
      auto more = visitor.OnChunkPieces(pieces, load);
      if (!more.ok()) return more.status();
      if (!*more) return absl::OkStatus();
    }
    return FromRocks(it->status(), "read rollups");
  }

  // Builds the rollup record of every chunk, unless the marker says they
  // exist: a data directory written before rollups existed has chunks and
  // no records. Runs at open, before any seal; idempotent (records are
  // rewritten whole), so a crash part way through just starts over.
  absl::Status BuildMissingRollups() {
    std::string marker;
    auto s = db_->Get(rocksdb::ReadOptions(), rollups_cf_,
                      rocksdb::Slice(kRollupsBuiltKey, sizeof(kRollupsBuiltKey)),
                      &marker);
    if (s.ok()) return absl::OkStatus();
    if (!s.IsNotFound()) return FromRocks(s, "read rollups marker");
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), chunks_cf_));
    rocksdb::WriteBatch batch;
    PointColumns points;
    std::vector<RollupPiece> pieces;
    std::string encoded;
    auto flush = [&]() -> absl::Status {
      if (batch.Count() == 0) return absl::OkStatus();
      auto st = db_->Write(rocksdb::WriteOptions(), &batch);
      batch.Clear();
      return FromRocks(st, "build rollups");
    };
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      if (it->key().size() != kDataKeySize) {
        return absl::DataLossError("bad chunk key");
      }
      points.clear();
      if (auto st = DecodeSealed(it->key().ToStringView(),
                                 it->value().ToStringView(), nullptr, &points);
          !st.ok()) {
        return st;
      }
      // The window the seal used is not stored; the chunk's own points give
      // the same one for a full chunk, and any power of two is correct.
      PutRollup(&batch, rollups_cf_,
                it->key().ToStringView().substr(0, kSeriesPrefixSize),
                points.steps, points.times_ms, points.values,
                ChunkWindow(points.steps, options_.chunk_points), &pieces,
                &encoded);
      if (batch.Count() >= 4096) {
        if (auto st = flush(); !st.ok()) return st;
      }
    }
    if (auto st = FromRocks(it->status(), "build rollups"); !st.ok()) return st;
    if (auto st = flush(); !st.ok()) return st;
    // The marker last, durably: until it is there, the next open rebuilds.
    batch.Put(rollups_cf_,
              rocksdb::Slice(kRollupsBuiltKey, sizeof(kRollupsBuiltKey)),
              std::string(1, '\1'));
    rocksdb::WriteOptions sync;
    sync.sync = true;
    return FromRocks(db_->Write(sync, &batch), "build rollups");
  }

  // The stored values of one series, for the duplicate checks of one
  // append (steps at or below the series' last one). The head fragments
  // the append's steps fall in are decoded once, and the sealed chunk
  // decoded last is kept (shared by the group's appends), so a resend in
  // step order decodes each chunk about once: looked up point by point (a
  // seek and a chunk decode each, on the commit thread), a client resending
  // a sealed stretch of a run stalled every stream's acks for seconds. Holds no lock between calls: only the commit thread
  // appends, and a seal meanwhile moves head points into chunks, which a
  // later lookup still finds (the head copy is searched first).
  class StoredValues {
   public:
    // Lookups will be for steps in [from, to] only. `decoded_chunks` keeps
    // the last chunk decoded per series (see CommitScratch).
    StoredValues(const Impl& impl, const GroupSeries& group, uint64_t from,
                 uint64_t to,
                 absl::flat_hash_map<const SeriesState*, PointColumns>*
                     decoded_chunks)
        : impl_(impl), group_(group), decoded_chunks_(decoded_chunks) {
      head_range_.steps = {from, to};
    }

    // The value bits of the point stored at `step`, or nullopt if none is.
    absl::StatusOr<std::optional<uint64_t>> Find(uint64_t step) {
      for (const PointSpan& mine : group_.accepted) {
        if (auto bits = At(mine.steps, mine.values, step)) return bits;
      }
      if (!head_loaded_) {
        absl::ReaderMutexLock lock(&group_.state->mu);
        const SeriesHead& head = group_.state->head;
        // Only the fragments that can hold those steps.
        if (auto s = head.DecodeRange(head_range_, &head_); !s.ok()) return s;
        head_first_step_ =
            head.empty() ? std::optional<uint64_t>() : head.first_step();
        sealed_ = group_.state->sealed;
        head_loaded_ = true;
      }
      if (auto bits = At(head_.steps, head_.values, step)) return bits;
      if (head_first_step_ && step > *head_first_step_) return std::nullopt;
      if (sealed_.points == 0 || step > sealed_.last_step) return std::nullopt;
      if (chunk_ == nullptr) {
        // Bounded: a group may touch 262,144 series, and a wide resend
        // would otherwise keep a decoded chunk for each.
        auto it = decoded_chunks_->find(group_.state);
        if (it != decoded_chunks_->end()) {
          chunk_ = &it->second;
        } else if (decoded_chunks_->size() < kMaxSharedChunks) {
          chunk_ = &(*decoded_chunks_)[group_.state];
        } else {
          chunk_ = &own_chunk_;
        }
      }
      if (chunk_->empty() || step < chunk_->steps.front() ||
          step > chunk_->steps.back()) {
        // The chunk holding `step`, if any (none in a gap).
        auto s = impl_.ScanChunks(*group_.state, nullptr, step, step, nullptr,
                                  [&](const PointColumns& points) {
                                    *chunk_ = points;
                                    return false;
                                  });
        if (!s.ok()) return s;
      }
      return At(chunk_->steps, chunk_->values, step);
    }

   private:
    static std::optional<uint64_t> At(std::span<const uint64_t> steps,
                                      std::span<const double> values,
                                      uint64_t step) {
      const size_t i = LowerBound(steps, step);
      if (i < steps.size() && steps[i] == step) return Bits(values[i]);
      return std::nullopt;
    }

    const Impl& impl_;
    const GroupSeries& group_;
    ReadRange head_range_;
    bool head_loaded_ = false;
    PointColumns head_;  // its points in head_range_
    std::optional<uint64_t> head_first_step_;
    SealedStats sealed_;
    // Up to ~50 MB of decoded chunks (1024-2048 points of 24 bytes).
    static constexpr size_t kMaxSharedChunks = 1024;
    absl::flat_hash_map<const SeriesState*, PointColumns>* const
        decoded_chunks_;
    PointColumns own_chunk_;  // when decoded_chunks_ is full
    PointColumns* chunk_ = nullptr;  // the chunk in use, once needed
  };

  // Validates one series' points of one append against the group state,
  // point by point, copying the accepted ones to *accepted.
  SeriesAppendResult ValidateInto(PointSpan in, GroupSeries* group,
                                  PointColumns* accepted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
    SeriesAppendResult result;
    if (in.empty()) return result;
    const auto [min_step, max_step] = std::ranges::minmax(in.steps);
    StoredValues stored_values(*this, *group, min_step, max_step,
                               &commit_scratch_.decoded_chunks);
    for (size_t i = 0; i < in.size(); ++i) {
      const uint64_t step = in.steps[i];
      const uint64_t bits = Bits(in.values[i]);
      if (!group->has_last || step > group->last_step) {
        accepted->push_back(step, in.times_ms[i], in.values[i]);
        group->has_last = true;
        group->last_step = step;
        group->last_value_bits = bits;
        ++result.accepted;
        continue;
      }
      std::optional<uint64_t> stored;
      if (step == group->last_step) {
        stored = group->last_value_bits;
      } else {
        auto found = stored_values.Find(step);
        if (!found.ok()) {
          ++result.rejected;
          if (result.first_rejection.empty()) {
            result.first_rejection = absl::StrCat(
                "step ", step / kMicrosPerStep, ": cannot check for a duplicate: ",
                found.status().message());
          }
          continue;
        }
        stored = *found;
      }
      if (stored && *stored == bits) {
        ++result.duplicates;
        continue;
      }
      ++result.rejected;
      if (result.first_rejection.empty()) {
        result.first_rejection = FormatRejection(step, group->last_step, stored);
      }
    }
    return result;
  }

  static std::string FormatStep(uint64_t micro) {
    std::string s = absl::StrCat(micro / kMicrosPerStep);
    if (uint64_t frac = micro % kMicrosPerStep; frac != 0) {
      std::string digits = absl::StrCat(frac + kMicrosPerStep).substr(1);
      while (!digits.empty() && digits.back() == '0') digits.pop_back();
      absl::StrAppend(&s, ".", digits);
    }
    return s;
  }

  static std::string FormatRejection(uint64_t step, uint64_t last,
                                     std::optional<uint64_t> stored) {
    if (stored) {
      return absl::StrCat("steps: step ", FormatStep(step),
                          " is already stored with a different value");
    }
    return absl::StrCat("steps: step ", FormatStep(step),
                        " goes backwards (last step ", FormatStep(last), ")");
  }

  void CommitLoop() {
    for (;;) {
      std::deque<PendingAppend> group;
      {
        absl::MutexLock lock(&queue_mu_);
        queue_mu_.Await(absl::Condition(
            +[](Impl* impl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->queue_mu_) {
              return impl->stopping_ || !impl->queue_.empty();
            },
            this));
        if (queue_.empty()) return;  // stopping and drained
        // Take everything queued, up to a bounded number of points and
        // series entries (always at least one append).
        size_t points = 0, entries = 0;
        while (!queue_.empty() &&
               (group.empty() ||
                (points + queue_.front().points <= kMaxGroupPoints &&
                 entries + queue_.front().batch.series().size() <=
                     kMaxGroupSeries))) {
          points += queue_.front().points;
          entries += queue_.front().batch.series().size();
          group.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      {
        // A deletion pauses commits (see Delete).
        absl::MutexLock commit_lock(&commit_mu_);
        CommitGroup(group);  // ends in RunCallbacks
      }
    }
  }

  // Frees a scratch buffer that is more than 4 times (and 1 MB) larger
  // than what this group used: a burst, such as a million series
  // registering, must not pin its peak for good.
  void ReleaseOversizedScratch() ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
    auto release = [](auto& buffer, size_t element_bytes) {
      if (buffer.capacity() > 4 * buffer.size() &&
          buffer.capacity() * element_bytes > (1 << 20)) {
        std::remove_reference_t<decltype(buffer)>().swap(buffer);
      }
    };
    CommitScratch& s = commit_scratch_;
    release(s.series, sizeof(GroupSeries));
    release(s.fragments, sizeof(Fragment));
    release(s.committed, sizeof(CommittedPoints));
    release(s.record, 1);
  }

  // On the commit thread (it uses the commit scratch).
  void NotifyObservers(const std::vector<Fragment>& fragments)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
    absl::MutexLock lock(&observers_mu_);
    if (observers_.empty() || fragments.empty()) return;
    std::vector<CommittedPoints>& committed = commit_scratch_.committed;
    committed.clear();
    for (const Fragment& f : fragments) {
      committed.push_back({f.state->id, f.points});
    }
    for (CommitObserver* observer : observers_) observer->OnCommit(committed);
  }

  void CommitGroup(std::deque<PendingAppend>& group)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
    std::vector<GroupSeries>& touched = commit_scratch_.series;
    std::vector<Fragment>& fragments = commit_scratch_.fragments;
    touched.clear();
    fragments.clear();
    commit_scratch_.decoded_chunks.clear();
    std::vector<std::vector<SeriesAppendResult>> results(group.size());
    std::deque<PointColumns> filtered;  // accepted subsets of slow-path appends
    Counters delta;
    for (size_t r = 0; r < group.size(); ++r) {
      const AppendBatch& batch = group[r].batch;
      results[r].reserve(batch.series().size());
      for (const AppendBatch::Series& series : batch.series()) {
        SeriesAppendResult& result = results[r].emplace_back();
        const PointSpan points = batch.points(series);
        const std::string_view prepared = batch.fragment(series);
        SeriesState* state = State(series.id);
        if (state == nullptr) {
          result.rejected = points.size();
          result.first_rejection = series.id <= index_.max_series_id()
                                       ? "series was deleted"
                                       : "unknown series id";
          delta.points_rejected += result.rejected;
          continue;
        }
        // The series' slot in this group, made at its first append here.
        if (state->group_slot >= touched.size() ||
            touched[state->group_slot].state != state) {
          state->group_slot = static_cast<uint32_t>(touched.size());
          GroupSeries& fresh = touched.emplace_back();
          fresh.state = state;
          absl::ReaderMutexLock lock(&state->mu);
          fresh.has_last = state->has_last;
          fresh.last_step = state->last_step;
          fresh.last_value_bits = Bits(state->last_value);
        }
        GroupSeries& g = touched[state->group_slot];
        if (points.empty()) continue;
        if (!prepared.empty() &&
            (!g.has_last || points.steps.front() > g.last_step)) {
          // Fast path: a prepared append that simply continues the series.
          result.accepted = points.size();
          fragments.push_back({g.state, points, prepared});
          g.accepted.push_back(points);
          g.has_last = true;
          g.last_step = points.steps.back();
          g.last_value_bits = Bits(points.values.back());
        } else {
          PointColumns& accepted = filtered.emplace_back();
          result = ValidateInto(points, &g, &accepted);
          if (!accepted.empty()) {
            fragments.push_back({g.state, AsSpan(accepted), {}});
            g.accepted.push_back(AsSpan(accepted));
          }
        }
        delta.points_accepted += result.accepted;
        delta.points_duplicate += result.duplicates;
        delta.points_rejected += result.rejected;
      }
    }

    std::vector<IndexRecord> records;
    index_.TakePendingRecords(&records);
    // In key order, RocksDB's memtable inserts each next to the last (its
    // skiplist keeps the last splice): registering a million series made
    // random inserts into a million-key memtable.
    std::sort(records.begin(), records.end(),
              [](const IndexRecord& a, const IndexRecord& b) {
                return a.key < b.key;
              });
    // The whole group's points are one head-log record: one key, however
    // many series and requests (entry: series id, size, fragment).
    std::string& record = commit_scratch_.record;
    record.clear();
    std::string encoded;
    std::vector<SeriesId> record_series;
    record_series.reserve(fragments.size());
    const uint64_t seq = next_log_seq_;
    for (const Fragment& f : fragments) {
      const PointSpan& p = f.points;
      for (size_t begin = 0; begin < p.size(); begin += kMaxFragmentPoints) {
        std::string_view bytes = f.encoded;
        if (bytes.empty()) {
          const size_t n = std::min(kMaxFragmentPoints, p.size() - begin);
          encoded.clear();
          EncodeFragment(p.steps.subspan(begin, n), p.times_ms.subspan(begin, n),
                         p.values.subspan(begin, n), &encoded);
          bytes = encoded;
        }
        AppendBigEndian32(f.state->id, &record);
        AppendBigEndian32(static_cast<uint32_t>(bytes.size()), &record);
        record.append(bytes);
        record_series.push_back(f.state->id);
        if (!f.encoded.empty()) break;  // prepared: one piece
      }
    }
    size_t index_bytes = 0;
    for (const auto& r : records) index_bytes += r.key.size() + r.value.size();
    // Sized up front: a batch grown by doubling copied the record again.
    rocksdb::WriteBatch batch(record.size() + index_bytes +
                              16 * (records.size() + 2));
    for (const auto& r : records) batch.Put(index_cf_, r.key, r.value);
    if (!record.empty()) {
      std::string key;
      AppendBigEndian64(seq, &key);
      batch.Put(head_log_cf_, key, record);
    }
    absl::Status status;
    if (batch.Count() > 0) {
      rocksdb::WriteOptions write_options;
      write_options.sync = options_.sync;
      status = CheckDisk(options_.min_free_disk_bytes);
      if (status.ok()) {
        const absl::Time started = absl::Now();
        status = Write(write_options, &batch, "write");
        group_write_seconds_.Record(absl::Now() - started);
      }
    }
    if (!status.ok()) {
      index_.RestorePendingRecords(std::move(records));
      std::vector<std::vector<SeriesAppendResult>> none(group.size());
      RunCallbacks(group, status, std::move(none));
      return;
    }

    if (!record.empty()) {
      // Registered before any head refers to it, so a seal finds it.
      ++next_log_seq_;
      absl::MutexLock lock(&log_mu_);
      log_.emplace(seq, LogRecord{static_cast<uint32_t>(record_series.size()),
                                  absl::Now(), std::move(record_series)});
    }
    std::vector<SeriesState*> full, merges;
    // Under memory pressure merging is worth its CPU at any head size.
    const bool merge_heads =
        head_bytes_.load(std::memory_order_relaxed) >=
            options_.merge_heads_above_bytes ||
        Pressure() != MemoryPressure::kNone;
    for (const Fragment& f : fragments) {
      const PointSpan& p = f.points;
      absl::MutexLock lock(&f.state->mu);
      for (size_t begin = 0; begin < p.size(); begin += kMaxFragmentPoints) {
        const size_t end =
            f.encoded.empty() ? std::min(p.size(), begin + kMaxFragmentPoints)
                              : p.size();
        f.state->log_records.Append({seq, p.steps[end - 1]});
        if (!f.encoded.empty()) break;
      }
      // A prepared fragment is the encoding of all of p; the head keeps it.
      const size_t head_bytes = f.state->head.bytes();
      f.state->AppendHeadLocked(p, f.encoded);
      CountHeadBytes(head_bytes, f.state->head.bytes());
      if (f.state->head.size() >= options_.chunk_points) {
        full.push_back(f.state);
      } else if (merge_heads && f.state->head.WantsMerge()) {
        merges.push_back(f.state);
      }
    }
    {
      absl::MutexLock lock(&counters_mu_);
      counters_.write_groups += batch.Count() > 0 ? 1 : 0;
      counters_.appends += group.size();
      counters_.points_accepted += delta.points_accepted;
      counters_.points_duplicate += delta.points_duplicate;
      counters_.points_rejected += delta.points_rejected;
    }
    NotifyObservers(fragments);
    RunCallbacks(group, absl::OkStatus(), std::move(results));
    ReleaseOversizedScratch();
    // Sealing is not on the ack path: the points are already durable in the
    // head log, and a seal lost in a crash leaves the records in place.
    if (!full.empty() || !merges.empty()) {
      absl::MutexLock lock(&seal_queue_mu_);
      for (SeriesState* state : full) QueueLocked(state, SeriesState::kSealQueued);
      for (SeriesState* state : merges) QueueLocked(state, SeriesState::kMergeQueued);
    }
  }

  // Re-encodes the small trailing fragments of each head as one (see
  // SeriesHead::WantsMerge): on the sealer's thread, when no seal waits.
  void MergeHeads(const std::vector<SeriesState*>& states) {
    for (SeriesState* state : states) {
      absl::MutexLock lock(&state->mu);
      if (state->deleted || !state->head.WantsMerge()) continue;
      // A head that does not decode stays as it is; its seal reports it.
      const size_t head_bytes = state->head.bytes();
      state->head.MergeSmallTail().IgnoreError();
      CountHeadBytes(head_bytes, state->head.bytes());
    }
  }

  // Takes the group out of the queued bytes and hands its callbacks (acks,
  // on the ingest side: gRPC writes and reads started from the callback) to
  // the callback thread, in group order, so that the committer goes on to the next group at once: they
  // took about a quarter of a group's time on the committer.
  void RunCallbacks(std::deque<PendingAppend>& group, absl::Status status,
                    std::vector<std::vector<SeriesAppendResult>> results) {
    std::vector<AppendCallback> dones;
    dones.reserve(group.size());
    uint64_t bytes = 0;
    for (auto& pending : group) {
      dones.push_back(std::move(pending.done));
      bytes += pending.bytes;
    }
    // Before the callbacks run: a caller waiting for the queue to shrink
    // (ingest's ReadGate) looks from a callback.
    queued_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
    callbacks_.Submit([dones = std::move(dones), status = std::move(status),
                    results = std::move(results)]() mutable {
      for (size_t r = 0; r < dones.size(); ++r) {
        std::move(dones[r])(status, std::move(results[r]));
      }
    });
  }

  void SealLoop() {
    uint64_t seal_failures = 0;  // in a row
    absl::Time next_record_check = absl::Now();
    for (;;) {
      SeriesState* state = nullptr;
      bool all = false;
      std::vector<SeriesState*> merges;
      {
        absl::MutexLock lock(&seal_queue_mu_);
        // Wakes at least once a second to look for old head-log records.
        seal_queue_mu_.AwaitWithTimeout(
            absl::Condition(
                +[](Impl* impl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->seal_queue_mu_) {
                  return impl->sealer_stopping_ || !impl->seal_queue_.empty() ||
                         !impl->merge_queue_.empty();
                },
                this),
            absl::Seconds(1));
        if (sealer_stopping_) return;
        if (!seal_queue_.empty()) {
          state = PopSealLocked(&all);
        } else if (!merge_queue_.empty()) {
          // A slice at a time, oldest first, so that a seal queued
          // meanwhile soon runs.
          const size_t n = std::min<size_t>(merge_queue_.size(), 4096);
          merges.assign(merge_queue_.begin(), merge_queue_.begin() + n);
          merge_queue_.erase(merge_queue_.begin(), merge_queue_.begin() + n);
          for (SeriesState* merge : merges) {
            merge->queued &= ~SeriesState::kMergeQueued;
          }
        }
      }
      if (!merges.empty()) MergeHeads(merges);
      if (absl::Status s =
              state == nullptr ? absl::OkStatus() : Seal(state, all).status();
          !s.ok()) {
        // The head stays durable in the head log; a later append retries.
        // One line per outage, not per series (a full disk fails them all).
        if (seal_failures++ == 0) {
          fprintf(stderr, "stepdb: seal of series %u failed: %s\n", state->id,
                  std::string(s.message()).c_str());
        }
      } else if (seal_failures > 0) {
        fprintf(stderr, "stepdb: seals succeed again after %llu failed\n",
                static_cast<unsigned long long>(seal_failures));
        seal_failures = 0;
      }
      // On a clock, whatever the queues hold: a steady stream of seals or
      // merges must not hold off the age and memory-budget checks. After
      // the seal taken above, so that its head no longer counts.
      if (const absl::Time now = absl::Now(); now >= next_record_check) {
        QueueSealsOfOldRecords();
        next_record_check = now + absl::Seconds(1);
      }
    }
  }

  // Queues seals of whole heads (partial windows too), oldest head-log
  // record first:
  // - of the series that still pin the oldest record once it is older than
  //   max_head_age, which bounds the log and the replay after a crash;
  // - above half the memory budget, of the series of as many of the oldest
  //   records as it takes to bring memory down to a quarter of it: with
  //   many series no head fills a chunk before memory runs out, and the
  //   oldest heads leaving in shorter chunks beats slowing writers;
  // - over the budget on two ticks in a row (sealing is not catching up),
  //   of every non-empty head: short chunks beat refusing writes forever.
  void QueueSealsOfOldRecords() {
    const MemoryPressure pressure = Pressure();
    const bool over = pressure == MemoryPressure::kOverLimit;
    if (over && over_limit_last_tick_) {
      std::vector<SeriesState*> heads;
      {
        absl::ReaderMutexLock lock(&states_mu_);
        for (const auto& state : states_) {
          if (state == nullptr) continue;
          absl::ReaderMutexLock series_lock(&state->mu);
          if (!state->head.empty()) heads.push_back(state.get());
        }
      }
      QueueWholeHeadSeals(heads);
    }
    over_limit_last_tick_ = over;
    uint64_t excess = 0;  // bytes of heads to seal
    if (pressure != MemoryPressure::kNone) {
      // Seals still queued from an earlier tick count in the memory used:
      // the walk below waits for them rather than queue newer heads too
      // (it also cost a third of the sealer's time when repeated).
      absl::MutexLock lock(&seal_queue_mu_);
      if (seal_queue_.empty() && options_.seal_under_pressure) {
        // Only heads can be sealed away (not the queued appends).
        const uint64_t used = MemoryUsage();
        excess = std::min(head_bytes_.load(std::memory_order_relaxed),
                          used - std::min(used, options_.memory_limit / 4));
      }
    }
    const absl::Time now = absl::Now();
    std::optional<uint64_t> after;  // the last record taken
    for (;;) {
      std::vector<SeriesId> series;
      {
        absl::MutexLock lock(&log_mu_);
        auto it = after ? log_.upper_bound(*after) : log_.begin();
        if (it == log_.end()) return;
        const bool old = !after && now - it->second.created >= options_.max_head_age;
        if (!old && excess == 0) return;
        after = it->first;
        series = it->second.series;
      }
      std::vector<SeriesState*> states;
      states.reserve(series.size());
      {
        absl::ReaderMutexLock lock(&states_mu_);
        for (SeriesId id : series) {
          if (SeriesState* state = StateLocked(id)) states.push_back(state);
        }
      }
      // A series in several records counts (and is queued) once.
      for (SeriesState* state : QueueWholeHeadSeals(states)) {
        absl::ReaderMutexLock series_lock(&state->mu);
        excess -= std::min<uint64_t>(excess, state->head.bytes());
      }
    }
  }

  // Queues whole-head seals of `states`; returns those not queued so
  // before.
  std::vector<SeriesState*> QueueWholeHeadSeals(
      const std::vector<SeriesState*>& states) {
    std::vector<SeriesState*> queued;
    absl::MutexLock lock(&seal_queue_mu_);
    for (SeriesState* state : states) {
      if ((state->queued & SeriesState::kSealAll) != 0) continue;
      state->queued |= SeriesState::kSealAll;
      QueueLocked(state, SeriesState::kSealQueued);
      queued.push_back(state);
    }
    return queued;
  }

  // Appends `state` to the seal queue (kSealQueued) or the merge queue
  // (kMergeQueued) unless it is there already.
  void QueueLocked(SeriesState* state, uint8_t queue)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seal_queue_mu_) {
    if ((state->queued & queue) != 0) return;
    state->queued |= queue;
    if (queue == SeriesState::kSealQueued && seal_queue_.empty()) {
      seal_backlog_since_ = absl::Now();
    }
    (queue == SeriesState::kSealQueued ? seal_queue_ : merge_queue_)
        .push_back(state);
  }

  // Takes the oldest queued seal; *all: whether it takes the whole head.
  // Precondition: the seal queue is not empty.
  SeriesState* PopSealLocked(bool* all)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seal_queue_mu_) {
    SeriesState* state = seal_queue_.front();
    seal_queue_.pop_front();
    *all = (state->queued & SeriesState::kSealAll) != 0;
    state->queued &= ~(SeriesState::kSealQueued | SeriesState::kSealAll);
    return state;
  }

  // Writers help the sealer once it is behind (EngineOptions::
  // seal_assist_after and seal_assist_above_bytes): after its append is
  // queued, a writer seals queued heads (on its own thread, one seal at a
  // time as ever) until it has sealed about as many points as it brought.
  // Sealing is about half of the engine's CPU per point and has one
  // thread, which the writers' threads starve: at 2.5 M points/s on two
  // cores every head stayed queued and heads grew without end
  // (docs/ARCHITECTURE.md, write path, "Seal assists"). Not while an
  // expiry or a deletion holds seal_mu_ (they may take seconds: writers
  // would stop for them, where they used to go on), nor while writes fail
  // (each seal would fail at its write).
  void AssistSeals(size_t points)
      ABSL_LOCKS_EXCLUDED(seal_queue_mu_, seal_mu_) {
    if (head_bytes_.load(std::memory_order_relaxed) <
        options_.seal_assist_above_bytes) {
      return;
    }
    size_t sealed = 0;
    while (sealed < points) {
      if (maintenance_.load(std::memory_order_acquire) > 0 ||
          write_failed_.load(std::memory_order_acquire)) {
        return;
      }
      SeriesState* state;
      bool all;
      {
        absl::MutexLock lock(&seal_queue_mu_);
        if (seal_queue_.empty() ||
            absl::Now() - seal_backlog_since_ < options_.seal_assist_after) {
          return;
        }
        state = PopSealLocked(&all);
      }
      {
        absl::ReaderMutexLock lock(&state->mu);
        sealed += std::max<size_t>(state->head.size(), 1);
      }
      seal_assists_.fetch_add(1, std::memory_order_relaxed);
      if (!Seal(state, all).ok()) {
        // Left to the sealer thread, which reports failures.
        absl::MutexLock lock(&seal_queue_mu_);
        if (all) state->queued |= SeriesState::kSealAll;
        QueueLocked(state, SeriesState::kSealQueued);
        return;
      }
    }
  }

  // Seals the head of `state` into chunks cut at aligned step windows (see
  // ChunkWindow; at most 2 * chunk_points points each) and releases the
  // head-log records no longer needed, atomically. Unless `all`, only whole
  // windows are sealed: the points of the window the head ends in stay, so
  // that the next seal continues that window. Returns the chunk count.
  // Encoding works on a copy, so neither reads nor the committer wait for
  // it; only the write and the head swap hold the series mutex.
  absl::StatusOr<uint64_t> Seal(SeriesState* state, bool all)
      ABSL_LOCKS_EXCLUDED(seal_mu_) {
    // One seal at a time (the sealer thread, writers' assists and
    // Compact): the head prefix copied below stays the head's prefix, as
    // the committer only appends.
    absl::MutexLock seal_lock(&seal_mu_);
    PointColumns head;
    std::vector<LogRefs::Ref> records;
    SealedStats sealed;
    {
      absl::ReaderMutexLock lock(&state->mu);
      if (state->deleted) return 0;  // queued before its deletion
      if (auto s = state->head.Decode(&head); !s.ok()) return s;
      records = state->log_records.ToVector();
      sealed = state->sealed;
    }
    if (head.empty()) return 0;
    const uint64_t window = ChunkWindow(head.steps, options_.chunk_points);
    size_t k = head.size();
    if (!all) {
      k = LowerBound(head.steps, head.steps.back() / window * window);
      // A head that never completes a window (irregular steps) is sealed
      // whole once it holds two chunks' worth.
      if (k == 0 && head.size() >= 2 * options_.chunk_points) k = head.size();
      if (k == 0) return 0;
    }
    rocksdb::WriteBatch batch;
    std::string encoded;
    const std::string data_prefix = state->DataPrefix();
    std::vector<RollupPiece> pieces;
    uint64_t chunks = 0;
    const size_t max_points =
        std::min(2 * options_.chunk_points, kMaxChunkPoints);
    const std::optional<SeriesKey> series_key = index_.KeyOf(state->id);
    const std::string group =
        !series_key
            ? std::string()
            : ColumnGroupKey(
                  std::string_view(data_prefix).substr(0, 8),
                  series_key->labels);
    // Chunks stored with their own columns, for leaders_ once written.
    struct NewLeader {
      uint64_t hash;
      size_t begin, end;  // its points in `head`
    };
    std::vector<NewLeader> new_leaders;
    for (size_t begin = 0; begin < k;) {
      const uint64_t window_index = head.steps[begin] / window;
      size_t end = begin + 1;
      while (end < k && end - begin < max_points &&
             head.steps[end] / window == window_index) {
        ++end;
      }
      encoded.clear();
      const auto steps = std::span(head.steps).subspan(begin, end - begin);
      const auto times = std::span(head.times_ms).subspan(begin, end - begin);
      const auto values = std::span(head.values).subspan(begin, end - begin);
      const uint64_t hash = HashColumns(steps, times);
      if (const std::optional<SeriesId> leader =
              !series_key
                  ? std::nullopt
                  : FindLeader(group, *state, steps, times, hash)) {
        EncodeFollowerChunk(steps, times, values, *leader, &encoded);
      } else {
        EncodeChunk(steps, times, values, &encoded);
        new_leaders.push_back({hash, begin, end});
      }
      std::string key = data_prefix;
      AppendBigEndian64(head.steps[begin], &key);
      batch.Put(chunks_cf_, key, encoded);
      // The chunk's rollup rides in the same atomic batch: after any crash
      // a chunk has its rollup record and vice versa.
      const size_t n = end - begin;
      PutRollup(&batch, rollups_cf_, data_prefix,
                std::span(head.steps).subspan(begin, n),
                std::span(head.times_ms).subspan(begin, n),
                std::span(head.values).subspan(begin, n), window, &pieces,
                &encoded);
      ++chunks;
      begin = end;
    }
    // Records of fragments sealed to their end. Those that no series needs
    // once this seal lands are deleted in the same atomic batch. Records
    // never gain entries and seals are serialized, so the counts read here
    // still hold at the write.
    const uint64_t sealed_to = head.steps[k - 1];
    size_t released_refs = 0;
    while (released_refs < records.size() &&
           records[released_refs].last_step <= sealed_to) {
      ++released_refs;
    }
    absl::flat_hash_map<uint64_t, uint32_t> released;
    for (size_t i = 0; i < released_refs; ++i) ++released[records[i].seq];
    {
      absl::MutexLock lock(&log_mu_);
      for (const auto& [seq, n] : released) {
        auto it = log_.find(seq);
        if (it != log_.end() && it->second.live == n) {
          std::string key;
          AppendBigEndian64(seq, &key);
          batch.Delete(head_log_cf_, key);
        }
      }
    }
    if (sealed.points == 0) sealed.first_step = head.steps.front();
    sealed.points += k;
    sealed.chunks += chunks;
    sealed.last_step = head.steps[k - 1];
    batch.Put(index_cf_, SealedStatsKey(state->id),
              SealedRecord{sealed, head.times_ms[k - 1], head.values[k - 1]}
                  .Encode());

    {
      absl::MutexLock lock(&state->mu);
      // The head without the sealed points (and with whatever the committer
      // appended since the copy above), made before the write so that the
      // chunks are never written while their points stay in the head.
      SeriesHead rest = state->head;
      if (auto s = rest.DropFirst(k); !s.ok()) return s;
      // No fsync needed: losing this write in a crash leaves the head log.
      if (auto s = Write(rocksdb::WriteOptions(), &batch, "seal"); !s.ok()) {
        return s;
      }
      CountHeadBytes(state->head.bytes(), rest.bytes());
      state->head = std::move(rest);
      state->log_records.EraseFirst(released_refs);
      state->sealed = sealed;
    }
    if (series_key.has_value()) {
      for (const NewLeader& leader : new_leaders) {
        const size_t n = leader.end - leader.begin;
        const auto steps = std::span(head.steps).subspan(leader.begin, n);
        leaders_.Add(group, steps.front(), leader.hash, state->id);
        leader_columns_.Add(
            state->id, steps,
            std::span(head.times_ms).subspan(leader.begin, n));
      }
    }
    absl::MutexLock log_lock(&log_mu_);
    for (const auto& [seq, n] : released) {
      auto it = log_.find(seq);
      if (it == log_.end()) continue;
      it->second.live -= n;
      if (it->second.live == 0) log_.erase(it);
    }
    return chunks;
  }

  // The leader for a chunk of `state` with these columns (see
  // storage/shared_columns.h): a sibling's chunk at the same first step,
  // stored with its own columns, that holds exactly these steps and times
  // (checked on the leader's kept columns, else on its stored chunk: the
  // cache is only a hint). Any failure just means no sharing.
  std::optional<SeriesId> FindLeader(std::string_view group,
                                     const SeriesState& state,
                                     std::span<const uint64_t> steps,
                                     std::span<const int64_t> times,
                                     uint64_t hash)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seal_mu_) {
    const std::optional<SeriesId> leader =
        leaders_.Find(group, steps.front(), hash, state.id);
    if (!leader) return std::nullopt;
    if (const PointColumns* columns =
            leader_columns_.Find(*leader, steps.front())) {
      if (!std::ranges::equal(steps, columns->steps) ||
          !std::ranges::equal(times, columns->times_ms)) {
        return std::nullopt;
      }
      return leader;
    }
    std::string key(state.DataPrefix().substr(0, 8));
    AppendBigEndian32(*leader, &key);
    AppendBigEndian64(steps.front(), &key);
    std::string chunk;
    if (!db_->Get(rocksdb::ReadOptions(), chunks_cf_, key, &chunk).ok()) {
      return std::nullopt;
    }
    auto described = DescribeChunk(chunk);
    if (!described.ok() || described->version != 2) return std::nullopt;
    leader_points_.clear();
    if (!DecodeChunk(chunk, &leader_points_).ok() ||
        !std::equal(steps.begin(), steps.end(), leader_points_.steps.begin(),
                    leader_points_.steps.end()) ||
        !std::equal(times.begin(), times.end(),
                    leader_points_.times_ms.begin(),
                    leader_points_.times_ms.end())) {
      return std::nullopt;
    }
    return leader;
  }

  // Sealer thread only: whether the last idle tick found the engine over
  // its memory budget.
  bool over_limit_last_tick_ = false;
  // Memory budget accounting (see Pressure()): the heads' allocations, as
  // SeriesHead::bytes() counts them, and the decoded appends queued.
  std::atomic<uint64_t> head_bytes_{0};
  // A write failed and RocksDB must be resumed before the next (see Write).
  std::atomic<bool> write_failed_{false};
  std::atomic<uint64_t> queued_bytes_{0};

  // Called with a head's bytes() before and after a change made under its
  // series' lock (unsigned wrap-around subtracts when it shrank).
  void CountHeadBytes(size_t before, size_t after) {
    head_bytes_.fetch_add(uint64_t{after} - uint64_t{before},
                          std::memory_order_relaxed);
  }

 public:
  uint64_t QueuedAppendBytes() const {
    return queued_bytes_.load(std::memory_order_relaxed);
  }
  uint64_t MemoryUsage() const {
    return head_bytes_.load(std::memory_order_relaxed) +
           queued_bytes_.load(std::memory_order_relaxed);
  }
  MemoryPressure Pressure() const {
    if (options_.memory_limit == 0) return MemoryPressure::kNone;
    const uint64_t used = MemoryUsage();
    if (used > options_.memory_limit) return MemoryPressure::kOverLimit;
    if (used > options_.memory_limit / 2) return MemoryPressure::kHigh;
    return MemoryPressure::kNone;
  }

 private:
  // Every write after open goes through here. After a write fails (disk
  // full, read-only or failing disk) RocksDB refuses all writes until
  // DB::Resume; its own recovery is off (ManualRecovery). The next write
  // resumes first, but only once the disk looks healthy again: resuming on
  // a disk still full fails its flush and trips an assertion in RocksDB's
  // file writer. So writes succeed again without a restart once space is
  // freed (or the disk is writable again), and fail with a clear error
  // until then. A failed write was never acked, so nothing acked is at
  // stake.
  absl::Status Write(const rocksdb::WriteOptions& options,
                     rocksdb::WriteBatch* batch, absl::string_view what) {
    if (write_failed_.load(std::memory_order_acquire)) {
      if (auto s = CheckDisk(options_.min_free_disk_bytes); !s.ok()) return s;
      // Resume flushes; the commit path waits for it.
      const BackgroundWritePacer::Unpaced unpaced(&pacer_);
      if (auto s = db_->Resume(); !s.ok()) {
        return FromRocks(s, absl::StrCat(what, " (resuming after a failed write)"));
      }
      write_failed_.store(false, std::memory_order_release);
      fprintf(stderr, "stepdb: storage writable again after a failed write\n");
    }
    rocksdb::Status s = db_->Write(options, batch);
    if (!s.ok()) write_failed_.store(true, std::memory_order_release);
    return FromRocks(s, what);
  }

  // ResourceExhausted if the data directory's file system has fewer than
  // `reserve` bytes free (or none at all), Unavailable if it is read-only.
  absl::Status CheckDisk(uint64_t reserve) const {
    struct statvfs fs;
    if (statvfs(options_.data_dir.c_str(), &fs) != 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot stat the data directory ", options_.data_dir, ": ",
          strerror(errno)));
    }
    if (fs.f_flag & ST_RDONLY) {
      return absl::UnavailableError(absl::StrCat(
          "the data directory ", options_.data_dir,
          " is on a read-only file system; writes resume once it is writable"));
    }
    const uint64_t free_bytes = uint64_t{fs.f_bavail} * fs.f_frsize;
    if (free_bytes == 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "disk full: no space left on the file system of ", options_.data_dir,
          "; writes resume once space is freed"));
    }
    if (free_bytes < reserve) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "disk almost full: ", free_bytes >> 20,
          " MiB free on the file system of ", options_.data_dir,
          ", writes need ", reserve >> 20,
          " MiB (--min_free_disk_mb); they resume once space is freed"));
    }
    return absl::OkStatus();
  }

 private:
  // Constant after construction.
  const EngineOptions options_;
  std::shared_ptr<rocksdb::Statistics> statistics_;
  std::shared_ptr<rocksdb::WriteBufferManager> write_buffers_;
  std::shared_ptr<rocksdb::Cache> block_cache_;
  std::shared_ptr<rocksdb::Cache> rollup_cache_;
  BackgroundWritePacer pacer_{BackgroundWritePacer::Options{}};
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> families_;
  rocksdb::ColumnFamilyHandle* index_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* head_log_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* chunks_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* rollups_cf_ = nullptr;
  std::thread committer_;
  LatencyHistogram group_write_seconds_;
  std::thread sealer_;
  std::unique_ptr<PeriodicThread> pacer_thread_;  // pacer_.Update
  // The commit thread's own; it holds commit_mu_ while it commits.
  CommitScratch commit_scratch_ ABSL_GUARDED_BY(commit_mu_);
  TaskPool callbacks_{1, "stepdb-acks"};  // append callbacks, in commit order

  SeriesIndex index_;

  // The head log: records still needed by some unsealed head.
  struct LogRecord {
    uint32_t live = 0;  // entries whose series has not sealed them yet
    absl::Time created;
    std::vector<SeriesId> series;  // series of the entries
  };
  // Sequence number of the next head-log record; committer thread only
  // (and Recover, before it starts).
  uint64_t next_log_seq_ = 1;
  absl::Mutex log_mu_;
  std::map<uint64_t, LogRecord> log_ ABSL_GUARDED_BY(log_mu_);

  // Held by the committer around each group and by a deletion, which thus
  // sees no commit in flight and lets none start. Lock order: commit_mu_,
  // seal_mu_, states_mu_, a series' mu, log_mu_.
  absl::Mutex commit_mu_;
  // Serializes seals (sealer thread, writers' assists, Compact), expiry
  // and deletions.
  absl::Mutex seal_mu_;
  // Recent chunks that may lead a sibling's (shared time columns), and the
  // scratch FindLeader decodes them into. 64k entries: ~6 MB.
  LeaderCache leaders_ ABSL_GUARDED_BY(seal_mu_){65536};
  // 8 MB: a window of every group of 512 ranks' 1024-point chunks; a
  // sibling seals within moments of its leader.
  RecentLeaderColumns leader_columns_ ABSL_GUARDED_BY(seal_mu_){8 << 20};
  PointColumns leader_points_ ABSL_GUARDED_BY(seal_mu_);
  mutable absl::Mutex seal_queue_mu_;
  // Each state is at most once in each queue (SeriesState::queued).
  std::deque<SeriesState*> seal_queue_ ABSL_GUARDED_BY(seal_queue_mu_);
  // When seal_queue_ last became non-empty (see AssistSeals).
  absl::Time seal_backlog_since_ ABSL_GUARDED_BY(seal_queue_mu_);
  std::atomic<uint64_t> seal_assists_{0};  // seals run by writers
  // Expiries and deletions running (or waiting for seal_mu_): writers do
  // not assist meanwhile.
  std::atomic<int> maintenance_{0};
  class MaintenanceScope {
   public:
    explicit MaintenanceScope(Impl* impl) : impl_(impl) {
      impl_->maintenance_.fetch_add(1, std::memory_order_acq_rel);
    }
    ~MaintenanceScope() {
      impl_->maintenance_.fetch_sub(1, std::memory_order_acq_rel);
    }
    MaintenanceScope(const MaintenanceScope&) = delete;
    MaintenanceScope& operator=(const MaintenanceScope&) = delete;

   private:
    Impl* const impl_;
  };
  bool sealer_stopping_ ABSL_GUARDED_BY(seal_queue_mu_) = false;
  // Heads whose small trailing fragments are to be merged (MergeHeads).
  std::deque<SeriesState*> merge_queue_ ABSL_GUARDED_BY(seal_queue_mu_);

  mutable absl::Mutex states_mu_;
  // Indexed by SeriesId - 1; entries are never removed, so pointers to
  // them stay valid for the engine's lifetime.
  std::vector<std::unique_ptr<SeriesState>> states_ ABSL_GUARDED_BY(states_mu_);
  // States of deleted series, moved out of states_ (which then holds
  // nullptr): a reader or a queued seal may still hold the pointer. Empty
  // heads; freed with the engine.
  std::vector<std::unique_ptr<SeriesState>> deleted_states_
      ABSL_GUARDED_BY(states_mu_);

  // Key ranges deleted since the last ReclaimDeleted.
  struct ReclaimRange {
    rocksdb::ColumnFamilyHandle* family;
    std::string begin, end;
  };
  absl::Mutex reclaim_mu_;
  std::vector<ReclaimRange> reclaim_ ABSL_GUARDED_BY(reclaim_mu_);

  absl::Mutex queue_mu_;
  std::deque<PendingAppend> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;

  mutable absl::Mutex counters_mu_;
  Counters counters_ ABSL_GUARDED_BY(counters_mu_);

  absl::Mutex observers_mu_;
  std::vector<CommitObserver*> observers_ ABSL_GUARDED_BY(observers_mu_);
};

bool SeriesFilter::Matches(const SeriesKey& key) const {
  if (key.project != project) return false;
  if (run && key.run != *run) return false;
  if (metric && key.metric != *metric) return false;
  for (const auto& [k, v] : labels) {
    auto it = std::find_if(key.labels.begin(), key.labels.end(),
                           [&](const auto& l) { return l.first == k; });
    if (it == key.labels.end() || it->second != v) return false;
  }
  return std::all_of(matchers.begin(), matchers.end(),
                     [&](const LabelMatcher& m) { return m.Matches(key.labels); });
}

void AppendBatch::Add(SeriesId id, const PointColumns& points) {
  StartSeries(id);
  for (size_t i = 0; i < points.size(); ++i) {
    AddPoint(points.steps[i], points.times_ms[i], points.values[i]);
  }
}

uint64_t AppendBatch::MemoryBytes() const {
  return points_.steps.capacity() * sizeof(uint64_t) +
         points_.times_ms.capacity() * sizeof(int64_t) +
         points_.values.capacity() * sizeof(double) + fragments_.capacity() +
         series_.capacity() * sizeof(Series);
}

void AppendBatch::Prepare() {
  fragments_.clear();
  for (Series& s : series_) {
    s.fragment_begin = static_cast<uint32_t>(fragments_.size());
    s.fragment_size = 0;
    const PointSpan p = points(s);
    if (p.empty() || p.size() > kMaxFragmentPoints) continue;
    bool increasing = true;
    for (size_t i = 1; i < p.size() && increasing; ++i) {
      increasing = p.steps[i] > p.steps[i - 1];
    }
    if (!increasing) continue;  // the commit thread sorts it out
    EncodeFragment(p.steps, p.times_ms, p.values, &fragments_);
    s.fragment_size = static_cast<uint32_t>(fragments_.size() - s.fragment_begin);
  }
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(EngineOptions options) {
  if (options.chunk_points == 0 || options.chunk_points > kMaxChunkPoints) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_points must be in [1, ", kMaxChunkPoints, "]"));
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  if (auto s = impl->Open(); !s.ok()) return s;
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

absl::StatusOr<SeriesId> Engine::ResolveSeries(SeriesKey key) {
  return impl_->ResolveSeries(std::move(key));
}
std::optional<SeriesId> Engine::FindSeries(SeriesKey key) const {
  return impl_->FindSeries(std::move(key));
}
std::optional<SeriesKey> Engine::KeyOf(SeriesId id) const {
  return impl_->KeyOf(id);
}

void Engine::AppendAsync(AppendBatch batch, AppendCallback done) {
  impl_->AppendAsync(std::move(batch), std::move(done));
}

absl::StatusOr<std::vector<SeriesAppendResult>> Engine::Append(
    AppendBatch batch) {
  absl::Notification done;
  absl::StatusOr<std::vector<SeriesAppendResult>> out;
  AppendAsync(std::move(batch),
              [&](absl::Status s, std::vector<SeriesAppendResult> results) {
                if (s.ok()) out = std::move(results);
                else out = s;
                done.Notify();
              });
  done.WaitForNotification();
  return out;
}

absl::Status Engine::ScanRollups(SeriesId series, const ReadRange& range,
                                 RollupVisitor& visitor) const {
  return impl_->ScanRollups(series, range, visitor);
}

absl::Status Engine::Scan(SeriesId series, const ReadRange& range,
                          ChunkVisitor& visitor) const {
  return impl_->Scan(series, range, visitor);
}

absl::StatusOr<ReadResult> Engine::Read(SeriesId series,
                                        const ReadRange& range, uint64_t limit,
                                        ReadSink sink) const {
  return impl_->Read(series, range, limit, sink);
}
std::vector<SeriesInfo> Engine::ListSeries(const SeriesFilter& filter,
                                           size_t limit,
                                           bool* truncated) const {
  return impl_->ListSeries(filter, limit, truncated);
}
EngineStats Engine::Stats() const { return impl_->Stats(); }
MemoryPressure Engine::Pressure() const { return impl_->Pressure(); }
uint64_t Engine::MemoryUsage() const { return impl_->MemoryUsage(); }
uint64_t Engine::QueuedAppendBytes() const {
  return impl_->QueuedAppendBytes();
}
absl::StatusOr<CompactResult> Engine::Compact() { return impl_->Compact(); }
absl::StatusOr<ExpireResult> Engine::ExpireChunks(std::string_view project,
                                                  int64_t raw_cutoff_ms,
                                                  int64_t rollup_cutoff_ms) {
  return impl_->ExpireChunks(project, raw_cutoff_ms, rollup_cutoff_ms);
}

absl::StatusOr<ExpireResult> Engine::ExpireChunks(std::string_view project,
                                                  int64_t cutoff_ms) {
  return impl_->ExpireChunks(project, cutoff_ms, cutoff_ms);
}

absl::StatusOr<DeleteResult> Engine::DeleteRun(std::string_view project,
                                               std::string_view run) {
  return impl_->Delete(project, run);
}
absl::StatusOr<DeleteResult> Engine::DeleteProject(std::string_view project) {
  return impl_->Delete(project, std::nullopt);
}
absl::Status Engine::ReclaimDeleted() { return impl_->ReclaimDeleted(); }
absl::Status Engine::WriteMeta(std::span<const MetaWrite> writes) {
  return impl_->WriteMeta(writes);
}
absl::StatusOr<std::optional<std::string>> Engine::GetMeta(
    std::string_view key) const {
  return impl_->GetMeta(key);
}
absl::Status Engine::ScanMeta(
    std::string_view prefix,
    absl::FunctionRef<bool(std::string_view, std::string_view)> visit) const {
  return impl_->ScanMeta(prefix, visit);
}
void Engine::AddCommitObserver(CommitObserver* observer) {
  impl_->AddCommitObserver(observer);
}
void Engine::RemoveCommitObserver(CommitObserver* observer) {
  impl_->RemoveCommitObserver(observer);
}

}  // namespace stepdb::storage
