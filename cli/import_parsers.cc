#include "cli/import_parsers.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace stepdb::cli {
namespace {

// Debian's Abseil has its own absl::string_view (not std::string_view).
absl::string_view AV(std::string_view s) { return {s.data(), s.size()}; }
std::string_view SV(absl::string_view s) { return {s.data(), s.size()}; }

// Quotes user text for an error message, escaping control bytes and cutting
// very long input so that one bad line cannot flood the terminal.
std::string Quote(std::string_view text) {
  constexpr size_t kMax = 64;
  if (text.size() > kMax) {
    return absl::StrCat("\"", absl::CHexEscape(AV(text.substr(0, kMax))),
                        "...\"");
  }
  return absl::StrCat("\"", absl::CHexEscape(AV(text)), "\"");
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsDigit);
}

std::string_view StripTrailingCr(std::string_view s) {
  if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  return s;
}

// Checks the decimal/scientific grammar accepted by ParseValue (without the
// sign, which the caller has removed):
//   ( DIGITS [ "." [DIGITS] ] | "." DIGITS ) [ ("e"|"E") ["+"|"-"] DIGITS ]
bool IsDecimalFloat(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  size_t mantissa_digits = 0;
  while (i < n && IsDigit(s[i])) ++i, ++mantissa_digits;
  if (i < n && s[i] == '.') {
    ++i;
    while (i < n && IsDigit(s[i])) ++i, ++mantissa_digits;
  }
  if (mantissa_digits == 0) return false;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    size_t exp_digits = 0;
    while (i < n && IsDigit(s[i])) ++i, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  return i == n;
}

// Reads a line-protocol name (measurement, tag key/value, field key) from
// `line` at `*pos` up to the first unescaped character of `stops`, undoing
// the escapes "\," "\ " "\=" "\\". A backslash before anything else is
// literal, as in InfluxDB.
std::string ReadName(std::string_view line, size_t* pos,
                     std::string_view stops) {
  std::string out;
  size_t i = *pos;
  while (i < line.size()) {
    const char c = line[i];
    if (c == '\\' && i + 1 < line.size()) {
      const char next = line[i + 1];
      if (next == ',' || next == ' ' || next == '=' || next == '\\') {
        out.push_back(next);
        i += 2;
        continue;
      }
    }
    if (stops.find(c) != std::string_view::npos) break;
    out.push_back(c);
    ++i;
  }
  *pos = i;
  return out;
}

bool IsTrue(std::string_view v) {
  return v == "t" || v == "T" || v == "true" || v == "True" || v == "TRUE";
}
bool IsFalse(std::string_view v) {
  return v == "f" || v == "F" || v == "false" || v == "False" || v == "FALSE";
}

absl::StatusOr<uint64_t> ParseUint64(std::string_view text) {
  if (!AllDigits(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an unsigned integer: ", Quote(text)));
  }
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsigned integer out of range: ", Quote(text)));
  }
  return v;
}

// The numeric content of a line-protocol field value.
struct FieldValue {
  enum Kind { kFloat, kInt, kUint, kBool } kind = kFloat;
  double value = 0;
  int64_t int_value = 0;    // kInt
  uint64_t uint_value = 0;  // kUint
};

absl::StatusOr<FieldValue> ParseFieldValue(std::string_view raw) {
  FieldValue fv;
  if (IsTrue(raw) || IsFalse(raw)) {
    fv.kind = FieldValue::kBool;
    fv.value = IsTrue(raw) ? 1.0 : 0.0;
    return fv;
  }
  if (raw.size() > 1 && raw.back() == 'i') {
    absl::StatusOr<int64_t> v = ParseInt64(raw.substr(0, raw.size() - 1));
    if (!v.ok()) return v.status();
    fv.kind = FieldValue::kInt;
    fv.int_value = *v;
    fv.value = static_cast<double>(*v);
    return fv;
  }
  if (raw.size() > 1 && raw.back() == 'u') {
    absl::StatusOr<uint64_t> v = ParseUint64(raw.substr(0, raw.size() - 1));
    if (!v.ok()) return v.status();
    fv.kind = FieldValue::kUint;
    fv.uint_value = *v;
    fv.value = static_cast<double>(*v);
    return fv;
  }
  absl::StatusOr<double> v = ParseValue(raw);
  if (!v.ok()) return v.status();
  fv.value = *v;
  return fv;
}

