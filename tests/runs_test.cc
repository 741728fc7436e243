// Run metadata (storage/run_store.h) and its RPCs: idempotent creation,
// updates, filter and sort semantics, persistence, and fork reads.
#include "storage/run_store.h"

#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/in_process_server.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using storage::kMicrosPerStep;
using storage::ParamValue;
using storage::RunRecord;

RunRecord MakeRun(const std::string& id,
                  std::map<std::string, ParamValue> params = {},
                  std::vector<std::string> tags = {}) {
  RunRecord run;
  run.project = "proj";
  run.run_id = id;
  run.params = std::move(params);
  run.tags = std::move(tags);
  return run;
}

std::vector<std::string> Ids(const std::vector<RunRecord>& runs) {
  std::vector<std::string> ids;
  for (const auto& r : runs) ids.push_back(r.run_id);
  return ids;
}

class RunStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    store_.reset();
    engine_.reset();
    storage::EngineOptions options;
    options.data_dir = dir_.path();
    auto engine = storage::Engine::Open(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    auto store = storage::RunStore::Open(engine_.get());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  std::vector<std::string> List(std::vector<std::string> filters,
                                const std::string& sort = "",
                                bool descending = false) {
    storage::RunFilter filter;
    for (const auto& text : filters) {
      auto c = storage::ParseParamComparison(text);
      EXPECT_TRUE(c.ok()) << c.status();
      if (c.ok()) filter.params.push_back(*c);
    }
    auto parsed = storage::ParseRunSort(sort, descending);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    bool truncated = false;
    return Ids(store_->List("proj", filter, *parsed, 0, &truncated));
  }

  testing::TempDir dir_;
  std::unique_ptr<storage::Engine> engine_;
  std::unique_ptr<storage::RunStore> store_;
};

TEST_F(RunStoreTest, CreateIsIdempotentAndMerges) {
  auto first = store_->Create(MakeRun("r1", {{"lr", 0.1}}, {"a"}));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->second);
  EXPECT_GT(first->first.created_ms, 0);
  EXPECT_EQ(first->first.state, storage::RunState::kRunning);

  auto again = store_->Create(MakeRun("r1", {{"lr", 0.1}}, {"a"}));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->second);
  EXPECT_EQ(again->first.created_ms, first->first.created_ms);
  EXPECT_EQ(storage::EncodeRunRecord(again->first),
            storage::EncodeRunRecord(first->first));  // nothing changed

  auto resumed = store_->Create(MakeRun("r1", {{"epochs", int64_t{3}}}, {"b"}));
  ASSERT_TRUE(resumed.ok());
  EXPECT_FALSE(resumed->second);
  EXPECT_EQ(resumed->first.params.size(), 2u);
  EXPECT_THAT(resumed->first.tags, ElementsAre("a", "b"));
}

TEST_F(RunStoreTest, RecordsSurviveARestartBitForBit) {
  RunRecord run = MakeRun("r1",
                          {{"lr", -0.0},
                           {"nan", std::numeric_limits<double>::quiet_NaN()},
                           {"steps", int64_t{-5}},
                           {"model", std::string("resnet50")},
                           {"amp", true}},
                          {"z", "a", "a"});
  run.commit_sha = "abc123";
  run.data_version = "v7";
  run.description = "baseline";
  ASSERT_TRUE(store_->Create(run).ok());
  RunRecord child = MakeRun("r2");
  child.fork = storage::ForkPoint{"r1", 5 * kMicrosPerStep + 1};
  ASSERT_TRUE(store_->Create(child).ok());
  const std::string before = storage::EncodeRunRecord(*store_->Get("proj", "r1"));
  Reopen();
  auto loaded = store_->Get("proj", "r1");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(storage::EncodeRunRecord(*loaded), before);
  EXPECT_THAT(loaded->tags, ElementsAre("a", "z"));
  EXPECT_TRUE(std::signbit(std::get<double>(loaded->params.at("lr"))));
  EXPECT_TRUE(std::isnan(std::get<double>(loaded->params.at("nan"))));
  auto loaded_child = store_->Get("proj", "r2");
  ASSERT_TRUE(loaded_child.has_value());
  EXPECT_EQ(loaded_child->fork, child.fork);
}

