// The ingest and query services over real gRPC on loopback, in process.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/ingest_service.h"
#include "query/admin_service.h"
#include "query/query_service.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using ::testing::HasSubstr;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::EngineOptions options;
    options.data_dir = dir_.path();
    options.chunk_points = 16;
    ConfigureEngine(&options);
    auto engine = storage::Engine::Open(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    ingest_ = std::make_unique<ingest::IngestService>(engine_.get(),
                                                      IngestConfig());
    query::QueryOptions query_options;
    query_options.page_points = PagePoints();
    query_ = std::make_unique<query::QueryService>(engine_.get(), query_options);
    admin_ = std::make_unique<query::AdminService>(engine_.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(ingest_.get());
    builder.RegisterService(query_.get());
    builder.RegisterService(admin_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                       grpc::InsecureChannelCredentials());
    ingest_stub_ = v1::Ingest::NewStub(channel);
    query_stub_ = v1::Query::NewStub(channel);
  }

  virtual void ConfigureEngine(storage::EngineOptions*) const {}
  virtual ingest::IngestOptions IngestConfig() const { return {}; }

  // Small pages force several pages per read.
  virtual uint64_t PagePoints() const { return 10; }

  // As the server binary does: stop gRPC, then close the engine (its
  // commit thread runs the last reactor callbacks and is joined), and only
  // then destroy the services those callbacks refer to.
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    engine_.reset();
  }

  static v1::SeriesPoints* AddSeries(v1::WriteRequest* req, const std::string& metric,
                                     uint32_t ref = 0) {
    v1::SeriesPoints* s = req->add_series();
    s->mutable_key()->set_project("proj");
    s->mutable_key()->set_run("run-1");
    s->mutable_key()->set_metric(metric);
    (*s->mutable_key()->mutable_labels())["node"] = "n1";
    s->set_ref(ref);
    return s;
  }

  static void AddPoints(v1::SeriesPoints* s, int64_t first, int n) {
    for (int i = 0; i < n; ++i) {
      s->add_steps(first + i);
      s->add_times_ms(1000 * (first + i));
      s->add_values(0.5 * (first + i));
    }
  }

  // Writes steps [first, first + n) of `metric` with one unary call.
  void WritePoints(const std::string& metric, int64_t first, int n) {
    v1::WriteRequest req;
    AddPoints(AddSeries(&req, metric), first, n);
    v1::WriteResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(ingest_stub_->WriteOne(&ctx, req, &resp).ok());
  }

  static void SetSeries(const std::string& metric, v1::ReadRangeRequest* req) {
    req->mutable_series()->set_project("proj");
    req->mutable_series()->set_run("run-1");
    req->mutable_series()->set_metric(metric);
    (*req->mutable_series()->mutable_labels())["node"] = "n1";
  }

  std::vector<v1::ReadRangeResponse> Read(const std::string& metric,
                                          v1::ReadRangeRequest req = {},
                                          grpc::Status* status_out = nullptr) {
    SetSeries(metric, &req);
    grpc::ClientContext ctx;
    auto reader = query_stub_->ReadRange(&ctx, req);
    std::vector<v1::ReadRangeResponse> out;
    v1::ReadRangeResponse resp;
    while (reader->Read(&resp)) out.push_back(resp);
    grpc::Status status = reader->Finish();
    if (status_out) *status_out = status;
    else EXPECT_TRUE(status.ok()) << status.error_message();
    return out;
  }

  static std::vector<int64_t> Steps(const std::vector<v1::ReadRangeResponse>& pages) {
    std::vector<int64_t> out;
    for (const auto& p : pages) out.insert(out.end(), p.steps().begin(), p.steps().end());
    return out;
  }

  stepdb::testing::TempDir dir_;
  std::unique_ptr<storage::Engine> engine_;
  std::unique_ptr<ingest::IngestService> ingest_;
  std::unique_ptr<query::QueryService> query_;
  std::unique_ptr<query::AdminService> admin_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Ingest::Stub> ingest_stub_;
  std::unique_ptr<v1::Query::Stub> query_stub_;
};

