// End to end: the real `stepdb` binary, concurrent writers over gRPC,
// SIGKILL at random moments (while heads seal, and in some cycles while a
// full compaction runs), restart, and every acked point exactly once, with
// chart reads (chunk summaries, head) agreeing with the raw points.
//
// Soak mode: STEPDB_CRASH_CYCLES=200 ctest -R Sigkill (default 4 cycles).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using ::testing::HasSubstr;

constexpr int kSeriesPerWriter = 3;
constexpr int kStepsPerRequest = 20;

// The value written for (writer, series, step); NaN now and then, since a
// NaN loss is the point a user most needs to see.
double ExpectedValue(int writer, int series, int64_t step) {
  if (step % 97 == 13) return std::nan("");
  return writer * 1000.0 + series + static_cast<double>(step) * 0.25;
}

std::string Metric(int series) { return "train/m" + std::to_string(series); }

// One simulated training rank: streams requests of kStepsPerRequest steps
// for each of its series, remembering what the server acked as durable.
class Writer {
 public:
  explicit Writer(int id) : id_(id) {}

  // Streams until `stop` is set, `max_requests` have been sent in total, or
  // the server goes away. Resends unacked requests first (a reconnecting
  // client). Returns the number of rejected points seen in acks.
  uint64_t Run(const std::string& address, const std::atomic<bool>& stop,
               int64_t max_requests) {
    auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    auto stub = v1::Ingest::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto stream = stub->Write(&ctx);
    uint64_t rejected = 0;
    int64_t next = acked_ + 1;  // resend everything not known durable
    int64_t in_flight = 0;
    bool first = true;
    v1::WriteAck ack;
    auto read_ack = [&]() {
      if (!stream->Read(&ack)) return false;
      --in_flight;
      EXPECT_EQ(ack.error_code(), 0) << ack.error_message();
      rejected += ack.points_rejected();
      acked_ = std::max<int64_t>(acked_, static_cast<int64_t>(ack.durable_seq()) - 1);
      return true;
    };
    while (!stop.load() && next < max_requests) {
      v1::WriteRequest req;
      req.set_seq(next + 1);
      for (int s = 0; s < kSeriesPerWriter; ++s) {
        v1::SeriesPoints* points = req.add_series();
        points->set_ref(s + 1);
        if (first) {
          auto* key = points->mutable_key();
          key->set_project("e2e");
          key->set_run("run-1");
          key->set_metric(Metric(s));
          (*key->mutable_labels())["rank"] = std::to_string(id_);
        }
        for (int k = 0; k < kStepsPerRequest; ++k) {
          const int64_t step = next * kStepsPerRequest + k;
          points->add_steps(step);
          points->add_times_ms(1'700'000'000'000 + step * 500);
          points->add_values(ExpectedValue(id_, s, step));
        }
      }
      first = false;
      if (!stream->Write(req)) break;
      sent_ = std::max(sent_, next);
      ++next;
      if (++in_flight >= 4 && !read_ack()) break;
    }
    stream->WritesDone();
    while (in_flight > 0 && read_ack()) {
    }
    stream->Finish().IgnoreError();
    return rejected;
  }

  int id() const { return id_; }
  int64_t acked() const { return acked_; }  // highest durable request index
  int64_t sent() const { return sent_; }    // highest request index sent

 private:
  const int id_;
  int64_t acked_ = -1;
  int64_t sent_ = -1;
};

// Reads a whole series back over gRPC.
v1::ReadRangeResponse ReadSeries(const std::string& address, int writer, int series) {
  auto stub = v1::Query::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  v1::ReadRangeRequest req;
  req.mutable_series()->set_project("e2e");
  req.mutable_series()->set_run("run-1");
  req.mutable_series()->set_metric(Metric(series));
  (*req.mutable_series()->mutable_labels())["rank"] = std::to_string(writer);
  grpc::ClientContext ctx;
  auto reader = stub->ReadRange(&ctx, req);
  v1::ReadRangeResponse all, page;
  while (reader->Read(&page)) all.MergeFrom(page);
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok() || status.error_code() == grpc::StatusCode::NOT_FOUND)
      << status.error_message();
  return all;
}

// A chart read of one writer's series (buckets and range still to set).
v1::ReadDownsampledRequest ChartRequest(int writer, int series) {
  v1::ReadDownsampledRequest req;
  req.mutable_series()->set_project("e2e");
  req.mutable_series()->set_run("run-1");
  req.mutable_series()->set_metric(Metric(series));
  (*req.mutable_series()->mutable_labels())["rank"] = std::to_string(writer);
  return req;
}

