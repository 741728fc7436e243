// The small interface the services use to authenticate callers and check
// their rights. A service given no Authorizer (nullptr) runs with auth off:
// every call is allowed. The implementation over stored tokens is
// TokenAuthorizer (token_authorizer.h).
//
// Adding a check to a new handler is one line, before anything is read:
//
//   if (absl::Status s = auth::Check(authorizer_, *context, auth::Rpc::kQueryTail,
//                                    request->project()); !s.ok()) { ...finish with ToGrpcStatus(s) }
#ifndef STEPDB_AUTH_AUTHORIZER_H_
#define STEPDB_AUTH_AUTHORIZER_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "auth/rpc_scopes.h"

namespace grpc {
class ServerContextBase;
}

namespace stepdb::auth {

// Who is calling: the token's id, its project (or kAllProjects) and scope.
struct Principal {
  std::string token_id;  // "anonymous" when auth is off
  std::string project;
  Scope scope = Scope::kRead;
  uint64_t max_points_per_second = 0;  // ingest rate limit; 0: none
};

// One audit record (see audit_log.h).
struct AuditEvent {
  std::string token_id;  // "anonymous" when no valid token was presented
  std::string rpc;
  std::string project;
  std::string peer;
  std::string outcome;  // "ok", "denied", "unauthenticated", "error"
  std::string detail;
};

class Authorizer {
 public:
  virtual ~Authorizer() = default;

  // The principal of a bearer token (the `authorization` metadata or HTTP
  // header value, "Bearer <token>"). UnauthenticatedError for a missing,
  // malformed, unknown or revoked token; its message names no token data.
  virtual absl::StatusOr<Principal> Authenticate(
      std::string_view authorization) const = 0;

  // Appends an event to the audit log. Failures are logged, not returned:
  // a request's outcome does not depend on its audit record.
  virtual void Audit(AuditEvent event) = 0;

  // Charges `points` written by `principal` against its rate limit: OK, or
  // ResourceExhaustedError once the token has used up its allowance (one
  // second's worth may be spent at once; a larger request goes into debt).
  virtual absl::Status ChargePoints(const Principal& principal,
                                    uint64_t points) = 0;
};

// Whether `principal` may act with `scope` on `project`: OK, or
// PermissionDeniedError naming only the caller's token and the project the
// caller asked for (never whether that project exists). Pure.
absl::Status Allows(const Principal& principal, std::string_view project,
                    Scope scope);

// The `authorization` value of a call ("" if none).
std::string_view AuthorizationOf(const grpc::ServerContextBase& context);

// Authenticates the caller of `context` for `rpc`. With auth off (null
// authorizer) returns a global admin "anonymous". A failure is audited.
absl::StatusOr<Principal> Authenticate(Authorizer* authorizer,
                                       const grpc::ServerContextBase& context,
                                       Rpc rpc);

// Whether the token a stream opened with is still valid (not revoked):
// streams call it per message. A failure is audited.
absl::Status Reauthenticate(Authorizer* authorizer,
                            std::string_view authorization,
                            std::string_view peer, Rpc rpc);

// Checks an authenticated principal against `rpc`'s scope on `project`
// (streams authenticate once, then check each request). A denial is
// audited; so is every allowed admin-scope RPC.
absl::Status Authorize(Authorizer* authorizer, const Principal& principal,
                       std::string_view peer, Rpc rpc,
                       std::string_view project);

// ChargePoints, a no-op with auth off.
absl::Status ChargePoints(Authorizer* authorizer, const Principal& principal,
                          uint64_t points);

// Authenticate + Authorize: the one call a unary handler makes.
absl::Status Check(Authorizer* authorizer,
                   const grpc::ServerContextBase& context, Rpc rpc,
                   std::string_view project);

// Records a completed admin action (outcome "ok", or "error" with the
// result's message) for the caller of `context`. No-op with auth off.
void AuditAction(Authorizer* authorizer, const grpc::ServerContextBase& context,
                 Rpc rpc, std::string_view project, const absl::Status& result,
                 std::string detail);

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_AUTHORIZER_H_
