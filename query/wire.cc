#include "query/wire.h"

#include <limits>
#include <string>

#include "absl/strings/str_cat.h"

namespace stepdb::query {

using storage::kMicrosPerStep;

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

void StepToWire(uint64_t micro, v1::Step* out) {
  out->set_whole(static_cast<int64_t>(micro / kMicrosPerStep));
  out->set_micros(static_cast<uint32_t>(micro % kMicrosPerStep));
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

}  // namespace stepdb::query
