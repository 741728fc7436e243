// Label matchers for series selection, with Prometheus' semantics: a series
// that lacks a label reads as having it with the empty value (stored label
// values are never empty), so `k!="v"` also matches series without `k`, and
// `k=""` matches exactly those. Regexes are RE2 and must match the whole
// value (like Prometheus `=~`).
//
// Thread-safety: a LabelMatcher is immutable after Create; copies share the
// compiled expression, so one compile serves a whole request.
#ifndef STEPDB_STORAGE_LABEL_MATCHER_H_
#define STEPDB_STORAGE_LABEL_MATCHER_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "storage/series_key.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace stepdb::storage {

class LabelMatcher {
 public:
  enum class Op { kEqual, kNotEqual, kRegex, kNotRegex };

  // Returns InvalidArgumentError naming the matcher if `key` is empty or the
  // regex (kRegex, kNotRegex) does not compile.
  static absl::StatusOr<LabelMatcher> Create(Op op, std::string key,
                                             std::string value);

  // Whether the labels (sorted by key, as in SeriesKey) satisfy the matcher.
  bool Matches(const Labels& labels) const;
  // Whether one value (empty = label absent) satisfies it.
  bool MatchesValue(std::string_view value) const;

  Op op() const { return op_; }
  const std::string& key() const { return key_; }
  const std::string& value() const { return value_; }
  // "k=v", "k!=v", "k=~re", "k!~re".
  std::string ToString() const;

 private:
  LabelMatcher(Op op, std::string key, std::string value,
               std::shared_ptr<const re2::RE2> re)
      : op_(op),
        key_(std::move(key)),
        value_(std::move(value)),
        re_(std::move(re)) {}

  Op op_;
  std::string key_;
  std::string value_;
  std::shared_ptr<const re2::RE2> re_;  // kRegex, kNotRegex only
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_LABEL_MATCHER_H_
