// Read-path benchmarks (issue "Downsampling and aggregation"): a chart read
// of one series of 1,000,000 steps into 1000 buckets, in the engine and end
// to end over gRPC on loopback, the raw range read streamed to a client, and
// a cross-series aggregate (mean over 64 nodes x 8 GPUs = 512 series of
// 100,000 steps each, into 1000 buckets).
//
// The store is built once per process in a temporary directory: 1,000,000
// float32-valued points at consecutive steps, compacted (all sealed), plus a
// few hundred points left in the head, as in a live run.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "ingest/ingest_service.h"
#include "query/admin_service.h"
#include "query/aggregate.h"
#include "query/query_service.h"
#include "storage/task_pool.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/downsample.h"
#include "storage/engine.h"
#include "bench/loopback_server.h"

namespace stepdb {
namespace {

constexpr uint64_t kPoints = 1'000'000;
constexpr uint64_t S = storage::kMicrosPerStep;

struct Store {
  std::string dir;
  std::unique_ptr<storage::Engine> engine;
  storage::SeriesId series = 0;
  std::unique_ptr<ingest::IngestService> ingest;
  std::unique_ptr<query::QueryService> query;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::Query::Stub> stub;

  Store() {
    dir = (std::filesystem::temp_directory_path() /
           ("stepdb-query-bench-" + std::to_string(::getpid())))
              .string();
    std::filesystem::remove_all(dir);
    storage::EngineOptions options;
    options.data_dir = dir;
    engine = std::move(*storage::Engine::Open(options));
    series = *engine->ResolveSeries({"bench", "run", "train/loss", {{"rank", "0"}}});
    std::mt19937_64 rng(1);
    std::normal_distribution<double> noise(0, 0.05);
    auto write = [&](uint64_t begin, uint64_t end) {
      for (uint64_t b = begin; b < end; b += 100'000) {
        storage::AppendBatch batch;
        batch.StartSeries(series);
        for (uint64_t s = b; s < std::min(end, b + 100'000); ++s) {
          batch.AddPoint(s * S, 1'700'000'000'000 + 500 * static_cast<int64_t>(s),
                         static_cast<float>(2.5 * std::exp(-1e-6 * s) + noise(rng)));
        }
        batch.Prepare();
        if (!engine->Append(std::move(batch)).ok()) std::abort();
      }
    };
    write(0, kPoints - 300);
    if (!engine->Compact().ok()) std::abort();
    write(kPoints - 300, kPoints);  // a live head
    ingest = std::make_unique<ingest::IngestService>(engine.get(), ingest::IngestOptions{});
    query = std::make_unique<query::QueryService>(engine.get(), query::QueryOptions{});
    stub = v1::Query::NewStub(bench::ServeOnLoopback({query.get()}, &server));
  }
  ~Store() {
    server->Shutdown();
    engine.reset();
    std::filesystem::remove_all(dir);
  }

  static Store& Get() {
    static Store* store = new Store();  // lives until exit
    return *store;
  }
};

// Per-iteration latencies of a benchmark, reported as the p50 and p99
// user counters (milliseconds): Google Benchmark itself gives only the mean
// (and the median of repetitions), and the chart read has a p99 target.
class Latencies {
 public:
  explicit Latencies(benchmark::State& state) : state_(state) {
    ms_.reserve(static_cast<size_t>(state.max_iterations));
  }
  ~Latencies() {
    if (ms_.empty()) return;
    state_.counters["p50_ms"] = Percentile(0.50);
    state_.counters["p99_ms"] = Percentile(0.99);
  }
  // Times `body` (one iteration's work).
  template <typename F>
  void Time(F&& body) {
    const auto start = std::chrono::steady_clock::now();
    body();
    ms_.push_back(std::chrono::duration<double, std::milli>(
                      std::chrono::steady_clock::now() - start)
                      .count());
  }

 private:
  // Nearest rank: the smallest latency with at least fraction q of them at
  // or below it.
  double Percentile(double q) {
    const size_t rank = static_cast<size_t>(std::ceil(q * ms_.size()));
    const size_t k = std::max<size_t>(rank, 1) - 1;
    std::nth_element(ms_.begin(), ms_.begin() + k, ms_.end());
    return ms_[k];
  }

