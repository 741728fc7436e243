// stepdb-loadgen: simulates a training cluster streaming metrics to a stepdb
// server and prints one JSON line of results.
//
// Ranks (nodes x gpus) each log `metrics` series per step: loss, lr and
// grad-norm-like float32 values, a float64 throughput, and integer GPU
// counters. Ranks are spread over `streams` bidirectional Write streams; each
// stream sends one columnar request per `batch_steps` steps holding every one
// of its ranks' series (registered once by ref), keeps up to `window`
// requests in flight, and times each request from send to durable ack.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <future>
#include <iostream>
#include <latch>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/synchronization/mutex.h"
#include "auth/client_channel.h"
#include "nlohmann/json.hpp"
#include "stepdb/v1/stepdb.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using stepdb::v1::WriteAck;
using stepdb::v1::WriteRequest;

// Deterministic, realistic values for (rank, metric, step), precomputed so
// that the generator costs the shared CPU as little as possible: each metric
// has a table of kPeriod values (a smooth trend plus noise), and a rank reads
// it at its own offset.
class ValueModel {
 public:
  static constexpr int kPeriod = 4096;

  ValueModel(int metrics, uint64_t seed) : tables_(metrics) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (int m = 0; m < metrics; ++m) {
      tables_[m].resize(kPeriod);
      for (int i = 0; i < kPeriod; ++i) {
        tables_[m][i] = Value(m, i, normal(rng));
      }
    }
  }

  double Get(int rank, int metric, int64_t step) const {
    return tables_[metric][(step + rank * 97) % kPeriod];
  }

 private:
  static double Value(int metric, int64_t step, double noise) {
    const double t = static_cast<double>(step);
    switch (metric % 10) {
      case 0:  // loss, float32 as .item() yields it
        return static_cast<float>(2.5 * std::exp(-t / 5000) + 0.05 * noise);
      case 1:  // learning rate schedule, float32
        return static_cast<float>(3e-4 * std::min(1.0, t / 1000));
      case 2:  // grad norm, float32
        return static_cast<float>(1.0 + 0.3 * std::fabs(noise));
      case 3:  // tokens/s, computed float64
        return 4096.0 * 8 / (0.5 + 0.01 * noise);
      case 4:  // GPU utilisation, integer percent
        return std::clamp(std::round(95 + 4 * noise), 0.0, 100.0);
      case 5:  // memory bytes, mostly constant
        return 71'303'168'000.0 + (step % 1000 == 0 ? 1'048'576.0 : 0.0);
      case 6:  // temperature, integer degrees
        return std::round(70 + 2 * noise);
      case 7:  // power, watts with one decimal
        return std::round((650 + 20 * noise) * 10) / 10;
      case 8:  // clock MHz, integer
        return 1980.0;
      default:  // a float64 noise metric
        return noise;
    }
  }

  std::vector<std::vector<double>> tables_;
};

struct StreamResult {
  uint64_t points = 0;
  uint64_t requests = 0;
  uint64_t rejected = 0;
  uint64_t duplicates = 0;
  uint64_t errors = 0;
  uint64_t retries = 0;
  std::vector<double> ack_ms;
  // Each acked request's first step, when it was sent and when its ack
  // arrived (for the tail latency join).
  struct Acked {
    Clock::time_point sent, acked;
  };
  std::vector<std::pair<int64_t, Acked>> acked;
  // Points of each acked request, in ack order (for the steady rate).
  std::vector<uint64_t> acked_points;
};

struct Config {
  std::string project, run;
  int metrics, batch_steps, window;
  int64_t steps;
  double step_rate, duration;
  uint64_t seed;
};

// Where every stream waits, ready to send its first request, until the
// clock starts: a stream's thread, gRPC client, open call, reader and
// request buffers are what an SDK sets up once when training starts, and
// setting up 64 of them took the shared cores for the first ~0.1 s of the
// run.
struct StartGate {
  explicit StartGate(int streams)
      : ready(streams), start(started.get_future().share()) {}
  std::latch ready;  // every stream counts down once
  // Declared before `start`, which is made from it.
  std::promise<Clock::time_point> started;
  std::shared_future<Clock::time_point> start;
};