// A chart read of the whole series must equal buckets computed from its raw
// points: every stored point counted once, whatever mix of chunk
// summaries, decoded chunks and head served it.
void VerifyChart(const std::string& address, int writer, int series,
                 const v1::ReadRangeResponse& raw) {
  if (raw.steps_size() == 0) return;
  auto stub = v1::Query::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  v1::ReadDownsampledRequest req = ChartRequest(writer, series);
  req.set_buckets(37);  // odd widths: buckets straddle chunk windows
  grpc::ClientContext ctx;
  v1::ReadDownsampledResponse chart;
  ASSERT_TRUE(stub->ReadDownsampled(&ctx, req, &chart).ok());
  uint64_t counted = 0;
  int i = 0;  // index into raw, which is in step order
  for (const v1::DownsampledBucket& b : chart.buckets()) {
    SCOPED_TRACE("bucket from step " + std::to_string(b.start_step().whole()));
    while (i < raw.steps_size() && raw.steps(i) < b.start_step().whole()) ++i;
    const int begin = i;
    uint64_t nan = 0;
    double sum = 0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (; i < raw.steps_size() && raw.steps(i) <= b.end_step().whole(); ++i) {
      const double v = raw.values(i);
      if (std::isnan(v)) {
        ++nan;
        continue;
      }
      sum += v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    ASSERT_GT(i, begin) << "a bucket with no raw point";
    ASSERT_EQ(b.count(), static_cast<uint64_t>(i - begin));
    EXPECT_EQ(b.nan_count(), nan);
    EXPECT_EQ(std::bit_cast<uint64_t>(b.first()),
              std::bit_cast<uint64_t>(raw.values(begin)));
    EXPECT_EQ(std::bit_cast<uint64_t>(b.last()),
              std::bit_cast<uint64_t>(raw.values(i - 1)));
    if (b.count() > nan) {
      EXPECT_EQ(b.min(), lo);
      EXPECT_EQ(b.max(), hi);
      EXPECT_NEAR(b.sum(), sum, 1e-9 * std::abs(sum) + 1e-9);
    }
    counted += b.count();
  }
  EXPECT_EQ(counted, static_cast<uint64_t>(raw.steps_size()));
}

// Checks a chart read of the whole series in 8-step buckets (served from
// rollup pieces and the head) against the raw points `raw`, exactly: 8
// steps are one piece of the 64-point chunks the servers here seal, so this
// compares the rollup records a crash left against the chunks it left.
void VerifyPieceChart(const std::string& address, int writer, int series,
                      const v1::ReadRangeResponse& raw) {
  if (raw.steps_size() == 0) return;
  auto stub = v1::Query::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  v1::ReadDownsampledRequest req = ChartRequest(writer, series);
  const int64_t last = raw.steps(raw.steps_size() - 1);
  req.mutable_steps()->mutable_from()->set_whole(0);
  req.mutable_steps()->mutable_to()->set_whole(static_cast<uint64_t>(last));
  req.set_buckets(static_cast<uint32_t>(last / 8 + 1));  // 8-step buckets
  grpc::ClientContext ctx;
  v1::ReadDownsampledResponse got;
  const grpc::Status status = stub->ReadDownsampled(&ctx, req, &got);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(got.buckets_size(), (last + 8) / 8);
  for (int b = 0; b < got.buckets_size(); ++b) {
    const v1::DownsampledBucket& bucket = got.buckets(b);
    SCOPED_TRACE("writer " + std::to_string(writer) + " series " +
                 std::to_string(series) + " bucket " + std::to_string(b));
    // Brute force over the raw points of steps [8b, 8b + 7]; the values
    // are multiples of 0.25, so every sum is exact.
    uint64_t count = 0, nan = 0;
    double sum = 0, min = 0, max = 0, first = 0, lastv = 0;
    for (int i = 8 * b; i < raw.steps_size() && i < 8 * b + 8; ++i) {
      const double v = raw.values(i);
      if (count++ == 0) first = v;
      lastv = v;
      if (std::isnan(v)) {
        ++nan;
        continue;
      }
      if (count - nan == 1 || v < min) min = v;
      if (count - nan == 1 || v > max) max = v;
      sum += v;
    }
    EXPECT_EQ(bucket.start_step().whole(), static_cast<uint64_t>(8 * b));
    EXPECT_EQ(bucket.count(), count);
    EXPECT_EQ(bucket.nan_count(), nan);
    EXPECT_EQ(std::bit_cast<uint64_t>(bucket.first()), std::bit_cast<uint64_t>(first));
    EXPECT_EQ(std::bit_cast<uint64_t>(bucket.last()), std::bit_cast<uint64_t>(lastv));
    EXPECT_EQ(bucket.sum(), sum);
    if (count > nan) {
      EXPECT_EQ(bucket.min(), min);
      EXPECT_EQ(bucket.max(), max);
    }
  }
}

// Checks that the stored points of every series of `w` are exactly the
// requests [0, n) for some n with acked < n <= sent + 1: every acked point,
// once, in order, with its value, and nothing torn.
void VerifyWriter(const std::string& address, const Writer& w) {
  int64_t stored_requests = -1;
  for (int s = 0; s < kSeriesPerWriter; ++s) {
    const v1::ReadRangeResponse got = ReadSeries(address, w.id(), s);
    ASSERT_EQ(got.steps_size() % kStepsPerRequest, 0)
        << "writer " << w.id() << " series " << s << ": a request was torn";
    const int64_t n = got.steps_size() / kStepsPerRequest;
    if (stored_requests < 0) stored_requests = n;
    // One request is one atomic write across all its series.
    ASSERT_EQ(n, stored_requests) << "writer " << w.id() << " series " << s;
    ASSERT_GE(n, w.acked() + 1) << "writer " << w.id() << " lost acked points";
    ASSERT_LE(n, w.sent() + 1);
    for (int i = 0; i < got.steps_size(); ++i) {
      ASSERT_EQ(got.steps(i), i) << "writer " << w.id() << " series " << s;
      const double want = ExpectedValue(w.id(), s, i);
      ASSERT_EQ(std::bit_cast<uint64_t>(got.values(i)), std::bit_cast<uint64_t>(want));
    }
    VerifyChart(address, w.id(), s, got);
    VerifyPieceChart(address, w.id(), s, got);
  }
}

// Full compactions back to back (seal every head, compact RocksDB) until
// `stop`, so that a kill lands in one.
void CompactUntil(const std::string& address, const std::atomic<bool>& stop,
                  std::atomic<int>* compactions) {
  auto stub = v1::Admin::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  while (!stop.load()) {
    grpc::ClientContext ctx;
    v1::CompactResponse resp;
    if (stub->Compact(&ctx, v1::CompactRequest(), &resp).ok()) ++*compactions;
  }
}

int CrashCycles() {
  const char* env = std::getenv("STEPDB_CRASH_CYCLES");
  return env != nullptr && std::atoi(env) > 0 ? std::atoi(env) : 4;
}

TEST(EndToEndTest, SigkillDuringWritesLosesNoAckedPoint) {
  testing::TempDir dir;
  constexpr int kWriters = 4;
  const int cycles = CrashCycles();
  std::vector<Writer> writers;
  for (int i = 0; i < kWriters; ++i) writers.emplace_back(i);
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));

  int during_compaction = 0;
  std::atomic<int> compactions{0};
  for (int cycle = 0; cycle < cycles; ++cycle) {
    SCOPED_TRACE("crash cycle " + std::to_string(cycle));
    testing::ServerProcess server(dir.path(), {"--chunk_points", "64"});
    ASSERT_TRUE(server.Start());
    // After a crash, nothing acked is missing and nothing is torn.
    for (const Writer& w : writers) VerifyWriter(server.address(), w);
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    std::atomic<uint64_t> rejected{0};
    for (Writer& w : writers) {
      threads.emplace_back([&] { rejected += w.Run(server.address(), stop, 1 << 30); });
    }
    // Every other cycle a compactor runs too, so the kill may land in a
    // full compaction (seals of every head, RocksDB compaction).
    const bool compacting = cycle % 2 == 1;
    if (compacting) {
      ++during_compaction;
      threads.emplace_back([&] { CompactUntil(server.address(), stop, &compactions); });
    }
    // Kill at a random moment while all writers stream (and heads seal).
    std::this_thread::sleep_for(std::chrono::milliseconds(
        std::uniform_int_distribution<int>(200, 900)(rng)));
    server.Kill(SIGKILL);
    stop = true;
    for (auto& t : threads) t.join();
    // Resent requests after a reconnect are duplicates, never rejections.
    EXPECT_EQ(rejected.load(), 0u);
    for (const Writer& w : writers) ASSERT_GE(w.acked(), 0) << "no progress";
  }

  // Finally: resume every writer, stop cleanly, restart, and find exactly
  // everything that was sent.
  testing::ServerProcess server(dir.path(), {"--chunk_points", "64"});
  ASSERT_TRUE(server.Start());
  std::atomic<bool> never{false};
  for (Writer& w : writers) {
    EXPECT_EQ(w.Run(server.address(), never, w.sent() + 5), 0u);
    EXPECT_EQ(w.acked(), w.sent());
  }
  const int status = server.Kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_THAT(server.output_after_ready(), HasSubstr("stepdb: stopped"));
  testing::ServerProcess again(dir.path());
  ASSERT_TRUE(again.Start());
  for (const Writer& w : writers) {
    VerifyWriter(again.address(), w);
    EXPECT_EQ(ReadSeries(again.address(), w.id(), 0).steps_size(),
              (w.sent() + 1) * kStepsPerRequest);
  }
  // For the record (docs/RELIABILITY.md): how many cycles ran and passed.
  std::printf("crash cycles passed: %d (%d with a compactor running, %d "
              "compactions completed)\n",
              cycles, during_compaction, compactions.load());
}

}  // namespace
}  // namespace stepdb
