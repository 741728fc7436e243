// Turns a wire WriteRequest into engine appends: checks its structure,
// resolves series keys and stream-local refs, converts steps to micro-steps.
#ifndef STEPDB_INGEST_REQUEST_DECODER_H_
#define STEPDB_INGEST_REQUEST_DECODER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "stepdb/v1/stepdb.pb.h"
#include "storage/engine.h"

namespace stepdb::ingest {

// Per-request limits; exceeding one makes the request INVALID_ARGUMENT.
struct RequestLimits {
  size_t max_series = 100'000;
  size_t max_points = 4'000'000;
};

// The refs one stream has registered: ref -> series id. Only the id is
// kept (8 bytes a ref in the table); the series' name, needed only for
// error messages and to check a re-registration, is the engine's
// (Engine::KeyOf). With a million series spread over a stream's refs, a
// copy of each key here cost more memory than the series' head.
// Not thread-safe (one per stream).
class StreamRefs {
 public:
  // Returns the series id registered under `ref`, nullopt if none.
  std::optional<storage::SeriesId> Find(uint32_t ref) const;
  void Register(uint32_t ref, storage::SeriesId id);

 private:
  absl::flat_hash_map<uint32_t, storage::SeriesId> refs_;
};

struct DecodedRequest {
  storage::AppendBatch batch;  // one series per request series, in order
};

// Decodes `request`. `refs` is null for the unary write (refs not allowed).
// On success the request's new refs are registered in *refs. Returns
// InvalidArgumentError naming the series (index and name) and the field for
// any structural fault; then nothing is registered or stored. `now_ms` is
// the time given to points that carry none.
absl::StatusOr<DecodedRequest> DecodeWriteRequest(
    const v1::WriteRequest& request, storage::Engine& engine,
    StreamRefs* refs, int64_t now_ms, const RequestLimits& limits);

}  // namespace stepdb::ingest

#endif  // STEPDB_INGEST_REQUEST_DECODER_H_
