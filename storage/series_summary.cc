#include "storage/series_summary.h"

#include <cmath>

namespace stepdb::storage {
namespace {

void MergeMinMax(const std::optional<double>& min,
                 const std::optional<double>& max, SeriesSummary* into) {
  if (min && (!into->min || *min < *into->min)) into->min = min;
  if (max && (!into->max || *max > *into->max)) into->max = max;
}

class Summarizer : public ChunkVisitor {
 public:
  explicit Summarizer(const ReadRange& range) : range_(range) {}

  absl::StatusOr<bool> OnChunk(const ChunkSummary& chunk,
                               ChunkLoader load_chunk) override {
    const bool inside =
        chunk.min_step >= range_.steps.from && chunk.max_step <= range_.steps.to &&
        chunk.min_time_ms >= range_.times.from_ms &&
        chunk.max_time_ms <= range_.times.to_ms;
    if (inside && chunk.has_value_stats) {
      SeriesSummary s;
      s.count = chunk.count;
      s.first_step = chunk.min_step;
      s.last_step = chunk.max_step;
      s.last_value = chunk.last_value;
      // The header has no time of the last point (max_time_ms is the
      // latest, not the last): SummarizeSeries reads it if this chunk stays
      // last.
      if (chunk.finite_count() > 0) {
        s.min = chunk.min_value;
        s.max = chunk.max_value;
      }
      summary_.Append(s);
      last_is_merged_ = true;
      return true;
    }
    auto points = load_chunk();
    if (!points.ok()) return points.status();
    AddPoints(**points);
    return true;
  }

  void OnHead(const PointColumns& points) override { AddPoints(points); }

  // Whether the last point came from a chunk header, without its time.
  bool last_is_merged() const { return last_is_merged_; }
  SeriesSummary& summary() { return summary_; }

 private:
  void AddPoints(const PointColumns& points) {
    for (size_t i = 0; i < points.size(); ++i) {
      const uint64_t step = points.steps[i];
      const int64_t time = points.times_ms[i];
      if (step < range_.steps.from || step > range_.steps.to ||
          time < range_.times.from_ms || time > range_.times.to_ms) {
        continue;
      }
      SeriesSummary s;
      s.count = 1;
      s.first_step = s.last_step = step;
      s.last_time_ms = time;
      s.last_value = points.values[i];
      if (std::isfinite(s.last_value)) s.min = s.max = s.last_value;
      summary_.Append(s);
      last_is_merged_ = false;
    }
  }

  const ReadRange range_;
  SeriesSummary summary_;
  bool last_is_merged_ = false;
};

}  // namespace

void SeriesSummary::Append(const SeriesSummary& later) {
  if (later.count == 0) return;
  if (count == 0) first_step = later.first_step;
  count += later.count;
  last_step = later.last_step;
  last_time_ms = later.last_time_ms;
  last_value = later.last_value;
  MergeMinMax(later.min, later.max, this);
}

absl::StatusOr<SeriesSummary> SummarizeSeries(const Engine& engine,
                                              SeriesId series,
                                              const ReadRange& range) {
  Summarizer summarizer(range);
  if (auto s = engine.Scan(series, range, summarizer); !s.ok()) return s;
  SeriesSummary& summary = summarizer.summary();
  if (summarizer.last_is_merged()) {
    // The time of the last point: one more read, of its step only (the
    // chunk holding it is decoded, through the engine's chunk resolver).
    ReadRange last;
    last.steps = {summary.last_step, summary.last_step};
    bool found = false;
    auto read = engine.Read(series, last, 1, [&](const PointColumns& p) {
      if (!p.empty()) {
        summary.last_time_ms = p.times_ms.back();
        found = true;
      }
      return true;
    });
    if (!read.ok()) return read.status();
    if (!found) {
      // Deleted since the scan (retention, erasure): not a consistent view.
      return absl::AbortedError(
          "series changed while summarizing it; try again");
    }
  }
  return summary;
}

}  // namespace stepdb::storage
