// Run listing: 10,000 runs with params, filtered by a param comparison and
// sorted, in the run store and over gRPC (Query.ListRuns) on loopback.
//
//   build/runs_bench --benchmark_min_time=2
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "bench/loopback_server.h"
#include "query/query_service.h"
#include "storage/engine.h"
#include "storage/run_store.h"

namespace stepdb {
namespace {

constexpr int kRuns = 10'000;

struct RunsStore {
  std::string dir;
  std::unique_ptr<storage::Engine> engine;
  std::unique_ptr<storage::RunStore> runs;
  std::unique_ptr<query::QueryService> query;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::Query::Stub> stub;

  RunsStore() {
    dir = (std::filesystem::temp_directory_path() /
           ("stepdb-runs-bench-" + std::to_string(::getpid())))
              .string();
    std::filesystem::remove_all(dir);
    storage::EngineOptions options;
    options.data_dir = dir;
    options.sync = false;  // setup speed; reads are what is measured
    engine = std::move(*storage::Engine::Open(options));
    runs = std::move(*storage::RunStore::Open(engine.get()));
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> log_lr(-5, -2);
    const char* models[] = {"resnet50", "vit-b16", "llama-7b", "gpt2"};
    for (int i = 0; i < kRuns; ++i) {
      storage::RunRecord run;
      run.project = "bench";
      run.run_id = "run-" + std::to_string(i);
      run.params["lr"] = std::pow(10.0, log_lr(rng));
      run.params["batch_size"] = int64_t{32} << (i % 4);
      run.params["model"] = std::string(models[i % 4]);
      run.params["seed"] = int64_t{i};
      run.tags = {i % 10 == 0 ? "baseline" : "sweep"};
      if (!runs->Create(std::move(run)).ok()) std::abort();
    }
    query = std::make_unique<query::QueryService>(
        engine.get(), query::QueryOptions{}, runs.get());
    stub = v1::Query::NewStub(bench::ServeOnLoopback({query.get()}, &server));
  }
  ~RunsStore() {
    server->Shutdown();
    engine.reset();
    std::filesystem::remove_all(dir);
  }

  static RunsStore& Get() {
    static RunsStore* store = new RunsStore();  // lives until exit
    return *store;
  }
};

// ~1/3 of the runs pass `lr < 1e-4`; sorted by lr, descending.
void BM_ListRuns_Store(benchmark::State& state) {
  RunsStore& store = RunsStore::Get();
  storage::RunFilter filter;
  filter.params.push_back(*storage::ParseParamComparison("lr < 1e-4"));
  const storage::RunSort sort = *storage::ParseRunSort("param:lr", true);
  size_t listed = 0;
  for (auto _ : state) {
    bool truncated = false;
    listed = store.runs->List("bench", filter, sort, 0, &truncated).size();
    benchmark::DoNotOptimize(listed);
  }
  state.counters["runs_listed"] = static_cast<double>(listed);
}
BENCHMARK(BM_ListRuns_Store)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_ListRuns_Grpc(benchmark::State& state) {
  RunsStore& store = RunsStore::Get();
  v1::ListRunsRequest request;
  request.set_project("bench");
  request.add_filters("lr < 1e-4");
  request.set_sort_by("param:lr");
  request.set_descending(true);
  int listed = 0;
  for (auto _ : state) {
    grpc::ClientContext ctx;
    v1::ListRunsResponse response;
    if (!store.stub->ListRuns(&ctx, request, &response).ok()) std::abort();
    listed = response.runs_size();
  }
  state.counters["runs_listed"] = listed;
}
BENCHMARK(BM_ListRuns_Grpc)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace stepdb

BENCHMARK_MAIN();
