// Parsers for `stepctl import` and for the step/value arguments of the other
// verbs. Pure functions of their input: no I/O, no gRPC, no clock (the caller
// passes "now"), so that every rule below is unit-tested in
// tests/import_parsers_test.cc.
//
// Every parser either fully succeeds or returns INVALID_ARGUMENT with a
// human-readable reason and leaves its output untouched, so that a malformed
// line is never half imported.
//
// Thread-safety: free functions are thread-safe; a CsvImporter is immutable
// after SetHeader() and may then be shared by readers.
#ifndef STEPDB_CLI_IMPORT_PARSERS_H_
#define STEPDB_CLI_IMPORT_PARSERS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace stepdb::cli {

// A step: a non-negative fixed-point number with 6 decimal places, split as
// on the wire into whole steps and millionths.
struct Step {
  int64_t whole = 0;
  uint32_t micros = 0;  // 0..999999

  friend bool operator==(const Step&, const Step&) = default;
};

// Parses a step written as a plain decimal: "12", "12.5", "0.000001". The
// conversion is done on the digits, never through a double, so it is exact.
// Grammar: DIGITS [ "." DIGITS ], at most 6 fractional digits, no sign, no
// exponent, no surrounding whitespace, whole part <= INT64_MAX.
// Errors: INVALID_ARGUMENT naming the problem (negative, too many fractional
// digits, not a number, out of range).
absl::StatusOr<Step> ParseStep(std::string_view text);

// Parses a float64 value: decimal or scientific notation with an optional
// sign ("1", "-2.5", ".5", "1e-3", "+4E+2"), or, case-insensitively, "nan",
// "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity". No
// surrounding whitespace. Round-trips every string printed by FormatValue()
// (below) to the identical double.
// Errors: INVALID_ARGUMENT if the text is not a number or its magnitude is
// out of the range of float64 (e.g. "1e400", "1e-400").
absl::StatusOr<double> ParseValue(std::string_view text);

// "12" for (12, 0); "12.5" for (12, 500000); "0.000001" for (0, 1): the
// shortest exact decimal, never trailing zeros. Inverse of ParseStep().
std::string FormatStep(int64_t whole, uint32_t micros);
inline std::string FormatStep(Step step) {
  return FormatStep(step.whole, step.micros);
}

// The shortest text that parses back (ParseValue, strtod, from_chars) to the
// identical float64 ("0.1", "1e+21", "-0", "5e-324"); "nan", "inf", "-inf"
// for the non-finite values (the sign and payload of a NaN are not kept).
std::string FormatValue(double v);

// Parses a signed decimal int64 ("-12", "0", "1700000000000"); no '+', no
// whitespace. Errors: INVALID_ARGUMENT (not an integer, out of range).
absl::StatusOr<int64_t> ParseInt64(std::string_view text);

// Floor division of a Unix-nanosecond timestamp to milliseconds
// (-1 ns -> -1 ms, not 0).
int64_t NanosToMillisFloor(int64_t nanos);

// Sorted by key, keys unique.
using Labels = std::vector<std::pair<std::string, std::string>>;

// One point of one series, as parsed from an import line.
struct ParsedPoint {
  std::string run;
  std::string metric;
  Labels labels;
  // False for a time-indexed point (no step): its series is sent with empty
  // `steps`, and `time_ms` is its axis.
  bool has_step = false;
  Step step;
  int64_t time_ms = 0;
  double value = 0;
};

// What a line falls back to when it does not say.
struct ImportDefaults {
  // Run id for lines that name none (`--run`); empty = such lines are
  // malformed.
  std::string run;
  // Unix milliseconds for lines without a timestamp.
  int64_t now_ms = 0;
};

// Parses one line of InfluxDB line protocol
//   measurement[,tag=value...] field=value[,field=value...] [timestamp_ns]
// and appends one point per metric field to `out`:
//   - metric = "<measurement>_<field key>";
//   - tag `run` = the run id (else defaults.run; neither = malformed); every
//     other tag is a label;
//   - a field named `step` is the step of all the line's points, not a
//     metric. It is an integer ("12i", "12u") or a plain decimal with at
//     most 6 fractional digits ("12", "12.5"); no step field = time-indexed
//     points;
//   - field values: floats (decimal, scientific; also nan/inf/-inf as an
//     extension), integers with an `i` suffix, unsigned integers with a `u`
//     suffix, booleans (t/T/true/True/TRUE, f/F/false/False/FALSE -> 1/0);
//     a quoted string field makes the line malformed (stepdb stores
//     numbers);
//   - the optional timestamp is in nanoseconds and becomes milliseconds by
//     floor division; none = defaults.now_ms;
//   - backslash escapes: "\," "\ " "\=" "\\" in the measurement, tag keys,
//     tag values and field keys;
//   - duplicate tag keys or field keys, empty names, and trailing garbage are
//     malformed.
// A blank line or a comment (first non-blank character '#') appends nothing
// and returns OK. A trailing '\r' is ignored.
// Errors: INVALID_ARGUMENT with the reason; `out` is then unchanged.
absl::Status ParseInfluxLine(std::string_view line,
                             const ImportDefaults& defaults,
                             std::vector<ParsedPoint>* out);

// Splits one CSV record (RFC 4180: fields separated by ',', a field may be
// enclosed in double quotes, inside which ',' and line breaks are literal and
// '""' is one '"'). A trailing '\r' is ignored.
// Errors: INVALID_ARGUMENT for an unterminated quoted field or a character
// after a closing quote other than ','.
absl::StatusOr<std::vector<std::string>> SplitCsvRecord(
    std::string_view record);

// True if `text` ends inside a quoted field, i.e. the record continues on the
// next line (the caller joins them with '\n' and tries again).
bool CsvRecordIsOpen(std::string_view text);

// Turns the rows of a CSV file into points. Layout:
//   header row (required), then one point per row;
//   `metric` (required), `value` (required, ParseValue()), `step` (optional,
//   ParseStep(); empty cell = time-indexed point), `time_ms` (optional, Unix
//   ms; empty cell or no column = defaults.now_ms), `run` (optional; empty
//   cell or no column = defaults.run), every other column is a label key
//   (empty cell = label absent).
// Whitespace around numeric cells and around header names is ignored; label
// values and names are taken verbatim.
class CsvImporter {
 public:
  CsvImporter() = default;

  // Parses the header record. Errors: INVALID_ARGUMENT if a required column
  // is missing, a column name is empty or repeated.
  absl::Status SetHeader(std::string_view record);
  bool has_header() const { return has_header_; }

  // Parses one data record into `*out`. Precondition: has_header().
  // Errors: INVALID_ARGUMENT naming the column (wrong number of fields, bad
  // number, empty metric, no run); `*out` is then unspecified.
  absl::Status ParseRow(std::string_view record, const ImportDefaults& defaults,
                        ParsedPoint* out) const;

 private:
  bool has_header_ = false;
  size_t num_columns_ = 0;
  int metric_col_ = -1;
  int value_col_ = -1;
  int step_col_ = -1;
  int time_col_ = -1;
  int run_col_ = -1;
  // (label key, column index), sorted by key.
  std::vector<std::pair<std::string, int>> label_cols_;
};

}  // namespace stepdb::cli

#endif  // STEPDB_CLI_IMPORT_PARSERS_H_
