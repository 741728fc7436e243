#include "ingest/ingest_service.h"

#include <algorithm>
#include <deque>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "proto/grpc_status.h"
#include "proto/wire_convert.h"

namespace stepdb::ingest {
namespace {

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// Fills rejections and counts of a response or ack from engine results.
// `series` holds the series id of each result.
template <typename Reply>
void FillResults(const storage::Engine& engine,
                 const std::vector<storage::SeriesId>& series,
                 const std::vector<storage::SeriesAppendResult>& results,
                 Reply* reply) {
  uint64_t accepted = 0, duplicates = 0, rejected = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    accepted += r.accepted;
    duplicates += r.duplicates;
    rejected += r.rejected;
    if (r.rejected > 0) {
      v1::SeriesRejection* rej = reply->add_rejections();
      rej->set_index(static_cast<uint32_t>(i));
      // Names are built only for rejections, never on the hot path.
      const std::optional<storage::SeriesKey> key = engine.KeyOf(series[i]);
      rej->set_series(key ? storage::SeriesDisplayName(*key) : "unknown series");
      rej->set_code(static_cast<int32_t>(grpc::StatusCode::FAILED_PRECONDITION));
      rej->set_message(r.first_rejection);
      rej->set_points_rejected(r.rejected);
    }
  }
  reply->set_points_accepted(accepted);
  reply->set_points_duplicate(duplicates);
  reply->set_points_rejected(rejected);
}

// Checks that `principal` may write every project `request` names. Only
// keys are looked at: a bare ref was checked when its key registered it.
// `allowed` caches the projects already allowed (per stream; may be null).
absl::Status CheckProjects(auth::Authorizer* authorizer,
                           const auth::Principal& principal,
                           std::string_view peer, auth::Rpc rpc,
                           const v1::WriteRequest& request,
                           absl::flat_hash_set<std::string>* allowed) {
  if (authorizer == nullptr) return absl::OkStatus();
  absl::flat_hash_set<std::string> local;
  if (allowed == nullptr) allowed = &local;
  for (const v1::SeriesPoints& s : request.series()) {
    if (!s.has_key() || allowed->contains(s.key().project())) continue;
    if (absl::Status st = auth::Authorize(authorizer, principal, peer, rpc,
                                          s.key().project());
        !st.ok()) {
      return st;
    }
    allowed->insert(s.key().project());
  }
  return absl::OkStatus();
}

uint64_t PointCount(const v1::WriteRequest& request) {
  uint64_t n = 0;
  for (const v1::SeriesPoints& s : request.series()) n += s.values_size();
  return n;
}

// Answers a stream that may not start (no valid token) at once.
class RefusedStream
    : public grpc::ServerBidiReactor<v1::WriteRequest, v1::WriteAck> {
 public:
  explicit RefusedStream(const absl::Status& status) {
    Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

}  // namespace

// One streaming Write. Reads requests, hands each to the engine, and writes
// the acks in request order as the engine makes them durable. Finishes once
// the client is done and every read request has been answered; a client that
// vanishes is answered by nobody, but its durable points stay.
class IngestService::WriteReactor
    : public grpc::ServerBidiReactor<v1::WriteRequest, v1::WriteAck>,
      public ReadGate::Waiter {
 public:
  WriteReactor(IngestService* service, auth::Principal principal,
               std::string authorization, std::string peer)
      : service_(service),
        principal_(std::move(principal)),
        authorization_(std::move(authorization)),
        peer_(std::move(peer)) {
    service_->streams_opened_.fetch_add(1, std::memory_order_relaxed);
    service_->streams_active_.fetch_add(1, std::memory_order_relaxed);
    {
      absl::MutexLock lock(&service_->streams_mu_);
      service_->streams_.insert(this);
    }
    absl::MutexLock lock(&mu_);
    last_request_ = absl::Now();
    MaybeReadLocked();
  }

  // For the idle timer: if the client has sent nothing since `now -
  // timeout` and the stream only waits for its next request (nothing in
  // the engine, no ack unsent), claims the stream's Finish and returns true
  // with the status to finish with. The caller must then call Finish; until
  // it does, the stream cannot be destroyed (gRPC calls OnDone only after
  // Finish), and no other path finishes it (finished_ is set).
  bool ClaimIdleFinish(absl::Time now, absl::Duration timeout,
                       grpc::Status* status) {
    absl::MutexLock lock(&mu_);
    if (finished_ || !awaiting_request_ || in_flight_ > 0 || writing_ ||
        !acks_.empty() || now - last_request_ < timeout) {
      return false;
    }
    finished_ = true;
    *status = grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        absl::StrCat("write stream idle for ", absl::FormatDuration(timeout),
                     " with nothing sent; reconnect to write again"));
    return true;
  }

  void OnReadDone(bool ok) override {
    const absl::Time received = absl::Now();
    // (Within a gRPC reaction this reactor outlives every call below.)
    {
      absl::MutexLock lock(&mu_);
      awaiting_request_ = false;
      last_request_ = received;
      // Nothing more is processed once the stream is over.
      if (!ok || finished_) {
        reading_ = false;
        read_closed_ = true;
        ok = false;
        EndReadReservationLocked();
      }
    }
    if (!ok) {
      service_->read_gate_.Wake();
      FinishIfOver();
      return;
    }
    // reading_ stays true while request_ is in use, so that no engine
    // callback starts the next read into it.
    service_->requests_.fetch_add(1, std::memory_order_relaxed);
    if (absl::Status over = service_->CheckMemory(); !over.ok()) {
      // Past the memory budget: this request is not taken, and the stream
      // ends with RESOURCE_EXHAUSTED once what it has in flight is acked;
      // the client resends from its last durable seq after a backoff.
      {
        absl::MutexLock lock(&mu_);
        reading_ = false;
        refused_ = true;  // acks of what is in flight still go out
        if (finish_status_.ok()) finish_status_ = ToGrpcStatus(over);
        EndReadReservationLocked();
      }
      service_->read_gate_.Wake();
      FinishIfOver();
      return;
    }
    const uint64_t seq = request_.seq();
    absl::Status status;
    absl::StatusOr<DecodedRequest> decoded;
    {
      absl::MutexLock lock(&mu_);
      if (seq <= last_seq_ && any_seq_) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "seq: ", seq, " does not increase (last was ", last_seq_, ")"));
      } else {
        any_seq_ = true;
        last_seq_ = seq;
      }
      ++in_flight_;
    }
    // A denied request gets an error ack like a malformed one: nothing of
    // it is registered or stored, and the stream goes on.
    if (status.ok() && service_->options_.authorizer != nullptr) {
      // A token revoked while its stream is open stops working at once.
      status = auth::Reauthenticate(service_->options_.authorizer,
                                    authorization_, peer_,
                                    auth::Rpc::kIngestWrite);
    }
    if (status.ok()) {
      status = CheckProjects(service_->options_.authorizer, principal_, peer_,
                             auth::Rpc::kIngestWrite, request_,
                             &allowed_projects_);
    }
    if (status.ok()) {
      status = auth::ChargePoints(service_->options_.authorizer, principal_,
                                  PointCount(request_));
    }
    if (status.ok()) {
      decoded = DecodeWriteRequest(request_, *service_->engine_, &refs_,
                                   NowMs(), service_->options_.limits);
      if (!decoded.ok()) {
        status = decoded.status();
        service_->malformed_requests_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    storage::AppendBatch batch;
    auto ids = std::make_shared<std::vector<storage::SeriesId>>();
    uint64_t batch_bytes = 0;
    if (status.ok()) {
      batch = std::move(decoded->batch);
      batch_bytes = batch.MemoryBytes();
      service_->last_request_bytes_.store(batch_bytes,
                                          std::memory_order_relaxed);
      ids->reserve(batch.series().size());
      for (const auto& s : batch.series()) ids->push_back(s.id);
    } else if (status.code() == absl::StatusCode::kInvalidArgument) {
      service_->malformed_requests_.fetch_add(1, std::memory_order_relaxed);
    }
    // The batch holds its own copy now. A reused message would keep every
    // SeriesPoints it ever held (a registering request's keys too): with a
    // million series over 64 streams, ~600 MB. (Not an arena: resetting
    // one that holds map fields crashed under ThreadSanitizer in
    // protobuf 3.21, in the map's arena destructor.)
    request_ = v1::WriteRequest();
    // Even a malformed request goes through the engine queue (as an empty
    // append) so that acks leave in request order.
    service_->engine_->AppendAsync(
        std::move(batch),
        [this, seq, status, ids, received](
            absl::Status write_status,
            std::vector<storage::SeriesAppendResult> results) {
          // Before OnCommitted, which may end the stream and delete this.
          // Stored writes only: an error ack is quick and not a write.
          if (status.ok() && write_status.ok()) {
            service_->ack_seconds_.Record(absl::Now() - received);
          }
          // The group has left the engine's queue (and its bytes with
          // it): room for waiting reads.
          service_->read_gate_.Wake();
          OnCommitted(seq, status, write_status, *ids, results);
        });
    {
      absl::MutexLock lock(&mu_);
      // Queued at the engine now, which counts it.
      EndReadReservationLocked();
      reading_ = false;
      if (batch_bytes > 0) last_bytes_ = batch_bytes;
      MaybeReadLocked();
    }
    service_->read_gate_.Wake();
  }

  // The gate reserved room for this stream's next read. Not a gRPC
  // reaction: once waiting_for_gate_ is clear, another thread may finish
  // and delete the stream, so all is decided under mu_ and nothing of
  // `this` is touched after it, but a Finish this call claimed.
  void Resume() override {
    ReadGate& gate = service_->read_gate_;
    grpc::Status status;
    bool finish;
    {
      absl::MutexLock lock(&mu_);
      waiting_for_gate_ = false;
      gate_admitted_ = true;
      MaybeReadLocked();
      // No read after all (the stream is ending): the room goes back.
      if (!reading_) EndReadReservationLocked();
      finish = ShouldFinishLocked(&status);
    }
    gate.Wake();
    if (finish) Finish(status);
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The client is gone: nobody will read the remaining acks.
        write_closed_ = true;
        acks_.clear();
      } else {
        acks_.pop_front();
      }
      MaybeWriteLocked();
      MaybeReadLocked();
    }
    FinishIfOver();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      LeaveGateLocked();
    }
    FinishIfOver();
  }

  void OnDone() override {
    service_->streams_active_.fetch_sub(1, std::memory_order_relaxed);
    {
      absl::MutexLock lock(&service_->streams_mu_);
      service_->streams_.erase(this);
    }
    delete this;
  }

 private:
  void OnCommitted(uint64_t seq, const absl::Status& decode_status,
                   const absl::Status& write_status,
                   const std::vector<storage::SeriesId>& ids,
                   const std::vector<storage::SeriesAppendResult>& results) {
    grpc::Status status;
    bool finish;
    {
      absl::MutexLock lock(&mu_);
      Commit(seq, decode_status, write_status, ids, results);
      finish = ShouldFinishLocked(&status);
    }
    if (finish) Finish(status);
  }

  void Commit(uint64_t seq, const absl::Status& decode_status,
              const absl::Status& write_status,
              const std::vector<storage::SeriesId>& ids,
              const std::vector<storage::SeriesAppendResult>& results)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    --in_flight_;
    if (!write_status.ok()) {
      // The points may or may not be on disk; the client must resend from
      // its last durable seq on a new stream.
      service_->write_errors_.fetch_add(1, std::memory_order_relaxed);
      if (finish_status_.ok()) finish_status_ = ToGrpcStatus(write_status);
      write_failed_ = true;
      LeaveGateLocked();
    }
    if (!write_failed_) {
      v1::WriteAck ack;
      ack.set_seq(seq);
      if (!decode_status.ok()) {
        ack.set_error_code(static_cast<int32_t>(decode_status.code()));
        ack.set_error_message(std::string(decode_status.message()));
      } else {
        FillResults(*service_->engine_, ids, results, &ack);
      }
      // Never goes backwards, even for an error ack of a stale seq.
      durable_seq_ = std::max(durable_seq_, seq);
      ack.set_durable_seq(durable_seq_);
      if (!write_closed_) acks_.push_back(std::move(ack));
      MaybeWriteLocked();
    }
    MaybeReadLocked();
  }

  void MaybeReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Acks the client has not taken yet count too: a client that never
    // reads its acks must not make the server buffer without bound.
    // Above half the memory budget, a stream gets one request at a time.
    const size_t max_in_flight =
        service_->engine_->Pressure() == storage::MemoryPressure::kNone
            ? service_->options_.max_in_flight_per_stream
            : 1;
    if (reading_ || waiting_for_gate_ || read_closed_ || refused_ ||
        cancelled_ || write_failed_ || finished_ ||
        in_flight_ + acks_.size() >= max_in_flight) {
      return;
    }
    // Room for the read in the engine's queue (Resume has reserved it when
    // the stream waited for it).
    if (!gate_admitted_) {
      const uint64_t expected = std::max<uint64_t>(
          1, last_bytes_ > 0 ? last_bytes_
                             : service_->last_request_bytes_.load(
                                   std::memory_order_relaxed));
      if (!service_->read_gate_.Admit(this, expected)) {
        waiting_for_gate_ = true;
        return;
      }
      gate_admitted_ = true;
    }
    reading_ = true;
    awaiting_request_ = true;
    StartRead(&request_);
  }

  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || acks_.empty() || write_closed_ || cancelled_) return;
    writing_ = true;
    StartWrite(&acks_.front());
  }

  // Decides whether the stream is over. If so, marks it finished and
  // returns true: the caller must call Finish(*status) after releasing mu_,
  // and touch nothing afterwards (OnDone may delete this at once).
  bool ShouldFinishLocked(grpc::Status* status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // An engine callback, a write completion or the gate still refers to
    // this.
    if (finished_ || in_flight_ > 0 || writing_ || waiting_for_gate_) {
      return false;
    }
    const bool broken = write_failed_ || cancelled_ || write_closed_;
    if (!broken && !((read_closed_ || refused_) && acks_.empty())) return false;
    // A read still outstanding is ended by Finish (OnReadDone(false)).
    finished_ = true;
    *status = cancelled_ ? grpc::Status::CANCELLED : finish_status_;
    return true;
  }

  // Ends the gate's reservation for this stream's read (the caller then
  // calls Wake, outside mu_).
  void EndReadReservationLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!gate_admitted_) return;
    gate_admitted_ = false;
    service_->read_gate_.Release(this);
  }

  // A stream that will read no more stops waiting for room to read. (If
  // the gate has just resumed it instead, Resume finds out.)
  void LeaveGateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (waiting_for_gate_ && service_->read_gate_.Cancel(this)) {
      waiting_for_gate_ = false;
    }
  }

  void FinishIfOver() ABSL_LOCKS_EXCLUDED(mu_) {
    grpc::Status status;
    bool finish;
    {
      absl::MutexLock lock(&mu_);
      finish = ShouldFinishLocked(&status);
    }
    if (finish) Finish(status);
  }

  IngestService* const service_;
  // Who writes: authenticated once when the stream opened.
  const auth::Principal principal_;
  const std::string authorization_;
  const std::string peer_;
  // Only touched by the read path, which gRPC never runs concurrently.
  v1::WriteRequest request_;
  StreamRefs refs_;
  absl::flat_hash_set<std::string> allowed_projects_;

  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool awaiting_request_ ABSL_GUARDED_BY(mu_) = false;  // a read is outstanding
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool refused_ ABSL_GUARDED_BY(mu_) = false;  // over the memory budget
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool any_seq_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_request_ ABSL_GUARDED_BY(mu_);  // or the stream's start
  uint64_t durable_seq_ ABSL_GUARDED_BY(mu_) = 0;
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // The read gate has reserved room for the read under way or about to
  // start; while waiting_for_gate_, the gate holds the stream (and will
  // call Resume).
  bool gate_admitted_ ABSL_GUARDED_BY(mu_) = false;
  bool waiting_for_gate_ ABSL_GUARDED_BY(mu_) = false;
  // The decoded size of this stream's last request.
  uint64_t last_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<v1::WriteAck> acks_ ABSL_GUARDED_BY(mu_);
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

