#include "server/metrics.h"

#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace stepdb::server {
namespace {

// Resident set size from /proc/self/statm (second field, in pages); 0 where
// there is no /proc.
uint64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0, resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

void Metric(std::string* out, const char* name, const char* type,
            const char* help, uint64_t value) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type,
                  "\n", name, " ", value, "\n");
}

void Histogram(std::string* out, const char* name, const char* help,
               const storage::LatencyHistogram::Snapshot& h) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name,
                  " histogram\n");
  const auto& bounds = storage::LatencyHistogram::kBounds;
  for (size_t i = 0; i < bounds.size(); ++i) {
    absl::StrAppend(out, name, "_bucket{le=\"", bounds[i], "\"} ",
                    h.cumulative[i], "\n");
  }
  // Full precision: StrCat's six digits would freeze a long-running
  // server's sum, and rate(_sum) with it.
  absl::StrAppend(out, name, "_bucket{le=\"+Inf\"} ", h.count(), "\n", name,
                  "_sum ", absl::StrFormat("%.17g", h.sum_seconds), "\n",
                  name, "_count ", h.count(), "\n");
}

}  // namespace

std::string FormatPrometheusMetrics(
    const storage::EngineStats& e, const ingest::IngestCounters& i,
    const std::optional<AllocatorStats>& allocator) {
  std::string out;
  Metric(&out, "stepdb_points_accepted_total", "counter",
         "Points stored since start.", e.points_accepted);
  Metric(&out, "stepdb_points_duplicate_total", "counter",
         "Points dropped as repeats of a stored (step, value).",
         e.points_duplicate);
  Metric(&out, "stepdb_points_rejected_total", "counter",
         "Points rejected because their step went backwards.",
         e.points_rejected);
  Metric(&out, "stepdb_write_groups_total", "counter",
         "Group commits (one WAL write and fsync each).", e.write_groups);
  Metric(&out, "stepdb_appends_total", "counter",
         "Write requests committed through the engine.", e.appends);
  Metric(&out, "stepdb_ingest_requests_total", "counter",
         "Write requests received.", i.requests);
  Metric(&out, "stepdb_ingest_malformed_requests_total", "counter",
         "Write requests rejected as malformed.", i.malformed_requests);
  Metric(&out, "stepdb_ingest_write_errors_total", "counter",
         "Write requests that failed in storage.", i.write_errors);
  Metric(&out, "stepdb_ingest_refused_requests_total", "counter",
         "Write requests refused over the memory budget.", i.refused_requests);
  Metric(&out, "stepdb_ingest_idle_streams_closed_total", "counter",
         "Write streams ended after --stream_idle_timeout without a request.",
         i.idle_streams_closed);
  Metric(&out, "stepdb_ingest_read_waits_total", "counter",
         "Reads of write requests that waited for the queue of decoded "
         "requests to shrink.",
         i.read_waits);
  Metric(&out, "stepdb_ingest_streams_opened_total", "counter",
         "Write streams opened.", i.streams_opened);
  Metric(&out, "stepdb_ingest_streams_active", "gauge",
         "Write streams open now.", i.streams_active);
  Metric(&out, "stepdb_series", "gauge", "Series known.", e.series);
  Metric(&out, "stepdb_points", "gauge", "Points stored.", e.points);
  Metric(&out, "stepdb_head_points", "gauge",
         "Points in open head chunks.", e.head_points);
  Metric(&out, "stepdb_head_bytes", "gauge",
         "Bytes the open heads hold (compressed).", e.head_bytes);
  Metric(&out, "stepdb_sealed_chunks", "gauge", "Sealed chunks.",
         e.sealed_chunks);
  Metric(&out, "stepdb_memory_used_bytes", "gauge",
         "Bytes counted against --memory_limit_mb (heads, queued writes).",
         e.memory_used);
  Metric(&out, "stepdb_rocksdb_memtable_bytes", "gauge",
         "Bytes of RocksDB memtables, mutable and immutable (outside the "
         "budget).",
         e.rocksdb_memtable_bytes);
  Metric(&out, "stepdb_rocksdb_block_cache_bytes", "gauge",
         "Bytes charged to RocksDB's block caches (outside the budget).",
         e.rocksdb_block_cache_bytes);
  Metric(&out, "process_resident_memory_bytes", "gauge",
         "Resident memory size in bytes.", ResidentBytes());
  if (allocator) {
    Metric(&out, "stepdb_allocator_allocated_bytes", "gauge",
           "Bytes the allocator has handed out and not had back.",
           allocator->allocated);
    Metric(&out, "stepdb_allocator_resident_bytes", "gauge",
           "Bytes the allocator holds in physical memory.",
           allocator->resident);
    Metric(&out, "stepdb_allocator_dirty_bytes", "gauge",
           "Freed bytes the allocator keeps for reuse before returning "
           "them to the kernel.",
           allocator->dirty);
  }
  Metric(&out, "stepdb_seals_queued", "gauge",
         "Heads waiting to be sealed.", e.seals_queued);
  Metric(&out, "stepdb_seal_assists_total", "counter",
         "Seals run by writers because sealing fell behind.", e.seal_assists);
  Metric(&out, "stepdb_disk_bytes", "gauge",
         "Bytes of the data directory.", e.bytes_on_disk);
  Metric(&out, "stepdb_wal_written_bytes_total", "counter",
         "Bytes written to the write-ahead log.", e.wal_bytes);
  Metric(&out, "stepdb_flush_written_bytes_total", "counter",
         "Bytes written by memtable flushes.", e.flush_bytes);
  Metric(&out, "stepdb_compaction_written_bytes_total", "counter",
         "Bytes written by compactions.", e.compaction_bytes);
  Metric(&out, "stepdb_background_write_limit_bytes_per_second", "gauge",
         "What flushes and compactions may write per second now; it follows "
         "their need.",
         e.background_write_limit);
  Histogram(&out, "stepdb_ingest_ack_seconds",
            "Time from a write request's arrival to its ack.", i.ack_seconds);
  Histogram(&out, "stepdb_group_write_seconds",
            "Time of each group commit's WAL write (and fsync).",
            e.group_write_seconds);
  return out;
}

}  // namespace stepdb::server