// One stream: owns ranks [first_rank, first_rank + ranks). Sends its first
// request `phase` after the gate opens.
StreamResult RunStream(const std::shared_ptr<grpc::Channel>& channel,
                       const Config& config, const ValueModel& model,
                       int first_rank, int ranks, int gpus_per_node,
                       StartGate& gate, Clock::duration phase) {
  StreamResult result;
  Clock::time_point start;
  bool waited_at_gate = false;
  auto stub = stepdb::v1::Ingest::NewStub(channel);
  const double deadline_s = config.duration > 0 ? config.duration : 1e18;
  const int series = ranks * config.metrics;

  // A request is the steps [first, first + n) of every series of the
  // stream; what was sent but not acked is kept as that range, so a retry
  // regenerates the same points.
  struct Sent {
    uint64_t seq;
    int64_t first, n;
    Clock::time_point at;
  };
  int64_t next_step = 0;
  uint64_t seq = 0;
  std::deque<Sent> unacked;
  std::mutex mu;
  int backoff_ms = 10;
  // Reused from request to request: only the packed columns change.
  WriteRequest req;
  for (int i = 0; i < series; ++i) req.add_series()->set_ref(i + 1);

  // What `req` holds now (its steps, and whether with keys), so that a
  // request built before the clock is not built again.
  int64_t built_first = -1, built_n = 0;
  bool built_keys = false;
  auto fill = [&](int64_t first, int64_t n, bool with_keys) {
    if (first == built_first && n == built_n && with_keys == built_keys) return;
    built_first = first;
    built_n = n;
    built_keys = with_keys;
    for (int r = 0; r < ranks; ++r) {
      const int rank = first_rank + r;
      for (int m = 0; m < config.metrics; ++m) {
        auto* s = req.mutable_series(r * config.metrics + m);
        if (with_keys) {
          auto* key = s->mutable_key();
          key->set_project(config.project);
          key->set_run(config.run);
          key->set_metric("m" + std::to_string(m));
          (*key->mutable_labels())["node"] = "n" + std::to_string(rank / gpus_per_node);
          (*key->mutable_labels())["gpu"] = std::to_string(rank % gpus_per_node);
        } else {
          s->clear_key();
        }
        // Sized once and written through pointers: Add() per point was
        // most of the generator's own CPU, which shares the server's cores.
        s->mutable_steps()->Resize(static_cast<int>(n), 0);
        s->mutable_times_ms()->Resize(static_cast<int>(n), 0);
        s->mutable_values()->Resize(static_cast<int>(n), 0.0);
        auto* steps = s->mutable_steps()->mutable_data();
        auto* times = s->mutable_times_ms()->mutable_data();
        double* values = s->mutable_values()->mutable_data();
        for (int64_t k = 0; k < n; ++k) {
          const int64_t step = first + k;
          steps[k] = step;
          // Metrics of one rank and step share their time (one log call).
          times[k] = 1'700'000'000'000 + step * 500 + rank % 7;
          values[k] = model.Get(rank, m, step);
        }
      }
    }
  };

  while (next_step < config.steps || !unacked.empty()) {
    grpc::ClientContext ctx;
    auto stream = stub->Write(&ctx);
    bool registered = false;
    std::atomic<bool> broken{false};
    int64_t in_flight = 0;  // guarded by mu
    std::condition_variable window_open;
    // Acks arrive in request order on a reader thread.
    std::thread reader([&] {
      WriteAck ack;
      while (stream->Read(&ack)) {
        std::lock_guard<std::mutex> lock(mu);
        while (!unacked.empty() && unacked.front().seq <= ack.durable_seq()) {
          if (unacked.front().seq == ack.seq()) {
            const Clock::time_point now = Clock::now();
            result.ack_ms.push_back(std::chrono::duration<double, std::milli>(
                                        now - unacked.front().at)
                                        .count());
            result.acked.push_back(
                {unacked.front().first, {unacked.front().at, now}});
            result.acked_points.push_back(
                static_cast<uint64_t>(unacked.front().n) * series);
          }
          unacked.pop_front();
        }
        if (ack.error_code() != 0) {
          ++result.errors;
          std::cerr << "loadgen: request " << ack.seq() << ": " << ack.error_message() << "\n";
        }
        result.rejected += ack.points_rejected();
        result.duplicates += ack.points_duplicate();
        --in_flight;
        window_open.notify_one();
      }
      std::lock_guard<std::mutex> lock(mu);
      broken = true;
      window_open.notify_one();
    });
    // Resend what a failed stream left unacked (new seqs, same points:
    // the server drops them as duplicates if they did land).
    std::vector<Sent> resend;
    {
      std::lock_guard<std::mutex> lock(mu);
      resend.assign(unacked.begin(), unacked.end());
      unacked.clear();
    }
    auto send = [&](int64_t first, int64_t n) {
      {
        std::unique_lock<std::mutex> lock(mu);
        window_open.wait(lock, [&] { return in_flight < config.window || broken.load(); });
      }
      if (broken.load()) {
        // Not sent: queued with the unacked ones for the next stream to
        // send (skipped, it would be counted in `points` but never sent).
        std::lock_guard<std::mutex> lock(mu);
        unacked.push_back({0, first, n, Clock::now()});
        return false;
      }
      // The first request of a stream carries every key with its ref.
      fill(first, n, !registered);
      registered = true;
      req.set_seq(++seq);
      {
        std::lock_guard<std::mutex> lock(mu);
        unacked.push_back({seq, first, n, Clock::now()});
        ++in_flight;
      }
      ++result.requests;
      return stream->Write(req);
    };
    if (!waited_at_gate) {
      // The first request, keys and all, built before the clock (and what
      // later ones reuse allocated with it).
      fill(0, std::min<int64_t>(config.batch_steps, config.steps), true);
      const std::shared_future<Clock::time_point> gate_opens = gate.start;  // own copy
      gate.ready.count_down();
      start = gate_opens.get() + phase;
      waited_at_gate = true;
    }
    bool ok = true;
    for (size_t i = 0; i < resend.size(); ++i) {
      ++result.retries;
      if (!(ok = send(resend[i].first, resend[i].n))) {
        // The rest go to the next stream too, in step order.
        std::lock_guard<std::mutex> lock(mu);
        unacked.insert(unacked.end(), resend.begin() + i + 1, resend.end());
        break;
      }
    }
    while (ok && next_step < config.steps) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      if (elapsed > deadline_s) {
        next_step = config.steps;
        break;
      }
      if (config.step_rate > 0) {
        const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(next_step / config.step_rate));
        std::this_thread::sleep_until(due);
      }
      const int64_t n = std::min<int64_t>(config.batch_steps, config.steps - next_step);
      result.points += n * series;
      ok = send(next_step, n);
      next_step += n;
    }
    stream->WritesDone();
    reader.join();
    const grpc::Status status = stream->Finish();
    std::lock_guard<std::mutex> lock(mu);
    if (unacked.empty() && next_step >= config.steps) break;
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
        status.error_code() == grpc::StatusCode::UNAVAILABLE) {
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
      backoff_ms = std::min(backoff_ms * 2, 2000);
      continue;  // reconnect and resend
    }
    if (!status.ok()) {
      std::cerr << "loadgen: stream failed: " << status.error_message() << "\n";
      ++result.errors;
      break;
    }
  }
  return result;
}

