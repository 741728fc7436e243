#include "query/query_service.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "proto/grpc_status.h"
#include "absl/container/flat_hash_set.h"
#include "proto/wire_convert.h"
#include "query/aggregate.h"
#include "storage/downsample.h"
#include "storage/series_summary.h"

namespace stepdb::query {
namespace {

using storage::kMicrosPerStep;
using wire::KeyFromWire;
using wire::StepFromWire;
using wire::StepToWire;
using wire::MatchersFromWire;



absl::StatusOr<storage::ReadRange> RangeFromWire(
    const v1::ReadRangeRequest& request) {
  storage::ReadRange range;
  if (request.has_steps()) {
    if (request.steps().has_from()) {
      auto from = StepFromWire(request.steps().from(), "steps.from");
      if (!from.ok()) return from.status();
      range.steps.from = *from;
    }
    if (request.steps().has_to()) {
      auto to = StepFromWire(request.steps().to(), "steps.to");
      if (!to.ok()) return to.status();
      range.steps.to = *to;
    }
  }
  if (request.has_time()) {
    if (request.time().has_from_ms()) range.times.from_ms = request.time().from_ms();
    if (request.time().has_to_ms()) range.times.to_ms = request.time().to_ms();
  }
  if (range.steps.from > range.steps.to || range.times.from_ms > range.times.to_ms) {
    return absl::InvalidArgumentError("range: from is after to");
  }
  return range;
}



}  // namespace

// Streams one range read a page at a time, double-buffered: while one page
// is being written (serialized, sent, parsed by the client), the next is
// read from the engine into the other buffer, so the engine's decoding
// overlaps the transport instead of waiting for it. At most two pages are
// held in server memory, however slow the client. The read walks
// `segments` in order (one for a plain series; a forked run's lineage
// otherwise).
//
// One thread at a time runs the reactor's work (Pump): a write completion
// that arrives while another thread is reading a page only records it, and
// that thread picks it up, so Finish is never called while another thread
// is still inside the reactor (OnDone deletes it).
class QueryService::ReadRangeReactor
    : public grpc::ServerWriteReactor<v1::ReadRangeResponse> {
 public:
  struct Segment {
    storage::SeriesId series;
    storage::ReadRange range;
  };

  ReadRangeReactor(const storage::Engine* engine, const QueryOptions& options,
                   std::vector<Segment> segments, uint64_t limit)
      : engine_(engine),
        options_(options),
        segments_(std::move(segments)),
        remaining_(limit) {
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
    }
    Pump();
  }

  void OnDone() override { delete this; }

 private:
  // What Pump does next.
  enum class Action { kNone, kWrite, kRead, kFinish };

  // Runs whatever can run now, until nothing can: start writing the read
  // page once the previous write is done, read the next page while
  // nothing waits to be written, finish once everything read is written.
  void Pump() {
    {
      absl::MutexLock lock(&mu_);
      // The pumping thread decides under mu_, so it sees this change.
      if (pumping_) return;
      pumping_ = true;
    }
    for (;;) {
      Action action = Action::kNone;
      grpc::Status finish_status;
      int page = 0;
      {
        absl::MutexLock lock(&mu_);
        if (cancelled_ && !writing_) {
          action = Action::kFinish;
          finish_status =
              grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
        } else if (!writing_ && ready_) {
          ready_ = false;
          writing_ = true;
          page = next_write_;
          next_write_ ^= 1;
          action = Action::kWrite;
        } else if (!ready_ && !end_.has_value() && !cancelled_) {
          action = Action::kRead;
          page = next_read_;
          next_read_ ^= 1;
        } else if (!writing_ && !ready_ && end_.has_value()) {
          action = Action::kFinish;
          finish_status = *end_;
        } else {
          pumping_ = false;
          return;
        }
      }
      switch (action) {
        case Action::kWrite:
          StartWrite(&pages_[page]);
          break;
        case Action::kRead:
          ReadPage(&pages_[page]);
          break;
        case Action::kFinish:
          Finish(finish_status);
          return;  // OnDone may run (and delete this) from now on
        case Action::kNone:
          break;
      }
    }
  }