// The step of a line from its `step` field.
absl::StatusOr<Step> StepFromField(std::string_view raw, const FieldValue& fv) {
  switch (fv.kind) {
    case FieldValue::kInt:
      if (fv.int_value < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "field \"step\" must be non-negative, got ", fv.int_value));
      }
      return Step{fv.int_value, 0};
    case FieldValue::kUint:
      if (fv.uint_value >
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::InvalidArgumentError(
            absl::StrCat("field \"step\" out of range: ", fv.uint_value));
      }
      return Step{static_cast<int64_t>(fv.uint_value), 0};
    case FieldValue::kBool:
      return absl::InvalidArgumentError(
          "field \"step\" must be an integer, got a boolean");
    case FieldValue::kFloat: {
      // A float-typed step ("12", "12.5") is accepted when it is a plain
      // decimal; parsed from the text, so it is exact.
      absl::StatusOr<Step> step = ParseStep(raw);
      if (!step.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("field \"step\": ", step.status().message()));
      }
      return *step;
    }
  }
  return absl::InternalError("unreachable");
}

}  // namespace

absl::StatusOr<Step> ParseStep(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("empty step");
  if (text[0] == '-') {
    return absl::InvalidArgumentError(
        absl::StrCat("step must be non-negative: ", Quote(text)));
  }
  const size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  const std::string_view frac =
      dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  if (!AllDigits(whole) ||
      (dot != std::string_view::npos && !AllDigits(frac))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step is not a decimal number (like 12 or 12.5): ", Quote(text)));
  }
  if (frac.size() > 6) {
    return absl::InvalidArgumentError(
        absl::StrCat("step has more than 6 fractional digits: ", Quote(text)));
  }
  Step step;
  auto [ptr, ec] =
      std::from_chars(whole.data(), whole.data() + whole.size(), step.whole);
  if (ec == std::errc::result_out_of_range) {
    return absl::InvalidArgumentError(
        absl::StrCat("step out of range: ", Quote(text)));
  }
  uint32_t micros = 0;
  for (size_t i = 0; i < 6; ++i) {
    micros = micros * 10 + (i < frac.size() ? frac[i] - '0' : 0);
  }
  step.micros = micros;
  return step;
}

absl::StatusOr<double> ParseValue(std::string_view text) {
  std::string_view body = text;
  bool negative = false;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    negative = body[0] == '-';
    body.remove_prefix(1);
  }
  if (absl::EqualsIgnoreCase(AV(body), "nan")) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    return negative ? -nan : nan;
  }
  if (absl::EqualsIgnoreCase(AV(body), "inf") ||
      absl::EqualsIgnoreCase(AV(body), "infinity")) {
    const double inf = std::numeric_limits<double>::infinity();
    return negative ? -inf : inf;
  }
  if (!IsDecimalFloat(body)) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a number: ", Quote(text)));
  }
  double v = 0;
  // from_chars parses the shortest round-trip form of to_chars exactly.
  auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return absl::InvalidArgumentError(
        absl::StrCat("number out of the range of float64: ", Quote(text)));
  }
  if (ec != std::errc() || ptr != body.data() + body.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a number: ", Quote(text)));
  }
  return negative ? -v : v;
}

absl::StatusOr<int64_t> ParseInt64(std::string_view text) {
  const std::string_view digits =
      !text.empty() && text[0] == '-' ? text.substr(1) : text;
  if (!AllDigits(digits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an integer: ", Quote(text)));
  }
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return absl::InvalidArgumentError(
        absl::StrCat("integer out of range: ", Quote(text)));
  }
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an integer: ", Quote(text)));
  }
  return v;
}

