#include "storage/latency_histogram.h"

#include <algorithm>

namespace stepdb::storage {

void LatencyHistogram::Record(absl::Duration d) {
  const double seconds = std::max(0.0, absl::ToDoubleSeconds(d));
  const size_t bucket =
      std::lower_bound(kBounds.begin(), kBounds.end(), seconds) -
      kBounds.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_nanos_.fetch_add(static_cast<uint64_t>(seconds * 1e9),
                       std::memory_order_relaxed);
}

LatencyHistogram::Snapshot LatencyHistogram::Take() const {
  Snapshot s;
  uint64_t total = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.sum_seconds = sum_nanos_.load(std::memory_order_relaxed) / 1e9;
  return s;
}

}  // namespace stepdb::storage
