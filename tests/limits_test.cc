// Limits on hostile or careless input, over real gRPC on loopback, in
// process: name sizes, label count, empty names, invalid UTF-8, series and
// points per request, message size, and a stream whose client never reads
// its acks. Each limit is rejected with a clear error and the server keeps
// serving. See docs/RELIABILITY.md.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/ingest_service.h"
#include "query/query_service.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"
#include "storage/series_key.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using ::testing::HasSubstr;

constexpr int kMaxMessageBytes = 1 << 20;  // the server's receive limit here

class LimitsTest : public ::testing::Test {
 protected:
  // Starts the server; tests that need other options call it themselves.
  void Start(ingest::IngestOptions options = {}) {
    storage::EngineOptions engine_options;
    engine_options.data_dir = dir_.path();
    auto engine = storage::Engine::Open(engine_options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    ingest_ = std::make_unique<ingest::IngestService>(engine_.get(), options);
    query_ = std::make_unique<query::QueryService>(engine_.get(),
                                                   query::QueryOptions{});
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
    builder.RegisterService(ingest_.get());
    builder.RegisterService(query_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = NewStub();
  }

  void TearDown() override {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
    server_->Wait();
  }

  // A stub on a channel of its own (a separate client).
  std::unique_ptr<v1::Ingest::Stub> NewStub(
      const grpc::ChannelArguments& args = {}) {
    return v1::Ingest::NewStub(
        grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port_),
                                  grpc::InsecureChannelCredentials(), args));
  }

  static v1::SeriesPoints* AddSeries(v1::WriteRequest* req,
                                     const std::string& metric,
                                     const std::string& run = "run-1") {
    v1::SeriesPoints* s = req->add_series();
    s->mutable_key()->set_project("proj");
    s->mutable_key()->set_run(run);
    s->mutable_key()->set_metric(metric);
    (*s->mutable_key()->mutable_labels())["node"] = "n1";
    return s;
  }

  static void AddPoints(v1::SeriesPoints* s, int64_t first, int n) {
    for (int i = 0; i < n; ++i) {
      s->add_steps(first + i);
      s->add_times_ms(1000 * (first + i));
      s->add_values(0.5 * (first + i));
    }
  }

  grpc::Status WriteOne(const v1::WriteRequest& req,
                        v1::Ingest::Stub* stub = nullptr) {
    v1::WriteResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    return (stub ? stub : stub_.get())->WriteOne(&ctx, req, &resp);
  }

  // A one-series, one-point write that must succeed.
  void ExpectServing(v1::Ingest::Stub* stub, const std::string& metric) {
    v1::WriteRequest req;
    AddPoints(AddSeries(&req, metric), 0, 1);
    const grpc::Status s = WriteOne(req, stub);
    EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  }

  // Series (or none) the server lists under proj/run-1.
  size_t SeriesCount() {
    auto stub = v1::Query::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                            grpc::InsecureChannelCredentials()));
    v1::ListSeriesRequest req;
    req.set_project("proj");
    v1::ListSeriesResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = stub->ListSeries(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.series_size();
  }

  // Expects `req` to fail as INVALID_ARGUMENT with all of `needles` in the
  // message, both unary and on a stream (as an error ack), and to store
  // nothing.
  void ExpectInvalid(const v1::WriteRequest& req,
                     const std::vector<std::string>& needles) {
    const size_t before = SeriesCount();
    const grpc::Status s = WriteOne(req);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    for (const auto& n : needles) EXPECT_THAT(s.error_message(), HasSubstr(n));

    grpc::ClientContext ctx;
    auto stream = stub_->Write(&ctx);
    v1::WriteRequest streamed = req;
    streamed.set_seq(1);
    ASSERT_TRUE(stream->Write(streamed));
    stream->WritesDone();
    v1::WriteAck ack;
    ASSERT_TRUE(stream->Read(&ack));
    EXPECT_EQ(ack.seq(), 1u);
    EXPECT_EQ(ack.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    for (const auto& n : needles) {
      EXPECT_THAT(ack.error_message(), HasSubstr(n));
    }
    EXPECT_EQ(ack.points_accepted(), 0u);
    EXPECT_TRUE(stream->Finish().ok());
    EXPECT_EQ(SeriesCount(), before) << "a rejected request stored a series";
  }

  stepdb::testing::TempDir dir_;
  std::unique_ptr<storage::Engine> engine_;
  std::unique_ptr<ingest::IngestService> ingest_;
  std::unique_ptr<query::QueryService> query_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Ingest::Stub> stub_;
  int port_ = 0;
};