std::string FormatStep(int64_t whole, uint32_t micros) {
  std::string out = std::to_string(whole);
  if (micros == 0) return out;
  char frac[8];
  uint32_t m = micros % 1000000;
  for (int i = 5; i >= 0; --i) {
    frac[i] = static_cast<char>('0' + m % 10);
    m /= 10;
  }
  int len = 6;
  while (len > 0 && frac[len - 1] == '0') --len;
  out.push_back('.');
  out.append(frac, len);
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  // Without a precision, to_chars prints the shortest representation that
  // round-trips exactly.
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, ptr);
}

int64_t NanosToMillisFloor(int64_t nanos) {
  int64_t q = nanos / 1000000;
  if (nanos % 1000000 < 0) --q;
  return q;
}

absl::Status ParseInfluxLine(std::string_view line,
                             const ImportDefaults& defaults,
                             std::vector<ParsedPoint>* out) {
  line = StripTrailingCr(line);
  size_t pos = 0;
  while (pos < line.size() && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
  if (pos == line.size() || line[pos] == '#') return absl::OkStatus();
  line = line.substr(pos);
  pos = 0;
  const size_t n = line.size();

  // measurement
  const std::string measurement = ReadName(line, &pos, ", ");
  if (measurement.empty()) {
    return absl::InvalidArgumentError("empty measurement name");
  }

  // tags
  std::string run;
  bool has_run_tag = false;
  Labels labels;
  while (pos < n && line[pos] == ',') {
    ++pos;
    std::string key = ReadName(line, &pos, "=, ");
    if (pos >= n || line[pos] != '=') {
      return absl::InvalidArgumentError(
          absl::StrCat("tag ", Quote(key), " has no '=value'"));
    }
    if (key.empty()) return absl::InvalidArgumentError("empty tag key");
    ++pos;
    std::string value = ReadName(line, &pos, ", ");
    if (value.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tag ", Quote(key), " has an empty value"));
    }
    if (key == "run") {
      if (has_run_tag) {
        return absl::InvalidArgumentError("tag \"run\" appears twice");
      }
      has_run_tag = true;
      run = std::move(value);
    } else {
      labels.emplace_back(std::move(key), std::move(value));
    }
  }
  std::sort(labels.begin(), labels.end());
  for (size_t i = 1; i < labels.size(); ++i) {
    if (labels[i].first == labels[i - 1].first) {
      return absl::InvalidArgumentError(
          absl::StrCat("tag ", Quote(labels[i].first), " appears twice"));
    }
  }
  if (pos >= n) {
    return absl::InvalidArgumentError(
        "no fields (expected a space and field=value after the tags)");
  }
  if (line[pos] != ' ') {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected character ", Quote(line.substr(pos, 1)),
                     " after the measurement and tags"));
  }
  while (pos < n && line[pos] == ' ') ++pos;
  if (pos >= n) return absl::InvalidArgumentError("no fields");

  // fields
  struct Field {
    std::string key;
    double value;
  };
  std::vector<Field> fields;
  bool has_step = false;
  Step step;
  std::vector<std::string> seen_keys;
  while (true) {
    std::string key = ReadName(line, &pos, "=, ");
    if (pos >= n || line[pos] != '=') {
      return absl::InvalidArgumentError(
          absl::StrCat("field ", Quote(key), " has no '=value'"));
    }
    if (key.empty()) return absl::InvalidArgumentError("empty field key");
    ++pos;
    if (std::find(seen_keys.begin(), seen_keys.end(), key) != seen_keys.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("field ", Quote(key), " appears twice"));
    }
    seen_keys.push_back(key);
    if (pos < n && line[pos] == '"') {
      // Scan over the string so that the reason is about its type, not about
      // a stray quote.
      ++pos;
      while (pos < n && line[pos] != '"') pos += line[pos] == '\\' ? 2 : 1;
      if (pos >= n) {
        return absl::InvalidArgumentError(
            absl::StrCat("field ", Quote(key), ": unterminated string"));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("field ", Quote(key),
                       " is a string; stepdb stores only numbers (use a "
                       "float, an integer (i/u) or a boolean)"));
    }
    const size_t end = line.find_first_of(", ", pos);
    const std::string_view raw =
        line.substr(pos, end == std::string_view::npos ? std::string_view::npos
                                                       : end - pos);
    pos = end == std::string_view::npos ? n : end;
    if (raw.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("field ", Quote(key), " has an empty value"));
    }
    absl::StatusOr<FieldValue> fv = ParseFieldValue(raw);
    if (!fv.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("field ", Quote(key), ": ", fv.status().message()));
    }
    if (key == "step") {
      absl::StatusOr<Step> s = StepFromField(raw, *fv);
      if (!s.ok()) return s.status();
      has_step = true;
      step = *s;
    } else {
      fields.push_back(Field{std::move(key), fv->value});
    }
    if (pos < n && line[pos] == ',') {
      ++pos;
      continue;
    }
    break;
  }
  if (fields.empty()) {
    return absl::InvalidArgumentError(
        "no metric fields (a \"step\" field alone is not a metric)");
  }

  // timestamp
  while (pos < n && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
  int64_t time_ms = defaults.now_ms;
  if (pos < n) {
    std::string_view ts = line.substr(pos);
    while (!ts.empty() && (ts.back() == ' ' || ts.back() == '\t')) {
      ts.remove_suffix(1);
    }
    if (ts.find_first_of(" \t") != std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected text after the timestamp: ", Quote(ts)));
    }
    absl::StatusOr<int64_t> ns = ParseInt64(ts);
    if (!ns.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad timestamp (expected integer nanoseconds): ", Quote(ts)));
    }
    time_ms = NanosToMillisFloor(*ns);
  }

  if (!has_run_tag) {
    if (defaults.run.empty()) {
      return absl::InvalidArgumentError(
          "no run: the line has no \"run\" tag and --run is not set");
    }
    run = defaults.run;
  }

  for (Field& f : fields) {
    ParsedPoint p;
    p.run = run;
    p.metric = absl::StrCat(measurement, "_", f.key);
    p.labels = labels;
    p.has_step = has_step;
    p.step = step;
    p.time_ms = time_ms;
    p.value = f.value;
    out->push_back(std::move(p));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> SplitCsvRecord(
    std::string_view record) {
  record = StripTrailingCr(record);
  std::vector<std::string> fields;
  const size_t n = record.size();
  size_t i = 0;
  while (true) {
    std::string field;
    if (i < n && record[i] == '"') {
      ++i;
      while (true) {
        if (i >= n) {
          return absl::InvalidArgumentError(absl::StrCat(
              "unterminated quoted field (column ", fields.size() + 1, ")"));
        }
        if (record[i] == '"') {
          if (i + 1 < n && record[i + 1] == '"') {
            field.push_back('"');
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field.push_back(record[i++]);
      }
      if (i < n && record[i] != ',') {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected character after a closing quote (column ",
                         fields.size() + 1, ")"));
      }
    } else {
      size_t end = record.find(',', i);
      if (end == std::string_view::npos) end = n;
      field.assign(record.substr(i, end - i));
      i = end;
    }
    fields.push_back(std::move(field));
    if (i >= n) break;
    ++i;  // the comma; a trailing comma yields one more, empty, field
  }
  return fields;
}

bool CsvRecordIsOpen(std::string_view text) {
  bool at_field_start = true;
  bool in_quotes = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          ++i;
        } else {
          in_quotes = false;
        }
      }
    } else if (c == ',') {
      at_field_start = true;
      continue;
    } else if (c == '"' && at_field_start) {
      in_quotes = true;
    }
    at_field_start = false;
  }
  return in_quotes;
}

