// The ingest path below gRPC (issue 6), stage by stage, so that a
// regression shows without a server:
//
// - BM_ResolveSeries: series lookup of a known key (a stream's
//   registration; later requests carry refs).
// - BM_DecodeWriteRequest: a parsed WriteRequest (refs, columns) to an
//   engine batch, with its head fragments encoded: the gRPC thread's work.
// - BM_AppendCommit: Engine::Append of prepared batches, sync off: the
//   commit thread's work (head log write, heads) with the sealer running.
// - BM_AppendAndSeal: the same, then waits until every full window is
//   sealed into chunks: the whole storage cost of a point. Its counter
//   `engine_cpu_ns_per_point` is the CPU time of the engine's threads
//   (commit, seal, RocksDB; seal assists, which this load does not reach)
//   per point; making the batches is left out.
//
// The data is training telemetry: 512 ranks x 10 metrics (float32 loss-like
// walks, integer utilisation, one-decimal power, float64 throughput),
// consecutive steps every ~500 ms with jitter, 20 steps per request as
// the loadgen's max-rate run sends them.
//
//   build/ingest_path_bench --benchmark_min_time=2s   (docs/BENCHMARKS.md)

#include <benchmark/benchmark.h>
#include <time.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "ingest/request_decoder.h"
#include "stepdb/v1/stepdb.pb.h"
#include "storage/engine.h"

