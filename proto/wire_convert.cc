#include "proto/wire_convert.h"

#include <limits>
#include <string>

#include "absl/strings/str_cat.h"

namespace stepdb::wire {
namespace {

using storage::kMicrosPerStep;

absl::StatusOr<storage::ParamValue> ParamFromWire(const std::string& name,
                                                  const v1::ParamValue& wire) {
  switch (wire.kind_case()) {
    case v1::ParamValue::kIntValue: return storage::ParamValue(wire.int_value());
    case v1::ParamValue::kFloatValue: return storage::ParamValue(wire.float_value());
    case v1::ParamValue::kStringValue:
      return storage::ParamValue(wire.string_value());
    case v1::ParamValue::kBoolValue: return storage::ParamValue(wire.bool_value());
    case v1::ParamValue::KIND_NOT_SET: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("param \"", name, "\": no value"));
}

void ParamToWire(const storage::ParamValue& value, v1::ParamValue* out) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, int64_t>) out->set_int_value(v);
        else if constexpr (std::is_same_v<T, double>) out->set_float_value(v);
        else if constexpr (std::is_same_v<T, std::string>) out->set_string_value(v);
        else out->set_bool_value(v);
      },
      value);
}

absl::StatusOr<std::optional<storage::RunState>> StateFromWire(
    v1::RunState state) {
  if (state == v1::RUN_STATE_UNSPECIFIED) return std::nullopt;
  if (state < v1::RUN_STATE_RUNNING || state > v1::RUN_STATE_ABORTED) {
    return absl::InvalidArgumentError("state: unknown value");
  }
  return static_cast<storage::RunState>(state);
}

absl::Status ParamsFromWire(
    const google::protobuf::Map<std::string, v1::ParamValue>& wire,
    std::map<std::string, storage::ParamValue>* out) {
  for (const auto& [name, value] : wire) {
    auto param = ParamFromWire(name, value);
    if (!param.ok()) return param.status();
    (*out)[name] = *std::move(param);
  }
  return absl::OkStatus();
}

}  // namespace

storage::SeriesKey KeyFromWire(const v1::SeriesKey& wire) {
  storage::SeriesKey key{wire.project(), wire.run(), wire.metric(), {}};
  for (const auto& [k, v] : wire.labels()) key.labels.emplace_back(k, v);
  return key;
}

void KeyToWire(const storage::SeriesKey& key, v1::SeriesKey* out) {
  out->set_project(key.project);
  out->set_run(key.run);
  out->set_metric(key.metric);
  for (const auto& [k, v] : key.labels) (*out->mutable_labels())[k] = v;
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

void StepToWire(uint64_t micro_step, v1::Step* out) {
  out->set_whole(static_cast<int64_t>(micro_step / kMicrosPerStep));
  out->set_micros(static_cast<uint32_t>(micro_step % kMicrosPerStep));
}

absl::StatusOr<storage::RunRecord> RunFromWire(const v1::Run& wire) {
  storage::RunRecord run;
  run.project = wire.project();
  run.run_id = wire.run_id();
  if (auto s = ParamsFromWire(wire.params(), &run.params); !s.ok()) return s;
  run.tags.assign(wire.tags().begin(), wire.tags().end());
  run.commit_sha = wire.commit_sha();
  run.data_version = wire.data_version();
  run.description = wire.description();
  auto state = StateFromWire(wire.state());
  if (!state.ok()) return state.status();
  run.state = state->value_or(storage::RunState::kRunning);
  if (wire.has_fork()) {
    auto step = StepFromWire(wire.fork().step(), "fork.step");
    if (!step.ok()) return step.status();
    run.fork = storage::ForkPoint{wire.fork().parent_run(), *step};
  }
  return run;
}

void RunToWire(const storage::RunRecord& run, v1::Run* out) {
  out->set_project(run.project);
  out->set_run_id(run.run_id);
  for (const auto& [name, value] : run.params) {
    ParamToWire(value, &(*out->mutable_params())[name]);
  }
  for (const std::string& tag : run.tags) out->add_tags(tag);
  out->set_commit_sha(run.commit_sha);
  out->set_data_version(run.data_version);
  out->set_description(run.description);
  out->set_state(static_cast<v1::RunState>(run.state));
  out->set_created_ms(run.created_ms);
  out->set_updated_ms(run.updated_ms);
  if (run.fork) {
    out->mutable_fork()->set_parent_run(run.fork->parent_run);
    StepToWire(run.fork->step, out->mutable_fork()->mutable_step());
  }
}

absl::StatusOr<storage::RunUpdate> RunUpdateFromWire(
    const v1::UpdateRunRequest& wire) {
  storage::RunUpdate update;
  if (auto s = ParamsFromWire(wire.set_params(), &update.set_params); !s.ok()) {
    return s;
  }
  update.remove_params.assign(wire.remove_params().begin(),
                              wire.remove_params().end());
  update.add_tags.assign(wire.add_tags().begin(), wire.add_tags().end());
  update.remove_tags.assign(wire.remove_tags().begin(), wire.remove_tags().end());
  if (wire.has_commit_sha()) update.commit_sha = wire.commit_sha();
  if (wire.has_data_version()) update.data_version = wire.data_version();
  if (wire.has_description()) update.description = wire.description();
  auto state = StateFromWire(wire.state());
  if (!state.ok()) return state.status();
  update.state = *state;
  return update;
}

absl::StatusOr<std::vector<storage::LabelMatcher>> MatchersFromWire(
    const google::protobuf::RepeatedPtrField<v1::LabelMatcher>& wire) {
  using Op = storage::LabelMatcher::Op;
  std::vector<storage::LabelMatcher> out;
  out.reserve(wire.size());
  for (const v1::LabelMatcher& m : wire) {
    Op op;
    switch (m.op()) {
      case v1::LabelMatcher::EQUAL:
        op = Op::kEqual;
        break;
      case v1::LabelMatcher::NOT_EQUAL:
        op = Op::kNotEqual;
        break;
      case v1::LabelMatcher::REGEX:
        op = Op::kRegex;
        break;
      case v1::LabelMatcher::NOT_REGEX:
        op = Op::kNotRegex;
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "matcher on ", m.key(), ": unknown op ", static_cast<int>(m.op())));
    }
    auto matcher = storage::LabelMatcher::Create(op, m.key(), m.value());
    if (!matcher.ok()) return matcher.status();
    out.push_back(*std::move(matcher));
  }
  return out;
}

}  // namespace stepdb::wire
