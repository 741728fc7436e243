// The gRPC ingest service (callback API): the streaming Write and the unary
// WriteOne. Acks are sent only after the engine reports the points durable.
#ifndef STEPDB_INGEST_INGEST_SERVICE_H_
#define STEPDB_INGEST_INGEST_SERVICE_H_

#include <atomic>
#include <cstdint>

#include "auth/authorizer.h"
#include "ingest/request_decoder.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"
#include "storage/run_store.h"

namespace stepdb::ingest {

struct IngestOptions {
  RequestLimits limits;
  // Requests of one stream read but not yet committed, plus acks not yet
  // taken by the client; past it the stream stops reading, and gRPC flow
  // control slows the client down.
  size_t max_in_flight_per_stream = 32;
  // Checks every request's projects for write scope; nullptr: auth off.
  // Must outlive the service.
  auth::Authorizer* authorizer = nullptr;
};

// Monotonic counters for /metrics.
struct IngestCounters {
  uint64_t streams_opened = 0;
  uint64_t streams_active = 0;
  uint64_t requests = 0;
  uint64_t malformed_requests = 0;
  uint64_t write_errors = 0;
  uint64_t refused_requests = 0;  // over the memory budget
};

class IngestService final : public v1::Ingest::CallbackService {
 public:
  // `engine` and `runs` must outlive the service. Without `runs`, the run
  // metadata RPCs answer UNIMPLEMENTED.
  IngestService(storage::Engine* engine, IngestOptions options,
                storage::RunStore* runs = nullptr);

  grpc::ServerBidiReactor<v1::WriteRequest, v1::WriteAck>* Write(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* WriteOne(grpc::CallbackServerContext* context,
                                     const v1::WriteRequest* request,
                                     v1::WriteResponse* response) override;
  grpc::ServerUnaryReactor* CreateRun(grpc::CallbackServerContext* context,
                                      const v1::CreateRunRequest* request,
                                      v1::CreateRunResponse* response) override;
  grpc::ServerUnaryReactor* UpdateRun(grpc::CallbackServerContext* context,
                                      const v1::UpdateRunRequest* request,
                                      v1::Run* response) override;

  IngestCounters counters() const;

 private:
  // ResourceExhaustedError (and counts it) when the engine is over its
  // memory budget; OK otherwise.
  absl::Status CheckMemory();

  class WriteReactor;
  friend class WriteReactor;

  // Constant after construction.
  storage::Engine* const engine_;
  const IngestOptions options_;
  storage::RunStore* const runs_;

  std::atomic<uint64_t> streams_opened_{0};
  std::atomic<uint64_t> streams_active_{0};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> malformed_requests_{0};
  std::atomic<uint64_t> write_errors_{0};
  std::atomic<uint64_t> refused_requests_{0};
};

}  // namespace stepdb::ingest

#endif  // STEPDB_INGEST_INGEST_SERVICE_H_
