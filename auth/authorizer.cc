#include "auth/authorizer.h"

#include <grpcpp/server_context.h>

#include <iostream>

#include "absl/strings/str_cat.h"

namespace stepdb::auth {
namespace {

constexpr std::string_view kAnonymous = "anonymous";

std::string Printable(std::string_view project) {
  // Projects are bytes on the wire; keep the message one line.
  std::string out;
  for (char c : project) out += (c >= 0x20 && c != 0x7f) ? c : '?';
  return out;
}

}  // namespace

std::string_view ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kRead:
      return "read";
    case Scope::kWrite:
      return "write";
    case Scope::kAdmin:
      return "admin";
  }
  return "unknown";
}

std::optional<Scope> ParseScope(std::string_view name) {
  for (Scope s : {Scope::kRead, Scope::kWrite, Scope::kAdmin}) {
    if (name == ScopeName(s)) return s;
  }
  return std::nullopt;
}

absl::Status Allows(const Principal& principal, std::string_view project,
                    Scope scope) {
  const bool project_ok =
      principal.project == kAllProjects || principal.project == project;
  if (project_ok && principal.scope >= scope) return absl::OkStatus();
  if (project == kAllProjects) {
    return absl::PermissionDeniedError(absl::StrCat(
        "token ", principal.token_id, ": this call needs a global admin token"));
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "token ", principal.token_id, ": no ", std::string(ScopeName(scope)),
      " access to project \"", Printable(project), "\""));
}

std::string_view AuthorizationOf(const grpc::ServerContextBase& context) {
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return {};
  return {it->second.data(), it->second.size()};
}

namespace {

absl::StatusOr<Principal> AuthenticateFor(Authorizer* authorizer,
                                          std::string_view authorization,
                                          std::string_view peer, Rpc rpc,
                                          std::string_view project) {
  if (authorizer == nullptr) {
    return Principal{std::string(kAnonymous), std::string(kAllProjects),
                     Scope::kAdmin};
  }
  absl::StatusOr<Principal> principal = authorizer->Authenticate(authorization);
  if (!principal.ok()) {
    authorizer->Audit({std::string(kAnonymous), std::string(InfoOf(rpc).name),
                       std::string(project), std::string(peer),
                       "unauthenticated",
                       std::string(principal.status().message())});
  }
  return principal;
}

absl::StatusOr<Principal> AuthenticateFor(Authorizer* authorizer,
                                          const grpc::ServerContextBase& context,
                                          Rpc rpc, std::string_view project) {
  if (authorizer == nullptr) return AuthenticateFor(nullptr, "", "", rpc, project);
  return AuthenticateFor(authorizer, AuthorizationOf(context), context.peer(),
                         rpc, project);
}

}  // namespace

absl::StatusOr<Principal> Authenticate(Authorizer* authorizer,
                                       const grpc::ServerContextBase& context,
                                       Rpc rpc) {
  return AuthenticateFor(authorizer, context, rpc, "");
}

absl::Status Reauthenticate(Authorizer* authorizer,
                            std::string_view authorization,
                            std::string_view peer, Rpc rpc) {
  if (authorizer == nullptr) return absl::OkStatus();
  return AuthenticateFor(authorizer, authorization, peer, rpc, "").status();
}

absl::Status Authorize(Authorizer* authorizer, const Principal& principal,
                       std::string_view peer, Rpc rpc,
                       std::string_view project) {
  if (authorizer == nullptr) return absl::OkStatus();
  absl::Status allowed = Allows(principal, project, InfoOf(rpc).scope);
  if (!allowed.ok()) {
    authorizer->Audit({principal.token_id, std::string(InfoOf(rpc).name),
                       std::string(project), std::string(peer), "denied",
                       std::string(allowed.message())});
  }
  return allowed;
}

absl::Status ChargePoints(Authorizer* authorizer, const Principal& principal,
                          uint64_t points) {
  if (authorizer == nullptr || principal.max_points_per_second == 0) {
    return absl::OkStatus();
  }
  return authorizer->ChargePoints(principal, points);
}

absl::Status Check(Authorizer* authorizer,
                   const grpc::ServerContextBase& context, Rpc rpc,
                   std::string_view project) {
  if (authorizer == nullptr) return absl::OkStatus();
  absl::StatusOr<Principal> principal =
      AuthenticateFor(authorizer, context, rpc, project);
  if (!principal.ok()) return principal.status();
  return Authorize(authorizer, *principal, context.peer(), rpc, project);
}

void AuditAction(Authorizer* authorizer, const grpc::ServerContextBase& context,
                 Rpc rpc, std::string_view project, const absl::Status& result,
                 std::string detail) {
  if (authorizer == nullptr) return;
  absl::StatusOr<Principal> principal =
      authorizer->Authenticate(AuthorizationOf(context));
  authorizer->Audit(
      {principal.ok() ? principal->token_id : std::string(kAnonymous),
       std::string(InfoOf(rpc).name), std::string(project), context.peer(),
       result.ok() ? "ok" : "error",
       result.ok() ? std::move(detail)
                   : absl::StrCat(detail, detail.empty() ? "" : ": ",
                                  result.message())});
}

}  // namespace stepdb::auth
