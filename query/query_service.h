// The gRPC query service (callback API): raw range reads, streamed in pages
// under gRPC flow control, downsampled (chart) reads, cross-series
// aggregates, and series listing.
#ifndef STEPDB_QUERY_QUERY_SERVICE_H_
#define STEPDB_QUERY_QUERY_SERVICE_H_

#include <cstdint>
#include <memory>

#include "auth/authorizer.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "query/tail.h"
#include "storage/downsample.h"
#include "storage/engine.h"
#include "storage/run_store.h"
#include "storage/task_pool.h"

namespace stepdb::query {

struct QueryOptions {
  // Points per ReadRange response message (keeps messages well under the
  // clients' default 4 MiB receive limit).
  uint64_t page_points = 32768;
  // Upper bound on the points of one ReadRange; also the limit when the
  // request sets none. Past it the answer is marked truncated.
  uint64_t max_read_points = 100'000'000;
  uint32_t max_list_series = 100'000;
  uint32_t max_list_runs = 10'000;
  // Bounds of one Aggregate (see query/aggregate.h, AggregateLimits).
  uint64_t max_aggregate_series = 10'000;
  uint64_t max_aggregate_points = 1'000'000'000;
  uint64_t max_aggregate_cells = 10'000'000;
  // Threads one Aggregate reads its series with, the gRPC thread included
  // (AggregateLimits::read_threads). The service keeps one pool of
  // aggregate_read_threads - 1 helper threads for all aggregates together,
  // so concurrent aggregates share the cores instead of oversubscribing
  // them. 0 (the default): the machine's hardware threads. On the quiet
  // 2-core benchmark machine two threads halve an aggregate's latency
  // (75 -> 36 ms); with the other core busy they cost ~60 % more CPU and
  // gain nothing (docs/BENCHMARKS.md, "Cross-series aggregate"): 1 suits
  // a server whose cores are always busy with ingest.
  uint32_t aggregate_read_threads = 0;
  // Checks read scope on the project of every call; nullptr: auth off.
  // Must outlive the service.
  auth::Authorizer* authorizer = nullptr;
};

class QueryService final : public v1::Query::CallbackService {
 public:
  // `engine`, `runs` and `tail` must outlive the service. Without `runs`
  // there is no run metadata: ListRuns/GetRun answer UNIMPLEMENTED and reads
  // ignore forks. Without `tail`, Tail answers UNIMPLEMENTED.
  QueryService(const storage::Engine* engine, QueryOptions options,
               const storage::RunStore* runs = nullptr, TailHub* tail = nullptr);

  grpc::ServerWriteReactor<v1::ReadRangeResponse>* ReadRange(
      grpc::CallbackServerContext* context,
      const v1::ReadRangeRequest* request) override;
  grpc::ServerUnaryReactor* ListSeries(grpc::CallbackServerContext* context,
                                       const v1::ListSeriesRequest* request,
                                       v1::ListSeriesResponse* response) override;
  // Runs the read on the calling (gRPC callback) thread: it is bounded by
  // the bucket limit and by the range's chunks, like ListSeries.
  grpc::ServerUnaryReactor* ReadDownsampled(
      grpc::CallbackServerContext* context,
      const v1::ReadDownsampledRequest* request,
      v1::ReadDownsampledResponse* response) override;
  grpc::ServerUnaryReactor* ListRuns(grpc::CallbackServerContext* context,
                                     const v1::ListRunsRequest* request,
                                     v1::ListRunsResponse* response) override;
  grpc::ServerUnaryReactor* GetRun(grpc::CallbackServerContext* context,
                                   const v1::GetRunRequest* request,
                                   v1::GetRunResponse* response) override;
  grpc::ServerWriteReactor<v1::TailResponse>* Tail(
      grpc::CallbackServerContext* context,
      const v1::TailRequest* request) override;
  // Runs on the calling thread too, bounded by the aggregate limits.
  grpc::ServerUnaryReactor* Aggregate(grpc::CallbackServerContext* context,
                                      const v1::AggregateRequest* request,
                                      v1::AggregateResponse* response) override;

 private:
  class ReadRangeReactor;

  // The stored series a read of `key` covers, with the steps each one
  // contributes: the series itself, or for a forked run its lineage
  // (storage::RunStore::Lineage); series the lineage lacks are skipped.
  std::vector<storage::SeriesSlice> ResolveLineage(
      const storage::SeriesKey& key) const;

  // Constant after construction.
  const storage::Engine* const engine_;
  const QueryOptions options_;
  const storage::RunStore* const runs_;
  TailHub* const tail_;
  const uint32_t aggregate_read_threads_;
  std::unique_ptr<storage::TaskPool> aggregate_pool_;  // shared by all aggregates
};

}  // namespace stepdb::query

#endif  // STEPDB_QUERY_QUERY_SERVICE_H_