  // Reads the next page into *response; then, under mu_, marks it ready to
  // write and/or records how the call ends (end_).
  void ReadPage(v1::ReadRangeResponse* response) {
    response->Clear();
    const uint64_t page = std::min(options_.page_points, remaining_);
    uint64_t read = 0;
    bool truncated = false;
    while (next_segment_ < segments_.size() && read < page) {
      Segment& segment = segments_[next_segment_];
      uint64_t last_step = 0;
      auto result = engine_->Read(segment.series, segment.range, page - read,
                                  [&](const storage::PointColumns& points) {
                                    wire::AppendPointColumns(points, response);
                                    last_step = points.steps.back();
                                    return true;
                                  });
      if (!result.ok()) {
        absl::MutexLock lock(&mu_);
        end_ = ToGrpcStatus(result.status());
        return;
      }
      read += result->points;
      if (result->truncated) {
        segment.range.steps.from = last_step + 1;
        truncated = true;
        break;
      }
      ++next_segment_;
    }
    remaining_ -= read;
    bool done = false;
    if (!truncated) {
      done = true;  // every segment is exhausted
    } else if (remaining_ == 0) {
      done = true;
      response->set_truncated(true);
    }
    absl::MutexLock lock(&mu_);
    if (done) end_ = grpc::Status::OK;
    // An empty last page is not sent, unless it is the only one (a stream
    // of no points still gets one message).
    if (!(done && read == 0 && !response->truncated() && pages_started_)) {
      ready_ = true;
    }
    pages_started_ = true;
  }

  // Constant after construction.
  const storage::Engine* const engine_;
  const QueryOptions& options_;

  // Used only by the pumping thread (Pump's mutual exclusion orders them).
  std::vector<Segment> segments_;
  size_t next_segment_ = 0;
  uint64_t remaining_;
  bool pages_started_ = false;
  int next_read_ = 0;   // the buffer the next page is read into
  int next_write_ = 0;  // the buffer written next (pages alternate)
  v1::ReadRangeResponse pages_[2];

  absl::Mutex mu_;
  bool pumping_ ABSL_GUARDED_BY(mu_) = false;  // a thread runs Pump's loop
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // a StartWrite is in flight
  bool ready_ ABSL_GUARDED_BY(mu_) = false;    // a read page awaits writing
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // How the call ends once every ready page is written.
  std::optional<grpc::Status> end_ ABSL_GUARDED_BY(mu_);
};

QueryService::QueryService(const storage::Engine* engine, QueryOptions options,
                           const storage::RunStore* runs, TailHub* tail)
    : engine_(engine),
      options_(options),
      runs_(runs),
      tail_(tail),
      aggregate_read_threads_(std::clamp<uint32_t>(
          options.aggregate_read_threads != 0
              ? options.aggregate_read_threads
              : std::max(1u, std::thread::hardware_concurrency()),
          1, 64)),
      aggregate_pool_(
          std::make_unique<storage::TaskPool>(aggregate_read_threads_ - 1,
                                             "stepdb-agg")) {}

grpc::ServerWriteReactor<v1::TailResponse>* QueryService::Tail(
    grpc::CallbackServerContext* context, const v1::TailRequest* request) {
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kQueryTail, request->project());
      !s.ok()) {
    return FinishedWriter<v1::TailResponse>(ToGrpcStatus(s));
  }
  if (tail_ == nullptr) {
    return v1::Query::CallbackService::Tail(context, request);  // UNIMPLEMENTED
  }
  return tail_->StartTail(*request);
}

std::vector<storage::SeriesSlice> QueryService::ResolveLineage(
    const storage::SeriesKey& key) const {
  std::vector<storage::SeriesSlice> out;
  if (runs_ == nullptr) {
    if (auto id = engine_->FindSeries(key)) {
      out.push_back({*id, 0, std::numeric_limits<uint64_t>::max()});
    }
    return out;
  }
  for (const storage::LineageSegment& segment :
       runs_->Lineage(key.project, key.run)) {
    storage::SeriesKey ancestor = key;
    ancestor.run = segment.run;
    if (auto id = engine_->FindSeries(ancestor)) {
      out.push_back({*id, segment.from_step, segment.to_step});
    }
  }
  return out;
}