namespace stepdb {
namespace {

constexpr int kRanks = 512;
constexpr int kMetrics = 10;
constexpr int kSeries = kRanks * kMetrics;
constexpr int kStepsPerRequest = 20;
constexpr int64_t kStartMs = 1'700'000'000'000;

// One value of metric `m` of rank `r` at `step`: what a training job logs.
double Value(int r, int m, uint64_t step, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> noise(-1, 1);
  const double t = static_cast<double>(step);
  switch (m % 5) {
    case 0:  // loss-like: a float32 widened to double
      return static_cast<float>(2.0 * std::exp(-t / 5e4) + 0.05 * noise(rng) + r * 1e-3);
    case 1:  // GPU utilisation, an integer
      return static_cast<double>(90 + static_cast<int>(10 * noise(rng)));
    case 2:  // power in watts with one decimal
      return std::round((300 + 20 * noise(rng)) * 10) / 10;
    case 3:  // tokens/s, a computed double
      return 1.0e5 / (1.0 + 0.01 * noise(rng));
    default:  // learning rate, a float32 schedule
      return static_cast<float>(3e-4 * std::min(1.0, t / 2000));
  }
}

int64_t TimeMs(uint64_t step, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> jitter(-20, 20);
  return kStartMs + static_cast<int64_t>(step) * 500 + jitter(rng);
}

double CpuNs(clockid_t clock) {
  timespec t;
  clock_gettime(clock, &t);
  return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_nsec);
}

storage::SeriesKey KeyOf(int r, int m) {
  return {"bench", "run", "metric" + std::to_string(m),
          {{"node", "n" + std::to_string(r / 8)},
           {"gpu", std::to_string(r % 8)}}};
}

// An engine on a fresh temporary directory, sync off (the CPU cost, not
// the disk's fsync latency), with every series of the cluster resolved.
class BenchEngine {
 public:
  explicit BenchEngine(const std::string& name)
      : dir_((std::filesystem::temp_directory_path() /
              ("stepdb-ingest-bench-" + name + "-" + std::to_string(::getpid())))
                 .string()) {
    std::filesystem::remove_all(dir_);
    storage::EngineOptions options;
    options.data_dir = dir_;
    options.sync = false;
    auto engine = storage::Engine::Open(options);
    if (!engine.ok()) std::abort();
    engine_ = std::move(*engine);
    for (int r = 0; r < kRanks; ++r) {
      for (int m = 0; m < kMetrics; ++m) {
        ids_.push_back(*engine_->ResolveSeries(KeyOf(r, m)));
      }
    }
  }
  ~BenchEngine() {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  storage::Engine& engine() { return *engine_; }
  const std::vector<storage::SeriesId>& ids() const { return ids_; }

 private:
  const std::string dir_;
  std::unique_ptr<storage::Engine> engine_;
  std::vector<storage::SeriesId> ids_;
};

// One request's worth of points of every series, from `step`, prepared (its
// head fragments encoded) as the ingest service hands it to the engine.
storage::AppendBatch MakeBatch(const std::vector<storage::SeriesId>& ids,
                               uint64_t step, std::mt19937_64& rng) {
  storage::AppendBatch batch;
  batch.Reserve(ids.size(), ids.size() * kStepsPerRequest);
  std::vector<int64_t> times(kStepsPerRequest);
  for (int s = 0; s < kStepsPerRequest; ++s) times[s] = TimeMs(step + s, rng);
  for (size_t i = 0; i < ids.size(); ++i) {
    batch.StartSeries(ids[i]);
    const int r = static_cast<int>(i) / kMetrics, m = static_cast<int>(i) % kMetrics;
    for (int s = 0; s < kStepsPerRequest; ++s) {
      batch.AddPoint((step + s) * storage::kMicrosPerStep, times[s],
                     Value(r, m, step + s, rng));
    }
  }
  batch.Prepare();
  return batch;
}

void BM_ResolveSeries(benchmark::State& state) {
  BenchEngine bench("resolve");
  std::vector<storage::SeriesKey> keys;
  for (int r = 0; r < kRanks; ++r) {
    for (int m = 0; m < kMetrics; ++m) keys.push_back(KeyOf(r, m));
  }
  size_t i = 0;
  for (auto _ : state) {
    auto id = bench.engine().ResolveSeries(keys[i]);
    benchmark::DoNotOptimize(id);
    if (++i == keys.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ResolveSeries);

void BM_DecodeWriteRequest(benchmark::State& state) {
  BenchEngine bench("decode");
  const std::vector<storage::SeriesId>& ids = bench.ids();
  ingest::StreamRefs refs;
  for (size_t i = 0; i < ids.size(); ++i) {
    refs.Register(static_cast<uint32_t>(i + 1), ids[i]);
  }
  // Requests as a stream sends them once its series are registered.
  std::mt19937_64 rng(1);
  std::vector<v1::WriteRequest> requests(8);
  uint64_t step = 0;
  for (v1::WriteRequest& request : requests) {
    request.set_seq(step + 1);
    std::vector<int64_t> times(kStepsPerRequest);
    for (int s = 0; s < kStepsPerRequest; ++s) times[s] = TimeMs(step + s, rng);
    for (int i = 0; i < kSeries; ++i) {
      v1::SeriesPoints* series = request.add_series();
      series->set_ref(static_cast<uint32_t>(i + 1));
      for (int s = 0; s < kStepsPerRequest; ++s) {
        series->add_steps(static_cast<int64_t>(step + s));
        series->add_times_ms(times[s]);
        series->add_values(Value(i / kMetrics, i % kMetrics, step + s, rng));
      }
    }
    step += kStepsPerRequest;
  }
  size_t next = 0;
  for (auto _ : state) {
    auto decoded = ingest::DecodeWriteRequest(requests[next], bench.engine(), &refs,
                                              kStartMs, {});
    if (!decoded.ok()) std::abort();
    benchmark::DoNotOptimize(decoded);
    next = (next + 1) % requests.size();
  }
  state.SetItemsProcessed(state.iterations() * kSeries * kStepsPerRequest);
}
BENCHMARK(BM_DecodeWriteRequest)->Unit(benchmark::kMillisecond);

// Appends `requests` batches from *step on, one after the other. Adds the
// CPU time spent making them to *making_ns (an append's own work on this
// thread, such as helping the sealer, is the engine's).
void AppendRequests(storage::Engine& engine,
                    const std::vector<storage::SeriesId>& ids, int requests,
                    uint64_t* step, std::mt19937_64& rng, double* making_ns) {
  for (int i = 0; i < requests; ++i) {
    const double before = CpuNs(CLOCK_THREAD_CPUTIME_ID);
    storage::AppendBatch batch = MakeBatch(ids, *step, rng);
    *making_ns += CpuNs(CLOCK_THREAD_CPUTIME_ID) - before;
    if (!engine.Append(std::move(batch)).ok()) std::abort();
    *step += kStepsPerRequest;
  }
}

void BM_AppendCommit(benchmark::State& state) {
  BenchEngine bench("commit");
  std::mt19937_64 rng(1);
  uint64_t step = 0;
  for (auto _ : state) {
    state.PauseTiming();
    storage::AppendBatch batch = MakeBatch(bench.ids(), step, rng);
    step += kStepsPerRequest;
    state.ResumeTiming();
    if (!bench.engine().Append(std::move(batch)).ok()) std::abort();
  }
  state.SetItemsProcessed(state.iterations() * kSeries * kStepsPerRequest);
}
BENCHMARK(BM_AppendCommit)->Unit(benchmark::kMillisecond)->UseRealTime();

// An iteration: ~1024 steps of every series (5.3 M points: a chunk window
// each), then the wait until the sealer has sealed every complete window.
void BM_AppendAndSeal(benchmark::State& state) {
  BenchEngine bench("seal");
  storage::Engine& engine = bench.engine();
  std::mt19937_64 rng(1);
  uint64_t step = 0;
  constexpr int kRequests = 1024 / kStepsPerRequest + 1;
  // This thread's CPU making batches and polling Stats is left out.
  double left_out_ns = 0;
  // Warm up: the first window, sealed, so that every iteration seals one.
  AppendRequests(engine, bench.ids(), kRequests, &step, rng, &left_out_ns);
  auto wait_sealed = [&](uint64_t chunks) {
    const double before = CpuNs(CLOCK_THREAD_CPUTIME_ID);
    // Seals that fail (a full disk) are logged and retried later: give up.
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::minutes(2);
    while (engine.Stats().sealed_chunks < chunks) {
      if (std::chrono::steady_clock::now() > deadline) {
        fprintf(stderr, "ingest_path_bench: seals did not finish\n");
        std::abort();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    left_out_ns += CpuNs(CLOCK_THREAD_CPUTIME_ID) - before;
  };
  // Every window before the one the heads end in is sealed (a head keeps
  // the window its last point is in, even when that point ends it).
  auto sealed_windows = [&] { return kSeries * ((step - 1) / 1024); };
  wait_sealed(sealed_windows());
  uint64_t points = 0;
  left_out_ns = 0;
  const double process_before = CpuNs(CLOCK_PROCESS_CPUTIME_ID);
  for (auto _ : state) {
    AppendRequests(engine, bench.ids(), kRequests, &step, rng, &left_out_ns);
    points += static_cast<uint64_t>(kRequests) * kStepsPerRequest * kSeries;
    wait_sealed(sealed_windows());
  }
  state.SetItemsProcessed(static_cast<int64_t>(points));
  state.counters["engine_cpu_ns_per_point"] =
      (CpuNs(CLOCK_PROCESS_CPUTIME_ID) - process_before - left_out_ns) /
      static_cast<double>(points);
}
BENCHMARK(BM_AppendAndSeal)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace stepdb

int main(int argc, char** argv) {
  // As in the server: Abseil's deadlock detection would cost the commit
  // path a stack trace per lock.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
