// Live tails (query/tail.h, Query.Tail): delivery of acked points to every
// matching subscriber, resume after a step, gaps for slow subscribers,
// resubscribing across a server restart, and shutdown.
#include "query/tail.h"

#include <chrono>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/in_process_server.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using ::testing::ElementsAre;

struct Received {
  std::vector<int64_t> steps;
  std::vector<double> values;
  std::vector<std::string> metrics;  // per TailSeries
  uint64_t dropped = 0;
};

class TailTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }

  void Start(query::TailOptions options = {}) {
    server_.reset();
    server_ = std::make_unique<testing::InProcessServer>(dir_.path(), 16, options);
    ASSERT_TRUE(server_->ok());
  }

  void Write(const std::string& metric, int64_t first, int n,
             const std::string& node = "n1") {
    v1::WriteRequest req;
    v1::SeriesPoints* s = req.add_series();
    s->mutable_key()->set_project("proj");
    s->mutable_key()->set_run("run");
    s->mutable_key()->set_metric(metric);
    (*s->mutable_key()->mutable_labels())["node"] = node;
    for (int i = 0; i < n; ++i) {
      s->add_steps(first + i);
      s->add_times_ms(first + i);
      s->add_values(static_cast<double>(first + i));
    }
    v1::WriteResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_->ingest_stub->WriteOne(&ctx, req, &resp).ok());
  }

  // Waits (bounded) until the hub has `n` subscribers.
  void WaitForSubscribers(size_t n) {
    for (int i = 0; i < 500 && server_->tail().subscribers() != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_EQ(server_->tail().subscribers(), n);
  }

  // Reads until `points` points (received + dropped) arrived.
  static Received ReadUntil(grpc::ClientReader<v1::TailResponse>* reader,
                            size_t points) {
    Received r;
    v1::TailResponse resp;
    while (r.steps.size() + r.dropped < points && reader->Read(&resp)) {
      r.dropped += resp.dropped_points();
      for (const auto& s : resp.series()) {
        r.metrics.push_back(s.key().metric());
        r.steps.insert(r.steps.end(), s.steps().begin(), s.steps().end());
        r.values.insert(r.values.end(), s.values().begin(), s.values().end());
      }
    }
    return r;
  }

  static v1::TailRequest Request(const std::string& metric = "") {
    v1::TailRequest req;
    req.set_project("proj");
    req.set_metric(metric);
    return req;
  }

  testing::TempDir dir_;
  std::unique_ptr<testing::InProcessServer> server_;
};

TEST_F(TailTest, MatchingSubscribersGetAckedPointsInOrder) {
  grpc::ClientContext loss_ctx, all_ctx, node_ctx;
  auto loss = server_->query_stub->Tail(&loss_ctx, Request("loss"));
  auto all = server_->query_stub->Tail(&all_ctx, Request());
  v1::TailRequest node_req = Request();
  auto* matcher = node_req.add_labels();
  matcher->set_key("node");
  matcher->set_value("n2");
  auto node = server_->query_stub->Tail(&node_ctx, node_req);
  WaitForSubscribers(3);

  Write("loss", 0, 40);
  Write("lr", 0, 5);
  Write("loss", 40, 10);
  Write("loss", 0, 3, "n2");  // a series created after subscribing

  Received r = ReadUntil(loss.get(), 53);
  ASSERT_EQ(r.steps.size(), 53u);
  std::vector<int64_t> expected;
  for (int i = 0; i < 50; ++i) expected.push_back(i);
  EXPECT_EQ(std::vector<int64_t>(r.steps.begin(), r.steps.begin() + 50), expected);
  EXPECT_EQ(r.dropped, 0u);

  EXPECT_EQ(ReadUntil(all.get(), 58).steps.size(), 58u);
  Received n2 = ReadUntil(node.get(), 3);
  EXPECT_THAT(n2.steps, ElementsAre(0, 1, 2));
  EXPECT_THAT(n2.metrics, ElementsAre("loss"));
}

