// Cross-series aggregate reads (RPC Query.Aggregate): the series of one
// metric that match label matchers, grouped by label values (or run), cut
// on one bucket grid (storage/downsample.h) and reduced per bucket, first
// per series, then across the series of a group. The semantics of each
// function are documented with AggregateRequest in stepdb.proto.
//
// Each series is read with storage::StreamBuckets, so the rollup pieces of
// sealed chunks (1/8 of a chunk window) lying in one bucket are merged from
// their aggregates and the chunks never read; the head (a live run) is
// included.
//
// Thread-safety: Aggregate is thread-safe (Engine is).
#ifndef STEPDB_QUERY_AGGREGATE_H_
#define STEPDB_QUERY_AGGREGATE_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "stepdb/v1/stepdb.pb.h"
#include "storage/downsample.h"
#include "storage/engine.h"
#include "storage/task_pool.h"

namespace stepdb::query {

// Bounds on the work and memory of one request.
struct AggregateLimits {
  // Matching series.
  uint64_t max_series = 10'000;
  // Points in range, estimated before reading from each series' statistics
  // (by step: its points scaled by the share of its step span in range; by
  // time: all its points, and if that is too many, the points of the chunks
  // overlapping the range, from their headers).
  uint64_t max_points = 1'000'000'000;
  // Groups x grid buckets (each group is reduced on a dense grid), and, for
  // percentiles, the values one group holds (series x non-empty buckets).
  uint64_t max_cells = 10'000'000;
  // Threads that read the series of one aggregate (each series with
  // storage::StreamBuckets) at once, the calling thread included; the
  // answer is the same for any count. Reading is CPU-bound once the rollup
  // records are in the block cache, so more threads than cores gain
  // nothing. A read of fewer than 4 series per thread uses fewer threads
  // (a handoff costs more than reading a few series).
  uint32_t read_threads = 2;
  // Where the helpers (read_threads - 1 at most) come from: a pool shared
  // by the requests of a server, which bounds the helper threads of all
  // concurrent aggregates together (QueryService owns one). A request
  // never waits for a helper to start: the calling thread reads whatever
  // no helper has claimed. nullptr: the aggregate starts its own helper
  // threads for its duration. Not owned; must outlive the call.
  storage::TaskPool* read_pool = nullptr;
  // Polled before each series is folded; once it returns true the
  // aggregate stops with CancelledError (a client that went away). Empty:
  // never cancelled.
  std::function<bool()> cancelled;
};

// Answers `request` into *response (cleared first).
//
// Returns InvalidArgumentError (naming the field) for an empty project or
// metric, buckets outside 1..storage::kMaxBuckets, an unknown fn, an empty
// group_by key, an invalid matcher (bad regex), or a range whose from is
// after its to; ResourceExhaustedError when a limit is exceeded (the message
// names the limit); CancelledError once limits.cancelled returns true;
// DataLossError for a corrupt chunk. No matching series
// is no error: the answer has no groups.
//
// The open ends of the range are resolved once, from the matching series'
// points at the start of the read (by step from the series' statistics; by
// time from their chunk headers, one extra pass); points appended after
// that moment past the resolved end are not included.
//
// `stats`, if not null, receives how the series' chunks were read, summed
// over the series (for tests and benchmarks).
absl::Status Aggregate(const storage::Engine& engine,
                       const v1::AggregateRequest& request,
                       const AggregateLimits& limits,
                       v1::AggregateResponse* response,
                       storage::BucketReadStats* stats = nullptr);

}  // namespace stepdb::query

#endif  // STEPDB_QUERY_AGGREGATE_H_
