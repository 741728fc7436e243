// The HTTP side port: /healthz and Prometheus /metrics.
#ifndef STEPDB_SERVER_HTTP_SERVER_H_
#define STEPDB_SERVER_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace stepdb::server {

// Access control and TLS of the side port. /healthz is always open.
struct HttpSecurity {
  // Given a /metrics request's Authorization header and peer address:
  // OK to serve; UnauthenticatedError answers 401, anything else 403.
  // Unset: /metrics is open.
  std::function<absl::Status(const std::string& authorization,
                             const std::string& peer)>
      authorize_metrics;
  // PEM files; both set: HTTPS. tls_client_ca also set: clients must
  // present a certificate it signed.
  std::string tls_cert, tls_key, tls_client_ca;
};

class HttpServer {
 public:
  // Binds host:port (port 0 picks a free one) and serves on a thread.
  // `metrics` is called per /metrics request. Returns UnavailableError if
  // the address cannot be bound, InvalidArgumentError if the TLS files
  // cannot be loaded.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const std::string& host, int port, std::function<std::string()> metrics,
      HttpSecurity security = {});
  ~HttpServer();  // stops serving and joins the thread
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }

 private:
  HttpServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace stepdb::server

#endif  // STEPDB_SERVER_HTTP_SERVER_H_