TEST_F(ServiceTest, StreamWithRefsIsAckedAndReadable) {
  grpc::ClientContext ctx;
  auto stream = ingest_stub_->Write(&ctx);
  v1::WriteRequest first;
  first.set_seq(1);
  AddPoints(AddSeries(&first, "train/loss", /*ref=*/7), 0, 25);
  ASSERT_TRUE(stream->Write(first));
  v1::WriteRequest second;
  second.set_seq(2);
  v1::SeriesPoints* by_ref = second.add_series();
  by_ref->set_ref(7);  // no key: the registered series
  AddPoints(by_ref, 25, 10);
  ASSERT_TRUE(stream->Write(second));
  // The ref used first, then registered again with the same key (a client
  // re-sending its keys): both entries are the registered series.
  v1::WriteRequest third;
  third.set_seq(3);
  v1::SeriesPoints* ref_first = third.add_series();
  ref_first->set_ref(7);
  AddPoints(ref_first, 35, 5);
  AddPoints(AddSeries(&third, "train/loss", /*ref=*/7), 40, 5);
  ASSERT_TRUE(stream->Write(third));
  v1::WriteAck ack;
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 1u);
  EXPECT_EQ(ack.durable_seq(), 1u);
  EXPECT_EQ(ack.points_accepted(), 25u);
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 2u);
  EXPECT_EQ(ack.durable_seq(), 2u);
  EXPECT_EQ(ack.points_accepted(), 10u);
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 3u);
  EXPECT_EQ(ack.points_accepted(), 10u);
  EXPECT_EQ(ack.points_rejected(), 0u);
  stream->WritesDone();
  EXPECT_FALSE(stream->Read(&ack));
  EXPECT_TRUE(stream->Finish().ok());

  auto pages = Read("train/loss");
  EXPECT_EQ(pages.size(), 5u);  // 45 points in pages of 10
  const auto steps = Steps(pages);
  ASSERT_EQ(steps.size(), 45u);
  for (int i = 0; i < 45; ++i) EXPECT_EQ(steps[i], i);
  EXPECT_EQ(pages[1].values(0), 5.0);
  EXPECT_EQ(pages[1].times_ms(0), 10000);
}

