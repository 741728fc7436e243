// Per-project retention: raw points kept N days, their rollups (the
// downsampled pieces of storage/rollup.h) M >= N days, as Prometheus with
// Thanos or VictoriaMetrics keep raw data for weeks and downsampled data for
// longer. Policies live in meta records; a periodic pass enforces them by
// deleting whole expired chunks and rollup records (Engine::ExpireChunks),
// so that no read ever filters expired points. Charts over a span whose
// raw points have expired are served from its rollups (storage/downsample.h).
//
// Thread-safety: thread-safe.
#ifndef STEPDB_AUTH_RETENTION_H_
#define STEPDB_AUTH_RETENTION_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/token_store.h"
#include "storage/engine.h"
#include "storage/periodic_thread.h"

namespace stepdb::auth {

inline constexpr int64_t kMillisPerDay = 86'400'000;

// One project's policy.
struct ProjectRetention {
  uint32_t raw_days = 0;     // raw points (chunks); 0: forever
  uint32_t rollup_days = 0;  // rollup records; 0: as long as raw points

  // The rollup period in force: rollup_days, or raw_days if that is 0.
  uint32_t effective_rollup_days() const {
    return rollup_days == 0 ? raw_days : rollup_days;
  }
  bool operator==(const ProjectRetention&) const = default;
};

class RetentionPolicies {
 public:
  // `engine` must outlive this.
  RetentionPolicies(storage::Engine* engine, Clock clock)
      : engine_(engine), clock_(std::move(clock)) {}

  // Sets the policy of `project` (durably); raw_days 0 and rollup_days 0
  // removes it (keep everything forever). Returns InvalidArgumentError,
  // naming the field, for an empty project, for rollup_days without
  // raw_days (raw points kept forever), or for 0 < rollup_days < raw_days
  // (rollups outlive the raw points they summarise, never the reverse);
  // the RocksDB error otherwise.
  absl::Status Set(std::string_view project, ProjectRetention policy);
  // Both periods equal (rollups kept as long as raw points).
  absl::Status Set(std::string_view project, uint32_t raw_days) {
    return Set(project, ProjectRetention{raw_days, 0});
  }
  // The stored policy (rollup_days as set: 0 = as raw), nullopt if none.
  // Records written before rollup periods existed (raw days only) read as
  // rollup_days 0. DataLossError for a corrupt record.
  absl::StatusOr<std::optional<ProjectRetention>> Get(
      std::string_view project) const;
  // Every policy, in project order (corrupt records are skipped).
  absl::StatusOr<std::vector<std::pair<std::string, ProjectRetention>>> List()
      const;

  // One pass: for each policy, expires the chunks whose points are all
  // older than now - raw_days and the rollup records older than now -
  // effective_rollup_days (Engine::ExpireChunks). Idempotent; stops at the
  // first error (what was done stays done).
  absl::StatusOr<storage::ExpireResult> Enforce();

 private:
  storage::Engine* const engine_;
  const Clock clock_;
};

// Runs RetentionPolicies::Enforce every `interval` on a thread of its own.
// Destruction waits for a pass in progress.
class RetentionEnforcer {
 public:
  RetentionEnforcer(RetentionPolicies* policies, absl::Duration interval);
  RetentionEnforcer(const RetentionEnforcer&) = delete;
  RetentionEnforcer& operator=(const RetentionEnforcer&) = delete;

 private:
  void Enforce();

  RetentionPolicies* const policies_;
  storage::PeriodicThread thread_;  // last: stopped before the rest goes
};

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_RETENTION_H_
