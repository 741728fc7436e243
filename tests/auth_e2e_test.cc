// Auth and TLS end to end: the real `stepdb` binary with --auth=on and
// --tls_*, the HTTP side port, the bootstrap token file, certificates made
// at test time with the openssl CLI.
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "auth/client_channel.h"
#include "gtest/gtest.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

const std::string kBootstrap =
    "sdb_0123456789abcdef_" + std::string(64, 'e');

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A self-signed certificate for 127.0.0.1 / localhost at dir/name.{crt,key}.
void MakeCert(const std::string& dir, const std::string& name) {
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
      "-nodes -days 2 -subj /CN=localhost "
      "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " +
      dir + "/" + name + ".key -out " + dir + "/" + name + ".crt 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

grpc::Status Stats(std::shared_ptr<grpc::Channel> channel) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::StatsResponse resp;
  return v1::Admin::NewStub(channel)->Stats(&ctx, {}, &resp);
}

std::shared_ptr<grpc::Channel> Plain(const testing::ServerProcess& server,
                                     const std::string& token) {
  return auth::MakeClientChannel(server.address(),
                                 grpc::InsecureChannelCredentials(), {}, token);
}

TEST(AuthE2eTest, MetricsNeedAGlobalAdminHealthzStaysOpen) {
  testing::TempDir dir;
  const std::string token_file = dir.path() + "/bootstrap";
  std::ofstream(token_file) << kBootstrap << "\n";
  testing::ServerProcess server(dir.path() + "/data",
                                {"--auth=on", "--bootstrap_token_file=" + token_file});
  ASSERT_TRUE(server.Start());

  EXPECT_EQ(Stats(Plain(server, "")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_TRUE(Stats(Plain(server, kBootstrap)).ok());
  grpc::ClientContext ctx;
  v1::CreateTokenRequest req;
  req.set_project("p");
  req.set_scope(v1::SCOPE_ADMIN);
  v1::CreateTokenResponse created;
  ASSERT_TRUE(v1::Auth::NewStub(Plain(server, kBootstrap))
                  ->CreateToken(&ctx, req, &created)
                  .ok());

  httplib::Client http("127.0.0.1", server.http_port());
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto anonymous = http.Get("/metrics");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401);
  auto project_admin =
      http.Get("/metrics", {{"Authorization", "Bearer " + created.token()}});
  ASSERT_TRUE(project_admin);
  EXPECT_EQ(project_admin->status, 403);
  auto global = http.Get("/metrics", {{"Authorization", "Bearer " + kBootstrap}});
  ASSERT_TRUE(global);
  EXPECT_EQ(global->status, 200);
  EXPECT_NE(global->body.find("stepdb_"), std::string::npos);
}

TEST(AuthE2eTest, BootstrapTokenIsWrittenOnceToItsFile) {
  testing::TempDir dir;
  const std::string token_file = dir.path() + "/bootstrap";
  std::string token;
  {
    testing::ServerProcess server(dir.path() + "/data",
                                  {"--auth=on", "--bootstrap_token_file=" + token_file});
    ASSERT_TRUE(server.Start());
    token = ReadAll(token_file);
    ASSERT_FALSE(token.empty());
    token.pop_back();  // newline
    struct stat st;
    ASSERT_EQ(stat(token_file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_TRUE(Stats(Plain(server, token)).ok());
  }
  // A restart neither replaces nor adds a bootstrap token.
  std::remove(token_file.c_str());
  testing::ServerProcess server(dir.path() + "/data",
                                {"--auth=on", "--bootstrap_token_file=" + token_file});
  ASSERT_TRUE(server.Start());
  EXPECT_TRUE(Stats(Plain(server, token)).ok());
  std::ifstream missing(token_file);
  EXPECT_FALSE(missing.good());
}

TEST(AuthE2eTest, TlsIsRequiredWhenConfigured) {
  testing::TempDir dir;
  MakeCert(dir.path(), "server");
  const std::string cert = dir.path() + "/server.crt";
  testing::ServerProcess server(
      dir.path() + "/data",
      {"--tls_cert=" + cert, "--tls_key=" + dir.path() + "/server.key"});
  ASSERT_TRUE(server.Start());

  auto tls = auth::TlsCredentials(cert);
  ASSERT_TRUE(tls);
  EXPECT_TRUE(Stats(auth::MakeClientChannel(server.address(), *tls, {}, "")).ok());
  // Plaintext, and TLS that trusts another CA, are refused.
  EXPECT_FALSE(Stats(Plain(server, "")).ok());
  MakeCert(dir.path(), "stranger");
  auto wrong_ca = auth::TlsCredentials(dir.path() + "/stranger.crt");
  EXPECT_FALSE(Stats(auth::MakeClientChannel(server.address(), *wrong_ca, {}, "")).ok());

  // The HTTP side port speaks HTTPS with the same certificate.
  httplib::SSLClient https("127.0.0.1", server.http_port());
  https.set_ca_cert_path(cert.c_str());
  https.enable_server_certificate_verification(true);
  auto health = https.Get("/healthz");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  httplib::Client plain("127.0.0.1", server.http_port());
  EXPECT_FALSE(plain.Get("/healthz"));
}

TEST(AuthE2eTest, MutualTlsNeedsAClientCertificate) {
  testing::TempDir dir;
  MakeCert(dir.path(), "server");
  MakeCert(dir.path(), "client");
  const std::string cert = dir.path() + "/server.crt";
  testing::ServerProcess server(
      dir.path() + "/data",
      {"--tls_cert=" + cert, "--tls_key=" + dir.path() + "/server.key",
       "--tls_client_ca=" + dir.path() + "/client.crt"});
  ASSERT_TRUE(server.Start());
  auto anonymous = auth::TlsCredentials(cert);
  EXPECT_FALSE(Stats(auth::MakeClientChannel(server.address(), *anonymous, {}, "")).ok());
  auto with_cert = auth::TlsCredentials(cert, dir.path() + "/client.crt",
                                        dir.path() + "/client.key");
  ASSERT_TRUE(with_cert);
  EXPECT_TRUE(Stats(auth::MakeClientChannel(server.address(), *with_cert, {}, "")).ok());
}

TEST(AuthE2eTest, StepctlManagesTokensRetentionAndTheAudit) {
  testing::TempDir dir;
  const std::string token_file = dir.path() + "/bootstrap";
  std::ofstream(token_file) << kBootstrap << "\n";
  testing::ServerProcess server(dir.path() + "/data",
                                {"--auth=on", "--bootstrap_token_file=" + token_file});
  ASSERT_TRUE(server.Start());
  const std::string stepctl =
      testing::BinaryDir() + "/stepctl --addr " + server.address() + " ";
  const std::string admin = stepctl + "--token " + kBootstrap + " ";

  EXPECT_EQ(testing::RunCommand(stepctl + "admin token list").exit_code, 1);  // no token
  testing::CommandResult created = testing::RunCommand(admin +
                        "admin token create --project p --scope write "
                        "--format csv --description ci");
  ASSERT_EQ(created.exit_code, 0);
  const size_t at = created.out.find("token,sdb_");
  ASSERT_NE(at, std::string::npos) << created.out;
  std::string token = created.out.substr(at + 6);
  token = token.substr(0, token.find_first_of("\r\n"));
  const std::string id = token.substr(4, token.find('_', 4) - 4);

  const std::string writer = "STEPDB_TOKEN=" + token + " " + stepctl;
  EXPECT_EQ(testing::RunCommand(writer + "write --project p --run r --metric m --step 1 --value 2")
                .exit_code,
            0);
  EXPECT_EQ(testing::RunCommand(writer + "write --project q --run r --metric m --step 1 --value 2")
                .exit_code,
            1);
  testing::CommandResult listed = testing::RunCommand(admin + "admin token list --project p --format csv");
  EXPECT_EQ(listed.exit_code, 0);
  EXPECT_NE(listed.out.find(id), std::string::npos);
  EXPECT_EQ(listed.out.find(token), std::string::npos);  // never the secret

  EXPECT_EQ(testing::RunCommand(admin + "admin retention set --project p --raw_days 30").exit_code, 0);
  EXPECT_NE(testing::RunCommand(admin + "admin retention show --project p").out.find("raw_days 30"),
            std::string::npos);
  // Rollups kept longer than raw points; shorter is refused, clearly, and
  // changes nothing.
  auto expect_admin = [&](const std::string& args, int exit_code,
                          const std::string& text) {
    testing::CommandResult r = testing::RunCommand(admin + args + " 2>&1");
    EXPECT_EQ(r.exit_code, exit_code) << args;
    EXPECT_NE(r.out.find(text), std::string::npos) << args << ": " << r.out;
  };
  expect_admin("admin retention set --project p --raw_days 30 --rollup_days 90",
               0, "raw points kept 30 days, rollups kept 90 days");
  expect_admin("admin retention set --project p --raw_days 30 --rollup_days 7",
               1, "rollup_days: 7 is less than raw_days 30");
  expect_admin("admin retention show --project p", 0,
               "raw_days 30\nrollup_days 90\n");
  expect_admin("admin retention enforce", 0,
               "expired 0 chunks (0 points), 0 rollup records");

  EXPECT_EQ(testing::RunCommand(admin + "admin token revoke " + id).exit_code, 0);
  EXPECT_EQ(testing::RunCommand(writer + "write --project p --run r --metric m --step 2 --value 2")
                .exit_code,
            1);
  testing::CommandResult audit = testing::RunCommand(admin + "admin audit --verify --format csv");
  EXPECT_EQ(audit.exit_code, 0);
  EXPECT_NE(audit.out.find("denied"), std::string::npos);
  EXPECT_NE(audit.out.find("Auth.RevokeToken"), std::string::npos);
}

}  // namespace
}  // namespace stepdb
