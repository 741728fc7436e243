// The gRPC query service (callback API): raw range reads, streamed in pages
// under gRPC flow control, downsampled (chart) reads, and series listing.
#ifndef STEPDB_QUERY_QUERY_SERVICE_H_
#define STEPDB_QUERY_QUERY_SERVICE_H_

#include <cstdint>

#include "auth/authorizer.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"

namespace stepdb::query {

struct QueryOptions {
  // Points per ReadRange response message (keeps messages well under the
  // clients' default 4 MiB receive limit).
  uint64_t page_points = 32768;
  // Upper bound on the points of one ReadRange; also the limit when the
  // request sets none. Past it the answer is marked truncated.
  uint64_t max_read_points = 100'000'000;
  uint32_t max_list_series = 100'000;
  // Checks read scope on the project of every call; nullptr: auth off.
  // Must outlive the service.
  auth::Authorizer* authorizer = nullptr;
};

class QueryService final : public v1::Query::CallbackService {
 public:
  // `engine` must outlive the service.
  QueryService(const storage::Engine* engine, QueryOptions options);

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

 private:
  class ReadRangeReactor;

  // Constant after construction.
  const storage::Engine* const engine_;
  const QueryOptions options_;
};

}  // namespace stepdb::query

#endif  // STEPDB_QUERY_QUERY_SERVICE_H_