// A live tail of one rank's first metric: when each step arrived.
struct TailResult {
  int rank = 0;
  std::vector<std::pair<int64_t, Clock::time_point>> received;  // step, when
  uint64_t dropped = 0;
};

void RunTail(const std::shared_ptr<grpc::Channel>& channel, const Config& config,
             int rank, int gpus_per_node, grpc::ClientContext* ctx,
             TailResult* result) {
  auto stub = stepdb::v1::Query::NewStub(channel);
  stepdb::v1::TailRequest req;
  req.set_project(config.project);
  req.set_run(config.run);
  req.set_metric("m0");
  auto* node = req.add_labels();
  node->set_key("node");
  node->set_value("n" + std::to_string(rank / gpus_per_node));
  auto* gpu = req.add_labels();
  gpu->set_key("gpu");
  gpu->set_value(std::to_string(rank % gpus_per_node));
  result->rank = rank;
  auto reader = stub->Tail(ctx, req);
  stepdb::v1::TailResponse resp;
  while (reader->Read(&resp)) {
    const Clock::time_point now = Clock::now();
    result->dropped += resp.dropped_points();
    for (const auto& s : resp.series()) {
      for (int64_t step : s.steps()) result->received.emplace_back(step, now);
    }
  }
  reader->Finish();
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

double LatencyMs(const StreamResult::Acked& a) {
  return std::chrono::duration<double, std::milli>(a.acked - a.sent).count();
}

double Max(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

// Ack latencies grouped by when (since start) their request was sent.
void PrintTimeline(const std::vector<StreamResult>& results, Clock::time_point start,
                   double bucket_seconds) {
  std::map<int64_t, std::vector<double>> by_bucket;
  for (const StreamResult& r : results) {
    for (const auto& [first_step, a] : r.acked) {
      const auto since = std::chrono::duration<double>(a.sent - start).count();
      by_bucket[static_cast<int64_t>(since / bucket_seconds)].push_back(
          LatencyMs(a));
    }
  }
  for (auto& [bucket, ms] : by_bucket) {
    const double max = Max(ms);  // before Percentile reorders ms
    fprintf(stderr, "t=%7.2f acks=%6zu p50=%8.2f p99=%8.2f max=%8.2f\n",
            bucket * bucket_seconds, ms.size(), Percentile(ms, 0.5),
            Percentile(ms, 0.99), max);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"stepdb-loadgen: simulates a training cluster against a stepdb server"};
  std::string addr = "127.0.0.1:7390";
  Config config{"loadgen", "", 10, 10, 8, 1000, 0, 0, 1};
  int nodes = 64, gpus = 8, streams = 8;
  app.add_option("--addr", addr, "Server address HOST:PORT.");
  app.add_option("--project", config.project, "Project to write to.");
  app.add_option("--run", config.run, "Run id (default: loadgen-<unix seconds>).");
  app.add_option("--nodes", nodes, "Nodes of the simulated cluster.");
  app.add_option("--gpus", gpus, "GPUs (ranks) per node.");
  app.add_option("--metrics", config.metrics, "Series per rank.");
  app.add_option("--steps", config.steps, "Steps to simulate per rank.");
  app.add_option("--step-rate", config.step_rate,
                 "Steps per second per rank (fixed-rate mode); 0 = as fast as possible.");
  app.add_option("--duration", config.duration,
                 "Stop after this many seconds even if steps remain (0 = no limit).");
  app.add_option("--batch-steps", config.batch_steps, "Steps per request (an SDK's flush).");
  app.add_option("--streams", streams, "Concurrent Write streams.");
  app.add_option("--window", config.window, "Requests in flight per stream.");
  app.add_option("--seed", config.seed, "Seed of the value generator.");
  bool spread_flushes = false;
  app.add_flag("--spread-flushes", spread_flushes,
               "Fixed-rate mode: stream s flushes s/streams of a flush interval "
               "after stream 0, as independent SDK flush timers do; by default "
               "every stream flushes at the same instant (the worst case).");
  int tail_subscribers = 0;
  app.add_option("--tail-subscribers", tail_subscribers,
                 "Live tails to open (each on one rank's first metric) and time: "
                 "delivery minus the client's receipt of the ack.");
  double warmup = 0;
  app.add_option("--warmup", warmup,
                 "ack_steady_* leave out the requests sent in this many first "
                 "seconds of the run (besides those before every stream's "
                 "registration was acked).");
  double timeline = 0;
  app.add_option("--timeline", timeline,
                 "Also print to stderr, per this many seconds of the run (by "
                 "send time): requests acked, ack latency p50/p99/max in ms; "
                 "shows whether a latency tail is steady or comes in stalls.");
  std::string token;
  if (const char* env = std::getenv("STEPDB_TOKEN"); env && *env) token = env;
  app.add_option("--token", token, "Bearer token (env STEPDB_TOKEN).");
  CLI11_PARSE(app, argc, argv);
  // As in the server: Debian's Abseil checks every lock gRPC takes for
  // deadlock cycles, CPU taken from the server that shares the cores.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (config.run.empty()) {
    config.run = "loadgen-" + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                 std::chrono::system_clock::now().time_since_epoch())
                                                 .count());
  }
  const int ranks = nodes * gpus;
  streams = std::min(streams, ranks);
  if (ranks <= 0 || streams <= 0 || config.metrics <= 0 || config.steps <= 0 ||
      config.batch_steps <= 0 || config.window <= 0) {
    std::cerr << "loadgen: nodes, gpus, metrics, streams, steps, batch_steps and window "
                 "must be positive\n";
    return 2;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  const ValueModel model(config.metrics, config.seed);
  std::vector<StreamResult> results(streams);
  std::vector<std::thread> threads;
  // Tails subscribe before the first write, over one shared connection.
  std::vector<TailResult> tails(tail_subscribers);
  std::vector<std::unique_ptr<grpc::ClientContext>> tail_contexts;
  std::vector<std::thread> tail_threads;
  if (tail_subscribers > 0) {
    auto channel = grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args);
    for (int i = 0; i < tail_subscribers; ++i) {
      tail_contexts.push_back(std::make_unique<grpc::ClientContext>());
      tail_threads.emplace_back([&, i, channel] {
        RunTail(channel, config, i % ranks, gpus, tail_contexts[i].get(), &tails[i]);
      });
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  // A channel per stream: one HTTP/2 connection each, as separate training
  // nodes would have. They connect (one after another) before the clock
  // starts, as an SDK does once when training starts: the TCP and HTTP/2
  // handshakes are not the ack latency of a write.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int s = 0; s < streams; ++s) {
    grpc::ChannelArguments own = args;
    own.SetInt("stepdb.loadgen.stream", s);
    channels.push_back(stepdb::auth::MakeClientChannel(
        addr, grpc::InsecureChannelCredentials(), own, token));
  }
  for (auto& channel : channels) {
    if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                   std::chrono::seconds(10))) {
      std::cerr << "loadgen: cannot connect to " << addr << "\n";
      return 1;
    }
  }
  StartGate gate(streams);
  for (int s = 0; s < streams; ++s) {
    const int first = s * ranks / streams;
    const int last = (s + 1) * ranks / streams;
    threads.emplace_back([&, s, first, last] {
      const std::shared_ptr<grpc::Channel>& channel = channels[s];
      const auto phase =
          spread_flushes && config.step_rate > 0
              ? std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                    config.batch_steps / config.step_rate * s / streams))
              : Clock::duration::zero();
      results[s] = RunStream(channel, config, model, first, last - first, gpus, gate, phase);
    });
  }
  gate.ready.wait();
  const auto start = Clock::now();
  gate.started.set_value(start);
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (tail_subscribers > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // last deliveries
    for (auto& c : tail_contexts) c->TryCancel();
    for (auto& t : tail_threads) t.join();
  }

  StreamResult total;
  for (auto& r : results) {
    total.points += r.points;
    total.requests += r.requests;
    total.rejected += r.rejected;
    total.duplicates += r.duplicates;
    total.errors += r.errors;
    total.retries += r.retries;
    total.ack_ms.insert(total.ack_ms.end(), r.ack_ms.begin(), r.ack_ms.end());
  }
  nlohmann::json out;
  out["points"] = total.points;
  out["series"] = static_cast<uint64_t>(ranks) * config.metrics;
  out["seconds"] = seconds;
  out["points_per_sec"] = seconds > 0 ? total.points / seconds : 0;
  // The rate once every stream has its first request (the one that
  // registers its series) acked: with a million series, registering them
  // is a one-off cost that a short run would otherwise mostly measure.
  {
    Clock::time_point registered = start, last = start;
    for (const auto& r : results) {
      if (r.acked.empty()) continue;
      registered = std::max(registered, r.acked.front().second.acked);
      last = std::max(last, r.acked.back().second.acked);
    }
    const Clock::time_point warm =
        std::max(registered, start + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(warmup)));
    uint64_t steady_points = 0;
    for (const auto& r : results) {
      for (size_t i = 0; i < r.acked.size(); ++i) {
        if (r.acked[i].second.acked > registered) steady_points += r.acked_points[i];
      }
    }
    const double steady_s = std::chrono::duration<double>(last - registered).count();
    out["registered_after_seconds"] = std::chrono::duration<double>(registered - start).count();
    out["steady_points_per_sec"] = steady_s > 0 ? steady_points / steady_s : 0;
    // Latency of the requests sent after that and after --warmup: the
    // registrations and a cold server's first allocations queue the first
    // half second or so of requests, once per run, and would otherwise be
    // most of a short run's tail.
    std::vector<double> steady_ms;
    for (const auto& r : results) {
      for (const auto& [first_step, a] : r.acked) {
        if (a.sent > warm) steady_ms.push_back(LatencyMs(a));
      }
    }
    out["warmup_seconds"] = warmup;
    if (steady_ms.empty()) {
      std::cerr << "loadgen: no request sent after the registrations and "
                   "--warmup; ack_steady_* are 0\n";
    }
    out["ack_steady_p50_ms"] = Percentile(steady_ms, 0.50);
    out["ack_steady_p99_ms"] = Percentile(steady_ms, 0.99);
    out["ack_steady_max_ms"] = Max(steady_ms);
  }
  out["requests"] = total.requests;
  out["retried_requests"] = total.retries;
  out["ack_p50_ms"] = Percentile(total.ack_ms, 0.50);
  out["ack_p90_ms"] = Percentile(total.ack_ms, 0.90);
  out["ack_p99_ms"] = Percentile(total.ack_ms, 0.99);
  out["ack_max_ms"] = Max(total.ack_ms);
  out["rejected_points"] = total.rejected;
  out["duplicate_points"] = total.duplicates;
  out["errors"] = total.errors;
  if (tail_subscribers > 0) {
    // Join each delivered step with the ack of the request that carried it.
    // The server hands points to tails before it sends their acks, so a
    // delivery usually precedes the ack: that counts as 0 ms.
    std::vector<double> tail_ms, from_send_ms;
    uint64_t tail_points = 0, tail_dropped = 0;
    for (const TailResult& t : tails) {
      tail_dropped += t.dropped;
      tail_points += t.received.size();
      int s = 0;
      while ((s + 1) * ranks / streams <= t.rank) ++s;
      const auto& acked = results[s].acked;  // in step order, mostly
      std::map<int64_t, StreamResult::Acked> by_first(acked.begin(), acked.end());
      for (const auto& [step, when] : t.received) {
        auto it = by_first.upper_bound(step);
        if (it == by_first.begin()) continue;
        --it;
        tail_ms.push_back(std::max(
            0.0,
            std::chrono::duration<double, std::milli>(when - it->second.acked).count()));
        from_send_ms.push_back(
            std::chrono::duration<double, std::milli>(when - it->second.sent).count());
      }
    }
    out["tail_subscribers"] = tail_subscribers;
    out["tail_points"] = tail_points;
    out["tail_dropped_points"] = tail_dropped;
    out["tail_p50_ms"] = Percentile(tail_ms, 0.50);
    out["tail_p99_ms"] = Percentile(tail_ms, 0.99);
    out["tail_max_ms"] = Max(tail_ms);
    // From the client's send: write, group commit, fsync and delivery.
    out["tail_from_send_p50_ms"] = Percentile(from_send_ms, 0.50);
    out["tail_from_send_p99_ms"] = Percentile(from_send_ms, 0.99);
  }
  if (timeline > 0) PrintTimeline(results, start, timeline);
  std::cout << out.dump() << std::endl;
  return total.errors == 0 && total.rejected == 0 ? 0 : 1;
}
