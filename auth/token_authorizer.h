// The Authorizer over stored tokens and the audit log.
#ifndef STEPDB_AUTH_TOKEN_AUTHORIZER_H_
#define STEPDB_AUTH_TOKEN_AUTHORIZER_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "auth/audit_log.h"
#include "auth/authorizer.h"
#include "auth/token_store.h"
#include "storage/engine.h"

namespace stepdb::auth {

class TokenAuthorizer final : public Authorizer {
 public:
  // Opens the token store and audit log of `engine` (which must outlive
  // this). `clock` defaults to the system clock.
  static absl::StatusOr<std::unique_ptr<TokenAuthorizer>> Open(
      storage::Engine* engine, Clock clock = SystemClock());

  // At first start (no token stored yet) installs a global admin token:
  // `token` if given, else a new one, which is returned so the caller can
  // show it once. Returns nullopt when tokens already exist.
  absl::StatusOr<std::optional<std::string>> Bootstrap(
      std::optional<std::string> token);

  absl::StatusOr<Principal> Authenticate(
      std::string_view authorization) const override;
  void Audit(AuditEvent event) override;
  absl::Status ChargePoints(const Principal& principal,
                            uint64_t points) override;

  TokenStore& tokens() { return *tokens_; }
  AuditLog& audit() { return *audit_; }

 private:
  TokenAuthorizer(std::unique_ptr<TokenStore> tokens,
                  std::unique_ptr<AuditLog> audit, Clock clock)
      : tokens_(std::move(tokens)),
        audit_(std::move(audit)),
        clock_(std::move(clock)) {}

  // A token bucket per rate-limited token: `available` points, refilled at
  // the token's rate up to one second's worth.
  struct Bucket {
    double available = 0;
    int64_t refilled_ms = 0;
  };

  // Constant after construction.
  const std::unique_ptr<TokenStore> tokens_;
  const std::unique_ptr<AuditLog> audit_;
  const Clock clock_;

  absl::Mutex buckets_mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_
      ABSL_GUARDED_BY(buckets_mu_);
};

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_TOKEN_AUTHORIZER_H_
