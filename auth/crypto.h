// The few cryptographic primitives auth needs, from OpenSSL.
#ifndef STEPDB_AUTH_CRYPTO_H_
#define STEPDB_AUTH_CRYPTO_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace stepdb::auth {

inline constexpr size_t kSha256Size = 32;

// `n` bytes from OpenSSL's CSPRNG; InternalError if it cannot deliver.
absl::StatusOr<std::string> RandomBytes(size_t n);
// SHA-256 of the concatenation of `parts` (32 raw bytes).
std::string Sha256(std::initializer_list<std::string_view> parts);
// Constant-time comparison (no early exit on the first differing byte).
bool ConstantTimeEquals(std::string_view a, std::string_view b);
std::string HexEncode(std::string_view bytes);

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_CRYPTO_H_
