// libFuzzer target for the `stepctl import` parsers (cli/import_parsers.h):
// ParseInfluxLine, SplitCsvRecord / CsvRecordIsOpen / CsvImporter, ParseStep,
// ParseValue and ParseInt64, all on every input.
//
// Properties checked, whatever the bytes:
//   - no crash, hang, out-of-bounds read or UB (ASan/UBSan);
//   - every error is INVALID_ARGUMENT;
//   - ParseInfluxLine leaves its output untouched on error; on success every
//     appended point has a run, a metric, sorted unique labels and a valid
//     step;
//   - ParseStep(FormatStep(s)) == s, ParseValue(FormatValue(v)) is v
//     bit-exactly (NaN: is NaN), ParseInt64(to_string(i)) == i.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "cli/import_parsers.h"

namespace {

using stepdb::cli::CsvImporter;
using stepdb::cli::ImportDefaults;
using stepdb::cli::ParsedPoint;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "fuzz_import_parsers: property violated: %s\n", what);
  std::abort();
}

void Check(bool ok, const char* what) {
  if (!ok) Fail(what);
}

void CheckError(const absl::Status& s, const char* what) {
  if (!s.ok()) Check(s.code() == absl::StatusCode::kInvalidArgument, what);
}

void CheckPoint(const ParsedPoint& p, const char* what) {
  Check(!p.run.empty(), what);
  Check(!p.metric.empty(), what);
  for (size_t i = 1; i < p.labels.size(); ++i) {
    Check(p.labels[i - 1].first < p.labels[i].first, what);
  }
  if (p.has_step) {
    Check(p.step.whole >= 0 && p.step.micros <= 999'999, what);
  }
}

void FuzzScalars(std::string_view text) {
  auto step = stepdb::cli::ParseStep(text);
  CheckError(step.status(), "ParseStep: error code");
  if (step.ok()) {
    Check(step->whole >= 0 && step->micros <= 999'999, "ParseStep: range");
    auto again = stepdb::cli::ParseStep(stepdb::cli::FormatStep(*step));
    Check(again.ok() && *again == *step, "ParseStep(FormatStep(s)) != s");
  }

  auto value = stepdb::cli::ParseValue(text);
  CheckError(value.status(), "ParseValue: error code");
  if (value.ok()) {
    auto again = stepdb::cli::ParseValue(stepdb::cli::FormatValue(*value));
    Check(again.ok(), "ParseValue(FormatValue(v)) failed");
    if (std::isnan(*value)) {
      Check(std::isnan(*again), "FormatValue(NaN) round trip");
    } else {
      Check(std::bit_cast<uint64_t>(*again) == std::bit_cast<uint64_t>(*value),
            "ParseValue(FormatValue(v)) != v");
    }
  }

  auto integer = stepdb::cli::ParseInt64(text);
  CheckError(integer.status(), "ParseInt64: error code");
  if (integer.ok()) {
    auto again = stepdb::cli::ParseInt64(std::to_string(*integer));
    Check(again.ok() && *again == *integer, "ParseInt64 round trip");
  }
}

void FuzzInflux(std::string_view text, const ImportDefaults& defaults) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(start, end - start);
    std::vector<ParsedPoint> out(1);
    out[0].metric = "sentinel";
    const absl::Status s = stepdb::cli::ParseInfluxLine(line, defaults, &out);
    CheckError(s, "ParseInfluxLine: error code");
    Check(!out.empty() && out[0].metric == "sentinel",
          "ParseInfluxLine: touched existing output");
    if (!s.ok()) {
      Check(out.size() == 1, "ParseInfluxLine: output changed on error");
    } else {
      for (size_t i = 1; i < out.size(); ++i) {
        CheckPoint(out[i], "ParseInfluxLine: bad point");
      }
    }
    start = end + 1;
  }
}

// Splits `text` into records as `stepctl import --format csv` does: lines are
// joined with '\n' while a quoted field is open.
std::vector<std::string> CsvRecords(std::string_view text) {
  std::vector<std::string> records;
  std::string pending;
  bool open = false;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(start, end - start);
    if (open) pending.push_back('\n');
    pending.append(line);
    open = stepdb::cli::CsvRecordIsOpen(pending);
    if (!open) {
      records.push_back(std::move(pending));
      pending.clear();
    }
    start = end + 1;
  }
  if (open) records.push_back(std::move(pending));
  return records;
}

void FuzzCsv(std::string_view text, const ImportDefaults& defaults) {
  auto fields = stepdb::cli::SplitCsvRecord(text);
  CheckError(fields.status(), "SplitCsvRecord: error code");
  if (fields.ok() && stepdb::cli::CsvRecordIsOpen(text)) {
    Fail("SplitCsvRecord accepted an open record");
  }

  const std::vector<std::string> records = CsvRecords(text);
  if (records.empty()) return;
  CsvImporter importer;
  const absl::Status header = importer.SetHeader(records[0]);
  CheckError(header, "SetHeader: error code");
  Check(header.ok() == importer.has_header(), "SetHeader vs has_header");
  if (!header.ok()) return;
  for (size_t i = 1; i < records.size(); ++i) {
    ParsedPoint point;
    const absl::Status row = importer.ParseRow(records[i], defaults, &point);
    CheckError(row, "ParseRow: error code");
    if (row.ok()) CheckPoint(point, "ParseRow: bad point");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // Half of the inputs run with a default run id, half without, so that both
  // "run from the line" and "run from --run" paths are explored.
  ImportDefaults defaults;
  defaults.now_ms = 1'700'000'000'000;
  if (size % 2 == 0) defaults.run = "default-run";
  FuzzScalars(text);
  FuzzInflux(text, defaults);
  FuzzCsv(text, defaults);
  return 0;
}
