// Bearer tokens, stored as salted SHA-256 hashes in the engine's meta column
// family. A token reads `sdb_<id>_<secret>`: the id (16 hex digits) names
// its record, the secret (64 hex digits, 256 bits from the CSPRNG) is shown
// once at creation and never stored.
//
// Thread-safety: thread-safe. Every record is also held in memory (tokens
// are few), so Authenticate costs a hash lookup and one SHA-256, no I/O.
#ifndef STEPDB_AUTH_TOKEN_STORE_H_
#define STEPDB_AUTH_TOKEN_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "auth/authorizer.h"
#include "storage/engine.h"

namespace stepdb::auth {

struct TokenInfo {
  std::string id;
  std::string project;  // or kAllProjects
  Scope scope = Scope::kRead;
  int64_t created_ms = 0;
  std::string description;
  bool revoked = false;
  int64_t revoked_ms = 0;
  uint64_t max_points_per_second = 0;  // 0: no limit
};

struct NewToken {
  std::string token;  // the only copy of the secret
  TokenInfo info;
};

using Clock = std::function<int64_t()>;  // Unix milliseconds
Clock SystemClock();

class TokenStore {
 public:
  // Loads the token records of `engine`, which must outlive the store.
  // Returns DataLossError for a record that does not parse.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Open(
      storage::Engine* engine, Clock clock);
  TokenStore(const TokenStore&) = delete;
  TokenStore& operator=(const TokenStore&) = delete;

  // Creates a token. InvalidArgumentError for an empty or oversized
  // project or description; the engine's error if it cannot be stored.
  absl::StatusOr<NewToken> Create(std::string_view project, Scope scope,
                                  std::string_view description,
                                  uint64_t max_points_per_second = 0);
  // Stores a token the caller chose (a bootstrap token from a file or the
  // environment). InvalidArgumentError unless it has the token format and
  // a secret of at least 128 bits; AlreadyExistsError if its id exists.
  absl::StatusOr<TokenInfo> Install(std::string_view token,
                                    std::string_view project, Scope scope,
                                    std::string_view description,
                                    uint64_t max_points_per_second = 0);
  // Marks a token revoked (idempotent). NotFoundError for an unknown id.
  absl::StatusOr<TokenInfo> Revoke(std::string_view id);

  // Tokens of `project` (exactly), or every token if nullopt; by id.
  std::vector<TokenInfo> List(std::optional<std::string_view> project) const;
  std::optional<TokenInfo> Find(std::string_view id) const;
  size_t size() const;

  // The principal of `token`; UnauthenticatedError if it is malformed,
  // unknown, does not match, or is revoked (one message for all, so that a
  // guesser learns nothing).
  absl::StatusOr<Principal> Authenticate(std::string_view token) const;

 private:
  struct Record {
    TokenInfo info;
    std::string salt;
    std::string hash;  // SHA-256(salt + secret)
  };
  TokenStore(storage::Engine* engine, Clock clock)
      : engine_(engine), clock_(std::move(clock)) {}
  absl::Status Put(const Record& record);  // durable, then in memory

  // Constant after construction.
  storage::Engine* const engine_;
  const Clock clock_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Record> records_ ABSL_GUARDED_BY(mu_);
};

// Splits `sdb_<id>_<secret>`; false if `token` does not have that shape.
bool ParseToken(std::string_view token, std::string_view* id,
                std::string_view* secret);

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_TOKEN_STORE_H_
