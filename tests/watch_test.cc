// Watch rules (storage/watch.h, query/watch_service.h): the condition
// syntax, episodes (one FIRING and one RESOLVED each), every condition
// kind, rule matching, persistence across restarts, and the Events stream
// (replay after a seq, following new events).
#include "storage/watch.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/in_process_server.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using storage::kMicrosPerStep;
using storage::WatchCondition;
using storage::WatchEventKind;
using storage::WatchEventRecord;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::InProcessServer;
using testing::TempDir;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

storage::SeriesKey Key(const std::string& run, const std::string& metric,
                       storage::Labels labels = {}) {
  return {"proj", run, metric, std::move(labels)};
}

// Writes values at whole steps first_step, first_step + 1, ... in one
// commit group.
void Write(InProcessServer& server, const storage::SeriesKey& key,
           uint64_t first_step, const std::vector<double>& values) {
  auto id = server.engine().ResolveSeries(key);
  ASSERT_TRUE(id.ok()) << id.status();
  storage::AppendBatch batch;
  batch.StartSeries(*id);
  for (size_t i = 0; i < values.size(); ++i) {
    batch.AddPoint((first_step + i) * kMicrosPerStep,
                   1'700'000'000'000 + static_cast<int64_t>(first_step + i),
                   values[i]);
  }
  auto result = server.engine().Append(std::move(batch));
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ((*result)[0].accepted, values.size());
}

std::string CreateRule(InProcessServer& server, const std::string& condition,
                       const std::string& run = "",
                       const std::string& metric = "",
                       storage::Labels labels = {}) {
  storage::WatchRuleSpec rule;
  rule.project = "proj";
  rule.run = run;
  rule.metric = metric;
  rule.labels = std::move(labels);
  rule.condition = condition;
  rule.name = "rule " + condition;
  auto created = server.watch().CreateRule(rule);
  EXPECT_TRUE(created.ok()) << created.status();
  return created.ok() ? created->id : "";
}

std::vector<WatchEventRecord> Events(InProcessServer& server,
                                     uint64_t after_seq = 0) {
  std::vector<WatchEventRecord> out;
  for (;;) {
    uint64_t scanned = 0;
    auto page =
        server.watch().ReadEvents("proj", "", after_seq, 1000, &scanned);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) return out;
    out.insert(out.end(), page->begin(), page->end());
    if (scanned >= server.watch().LastSeq()) return out;
    after_seq = scanned;
  }
}

// Waits (at most 5 s) until at least `n` events are persisted, and returns
// them all.
std::vector<WatchEventRecord> WaitEvents(InProcessServer& server, size_t n) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::vector<WatchEventRecord> events = Events(server);
  while (events.size() < n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    events = Events(server);
  }
  return events;
}

// Lets the background thread persist what is queued, for tests that expect
// no further event.
std::vector<WatchEventRecord> SettledEvents(InProcessServer& server) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return Events(server);
}

// "F@step" / "R@step" per event, for compact expectations.
std::vector<std::string> Summary(const std::vector<WatchEventRecord>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    out.push_back(absl::StrCat(e.kind == WatchEventKind::kFiring ? "F@" : "R@",
                               e.step / kMicrosPerStep));
  }
  return out;
}

TEST(WatchConditionTest, ParsesTheDocumentedSyntax) {
  auto c = storage::ParseWatchCondition("nonfinite");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->kind, WatchCondition::Kind::kNonFinite);
  c = storage::ParseWatchCondition("  ABOVE 10  for 3 ");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, WatchCondition::Kind::kAbove);
  EXPECT_EQ(c->threshold, 10);
  EXPECT_EQ(c->count, 3u);
  c = storage::ParseWatchCondition("below -1.5e-3");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->kind, WatchCondition::Kind::kBelow);
  EXPECT_EQ(c->threshold, -1.5e-3);
  EXPECT_EQ(c->count, 1u);
  c = storage::ParseWatchCondition("plateau 100");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->plateau_steps, 100 * kMicrosPerStep);
  c = storage::ParseWatchCondition("stalled 5m");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->stalled, absl::Minutes(5));
  c = storage::ParseWatchCondition("stalled 200ms");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->stalled, absl::Milliseconds(200));
}

TEST(WatchConditionTest, RejectsWithAMessageNamingTheProblem) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty"},
      {"sometimes", "unknown condition \"sometimes\""},
      {"above", "expected \"above X\""},
      {"above x", "threshold \"x\""},
      {"above nan", "threshold \"nan\""},
      {"above 1 for", "expected \"above X\""},
      {"above 1 during 3", "expected \"for\""},
      {"above 1 for 0", "count \"0\""},
      {"below 1 for -2", "count \"-2\""},
      {"nonfinite 3", "takes 0 arguments"},
      {"plateau", "takes 1 argument"},
      {"plateau -5", "steps \"-5\""},
      {"stalled 30", "duration \"30\""},
      {"stalled -1s", "duration \"-1s\""},
      {"stalled 5m extra", "takes 1 argument"},
  };
  for (const auto& [text, why] : cases) {
    auto c = storage::ParseWatchCondition(text);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(why)) << text;
  }
}