grpc::ServerWriteReactor<v1::ReadRangeResponse>* QueryService::ReadRange(
    grpc::CallbackServerContext* context,
    const v1::ReadRangeRequest* request) {
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kQueryReadRange,
                                   request->series().project());
      !s.ok()) {
    return FinishedWriter<v1::ReadRangeResponse>(ToGrpcStatus(s));
  }
  storage::SeriesKey key = KeyFromWire(request->series());
  const std::string name = storage::SeriesDisplayName(key);
  auto range = RangeFromWire(*request);
  if (!range.ok()) {
    return FinishedWriter<v1::ReadRangeResponse>(ToGrpcStatus(range.status()));
  }
  std::vector<ReadRangeReactor::Segment> segments;
  for (const storage::SeriesSlice& segment : ResolveLineage(key)) {
    storage::ReadRange clipped = *range;
    clipped.steps.from = std::max(clipped.steps.from, segment.from_step);
    clipped.steps.to = std::min(clipped.steps.to, segment.to_step);
    if (clipped.steps.from <= clipped.steps.to) {
      segments.push_back({segment.series, clipped});
    }
  }
  if (segments.empty() && !engine_->FindSeries(key)) {
    return FinishedWriter<v1::ReadRangeResponse>(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                         absl::StrCat("series ", name, ": not found")));
  }
  uint64_t limit = request->limit();
  if (limit == 0 || limit > options_.max_read_points) {
    limit = options_.max_read_points;
  }
  return new ReadRangeReactor(engine_, options_, std::move(segments), limit);
}

grpc::ServerUnaryReactor* QueryService::ListSeries(
    grpc::CallbackServerContext* context, const v1::ListSeriesRequest* request,
    v1::ListSeriesResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kQueryListSeries,
                                   request->project());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (request->project().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "project: empty"));
    return reactor;
  }
  storage::SeriesFilter filter;
  filter.project = request->project();
  if (!request->run().empty()) filter.run = request->run();
  if (!request->metric().empty()) filter.metric = request->metric();
  auto matchers = MatchersFromWire(request->labels());
  if (!matchers.ok()) {
    reactor->Finish(ToGrpcStatus(matchers.status()));
    return reactor;
  }
  filter.matchers = *std::move(matchers);
  uint32_t limit = request->limit();
  if (limit == 0 || limit > options_.max_list_series) {
    limit = options_.max_list_series;
  }
  bool truncated = false;
  for (const storage::SeriesInfo& info :
       engine_->ListSeries(filter, limit, &truncated)) {
    v1::SeriesInfo* out = response->add_series();
    out->mutable_key()->set_project(info.key.project);
    out->mutable_key()->set_run(info.key.run);
    out->mutable_key()->set_metric(info.key.metric);
    for (const auto& [k, v] : info.key.labels) {
      (*out->mutable_key()->mutable_labels())[k] = v;
    }
    out->set_points(info.points);
    if (info.points > 0) {
      StepToWire(info.first_step, out->mutable_first_step());
      StepToWire(info.last_step, out->mutable_last_step());
      out->set_last_time_ms(info.last_time_ms);
      out->set_last_value(info.last_value);
    }
  }
  response->set_truncated(truncated);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

