#include "storage/series_key.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace stepdb::storage {
namespace {

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Reject overlong forms, surrogates and code points past U+10FFFF.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

}  // namespace

absl::Status ValidateName(std::string_view field_view,
                          std::string_view value_view, size_t max_bytes) {
  const absl::string_view field(field_view.data(), field_view.size());
  const absl::string_view value(value_view.data(), value_view.size());
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty"));
  if (value.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ", value.size(), " bytes, more than the limit of ", max_bytes));
  }
  if (value.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": contains a NUL byte"));
  }
  if (!IsValidUtf8(value)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": not valid UTF-8"));
  }
  return absl::OkStatus();
}

absl::Status CanonicalizeLabels(Labels* labels) {
  std::sort(labels->begin(), labels->end());
  for (size_t i = 1; i < labels->size(); ++i) {
    if ((*labels)[i].first == (*labels)[i - 1].first) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels: key \"", (*labels)[i].first, "\" repeats"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSeriesKey(const SeriesKey& key) {
  if (auto s = ValidateName("project", key.project, kMaxProjectBytes); !s.ok()) return s;
  if (auto s = ValidateName("run", key.run, kMaxRunBytes); !s.ok()) return s;
  if (auto s = ValidateName("metric", key.metric, kMaxMetricBytes); !s.ok()) return s;
  if (key.labels.size() > kMaxLabels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "labels: ", key.labels.size(), " labels, more than the limit of ", kMaxLabels));
  }
  for (size_t i = 0; i < key.labels.size(); ++i) {
    const auto& [k, v] = key.labels[i];
    if (auto s = ValidateName("label key", k, kMaxLabelKeyBytes); !s.ok()) return s;
    if (auto s = ValidateName(absl::StrCat("label \"", k, "\" value"), v,
                           kMaxLabelValueBytes);
        !s.ok()) {
      return s;
    }
    if (i > 0 && key.labels[i - 1].first >= k) {
      return absl::InvalidArgumentError("labels: not sorted or a key repeats");
    }
  }
  return absl::OkStatus();
}

std::string SeriesDisplayName(const SeriesKey& key) {
  std::string out = absl::StrCat(key.project, "/", key.run, "/", key.metric);
  if (!key.labels.empty()) {
    out.push_back('{');
    for (size_t i = 0; i < key.labels.size(); ++i) {
      if (i > 0) out.push_back(',');
      absl::StrAppend(&out, key.labels[i].first, "=", key.labels[i].second);
    }
    out.push_back('}');
  }
  return out;
}

std::string SeriesIdentity(const SeriesKey& key) {
  std::string out = key.metric;
  out.push_back('\0');
  for (const auto& [k, v] : key.labels) {
    absl::StrAppend(&out, k);
    out.push_back('\0');
    absl::StrAppend(&out, v);
    out.push_back('\0');
  }
  return out;
}

absl::Status ParseSeriesIdentity(std::string_view identity, SeriesKey* key) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start < identity.size()) {
    const size_t nul = identity.find('\0', start);
    if (nul == std::string_view::npos) {
      return absl::DataLossError("series identity: missing terminator");
    }
    parts.push_back(identity.substr(start, nul - start));
    start = nul + 1;
  }
  if (parts.empty() || parts.size() % 2 != 1) {
    return absl::DataLossError("series identity: malformed");
  }
  key->metric = std::string(parts[0]);
  key->labels.clear();
  for (size_t i = 1; i + 1 < parts.size(); i += 2) {
    key->labels.emplace_back(std::string(parts[i]), std::string(parts[i + 1]));
  }
  return absl::OkStatus();
}

}  // namespace stepdb::storage
