// Conversions between the wire contract (stepdb.v1) and storage types that
// more than one query RPC needs.
#ifndef STEPDB_QUERY_WIRE_H_
#define STEPDB_QUERY_WIRE_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "stepdb/v1/stepdb.pb.h"
#include "storage/engine.h"
#include "storage/label_matcher.h"

namespace stepdb::query {

// A wire step as micro-steps. InvalidArgumentError naming `field` if it is
// negative, too large, or its micros are not below 1'000'000.
absl::StatusOr<uint64_t> StepFromWire(const v1::Step& step,
                                      std::string_view field);
void StepToWire(uint64_t micro, v1::Step* out);

// Compiles the matchers of a request once (regexes included).
// InvalidArgumentError naming the matcher for an empty key, an unknown op
// or an invalid regex.
absl::StatusOr<std::vector<storage::LabelMatcher>> MatchersFromWire(
    const google::protobuf::RepeatedPtrField<v1::LabelMatcher>& wire);

}  // namespace stepdb::query

#endif  // STEPDB_QUERY_WIRE_H_
