// stepdb: the server. Wires the storage engine, the gRPC services and the
// HTTP side port together; see DESIGN.md "Binaries and their faces".
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "auth/auth_service.h"
#include "auth/token_authorizer.h"
#include "ingest/ingest_service.h"
#include "query/admin_service.h"
#include "query/query_service.h"
#include "query/watch_service.h"
#include "server/allocator.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "storage/engine.h"
#include "storage/run_store.h"
#include "storage/watch.h"

ABSL_FLAG(std::string, data, "./stepdb-data", "Data directory.");
ABSL_FLAG(std::string, listen, "127.0.0.1:7390",
          "gRPC address (HOST:PORT; port 0 picks a free port).");
ABSL_FLAG(std::string, http, "127.0.0.1:7391",
          "HTTP side port for /healthz and /metrics (HOST:PORT; empty: off).");
ABSL_FLAG(std::string, sync, "full",
          "full: acks wait for fsync of the WAL (group commit). none: acks "
          "wait for the WAL write only (a machine crash may lose them).");
ABSL_FLAG(uint32_t, chunk_points, 1024, "Points per sealed chunk.");
ABSL_FLAG(uint64_t, memory_limit_mb, 2048,
          "Budget for points held in memory (open heads as allocated, queued "
          "writes), in MiB; past half of it the oldest heads are sealed "
          "early and writers slowed, past it writes are refused with "
          "RESOURCE_EXHAUSTED. Decoded requests waiting for commit are held "
          "to a sixteenth of it, RocksDB's memtables to an eighth (at most "
          "192 MiB). 0: no budget.");
ABSL_FLAG(absl::Duration, stream_idle_timeout, absl::Minutes(10),
          "A write stream that sends no request for this long is ended with "
          "UNAVAILABLE (clients reconnect when they next write). 0: never.");
ABSL_FLAG(uint64_t, min_free_disk_mb, 256,
          "Writes are refused with RESOURCE_EXHAUSTED while the data "
          "directory's file system has less than this many MiB free, and "
          "taken again once space is freed. 0: only when the disk is full.");
ABSL_FLAG(uint32_t, max_message_mb, 64,
          "Largest gRPC message accepted, in MiB.");
