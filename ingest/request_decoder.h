// Turns a wire WriteRequest into engine appends: checks its structure,
// resolves series keys and stream-local refs, converts steps to micro-steps.
#ifndef STEPDB_INGEST_REQUEST_DECODER_H_
#define STEPDB_INGEST_REQUEST_DECODER_H_

#include <cstdint>
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

// The refs one stream has registered. Not thread-safe (one per stream).
class StreamRefs {
 public:
  struct Entry {
    storage::SeriesId id;
    storage::SeriesKey key;
  };
  const Entry* Find(uint32_t ref) const;
  void Register(uint32_t ref, storage::SeriesId id, storage::SeriesKey key);

 private:
  absl::flat_hash_map<uint32_t, Entry> refs_;
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
