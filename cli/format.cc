#include "cli/format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iterator>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace stepdb::cli {
namespace {

// Display width of UTF-8 text: code points, not bytes.
size_t DisplayWidth(std::string_view s) {
  size_t w = 0;
  for (unsigned char c : s) w += (c & 0xC0) != 0x80;
  return w;
}

class TableWriter : public RowWriter {
 public:
  TableWriter(std::ostream& out, std::vector<std::string> columns)
      : out_(out), columns_(std::move(columns)), widths_(columns_.size()) {
    for (size_t i = 0; i < columns_.size(); ++i) {
      widths_[i] = DisplayWidth(columns_[i]);
    }
  }

  void AddRow(std::vector<Cell> row) override {
    rows_.push_back(std::move(row));
    if (rows_.size() >= kBlockRows) Flush();
  }

  void Finish() override {
    Flush();
    if (!header_written_) WriteHeader();
    out_.flush();
  }

 private:
  // Long outputs are written in blocks so that memory stays bounded.
  static constexpr size_t kBlockRows = 4096;

  void WriteHeader() {
    std::vector<Cell> header;
    for (const std::string& c : columns_) header.push_back(StringCell(c));
    WriteLine(header);
    header_written_ = true;
  }

  void WriteLine(const std::vector<Cell>& row) {
    std::string line;
    for (size_t i = 0; i < row.size() && i < widths_.size(); ++i) {
      const Cell& c = row[i];
      const size_t pad =
          widths_[i] - std::min(widths_[i], DisplayWidth(c.text));
      const bool last = i + 1 == row.size();
      if (c.numeric) {
        line.append(pad, ' ');
        line += c.text;
      } else {
        line += c.text;
        if (!last) line.append(pad, ' ');
      }
      if (!last) line += "  ";
    }
    line += '\n';
    out_ << line;
  }

  void Flush() {
    for (const auto& row : rows_) {
      for (size_t i = 0; i < row.size() && i < widths_.size(); ++i) {
        widths_[i] = std::max(widths_[i], DisplayWidth(row[i].text));
      }
    }
    if (!header_written_ && !rows_.empty()) WriteHeader();
    for (const auto& row : rows_) WriteLine(row);
    rows_.clear();
  }

  std::ostream& out_;
  const std::vector<std::string> columns_;
  std::vector<size_t> widths_;
  std::vector<std::vector<Cell>> rows_;
  bool header_written_ = false;
};

std::string CsvField(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) {
    return std::string(s);
  }
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

class CsvWriter : public RowWriter {
 public:
  CsvWriter(std::ostream& out, const std::vector<std::string>& columns)
      : out_(out) {
    std::vector<Cell> header;
    for (const std::string& c : columns) header.push_back(StringCell(c));
    AddRow(std::move(header));
  }

  void AddRow(std::vector<Cell> row) override {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += ',';
      line += CsvField(row[i].text);
    }
    line += '\n';
    out_ << line;
  }

  void Finish() override { out_.flush(); }

 private:
  std::ostream& out_;
};

class JsonWriter : public RowWriter {
 public:
  JsonWriter(std::ostream& out, const std::vector<std::string>& columns)
      : out_(out) {
    for (const std::string& c : columns) keys_.push_back(JsonString(c) + ":");
  }

  void AddRow(std::vector<Cell> row) override {
    std::string line = rows_ == 0 ? "[\n  {" : ",\n  {";
    for (size_t i = 0; i < row.size() && i < keys_.size(); ++i) {
      if (i > 0) line += ',';
      line += keys_[i];
      line += row[i].json.empty() ? JsonString(row[i].text) : row[i].json;
    }
    line += '}';
    out_ << line;
    ++rows_;
  }

  void Finish() override {
    out_ << (rows_ == 0 ? "[]\n" : "\n]\n");
    out_.flush();
  }

 private:
  std::ostream& out_;
  std::vector<std::string> keys_;
  size_t rows_ = 0;
};

}  // namespace

std::string FormatJsonValue(double v) {
  if (std::isnan(v)) return "\"NaN\"";
  if (std::isinf(v)) return v > 0 ? "\"Infinity\"" : "\"-Infinity\"";
  return FormatValue(v);
}

std::string FormatTimeIso(int64_t ms) {
  int64_t secs = ms / 1000;
  int64_t millis = ms % 1000;
  if (millis < 0) {
    millis += 1000;
    --secs;
  }
  const std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return std::to_string(ms);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, static_cast<int>(millis));
  return buf;
}

std::string CodeName(int code) {
  static constexpr const char* kNames[] = {
      "OK",
      "CANCELLED",
      "UNKNOWN",
      "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED",
      "NOT_FOUND",
      "ALREADY_EXISTS",
      "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION",
      "ABORTED",
      "OUT_OF_RANGE",
      "UNIMPLEMENTED",
      "INTERNAL",
      "UNAVAILABLE",
      "DATA_LOSS",
      "UNAUTHENTICATED",
  };
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) {
    return kNames[code];
  }
  return absl::StrCat("CODE_", code);
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

absl::StatusOr<OutputFormat> ParseOutputFormat(std::string_view name) {
  if (name == "table") return OutputFormat::kTable;
  if (name == "csv") return OutputFormat::kCsv;
  if (name == "json") return OutputFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown output format \"", std::string(name),
                   "\" (expected table, csv or json)"));
}

Cell StringCell(std::string s) { return Cell{std::move(s), "", false}; }

Cell IntCell(int64_t v) {
  std::string s = std::to_string(v);
  return Cell{s, s, true};
}

Cell UintCell(uint64_t v) {
  std::string s = std::to_string(v);
  return Cell{s, s, true};
}

Cell StepCell(int64_t whole, uint32_t micros) {
  std::string s = FormatStep(whole, micros);
  return Cell{s, s, true};
}

Cell ValueCell(double v) {
  return Cell{FormatValue(v), FormatJsonValue(v), true};
}

std::unique_ptr<RowWriter> RowWriter::Create(OutputFormat format,
                                             std::ostream& out,
                                             std::vector<std::string> columns) {
  switch (format) {
    case OutputFormat::kCsv:
      return std::make_unique<CsvWriter>(out, columns);
    case OutputFormat::kJson:
      return std::make_unique<JsonWriter>(out, columns);
    case OutputFormat::kTable:
      break;
  }
  return std::make_unique<TableWriter>(out, std::move(columns));
}

}  // namespace stepdb::cli
