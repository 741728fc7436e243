#include "server/http_server.h"

#include <httplib.h>

#include "absl/strings/str_cat.h"

namespace stepdb::server {

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const std::string& host, int port, std::function<std::string()> metrics,
    HttpSecurity security) {
  std::unique_ptr<HttpServer> http(new HttpServer());
  if (!security.tls_cert.empty() || !security.tls_key.empty()) {
    auto ssl = std::make_unique<httplib::SSLServer>(
        security.tls_cert.c_str(), security.tls_key.c_str(),
        security.tls_client_ca.empty() ? nullptr
                                       : security.tls_client_ca.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(
          "http: cannot load the TLS certificate, key or client CA");
    }
    http->server_ = std::move(ssl);
  } else {
    http->server_ = std::make_unique<httplib::Server>();
  }
  http->server_->Get("/healthz", [](const httplib::Request&,
                                    httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  http->server_->Get("/metrics", [metrics = std::move(metrics),
                                    authorize = std::move(
                                        security.authorize_metrics)](
                                     const httplib::Request& req,
                                     httplib::Response& res) {
    if (authorize) {
      const absl::Status allowed = authorize(
          req.get_header_value("Authorization"),
          absl::StrCat(req.remote_addr, ":", req.remote_port));
      if (!allowed.ok()) {
        const bool unauthenticated =
            allowed.code() == absl::StatusCode::kUnauthenticated;
        res.status = unauthenticated ? 401 : 403;
        if (unauthenticated) res.set_header("WWW-Authenticate", "Bearer");
        res.set_content(absl::StrCat(allowed.message(), "\n"), "text/plain");
        return;
      }
    }
    res.set_content(metrics(), "text/plain; version=0.0.4");
  });
  if (port == 0) {
    http->port_ = http->server_->bind_to_any_port(host);
  } else {
    http->port_ = http->server_->bind_to_port(host, port) ? port : -1;
  }
  if (http->port_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("http: cannot listen on ", host, ":", port));
  }
  httplib::Server* server = http->server_.get();
  http->thread_ = std::thread([server] { server->listen_after_bind(); });
  return http;
}

HttpServer::~HttpServer() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace stepdb::server
