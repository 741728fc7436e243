// Paces RocksDB's memtable flushes and compactions to the rate they are
// needed at, and its file deletions with them, so that they do not take
// the cores and the disk from the commit path in bursts.
//
// Why: at a steady ingest rate the head log's memtable (64 MiB) is flushed
// every few seconds. Unpaced, that flush is ~0.1 CPU-s and ~50 MB of disk
// writes within ~0.2 s; on a machine whose cores are mostly busy the commit
// path queues behind it and every ack of those 0.2 s waits (a latency spike
// of 50-100 ms at 2.5 M points/s on two cores). Spread over a second or two
// the same work costs the acks next to nothing. A fixed limit cannot do:
// at the maximum ingest rate flushes and compactions need ~100 MB/s, and a
// limit below that stalls writers. So the limit follows the need: twice the
// recent average of what flushes and compactions wrote, doubled at once
// whenever they use all of it.
//
// Deletions: when the write-ahead logs pass their size limit, RocksDB
// deletes ~200 MB of log files at once, and on ext4 the next fdatasync of
// the live log waits for the journal to free their blocks (a 50-90 ms
// spike). Files to delete are moved to a trash and truncated 4 MiB at a
// time in the background, at twice the write limit.
//
// Thread-safety: every method is thread-safe.
#ifndef STEPDB_STORAGE_BACKGROUND_WRITES_H_
#define STEPDB_STORAGE_BACKGROUND_WRITES_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rocksdb/rate_limiter.h"
#include "rocksdb/sst_file_manager.h"

namespace stepdb::storage {

class BackgroundWritePacer {
 public:
  struct Options {
    // The limit never goes below this, so that a burst after a quiet spell
    // (a memtable filled by a load that just began) still flushes in a few
    // seconds.
    uint64_t min_bytes_per_sec = uint64_t{32} << 20;
    // Nor above this (no limit, in effect).
    uint64_t max_bytes_per_sec = uint64_t{4} << 30;
    // Time constant of the average of the background write rate.
    absl::Duration averaging = absl::Seconds(5);
    // Limit = headroom x the average.
    double headroom = 2.0;
  };

  explicit BackgroundWritePacer(Options options);
  BackgroundWritePacer(const BackgroundWritePacer&) = delete;
  BackgroundWritePacer& operator=(const BackgroundWritePacer&) = delete;

  // For DBOptions::rate_limiter (writes only: flushes and compactions; the
  // write-ahead log is not limited). Starts at max_bytes_per_sec, so that
  // a recovery at open is not paced.
  const std::shared_ptr<rocksdb::RateLimiter>& limiter() const {
    return limiter_;
  }
  // For DBOptions::sst_file_manager: deletes files (tables and logs) at
  // the pace of the limit.
  const std::shared_ptr<rocksdb::SstFileManager>& file_manager() const {
    return file_manager_;
  }

  // Sets the limit from the bytes flushes and compactions wrote since the
  // last call, as the limiter counted them (the first call only starts the
  // clock and paces at the floor; a call whose clock or count went back,
  // e.g. a wall-clock step, only restarts it). Call it every few hundred
  // milliseconds.
  void Update(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // The same with the count given: `bytes_written` is the total they wrote
  // so far (what limiter() let through).
  void Update(absl::Time now, uint64_t bytes_written) ABSL_LOCKS_EXCLUDED(mu_);

  // Lifts the limits (to max_bytes_per_sec) while at least one Unpaced is
  // alive: for work that should finish as fast as the disk allows, such as
  // an explicit compaction, or the jobs still running at shutdown.
  class Unpaced {
   public:
    explicit Unpaced(BackgroundWritePacer* pacer);
    ~Unpaced();
    Unpaced(const Unpaced&) = delete;
    Unpaced& operator=(const Unpaced&) = delete;

   private:
    BackgroundWritePacer* const pacer_;
  };

  // Waits until the files RocksDB deleted in `dir` are gone from the disk
  // too (no `*.trash` file is left), for at most `timeout`; then removes
  // what is left itself (a trash file whose background deletion failed is
  // never retried). Returns whether the trash is empty. Deletions that
  // must leave the disk now (erasing a run) hold an Unpaced meanwhile.
  bool WaitForEmptyTrash(const std::string& dir, absl::Duration timeout);

  // The current limit of writes, and of deletions.
  uint64_t bytes_per_sec() const;
  uint64_t delete_bytes_per_sec() const;

 private:
  void SetLimit(uint64_t bytes_per_sec);

  // Constant after construction.
  const Options options_;
  const std::shared_ptr<rocksdb::RateLimiter> limiter_;
  const std::shared_ptr<rocksdb::SstFileManager> file_manager_;

  absl::Mutex mu_;
  absl::Time last_update_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t last_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  double average_ ABSL_GUARDED_BY(mu_) = 0;  // bytes per second
  int unpaced_ ABSL_GUARDED_BY(mu_) = 0;     // Unpaced alive
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_BACKGROUND_WRITES_H_
