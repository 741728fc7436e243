// Microbenchmarks of the chunk codec on synthetic training telemetry.
//
// Each kind is one series of the shape a training job logs: consecutive
// steps, times every ~500 ms with +-20 ms jitter, and values typical of the
// metric. The data is generated from fixed seeds so that runs compare.
// Reported per benchmark: items_per_second (points) and bytes_per_point
// (encoded size of the whole series over its points).
//
//   ./codec_bench --benchmark_filter=BM_Decode
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "storage/chunk_codec.h"

namespace stepdb::storage {
namespace {

constexpr size_t kChunkPoints = 1024;
constexpr size_t kNumChunks = 64;
constexpr uint64_t kStep = 1'000'000;  // micro-steps per step

enum class Kind {
  kLoss,
  kLr,
  kGpuUtil,
  kMemory,
  kPower,
  kGradNorm,
  kTokensPerSec,
  kTemperature,
};
constexpr int kNumKinds = 8;

double NextValue(Kind kind, size_t i, std::mt19937_64& rng, double prev) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const double step = static_cast<double>(i);
  switch (kind) {
    case Kind::kLoss: {
      // Decreasing and noisy, logged from a float32 tensor.
      const double loss =
          2.2 * std::exp(-step / 20'000.0) + 0.35 + 0.03 * normal(rng);
      return static_cast<double>(static_cast<float>(loss));
    }
    case Kind::kLr: {
      // Linear warm-up then cosine decay, computed in float32 by the
      // optimizer.
      constexpr float kPeak = 3e-4f;
      constexpr float kWarmup = 2000.0f;
      constexpr float kTotal = 200'000.0f;
      const float s = static_cast<float>(i);
      const float lr =
          s < kWarmup
              ? kPeak * s / kWarmup
              : 0.5f * kPeak *
                    (1.0f + std::cos(std::numbers::pi_v<float> * (s - kWarmup) /
                                     (kTotal - kWarmup)));
      return static_cast<double>(lr);
    }
    case Kind::kGpuUtil: {
      // Integer percent: mostly busy, with dips at data-loader stalls.
      if (uniform(rng) < 0.03) return std::floor(uniform(rng) * 101.0);
      return 96.0 + std::floor(uniform(rng) * 5.0);
    }
    case Kind::kMemory: {
      // Allocated bytes: constant for long stretches, moving in 2 MiB
      // blocks now and then.
      if (i == 0) return 41'943'040'000.0;
      if (uniform(rng) < 0.002) {
        return prev + 2'097'152.0 * std::floor(normal(rng) * 50.0);
      }
      return prev;
    }
    case Kind::kPower: {
      // Watts with one decimal, as nvidia-smi reports them.
      const double watts =
          350.0 + 30.0 * std::sin(step / 50.0) + 5.0 * normal(rng);
      return std::round(watts * 10.0) / 10.0;
    }
    case Kind::kGradNorm: {
      // float32, heavy-tailed: spikes now and then.
      const double spike = uniform(rng) < 0.01 ? 20.0 * uniform(rng) : 0.0;
      const double g = 0.8 + 0.3 * std::fabs(normal(rng)) + spike;
      return static_cast<double>(static_cast<float>(g));
    }
    case Kind::kTokensPerSec: {
      // Computed in float64: tokens / elapsed seconds.
      const double elapsed = 0.5 + 0.02 * normal(rng);
      return 524'288.0 / elapsed;
    }
    case Kind::kTemperature: {
      // Integer degrees C drifting slowly.
      if (i == 0) return 62.0;
      if (uniform(rng) < 0.05) return prev + (uniform(rng) < 0.5 ? -1.0 : 1.0);
      return prev;
    }
  }
  return 0.0;
}

// The series of `kind` split into chunks of kChunkPoints points.
const std::vector<PointColumns>& Chunks(Kind kind) {
  static std::vector<PointColumns> cache[kNumKinds];
  std::vector<PointColumns>& chunks = cache[static_cast<int>(kind)];
  if (!chunks.empty()) return chunks;
  std::mt19937_64 rng(1000 + static_cast<uint64_t>(kind));
  std::uniform_int_distribution<int64_t> jitter(-20, 20);
  const int64_t t0 = 1'717'000'000'000;  // ms since the epoch
  double value = 0.0;
  chunks.resize(kNumChunks);
  for (size_t c = 0; c < kNumChunks; ++c) {
    chunks[c].reserve(kChunkPoints);
    for (size_t j = 0; j < kChunkPoints; ++j) {
      const size_t i = c * kChunkPoints + j;
      value = NextValue(kind, i, rng, value);
      chunks[c].push_back(
          i * kStep, t0 + 500 * static_cast<int64_t>(i) + jitter(rng), value);
    }
  }
  return chunks;
}

using Encoder = void (*)(std::span<const uint64_t>, std::span<const int64_t>,
                         std::span<const double>, std::string*);

std::vector<std::string> EncodedChunks(Kind kind, Encoder encode) {
  std::vector<std::string> encoded;
  for (const PointColumns& p : Chunks(kind)) {
    encoded.emplace_back();
    encode(p.steps, p.times_ms, p.values, &encoded.back());
  }
  return encoded;
}

void SetCounters(benchmark::State& state, Kind kind, Encoder encode) {
  size_t bytes = 0;
  for (const std::string& chunk : EncodedChunks(kind, encode)) {
    bytes += chunk.size();
  }
  state.SetItemsProcessed(state.iterations() *
                          static_cast<int64_t>(kChunkPoints));
  state.counters["bytes_per_point"] = benchmark::Counter(
      static_cast<double>(bytes) / (kNumChunks * kChunkPoints));
}

template <Encoder kEncode>
void EncodeLoop(benchmark::State& state, Kind kind) {
  const std::vector<PointColumns>& chunks = Chunks(kind);
  std::string out;
  size_t c = 0;
  for (auto _ : state) {
    const PointColumns& p = chunks[c];
    out.clear();
    kEncode(p.steps, p.times_ms, p.values, &out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    c = (c + 1) % chunks.size();
  }
  SetCounters(state, kind, kEncode);
}

void BM_Encode(benchmark::State& state, Kind kind) {
  EncodeLoop<EncodeChunk>(state, kind);
}

// Decodes chunk c of `encoded` with decode(c, &out), round robin.
template <typename Decode>
void DecodeLoop(benchmark::State& state, size_t chunks, Decode decode) {
  PointColumns out;
  out.reserve(kChunkPoints);
  size_t c = 0;
  for (auto _ : state) {
    out.clear();
    absl::Status s = decode(c, &out);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(out.values.data());
    benchmark::ClobberMemory();
    c = (c + 1) % chunks;
  }
}

void BM_Decode(benchmark::State& state, Kind kind) {
  const std::vector<std::string> encoded = EncodedChunks(kind, EncodeChunk);
  DecodeLoop(state, encoded.size(), [&](size_t c, PointColumns* out) {
    return DecodeChunk(encoded[c], out);
  });
  SetCounters(state, kind, EncodeChunk);
}

// Format version 3: the chunk of a series that shares the step and time
// columns of a sibling's (the leader; here a chunk of the same points).
void EncodeAsFollower(std::span<const uint64_t> steps,
                      std::span<const int64_t> times_ms,
                      std::span<const double> values, std::string* out) {
  EncodeFollowerChunk(steps, times_ms, values, /*leader_series=*/2, out);
}

// Decoding a follower decodes its leader's step and time columns (not its
// values) and its own values; bytes_per_point is the follower alone.
void BM_DecodeFollower(benchmark::State& state, Kind kind) {
  const std::vector<std::string> leaders = EncodedChunks(kind, EncodeChunk);
  const std::vector<std::string> encoded =
      EncodedChunks(kind, EncodeAsFollower);
  DecodeLoop(state, encoded.size(), [&](size_t c, PointColumns* out) {
    return DecodeFollowerChunk(encoded[c], leaders[c], out);
  });
  SetCounters(state, kind, EncodeAsFollower);
}

// Version 1 (Gorilla) on the same data, for comparison.
void BM_EncodeV1(benchmark::State& state, Kind kind) {
  EncodeLoop<internal::EncodeChunkV1>(state, kind);
}

// Bytes per point of the values alone: the chunk minus the same chunk with
// constant values (steps, times and header cost the same in both).
void BM_ValueBytes(benchmark::State& state, Kind kind) {
  size_t value_bytes = 0;
  for (auto _ : state) {
    value_bytes = 0;
    for (const PointColumns& p : Chunks(kind)) {
      std::string full, flat;
      EncodeChunk(p.steps, p.times_ms, p.values, &full);
      const std::vector<double> zeros(p.size(), 0.0);
      EncodeChunk(p.steps, p.times_ms, zeros, &flat);
      value_bytes += full.size() - flat.size();
    }
  }
  state.counters["value_bytes_per_point"] = benchmark::Counter(
      static_cast<double>(value_bytes) / (kNumChunks * kChunkPoints));
}

#define STEPDB_KINDS(BM)                                      \
  BENCHMARK_CAPTURE(BM, loss, Kind::kLoss);                   \
  BENCHMARK_CAPTURE(BM, lr, Kind::kLr);                       \
  BENCHMARK_CAPTURE(BM, gpu_util, Kind::kGpuUtil);            \
  BENCHMARK_CAPTURE(BM, memory, Kind::kMemory);               \
  BENCHMARK_CAPTURE(BM, power, Kind::kPower);                 \
  BENCHMARK_CAPTURE(BM, grad_norm, Kind::kGradNorm);          \
  BENCHMARK_CAPTURE(BM, tokens_per_sec, Kind::kTokensPerSec); \
  BENCHMARK_CAPTURE(BM, temperature, Kind::kTemperature)

STEPDB_KINDS(BM_Encode);
STEPDB_KINDS(BM_Decode);
STEPDB_KINDS(BM_DecodeFollower);
STEPDB_KINDS(BM_EncodeV1);
STEPDB_KINDS(BM_ValueBytes);

}  // namespace
}  // namespace stepdb::storage

BENCHMARK_MAIN();
