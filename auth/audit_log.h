// The audit log: admin actions and refused requests, appended to meta
// records as a hash chain. Entry n stores the SHA-256 of entry n-1 and its
// own hash over (seq, content, previous hash), so editing, deleting or
// reordering any entry breaks Verify from that entry on. The newest seq and
// hash are also kept in a head record, so truncating the tail shows too
// unless the head is rewritten as well; copy the head hash off the machine
// (`stepctl admin audit`) to anchor it.
//
// Thread-safety: thread-safe; appends are serialized (the chain is a
// sequence).
#ifndef STEPDB_AUTH_AUDIT_LOG_H_
#define STEPDB_AUTH_AUDIT_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "auth/authorizer.h"
#include "auth/token_store.h"
#include "storage/engine.h"

namespace stepdb::auth {

struct AuditEntry {
  uint64_t seq = 0;  // 1, 2, ...
  int64_t time_ms = 0;
  AuditEvent event;
  std::string prev_hash;  // 32 bytes; zeros for the first entry
  std::string hash;       // 32 bytes
};

struct AuditVerification {
  bool intact = true;
  uint64_t entries = 0;
  uint64_t first_bad_seq = 0;  // when !intact
  std::string message;         // what is wrong, when !intact
  std::string head_hash;       // hash of the last entry (hex)
};

class AuditLog {
 public:
  // `engine` must outlive the log. DataLossError for a corrupt head.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(
      storage::Engine* engine, Clock clock);
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends one entry durably; returns its seq, or the engine's error.
  absl::StatusOr<uint64_t> Append(AuditEvent event);
  // Entries with seq > after_seq, at most `limit` (0 = all), in order.
  absl::StatusOr<std::vector<AuditEntry>> Read(uint64_t after_seq,
                                               size_t limit) const;
  // Walks the whole chain; an error only if the records cannot be read.
  absl::StatusOr<AuditVerification> Verify() const;

 private:
  AuditLog(storage::Engine* engine, Clock clock)
      : engine_(engine), clock_(std::move(clock)) {}

  // Constant after construction.
  storage::Engine* const engine_;
  const Clock clock_;

  // Serializes appends, and Verify against them (it compares the head).
  mutable absl::Mutex mu_;
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_hash_ ABSL_GUARDED_BY(mu_);
};

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_AUDIT_LOG_H_
