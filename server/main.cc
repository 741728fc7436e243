// stepdb: the server. Wires the storage engine, the gRPC services and the
// HTTP side port together; see DESIGN.md "Binaries and their faces".
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "ingest/ingest_service.h"
#include "query/admin_service.h"
#include "query/query_service.h"
#include "query/watch_service.h"
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
ABSL_FLAG(uint64_t, memory_limit_mb, 4096,
          "Budget for points held in memory (open heads, queued writes), in "
          "MiB; past half of it writers are slowed, past it refused with "
          "RESOURCE_EXHAUSTED. 0: no budget.");
ABSL_FLAG(uint32_t, max_message_mb, 64,
          "Largest gRPC message accepted, in MiB.");
ABSL_FLAG(uint64_t, max_aggregate_series, 10'000,
          "Aggregate: most series one request may touch; past it "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(uint64_t, max_aggregate_points, 1'000'000'000,
          "Aggregate: most points in range one request may touch (estimated "
          "from chunk headers before reading); past it RESOURCE_EXHAUSTED.");

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
  auto engine = stepdb::storage::Engine::Open(options);
  if (!engine.ok()) return Fail(std::string(engine.status().ToString()));

  auto runs = stepdb::storage::RunStore::Open(engine->get());
  if (!runs.ok()) return Fail(std::string(runs.status().ToString()));

  stepdb::ingest::IngestService ingest(engine->get(), {}, runs->get());
  stepdb::query::TailHub tail(engine->get(), {});
  (*engine)->AddCommitObserver(&tail);
  stepdb::query::QueryOptions query_options;
  query_options.max_aggregate_series = absl::GetFlag(FLAGS_max_aggregate_series);
  query_options.max_aggregate_points = absl::GetFlag(FLAGS_max_aggregate_points);
  stepdb::query::QueryService query(engine->get(), query_options, runs->get(),
                                    &tail);
  stepdb::query::AdminService admin(engine->get());
  // Watch rules see every committed point from before the first RPC on.
  auto watch = stepdb::storage::WatchEvaluator::Open(engine->get(), runs->get());
  if (!watch.ok()) return Fail(std::string(watch.status().ToString()));
  (*engine)->AddCommitObserver(watch->get());
  stepdb::query::WatchService watch_service(watch->get());

  grpc::ServerBuilder builder;
  int grpc_port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &grpc_port);
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(absl::GetFlag(FLAGS_max_message_mb)) << 20);
  builder.RegisterService(&ingest);
  builder.RegisterService(&query);
  builder.RegisterService(&admin);
  builder.RegisterService(&watch_service);
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
    auto started = stepdb::server::HttpServer::Start(host, port, [e, &ingest] {
      return stepdb::server::FormatPrometheusMetrics(e->Stats(),
                                                     ingest.counters());
    });
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
            << " sync=" << sync << std::endl;

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::cout << "stepdb: signal " << signal_number << ", shutting down"
            << std::endl;
  http.reset();
  // Open tails and following Events streams would otherwise hold the
  // shutdown up.
  tail.Shutdown();
  watch_service.Shutdown();
  // In-flight RPCs get a few seconds; acks still pending are then cancelled
  // (their points are durable or not, and clients resend what was unacked).
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  (*engine)->RemoveCommitObserver(&tail);
  // Before the engine closes: the last events are persisted through it.
  (*engine)->RemoveCommitObserver(watch->get());
  watch->reset();
  engine->reset();  // commits what is queued, syncs the WAL, closes RocksDB
  std::cout << "stepdb: stopped" << std::endl;
  return 0;
}
