// Conversions between wire messages (stepdb.v1) and storage types, shared
// by the ingest and query services (which must not depend on each other).
#ifndef STEPDB_PROTO_WIRE_CONVERT_H_
#define STEPDB_PROTO_WIRE_CONVERT_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "stepdb/v1/stepdb.pb.h"
#include "storage/engine.h"
#include "storage/label_matcher.h"
#include "storage/run_store.h"
#include "storage/series_key.h"

namespace stepdb::wire {

storage::SeriesKey KeyFromWire(const v1::SeriesKey& wire);
void KeyToWire(const storage::SeriesKey& key, v1::SeriesKey* out);

// Micro-steps of a wire step. InvalidArgument naming `field` if it is
// negative, too large, or its micros are not below 1e6.
absl::StatusOr<uint64_t> StepFromWire(const v1::Step& step,
                                      std::string_view field);
void StepToWire(uint64_t micro_step, v1::Step* out);

// Compiles the matchers of a request once (regexes included).
// InvalidArgument naming the matcher for an empty key, an unknown op or an
// invalid regex.
absl::StatusOr<std::vector<storage::LabelMatcher>> MatchersFromWire(
    const google::protobuf::RepeatedPtrField<v1::LabelMatcher>& wire);

// A run from a create request. InvalidArgument for a param without a value
// or a bad state or fork step.
absl::StatusOr<storage::RunRecord> RunFromWire(const v1::Run& wire);
void RunToWire(const storage::RunRecord& run, v1::Run* out);
absl::StatusOr<storage::RunUpdate> RunUpdateFromWire(
    const v1::UpdateRunRequest& wire);

// Appends points as step/step_micros/times/values columns to a message with
// those four repeated fields (ReadRangeResponse, TailSeries). step_micros
// stays empty while every step is whole; once one is not, every step of
// the message gets its millionths (maybe 0).
template <typename Message>
void AppendPointColumns(const storage::PointColumns& points, Message* out) {
  const int n = static_cast<int>(points.size());
  const int before = out->steps_size();
  // One pass over the steps: whole steps out, millionths noted. A streamed
  // read converts every point here, 32,768 a page.
  auto* steps = out->mutable_steps();
  steps->Reserve(before + n);
  uint64_t any_micros = 0;
  for (uint64_t step : points.steps) {
    const uint64_t whole = step / storage::kMicrosPerStep;
    steps->AddAlreadyReserved(static_cast<int64_t>(whole));
    any_micros |= step - whole * storage::kMicrosPerStep;
  }
  if (any_micros != 0 || out->step_micros_size() > 0) {
    auto* micros = out->mutable_step_micros();
    micros->Reserve(before + n);
    while (micros->size() < before) micros->AddAlreadyReserved(0);
    for (uint64_t step : points.steps) {
      micros->AddAlreadyReserved(
          static_cast<uint32_t>(step % storage::kMicrosPerStep));
    }
  }
  out->mutable_times_ms()->Add(points.times_ms.begin(), points.times_ms.end());
  out->mutable_values()->Add(points.values.begin(), points.values.end());
}

}  // namespace stepdb::wire

#endif  // STEPDB_PROTO_WIRE_CONVERT_H_
