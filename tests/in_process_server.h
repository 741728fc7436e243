// A stepdb server inside the test process: engine, run store and the gRPC
// services on a loopback port, wired as server/main.cc wires them, with
// stubs. Torn down in the server binary's order.
#ifndef STEPDB_TESTS_IN_PROCESS_SERVER_H_
#define STEPDB_TESTS_IN_PROCESS_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "ingest/ingest_service.h"
#include "query/admin_service.h"
#include "query/query_service.h"
#include "query/watch_service.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"
#include "storage/run_store.h"
#include "storage/watch.h"
#include "tests/test_util.h"

namespace stepdb::testing {

class InProcessServer {
 public:
  // Opens the engine on `dir` and starts serving; check ok() afterwards.
  explicit InProcessServer(const std::string& dir, size_t chunk_points = 16,
                           query::TailOptions tail_options = {},
                           storage::WatchOptions watch_options = {}) {
    storage::EngineOptions options;
    options.data_dir = dir;
    options.chunk_points = chunk_points;
    auto engine = storage::Engine::Open(options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return;
    engine_ = std::move(*engine);
    auto runs = storage::RunStore::Open(engine_.get());
    EXPECT_TRUE(runs.ok()) << runs.status();
    if (!runs.ok()) return;
    runs_ = std::move(*runs);
    ingest_ = std::make_unique<ingest::IngestService>(
        engine_.get(), ingest::IngestOptions{}, runs_.get());
    tail_ = std::make_unique<query::TailHub>(engine_.get(), tail_options);
    engine_->AddCommitObserver(tail_.get());
    query_ = std::make_unique<query::QueryService>(
        engine_.get(), query::QueryOptions{}, runs_.get(), tail_.get());
    auto watch = storage::WatchEvaluator::Open(engine_.get(), runs_.get(),
                                               watch_options);
    EXPECT_TRUE(watch.ok()) << watch.status();
    if (!watch.ok()) return;
    watch_ = std::move(*watch);
    engine_->AddCommitObserver(watch_.get());
    admin_ = std::make_unique<query::AdminService>(engine_.get(), nullptr,
                                                   runs_.get(), watch_.get());
    watch_service_ = std::make_unique<query::WatchService>(watch_.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(ingest_.get());
    builder.RegisterService(query_.get());
    builder.RegisterService(admin_.get());
    builder.RegisterService(watch_service_.get());
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    if (server_ == nullptr) return;
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
    ingest_stub = v1::Ingest::NewStub(channel_);
    query_stub = v1::Query::NewStub(channel_);
    watch_stub = v1::Watch::NewStub(channel_);
    admin_stub = v1::Admin::NewStub(channel_);
  }

  ~InProcessServer() {
    if (tail_ != nullptr) tail_->Shutdown();
    if (watch_service_ != nullptr) watch_service_->Shutdown();
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(2));
      server_->Wait();
    }
    if (tail_ != nullptr) engine_->RemoveCommitObserver(tail_.get());
    if (watch_ != nullptr) engine_->RemoveCommitObserver(watch_.get());
    admin_.reset();  // joins running deletions, which use watch_ and engine_
    watch_.reset();
    engine_.reset();
  }

  bool ok() const { return server_ != nullptr; }
  storage::Engine& engine() { return *engine_; }
  storage::RunStore& runs() { return *runs_; }
  query::TailHub& tail() { return *tail_; }
  storage::WatchEvaluator& watch() { return *watch_; }

  std::unique_ptr<v1::Ingest::Stub> ingest_stub;
  std::unique_ptr<v1::Query::Stub> query_stub;
  std::unique_ptr<v1::Watch::Stub> watch_stub;
  std::unique_ptr<v1::Admin::Stub> admin_stub;

 private:
  std::unique_ptr<storage::Engine> engine_;
  std::unique_ptr<storage::RunStore> runs_;
  std::unique_ptr<ingest::IngestService> ingest_;
  std::unique_ptr<query::TailHub> tail_;
  std::unique_ptr<query::QueryService> query_;
  std::unique_ptr<query::AdminService> admin_;
  std::unique_ptr<storage::WatchEvaluator> watch_;
  std::unique_ptr<query::WatchService> watch_service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace stepdb::testing

#endif  // STEPDB_TESTS_IN_PROCESS_SERVER_H_
