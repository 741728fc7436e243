#include "storage/label_matcher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "re2/re2.h"

namespace stepdb::storage {

absl::StatusOr<LabelMatcher> LabelMatcher::Create(Op op, std::string key,
                                                  std::string value) {
  LabelMatcher m(op, std::move(key), std::move(value), nullptr);
  if (m.key_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("matcher ", m.ToString(), ": empty label key"));
  }
  if (op == Op::kRegex || op == Op::kNotRegex) {
    RE2::Options options;
    options.set_log_errors(false);  // the error goes back to the caller
    auto re = std::make_shared<const RE2>(m.value_, options);
    if (!re->ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "matcher ", m.ToString(), ": invalid regex: ", re->error()));
    }
    m.re_ = std::move(re);
  }
  return m;
}

bool LabelMatcher::MatchesValue(std::string_view value) const {
  switch (op_) {
    case Op::kEqual:
      return value == value_;
    case Op::kNotEqual:
      return value != value_;
    case Op::kRegex:
      return RE2::FullMatch(re2::StringPiece(value.data(), value.size()), *re_);
    case Op::kNotRegex:
      return !RE2::FullMatch(re2::StringPiece(value.data(), value.size()),
                             *re_);
  }
  return false;
}

bool LabelMatcher::Matches(const Labels& labels) const {
  const auto it = std::lower_bound(
      labels.begin(), labels.end(), key_,
      [](const auto& label, const std::string& k) { return label.first < k; });
  return MatchesValue(it != labels.end() && it->first == key_
                          ? std::string_view(it->second)
                          : std::string_view());
}

std::string LabelMatcher::ToString() const {
  constexpr const char* kOps[] = {"=", "!=", "=~", "!~"};
  return absl::StrCat(key_, kOps[static_cast<int>(op_)], value_);
}

}  // namespace stepdb::storage