ABSL_FLAG(uint64_t, max_aggregate_series, 10'000,
          "Aggregate: most series one request may touch; past it "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(uint64_t, max_aggregate_points, 1'000'000'000,
          "Aggregate: most points in range one request may touch (estimated "
          "from chunk headers before reading); past it RESOURCE_EXHAUSTED.");
ABSL_FLAG(uint32_t, aggregate_read_threads, 0,
          "Aggregate: threads one request reads its series with (the gRPC "
          "thread included); all aggregates share one pool of this many "
          "minus one helper threads, so concurrent requests do not "
          "oversubscribe the cores. 0: the number of hardware threads; 1 "
          "suits a server whose cores are always busy with ingest.");
ABSL_FLAG(std::string, auth, "off",
          "on: every RPC needs a bearer token (docs/USER_GUIDE.md, "
          "Security). off: no access control (single-user default).");
ABSL_FLAG(std::string, bootstrap_token_file, "",
          "With --auth=on, at first start: the global admin token is read "
          "from this file if it exists, else generated and written to it "
          "(mode 0600) instead of being printed. Env STEPDB_BOOTSTRAP_TOKEN "
          "gives the token directly.");
ABSL_FLAG(absl::Duration, retention_interval, absl::Hours(1),
          "How often per-project retention policies are enforced.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC and HTTP over TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require client certificates signed by it (mTLS).");

// Read by jemalloc (linked into this binary, see CMakeLists.txt) at its
// start; an unused symbol otherwise. Freed pages go back to the kernel from
// a background thread, within a second until the AllocatorGovernor
// (server/allocator.h) relaxes that while memory is plentiful.
extern "C" {
extern const char* malloc_conf;
const char* malloc_conf =
    "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
}

namespace {

bool SplitHostPort(const std::string& addr, std::string* host, int* port) {
  const size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return false;
  *host = addr.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return absl::SimpleAtoi(addr.substr(colon + 1), port) && *port >= 0 &&
         *port < 65536;
}

int Fail(const std::string& message) {
  std::cerr << "stepdb: " << message << std::endl;
  return 1;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The bootstrap token the operator supplied, if any: env
// STEPDB_BOOTSTRAP_TOKEN, else the content of --bootstrap_token_file.
std::optional<std::string> SuppliedBootstrapToken(const std::string& file) {
  if (const char* env = std::getenv("STEPDB_BOOTSTRAP_TOKEN"); env && *env) {
    return std::string(absl::StripAsciiWhitespace(env));
  }
  if (file.empty()) return std::nullopt;
  absl::StatusOr<std::string> content = ReadFile(file);
  if (!content.ok()) return std::nullopt;
  return std::string(absl::StripAsciiWhitespace(*content));
}

// Sets up --auth=on: opens the token store and audit log, and at first
// start installs the global admin token and shows it once.
absl::StatusOr<std::unique_ptr<stepdb::auth::TokenAuthorizer>> StartAuth(
    stepdb::storage::Engine* engine) {
  auto authorizer = stepdb::auth::TokenAuthorizer::Open(engine);
  if (!authorizer.ok()) return authorizer.status();
  const std::string file = absl::GetFlag(FLAGS_bootstrap_token_file);
  const std::optional<std::string> supplied = SuppliedBootstrapToken(file);
  auto installed = (*authorizer)->Bootstrap(supplied);
  if (!installed.ok()) {
    return absl::Status(installed.status().code(),
                        absl::StrCat("bootstrap token: ",
                                     installed.status().message()));
  }
  if (installed->has_value() && !supplied) {
    if (!file.empty()) {
      const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
      const std::string line = **installed + "\n";
      if (fd < 0 || ::write(fd, line.data(), line.size()) !=
                        static_cast<ssize_t>(line.size())) {
        if (fd >= 0) ::close(fd);
        return absl::InternalError(
            absl::StrCat("cannot write the bootstrap token to ", file));
      }
      ::close(fd);
      std::cerr << "stepdb: bootstrap global admin token written to " << file
                << std::endl;
    } else {
      std::cerr << "stepdb: bootstrap global admin token (shown once, keep it "
                   "safe):\n  "
                << **installed << std::endl;
    }
  }
  return authorizer;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "stepdb --data DIR --listen HOST:PORT [--http HOST:PORT] [--sync=full|none]");
  absl::ParseCommandLine(argc, argv);
  // Debian's Abseil checks every lock acquisition for deadlock cycles, which
  // costs several percent of ingest; the tests keep the check on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Signals are taken by one thread with sigwait, so block them everywhere
  // before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string sync = absl::GetFlag(FLAGS_sync);
  if (sync != "full" && sync != "none") {
    return Fail("--sync must be full or none, not " + sync);
  }
  stepdb::storage::EngineOptions options;
  options.data_dir = absl::GetFlag(FLAGS_data);
  options.sync = sync == "full";
  options.chunk_points = absl::GetFlag(FLAGS_chunk_points);
  options.memory_limit = absl::GetFlag(FLAGS_memory_limit_mb) << 20;
  options.min_free_disk_bytes = absl::GetFlag(FLAGS_min_free_disk_mb) << 20;
  // RocksDB's memtables count in the process beside the budget: a tight
  // budget gets them smaller too (an eighth of it, 64 MiB at 512).
  if (options.memory_limit > 0) {
    options.rocksdb_memtable_bytes =
        std::min(options.rocksdb_memtable_bytes, options.memory_limit / 8);
  }
  auto engine = stepdb::storage::Engine::Open(options);
  if (!engine.ok()) return Fail(std::string(engine.status().ToString()));
  auto allocator = std::make_unique<stepdb::server::AllocatorGovernor>(
      // From a quarter of the budget on, where the sealer aims (a million
      // series hover around half of it, and 10 s of retained pages were up
      // to 160 MB of RSS there).
      [e = engine->get(), limit = options.memory_limit] {
        return limit > 0 && e->MemoryUsage() > limit / 4;
      },
      absl::Milliseconds(250));

  const std::string auth_mode = absl::GetFlag(FLAGS_auth);
  if (auth_mode != "on" && auth_mode != "off") {
    return Fail("--auth must be on or off, not " + auth_mode);
  }
  std::unique_ptr<stepdb::auth::TokenAuthorizer> authorizer;
  if (auth_mode == "on") {
    auto started = StartAuth(engine->get());
    if (!started.ok()) return Fail(std::string(started.status().message()));
    authorizer = std::move(*started);
  } else {
    std::cerr << "WARNING: --auth=off: every client can read and write "
                 "everything"
              << std::endl;
  }
  stepdb::ingest::IngestOptions ingest_options;
  ingest_options.authorizer = authorizer.get();
  ingest_options.stream_idle_timeout = absl::GetFlag(FLAGS_stream_idle_timeout);
  // Requests wait decoded in the commit queue; a sixteenth of the budget
  // keeps the commit thread fed (docs/ARCHITECTURE.md, "Read gate").
  ingest_options.max_queued_bytes = options.memory_limit / 16;
  stepdb::query::QueryOptions query_options;
  query_options.authorizer = authorizer.get();
  query_options.max_aggregate_series = absl::GetFlag(FLAGS_max_aggregate_series);
  query_options.max_aggregate_points = absl::GetFlag(FLAGS_max_aggregate_points);
  query_options.aggregate_read_threads =
      absl::GetFlag(FLAGS_aggregate_read_threads);

  auto runs = stepdb::storage::RunStore::Open(engine->get());
  if (!runs.ok()) return Fail(std::string(runs.status().ToString()));
  stepdb::ingest::IngestService ingest(engine->get(), ingest_options, runs->get());
  stepdb::query::TailHub tail(engine->get(), {});
  (*engine)->AddCommitObserver(&tail);
  stepdb::query::QueryService query(engine->get(), query_options, runs->get(),
                                    &tail);
  // Watch rules see every committed point from before the first RPC on.
  auto watch = stepdb::storage::WatchEvaluator::Open(engine->get(), runs->get());
  if (!watch.ok()) return Fail(std::string(watch.status().ToString()));
  (*engine)->AddCommitObserver(watch->get());
  auto admin = std::make_unique<stepdb::query::AdminService>(
      engine->get(), authorizer.get(), runs->get(), watch->get());
  stepdb::query::WatchServiceOptions watch_options;
  watch_options.authorizer = authorizer.get();
  stepdb::query::WatchService watch_service(watch->get(), watch_options);
  stepdb::auth::RetentionPolicies retention(engine->get(),
                                            stepdb::auth::SystemClock());
  stepdb::auth::AuthService auth_service(authorizer.get(), &retention);
  auto retention_enforcer = std::make_unique<stepdb::auth::RetentionEnforcer>(
      &retention, absl::GetFlag(FLAGS_retention_interval));

  const std::string tls_cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string tls_key = absl::GetFlag(FLAGS_tls_key);
  const std::string tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  if (!tls_cert.empty() || !tls_key.empty()) {
    auto cert = ReadFile(tls_cert);
    auto key = ReadFile(tls_key);
    if (!cert.ok() || !key.ok()) {
      return Fail("--tls_cert and --tls_key must both name readable PEM files");
    }
    grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    if (!tls_client_ca.empty()) {
      auto ca = ReadFile(tls_client_ca);
      if (!ca.ok()) return Fail(std::string(ca.status().message()));
      ssl.pem_root_certs = *ca;
      ssl.client_certificate_request =
          GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    credentials = grpc::SslServerCredentials(ssl);
  } else if (!tls_client_ca.empty()) {
    return Fail("--tls_client_ca needs --tls_cert and --tls_key");
  }

  grpc::ServerBuilder builder;
  int grpc_port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, credentials, &grpc_port);
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(absl::GetFlag(FLAGS_max_message_mb)) << 20);
  builder.RegisterService(&ingest);
  builder.RegisterService(&query);
  builder.RegisterService(admin.get());
  builder.RegisterService(&watch_service);
  builder.RegisterService(&auth_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return Fail("cannot listen on " + listen);
  }

  std::unique_ptr<stepdb::server::HttpServer> http;
  const std::string http_addr = absl::GetFlag(FLAGS_http);
  std::string http_desc = "off";
  if (!http_addr.empty()) {
    std::string host;
    int port;
    if (!SplitHostPort(http_addr, &host, &port)) {
      return Fail("--http must be HOST:PORT, not " + http_addr);
    }
    stepdb::storage::Engine* e = engine->get();
    stepdb::server::HttpSecurity security{{}, tls_cert, tls_key, tls_client_ca};
    if (authorizer != nullptr) {
      security.authorize_metrics = [a = authorizer.get()](
                                       const std::string& authorization,
                                       const std::string& peer) {
        auto principal = a->Authenticate(authorization);
        absl::Status allowed = principal.status();
        if (principal.ok()) {
          allowed = stepdb::auth::Authorize(a, *principal, peer,
                                            stepdb::auth::Rpc::kHttpMetrics,
                                            stepdb::auth::kAllProjects);
        } else {
          a->Audit({"anonymous", "HTTP /metrics", "", peer, "unauthenticated",
                    std::string(allowed.message())});
        }
        return allowed;
      };
    }
    auto started = stepdb::server::HttpServer::Start(
        host, port,
        [e, &ingest] {
          return stepdb::server::FormatPrometheusMetrics(
              e->Stats(), ingest.counters(),
              stepdb::server::ReadAllocatorStats());
        },
        std::move(security));
    if (!started.ok()) return Fail(std::string(started.status().message()));
    http = std::move(*started);
    http_desc = absl::StrCat(host, ":", http->port());
  }

  std::string grpc_host;
  int ignored;
  SplitHostPort(listen, &grpc_host, &ignored);
  // The one ready line; tests and scripts wait for it.
  std::cout << "stepdb ready: grpc=" << grpc_host << ":" << grpc_port
            << " http=" << http_desc << " data=" << options.data_dir
            << " sync=" << sync << " auth=" << auth_mode
            << " tls=" << (tls_cert.empty() ? "off" : "on") << std::endl;

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::cout << "stepdb: signal " << signal_number << ", shutting down"
            << std::endl;
  http.reset();
  // Open tails and following Events streams would otherwise hold the
  // shutdown up.
  tail.Shutdown();
  watch_service.Shutdown();
  retention_enforcer.reset();
  // In-flight RPCs get a few seconds; acks still pending are then cancelled
  // (their points are durable or not, and clients resend what was unacked).
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  // A compaction or deletion still running uses the engine and the rules.
  admin.reset();
  (*engine)->RemoveCommitObserver(&tail);
  // Before the engine closes: the last events are persisted through it.
  (*engine)->RemoveCommitObserver(watch->get());
  watch->reset();
  allocator.reset();
  engine->reset();  // commits what is queued, syncs the WAL, closes RocksDB
  std::cout << "stepdb: stopped" << std::endl;
  return 0;
}