TEST_F(LimitsTest, MetricNameOfMoreThan1024BytesIsRejected) {
  Start();
  v1::WriteRequest at_limit;
  AddPoints(AddSeries(&at_limit, std::string(storage::kMaxMetricBytes, 'm')), 0,
            1);
  EXPECT_TRUE(WriteOne(at_limit).ok());

  v1::WriteRequest over;
  AddPoints(AddSeries(&over, std::string(storage::kMaxMetricBytes + 1, 'm')), 0,
            1);
  ExpectInvalid(
      over, {"series[0]", "metric: 1025 bytes, more than the limit of 1024"});
}

TEST_F(LimitsTest, RunIdOfMoreThan128BytesIsRejected) {
  Start();
  v1::WriteRequest at_limit;
  AddPoints(AddSeries(&at_limit, "m", std::string(storage::kMaxRunBytes, 'r')),
            0, 1);
  EXPECT_TRUE(WriteOne(at_limit).ok());

  v1::WriteRequest over;
  AddPoints(AddSeries(&over, "m", std::string(storage::kMaxRunBytes + 1, 'r')),
            0, 1);
  ExpectInvalid(over,
                {"series[0]", "run: 129 bytes, more than the limit of 128"});
}

TEST_F(LimitsTest, MoreThan32LabelsAreRejected) {
  Start();
  v1::WriteRequest at_limit;
  v1::SeriesPoints* s = AddSeries(&at_limit, "m");
  auto& labels = *s->mutable_key()->mutable_labels();
  labels.clear();
  for (size_t i = 0; i < storage::kMaxLabels; ++i) {
    labels["k" + std::to_string(i)] = "v";
  }
  AddPoints(s, 0, 1);
  EXPECT_TRUE(WriteOne(at_limit).ok());

  v1::WriteRequest over = at_limit;
  (*over.mutable_series(0)->mutable_key()->mutable_labels())["zz"] = "v";
  ExpectInvalid(over,
                {"series[0]", "labels: 33 labels, more than the limit of 32"});
}

TEST_F(LimitsTest, LabelValueOfMoreThan1024BytesIsRejected) {
  Start();
  v1::WriteRequest at_limit;
  v1::SeriesPoints* s = AddSeries(&at_limit, "m");
  (*s->mutable_key()->mutable_labels())["node"] =
      std::string(storage::kMaxLabelValueBytes, 'v');
  AddPoints(s, 0, 1);
  EXPECT_TRUE(WriteOne(at_limit).ok());

  v1::WriteRequest over = at_limit;
  (*over.mutable_series(0)->mutable_key()->mutable_labels())["node"] =
      std::string(storage::kMaxLabelValueBytes + 1, 'v');
  ExpectInvalid(over, {"series[0]", "label \"node\" value: 1025 bytes",
                       "more than the limit of 1024"});

  v1::WriteRequest long_key;
  v1::SeriesPoints* k = AddSeries(&long_key, "m");
  (*k->mutable_key()
        ->mutable_labels())[std::string(storage::kMaxLabelKeyBytes + 1, 'k')] =
      "v";
  AddPoints(k, 0, 1);
  ExpectInvalid(long_key, {"label key: 129 bytes, more than the limit of 128"});
}

