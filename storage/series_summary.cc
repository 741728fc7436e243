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
                               std::string_view bytes) override {
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
      // latest, not the last): Finish decodes this chunk if it stays last.
      last_merged_.assign(bytes);
      if (chunk.finite_count() > 0) {
        s.min = chunk.min_value;
        s.max = chunk.max_value;
      }
      summary_.Append(s);
      last_is_merged_ = true;
      return true;
    }
    points_.clear();
    if (auto st = DecodeChunk(bytes, &points_); !st.ok()) return st;
    AddPoints(points_);
    return true;
  }

  void OnHead(const PointColumns& points) override { AddPoints(points); }

  absl::StatusOr<SeriesSummary> Finish() {
    if (last_is_merged_) {
      points_.clear();
      if (auto st = DecodeChunk(last_merged_, &points_); !st.ok()) return st;
      summary_.last_time_ms = points_.times_ms.back();
    }
    return summary_;
  }

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
  PointColumns points_;
  SeriesSummary summary_;
  std::string last_merged_;  // the last chunk taken from its header
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
  return summarizer.Finish();
}

}  // namespace stepdb::storage
