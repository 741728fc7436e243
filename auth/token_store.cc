#include "auth/token_store.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "auth/crypto.h"
#include "auth/record_codec.h"
#include "storage/keys.h"

namespace stepdb::auth {
namespace {

// Version 2 appended max_points_per_second; version 1 records still load.
constexpr uint8_t kRecordVersion = 2;
constexpr size_t kIdBytes = 8;
constexpr size_t kSecretBytes = 32;
constexpr size_t kMinSecretHex = 32;  // 128 bits
constexpr size_t kSaltBytes = 16;
constexpr size_t kMaxProject = 1024;
constexpr size_t kMaxDescription = 1024;

std::string TokenKey(std::string_view id) {
  std::string key(1, storage::kTokenTag);
  key.append(id);
  return key;
}

bool IsLowerHex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

absl::Status BadToken() {
  return absl::UnauthenticatedError(
      "invalid, unknown or revoked token (send \"authorization: Bearer "
      "sdb_<id>_<secret>\")");
}

absl::Status ValidateNew(std::string_view project,
                         std::string_view description) {
  if (project.empty() || project.size() > kMaxProject ||
      project.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        "project: must be 1..1024 bytes without NUL (or * for every project)");
  }
  if (description.size() > kMaxDescription) {
    return absl::InvalidArgumentError("description: longer than 1024 bytes");
  }
  return absl::OkStatus();
}

}  // namespace

