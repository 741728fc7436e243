// The gRPC ingest service (callback API): the streaming Write and the unary
// WriteOne. Acks are sent only after the engine reports the points durable.
#ifndef STEPDB_INGEST_INGEST_SERVICE_H_
#define STEPDB_INGEST_INGEST_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "auth/authorizer.h"
#include "ingest/read_gate.h"
#include "ingest/request_decoder.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"
#include "storage/periodic_thread.h"
#include "storage/run_store.h"

namespace stepdb::ingest {

struct IngestOptions {
  RequestLimits limits;
  // Requests of one stream read but not yet committed, plus acks not yet
  // taken by the client; past it the stream stops reading, and gRPC flow
  // control slows the client down.
  size_t max_in_flight_per_stream = 32;
  // Bytes of requests read and not yet committed, across all streams, as
  // the engine counts its queued appends (decoded; see ReadGate): past it
  // streams wait to read their next request. 0: no bound.
  uint64_t max_queued_bytes = 0;
  // Checks every request's projects for write scope; nullptr: auth off.
  // Must outlive the service.
  auth::Authorizer* authorizer = nullptr;
  // A Write stream that has sent no request for this long, with nothing of
  // it in flight, is ended with UNAVAILABLE ("idle"), so that hung or
  // forgotten writers do not hold server resources forever; clients
  // reconnect when they next have points. Zero: never.
  absl::Duration stream_idle_timeout = absl::ZeroDuration();
};

// Monotonic counters for /metrics.
struct IngestCounters {
  uint64_t streams_opened = 0;
  uint64_t streams_active = 0;
  uint64_t requests = 0;
  uint64_t malformed_requests = 0;
  uint64_t write_errors = 0;
  uint64_t refused_requests = 0;  // over the memory budget
  uint64_t idle_streams_closed = 0;
  // Reads that waited for max_queued_bytes.
  uint64_t read_waits = 0;
  // From a write request's arrival (read off its stream, or a unary call's
  // start) to its ack handed to gRPC for sending, successful writes only.
  storage::LatencyHistogram::Snapshot ack_seconds;
};

class IngestService final : public v1::Ingest::CallbackService {
 public:
  // `engine` and `runs` must outlive the service. Without `runs`, the run
  // metadata RPCs answer UNIMPLEMENTED.
  IngestService(storage::Engine* engine, IngestOptions options,
                storage::RunStore* runs = nullptr);
  // Stops the idle-stream and read-gate timers. The gRPC server must be
  // shut down first.
  ~IngestService() override = default;
  IngestService(const IngestService&) = delete;
  IngestService& operator=(const IngestService&) = delete;

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

  // Ends the Write streams idle for longer than stream_idle_timeout (on
  // reaper_, every quarter of it).
  void ReapIdleStreams();

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
  std::atomic<uint64_t> idle_streams_closed_{0};
  storage::LatencyHistogram ack_seconds_;
  // Lock order: a stream's own mutex, then the gate's.
  ReadGate read_gate_;
  // The decoded size of the last request read on any stream: what a
  // stream's first read is expected to bring.
  std::atomic<uint64_t> last_request_bytes_{0};

  // Open Write streams, for the idle timer. A stream removes itself in
  // OnDone; lock order: streams_mu_, then a stream's own mutex.
  absl::Mutex streams_mu_;
  absl::flat_hash_set<WriteReactor*> streams_ ABSL_GUARDED_BY(streams_mu_);
  // Only with a stream_idle_timeout. The timers are last: stopped before
  // the rest goes.
  std::optional<storage::PeriodicThread> reaper_;
  // Only with max_queued_bytes: ends the read gate's reservations older
  // than kReservationAge (a read reserves its room before its client has
  // sent it, and a client may be quiet for long) and wakes waiting reads
  // into the room they leave. It is also the net under the commit
  // callbacks' wake-ups. A second: on two busy cores a read's request can
  // take a few hundred ms from its reservation to its decode, and at
  // 200 ms the queue overshot the bound threefold (a million series).
  static constexpr absl::Duration kReservationAge = absl::Seconds(1);
  std::optional<storage::PeriodicThread> gate_timer_;
};

}  // namespace stepdb::ingest

#endif  // STEPDB_INGEST_INGEST_SERVICE_H_
