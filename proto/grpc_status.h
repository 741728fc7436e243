// absl::Status -> grpc::Status at the service edge. The codes are numerically
// identical (both follow google.rpc.Code).
#ifndef STEPDB_PROTO_GRPC_STATUS_H_
#define STEPDB_PROTO_GRPC_STATUS_H_

#include <string>

#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace stepdb {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

// A server-streaming reactor that only finishes with `status`: the answer
// of a streaming call refused before it starts.
template <typename Response>
grpc::ServerWriteReactor<Response>* FinishedWriter(grpc::Status status) {
  class Reactor : public grpc::ServerWriteReactor<Response> {
   public:
    explicit Reactor(grpc::Status status) { this->Finish(status); }
    void OnDone() override { delete this; }
  };
  return new Reactor(std::move(status));
}

// What the run metadata RPCs answer on a server without a run store.
inline grpc::Status RunMetadataDisabled() {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      "run metadata is not enabled on this server");
}

}  // namespace stepdb

#endif  // STEPDB_PROTO_GRPC_STATUS_H_
