// Benchmarks' gRPC plumbing: a server on a free loopback port.
#ifndef STEPDB_BENCH_LOOPBACK_SERVER_H_
#define STEPDB_BENCH_LOOPBACK_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <string>

namespace stepdb::bench {

// Starts a server with `services` on 127.0.0.1 and returns a channel to it
// (64 MiB receive limit); aborts if it cannot listen.
inline std::shared_ptr<grpc::Channel> ServeOnLoopback(
    std::initializer_list<grpc::Service*> services,
    std::unique_ptr<grpc::Server>* server) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  *server = builder.BuildAndStart();
  if (*server == nullptr || port == 0) std::abort();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials(), args);
}

}  // namespace stepdb::bench

#endif  // STEPDB_BENCH_LOOPBACK_SERVER_H_
