// Per-project retention of raw points: policies in meta records, and the
// pass that enforces them by deleting whole expired chunks
// (Engine::ExpireChunks), so that no read ever filters expired points.
//
// Thread-safety: thread-safe.
#ifndef STEPDB_AUTH_RETENTION_H_
#define STEPDB_AUTH_RETENTION_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "auth/token_store.h"
#include "storage/engine.h"

namespace stepdb::auth {

inline constexpr int64_t kMillisPerDay = 86'400'000;

class RetentionPolicies {
 public:
  // `engine` must outlive this.
  RetentionPolicies(storage::Engine* engine, Clock clock)
      : engine_(engine), clock_(std::move(clock)) {}

  // Keeps raw points of `project` for `raw_days` days; 0 removes the policy
  // (keep forever). InvalidArgumentError for an empty project.
  absl::Status Set(std::string_view project, uint32_t raw_days);
  // nullopt: no policy.
  absl::StatusOr<std::optional<uint32_t>> Get(std::string_view project) const;
  absl::StatusOr<std::vector<std::pair<std::string, uint32_t>>> List() const;

  // One pass: for each policy, expires the chunks whose points are all
  // older than now - raw_days. Stops at the first error.
  absl::StatusOr<storage::ExpireResult> Enforce();

 private:
  storage::Engine* const engine_;
  const Clock clock_;
};

// Runs RetentionPolicies::Enforce every `interval` on a thread of its own.
class RetentionEnforcer {
 public:
  RetentionEnforcer(RetentionPolicies* policies, absl::Duration interval);
  ~RetentionEnforcer();  // stops and joins
  RetentionEnforcer(const RetentionEnforcer&) = delete;
  RetentionEnforcer& operator=(const RetentionEnforcer&) = delete;

 private:
  void Loop();

  RetentionPolicies* const policies_;
  const absl::Duration interval_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_RETENTION_H_
