// One series' points within a range, summed up: count, first and last step,
// the last point, and min/max of the finite values. What a run page shows
// per series. Sealed chunks wholly inside the range are taken from their
// header summary without decoding.
#ifndef STEPDB_STORAGE_SERIES_SUMMARY_H_
#define STEPDB_STORAGE_SERIES_SUMMARY_H_

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "storage/engine.h"

namespace stepdb::storage {

struct SeriesSummary {
  uint64_t count = 0;
  uint64_t first_step = 0;  // valid if count > 0
  uint64_t last_step = 0;
  int64_t last_time_ms = 0;
  double last_value = 0.0;
  std::optional<double> min;  // over finite values; unset if none
  std::optional<double> max;

  // Adds the points of `later`, all of whose steps follow this one's.
  void Append(const SeriesSummary& later);
};

// Summarizes the points of `series` in `range`. NotFound for an unknown
// series, DataLoss for a corrupt chunk, Aborted if the chunk holding the
// last point was deleted between the scan and the read of its time.
absl::StatusOr<SeriesSummary> SummarizeSeries(const Engine& engine,
                                              SeriesId series,
                                              const ReadRange& range);

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_SERIES_SUMMARY_H_