  benchmark::State& state_;
  std::vector<double> ms_;
};

// CPU seconds of the whole process (every thread: the gRPC server's and
// the client's), to report a streamed read's cost per point independently
// of how much of the shared machine the threads got.
double ProcessCpuSeconds() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

void SetSeries(v1::SeriesKey* key) {
  key->set_project("bench");
  key->set_run("run");
  key->set_metric("train/loss");
  (*key->mutable_labels())["rank"] = "0";
}

// Server-side work of the chart read: the engine and the bucket arithmetic.
void BM_ChartRead_Engine(benchmark::State& state) {
  Store& store = Store::Get();
  storage::ReadRange range;
  range.steps = {0, (kPoints - 1) * S};
  size_t buckets = 0;
  Latencies latencies(state);
  for (auto _ : state) {
    latencies.Time([&] {
      auto result = storage::ReadBuckets(*store.engine, store.series,
                                         storage::Axis::kStep, range, 1000);
      if (!result.ok()) {
        state.SkipWithError("read failed");
        return;
      }
      buckets = result->size();
    });
  }
  state.counters["buckets"] = static_cast<double>(buckets);
  state.counters["points_covered"] = kPoints;
}
BENCHMARK(BM_ChartRead_Engine)->Unit(benchmark::kMillisecond)->UseRealTime();

// The same read end to end: a gRPC client on loopback.
void BM_ChartRead_Grpc(benchmark::State& state) {
  Store& store = Store::Get();
  v1::ReadDownsampledRequest request;
  SetSeries(request.mutable_series());
  request.mutable_steps()->mutable_from()->set_whole(0);
  request.mutable_steps()->mutable_to()->set_whole(kPoints - 1);
  request.set_buckets(1000);
  Latencies latencies(state);
  for (auto _ : state) {
    latencies.Time([&] {
      grpc::ClientContext ctx;
      v1::ReadDownsampledResponse response;
      if (!store.stub->ReadDownsampled(&ctx, request, &response).ok()) {
        state.SkipWithError("rpc failed");
      }
    });
  }
}
BENCHMARK(BM_ChartRead_Grpc)->Unit(benchmark::kMillisecond)->UseRealTime();

// Raw range read of the whole series, streamed to a gRPC client.
void BM_RawRangeRead_Grpc(benchmark::State& state) {
  Store& store = Store::Get();
  v1::ReadRangeRequest request;
  SetSeries(request.mutable_series());
  uint64_t points = 0;
  const double cpu_start = ProcessCpuSeconds();
  for (auto _ : state) {
    grpc::ClientContext ctx;
    auto reader = store.stub->ReadRange(&ctx, request);
    v1::ReadRangeResponse page;
    while (reader->Read(&page)) points += page.values_size();
    if (!reader->Finish().ok()) state.SkipWithError("rpc failed");
  }
  state.SetItemsProcessed(static_cast<int64_t>(points));
  // Server and client together: the points per second one core would
  // stream if the read had it to itself.
  const double cpu = ProcessCpuSeconds() - cpu_start;
  if (cpu > 0) state.counters["points_per_cpu_s"] = points / cpu;
}
BENCHMARK(BM_RawRangeRead_Grpc)->Unit(benchmark::kMillisecond)->UseRealTime();

// The aggregate's store: a cluster of 64 nodes x 8 GPUs logging gpu/util
// every step for 100,000 steps (512 series, 51.2 M points), sealed, plus the
// last 300 steps of each series in the head (a live run). A second store
// has 8 nodes x 8 GPUs over 1,000,000 steps (64 series, 64 M points: the
// 512-series version would take ~10 minutes to build on the benchmark
// machine, and its read scales with the series count).
constexpr uint64_t kAggSteps = 100'000;
constexpr int kNodes = 64, kGpus = 8;
constexpr uint64_t kLongSteps = 1'000'000;
constexpr int kLongNodes = 8;

struct AggStore {
  std::string dir;
  std::unique_ptr<storage::Engine> engine;
  std::unique_ptr<query::QueryService> query;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::Query::Stub> stub;
  uint64_t series_count = 0;

  AggStore(int nodes, uint64_t steps) {
    dir = (std::filesystem::temp_directory_path() /
           ("stepdb-agg-bench-" + std::to_string(::getpid()) + "-" +
            std::to_string(steps)))
              .string();
    std::filesystem::remove_all(dir);
    storage::EngineOptions options;
    options.data_dir = dir;
    options.sync = false;
    engine = std::move(*storage::Engine::Open(options));
    std::vector<storage::SeriesId> ids;
    for (int n = 0; n < nodes; ++n) {
      for (int g = 0; g < kGpus; ++g) {
        ids.push_back(*engine->ResolveSeries(
            {"bench", "run", "gpu/util",
             {{"gpu", std::to_string(g)}, {"node", "n" + std::to_string(n)}}}));
      }
    }
    std::mt19937_64 rng(2);
    std::normal_distribution<double> noise(0, 3);
    auto write = [&](uint64_t begin, uint64_t end) {
      for (uint64_t b = begin; b < end; b += 1000) {
        const uint64_t e = std::min(end, b + 1000);
        storage::AppendBatch batch;
        batch.Reserve(ids.size(), ids.size() * (e - b));
        for (storage::SeriesId id : ids) {
          batch.StartSeries(id);
          for (uint64_t s = b; s < e; ++s) {
            batch.AddPoint(s * S, 1'700'000'000'000 + 500 * static_cast<int64_t>(s),
                           static_cast<float>(std::clamp(85 + noise(rng), 0.0, 100.0)));
          }
        }
        batch.Prepare();
        if (!engine->Append(std::move(batch)).ok()) std::abort();
      }
    };
    write(0, steps - 300);
    if (!engine->Compact().ok()) std::abort();
    write(steps - 300, steps);
    series_count = ids.size();
    query = std::make_unique<query::QueryService>(engine.get(), query::QueryOptions{});
    stub = v1::Query::NewStub(bench::ServeOnLoopback({query.get()}, &server));
  }
  ~AggStore() {
    server->Shutdown();
    engine.reset();
    std::filesystem::remove_all(dir);
  }

