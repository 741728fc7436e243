// Commit-path cost of watch rules (issue 7): engine append throughput with
// the watch evaluator registered and 0 vs 10,000 rules.
//
// The data: 512 series (8 runs x 64 nodes) x 4 metrics = 2048 series; one
// append is one commit group of 8 consecutive steps of every series (16,384
// points), prepared on the caller's thread as the ingest service does. The
// 10,000 rules are spread over the runs, metrics and nodes (each series is
// matched by 4 or 5 of them) and cycle through every condition kind with
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
#include <span>
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

void AddRules(storage::WatchEvaluator& watch, int rules) {
  for (int j = 0; j < rules; ++j) {
    storage::WatchRuleSpec rule;
    rule.project = "bench";
    rule.run = "run" + std::to_string(j % kRuns);
    rule.labels = {{"node", "n" + std::to_string((j / kRuns) % kNodes)}};
    rule.metric = "metric" + std::to_string((j / (kRuns * kNodes)) % kMetrics);
    rule.condition = kConditions[j % std::size(kConditions)];
    if (!watch.CreateRule(rule).ok()) std::abort();
  }
}

std::vector<storage::SeriesId> ResolveAll(storage::Engine& engine) {
  std::vector<storage::SeriesId> series;
  for (int r = 0; r < kRuns; ++r) {
    for (int n = 0; n < kNodes; ++n) {
      for (int m = 0; m < kMetrics; ++m) {
        series.push_back(
            *engine.ResolveSeries({"bench",
                                   "run" + std::to_string(r),
                                   "metric" + std::to_string(m),
                                   {{"node", "n" + std::to_string(n)}}}));
      }
    }
  }
  return series;
}

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
  AddRules(*watch, rules);
  const std::vector<storage::SeriesId> series = ResolveAll(*engine);
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

// The evaluator alone: OnCommit (what the commit thread runs) on a group of
// 2048 series x 8 points, without the engine's own commit work, so that
// the cost per point is measured apart from the noise of RocksDB writes.
void BM_EvaluateGroup(benchmark::State& state) {
  const int rules = static_cast<int>(state.range(0));
  const std::string dir =
      (std::filesystem::temp_directory_path() /
       ("stepdb-watch-bench-eval-" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove_all(dir);
  storage::EngineOptions options;
  options.data_dir = dir;
  options.sync = false;
  auto engine = std::move(*storage::Engine::Open(options));
  auto watch = std::move(*storage::WatchEvaluator::Open(engine.get(), nullptr));
  AddRules(*watch, rules);
  const std::vector<storage::SeriesId> series = ResolveAll(*engine);
  // Every series shares the step and time columns; the values differ.
  std::vector<uint64_t> steps(kStepsPerAppend);
  std::vector<int64_t> times(kStepsPerAppend);
  std::vector<double> values(series.size() * kStepsPerAppend);
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> value(0, 1);
  for (double& v : values) v = static_cast<float>(value(rng));
  std::vector<storage::CommittedPoints> committed;
  for (size_t i = 0; i < series.size(); ++i) {
    committed.push_back({series[i],
                         {steps, times,
                          std::span<const double>(values).subspan(
                              i * kStepsPerAppend, kStepsPerAppend)}});
  }
  uint64_t step = 0;
  for (auto _ : state) {
    for (int s = 0; s < kStepsPerAppend; ++s) {
      steps[s] = (step + s) * storage::kMicrosPerStep;
      times[s] = 1'700'000'000'000 + static_cast<int64_t>(step + s);
    }
    step += kStepsPerAppend;
    watch->OnCommit(committed);
  }
  state.SetItemsProcessed(state.iterations() *
                          static_cast<int64_t>(values.size()));
  state.counters["rules"] = rules;
  state.counters["events"] = static_cast<double>(watch->LastSeq());
  watch.reset();
  engine.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_EvaluateGroup)->Arg(0)->Arg(10'000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace stepdb

BENCHMARK_MAIN();