namespace {

// Resolves the range of a downsampled read: its axis, and concrete bounds
// for open ends (the series' extent). Sets *empty if the range cannot hold
// a point (an open end beyond the data, or no data at all).
absl::Status DownsampleRangeFromWire(const storage::Engine& engine,
                                     std::span<const storage::SeriesSlice> slices,
                                     const v1::ReadDownsampledRequest& request,
                                     storage::Axis* axis,
                                     storage::ReadRange* range, bool* empty) {
  *empty = false;
  *axis = request.has_time() ? storage::Axis::kTime : storage::Axis::kStep;
  bool open_from = true, open_to = true;
  if (request.has_steps()) {
    if (request.steps().has_from()) {
      auto from = StepFromWire(request.steps().from(), "steps.from");
      if (!from.ok()) return from.status();
      range->steps.from = *from;
      open_from = false;
    }
    if (request.steps().has_to()) {
      auto to = StepFromWire(request.steps().to(), "steps.to");
      if (!to.ok()) return to.status();
      range->steps.to = *to;
      open_to = false;
    }
  } else if (request.has_time()) {
    if (request.time().has_from_ms()) {
      range->times.from_ms = request.time().from_ms();
      open_from = false;
    }
    if (request.time().has_to_ms()) {
      range->times.to_ms = request.time().to_ms();
      open_to = false;
    }
  }
  if (range->steps.from > range->steps.to ||
      range->times.from_ms > range->times.to_ms) {
    return absl::InvalidArgumentError("range: from is after to");
  }
  if (!open_from && !open_to) return absl::OkStatus();
  // The extent of all slices together; a slice's steps are clipped to its
  // range (its times cannot be: on the time axis an ancestor's later points
  // may widen the grid, never the answer).
  std::optional<storage::SeriesExtent> all;
  for (const storage::SeriesSlice& slice : slices) {
    auto extent = storage::ReadSeriesExtent(engine, slice.series);
    if (!extent.ok()) return extent.status();
    if (!extent->has_value()) continue;
    storage::SeriesExtent e = **extent;
    e.min_step = std::max(e.min_step, slice.from_step);
    e.max_step = std::min(e.max_step, slice.to_step);
    if (e.min_step > e.max_step) continue;
    if (!all) {
      all = e;
      continue;
    }
    all->min_step = std::min(all->min_step, e.min_step);
    all->max_step = std::max(all->max_step, e.max_step);
    all->min_time_ms = std::min(all->min_time_ms, e.min_time_ms);
    all->max_time_ms = std::max(all->max_time_ms, e.max_time_ms);
  }
  if (!all) {
    *empty = true;
    return absl::OkStatus();
  }
  if (*axis == storage::Axis::kStep) {
    if (open_from) range->steps.from = all->min_step;
    if (open_to) range->steps.to = all->max_step;
    *empty = range->steps.from > range->steps.to;
  } else {
    if (open_from) range->times.from_ms = all->min_time_ms;
    if (open_to) range->times.to_ms = all->max_time_ms;
    *empty = range->times.from_ms > range->times.to_ms;
  }
  return absl::OkStatus();
}

}  // namespace