// A stream keeps only ids for its refs; the names in its errors and the
// check of a re-registered ref come from the engine's index.
TEST_F(ServiceTest, RefsAreNamedInErrorsAndCannotBeRebound) {
  grpc::ClientContext ctx;
  auto stream = ingest_stub_->Write(&ctx);
  v1::WriteRequest first;
  first.set_seq(1);
  AddPoints(AddSeries(&first, "train/loss", /*ref=*/7), 0, 2);
  ASSERT_TRUE(stream->Write(first));
  v1::WriteRequest bad_columns;  // a bare ref with a malformed column
  bad_columns.set_seq(2);
  v1::SeriesPoints* bare = bad_columns.add_series();
  bare->set_ref(7);
  AddPoints(bare, 2, 2);
  bare->add_values(1.0);
  ASSERT_TRUE(stream->Write(bad_columns));
  v1::WriteRequest rebind;  // ref 7 for another series
  rebind.set_seq(3);
  AddPoints(AddSeries(&rebind, "train/other", /*ref=*/7), 0, 1);
  ASSERT_TRUE(stream->Write(rebind));
  v1::WriteRequest again;  // the same key under its ref again, and a ref
  again.set_seq(4);        // registered and used in one request
  AddPoints(AddSeries(&again, "train/loss", /*ref=*/7), 2, 1);
  AddPoints(AddSeries(&again, "train/acc", /*ref=*/8), 0, 1);
  v1::SeriesPoints* acc = again.add_series();
  acc->set_ref(8);
  AddPoints(acc, 1, 2);
  v1::SeriesPoints* loss = again.add_series();
  loss->set_ref(7);
  AddPoints(loss, 3, 1);
  ASSERT_TRUE(stream->Write(again));
  stream->WritesDone();

  v1::WriteAck ack;
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.error_code(), 0);
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 2u);
  EXPECT_EQ(ack.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(ack.error_message(),
              HasSubstr("series[0] \"proj/run-1/train/loss{node=n1}\""));
  EXPECT_THAT(ack.error_message(), HasSubstr("steps has 2 entries but values has 3"));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 3u);
  EXPECT_THAT(ack.error_message(), HasSubstr("ref 7 already names another series"));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 4u);
  EXPECT_EQ(ack.error_code(), 0) << ack.error_message();
  EXPECT_EQ(ack.points_accepted(), 5u);
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_THAT(Steps(Read("train/loss")), ::testing::ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(Steps(Read("train/acc")), ::testing::ElementsAre(0, 1, 2));
  grpc::Status status;
  Read("train/other", {}, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceTest, MalformedRequestGetsErrorAckAndStreamContinues) {
  grpc::ClientContext ctx;
  auto stream = ingest_stub_->Write(&ctx);
  v1::WriteRequest bad;
  bad.set_seq(1);
  AddPoints(AddSeries(&bad, "good/metric"), 0, 3);
  v1::SeriesPoints* s = AddSeries(&bad, "train/loss");
  AddPoints(s, 0, 3);
  s->add_values(1.0);  // 4 values, 3 steps
  ASSERT_TRUE(stream->Write(bad));
  v1::WriteRequest unknown_ref;
  unknown_ref.set_seq(2);
  unknown_ref.add_series()->set_ref(99);
  ASSERT_TRUE(stream->Write(unknown_ref));
  v1::WriteRequest stale_seq;
  stale_seq.set_seq(2);
  ASSERT_TRUE(stream->Write(stale_seq));
  v1::WriteRequest good;
  good.set_seq(3);
  AddPoints(AddSeries(&good, "train/loss"), 0, 3);
  ASSERT_TRUE(stream->Write(good));
  stream->WritesDone();

  v1::WriteAck ack;
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 1u);
  EXPECT_EQ(ack.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(ack.error_message(), HasSubstr("series[1]"));
  EXPECT_THAT(ack.error_message(), HasSubstr("proj/run-1/train/loss{node=n1}"));
  EXPECT_THAT(ack.error_message(), HasSubstr("steps has 3 entries but values has 4"));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 2u);
  EXPECT_THAT(ack.error_message(), HasSubstr("ref 99 is not registered"));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_THAT(ack.error_message(), HasSubstr("does not increase"));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.seq(), 3u);
  EXPECT_EQ(ack.error_code(), 0);
  EXPECT_EQ(ack.points_accepted(), 3u);
  EXPECT_TRUE(stream->Finish().ok());
  // Nothing of the malformed request was stored, not even its good series.
  grpc::Status status;
  Read("good/metric", {}, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceTest, BackwardsStepsAreRejectedPerSeries) {
  v1::WriteRequest req;
  AddPoints(AddSeries(&req, "train/loss"), 10, 5);
  v1::WriteResponse resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(ingest_stub_->WriteOne(&ctx, req, &resp).ok());
  }
  v1::WriteRequest next;
  v1::SeriesPoints* back = AddSeries(&next, "train/loss");
  back->add_steps(12);  // repeats (12, 6.0): a duplicate
  back->add_times_ms(0);
  back->add_values(6.0);
  back->add_steps(3);   // backwards: rejected
  back->add_times_ms(0);
  back->add_values(1.0);
  back->add_steps(20);  // new: accepted
  back->add_times_ms(0);
  back->add_values(2.0);
  AddPoints(AddSeries(&next, "train/lr"), 0, 2);
  grpc::ClientContext ctx;
  ASSERT_TRUE(ingest_stub_->WriteOne(&ctx, next, &resp).ok());
  EXPECT_EQ(resp.points_accepted(), 3u);
  EXPECT_EQ(resp.points_duplicate(), 1u);
  EXPECT_EQ(resp.points_rejected(), 1u);
  ASSERT_EQ(resp.rejections_size(), 1);
  EXPECT_EQ(resp.rejections(0).index(), 0u);
  EXPECT_EQ(resp.rejections(0).code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(resp.rejections(0).series(), HasSubstr("train/loss"));
  EXPECT_THAT(resp.rejections(0).message(), HasSubstr("step 3 goes backwards"));
  EXPECT_THAT(Steps(Read("train/loss")),
              ::testing::ElementsAre(10, 11, 12, 13, 14, 20));
}

