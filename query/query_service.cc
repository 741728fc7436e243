#include "query/query_service.h"

#include <algorithm>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "proto/grpc_status.h"
#include "storage/downsample.h"

namespace stepdb::query {
namespace {

using storage::kMicrosPerStep;

storage::SeriesKey KeyFromWire(const v1::SeriesKey& wire) {
  storage::SeriesKey key{wire.project(), wire.run(), wire.metric(), {}};
  for (const auto& [k, v] : wire.labels()) key.labels.emplace_back(k, v);
  return key;
}

absl::StatusOr<uint64_t> StepFromWire(const v1::Step& step,
                                      std::string_view field) {
  if (step.whole() < 0 ||
      static_cast<uint64_t>(step.whole()) >
          std::numeric_limits<uint64_t>::max() / kMicrosPerStep - 1 ||
      step.micros() >= kMicrosPerStep) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), ": out of range"));
  }
  return storage::MicroStep(step.whole(), step.micros());
}

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

// Appends a slice of points to a page. A page may take several slices:
// step_micros is either empty or as long as steps, so once one slice has a
// fractional step, every earlier and later step of the page gets its
// (maybe zero) millionths too.
void AppendToResponse(const storage::PointColumns& points,
                      v1::ReadRangeResponse* out) {
  bool micros = out->step_micros_size() > 0;
  for (uint64_t step : points.steps) micros |= step % kMicrosPerStep != 0;
  const int n = static_cast<int>(points.size());
  const int total = out->steps_size() + n;
  if (micros) {
    out->mutable_step_micros()->Reserve(total);
    while (out->step_micros_size() < out->steps_size()) out->add_step_micros(0);
  }
  out->mutable_steps()->Reserve(total);
  out->mutable_times_ms()->Reserve(total);
  out->mutable_values()->Reserve(total);
  for (int i = 0; i < n; ++i) {
    const uint64_t step = points.steps[i];
    out->mutable_steps()->AddAlreadyReserved(
        static_cast<int64_t>(step / kMicrosPerStep));
    if (micros) {
      out->mutable_step_micros()->AddAlreadyReserved(
          static_cast<uint32_t>(step % kMicrosPerStep));
    }
  }
  out->mutable_times_ms()->Add(points.times_ms.begin(), points.times_ms.end());
  out->mutable_values()->Add(points.values.begin(), points.values.end());
}

void StepToWire(uint64_t micro, v1::Step* out) {
  out->set_whole(static_cast<int64_t>(micro / kMicrosPerStep));
  out->set_micros(static_cast<uint32_t>(micro % kMicrosPerStep));
}

}  // namespace

// Streams one range read a page at a time: each page is read from the
// engine when the previous one has been sent, so a slow client holds no
// more than one page in server memory.
class QueryService::ReadRangeReactor
    : public grpc::ServerWriteReactor<v1::ReadRangeResponse> {
 public:
  ReadRangeReactor(const storage::Engine* engine, const QueryOptions& options,
                   storage::SeriesId series, storage::ReadRange range,
                   uint64_t limit)
      : engine_(engine),
        options_(options),
        series_(series),
        range_(range),
        remaining_(limit) {
    NextPage();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    if (done_) {
      Finish(grpc::Status::OK);
      return;
    }
    NextPage();
  }

  void OnDone() override { delete this; }

 private:
  void NextPage() {
    response_.Clear();
    const uint64_t page = std::min(options_.page_points, remaining_);
    uint64_t last_step = 0;
    auto result = engine_->Read(series_, range_, page,
                                [&](const storage::PointColumns& points) {
                                  AppendToResponse(points, &response_);
                                  last_step = points.steps.back();
                                  return true;
                                });
    if (!result.ok()) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    remaining_ -= result->points;
    if (!result->truncated) {
      done_ = true;  // the range is exhausted
    } else if (remaining_ == 0) {
      done_ = true;
      response_.set_truncated(true);
    } else {
      range_.steps.from = last_step + 1;
    }
    if (done_ && result->points == 0 && !response_.truncated() && sent_any_) {
      Finish(grpc::Status::OK);
      return;
    }
    sent_any_ = true;
    StartWrite(&response_);
  }

  const storage::Engine* const engine_;
  const QueryOptions& options_;
  const storage::SeriesId series_;
  storage::ReadRange range_;
  uint64_t remaining_;
  bool done_ = false;
  bool sent_any_ = false;
  v1::ReadRangeResponse response_;
};

QueryService::QueryService(const storage::Engine* engine, QueryOptions options)
    : engine_(engine), options_(options) {}

grpc::ServerWriteReactor<v1::ReadRangeResponse>* QueryService::ReadRange(
    grpc::CallbackServerContext* context,
    const v1::ReadRangeRequest* request) {
  class ErrorReactor : public grpc::ServerWriteReactor<v1::ReadRangeResponse> {
   public:
    explicit ErrorReactor(grpc::Status status) { Finish(status); }
    void OnDone() override { delete this; }
  };
  if (absl::Status s = auth::Check(options_.authorizer, *context,
                                   auth::Rpc::kQueryReadRange,
                                   request->series().project());
      !s.ok()) {
    return new ErrorReactor(ToGrpcStatus(s));
  }
  storage::SeriesKey key = KeyFromWire(request->series());
  const std::string name = storage::SeriesDisplayName(key);
  auto range = RangeFromWire(*request);
  if (!range.ok()) {
    return new ErrorReactor(ToGrpcStatus(range.status()));
  }
  auto id = engine_->FindSeries(key);
  if (!id) {
    return new ErrorReactor(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                         absl::StrCat("series ", name, ": not found")));
  }
  uint64_t limit = request->limit();
  if (limit == 0 || limit > options_.max_read_points) {
    limit = options_.max_read_points;
  }
  return new ReadRangeReactor(engine_, options_, *id, *range, limit);
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
  for (const auto& m : request->labels()) {
    filter.labels.emplace_back(m.key(), m.value());
  }
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
                                     storage::SeriesId id,
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
  auto extent = storage::ReadSeriesExtent(engine, id);
  if (!extent.ok()) return extent.status();
  if (!extent->has_value()) {
    *empty = true;
    return absl::OkStatus();
  }
  if (*axis == storage::Axis::kStep) {
    if (open_from) range->steps.from = (*extent)->min_step;
    if (open_to) range->steps.to = (*extent)->max_step;
    *empty = range->steps.from > range->steps.to;
  } else {
    if (open_from) range->times.from_ms = (*extent)->min_time_ms;
    if (open_to) range->times.to_ms = (*extent)->max_time_ms;
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
  auto id = engine_->FindSeries(key);
  if (!id) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 absl::StrCat("series ", name, ": not found")));
    return reactor;
  }
  storage::Axis axis;
  storage::ReadRange range;
  bool empty = false;
  if (absl::Status s = DownsampleRangeFromWire(*engine_, *id, *request, &axis,
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
  auto result = storage::ReadBuckets(*engine_, *id, axis, range, buckets);
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
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace stepdb::query