IngestService::IngestService(storage::Engine* engine, IngestOptions options,
                             storage::RunStore* runs)
    : engine_(engine),
      options_(std::move(options)),
      runs_(runs),
      read_gate_(options_.max_queued_bytes,
                 [engine] { return engine->QueuedAppendBytes(); }) {
  if (options_.max_queued_bytes > 0) {
    gate_timer_.emplace("stepdb-gate", kReservationAge / 2,
                        storage::PeriodicThread::FirstRun::kAfterInterval,
                        [this] {
                          read_gate_.ExpireReservations(kReservationAge);
                          read_gate_.Wake();
                        });
  }
  if (options_.stream_idle_timeout > absl::ZeroDuration()) {
    reaper_.emplace("stepdb-reaper",
                    std::clamp(options_.stream_idle_timeout / 4,
                               absl::Milliseconds(10), absl::Seconds(5)),
                    storage::PeriodicThread::FirstRun::kAfterInterval,
                    [this] { ReapIdleStreams(); });
  }
}

void IngestService::ReapIdleStreams() {
  std::vector<std::pair<WriteReactor*, grpc::Status>> idle;
  {
    absl::MutexLock lock(&streams_mu_);
    const absl::Time now = absl::Now();
    for (WriteReactor* stream : streams_) {
      grpc::Status status;
      if (stream->ClaimIdleFinish(now, options_.stream_idle_timeout,
                                  &status)) {
        idle.emplace_back(stream, std::move(status));
      }
    }
  }
  // Outside streams_mu_: Finish may run OnDone, which takes it.
  for (auto& [stream, status] : idle) {
    idle_streams_closed_.fetch_add(1, std::memory_order_relaxed);
    stream->Finish(std::move(status));
  }
}

