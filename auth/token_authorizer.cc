#include "auth/token_authorizer.h"

#include <iostream>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace stepdb::auth {

absl::StatusOr<std::unique_ptr<TokenAuthorizer>> TokenAuthorizer::Open(
    storage::Engine* engine, Clock clock) {
  auto tokens = TokenStore::Open(engine, clock);
  if (!tokens.ok()) return tokens.status();
  auto audit = AuditLog::Open(engine, clock);
  if (!audit.ok()) return audit.status();
  return std::unique_ptr<TokenAuthorizer>(
      new TokenAuthorizer(*std::move(tokens), *std::move(audit), clock));
}

absl::StatusOr<std::optional<std::string>> TokenAuthorizer::Bootstrap(
    std::optional<std::string> token) {
  if (tokens_->size() > 0) return std::nullopt;
  constexpr std::string_view kDescription = "bootstrap global admin";
  if (token) {
    auto info = tokens_->Install(*token, kAllProjects, Scope::kAdmin,
                                 kDescription);
    if (!info.ok()) return info.status();
    return token;
  }
  auto created = tokens_->Create(kAllProjects, Scope::kAdmin, kDescription);
  if (!created.ok()) return created.status();
  return created->token;
}

absl::StatusOr<Principal> TokenAuthorizer::Authenticate(
    std::string_view authorization) const {
  // "Bearer" is case-insensitive (RFC 6750); exactly one space follows.
  constexpr std::string_view kBearer = "bearer ";
  if (authorization.size() <= kBearer.size() ||
      absl::AsciiStrToLower(std::string(authorization.substr(0, kBearer.size()))) !=
          kBearer) {
    return absl::UnauthenticatedError(
        "missing token: send \"authorization: Bearer sdb_<id>_<secret>\"");
  }
  return tokens_->Authenticate(authorization.substr(kBearer.size()));
}

absl::Status TokenAuthorizer::ChargePoints(const Principal& principal,
                                           uint64_t points) {
  const double rate = static_cast<double>(principal.max_points_per_second);
  if (rate == 0) return absl::OkStatus();
  const int64_t now = clock_();
  absl::MutexLock lock(&buckets_mu_);
  auto [it, inserted] = buckets_.try_emplace(principal.token_id);
  Bucket& b = it->second;
  if (inserted) {
    b.available = rate;
  } else if (now > b.refilled_ms) {
    b.available = std::min(rate, b.available + rate * (now - b.refilled_ms) / 1000.0);
  }
  b.refilled_ms = std::max(b.refilled_ms, now);
  if (b.available <= 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "token ", principal.token_id, ": over its limit of ",
        principal.max_points_per_second, " points/s; retry later"));
  }
  b.available -= static_cast<double>(points);
  return absl::OkStatus();
}

void TokenAuthorizer::Audit(AuditEvent event) {
  absl::StatusOr<uint64_t> seq = audit_->Append(std::move(event));
  if (!seq.ok()) {
    std::cerr << "stepdb: audit log: cannot append: " << seq.status() << std::endl;
  }
}

}  // namespace stepdb::auth
