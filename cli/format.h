// Output formatting for stepctl: exact step and value text, and row writers
// for the three output formats (aligned table, CSV, JSON array of objects).
//
// Thread-compatibility: a RowWriter is used by one thread at a time.
#ifndef STEPDB_CLI_FORMAT_H_
#define STEPDB_CLI_FORMAT_H_

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
// FormatStep() and FormatValue(), the exact text forms of steps and values,
// live next to their inverses ParseStep() and ParseValue().
#include "cli/import_parsers.h"

namespace stepdb::cli {

// FormatValue() as a JSON literal: a number, or the strings "NaN",
// "Infinity", "-Infinity" (JSON has no literal for them).
std::string FormatJsonValue(double v);

// Unix milliseconds as ISO-8601 UTC with milliseconds,
// "2024-05-01T12:00:00.123Z".
std::string FormatTimeIso(int64_t ms);

// "OK", "INVALID_ARGUMENT", ... for a gRPC / google.rpc / absl status code;
// "CODE_<n>" for an unknown one.
std::string CodeName(int code);

// Escapes `s` as a JSON string literal, including the quotes.
std::string JsonString(std::string_view s);

enum class OutputFormat { kTable, kCsv, kJson };

// "table", "csv", "json". Errors: INVALID_ARGUMENT for anything else.
absl::StatusOr<OutputFormat> ParseOutputFormat(std::string_view name);

// One cell of a row: its text (table and CSV) and its JSON literal.
struct Cell {
  std::string text;
  // A complete JSON literal (number, string, object); empty = the JSON
  // string of `text`.
  std::string json;
  // Right-aligned in tables (numbers).
  bool numeric = false;
};

Cell StringCell(std::string s);
// An integer as text and as a JSON number.
Cell IntCell(int64_t v);
Cell UintCell(uint64_t v);
// A step (FormatStep), a JSON number.
Cell StepCell(int64_t whole, uint32_t micros);
// A value (FormatValue / FormatJsonValue).
Cell ValueCell(double v);

// Writes rows with fixed columns to a stream:
//   kTable: a header line and aligned columns (numbers right-aligned); rows
//           are buffered in blocks, so widths may grow between blocks of a
//           very long output;
//   kCsv:   a header row, RFC 4180 quoting where needed;
//   kJson:  one array of objects keyed by the column names, one object per
//           line; rows are streamed, not buffered.
// Finish() must be called once, after the last row.
class RowWriter {
 public:
  static std::unique_ptr<RowWriter> Create(OutputFormat format,
                                           std::ostream& out,
                                           std::vector<std::string> columns);
  virtual ~RowWriter() = default;
  RowWriter(const RowWriter&) = delete;
  RowWriter& operator=(const RowWriter&) = delete;

  // Precondition: row.size() == number of columns.
  virtual void AddRow(std::vector<Cell> row) = 0;
  virtual void Finish() = 0;

 protected:
  RowWriter() = default;
};

}  // namespace stepdb::cli

#endif  // STEPDB_CLI_FORMAT_H_