TEST_F(LimitsTest, EmptyNamesAreRejected) {
  Start();
  struct Case {
    const char* what;
    void (*mutate)(v1::SeriesKey*);
    const char* message;
  };
  const Case cases[] = {
      {"project", [](v1::SeriesKey* k) { k->set_project(""); },
       "project: empty"},
      {"run", [](v1::SeriesKey* k) { k->set_run(""); }, "run: empty"},
      {"metric", [](v1::SeriesKey* k) { k->set_metric(""); }, "metric: empty"},
      {"label key", [](v1::SeriesKey* k) { (*k->mutable_labels())[""] = "v"; },
       "label key: empty"},
      {"label value",
       [](v1::SeriesKey* k) { (*k->mutable_labels())["node"] = ""; },
       "label \"node\" value: empty"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    v1::WriteRequest req;
    v1::SeriesPoints* s = AddSeries(&req, "m");
    c.mutate(s->mutable_key());
    AddPoints(s, 0, 1);
    ExpectInvalid(req, {"series[0]", c.message});
  }
}

// Names travel as proto3 `string` fields, which protobuf itself requires to
// be UTF-8: the server's protobuf parser refuses such a request before
// stepdb's own check (storage::ValidateSeriesKey) sees it. Whatever layer
// refuses it, the write must fail cleanly, store nothing and leave the server
// serving; the storage check behind it names the field.
TEST_F(LimitsTest, InvalidUtf8IsRejected) {
  Start();
  const std::string bad[] = {"\xff", "ab\xc3", "\xed\xa0\x80" /* surrogate */,
                             "\xc0\xaf" /* overlong */};
  for (const std::string& name : bad) {
    v1::WriteRequest req;
    AddPoints(AddSeries(&req, "train/" + name), 0, 1);
    const grpc::Status s = WriteOne(req);
    // Name fields are `bytes` on the wire, so ValidateSeriesKey sees them.
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("metric: not valid UTF-8"));

    storage::SeriesKey key;
    key.project = "proj";
    key.run = "run-1";
    key.metric = "train/" + name;
    const absl::Status valid = storage::ValidateSeriesKey(key);
    EXPECT_EQ(valid.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(valid.message(), HasSubstr("metric: not valid UTF-8"));

    key.metric = "m";
    key.labels = {{"node", name}};
    EXPECT_THAT(storage::ValidateSeriesKey(key).message(),
                HasSubstr("label \"node\" value: not valid UTF-8"));
  }
  EXPECT_EQ(SeriesCount(), 0u);
  ExpectServing(stub_.get(), "after/utf8");
}

TEST_F(LimitsTest, MoreSeriesThanMaxSeriesIsRejected) {
  ingest::IngestOptions options;
  options.limits.max_series = 4;
  Start(options);
  v1::WriteRequest at_limit;
  for (int i = 0; i < 4; ++i) {
    AddPoints(AddSeries(&at_limit, "m" + std::to_string(i)), 0, 1);
  }
  EXPECT_TRUE(WriteOne(at_limit).ok());

  v1::WriteRequest over;
  for (int i = 0; i < 5; ++i) {
    AddPoints(AddSeries(&over, "n" + std::to_string(i)), 0, 1);
  }
  ExpectInvalid(over,
                {"series: 5 series in one request, more than the limit of 4"});
}

TEST_F(LimitsTest, MorePointsThanMaxPointsIsRejected) {
  ingest::IngestOptions options;
  options.limits.max_points = 100;
  Start(options);
  v1::WriteRequest at_limit;
  AddPoints(AddSeries(&at_limit, "a"), 0, 60);
  AddPoints(AddSeries(&at_limit, "b"), 0, 40);
  EXPECT_TRUE(WriteOne(at_limit).ok());

  // The total over all series counts, not one series' points.
  v1::WriteRequest over;
  AddPoints(AddSeries(&over, "c"), 0, 60);
  AddPoints(AddSeries(&over, "d"), 0, 41);
  ExpectInvalid(over, {"more than 100 points in one request"});
}

TEST_F(LimitsTest, OversizedMessageIsResourceExhaustedAndServerKeepsServing) {
  Start();
  v1::WriteRequest big;
  // ~2 MiB of values: over the server's 1 MiB receive limit.
  AddPoints(AddSeries(&big, "big"), 0, 2 * kMaxMessageBytes / 16);
  ASSERT_GT(big.ByteSizeLong(), static_cast<size_t>(kMaxMessageBytes));

  const grpc::Status unary = WriteOne(big);
  EXPECT_EQ(unary.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << unary.error_message();

  // On a stream: the stream ends with RESOURCE_EXHAUSTED.
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Write(&ctx);
    big.set_seq(1);
    stream->Write(big);  // may or may not report the failure yet
    stream->WritesDone();
    v1::WriteAck ack;
    EXPECT_FALSE(stream->Read(&ack));
    const grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << s.error_message();
  }

  // The same client and other clients are still served.
  ExpectServing(stub_.get(), "after/same-client");
  auto other = NewStub();
  ExpectServing(other.get(), "after/other-client");
  EXPECT_EQ(SeriesCount(), 2u);
}

// A client that writes but never reads its acks: the server stops reading
// the stream once max_in_flight_per_stream requests are uncommitted or their
// acks untaken, so gRPC flow control blocks the client instead of the server
// buffering without bound.
TEST_F(LimitsTest, ClientThatNeverReadsAcksIsFlowControlled) {
  ingest::IngestOptions options;
  options.max_in_flight_per_stream = 4;
  Start(options);
  // A small receive window on the client, so that acks stop flowing early.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  auto stub = NewStub(args);

  constexpr int kAttempts = 5000;
  v1::WriteRequest req;
  v1::SeriesPoints* s = AddSeries(&req, "flood");
  AddPoints(s, 0, 1000);  // ~20 KB per request: 100 MB if all were read
  grpc::ClientContext ctx;
  auto stream = stub->Write(&ctx);
  std::atomic<int> written{0};
  std::thread writer([&] {
    v1::WriteRequest r = req;
    for (int i = 0; i < kAttempts; ++i) {
      r.set_seq(i + 1);
      for (int j = 0; j < r.series(0).steps_size(); ++j) {
        r.mutable_series(0)->set_steps(j, int64_t{i} * 1000 + j);
      }
      if (!stream->Write(r)) break;
      written.fetch_add(1);
    }
  });

  // Wait until the server stops reading: its request counter settles.
  uint64_t read = 0;
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const uint64_t now = ingest_->counters().requests;
    if (now == read && now > 0) break;
    read = now;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const uint64_t settled = ingest_->counters().requests;
  const int client_written = written.load();
  std::printf(
      "never-reading client: server read %llu requests, client wrote "
      "%d of %d before blocking\n",
      static_cast<unsigned long long>(settled), client_written, kAttempts);
  EXPECT_EQ(settled, ingest_->counters().requests) << "server still reading";
  EXPECT_LT(client_written, kAttempts) << "client writes never blocked";
  // Bounded: a few hundred at most, far from the 5000 the client tried.
  EXPECT_LT(settled, 500u);

  ctx.TryCancel();
  writer.join();
  stream->Finish();
  auto other = NewStub();
  ExpectServing(other.get(), "after/flood");
}

// With a bound on the decoded requests waiting for commit, streams take
// turns to read (ReadGate): every point of every stream still lands, each
// stream's acks come in order, and a stream cancelled while it waits for
// its turn ends without holding up the others or the server's shutdown.
TEST_F(LimitsTest, StreamsTakeTurnsUnderTheQueuedBytesBoundAndLoseNothing) {
  ingest::IngestOptions options;
  options.max_queued_bytes = 1;  // one request at a time in the queue
  Start(options);
  constexpr int kStreams = 8;
  constexpr int kRequests = 40;
  constexpr int kPoints = 200;
  std::vector<std::thread> clients;
  std::atomic<int> ordered_acks{0};
  for (int c = 0; c < kStreams; ++c) {
    clients.emplace_back([&, c] {
      auto stub = NewStub();
      grpc::ClientContext ctx;
      // A stream that never gets its turn fails here instead of hanging.
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
      auto stream = stub->Write(&ctx);
      std::thread reader([&] {
        v1::WriteAck ack;
        uint64_t want = 1;
        while (stream->Read(&ack)) {
          EXPECT_EQ(ack.seq(), want) << "stream " << c;
          EXPECT_EQ(ack.error_code(), 0) << ack.error_message();
          EXPECT_EQ(ack.points_accepted(), uint64_t{kPoints});
          if (ack.seq() == want) ordered_acks.fetch_add(1);
          ++want;
        }
      });
      for (int r = 0; r < kRequests; ++r) {
        v1::WriteRequest req;
        req.set_seq(r + 1);
        AddPoints(AddSeries(&req, "gated/" + std::to_string(c)),
                  int64_t{r} * kPoints, kPoints);
        ASSERT_TRUE(stream->Write(req));
      }
      stream->WritesDone();
      reader.join();
      EXPECT_TRUE(stream->Finish().ok());
    });
  }
  // One more stream that floods, then goes away while it waits its turn.
  auto flood_stub = NewStub();
  grpc::ClientContext flood_ctx;
  auto flood = flood_stub->Write(&flood_ctx);
  std::thread flooder([&] {
    for (int r = 0; r < 1000; ++r) {
      v1::WriteRequest req;
      req.set_seq(r + 1);
      AddPoints(AddSeries(&req, "flood"), int64_t{r} * kPoints, kPoints);
      if (!flood->Write(req)) break;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  flood_ctx.TryCancel();
  flooder.join();
  flood->Finish();
  for (auto& t : clients) t.join();

  EXPECT_EQ(ordered_acks.load(), kStreams * kRequests);
  EXPECT_GT(ingest_->counters().read_waits, 0u) << "the bound never held";
  // Every point of the finished streams is stored (the flood's acked
  // points as well, whatever they were).
  EXPECT_GE(engine_->Stats().points_accepted,
            uint64_t{kStreams} * kRequests * kPoints);
  auto other = NewStub();
  ExpectServing(other.get(), "after/gated");
}

// A read reserves its room before the client sends; a client that stays
// quiet with its stream open must not keep the others from writing.
TEST_F(LimitsTest, AQuietStreamDoesNotHoldUpTheOthers) {
  ingest::IngestOptions options;
  options.max_queued_bytes = 1;
  Start(options);
  auto quiet_stub = NewStub();
  grpc::ClientContext quiet_ctx;
  auto quiet = quiet_stub->Write(&quiet_ctx);
  v1::WriteRequest first;
  first.set_seq(1);
  AddPoints(AddSeries(&first, "quiet"), 0, 1000);
  ASSERT_TRUE(quiet->Write(first));
  v1::WriteAck ack;
  ASSERT_TRUE(quiet->Read(&ack));  // its next read is reserved now

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::seconds(30));
  auto stream = stub_->Write(&ctx);
  for (int r = 0; r < 5; ++r) {
    v1::WriteRequest req;
    req.set_seq(r + 1);
    AddPoints(AddSeries(&req, "busy"), int64_t{r} * 10, 10);
    ASSERT_TRUE(stream->Write(req));
    ASSERT_TRUE(stream->Read(&ack)) << "request " << r << " never acked";
    EXPECT_EQ(ack.seq(), uint64_t(r + 1));
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  quiet->WritesDone();
  EXPECT_TRUE(quiet->Finish().ok());
}

}  // namespace
}  // namespace stepdb