absl::Status CsvImporter::SetHeader(std::string_view record) {
  if (absl::StartsWith(AV(record), "\xEF\xBB\xBF")) record.remove_prefix(3);
  absl::StatusOr<std::vector<std::string>> names = SplitCsvRecord(record);
  if (!names.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CSV header: ", names.status().message()));
  }
  CsvImporter h;
  std::vector<std::string> seen;
  for (size_t i = 0; i < names->size(); ++i) {
    const std::string name(SV(absl::StripAsciiWhitespace((*names)[i])));
    const int col = static_cast<int>(i);
    if (name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("CSV header: column ", i + 1, " has an empty name"));
    }
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("CSV header: column ", Quote(name), " appears twice"));
    }
    seen.push_back(name);
    if (name == "metric") {
      h.metric_col_ = col;
    } else if (name == "value") {
      h.value_col_ = col;
    } else if (name == "step") {
      h.step_col_ = col;
    } else if (name == "time_ms") {
      h.time_col_ = col;
    } else if (name == "run") {
      h.run_col_ = col;
    } else {
      h.label_cols_.emplace_back(name, col);
    }
  }
  if (h.metric_col_ < 0) {
    return absl::InvalidArgumentError(
        "CSV header has no \"metric\" column (required: metric, value)");
  }
  if (h.value_col_ < 0) {
    return absl::InvalidArgumentError(
        "CSV header has no \"value\" column (required: metric, value)");
  }
  std::sort(h.label_cols_.begin(), h.label_cols_.end());
  h.num_columns_ = names->size();
  h.has_header_ = true;
  *this = std::move(h);
  return absl::OkStatus();
}