TEST(WatchRecordTest, EventEncodingRoundTrips) {
  WatchEventRecord e;
  e.seq = 77;
  e.kind = WatchEventKind::kResolved;
  e.rule_id = "3";
  e.rule_name = "loss blew up";
  e.condition = "nonfinite";
  e.series = Key("r1", "train/loss", {{"gpu", "0"}, {"node", "n1"}});
  e.step = 12 * kMicrosPerStep + 5;
  e.value = -kInf;
  e.time_ms = -5;
  e.fired_ms = 1'700'000'000'123;
  e.message = "m";
  auto decoded = storage::DecodeWatchEvent(storage::EncodeWatchEvent(e));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(storage::EncodeWatchEvent(*decoded), storage::EncodeWatchEvent(e));
  EXPECT_EQ(decoded->series, e.series);
  EXPECT_EQ(decoded->value, -kInf);
  EXPECT_EQ(storage::DecodeWatchEvent("\x01\x05").status().code(),
            absl::StatusCode::kDataLoss);
}

class WatchTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }
  void Start(storage::WatchOptions options = {}) {
    server_.reset();
    server_ = std::make_unique<InProcessServer>(dir_.path(), 16,
                                                query::TailOptions{}, options);
    ASSERT_TRUE(server_->ok());
  }
  InProcessServer& server() { return *server_; }

  TempDir dir_;
  std::unique_ptr<InProcessServer> server_;
};

TEST_F(WatchTest, FiresOncePerEpisodeAndAgainAfterRecovery) {
  const std::string id = CreateRule(server(), "above 10");
  Write(server(), Key("r1", "loss"), 0, {1, 11, 12});
  Write(server(), Key("r1", "loss"), 3, {13, 5, 4, 15, 16});
  auto events = WaitEvents(server(), 3);
  EXPECT_THAT(Summary(events), ElementsAre("F@1", "R@4", "F@6"));
  EXPECT_THAT(Summary(SettledEvents(server())),
              ElementsAre("F@1", "R@4", "F@6"));
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].seq + 1, events[1].seq);
  EXPECT_EQ(events[0].rule_id, id);
  EXPECT_EQ(events[0].rule_name, "rule above 10");
  EXPECT_EQ(events[0].condition, "above 10");
  EXPECT_EQ(events[0].series, Key("r1", "loss"));
  EXPECT_EQ(events[0].value, 11);
  EXPECT_EQ(events[0].time_ms, 1'700'000'000'001);
  EXPECT_GT(events[0].fired_ms, 0);
}

TEST_F(WatchTest, AboveForKNeedsKConsecutivePoints) {
  CreateRule(server(), "above 10 for 3");
  Write(server(), Key("r1", "loss"), 0, {11, 12, 5, 11, 12});
  Write(server(), Key("r1", "loss"), 5, {13, 14, kNaN});
  EXPECT_THAT(Summary(WaitEvents(server(), 2)), ElementsAre("F@5", "R@7"));
}

TEST_F(WatchTest, NonFiniteOnNaNAndInfinities) {
  CreateRule(server(), "nonfinite");
  Write(server(), Key("r1", "loss"), 0, {kNaN, 1, kInf, -kInf, 2, -kInf});
  auto events = WaitEvents(server(), 5);
  EXPECT_THAT(Summary(events), ElementsAre("F@0", "R@1", "F@2", "R@4", "F@5"));
  ASSERT_EQ(events.size(), 5u);
  EXPECT_TRUE(std::isnan(events[0].value));
  EXPECT_EQ(events[2].value, kInf);
  EXPECT_EQ(events[4].value, -kInf);
}

TEST_F(WatchTest, PlateauFiresWhenTheMinimumStopsImproving) {
  CreateRule(server(), "plateau 3");
  // Minimum 3 at step 2; steps 3..4 do not improve; step 5 is 3 steps on.
  Write(server(), Key("r1", "loss"), 0, {5, 4, 3, 3.5, 3.2, 3.1, 3.3, 2.9});
  auto events = WaitEvents(server(), 2);
  EXPECT_THAT(Summary(events), ElementsAre("F@5", "R@7"));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_THAT(events[0].message, HasSubstr("since step 2"));
}

