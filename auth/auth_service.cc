#include "auth/auth_service.h"

#include "absl/strings/str_cat.h"
#include "proto/grpc_status.h"

namespace stepdb::auth {
namespace {

constexpr uint32_t kMaxAuditEntries = 10000;

void ToWire(const TokenInfo& info, v1::TokenInfo* out) {
  out->set_id(info.id);
  out->set_project(info.project);
  out->set_scope(static_cast<v1::Scope>(info.scope));
  out->set_created_ms(info.created_ms);
  out->set_description(info.description);
  out->set_revoked(info.revoked);
  out->set_revoked_ms(info.revoked_ms);
  out->set_max_points_per_second(info.max_points_per_second);
}

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* context,
                               const absl::Status& status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

absl::Status NoRetention() {
  return absl::FailedPreconditionError("retention is not configured");
}

absl::Status AuthOff() {
  return absl::FailedPreconditionError(
      "auth is off on this server (start it with --auth=on)");
}

}  // namespace

grpc::ServerUnaryReactor* AuthService::CreateToken(
    grpc::CallbackServerContext* context, const v1::CreateTokenRequest* request,
    v1::CreateTokenResponse* response) {
  if (authorizer_ == nullptr) return Done(context, AuthOff());
  if (absl::Status s = Check(authorizer_, *context, Rpc::kAuthCreateToken,
                             request->project());
      !s.ok()) {
    return Done(context, s);
  }
  const int scope = request->scope();
  if (scope < 1 || scope > 3) {
    return Done(context,
                absl::InvalidArgumentError("scope: must be read, write or admin"));
  }
  absl::StatusOr<NewToken> created = authorizer_->tokens().Create(
      request->project(), static_cast<Scope>(scope), request->description(),
      request->max_points_per_second());
  AuditAction(authorizer_, *context, Rpc::kAuthCreateToken, request->project(),
              created.status(),
              created.ok() ? absl::StrCat("created token ", created->info.id,
                                          " scope ", std::string(ScopeName(created->info.scope)))
                           : "create token");
  if (!created.ok()) return Done(context, created.status());
  response->set_token(created->token);
  ToWire(created->info, response->mutable_info());
  return Done(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthService::ListTokens(
    grpc::CallbackServerContext* context, const v1::ListTokensRequest* request,
    v1::ListTokensResponse* response) {
  if (authorizer_ == nullptr) return Done(context, AuthOff());
  const std::string& project = request->project();
  if (absl::Status s =
          Check(authorizer_, *context, Rpc::kAuthListTokens,
                project.empty() ? std::string(kAllProjects) : project);
      !s.ok()) {
    return Done(context, s);
  }
  std::optional<std::string_view> filter;
  if (!project.empty()) filter = project;
  for (const TokenInfo& info : authorizer_->tokens().List(filter)) {
    ToWire(info, response->add_tokens());
  }
  AuditAction(authorizer_, *context, Rpc::kAuthListTokens, project,
              absl::OkStatus(), "");
  return Done(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthService::RevokeToken(
    grpc::CallbackServerContext* context, const v1::RevokeTokenRequest* request,
    v1::RevokeTokenResponse* response) {
  if (authorizer_ == nullptr) return Done(context, AuthOff());
  absl::StatusOr<Principal> principal =
      Authenticate(authorizer_, *context, Rpc::kAuthRevokeToken);
  if (!principal.ok()) return Done(context, principal.status());
  // An admin of some project may try; which project the token belongs to is
  // only looked at after that, and answered NOT_FOUND if it is not theirs.
  if (absl::Status s = Authorize(authorizer_, *principal, context->peer(),
                                 Rpc::kAuthRevokeToken, principal->project);
      !s.ok()) {
    return Done(context, s);
  }
  const std::optional<TokenInfo> found = authorizer_->tokens().Find(request->id());
  const absl::Status not_found =
      absl::NotFoundError(absl::StrCat("token ", request->id(), ": not found"));
  if (!found) return Done(context, not_found);
  if (!Allows(*principal, found->project, Scope::kAdmin).ok()) {
    authorizer_->Audit({principal->token_id,
                        std::string(InfoOf(Rpc::kAuthRevokeToken).name),
                        found->project, context->peer(), "denied",
                        absl::StrCat("revoke token ", found->id,
                                     " of another project")});
    return Done(context, not_found);
  }
  absl::StatusOr<TokenInfo> revoked = authorizer_->tokens().Revoke(found->id);
  AuditAction(authorizer_, *context, Rpc::kAuthRevokeToken, found->project,
              revoked.status(), absl::StrCat("revoked token ", found->id));
  if (!revoked.ok()) return Done(context, revoked.status());
  ToWire(*revoked, response->mutable_token());
  return Done(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthService::ReadAudit(
    grpc::CallbackServerContext* context, const v1::ReadAuditRequest* request,
    v1::ReadAuditResponse* response) {
  if (authorizer_ == nullptr) return Done(context, AuthOff());
  if (absl::Status s = Check(authorizer_, *context, Rpc::kAuthReadAudit,
                             kAllProjects);
      !s.ok()) {
    return Done(context, s);
  }
  uint32_t limit = request->limit();
  if (limit == 0 || limit > kMaxAuditEntries) limit = kMaxAuditEntries;
  auto entries = authorizer_->audit().Read(request->after_seq(), limit + 1);
  if (!entries.ok()) return Done(context, entries.status());
  if (entries->size() > limit) {
    entries->resize(limit);
    response->set_truncated(true);
  }
  for (const AuditEntry& e : *entries) {
    v1::AuditEntry* out = response->add_entries();
    out->set_seq(e.seq);
    out->set_time_ms(e.time_ms);
    out->set_token_id(e.event.token_id);
    out->set_rpc(e.event.rpc);
    out->set_project(e.event.project);
    out->set_peer(e.event.peer);
    out->set_outcome(e.event.outcome);
    out->set_detail(e.event.detail);
    out->set_prev_hash(e.prev_hash);
    out->set_hash(e.hash);
  }
  if (request->verify()) {
    auto v = authorizer_->audit().Verify();
    if (!v.ok()) return Done(context, v.status());
    response->set_verified(true);
    response->set_intact(v->intact);
    response->set_verified_entries(v->entries);
    response->set_first_bad_seq(v->first_bad_seq);
    response->set_verify_message(v->message);
    response->set_head_hash(v->head_hash);
  }
  // Recorded after reading, so the answer ends where the chain did.
  AuditAction(authorizer_, *context, Rpc::kAuthReadAudit, "", absl::OkStatus(),
              request->verify() ? "read and verified" : "read");
  return Done(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthService::SetRetention(
    grpc::CallbackServerContext* context, const v1::RetentionPolicy* request,
    v1::RetentionPolicy* response) {
  if (retention_ == nullptr) return Done(context, NoRetention());
  if (absl::Status s = Check(authorizer_, *context, Rpc::kAuthSetRetention,
                             request->project());
      !s.ok()) {
    return Done(context, s);
  }
  const absl::Status set = retention_->Set(
      request->project(), {request->raw_days(), request->rollup_days()});
  AuditAction(authorizer_, *context, Rpc::kAuthSetRetention, request->project(),
              set,
              absl::StrCat("raw_days ", request->raw_days(), " rollup_days ",
                           request->rollup_days()));
  if (set.ok()) *response = *request;
  return Done(context, set);
}

grpc::ServerUnaryReactor* AuthService::GetRetention(
    grpc::CallbackServerContext* context, const v1::GetRetentionRequest* request,
    v1::RetentionPolicy* response) {
  if (retention_ == nullptr) return Done(context, NoRetention());
  if (absl::Status s = Check(authorizer_, *context, Rpc::kAuthGetRetention,
                             request->project());
      !s.ok()) {
    return Done(context, s);
  }
  auto policy = retention_->Get(request->project());
  if (!policy.ok()) return Done(context, policy.status());
  response->set_project(request->project());
  if (policy->has_value()) {
    response->set_raw_days((*policy)->raw_days);
    response->set_rollup_days((*policy)->rollup_days);
  }
  return Done(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthService::EnforceRetention(
    grpc::CallbackServerContext* context,
    const v1::EnforceRetentionRequest* /*request*/,
    v1::EnforceRetentionResponse* response) {
  if (retention_ == nullptr) return Done(context, NoRetention());
  if (absl::Status s = Check(authorizer_, *context, Rpc::kAuthEnforceRetention,
                             kAllProjects);
      !s.ok()) {
    return Done(context, s);
  }
  auto result = retention_->Enforce();
  AuditAction(authorizer_, *context, Rpc::kAuthEnforceRetention, "",
              result.status(),
              result.ok() ? absl::StrCat("expired ", result->chunks, " chunks")
                          : "enforce retention");
  if (!result.ok()) return Done(context, result.status());
  response->set_chunks_deleted(result->chunks);
  response->set_points_deleted(result->points);
  response->set_rollup_records_deleted(result->rollup_records);
  response->set_rollup_points_deleted(result->rollup_points);
  return Done(context, absl::OkStatus());
}

}  // namespace stepdb::auth