TEST_F(RunStoreTest, DecodeRejectsTruncatedRecords) {
  const std::string bytes = storage::EncodeRunRecord(MakeRun("r1", {{"x", 1.0}}));
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(storage::DecodeRunRecord(bytes.substr(0, n)).ok()) << n;
  }
  EXPECT_TRUE(storage::DecodeRunRecord(bytes).ok());
}

TEST_F(RunStoreTest, BadInputIsRefusedWithTheField) {
  auto empty = store_->Create(MakeRun(""));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("run_id"));
  auto long_param =
      store_->Create(MakeRun("r", {{"s", std::string(5000, 'x')}}));
  EXPECT_EQ(long_param.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(long_param.status().message(), HasSubstr("param \"s\""));
  RunRecord orphan = MakeRun("child");
  orphan.fork = storage::ForkPoint{"nope", 1};
  EXPECT_EQ(store_->Create(orphan).status().code(),
            absl::StatusCode::kFailedPrecondition);
  RunRecord self = MakeRun("self");
  self.fork = storage::ForkPoint{"self", 1};
  EXPECT_EQ(store_->Create(self).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Update("proj", "missing", {}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RunStoreTest, ForkPointCannotChange) {
  ASSERT_TRUE(store_->Create(MakeRun("p")).ok());
  RunRecord child = MakeRun("c");
  child.fork = storage::ForkPoint{"p", 10};
  ASSERT_TRUE(store_->Create(child).ok());
  ASSERT_TRUE(store_->Create(child).ok());  // same fork: a retry
  child.fork->step = 11;
  EXPECT_EQ(store_->Create(child).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(RunStoreTest, UpdateAppliesEachField) {
  ASSERT_TRUE(store_->Create(MakeRun("r", {{"a", 1.0}, {"b", 2.0}}, {"x", "y"})).ok());
  storage::RunUpdate update;
  update.set_params["c"] = std::string("three");
  update.remove_params = {"a"};
  update.add_tags = {"w"};
  update.remove_tags = {"x"};
  update.state = storage::RunState::kFailed;
  update.description = "diverged";
  auto updated = store_->Update("proj", "r", update);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->params.count("a"), 0u);
  EXPECT_EQ(std::get<std::string>(updated->params.at("c")), "three");
  EXPECT_THAT(updated->tags, ElementsAre("w", "y"));
  EXPECT_EQ(updated->state, storage::RunState::kFailed);
  EXPECT_EQ(updated->description, "diverged");
}

TEST_F(RunStoreTest, FilterSemantics) {
  ASSERT_TRUE(store_->Create(MakeRun("a", {{"lr", 1e-4}, {"model", std::string("resnet50")}})).ok());
  ASSERT_TRUE(store_->Create(MakeRun("b", {{"lr", int64_t{1}}, {"model", std::string("vit")}})).ok());
  ASSERT_TRUE(store_->Create(MakeRun("c", {{"lr", 1e-2}})).ok());
  ASSERT_TRUE(store_->Create(MakeRun("d", {{"lr", std::string("auto")}})).ok());
  ASSERT_TRUE(store_->Create(MakeRun("e")).ok());
  EXPECT_THAT(List({"lr < 1e-3"}), ElementsAre("a"));
  EXPECT_THAT(List({"lr <= 0.01"}), ElementsAre("a", "c"));
  EXPECT_THAT(List({"lr >= 1"}), ElementsAre("b"));    // int vs number
  EXPECT_THAT(List({"lr = 1.0"}), ElementsAre("b"));
  EXPECT_THAT(List({"model = \"resnet50\""}), ElementsAre("a"));
  // Missing params and type mismatches fail the comparison, != too.
  EXPECT_THAT(List({"model != \"resnet50\""}), ElementsAre("b"));
  EXPECT_THAT(List({"lr = \"auto\""}), ElementsAre("d"));
  EXPECT_THAT(List({"lr > 0", "model = \"vit\""}), ElementsAre("b"));
  for (const char* bad : {"lr", "< 3", "lr < abc", "lr <"}) {
    EXPECT_FALSE(storage::ParseParamComparison(bad).ok()) << bad;
  }
}

TEST_F(RunStoreTest, TagAndStateFiltersAndSorting) {
  ASSERT_TRUE(store_->Create(MakeRun("a", {{"lr", 0.3}}, {"prod", "big"})).ok());
  ASSERT_TRUE(store_->Create(MakeRun("b", {{"lr", 0.1}}, {"prod"})).ok());
  ASSERT_TRUE(store_->Create(MakeRun("c", {}, {"big"})).ok());
  storage::RunUpdate finish;
  finish.state = storage::RunState::kFinished;
  ASSERT_TRUE(store_->Update("proj", "b", finish).ok());

  storage::RunFilter filter;
  filter.tags = {"prod"};
  bool truncated = false;
  EXPECT_THAT(Ids(store_->List("proj", filter, {}, 0, &truncated)),
              ElementsAre("a", "b"));
  filter = {};
  filter.states = {storage::RunState::kFinished};
  EXPECT_THAT(Ids(store_->List("proj", filter, {}, 0, &truncated)),
              ElementsAre("b"));
  // Runs without the key sort last in both directions.
  EXPECT_THAT(List({}, "param:lr"), ElementsAre("b", "a", "c"));
  EXPECT_THAT(List({}, "param:lr", true), ElementsAre("a", "b", "c"));
  EXPECT_THAT(List({}, "run_id", true), ElementsAre("c", "b", "a"));
  EXPECT_THAT(Ids(store_->List("proj", {}, {}, 2, &truncated)), ::testing::SizeIs(2));
  EXPECT_TRUE(truncated);
  EXPECT_TRUE(Ids(store_->List("other", {}, {}, 0, &truncated)).empty());
  EXPECT_FALSE(storage::ParseRunSort("bogus", false).ok());
}

TEST_F(RunStoreTest, LineageChainsForks) {
  const uint64_t S = kMicrosPerStep;
  ASSERT_TRUE(store_->Create(MakeRun("root")).ok());
  RunRecord mid = MakeRun("mid");
  mid.fork = storage::ForkPoint{"root", 100 * S};
  ASSERT_TRUE(store_->Create(mid).ok());
  RunRecord leaf = MakeRun("leaf");
  leaf.fork = storage::ForkPoint{"mid", 150 * S};
  ASSERT_TRUE(store_->Create(leaf).ok());
  auto segments = store_->Lineage("proj", "leaf");
  ASSERT_EQ(segments.size(), 3u);
  EXPECT_EQ(segments[0].run, "root");
  EXPECT_EQ(segments[0].from_step, 0u);
  EXPECT_EQ(segments[0].to_step, 100 * S);
  EXPECT_EQ(segments[1].run, "mid");
  EXPECT_EQ(segments[1].from_step, 100 * S + 1);
  EXPECT_EQ(segments[1].to_step, 150 * S);
  EXPECT_EQ(segments[2].run, "leaf");
  EXPECT_EQ(segments[2].from_step, 150 * S + 1);
  EXPECT_EQ(segments[2].to_step, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(store_->Lineage("proj", "unknown").size(), 1u);
}

// ---- over gRPC ------------------------------------------------------------

class RunsServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<testing::InProcessServer>(dir_.path());
    ASSERT_TRUE(server_->ok());
  }

  // Writes steps [first, first+n) with value = base + step.
  void Write(const std::string& run, int64_t first, int n, double base) {
    v1::WriteRequest req;
    v1::SeriesPoints* s = req.add_series();
    s->mutable_key()->set_project("proj");
    s->mutable_key()->set_run(run);
    s->mutable_key()->set_metric("loss");
    for (int i = 0; i < n; ++i) {
      s->add_steps(first + i);
      s->add_times_ms(1000 * (first + i));
      s->add_values(base + static_cast<double>(first + i));
    }
    v1::WriteResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_->ingest_stub->WriteOne(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.points_accepted(), static_cast<uint64_t>(n));
  }

  grpc::Status CreateRun(const std::string& id, v1::CreateRunResponse* resp,
                         const std::string& parent = "", int64_t step = 0) {
    v1::CreateRunRequest req;
    req.mutable_run()->set_project("proj");
    req.mutable_run()->set_run_id(id);
    (*req.mutable_run()->mutable_params())["lr"].set_float_value(0.01);
    req.mutable_run()->add_tags("baseline");
    if (!parent.empty()) {
      req.mutable_run()->mutable_fork()->set_parent_run(parent);
      req.mutable_run()->mutable_fork()->mutable_step()->set_whole(step);
    }
    grpc::ClientContext ctx;
    return server_->ingest_stub->CreateRun(&ctx, req, resp);
  }

  std::vector<double> ReadValues(const std::string& run) {
    v1::ReadRangeRequest req;
    req.mutable_series()->set_project("proj");
    req.mutable_series()->set_run(run);
    req.mutable_series()->set_metric("loss");
    grpc::ClientContext ctx;
    auto reader = server_->query_stub->ReadRange(&ctx, req);
    std::vector<double> values;
    v1::ReadRangeResponse resp;
    while (reader->Read(&resp)) {
      values.insert(values.end(), resp.values().begin(), resp.values().end());
    }
    EXPECT_TRUE(reader->Finish().ok());
    return values;
  }

  testing::TempDir dir_;
  std::unique_ptr<testing::InProcessServer> server_;
};

TEST_F(RunsServiceTest, CreateUpdateListGet) {
  v1::CreateRunResponse created;
  ASSERT_TRUE(CreateRun("r1", &created).ok());
  EXPECT_TRUE(created.created());
  EXPECT_EQ(created.run().state(), v1::RUN_STATE_RUNNING);
  ASSERT_TRUE(CreateRun("r1", &created).ok());
  EXPECT_FALSE(created.created());

  v1::UpdateRunRequest update;
  update.set_project("proj");
  update.set_run_id("r1");
  update.set_state(v1::RUN_STATE_FINISHED);
  (*update.mutable_set_params())["model"].set_string_value("resnet50");
  v1::Run updated;
  grpc::ClientContext ctx;
  ASSERT_TRUE(server_->ingest_stub->UpdateRun(&ctx, update, &updated).ok());
  EXPECT_EQ(updated.state(), v1::RUN_STATE_FINISHED);
  EXPECT_EQ(updated.params().at("model").string_value(), "resnet50");

  v1::ListRunsRequest list;
  list.set_project("proj");
  list.add_filters("model = \"resnet50\"");
  list.add_states(v1::RUN_STATE_FINISHED);
  v1::ListRunsResponse listed;
  grpc::ClientContext ctx2;
  ASSERT_TRUE(server_->query_stub->ListRuns(&ctx2, list, &listed).ok());
  ASSERT_EQ(listed.runs_size(), 1);
  EXPECT_EQ(listed.runs(0).run_id(), "r1");

  list.add_filters("lr <");
  grpc::ClientContext ctx3;
  EXPECT_EQ(server_->query_stub->ListRuns(&ctx3, list, &listed).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  Write("r1", 0, 40, 0.0);
  v1::GetRunRequest get;
  get.set_project("proj");
  get.set_run_id("r1");
  v1::GetRunResponse got;
  grpc::ClientContext ctx4;
  ASSERT_TRUE(server_->query_stub->GetRun(&ctx4, get, &got).ok());
  ASSERT_EQ(got.series_size(), 1);
  EXPECT_EQ(got.series(0).points(), 40u);
  EXPECT_EQ(got.series(0).last_step().whole(), 39);
  EXPECT_EQ(got.series(0).last_value(), 39.0);
  EXPECT_EQ(got.series(0).last_time_ms(), 39000);
  EXPECT_EQ(got.series(0).min(), 0.0);
  EXPECT_EQ(got.series(0).max(), 39.0);

  get.set_run_id("nope");
  grpc::ClientContext ctx5;
  EXPECT_EQ(server_->query_stub->GetRun(&ctx5, get, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(RunsServiceTest, ForkReadsInheritTheParentUpToTheForkStep) {
  v1::CreateRunResponse created;
  ASSERT_TRUE(CreateRun("parent", &created).ok());
  Write("parent", 0, 50, 0.0);  // sealed chunks and head (chunks of 16)
  ASSERT_TRUE(CreateRun("child", &created, "parent", 20).ok());
  Write("child", 21, 10, 1000.0);
  // A grandchild forked before the child wrote past its fork point.
  ASSERT_TRUE(CreateRun("grandchild", &created, "child", 25).ok());
  Write("grandchild", 26, 2, 5000.0);

  std::vector<double> expected;
  for (int s = 0; s <= 20; ++s) expected.push_back(s);
  for (int s = 21; s <= 30; ++s) expected.push_back(1000.0 + s);
  EXPECT_EQ(ReadValues("child"), expected);
  EXPECT_EQ(ReadValues("parent").size(), 50u);  // the parent is untouched

  std::vector<double> grand(expected.begin(), expected.begin() + 26);
  grand.push_back(5026.0);
  grand.push_back(5027.0);
  EXPECT_EQ(ReadValues("grandchild"), grand);

  v1::GetRunRequest get;
  get.set_project("proj");
  get.set_run_id("child");
  v1::GetRunResponse got;
  grpc::ClientContext ctx;
  ASSERT_TRUE(server_->query_stub->GetRun(&ctx, get, &got).ok());
  ASSERT_EQ(got.series_size(), 1);
  EXPECT_EQ(got.series(0).key().run(), "child");
  EXPECT_EQ(got.series(0).points(), 31u);
  EXPECT_EQ(got.series(0).first_step().whole(), 0);
  EXPECT_EQ(got.series(0).last_value(), 1030.0);
  EXPECT_EQ(got.series(0).max(), 1030.0);

  // A chart read of the fork: the same points, bucketed.
  v1::ReadDownsampledRequest chart;
  chart.mutable_series()->set_project("proj");
  chart.mutable_series()->set_run("child");
  chart.mutable_series()->set_metric("loss");
  chart.set_buckets(4);
  v1::ReadDownsampledResponse buckets;
  grpc::ClientContext ctx2;
  ASSERT_TRUE(server_->query_stub->ReadDownsampled(&ctx2, chart, &buckets).ok());
  ASSERT_GT(buckets.buckets_size(), 0);
  uint64_t count = 0;
  double sum = 0, max = 0;
  for (const auto& b : buckets.buckets()) {
    count += b.count();
    sum += b.sum();
    max = std::max(max, b.max());
  }
  double expected_sum = 0;
  for (double v : expected) expected_sum += v;
  EXPECT_EQ(count, expected.size());
  EXPECT_DOUBLE_EQ(sum, expected_sum);
  EXPECT_EQ(max, 1030.0);
  EXPECT_EQ(buckets.buckets(0).first(), 0.0);
  EXPECT_EQ(buckets.buckets(buckets.buckets_size() - 1).last(), 1030.0);
  EXPECT_EQ(buckets.buckets(buckets.buckets_size() - 1).end_step().whole(), 30);

  // Fork whose parent is missing.
  grpc::Status orphan = CreateRun("orphan", &created, "missing", 3);
  EXPECT_EQ(orphan.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

}  // namespace
}  // namespace stepdb