TEST_F(TailTest, ManySubscribersOnOneSeries) {
  constexpr int kSubscribers = 20;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::TailResponse>>> readers;
  for (int i = 0; i < kSubscribers; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(server_->query_stub->Tail(contexts.back().get(), Request("loss")));
  }
  WaitForSubscribers(kSubscribers);
  for (int i = 0; i < 10; ++i) Write("loss", i * 100, 100);
  for (auto& reader : readers) {
    Received r = ReadUntil(reader.get(), 1000);
    ASSERT_EQ(r.steps.size(), 1000u);
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(r.steps[i], i);
  }
}

TEST_F(TailTest, ResumeAfterAStepBackfillsThenGoesLiveWithoutDuplicates) {
  Write("loss", 0, 100);  // sealed chunks and head
  v1::TailRequest req = Request("loss");
  req.mutable_after_step()->set_whole(59);
  grpc::ClientContext ctx;
  auto reader = server_->query_stub->Tail(&ctx, req);
  WaitForSubscribers(1);
  Write("loss", 100, 20);
  Received r = ReadUntil(reader.get(), 60);
  ASSERT_EQ(r.steps.size(), 60u);
  for (int i = 0; i < 60; ++i) ASSERT_EQ(r.steps[i], 60 + i) << i;
  EXPECT_EQ(r.dropped, 0u);
}

TEST_F(TailTest, ASlowSubscriberGetsAGapNotASlowIngest) {
  query::TailOptions options;
  options.max_pending_points = 100;
  options.page_points = 50;
  Start(options);
  grpc::ClientContext ctx;
  auto reader = server_->query_stub->Tail(&ctx, Request("loss"));
  WaitForSubscribers(1);
  // Far more than fits in flight while the client reads nothing.
  constexpr int kPoints = 200'000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kPoints / 10'000; ++i) Write("loss", i * 10'000, 10'000);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(20));  // ingest never waited on it
  Received r = ReadUntil(reader.get(), kPoints);
  EXPECT_EQ(r.steps.size() + r.dropped, static_cast<size_t>(kPoints));
  EXPECT_GT(r.dropped, 0u);
  // What arrived is in order, without duplicates.
  for (size_t i = 1; i < r.steps.size(); ++i) ASSERT_LT(r.steps[i - 1], r.steps[i]);
}

TEST_F(TailTest, ClientResumesAcrossAServerRestart) {
  grpc::ClientContext ctx;
  auto reader = server_->query_stub->Tail(&ctx, Request("loss"));
  WaitForSubscribers(1);
  Write("loss", 0, 30);
  Received before = ReadUntil(reader.get(), 30);
  ASSERT_EQ(before.steps.size(), 30u);

  Start();  // restart: the stream ends
  v1::TailResponse ignored;
  EXPECT_FALSE(reader->Read(&ignored));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  Write("loss", 30, 20);  // written while the client was away

  v1::TailRequest req = Request("loss");
  req.mutable_after_step()->set_whole(before.steps.back());
  grpc::ClientContext ctx2;
  auto resumed = server_->query_stub->Tail(&ctx2, req);
  WaitForSubscribers(1);
  Write("loss", 50, 10);
  Received after = ReadUntil(resumed.get(), 30);
  ASSERT_EQ(after.steps.size(), 30u);
  for (int i = 0; i < 30; ++i) ASSERT_EQ(after.steps[i], 30 + i);
}

TEST_F(TailTest, BadRequestsAreRefused) {
  v1::TailRequest no_project;
  grpc::ClientContext ctx;
  auto reader = server_->query_stub->Tail(&ctx, no_project);
  v1::TailResponse resp;
  EXPECT_FALSE(reader->Read(&resp));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::TailRequest bad_step = Request();
  bad_step.mutable_after_step()->set_whole(-1);
  grpc::ClientContext ctx2;
  auto reader2 = server_->query_stub->Tail(&ctx2, bad_step);
  EXPECT_FALSE(reader2->Read(&resp));
  EXPECT_EQ(reader2->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(TailTest, CancelledClientsLeaveNoSubscriber) {
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext ctx;
    auto reader = server_->query_stub->Tail(&ctx, Request());
    WaitForSubscribers(1);
    ctx.TryCancel();
    v1::TailResponse resp;
    while (reader->Read(&resp)) {
    }
    reader->Finish();
    WaitForSubscribers(0);
  }
  Write("loss", 0, 10);  // nobody left to offer to
}

}  // namespace
}  // namespace stepdb