Clock SystemClock() {
  return [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
}

bool ParseToken(std::string_view token, std::string_view* id,
                std::string_view* secret) {
  if (!token.starts_with("sdb_")) return false;
  token.remove_prefix(4);
  const size_t sep = token.find('_');
  if (sep == std::string_view::npos) return false;
  *id = token.substr(0, sep);
  *secret = token.substr(sep + 1);
  return IsLowerHex(*id) && id->size() <= 64 && IsLowerHex(*secret);
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Open(
    storage::Engine* engine, Clock clock) {
  std::unique_ptr<TokenStore> store(new TokenStore(engine, std::move(clock)));
  absl::Status parse_error;
  absl::MutexLock lock(&store->mu_);
  absl::Status scan = engine->ScanMeta(
      std::string(1, storage::kTokenTag),
      [&](std::string_view key, std::string_view value) {
        RecordReader r(value);
        Record rec;
        rec.info.id = std::string(key.substr(1));
        const uint8_t version = r.U8();
        rec.info.project = r.Str();
        const uint8_t scope = r.U8();
        rec.info.created_ms = r.I64();
        rec.info.description = r.Str();
        rec.info.revoked = r.U8() != 0;
        rec.info.revoked_ms = r.I64();
        rec.salt = r.Str();
        rec.hash = r.Str();
        if (version >= 2) {
          rec.info.max_points_per_second = static_cast<uint64_t>(r.I64());
        }
        if (!r.ok() || version < 1 || version > kRecordVersion || scope < 1 ||
            scope > 3) {
          parse_error = absl::DataLossError(
              absl::StrCat("token record ", rec.info.id, ": corrupt"));
          return false;
        }
        rec.info.scope = static_cast<Scope>(scope);
        store->records_.emplace(rec.info.id, std::move(rec));
        return true;
      });
  if (!scan.ok()) return scan;
  if (!parse_error.ok()) return parse_error;
  return store;
}

absl::Status TokenStore::Put(const Record& rec) {
  RecordWriter w;
  w.U8(kRecordVersion);
  w.Str(rec.info.project);
  w.U8(static_cast<uint8_t>(rec.info.scope));
  w.I64(rec.info.created_ms);
  w.Str(rec.info.description);
  w.U8(rec.info.revoked ? 1 : 0);
  w.I64(rec.info.revoked_ms);
  w.Str(rec.salt);
  w.Str(rec.hash);
  w.I64(static_cast<int64_t>(rec.info.max_points_per_second));
  const storage::MetaWrite write{TokenKey(rec.info.id), w.Release()};
  if (absl::Status s = engine_->WriteMeta({&write, 1}); !s.ok()) return s;
  records_[rec.info.id] = rec;
  return absl::OkStatus();
}

absl::StatusOr<NewToken> TokenStore::Create(std::string_view project,
                                            Scope scope,
                                            std::string_view description,
                                            uint64_t max_points_per_second) {
  if (absl::Status s = ValidateNew(project, description); !s.ok()) return s;
  absl::StatusOr<std::string> id_bytes = RandomBytes(kIdBytes);
  absl::StatusOr<std::string> secret = RandomBytes(kSecretBytes);
  if (!id_bytes.ok()) return id_bytes.status();
  if (!secret.ok()) return secret.status();
  const std::string token =
      absl::StrCat("sdb_", HexEncode(*id_bytes), "_", HexEncode(*secret));
  absl::StatusOr<TokenInfo> info =
      Install(token, project, scope, description, max_points_per_second);
  if (!info.ok()) return info.status();
  return NewToken{token, *std::move(info)};
}

absl::StatusOr<TokenInfo> TokenStore::Install(std::string_view token,
                                              std::string_view project,
                                              Scope scope,
                                              std::string_view description,
                                              uint64_t max_points_per_second) {
  if (absl::Status s = ValidateNew(project, description); !s.ok()) return s;
  std::string_view id, secret;
  if (!ParseToken(token, &id, &secret) || secret.size() < kMinSecretHex) {
    return absl::InvalidArgumentError(
        "token: expected sdb_<hex id>_<hex secret of at least 32 digits>");
  }
  absl::StatusOr<std::string> salt = RandomBytes(kSaltBytes);
  if (!salt.ok()) return salt.status();
  Record rec;
  rec.info.id = std::string(id);
  rec.info.project = std::string(project);
  rec.info.scope = scope;
  rec.info.created_ms = clock_();
  rec.info.description = std::string(description);
  rec.info.max_points_per_second = max_points_per_second;
  rec.salt = *std::move(salt);
  rec.hash = Sha256({rec.salt, secret});
  absl::MutexLock lock(&mu_);
  if (records_.contains(rec.info.id)) {
    return absl::AlreadyExistsError(absl::StrCat("token ", std::string(id), ": exists"));
  }
  if (absl::Status s = Put(rec); !s.ok()) return s;
  return rec.info;
}

absl::StatusOr<TokenInfo> TokenStore::Revoke(std::string_view id) {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(std::string(id));
  if (it == records_.end()) {
    return absl::NotFoundError(absl::StrCat("token ", std::string(id), ": not found"));
  }
  if (it->second.info.revoked) return it->second.info;
  Record rec = it->second;
  rec.info.revoked = true;
  rec.info.revoked_ms = clock_();
  if (absl::Status s = Put(rec); !s.ok()) return s;
  return rec.info;
}

std::vector<TokenInfo> TokenStore::List(
    std::optional<std::string_view> project) const {
  std::vector<TokenInfo> out;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, rec] : records_) {
      if (!project || rec.info.project == *project) out.push_back(rec.info);
    }
  }
  std::sort(out.begin(), out.end(),
            [](const TokenInfo& a, const TokenInfo& b) { return a.id < b.id; });
  return out;
}

std::optional<TokenInfo> TokenStore::Find(std::string_view id) const {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(std::string(id));
  if (it == records_.end()) return std::nullopt;
  return it->second.info;
}

size_t TokenStore::size() const {
  absl::MutexLock lock(&mu_);
  return records_.size();
}

absl::StatusOr<Principal> TokenStore::Authenticate(
    std::string_view token) const {
  std::string_view id, secret;
  if (!ParseToken(token, &id, &secret)) return BadToken();
  std::string salt, hash;
  Principal principal;
  {
    absl::MutexLock lock(&mu_);
    auto it = records_.find(std::string(id));
    if (it == records_.end() || it->second.info.revoked) return BadToken();
    salt = it->second.salt;
    hash = it->second.hash;
    principal = {it->second.info.id, it->second.info.project,
                 it->second.info.scope, it->second.info.max_points_per_second};
  }
  if (!ConstantTimeEquals(Sha256({salt, secret}), hash)) return BadToken();
  return principal;
}

}  // namespace stepdb::auth
