// A latency histogram for the server's own /metrics: fixed buckets, lock-free
// recording (two relaxed atomic adds), cumulative snapshots in Prometheus'
// shape (`_bucket{le=...}`, `_sum`, `_count`).
#ifndef STEPDB_STORAGE_LATENCY_HISTOGRAM_H_
#define STEPDB_STORAGE_LATENCY_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace stepdb::storage {

class LatencyHistogram {
 public:
  // Upper bounds in seconds, from half a millisecond (an fsync) to ten
  // seconds (a stalled disk); +Inf is implied. Dense around 1-100 ms, where
  // ack latency targets live.
  static constexpr std::array<double, 14> kBounds = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05,
      0.1,    0.25,  0.5,    1,     2.5,  5,    10};

  struct Snapshot {
    // cumulative[i]: observations <= kBounds[i]; the last is every one.
    std::array<uint64_t, kBounds.size() + 1> cumulative{};
    double sum_seconds = 0;
    uint64_t count() const { return cumulative.back(); }
  };

  LatencyHistogram() = default;
  LatencyHistogram(const LatencyHistogram&) = delete;
  LatencyHistogram& operator=(const LatencyHistogram&) = delete;

  // Thread-safe.
  void Record(absl::Duration d);

  // Thread-safe. Not atomic across buckets: a snapshot taken during
  // recordings may count one of them in `sum_seconds` but not yet in the
  // buckets, which Prometheus tolerates.
  Snapshot Take() const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> counts_{};
  std::atomic<uint64_t> sum_nanos_{0};
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_LATENCY_HISTOGRAM_H_
