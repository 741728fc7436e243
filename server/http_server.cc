#include "server/http_server.h"

#include <httplib.h>

#include "absl/strings/str_cat.h"

namespace stepdb::server {

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const std::string& host, int port, std::function<std::string()> metrics) {
  std::unique_ptr<HttpServer> http(new HttpServer());
  http->server_ = std::make_unique<httplib::Server>();
  http->server_->Get("/healthz", [](const httplib::Request&,
                                    httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  http->server_->Get("/metrics", [metrics = std::move(metrics)](
                                     const httplib::Request&,
                                     httplib::Response& res) {
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
