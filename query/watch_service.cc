#include "query/watch_service.h"

#include <atomic>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "proto/grpc_status.h"
#include "proto/wire_convert.h"

namespace stepdb::query {
namespace {

void RuleToWire(const storage::WatchRuleSpec& rule, v1::WatchRule* out) {
  out->set_id(rule.id);
  out->set_project(rule.project);
  out->set_run(rule.run);
  out->set_metric(rule.metric);
  for (const auto& [k, v] : rule.labels) {
    v1::LabelMatcher* m = out->add_labels();
    m->set_key(k);
    m->set_value(v);
  }
  out->set_condition(rule.condition);
  out->set_name(rule.name);
}

void EventToWire(const storage::WatchEventRecord& e, v1::WatchEvent* out) {
  out->set_seq(e.seq);
  out->set_kind(e.kind == storage::WatchEventKind::kFiring
                    ? v1::WatchEvent::FIRING
                    : v1::WatchEvent::RESOLVED);
  out->set_rule_id(e.rule_id);
  out->set_rule_name(e.rule_name);
  out->set_condition(e.condition);
  wire::KeyToWire(e.series, out->mutable_series());
  wire::StepToWire(e.step, out->mutable_step());
  out->set_value(e.value);
  out->set_time_ms(e.time_ms);
  out->set_fired_ms(e.fired_ms);
  out->set_message(e.message);
}

}  // namespace

// One Events stream. It is driven from three sides: gRPC (write done,
// cancel), the evaluator's background thread (new events) and the
// service's Shutdown; mu_ serializes them. At most one write is in flight;
// the next page of events is fetched only when the buffer is drained, so
// an idle follower costs nothing and a slow one holds one page.
//
// Lifetime: gRPC holds one reference until OnDone, Shutdown a temporary
// one while it stops the stream; the last one deletes.
class WatchService::EventsReactor final
    : public grpc::ServerWriteReactor<v1::WatchEvent>,
      public storage::WatchListener {
 public:
  EventsReactor(WatchService* service, const v1::WatchEventsRequest& request)
      : service_(service),
        project_(request.project()),
        run_(request.run()),
        follow_(request.follow()),
        after_seq_(request.after_seq()) {
    if (project_.empty()) {
      absl::MutexLock lock(&mu_);
      FinishLocked(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "project: empty"));
      return;
    }
    registered_ = service_->Register(this);
    if (!registered_) {
      absl::MutexLock lock(&mu_);
      FinishLocked(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
      return;
    }
    // Listen before the first read, so that no event persisted in between
    // goes unnoticed.
    if (follow_) service_->evaluator_->AddListener(this);
    absl::MutexLock lock(&mu_);
    Pump();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (pending_finish_) {
      Finish(*pending_finish_);
      return;
    }
    if (!ok) {
      FinishLocked(
          grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    Pump();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
  }

  void OnDone() override {
    if (registered_) {
      if (follow_) service_->evaluator_->RemoveListener(this);
      service_->Unregister(this);
    }
    Unref();
  }

  void OnNewEvents() override {
    absl::MutexLock lock(&mu_);
    Pump();
  }

  void Stop() {
    absl::MutexLock lock(&mu_);
    FinishLocked(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
  }

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  // Writes the next event if none is in flight, fetching a page when the
  // buffer is empty; finishes a non-following stream that is caught up.
  void Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    if (next_ == buffer_.size()) {
      buffer_.clear();
      next_ = 0;
      storage::WatchEvaluator& evaluator = *service_->evaluator_;
      while (buffer_.empty() && after_seq_ < evaluator.LastSeq()) {
        uint64_t scanned = after_seq_;
        auto page =
            evaluator.ReadEvents(project_, run_, after_seq_,
                                 service_->options_.page_events, &scanned);
        if (!page.ok()) {
          FinishLocked(ToGrpcStatus(page.status()));
          return;
        }
        buffer_ = *std::move(page);
        after_seq_ = scanned;
      }
      if (buffer_.empty()) {
        if (!follow_) FinishLocked(grpc::Status::OK);
        return;  // following: OnNewEvents calls again
      }
    }
    response_.Clear();
    EventToWire(buffer_[next_++], &response_);
    writing_ = true;
    StartWrite(&response_);
  }

  // Finishes once; with a write in flight, when it completes.
  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    if (writing_) {
      pending_finish_ = std::move(status);
    } else {
      Finish(std::move(status));
    }
  }

  // Constant after construction.
  WatchService* const service_;
  const std::string project_;
  const std::string run_;
  const bool follow_;
  bool registered_ = false;  // set in the constructor only

  std::atomic<int> refs_{1};

  absl::Mutex mu_;
  uint64_t after_seq_ ABSL_GUARDED_BY(mu_);
  std::vector<storage::WatchEventRecord> buffer_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  v1::WatchEvent response_ ABSL_GUARDED_BY(mu_);
};

WatchService::WatchService(storage::WatchEvaluator* evaluator,
                           WatchServiceOptions options)
    : evaluator_(evaluator), options_(options) {}

WatchService::~WatchService() { Shutdown(); }

bool WatchService::Register(EventsReactor* stream) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return false;
  streams_.insert(stream);
  return true;
}

void WatchService::Unregister(EventsReactor* stream) {
  absl::MutexLock lock(&mu_);
  streams_.erase(stream);
}

void WatchService::Shutdown() {
  std::vector<EventsReactor*> streams;
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;
    for (EventsReactor* stream : streams_) {
      stream->Ref();  // keeps it alive past a concurrent OnDone
      streams.push_back(stream);
    }
  }
  // Outside mu_: finishing may run OnDone, which unregisters.
  for (EventsReactor* stream : streams) {
    stream->Stop();
    stream->Unref();
  }
}

grpc::ServerUnaryReactor* WatchService::CreateRule(
    grpc::CallbackServerContext* context, const v1::WatchRule* request,
    v1::WatchRule* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kWatchCreateRule, request->project());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  storage::WatchRuleSpec spec;
  spec.project = request->project();
  spec.run = request->run();
  spec.metric = request->metric();
  for (const v1::LabelMatcher& m : request->labels()) {
    spec.labels.emplace_back(m.key(), m.value());
  }
  spec.condition = request->condition();
  spec.name = request->name();
  auto created = evaluator_->CreateRule(std::move(spec));
  if (!created.ok()) {
    reactor->Finish(ToGrpcStatus(created.status()));
    return reactor;
  }
  RuleToWire(*created, response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WatchService::ListRules(
    grpc::CallbackServerContext* context,
    const v1::ListWatchRulesRequest* request,
    v1::ListWatchRulesResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kWatchListRules, request->project());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (request->project().empty()) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "project: empty"));
    return reactor;
  }
  for (const storage::WatchRuleSpec& rule :
       evaluator_->ListRules(request->project())) {
    RuleToWire(rule, response->add_rules());
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WatchService::DeleteRule(
    grpc::CallbackServerContext* context,
    const v1::DeleteWatchRuleRequest* request,
    v1::DeleteWatchRuleResponse* /*response*/) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kWatchDeleteRule, request->project());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  reactor->Finish(
      ToGrpcStatus(evaluator_->DeleteRule(request->project(), request->id())));
  return reactor;
}

grpc::ServerWriteReactor<v1::WatchEvent>* WatchService::Events(
    grpc::CallbackServerContext* context,
    const v1::WatchEventsRequest* request) {
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kWatchEvents, request->project());
      !s.ok()) {
    return FinishedWriter<v1::WatchEvent>(ToGrpcStatus(s));
  }
  return new EventsReactor(this, *request);
}

}  // namespace stepdb::query