TEST_F(ServiceTest, UnaryMalformedIsInvalidArgumentAndStoresNothing) {
  auto write = [&](const v1::WriteRequest& req) {
    v1::WriteResponse resp;
    grpc::ClientContext ctx;
    return ingest_stub_->WriteOne(&ctx, req, &resp);
  };
  v1::WriteRequest empty_metric;
  AddPoints(AddSeries(&empty_metric, ""), 0, 1);
  grpc::Status s = write(empty_metric);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("series[0]"));
  EXPECT_THAT(s.error_message(), HasSubstr("metric: empty"));

  v1::WriteRequest long_name;
  AddPoints(AddSeries(&long_name, std::string(2000, 'x')), 0, 1);
  s = write(long_name);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("more than the limit of 1024"));

  v1::WriteRequest times;
  v1::SeriesPoints* t = AddSeries(&times, "m");
  AddPoints(t, 0, 2);
  t->add_times_ms(5);
  s = write(times);
  EXPECT_THAT(s.error_message(), HasSubstr("times_ms has 3 entries but values has 2"));

  v1::WriteRequest negative;
  v1::SeriesPoints* n = AddSeries(&negative, "m");
  n->add_steps(-1);
  n->add_values(1);
  s = write(negative);
  EXPECT_THAT(s.error_message(), HasSubstr("steps[0] = -1 is out of range"));

  v1::WriteRequest micros;
  v1::SeriesPoints* m = AddSeries(&micros, "m");
  AddPoints(m, 0, 1);
  m->add_step_micros(1'000'000);
  s = write(micros);
  EXPECT_THAT(s.error_message(), HasSubstr("step_micros[0]"));

  v1::WriteRequest no_axis;
  AddSeries(&no_axis, "m")->add_values(1.0);
  s = write(no_axis);
  EXPECT_THAT(s.error_message(), HasSubstr("steps and times_ms are both empty"));

  v1::WriteRequest ref;
  AddPoints(AddSeries(&ref, "m", 5), 0, 1);
  s = write(ref);
  EXPECT_THAT(s.error_message(), HasSubstr("refs need the streaming Write"));

  bool truncated;
  EXPECT_TRUE(engine_->ListSeries({"proj", {}, {}, {}, {}}, 0, &truncated).empty());
}

