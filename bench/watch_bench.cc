// Commit-path cost of watch rules (issue 7): engine append throughput with
// the watch evaluator registered and 0 vs 10,000 rules.
//
// The data: 512 series (8 runs x 64 nodes) x 4 metrics = 2048 series; one
// append is one commit group of 8 consecutive steps of every series (16,384
// points), prepared on the caller's thread as the ingest service does. The
// 10,000 rules are spread over the runs, metrics and nodes (each series is
// matched by about 5 of them) and cycle through every condition kind with
// thresholds the data never reaches, as in a healthy run: the cost measured
// is evaluation, not event persistence. sync is off so that the fsync does
// not hide the CPU cost.
//
//   build/watch_bench --benchmark_min_time=3s   (see docs/BENCHMARKS.md)
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "storage/engine.h"
#include "storage/watch.h"

namespace stepdb {
namespace {

constexpr int kRuns = 8;
constexpr int kNodes = 64;
constexpr int kMetrics = 4;
constexpr int kStepsPerAppend = 8;
constexpr const char* kConditions[] = {"above 1e9 for 3", "below -1e9",
                                       "nonfinite", "plateau 100000000",
                                       "stalled 1h"};

void BM_AppendWithRules(benchmark::State& state) {
  const int rules = static_cast<int>(state.range(0));
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("stepdb-watch-bench-" + std::to_string(::getpid())))
                              .string();
  std::filesystem::remove_all(dir);
  storage::EngineOptions options;
  options.data_dir = dir;
  options.sync = false;
  auto engine = std::move(*storage::Engine::Open(options));
  auto watch = std::move(*storage::WatchEvaluator::Open(engine.get(), nullptr));
  engine->AddCommitObserver(watch.get());
  for (int j = 0; j < rules; ++j) {
    storage::WatchRuleSpec rule;
    rule.project = "bench";
    rule.run = "run" + std::to_string(j % kRuns);
    rule.metric = "metric" + std::to_string(j % kMetrics);
    rule.labels = {{"node", "n" + std::to_string((j / kRuns) % kNodes)}};
    rule.condition = kConditions[j % std::size(kConditions)];
    if (!watch->CreateRule(rule).ok()) std::abort();
  }
  std::vector<storage::SeriesId> series;
  for (int r = 0; r < kRuns; ++r) {
    for (int n = 0; n < kNodes; ++n) {
      for (int m = 0; m < kMetrics; ++m) {
        series.push_back(
            *engine->ResolveSeries({"bench",
                                    "run" + std::to_string(r),
                                    "metric" + std::to_string(m),
                                    {{"node", "n" + std::to_string(n)}}}));
      }
    }
  }
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> value(0, 1);
  uint64_t step = 0;
  uint64_t points = 0;
  for (auto _ : state) {
    state.PauseTiming();
    storage::AppendBatch batch;
    batch.Reserve(series.size(), series.size() * kStepsPerAppend);
    for (storage::SeriesId id : series) {
      batch.StartSeries(id);
      for (int s = 0; s < kStepsPerAppend; ++s) {
        batch.AddPoint((step + s) * storage::kMicrosPerStep,
                       1'700'000'000'000 + static_cast<int64_t>(step + s),
                       static_cast<float>(value(rng)));
      }
    }
    batch.Prepare();
    step += kStepsPerAppend;
    state.ResumeTiming();
    if (!engine->Append(std::move(batch)).ok()) std::abort();
    points += series.size() * kStepsPerAppend;
  }
  state.SetItemsProcessed(static_cast<int64_t>(points));
  state.counters["rules"] = rules;
  state.counters["events"] = static_cast<double>(watch->LastSeq());
  engine->RemoveCommitObserver(watch.get());
  watch.reset();
  engine.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_AppendWithRules)
    ->Arg(0)
    ->Arg(10'000)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace stepdb

BENCHMARK_MAIN();