// Run metadata writes are small and synchronous (one fsync'd meta record):
// they run on the callback thread, as the unary reads do.
grpc::ServerUnaryReactor* IngestService::CreateRun(
    grpc::CallbackServerContext* context, const v1::CreateRunRequest* request,
    v1::CreateRunResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kIngestCreateRun, request->run().project());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (runs_ == nullptr) {
    reactor->Finish(RunMetadataDisabled());
    return reactor;
  }
  auto run = wire::RunFromWire(request->run());
  if (!run.ok()) {
    reactor->Finish(ToGrpcStatus(run.status()));
    return reactor;
  }
  auto created = runs_->Create(*std::move(run));
  if (!created.ok()) {
    reactor->Finish(ToGrpcStatus(created.status()));
    return reactor;
  }
  wire::RunToWire(created->first, response->mutable_run());
  response->set_created(created->second);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* IngestService::UpdateRun(
    grpc::CallbackServerContext* context, const v1::UpdateRunRequest* request,
    v1::Run* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kIngestUpdateRun, request->project());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (runs_ == nullptr) {
    reactor->Finish(RunMetadataDisabled());
    return reactor;
  }
  auto update = wire::RunUpdateFromWire(*request);
  if (!update.ok()) {
    reactor->Finish(ToGrpcStatus(update.status()));
    return reactor;
  }
  auto updated = runs_->Update(request->project(), request->run_id(), *update);
  if (!updated.ok()) {
    reactor->Finish(ToGrpcStatus(updated.status()));
    return reactor;
  }
  wire::RunToWire(*updated, response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerBidiReactor<v1::WriteRequest, v1::WriteAck>* IngestService::Write(
    grpc::CallbackServerContext* context) {
  absl::StatusOr<auth::Principal> principal = auth::Authenticate(
      options_.authorizer, *context, auth::Rpc::kIngestWrite);
  if (!principal.ok()) return new RefusedStream(principal.status());
  return new WriteReactor(this, *std::move(principal),
                          std::string(auth::AuthorizationOf(*context)),
                          context->peer());
}

grpc::ServerUnaryReactor* IngestService::WriteOne(
    grpc::CallbackServerContext* context, const v1::WriteRequest* request,
    v1::WriteResponse* response) {
  const absl::Time received = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (options_.authorizer != nullptr) {
    absl::StatusOr<auth::Principal> principal = auth::Authenticate(
        options_.authorizer, *context, auth::Rpc::kIngestWriteOne);
    absl::Status allowed = principal.status();
    if (allowed.ok()) {
      allowed = CheckProjects(options_.authorizer, *principal, context->peer(),
                              auth::Rpc::kIngestWriteOne, *request, nullptr);
    }
    if (allowed.ok()) {
      allowed = auth::ChargePoints(options_.authorizer, *principal,
                                   PointCount(*request));
    }
    if (!allowed.ok()) {
      reactor->Finish(ToGrpcStatus(allowed));
      return reactor;
    }
  }
  requests_.fetch_add(1, std::memory_order_relaxed);
  if (absl::Status over = CheckMemory(); !over.ok()) {
    reactor->Finish(ToGrpcStatus(over));
    return reactor;
  }
  auto decoded = DecodeWriteRequest(*request, *engine_, /*refs=*/nullptr,
                                    NowMs(), options_.limits);
  if (!decoded.ok()) {
    malformed_requests_.fetch_add(1, std::memory_order_relaxed);
    reactor->Finish(ToGrpcStatus(decoded.status()));
    return reactor;
  }
  std::vector<storage::SeriesId> ids;
  for (const auto& s : decoded->batch.series()) ids.push_back(s.id);
  engine_->AppendAsync(
      std::move(decoded->batch),
      [this, reactor, response, ids = std::move(ids), received](
          absl::Status status,
          std::vector<storage::SeriesAppendResult> results) {
        // The append left the engine's queue: room for waiting reads.
        read_gate_.Wake();
        if (!status.ok()) {
          write_errors_.fetch_add(1, std::memory_order_relaxed);
          reactor->Finish(ToGrpcStatus(status));
          return;
        }
        FillResults(*engine_, ids, results, response);
        ack_seconds_.Record(absl::Now() - received);
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

absl::Status IngestService::CheckMemory() {
  if (engine_->Pressure() != storage::MemoryPressure::kOverLimit) {
    return absl::OkStatus();
  }
  refused_requests_.fetch_add(1, std::memory_order_relaxed);
  return absl::ResourceExhaustedError(absl::StrCat(
      "memory limit: ", engine_->MemoryUsage() >> 20,
      " MiB of points in memory, over the server's budget; retry later"));
}

IngestCounters IngestService::counters() const {
  return IngestCounters{
      streams_opened_.load(std::memory_order_relaxed),
      streams_active_.load(std::memory_order_relaxed),
      requests_.load(std::memory_order_relaxed),
      malformed_requests_.load(std::memory_order_relaxed),
      write_errors_.load(std::memory_order_relaxed),
      refused_requests_.load(std::memory_order_relaxed),
      idle_streams_closed_.load(std::memory_order_relaxed),
      read_gate_.waits(),
      ack_seconds_.Take(),
  };
}

}  // namespace stepdb::ingest