grpc::ServerUnaryReactor* QueryService::ReadDownsampled(
    grpc::CallbackServerContext* context,
    const v1::ReadDownsampledRequest* request,
    v1::ReadDownsampledResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kQueryReadDownsampled,
                                   request->series().project());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  const storage::SeriesKey key = KeyFromWire(request->series());
  const std::string name = storage::SeriesDisplayName(key);
  const uint32_t buckets = request->buckets();
  if (buckets == 0 || buckets > storage::kMaxBuckets) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("series ", name, ": buckets: ", buckets, " is not in [1, ",
                     storage::kMaxBuckets, "]")));
    return reactor;
  }
  const std::vector<storage::SeriesSlice> slices = ResolveLineage(key);
  if (slices.empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 absl::StrCat("series ", name, ": not found")));
    return reactor;
  }
  storage::Axis axis;
  storage::ReadRange range;
  bool empty = false;
  if (absl::Status s = DownsampleRangeFromWire(*engine_, slices, *request, &axis,
                                               &range, &empty);
      !s.ok()) {
    if (s.code() == absl::StatusCode::kInvalidArgument) {
      s = absl::InvalidArgumentError(
          absl::StrCat("series ", name, ": ", s.message()));
    }
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (empty) {
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  auto result = storage::ReadBuckets(*engine_, slices, axis, range, buckets);
  if (!result.ok()) {
    reactor->Finish(ToGrpcStatus(result.status()));
    return reactor;
  }
  response->mutable_buckets()->Reserve(static_cast<int>(result->size()));
  for (const storage::Bucket& b : *result) {
    v1::DownsampledBucket* out = response->add_buckets();
    if (axis == storage::Axis::kStep) {
      StepToWire(b.start_step, out->mutable_start_step());
      StepToWire(b.end_step, out->mutable_end_step());
    } else {
      out->set_start_ms(b.start_ms);
      out->set_end_ms(b.end_ms);
    }
    out->set_first(b.first);
    out->set_last(b.last);
    if (b.has_finite()) {
      out->set_min(b.min);
      out->set_max(b.max);
    }
    out->set_sum(b.sum);
    out->set_count(b.count);
    out->set_nan_count(b.nan_count);
    out->set_pos_inf_count(b.pos_inf_count);
    out->set_neg_inf_count(b.neg_inf_count);
    out->set_coarse(b.coarse);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* QueryService::ListRuns(
    grpc::CallbackServerContext* context, const v1::ListRunsRequest* request,
    v1::ListRunsResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kQueryListRuns, request->project());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (runs_ == nullptr) {
    reactor->Finish(RunMetadataDisabled());
    return reactor;
  }
  if (request->project().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "project: empty"));
    return reactor;
  }
  storage::RunFilter filter;
  filter.tags.assign(request->tags().begin(), request->tags().end());
  for (int state : request->states()) {
    if (state < v1::RUN_STATE_RUNNING || state > v1::RUN_STATE_ABORTED) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "states: unknown value"));
      return reactor;
    }
    filter.states.push_back(static_cast<storage::RunState>(state));
  }
  for (const std::string& text : request->filters()) {
    auto comparison = storage::ParseParamComparison(text);
    if (!comparison.ok()) {
      reactor->Finish(ToGrpcStatus(comparison.status()));
      return reactor;
    }
    filter.params.push_back(*std::move(comparison));
  }
  auto sort = storage::ParseRunSort(request->sort_by(), request->descending());
  if (!sort.ok()) {
    reactor->Finish(ToGrpcStatus(sort.status()));
    return reactor;
  }
  size_t limit = request->limit();
  if (limit == 0 || limit > options_.max_list_runs) limit = options_.max_list_runs;
  bool truncated = false;
  for (const storage::RunRecord& run :
       runs_->List(request->project(), filter, *sort, limit, &truncated)) {
    wire::RunToWire(run, response->add_runs());
  }
  response->set_truncated(truncated);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* QueryService::GetRun(
    grpc::CallbackServerContext* context, const v1::GetRunRequest* request,
    v1::GetRunResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kQueryGetRun, request->project());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (runs_ == nullptr) {
    reactor->Finish(RunMetadataDisabled());
    return reactor;
  }
  auto run = runs_->Get(request->project(), request->run_id());
  if (!run) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("run \"", request->run_id(), "\" not found")));
    return reactor;
  }
  wire::RunToWire(*run, response->mutable_run());
  // Every series of the run's lineage, once per (metric, labels), in the
  // order the lineage first registered them.
  std::vector<storage::SeriesKey> keys;
  absl::flat_hash_set<std::string> seen;
  for (const storage::LineageSegment& segment :
       runs_->Lineage(run->project, run->run_id)) {
    storage::SeriesFilter filter;
    filter.project = run->project;
    filter.run = segment.run;
    bool more = false;
    for (storage::SeriesInfo& info :
         engine_->ListSeries(filter, options_.max_list_series, &more)) {
      if (seen.insert(storage::SeriesIdentity(info.key)).second) {
        info.key.run = run->run_id;
        keys.push_back(std::move(info.key));
      }
    }
  }
  for (const storage::SeriesKey& key : keys) {
    storage::SeriesSummary summary;
    for (const storage::SeriesSlice& segment : ResolveLineage(key)) {
      storage::ReadRange range;
      range.steps = {segment.from_step, segment.to_step};
      auto part = storage::SummarizeSeries(*engine_, segment.series, range);
      if (!part.ok()) {
        reactor->Finish(ToGrpcStatus(part.status()));
        return reactor;
      }
      summary.Append(*part);
    }
    v1::RunSeries* out = response->add_series();
    wire::KeyToWire(key, out->mutable_key());
    out->set_points(summary.count);
    if (summary.count > 0) {
      StepToWire(summary.first_step, out->mutable_first_step());
      StepToWire(summary.last_step, out->mutable_last_step());
      out->set_last_time_ms(summary.last_time_ms);
      out->set_last_value(summary.last_value);
    }
    if (summary.min) out->set_min(*summary.min);
    if (summary.max) out->set_max(*summary.max);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* QueryService::Aggregate(
    grpc::CallbackServerContext* context, const v1::AggregateRequest* request,
    v1::AggregateResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kQueryAggregate, request->project());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  AggregateLimits limits;
  limits.max_series = options_.max_aggregate_series;
  limits.max_points = options_.max_aggregate_points;
  limits.max_cells = options_.max_aggregate_cells;
  limits.read_threads = aggregate_read_threads_;
  limits.read_pool = aggregate_pool_.get();
  limits.cancelled = [context] { return context->IsCancelled(); };
  reactor->Finish(
      ToGrpcStatus(query::Aggregate(*engine_, *request, limits, response)));
  return reactor;
}

}  // namespace stepdb::query