  static AggStore& Get() {
    static AggStore* store = new AggStore(kNodes, kAggSteps);  // until exit
    return *store;
  }
  static AggStore& GetLong() {
    static AggStore* store = new AggStore(kLongNodes, kLongSteps);
    return *store;
  }
};

v1::AggregateRequest AggRequest(uint32_t buckets, uint64_t steps = kAggSteps) {
  v1::AggregateRequest request;
  request.set_project("bench");
  request.set_metric("gpu/util");
  request.set_fn(v1::AggregateRequest::MEAN);
  request.mutable_steps()->mutable_from()->set_whole(0);
  request.mutable_steps()->mutable_to()->set_whole(steps - 1);
  request.set_buckets(buckets);
  return request;
}

// Mean across the 512 series into N buckets, in the engine (query/aggregate,
// no gRPC). With 1000 buckets a bucket is 128 steps, one rollup piece of a
// 1024-step chunk; with 100 buckets (1024 steps) a bucket is a whole chunk
// (8 pieces). Either way no chunk is read but the head.
void RunAggregate(benchmark::State& state, const AggStore& store,
                  uint64_t steps) {
  const v1::AggregateRequest request =
      AggRequest(static_cast<uint32_t>(state.range(0)), steps);
  query::AggregateLimits limits;
  limits.read_threads = static_cast<uint32_t>(state.range(1));
  // Helpers from a pool started once, as the server's QueryService does.
  storage::TaskPool pool(limits.read_threads - 1);
  limits.read_pool = &pool;
  v1::AggregateResponse response;
  const double cpu_start = ProcessCpuSeconds();
  {
    Latencies latencies(state);
    for (auto _ : state) {
      latencies.Time([&] {
        if (!query::Aggregate(*store.engine, request, limits, &response).ok()) {
          state.SkipWithError("aggregate failed");
        }
      });
    }
  }
  // Every thread's CPU (the helpers' too; Google Benchmark's CPU column is
  // the main thread's): what the read costs the machine.
  state.counters["process_cpu_ms"] =
      1e3 * (ProcessCpuSeconds() - cpu_start) /
      static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  state.counters["buckets"] = response.groups(0).buckets_size();
  state.counters["series"] = static_cast<double>(response.groups(0).series_count());
  state.SetItemsProcessed(state.iterations() * store.series_count * steps);
}

void BM_Aggregate_Engine(benchmark::State& state) {
  RunAggregate(state, AggStore::Get(), kAggSteps);
}
// Args: buckets, read threads.
BENCHMARK(BM_Aggregate_Engine)
    ->Args({1000, 1})
    ->Args({1000, 2})
    ->Args({100, 1})
    ->Args({100, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Mean across 64 series of 1,000,000 steps into 1000 buckets (1024 steps:
// every piece of every chunk is merged).
void BM_Aggregate_Engine_1MSteps(benchmark::State& state) {
  RunAggregate(state, AggStore::GetLong(), kLongSteps);
}
BENCHMARK(BM_Aggregate_Engine_1MSteps)
    ->Args({1000, 1})
    ->Args({1000, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// A chart of the 1M-point series on the time axis (1000 buckets of ~500 s,
// each about a chunk wide but not aligned with chunks: pieces serve the
// inside of each bucket, chunks at bucket edges are decoded).
void BM_ChartRead_Engine_Time(benchmark::State& state) {
  Store& store = Store::Get();
  storage::ReadRange range;
  range.times = {1'700'000'000'000,
                 1'700'000'000'000 + 500 * static_cast<int64_t>(kPoints - 1)};
  storage::BucketReadStats stats;
  for (auto _ : state) {
    auto result = storage::ReadBuckets(*store.engine, store.series,
                                       storage::Axis::kTime, range, 1000,
                                       &stats);
    if (!result.ok()) state.SkipWithError("read failed");
  }
  state.counters["chunks_decoded"] = static_cast<double>(stats.chunks_decoded);
  state.counters["pieces_merged"] = static_cast<double>(stats.pieces_merged);
}
BENCHMARK(BM_ChartRead_Engine_Time)->Unit(benchmark::kMillisecond)->UseRealTime();

// The same end to end: a gRPC client on loopback.
void BM_Aggregate_Grpc(benchmark::State& state) {
  AggStore& store = AggStore::Get();
  const v1::AggregateRequest request = AggRequest(static_cast<uint32_t>(state.range(0)));
  Latencies latencies(state);
  for (auto _ : state) {
    latencies.Time([&] {
      grpc::ClientContext ctx;
      v1::AggregateResponse response;
      if (!store.stub->Aggregate(&ctx, request, &response).ok()) {
        state.SkipWithError("rpc failed");
      }
    });
  }
  state.SetItemsProcessed(state.iterations() * kNodes * kGpus * kAggSteps);
}
BENCHMARK(BM_Aggregate_Grpc)->Arg(1000)->Arg(100)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace stepdb

BENCHMARK_MAIN();
