// The identity of a series, (project, run, metric, labels), its validation
// rules and its canonical byte encoding.
#ifndef STEPDB_STORAGE_SERIES_KEY_H_
#define STEPDB_STORAGE_SERIES_KEY_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace stepdb::storage {

// Limits on names (bytes). DESIGN.md fixes run (1..128) and metric (1..1024).
inline constexpr size_t kMaxProjectBytes = 128;
inline constexpr size_t kMaxRunBytes = 128;
inline constexpr size_t kMaxMetricBytes = 1024;
inline constexpr size_t kMaxLabels = 32;
inline constexpr size_t kMaxLabelKeyBytes = 128;
inline constexpr size_t kMaxLabelValueBytes = 1024;

using Labels = std::vector<std::pair<std::string, std::string>>;

struct SeriesKey {
  std::string project;
  std::string run;
  std::string metric;
  Labels labels;  // sorted by key, keys unique (see Canonicalize)

  bool operator==(const SeriesKey&) const = default;
};

// Checks one name: 1..max_bytes bytes, valid UTF-8, no NUL byte. The error
// (InvalidArgument) begins with `field`, e.g. "run: empty".
absl::Status ValidateName(std::string_view field, std::string_view value,
                          size_t max_bytes);

// Sorts labels by key. Returns InvalidArgument if a key repeats.
absl::Status CanonicalizeLabels(Labels* labels);

// Checks every name against the limits above: non-empty (label values too),
// valid UTF-8, no NUL byte, labels sorted with unique keys. The message
// names the offending field, e.g. "metric: empty".
absl::Status ValidateSeriesKey(const SeriesKey& key);

// "project/run/metric{k=v,k2=v2}", for messages and logs.
std::string SeriesDisplayName(const SeriesKey& key);

// Canonical encoding of (metric, labels): metric NUL (key NUL value NUL)*.
// Unambiguous because names contain no NUL.
std::string SeriesIdentity(const SeriesKey& key);
// Inverse of SeriesIdentity; fills metric and labels of *key.
absl::Status ParseSeriesIdentity(std::string_view identity, SeriesKey* key);

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_SERIES_KEY_H_