TEST_F(ServiceTest, NanInfinityFractionalAndTimeIndexedSeries) {
  v1::WriteRequest req;
  v1::SeriesPoints* s = AddSeries(&req, "train/loss");
  const double nan = std::nan("");
  const double inf = std::numeric_limits<double>::infinity();
  for (double v : {1.0, nan, inf, -inf}) {
    s->add_steps(s->steps_size());
    s->add_step_micros(500'000);
    s->add_times_ms(0);
    s->add_values(v);
  }
  v1::SeriesPoints* sys = AddSeries(&req, "sys/cpu");
  sys->add_times_ms(1'700'000'000'000);
  sys->add_values(42);
  v1::WriteResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(ingest_stub_->WriteOne(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.points_accepted(), 5u);
  auto pages = Read("train/loss");
  ASSERT_EQ(pages.size(), 1u);
  ASSERT_EQ(pages[0].values_size(), 4);
  EXPECT_TRUE(std::isnan(pages[0].values(1)));
  EXPECT_EQ(pages[0].values(2), inf);
  EXPECT_EQ(pages[0].values(3), -inf);
  EXPECT_EQ(pages[0].step_micros(0), 500'000u);
  auto sys_pages = Read("sys/cpu");
  ASSERT_EQ(Steps(sys_pages).size(), 1u);
  EXPECT_EQ(sys_pages[0].steps(0), 1'700'000'000'000);  // the time is the step
}

// ReadRange reads the next page while the current one is being written
// (double-buffered): many concurrent streams of many pages each still get
// every point once and in order, and a client that cancels part way leaves
// the server serving.
TEST_F(ServiceTest, PagedReadsConcurrentAndCancelled) {
  WritePoints("train/loss", 0, 1000);
  std::vector<std::thread> readers;
  std::atomic<int> exact{0};
  for (int t = 0; t < 8; ++t) {
    readers.emplace_back([&] {
      const std::vector<v1::ReadRangeResponse> pages = Read("train/loss");
      const std::vector<int64_t> steps = Steps(pages);
      bool ok = pages.size() == 100 && steps.size() == 1000;
      for (size_t i = 0; ok && i < steps.size(); ++i) {
        ok = steps[i] == static_cast<int64_t>(i);
      }
      if (ok) ++exact;
    });
  }
  for (std::thread& r : readers) r.join();
  EXPECT_EQ(exact.load(), 8);
  for (int i = 0; i < 4; ++i) {
    v1::ReadRangeRequest range;
    SetSeries("train/loss", &range);
    grpc::ClientContext ctx;
    auto reader = query_stub_->ReadRange(&ctx, range);
    v1::ReadRangeResponse page;
    ASSERT_TRUE(reader->Read(&page));
    EXPECT_EQ(page.steps(0), 0);
    ctx.TryCancel();
    while (reader->Read(&page)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_EQ(Steps(Read("train/loss")).size(), 1000u);
}

TEST_F(ServiceTest, RangesLimitsAndListing) {
  v1::WriteRequest req;
  AddPoints(AddSeries(&req, "train/loss"), 0, 100);
  v1::WriteResponse resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(ingest_stub_->WriteOne(&ctx, req, &resp).ok());
  }
  v1::ReadRangeRequest range;
  range.mutable_steps()->mutable_from()->set_whole(40);
  range.mutable_steps()->mutable_to()->set_whole(59);
  EXPECT_EQ(Steps(Read("train/loss", range)).size(), 20u);
  v1::ReadRangeRequest limited;
  limited.set_limit(25);
  auto pages = Read("train/loss", limited);
  EXPECT_EQ(Steps(pages).size(), 25u);
  EXPECT_TRUE(pages.back().truncated());
  v1::ReadRangeRequest exact;
  exact.set_limit(100);
  EXPECT_FALSE(Read("train/loss", exact).back().truncated());
  v1::ReadRangeRequest by_time;
  by_time.mutable_time()->set_from_ms(90'000);
  EXPECT_EQ(Steps(Read("train/loss", by_time)).size(), 10u);

  v1::ListSeriesRequest list;
  list.set_project("proj");
  auto* matcher = list.add_labels();
  matcher->set_key("node");
  matcher->set_value("n1");
  v1::ListSeriesResponse listed;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(query_stub_->ListSeries(&ctx, list, &listed).ok());
  }
  ASSERT_EQ(listed.series_size(), 1);
  EXPECT_EQ(listed.series(0).points(), 100u);
  EXPECT_EQ(listed.series(0).last_step().whole(), 99);
  EXPECT_EQ(listed.series(0).last_value(), 49.5);
  matcher->set_value("n2");
  {
    grpc::ClientContext ctx;
    listed.Clear();
    ASSERT_TRUE(query_stub_->ListSeries(&ctx, list, &listed).ok());
  }
  EXPECT_EQ(listed.series_size(), 0);
  v1::ListSeriesRequest no_project;
  grpc::ClientContext ctx;
  EXPECT_EQ(query_stub_->ListSeries(&ctx, no_project, &listed).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceTest, ClientVanishingMidStreamLosesNothingAcked) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  auto stream = ingest_stub_->Write(ctx.get());
  v1::WriteRequest req;
  req.set_seq(1);
  AddPoints(AddSeries(&req, "train/loss", 1), 0, 50);
  ASSERT_TRUE(stream->Write(req));
  v1::WriteAck ack;
  ASSERT_TRUE(stream->Read(&ack));
  ASSERT_EQ(ack.durable_seq(), 1u);
  // More requests in flight, then the client disappears without a goodbye.
  for (int i = 0; i < 20; ++i) {
    v1::WriteRequest more;
    more.set_seq(2 + i);
    v1::SeriesPoints* s = more.add_series();
    s->set_ref(1);
    AddPoints(s, 50 + 10 * i, 10);
    if (!stream->Write(more)) break;
  }
  ctx->TryCancel();
  stream->Finish().IgnoreError();
  stream.reset();
  ctx.reset();
  // The server lets go of the stream (no leak) and keeps serving.
  for (int i = 0; i < 200 && ingest_->counters().streams_active != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(ingest_->counters().streams_active, 0u);
  const auto steps = Steps(Read("train/loss"));
  ASSERT_GE(steps.size(), 50u);  // everything acked
  for (size_t i = 0; i < steps.size(); ++i) EXPECT_EQ(steps[i], static_cast<int64_t>(i));
}

// Pages bigger than the engine's 8192-point read slices: one page is built
// from several slices.
class LargePageServiceTest : public ServiceTest {
 protected:
  uint64_t PagePoints() const override { return 32768; }
};

TEST_F(LargePageServiceTest, FractionalStepsLateInAPageKeepColumnsAligned) {
  v1::WriteRequest req;
  v1::SeriesPoints* s = AddSeries(&req, "eval/acc");
  for (int i = 0; i < 10'000; ++i) {
    s->add_steps(i);
    s->add_times_ms(i);
    s->add_values(i);
  }
  // Whole steps in the first slices, then fractional ones.
  for (int i = 0; i < 8; ++i) {
    s->add_steps(10'000 + i);
    s->add_times_ms(10'000 + i);
    s->add_values(-i);
  }
  for (int i = 0; i < 10'000; ++i) s->add_step_micros(0);
  for (int i = 0; i < 8; ++i) s->add_step_micros(500'000);
  v1::WriteResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(ingest_stub_->WriteOne(&ctx, req, &resp).ok());
  const auto pages = Read("eval/acc");
  ASSERT_EQ(pages.size(), 1u);
  ASSERT_EQ(pages[0].steps_size(), 10'008);
  ASSERT_EQ(pages[0].step_micros_size(), 10'008);
  EXPECT_EQ(pages[0].step_micros(9'999), 0u);
  EXPECT_EQ(pages[0].step_micros(10'007), 500'000u);
  EXPECT_EQ(pages[0].steps(10'007), 10'007);
}

// A memory budget of 16 bytes, which any head on the heap passes, and no
// early seals above half of it: a seal between the first request and the
// next would let the next in.
class MemoryBudgetServiceTest : public ServiceTest {
 protected:
  void ConfigureEngine(storage::EngineOptions* options) const override {
    options->chunk_points = 1024;
    options->memory_limit = 16;
    options->seal_under_pressure = false;
  }
};

TEST_F(MemoryBudgetServiceTest, OverTheBudgetStreamsAndWritesAreRefused) {
  grpc::ClientContext ctx;
  auto stream = ingest_stub_->Write(&ctx);
  v1::WriteRequest first;
  first.set_seq(1);
  AddPoints(AddSeries(&first, "train/loss", 1), 0, 100);
  ASSERT_TRUE(stream->Write(first));
  v1::WriteAck ack;
  ASSERT_TRUE(stream->Read(&ack));  // taken: the budget was not yet used
  EXPECT_EQ(ack.durable_seq(), 1u);
  v1::WriteRequest second;
  second.set_seq(2);
  v1::SeriesPoints* more = second.add_series();
  more->set_ref(1);
  AddPoints(more, 100, 10);
  stream->Write(second);
  stream->WritesDone();
  EXPECT_FALSE(stream->Read(&ack));  // no ack: the request was not taken
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("memory limit"));
  EXPECT_EQ(ingest_->counters().refused_requests, 1u);

  v1::WriteRequest unary;
  AddPoints(AddSeries(&unary, "train/lr"), 0, 1);
  v1::WriteResponse resp;
  {
    grpc::ClientContext unary_ctx;
    EXPECT_EQ(ingest_stub_->WriteOne(&unary_ctx, unary, &resp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // Over the budget, the engine seals even partial heads (within about two
  // seconds); then writes are taken again.
  for (int i = 0; i < 500 && engine_->MemoryUsage() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(engine_->MemoryUsage(), 0u);
  grpc::ClientContext again;
  EXPECT_TRUE(ingest_stub_->WriteOne(&again, unary, &resp).ok());
  EXPECT_EQ(Steps(Read("train/loss")).size(), 100u);
}

// Write streams idle for 500 ms are ended.
class IdleTimeoutServiceTest : public ServiceTest {
 protected:
  ingest::IngestOptions IngestConfig() const override {
    ingest::IngestOptions options;
    options.stream_idle_timeout = absl::Milliseconds(500);
    return options;
  }
};

TEST_F(IdleTimeoutServiceTest, IdleWriteStreamsAreEndedAndBusyOnesAreNot) {
  // An idle stream: one request, then silence.
  grpc::ClientContext idle_ctx;
  auto idle = ingest_stub_->Write(&idle_ctx);
  v1::WriteRequest first;
  first.set_seq(1);
  AddPoints(AddSeries(&first, "train/idle", 1), 0, 5);
  ASSERT_TRUE(idle->Write(first));
  v1::WriteAck ack;
  ASSERT_TRUE(idle->Read(&ack));
  EXPECT_EQ(ack.durable_seq(), 1u);
  // A busy one, opened only now (slow builds take a while for the first
  // ack): a request every 50 ms for 1.2 s, more than two idle timeouts.
  grpc::ClientContext busy_ctx;
  auto busy = ingest_stub_->Write(&busy_ctx);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 24; ++i) {
    v1::WriteRequest req;
    req.set_seq(i + 1);
    v1::SeriesPoints* s = AddSeries(&req, "train/busy", 1);
    if (i > 0) s->clear_key();
    AddPoints(s, i, 1);
    ASSERT_TRUE(busy->Write(req)) << "busy stream ended at request " << i;
    ASSERT_TRUE(busy->Read(&ack)) << "busy stream ended at request " << i;
    EXPECT_EQ(ack.error_code(), 0) << ack.error_message();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // By now (1.2 s later) the idle stream has been ended by the server.
  EXPECT_FALSE(idle->Read(&ack));
  const grpc::Status status = idle->Finish();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("idle"));
  EXPECT_EQ(ingest_->counters().idle_streams_closed, 1u);
  busy->WritesDone();
  EXPECT_TRUE(busy->Finish().ok());
  // Nothing acked was lost, and no stream is left behind.
  EXPECT_EQ(Steps(Read("train/idle")).size(), 5u);
  EXPECT_EQ(Steps(Read("train/busy")).size(), 24u);
  for (int i = 0; i < 100 && ingest_->counters().streams_active > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(ingest_->counters().streams_active, 0u);
}

}  // namespace
}  // namespace stepdb