absl::Status CsvImporter::ParseRow(std::string_view record,
                                   const ImportDefaults& defaults,
                                   ParsedPoint* out) const {
  if (!has_header_) return absl::FailedPreconditionError("no CSV header");
  absl::StatusOr<std::vector<std::string>> cells = SplitCsvRecord(record);
  if (!cells.ok()) return cells.status();
  if (cells->size() != num_columns_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "row has ", cells->size(), " fields, the header has ", num_columns_));
  }
  auto numeric = [&](int col) {
    return SV(absl::StripAsciiWhitespace((*cells)[col]));
  };

  ParsedPoint p;
  p.metric = (*cells)[metric_col_];
  if (p.metric.empty()) {
    return absl::InvalidArgumentError("column \"metric\" is empty");
  }

  const std::string_view value = numeric(value_col_);
  if (value.empty()) {
    return absl::InvalidArgumentError("column \"value\" is empty");
  }
  absl::StatusOr<double> v = ParseValue(value);
  if (!v.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("column \"value\": ", v.status().message()));
  }
  p.value = *v;

  if (step_col_ >= 0 && !numeric(step_col_).empty()) {
    absl::StatusOr<Step> step = ParseStep(numeric(step_col_));
    if (!step.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("column \"step\": ", step.status().message()));
    }
    p.has_step = true;
    p.step = *step;
  }

  p.time_ms = defaults.now_ms;
  if (time_col_ >= 0 && !numeric(time_col_).empty()) {
    absl::StatusOr<int64_t> t = ParseInt64(numeric(time_col_));
    if (!t.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column \"time_ms\" (Unix milliseconds): ", t.status().message()));
    }
    p.time_ms = *t;
  }

  if (run_col_ >= 0) p.run = (*cells)[run_col_];
  if (p.run.empty()) p.run = defaults.run;
  if (p.run.empty()) {
    return absl::InvalidArgumentError(
        run_col_ >= 0
            ? "no run: the \"run\" cell is empty and --run is not set"
            : "no run: there is no \"run\" column and --run is not set");
  }

  for (const auto& [key, col] : label_cols_) {
    if (!(*cells)[col].empty()) p.labels.emplace_back(key, (*cells)[col]);
  }
  *out = std::move(p);
  return absl::OkStatus();
}

}  // namespace stepdb::cli