TEST_F(WatchTest, StalledFiresAfterTWithoutPointsWhileTheRunIsRunning) {
  storage::RunRecord finished;
  finished.project = "proj";
  finished.run_id = "done";
  finished.state = storage::RunState::kFinished;
  ASSERT_TRUE(server().runs().Create(finished).ok());
  CreateRule(server(), "stalled 200ms");
  const auto start = std::chrono::steady_clock::now();
  Write(server(), Key("live", "loss"), 0, {1, 2});
  Write(server(), Key("done", "loss"), 0, {1});
  auto events = WaitEvents(server(), 1);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, std::chrono::milliseconds(200));
  EXPECT_THAT(Summary(events), ElementsAre("F@1"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].series.run, "live");  // a finished run never stalls
  EXPECT_EQ(events[0].value, 2);
  Write(server(), Key("live", "loss"), 2, {3});
  EXPECT_THAT(Summary(WaitEvents(server(), 2)), ElementsAre("F@1", "R@2"));
}

TEST_F(WatchTest, RulesMatchByRunMetricAndLabels) {
  const std::string by_run = CreateRule(server(), "above 0", "r1");
  const std::string by_metric = CreateRule(server(), "above 0", "", "loss");
  const std::string by_label =
      CreateRule(server(), "above 0", "", "", {{"gpu", "0"}});
  Write(server(), Key("r1", "acc"), 0, {1});
  Write(server(), Key("r2", "loss"), 0, {1});
  Write(server(), Key("r2", "util", {{"gpu", "0"}, {"node", "n1"}}), 0, {1});
  Write(server(), Key("r2", "util", {{"gpu", "1"}}), 0, {1});
  Write(server(), Key("r1", "loss", {{"gpu", "0"}}), 0, {1});
  // A rule of another project sees nothing here.
  storage::WatchRuleSpec other;
  other.project = "other";
  other.condition = "above 0";
  ASSERT_TRUE(server().watch().CreateRule(other).ok());
  auto events = SettledEvents(server());
  std::multiset<std::pair<std::string, std::string>> fired;
  for (const auto& e : events) {
    fired.emplace(e.rule_id, storage::SeriesDisplayName(e.series));
  }
  EXPECT_EQ(fired, (std::multiset<std::pair<std::string, std::string>>{
                       {by_run, "proj/r1/acc"},
                       {by_metric, "proj/r2/loss"},
                       {by_label, "proj/r2/util{gpu=0,node=n1}"},
                       {by_run, "proj/r1/loss{gpu=0}"},
                       {by_metric, "proj/r1/loss{gpu=0}"},
                       {by_label, "proj/r1/loss{gpu=0}"},
                   }));
}

TEST_F(WatchTest, DeletingARuleStopsIt) {
  const std::string id = CreateRule(server(), "above 10");
  Write(server(), Key("r1", "loss"), 0, {11});
  ASSERT_EQ(WaitEvents(server(), 1).size(), 1u);
  ASSERT_TRUE(server().watch().DeleteRule("proj", id).ok());
  EXPECT_EQ(server().watch().DeleteRule("proj", id).code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(server().watch().ListRules("proj").empty());
  Write(server(), Key("r1", "loss"), 1, {1, 12});
  EXPECT_EQ(SettledEvents(server()).size(), 1u);
}

TEST_F(WatchTest, RulesAndEventsSurviveARestart) {
  const std::string a =
      CreateRule(server(), "above 10", "r1", "loss", {{"gpu", "0"}});
  const std::string b = CreateRule(server(), "nonfinite");
  Write(server(), Key("r1", "loss", {{"gpu", "0"}}), 0, {11, kNaN});
  ASSERT_EQ(WaitEvents(server(), 3).size(), 3u);
  Start();
  auto rules = server().watch().ListRules("proj");
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0].id, a);
  EXPECT_EQ(rules[0].run, "r1");
  EXPECT_EQ(rules[0].metric, "loss");
  EXPECT_EQ(rules[0].labels, (storage::Labels{{"gpu", "0"}}));
  EXPECT_EQ(rules[0].condition, "above 10");
  EXPECT_EQ(rules[1].id, b);
  EXPECT_NE(CreateRule(server(), "below 0"), a);  // ids are never reused
  auto events = Events(server());
  ASSERT_EQ(events.size(), 3u);
  // Episode state is not persisted: a condition still true fires again once.
  Write(server(), Key("r1", "loss", {{"gpu", "0"}}), 2, {12, 13});
  events = WaitEvents(server(), 4);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[3].seq, events[2].seq + 1);  // seqs continue
  EXPECT_EQ(events[3].rule_id, a);
  EXPECT_EQ(events[3].step, 2 * kMicrosPerStep);
}

