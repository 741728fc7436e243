// Client side of auth, header-only so that clients (stepctl, loadgen,
// tests) need no library beyond gRPC: a channel that sends
// `authorization: Bearer <token>` on every call (an interceptor, because
// gRPC refuses call credentials on plaintext channels, and auth without TLS
// on loopback is a supported setup) and, optionally, verifies the server's
// TLS certificate against a CA file.
#ifndef STEPDB_AUTH_CLIENT_CHANNEL_H_
#define STEPDB_AUTH_CLIENT_CHANNEL_H_

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>

#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace stepdb::auth {

class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string& header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", header_});
    }
    methods->Proceed();
  }

 private:
  const std::string& header_;  // owned by the factory, which the channel keeps
};

class BearerTokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : header_("Bearer " + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerTokenInterceptor(header_);
  }

 private:
  const std::string header_;
};

// TLS credentials trusting the PEM CA bundle at `ca_file` (optionally
// presenting a client certificate for mTLS); nullopt if a file cannot be
// read.
inline std::optional<std::shared_ptr<grpc::ChannelCredentials>> TlsCredentials(
    const std::string& ca_file, const std::string& cert_file = "",
    const std::string& key_file = "") {
  auto read = [](const std::string& path) -> std::optional<std::string> {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  };
  grpc::SslCredentialsOptions options;
  auto ca = read(ca_file);
  if (!ca) return std::nullopt;
  options.pem_root_certs = *ca;
  if (!cert_file.empty()) {
    auto cert = read(cert_file);
    auto key = read(key_file);
    if (!cert || !key) return std::nullopt;
    options.pem_cert_chain = *cert;
    options.pem_private_key = *key;
  }
  return grpc::SslCredentials(options);
}

// A channel to `target` that sends `token` (if non-empty) on every call.
inline std::shared_ptr<grpc::Channel> MakeClientChannel(
    const std::string& target,
    std::shared_ptr<grpc::ChannelCredentials> credentials,
    const grpc::ChannelArguments& args, const std::string& token) {
  if (token.empty()) {
    return grpc::CreateCustomChannel(target, credentials, args);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(std::make_unique<BearerTokenInterceptorFactory>(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      target, credentials, args, std::move(interceptors));
}

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_CLIENT_CHANNEL_H_