TEST_F(WatchTest, ReadsOlderEventsFromTheStoredLog) {
  storage::WatchOptions options;
  options.memory_events = 2;
  Start(options);
  CreateRule(server(), "nonfinite");
  std::vector<double> values;
  for (int i = 0; i < 300; ++i) values.push_back(i % 2 == 0 ? kNaN : 1);
  Write(server(), Key("r1", "loss"), 0, values);
  ASSERT_EQ(WaitEvents(server(), 300).size(), 300u);
  Start(options);  // the window now holds the last 2 only
  auto events = Events(server(), 7);
  ASSERT_EQ(events.size(), 293u);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, 8 + i);
}

// ---- the gRPC face ----------------------------------------------------------

TEST_F(WatchTest, CreateListDeleteOverGrpc) {
  v1::WatchRule rule;
  rule.set_project("proj");
  rule.set_metric("loss");
  rule.set_condition("above 1 for 2");
  rule.set_name("high loss");
  auto* m = rule.add_labels();
  m->set_key("gpu");
  m->set_value("0");
  v1::WatchRule created;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(server().watch_stub->CreateRule(&ctx, rule, &created).ok());
  }
  EXPECT_FALSE(created.id().empty());
  EXPECT_EQ(created.name(), "high loss");
  rule.set_condition("above one");
  {
    grpc::ClientContext ctx;
    v1::WatchRule out;
    grpc::Status s = server().watch_stub->CreateRule(&ctx, rule, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("threshold \"one\""));
  }
  {
    v1::ListWatchRulesRequest req;
    req.set_project("proj");
    v1::ListWatchRulesResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server().watch_stub->ListRules(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.rules_size(), 1);
    EXPECT_EQ(resp.rules(0).id(), created.id());
    EXPECT_EQ(resp.rules(0).labels(0).key(), "gpu");
  }
  v1::DeleteWatchRuleRequest del;
  del.set_project("proj");
  del.set_id(created.id());
  v1::DeleteWatchRuleResponse resp;
  {
    grpc::ClientContext ctx;
    EXPECT_TRUE(server().watch_stub->DeleteRule(&ctx, del, &resp).ok());
  }
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(server().watch_stub->DeleteRule(&ctx, del, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
}

TEST_F(WatchTest, EventsReplayAfterSeqForTheProjectAndRun) {
  CreateRule(server(), "nonfinite");
  Write(server(), Key("r1", "loss"), 0, {kNaN, 1, kNaN});
  Write(server(), Key("r2", "loss"), 0, {kNaN});
  auto all = WaitEvents(server(), 4);
  ASSERT_EQ(all.size(), 4u);
  v1::WatchEventsRequest req;
  req.set_project("proj");
  req.set_run("r1");
  req.set_after_seq(all[0].seq);
  grpc::ClientContext ctx;
  auto reader = server().watch_stub->Events(&ctx, req);
  std::vector<v1::WatchEvent> got;
  v1::WatchEvent e;
  while (reader->Read(&e)) got.push_back(e);
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].seq(), all[1].seq);
  EXPECT_EQ(got[0].kind(), v1::WatchEvent::RESOLVED);
  EXPECT_EQ(got[1].kind(), v1::WatchEvent::FIRING);
  EXPECT_EQ(got[1].step().whole(), 2);
  EXPECT_EQ(got[1].series().run(), "r1");
  EXPECT_TRUE(std::isnan(got[1].value()));
}

TEST_F(WatchTest, AFollowStreamReceivesEventsFiredAfterItSubscribed) {
  CreateRule(server(), "above 10");
  Write(server(), Key("r1", "loss"), 0, {11});
  ASSERT_EQ(WaitEvents(server(), 1).size(), 1u);
  v1::WatchEventsRequest req;
  req.set_project("proj");
  req.set_follow(true);
  grpc::ClientContext ctx;
  auto reader = server().watch_stub->Events(&ctx, req);
  v1::WatchEvent e;
  ASSERT_TRUE(reader->Read(&e));  // the stored one: the stream is live now
  EXPECT_EQ(e.kind(), v1::WatchEvent::FIRING);
  Write(server(), Key("r1", "loss"), 1, {1});
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(e.kind(), v1::WatchEvent::RESOLVED);
  EXPECT_EQ(e.step().whole(), 1);
  ctx.TryCancel();
  while (reader->Read(&e)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(WatchTest, ServerShutdownEndsFollowStreams) {
  v1::WatchEventsRequest req;
  req.set_project("proj");
  req.set_follow(true);
  grpc::ClientContext ctx;
  auto reader = server().watch_stub->Events(&ctx, req);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server_.reset();
  });
  const auto start = std::chrono::steady_clock::now();
  v1::WatchEvent e;
  EXPECT_FALSE(reader->Read(&e));
  const grpc::Status status = reader->Finish();
  stopper.join();
  EXPECT_FALSE(status.ok());
  // Well before the 2 s grace period of the server's Shutdown.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

}  // namespace
}  // namespace stepdb
