// Auth: the token store, the audit chain, and every RPC against every kind
// of caller, over real gRPC on loopback, in process.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <map>

#include "auth/auth_service.h"
#include "auth/client_channel.h"
#include "auth/crypto.h"
#include "auth/retention.h"
#include "auth/token_authorizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/ingest_service.h"
#include "query/admin_service.h"
#include "query/query_service.h"
#include "storage/watch.h"
#include "storage/run_store.h"
#include "query/tail.h"
#include "query/watch_service.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "storage/engine.h"
#include "storage/keys.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using auth::Scope;

std::unique_ptr<storage::Engine> OpenEngine(const std::string& dir) {
  storage::EngineOptions options;
  options.data_dir = dir;
  options.sync = false;
  auto engine = storage::Engine::Open(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// ---- token store ------------------------------------------------------------

TEST(TokenStoreTest, TokensAreRandomHashedAndSurviveRestart) {
  testing::TempDir dir;
  std::string token, id;
  {
    auto engine = OpenEngine(dir.path());
    auto store = auth::TokenStore::Open(engine.get(), [] { return int64_t{42}; });
    ASSERT_TRUE(store.ok());
    auto created = (*store)->Create("proj", Scope::kWrite, "ci");
    ASSERT_TRUE(created.ok()) << created.status();
    token = created->token;
    id = created->info.id;
    std::string_view parsed_id, secret;
    ASSERT_TRUE(auth::ParseToken(token, &parsed_id, &secret));
    EXPECT_EQ(parsed_id, id);
    EXPECT_EQ(secret.size(), 64u);  // 256 bits
    EXPECT_EQ(created->info.created_ms, 42);
    auto other = (*store)->Create("proj", Scope::kWrite, "ci");
    ASSERT_TRUE(other.ok());
    EXPECT_NE(other->token, token);
    // Only a salted hash is stored: the secret appears in no record.
    ASSERT_TRUE(engine
                    ->ScanMeta("", [&](std::string_view, std::string_view value) {
                      EXPECT_EQ(value.find(secret), std::string_view::npos);
                      return true;
                    })
                    .ok());
  }
  auto engine = OpenEngine(dir.path());
  auto store = auth::TokenStore::Open(engine.get(), auth::SystemClock());
  ASSERT_TRUE(store.ok());
  auto principal = (*store)->Authenticate(token);
  ASSERT_TRUE(principal.ok()) << principal.status();
  EXPECT_EQ(principal->token_id, id);
  EXPECT_EQ(principal->project, "proj");
  EXPECT_EQ(principal->scope, Scope::kWrite);
  // A wrong secret, a malformed token and, once revoked, the right one all
  // get the same answer.
  std::string wrong = token;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  EXPECT_EQ((*store)->Authenticate(wrong).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*store)->Authenticate("sdb_zz").status().code(),
            absl::StatusCode::kUnauthenticated);
  ASSERT_TRUE((*store)->Revoke(id).ok());
  EXPECT_EQ((*store)->Authenticate(token).status(),
            (*store)->Authenticate(wrong).status());
  EXPECT_TRUE((*store)->Find(id)->revoked);
  EXPECT_EQ((*store)->Revoke("0123").status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenStoreTest, InstallRefusesWeakTokens) {
  testing::TempDir dir;
  auto engine = OpenEngine(dir.path());
  auto store = auth::TokenStore::Open(engine.get(), auth::SystemClock());
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->Install("sdb_ab_1234", "*", Scope::kAdmin, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::string good = "sdb_ab_" + std::string(32, 'c');
  EXPECT_TRUE((*store)->Install(good, "*", Scope::kAdmin, "").ok());
  EXPECT_EQ((*store)->Install(good, "*", Scope::kAdmin, "").status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(AllowsTest, ScopesNestAndProjectsSeparate) {
  const auth::Principal a_write{"t", "a", Scope::kWrite};
  EXPECT_TRUE(auth::Allows(a_write, "a", Scope::kRead).ok());
  EXPECT_TRUE(auth::Allows(a_write, "a", Scope::kWrite).ok());
  EXPECT_FALSE(auth::Allows(a_write, "a", Scope::kAdmin).ok());
  EXPECT_FALSE(auth::Allows(a_write, "b", Scope::kRead).ok());
  EXPECT_FALSE(auth::Allows(a_write, "*", Scope::kRead).ok());
  const auth::Principal global_read{"t", "*", Scope::kRead};
  EXPECT_TRUE(auth::Allows(global_read, "b", Scope::kRead).ok());
  EXPECT_FALSE(auth::Allows(global_read, "b", Scope::kWrite).ok());
}

TEST(RateLimitTest, TokenBucketRefillsWithTheClock) {
  testing::TempDir dir;
  auto engine = OpenEngine(dir.path());
  int64_t now = 1000;
  auto authorizer = auth::TokenAuthorizer::Open(engine.get(), [&] { return now; });
  ASSERT_TRUE(authorizer.ok());
  auto created = (*authorizer)->tokens().Create("p", Scope::kWrite, "", 100);
  ASSERT_TRUE(created.ok());
  auto principal = (*authorizer)->Authenticate("Bearer " + created->token);
  ASSERT_TRUE(principal.ok());
  EXPECT_EQ(principal->max_points_per_second, 100u);
  auto& a = **authorizer;
  // A second's worth at once, even in one request too big for it (debt).
  EXPECT_TRUE(a.ChargePoints(*principal, 60).ok());
  EXPECT_TRUE(a.ChargePoints(*principal, 60).ok());
  EXPECT_EQ(a.ChargePoints(*principal, 1).code(),
            absl::StatusCode::kResourceExhausted);
  now += 500;  // -20 + 50
  EXPECT_TRUE(a.ChargePoints(*principal, 30).ok());
  EXPECT_EQ(a.ChargePoints(*principal, 1).code(),
            absl::StatusCode::kResourceExhausted);
  now += 60'000;  // refills to one second's worth, no more
  EXPECT_TRUE(a.ChargePoints(*principal, 100).ok());
  EXPECT_FALSE(a.ChargePoints(*principal, 1).ok());
  // Unlimited tokens are never charged.
  const auth::Principal unlimited{"x", "p", Scope::kWrite, 0};
  EXPECT_TRUE(auth::ChargePoints(&a, unlimited, 1'000'000).ok());
}

// ---- audit chain -----------------------------------------------------------

TEST(AuditLogTest, ChainVerifiesAndDetectsTampering) {
  testing::TempDir dir;
  auto engine = OpenEngine(dir.path());
  {
    auto log = auth::AuditLog::Open(engine.get(), [] { return int64_t{7}; });
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE((*log)->Append({"tok", "Query.ReadRange", "p", "peer",
                                  "denied", std::to_string(i)})
                      .ok());
    }
  }
  // Reopened, the chain goes on where it stopped.
  auto log = auth::AuditLog::Open(engine.get(), auth::SystemClock());
  ASSERT_TRUE(log.ok());
  auto seq = (*log)->Append({"tok", "Admin.Stats", "*", "peer", "ok", ""});
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 6u);
  auto v = (*log)->Verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->message;
  EXPECT_EQ(v->entries, 6u);
  auto entries = (*log)->Read(2, 2);
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].seq, 3u);
  EXPECT_EQ((*entries)[0].event.detail, "2");
  EXPECT_EQ((*entries)[1].prev_hash, (*entries)[0].hash);

  auto key = [](uint64_t s) {
    std::string k(1, storage::kAuditTag);
    storage::AppendBigEndian64(s, &k);
    return k;
  };
  // Edit entry 3's detail in place ("2" -> "X").
  auto stored = engine->GetMeta(key(3));
  ASSERT_TRUE(stored.ok() && stored->has_value());
  std::string edited = **stored;
  const size_t pos = edited.rfind(std::string("\x00\x00\x00\x01" "2", 5));
  ASSERT_NE(pos, std::string::npos);
  edited[pos + 4] = 'X';
  storage::MetaWrite tamper{key(3), edited};
  ASSERT_TRUE(engine->WriteMeta({&tamper, 1}).ok());
  v = (*log)->Verify();
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->intact);
  EXPECT_EQ(v->first_bad_seq, 3u);
  EXPECT_THAT(v->message, HasSubstr("hash"));

  // Restored, then an entry removed from the middle.
  storage::MetaWrite restore{key(3), **stored};
  ASSERT_TRUE(engine->WriteMeta({&restore, 1}).ok());
  ASSERT_TRUE((*log)->Verify()->intact);
  auto fourth = engine->GetMeta(key(4));
  storage::MetaWrite drop{key(4), std::nullopt};
  ASSERT_TRUE(engine->WriteMeta({&drop, 1}).ok());
  v = (*log)->Verify();
  EXPECT_FALSE(v->intact);
  EXPECT_EQ(v->first_bad_seq, 4u);
  storage::MetaWrite put_back{key(4), **fourth};
  ASSERT_TRUE(engine->WriteMeta({&put_back, 1}).ok());

  // The last entry removed: the head record gives it away.
  storage::MetaWrite truncate{key(6), std::nullopt};
  ASSERT_TRUE(engine->WriteMeta({&truncate, 1}).ok());
  v = (*log)->Verify();
  EXPECT_FALSE(v->intact);
  EXPECT_THAT(v->message, HasSubstr("head"));
}

// ---- retention --------------------------------------------------------------

TEST(RetentionTest, ExpiresExactlyTheChunksOlderThanThePolicy) {
  testing::TempDir dir;
  storage::EngineOptions options;
  options.data_dir = dir.path();
  options.sync = false;
  options.chunk_points = 16;
  auto opened = storage::Engine::Open(options);
  ASSERT_TRUE(opened.ok());
  std::unique_ptr<storage::Engine> engine = *std::move(opened);
  // 64 steps, one second apart from t = 0, in two projects; sealed into
  // chunks of 16 steps (aligned windows).
  std::vector<storage::SeriesId> ids;
  for (const char* project : {"old", "keep"}) {
    auto id = engine->ResolveSeries({project, "r", "loss", {}});
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
    storage::AppendBatch batch;
    batch.StartSeries(*id);
    for (int i = 0; i < 64; ++i) {
      batch.AddPoint(storage::MicroStep(i, 0), i * 1000, 0.5 * i);
    }
    ASSERT_TRUE(engine->Append(std::move(batch)).ok());
  }
  ASSERT_TRUE(engine->Compact().ok());
  const storage::EngineStats before = engine->Stats();
  ASSERT_EQ(before.sealed_chunks, 8u);

  int64_t now = 0;
  auth::RetentionPolicies policies(engine.get(), [&] { return now; });
  ASSERT_TRUE(policies.Set("old", 1).ok());
  EXPECT_EQ(policies.Get("old")->value_or(auth::ProjectRetention{}).raw_days, 1u);
  EXPECT_FALSE(policies.Get("keep")->has_value());
  // Cut-off at 32 s: the chunks of steps 0-15 and 16-31 (times up to 31 s)
  // go; the chunk of 32-47 starts exactly at the cut-off and stays.
  now = auth::kMillisPerDay + 32'000;
  auto result = policies.Enforce();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->chunks, 2u);
  EXPECT_EQ(result->points, 32u);
  std::vector<uint64_t> steps;
  ASSERT_TRUE(engine
                  ->Read(ids[0], {}, 0,
                         [&](const storage::PointColumns& p) {
                           steps.insert(steps.end(), p.steps.begin(), p.steps.end());
                           return true;
                         })
                  .ok());
  ASSERT_EQ(steps.size(), 32u);
  EXPECT_EQ(steps.front(), storage::MicroStep(32, 0));
  EXPECT_EQ(steps.back(), storage::MicroStep(63, 0));
  bool truncated = false;
  auto listed = engine->ListSeries({"old", {}, {}, {}, {}}, 0, &truncated);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].points, 32u);
  EXPECT_EQ(listed[0].first_step, storage::MicroStep(32, 0));
  // The project without a policy is untouched; a second pass finds nothing.
  EXPECT_EQ(engine->Stats().points, before.points - 32);
  EXPECT_EQ(policies.Enforce()->chunks, 0u);
  // Removing the policy keeps the rest forever.
  ASSERT_TRUE(policies.Set("old", 0).ok());
  now += 100 * auth::kMillisPerDay;
  EXPECT_EQ(policies.Enforce()->chunks, 0u);
}

// ---- the RPC matrix ----------------------------------------------------------

enum class Caller { kNone, kWrongProject, kRead, kWrite, kAdmin, kRevoked, kGlobal };

std::string CallerName(Caller c) {
  switch (c) {
    case Caller::kNone: return "no token";
    case Caller::kWrongProject: return "admin of another project";
    case Caller::kRead: return "read";
    case Caller::kWrite: return "write";
    case Caller::kAdmin: return "project admin";
    case Caller::kRevoked: return "revoked admin";
    case Caller::kGlobal: return "global admin";
  }
  return "";
}

class AuthServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = OpenEngine(dir_.path());
    ASSERT_NE(engine_, nullptr);
    auto authorizer = auth::TokenAuthorizer::Open(engine_.get());
    ASSERT_TRUE(authorizer.ok()) << authorizer.status();
    authorizer_ = *std::move(authorizer);
    auto boot = authorizer_->Bootstrap(std::nullopt);
    ASSERT_TRUE(boot.ok() && boot->has_value());
    tokens_[Caller::kGlobal] = **boot;
    tokens_[Caller::kWrongProject] = Create("other", Scope::kAdmin);
    tokens_[Caller::kRead] = Create("proj", Scope::kRead);
    tokens_[Caller::kWrite] = Create("proj", Scope::kWrite);
    tokens_[Caller::kAdmin] = Create("proj", Scope::kAdmin);
    tokens_[Caller::kRevoked] = Create("proj", Scope::kAdmin);
    std::string_view id, secret;
    ASSERT_TRUE(auth::ParseToken(tokens_[Caller::kRevoked], &id, &secret));
    ASSERT_TRUE(authorizer_->tokens().Revoke(id).ok());

    ingest::IngestOptions ingest_options;
    ingest_options.authorizer = authorizer_.get();
    auto runs = storage::RunStore::Open(engine_.get());
    ASSERT_TRUE(runs.ok());
    runs_ = *std::move(runs);
    ingest_ = std::make_unique<ingest::IngestService>(engine_.get(), ingest_options,
                                                      runs_.get());
    tail_ = std::make_unique<query::TailHub>(engine_.get(), query::TailOptions{});
    query::QueryOptions query_options;
    query_options.authorizer = authorizer_.get();
    query_ = std::make_unique<query::QueryService>(engine_.get(), query_options,
                                                   runs_.get(), tail_.get());
    auto watch = storage::WatchEvaluator::Open(engine_.get(), runs_.get());
    ASSERT_TRUE(watch.ok());
    watch_ = *std::move(watch);
    query::WatchServiceOptions watch_options;
    watch_options.authorizer = authorizer_.get();
    watch_service_ = std::make_unique<query::WatchService>(watch_.get(), watch_options);
    admin_ = std::make_unique<query::AdminService>(engine_.get(), authorizer_.get(),
                                                   runs_.get(), watch_.get());
    retention_ = std::make_unique<auth::RetentionPolicies>(engine_.get(),
                                                         auth::SystemClock());
    auth_ = std::make_unique<auth::AuthService>(authorizer_.get(), retention_.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(ingest_.get());
    builder.RegisterService(query_.get());
    builder.RegisterService(admin_.get());
    builder.RegisterService(auth_.get());
    builder.RegisterService(watch_service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    // Data in both projects, written by the global admin.
    ASSERT_EQ(WriteOne(Caller::kGlobal, "proj"), grpc::StatusCode::OK);
    ASSERT_EQ(WriteOne(Caller::kGlobal, "other"), grpc::StatusCode::OK);
  }

  void TearDown() override {
    tail_->Shutdown();
    watch_service_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    admin_.reset();
    watch_.reset();
    engine_.reset();
  }

  std::string Create(const std::string& project, Scope scope) {
    auto created = authorizer_->tokens().Create(project, scope, "test");
    EXPECT_TRUE(created.ok());
    return created->token;
  }

  std::shared_ptr<grpc::Channel> Channel(Caller caller) {
    return auth::MakeClientChannel("127.0.0.1:" + std::to_string(port_),
                                   grpc::InsecureChannelCredentials(), {},
                                   tokens_[caller]);
  }

  static void FillKey(const std::string& project, v1::SeriesKey* key) {
    key->set_project(project);
    key->set_run("r");
    key->set_metric("loss");
  }

  static v1::WriteRequest Request(const std::string& project, int64_t step,
                                  uint32_t ref = 0) {
    v1::WriteRequest req;
    v1::SeriesPoints* s = req.add_series();
    if (!project.empty()) FillKey(project, s->mutable_key());
    s->set_ref(ref);
    s->add_steps(step);
    s->add_values(1.5);
    s->add_times_ms(1000 + step);
    return req;
  }

  grpc::StatusCode WriteOne(Caller caller, const std::string& project) {
    grpc::ClientContext ctx;
    v1::WriteResponse resp;
    return v1::Ingest::NewStub(Channel(caller))
        ->WriteOne(&ctx, Request(project, next_step_++), &resp)
        .error_code();
  }

  testing::TempDir dir_;
  std::unique_ptr<storage::Engine> engine_;
  std::unique_ptr<auth::TokenAuthorizer> authorizer_;
  std::unique_ptr<storage::RunStore> runs_;
  std::unique_ptr<ingest::IngestService> ingest_;
  std::unique_ptr<query::TailHub> tail_;
  std::unique_ptr<query::QueryService> query_;
  std::unique_ptr<storage::WatchEvaluator> watch_;
  std::unique_ptr<query::WatchService> watch_service_;
  std::unique_ptr<query::AdminService> admin_;
  std::unique_ptr<auth::RetentionPolicies> retention_;
  std::unique_ptr<auth::AuthService> auth_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::map<Caller, std::string> tokens_;  // kNone: ""
  int64_t next_step_ = 1;
};

TEST_F(AuthServerTest, EveryRpcForEveryCaller) {
  using Code = grpc::StatusCode;
  constexpr Code OK = Code::OK, UNAUTH = Code::UNAUTHENTICATED,
                 DENIED = Code::PERMISSION_DENIED, NOT_FOUND = Code::NOT_FOUND;
  struct Row {
    std::string rpc;
    std::function<Code(Caller)> call;
    // none, wrong project, read, write, admin, revoked, global
    std::array<Code, 7> expected;
  };
  const std::vector<Row> rows = {
      {"Ingest.Write",
       [&](Caller c) {
         grpc::ClientContext ctx;
         auto stream = v1::Ingest::NewStub(Channel(c))->Write(&ctx);
         v1::WriteRequest req = Request("proj", next_step_++);
         req.set_seq(1);
         stream->Write(req);
         stream->WritesDone();
         v1::WriteAck ack;
         Code code = OK;
         if (stream->Read(&ack)) code = static_cast<Code>(ack.error_code());
         grpc::Status status = stream->Finish();
         return status.ok() ? code : status.error_code();
       },
       {UNAUTH, DENIED, DENIED, OK, OK, UNAUTH, OK}},
      {"Ingest.WriteOne", [&](Caller c) { return WriteOne(c, "proj"); },
       {UNAUTH, DENIED, DENIED, OK, OK, UNAUTH, OK}},
      {"Query.ReadRange",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::ReadRangeRequest req;
         FillKey("proj", req.mutable_series());
         auto reader = v1::Query::NewStub(Channel(c))->ReadRange(&ctx, req);
         v1::ReadRangeResponse resp;
         while (reader->Read(&resp)) {
         }
         return reader->Finish().error_code();
       },
       {UNAUTH, DENIED, OK, OK, OK, UNAUTH, OK}},
      {"Query.ListSeries",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::ListSeriesRequest req;
         req.set_project("proj");
         v1::ListSeriesResponse resp;
         return v1::Query::NewStub(Channel(c))->ListSeries(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, OK, OK, OK, UNAUTH, OK}},
      {"Query.ReadDownsampled",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::ReadDownsampledRequest req;
         FillKey("proj", req.mutable_series());
         req.set_buckets(10);
         v1::ReadDownsampledResponse resp;
         return v1::Query::NewStub(Channel(c))
             ->ReadDownsampled(&ctx, req, &resp)
             .error_code();
       },
       {UNAUTH, DENIED, OK, OK, OK, UNAUTH, OK}},
      {"Ingest.CreateRun",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::CreateRunRequest req;
         req.mutable_run()->set_project("proj");
         req.mutable_run()->set_run_id("r");
         v1::CreateRunResponse resp;
         return v1::Ingest::NewStub(Channel(c))->CreateRun(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, OK, OK, UNAUTH, OK}},
      {"Ingest.UpdateRun",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::UpdateRunRequest req;
         req.set_project("proj");
         req.set_run_id("never-created");
         v1::Run resp;
         return v1::Ingest::NewStub(Channel(c))->UpdateRun(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, NOT_FOUND, NOT_FOUND, UNAUTH, NOT_FOUND}},
      {"Query.ListRuns",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::ListRunsRequest req;
         req.set_project("proj");
         v1::ListRunsResponse resp;
         return v1::Query::NewStub(Channel(c))->ListRuns(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, OK, OK, OK, UNAUTH, OK}},
      {"Query.GetRun",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::GetRunRequest req;
         req.set_project("proj");
         req.set_run_id("never-created");
         v1::GetRunResponse resp;
         return v1::Query::NewStub(Channel(c))->GetRun(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, NOT_FOUND, NOT_FOUND, NOT_FOUND, UNAUTH, NOT_FOUND}},
      {"Query.Aggregate",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::AggregateRequest req;
         req.set_project("proj");
         req.set_metric("loss");
         req.set_buckets(10);
         v1::AggregateResponse resp;
         return v1::Query::NewStub(Channel(c))->Aggregate(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, OK, OK, OK, UNAUTH, OK}},
      {"Query.Tail",
       [&](Caller c) {
         // An allowed tail stays open until its deadline.
         grpc::ClientContext ctx;
         ctx.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(300));
         v1::TailRequest req;
         req.set_project("proj");
         auto reader = v1::Query::NewStub(Channel(c))->Tail(&ctx, req);
         v1::TailResponse resp;
         while (reader->Read(&resp)) {
         }
         return reader->Finish().error_code();
       },
       {UNAUTH, DENIED, Code::DEADLINE_EXCEEDED, Code::DEADLINE_EXCEEDED,
        Code::DEADLINE_EXCEEDED, UNAUTH, Code::DEADLINE_EXCEEDED}},
      {"Watch.CreateRule",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::WatchRule req, resp;
         req.set_project("proj");
         req.set_condition("nonfinite");
         return v1::Watch::NewStub(Channel(c))->CreateRule(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, OK, OK, UNAUTH, OK}},
      {"Watch.ListRules",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::ListWatchRulesRequest req;
         req.set_project("proj");
         v1::ListWatchRulesResponse resp;
         return v1::Watch::NewStub(Channel(c))->ListRules(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, OK, OK, OK, UNAUTH, OK}},
      {"Watch.DeleteRule",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::DeleteWatchRuleRequest req;
         req.set_project("proj");
         req.set_id("no-such-rule");
         v1::DeleteWatchRuleResponse resp;
         return v1::Watch::NewStub(Channel(c))->DeleteRule(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, NOT_FOUND, NOT_FOUND, UNAUTH, NOT_FOUND}},
      {"Watch.Events",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::WatchEventsRequest req;
         req.set_project("proj");
         auto reader = v1::Watch::NewStub(Channel(c))->Events(&ctx, req);
         v1::WatchEvent event;
         while (reader->Read(&event)) {
         }
         return reader->Finish().error_code();
       },
       {UNAUTH, DENIED, OK, OK, OK, UNAUTH, OK}},
      {"Admin.Stats",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::StatsResponse resp;
         return v1::Admin::NewStub(Channel(c))->Stats(&ctx, {}, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, DENIED, DENIED, UNAUTH, OK}},
      {"Admin.Compact",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::CompactResponse resp;
         return v1::Admin::NewStub(Channel(c))->Compact(&ctx, {}, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, DENIED, DENIED, UNAUTH, OK}},
      {"Admin.DeleteRun",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::DeleteRunRequest req;
         req.set_project("proj");
         req.set_run("no-such-run");
         v1::DeleteResponse resp;
         return v1::Admin::NewStub(Channel(c))->DeleteRun(&ctx, req, &resp).error_code();
       },
       // The project's admin passes the check, as does a global admin.
       {UNAUTH, DENIED, DENIED, DENIED, NOT_FOUND, UNAUTH, NOT_FOUND}},
      {"Auth.CreateToken",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::CreateTokenRequest req;
         req.set_project("proj");
         req.set_scope(v1::SCOPE_READ);
         v1::CreateTokenResponse resp;
         return v1::Auth::NewStub(Channel(c))->CreateToken(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, DENIED, OK, UNAUTH, OK}},
      {"Auth.ListTokens",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::ListTokensRequest req;
         req.set_project("proj");
         v1::ListTokensResponse resp;
         return v1::Auth::NewStub(Channel(c))->ListTokens(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, DENIED, OK, UNAUTH, OK}},
      {"Auth.RevokeToken",
       [&](Caller c) {
         std::string_view id, secret;
         const std::string victim = Create("proj", Scope::kRead);
         auth::ParseToken(victim, &id, &secret);
         grpc::ClientContext ctx;
         v1::RevokeTokenRequest req;
         req.set_id(std::string(id));
         v1::RevokeTokenResponse resp;
         return v1::Auth::NewStub(Channel(c))->RevokeToken(&ctx, req, &resp).error_code();
       },
       // Another project's admin is told NOT_FOUND: ids cannot be probed.
       {UNAUTH, NOT_FOUND, DENIED, DENIED, OK, UNAUTH, OK}},
      {"Auth.ReadAudit",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::ReadAuditResponse resp;
         return v1::Auth::NewStub(Channel(c))->ReadAudit(&ctx, {}, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, DENIED, DENIED, UNAUTH, OK}},
      {"Auth.SetRetention",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::RetentionPolicy req, resp;
         req.set_project("proj");
         req.set_raw_days(3650);
         return v1::Auth::NewStub(Channel(c))->SetRetention(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, DENIED, OK, UNAUTH, OK}},
      {"Auth.GetRetention",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::GetRetentionRequest req;
         req.set_project("proj");
         v1::RetentionPolicy resp;
         return v1::Auth::NewStub(Channel(c))->GetRetention(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, DENIED, OK, UNAUTH, OK}},
      {"Auth.EnforceRetention",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::EnforceRetentionResponse resp;
         return v1::Auth::NewStub(Channel(c))
             ->EnforceRetention(&ctx, {}, &resp)
             .error_code();
       },
       {UNAUTH, DENIED, DENIED, DENIED, DENIED, UNAUTH, OK}},
      // Last: the project's admin deletes "proj" (its tokens stay valid),
      // after which a global admin finds nothing left to delete.
      {"Admin.DeleteProject",
       [&](Caller c) {
         grpc::ClientContext ctx;
         v1::DeleteProjectRequest req;
         req.set_project("proj");
         v1::DeleteResponse resp;
         return v1::Admin::NewStub(Channel(c))->DeleteProject(&ctx, req, &resp).error_code();
       },
       {UNAUTH, DENIED, DENIED, DENIED, OK, UNAUTH, NOT_FOUND}},
  };
  const Caller callers[] = {Caller::kNone,  Caller::kWrongProject, Caller::kRead,
                            Caller::kWrite, Caller::kAdmin,        Caller::kRevoked,
                            Caller::kGlobal};
  for (const Row& row : rows) {
    for (size_t i = 0; i < std::size(callers); ++i) {
      EXPECT_EQ(row.call(callers[i]), row.expected[i])
          << row.rpc << " as " << CallerName(callers[i]);
    }
  }
}

TEST_F(AuthServerTest, DenialsDoNotRevealOtherProjects) {
  // Reading a series of another project that exists and one that does not
  // gets the same answer.
  auto read = [&](const std::string& metric) {
    grpc::ClientContext ctx;
    v1::ReadRangeRequest req;
    FillKey("other", req.mutable_series());
    req.mutable_series()->set_metric(metric);
    auto reader = v1::Query::NewStub(Channel(Caller::kRead))->ReadRange(&ctx, req);
    v1::ReadRangeResponse resp;
    while (reader->Read(&resp)) {
    }
    return reader->Finish();
  };
  const grpc::Status existing = read("loss");
  const grpc::Status missing = read("no-such-metric");
  EXPECT_EQ(existing.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(existing.error_message(), missing.error_message());
  EXPECT_EQ(existing.error_code(), missing.error_code());
  EXPECT_THAT(existing.error_message(), Not(HasSubstr("not found")));
  // A project token lists only its own tokens.
  grpc::ClientContext ctx;
  v1::ListTokensRequest req;
  req.set_project("proj");
  v1::ListTokensResponse resp;
  ASSERT_TRUE(v1::Auth::NewStub(Channel(Caller::kAdmin))->ListTokens(&ctx, req, &resp).ok());
  for (const auto& t : resp.tokens()) EXPECT_EQ(t.project(), "proj");
}

TEST_F(AuthServerTest, StreamChecksEachProjectOnceAndRefsStayChecked) {
  grpc::ClientContext ctx;
  auto stream = v1::Ingest::NewStub(Channel(Caller::kWrite))->Write(&ctx);
  v1::WriteRequest first = Request("proj", 100, /*ref=*/1);
  first.set_seq(1);
  v1::WriteRequest foreign = Request("other", 100, /*ref=*/2);
  foreign.set_seq(2);
  v1::WriteRequest by_ref = Request("", 101, /*ref=*/1);
  by_ref.set_seq(3);
  v1::WriteRequest foreign_ref = Request("", 101, /*ref=*/2);
  foreign_ref.set_seq(4);
  for (const auto* r : {&first, &foreign, &by_ref, &foreign_ref}) {
    ASSERT_TRUE(stream->Write(*r));
  }
  stream->WritesDone();
  std::vector<v1::WriteAck> acks(4);
  for (auto& ack : acks) ASSERT_TRUE(stream->Read(&ack));
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(acks[0].error_code(), 0);
  EXPECT_EQ(acks[0].points_accepted(), 1u);
  EXPECT_EQ(acks[1].error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(acks[1].error_message(), HasSubstr("\"other\""));
  EXPECT_EQ(acks[2].error_code(), 0);
  EXPECT_EQ(acks[2].points_accepted(), 1u);
  // The denied request registered nothing: its ref is unknown.
  EXPECT_EQ(acks[3].error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AuthServerTest, RevokingATokenStopsItsOpenStream) {
  const std::string token = Create("proj", Scope::kWrite);
  auto channel = auth::MakeClientChannel("127.0.0.1:" + std::to_string(port_),
                                         grpc::InsecureChannelCredentials(), {},
                                         token);
  grpc::ClientContext ctx;
  auto stream = v1::Ingest::NewStub(channel)->Write(&ctx);
  v1::WriteRequest first = Request("proj", 500);
  first.set_seq(1);
  ASSERT_TRUE(stream->Write(first));
  v1::WriteAck ack;
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.error_code(), 0);
  std::string_view id, secret;
  ASSERT_TRUE(auth::ParseToken(token, &id, &secret));
  ASSERT_TRUE(authorizer_->tokens().Revoke(id).ok());
  v1::WriteRequest second = Request("proj", 501);
  second.set_seq(2);
  ASSERT_TRUE(stream->Write(second));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ack.points_accepted(), 0u);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(AuthServerTest, RateLimitedTokenIsRefusedPastItsAllowance) {
  auto created = authorizer_->tokens().Create("proj", Scope::kWrite, "", 1);
  ASSERT_TRUE(created.ok());
  auto channel = auth::MakeClientChannel("127.0.0.1:" + std::to_string(port_),
                                         grpc::InsecureChannelCredentials(), {},
                                         created->token);
  auto write = [&] {
    v1::WriteRequest req = Request("proj", next_step_);
    for (int i = 1; i < 5; ++i) {  // 5 points
      req.mutable_series(0)->add_steps(next_step_ + i);
      req.mutable_series(0)->add_values(1);
      req.mutable_series(0)->add_times_ms(1000 + next_step_ + i);
    }
    next_step_ += 5;
    grpc::ClientContext ctx;
    v1::WriteResponse resp;
    return v1::Ingest::NewStub(channel)->WriteOne(&ctx, req, &resp);
  };
  EXPECT_TRUE(write().ok());
  const grpc::Status refused = write();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("points/s"));
}

TEST_F(AuthServerTest, DenialsAndAdminActionsAreAudited) {
  EXPECT_EQ(WriteOne(Caller::kNone, "proj"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(WriteOne(Caller::kRead, "proj"), grpc::StatusCode::PERMISSION_DENIED);
  {
    grpc::ClientContext ctx;
    v1::CreateTokenRequest req;
    req.set_project("proj");
    req.set_scope(v1::SCOPE_WRITE);
    v1::CreateTokenResponse resp;
    ASSERT_TRUE(v1::Auth::NewStub(Channel(Caller::kAdmin))->CreateToken(&ctx, req, &resp).ok());
  }
  grpc::ClientContext ctx;
  v1::ReadAuditRequest req;
  req.set_verify(true);
  v1::ReadAuditResponse resp;
  ASSERT_TRUE(v1::Auth::NewStub(Channel(Caller::kGlobal))->ReadAudit(&ctx, req, &resp).ok());
  EXPECT_TRUE(resp.verified());
  EXPECT_TRUE(resp.intact()) << resp.verify_message();
  ASSERT_EQ(resp.entries_size(), 3);
  std::string_view read_id, admin_id, secret;
  auth::ParseToken(tokens_[Caller::kRead], &read_id, &secret);
  auth::ParseToken(tokens_[Caller::kAdmin], &admin_id, &secret);
  const v1::AuditEntry& anon = resp.entries(0);
  EXPECT_EQ(anon.token_id(), "anonymous");
  EXPECT_EQ(anon.rpc(), "Ingest.WriteOne");
  EXPECT_EQ(anon.outcome(), "unauthenticated");
  EXPECT_THAT(anon.peer(), HasSubstr("127.0.0.1"));
  const v1::AuditEntry& denied = resp.entries(1);
  EXPECT_EQ(denied.token_id(), read_id);
  EXPECT_EQ(denied.outcome(), "denied");
  EXPECT_EQ(denied.project(), "proj");
  EXPECT_EQ(denied.prev_hash(), anon.hash());
  const v1::AuditEntry& created = resp.entries(2);
  EXPECT_EQ(created.token_id(), admin_id);
  EXPECT_EQ(created.rpc(), "Auth.CreateToken");
  EXPECT_EQ(created.outcome(), "ok");
  EXPECT_THAT(created.detail(), HasSubstr("scope write"));
  EXPECT_GT(created.time_ms(), 0);
}

TEST_F(AuthServerTest, DeletionIsAuditedWithWhatWasDeleted) {
  {
    grpc::ClientContext ctx;
    v1::DeleteRunRequest req;
    req.set_project("proj");
    req.set_run("r");
    v1::DeleteResponse resp;
    ASSERT_TRUE(v1::Admin::NewStub(Channel(Caller::kAdmin))->DeleteRun(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.points(), 1u);
  }
  {
    // Refused deletions are audited too, and delete nothing.
    grpc::ClientContext ctx;
    v1::DeleteProjectRequest req;
    req.set_project("other");
    v1::DeleteResponse resp;
    EXPECT_EQ(v1::Admin::NewStub(Channel(Caller::kWrite))->DeleteProject(&ctx, req, &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  grpc::ClientContext ctx;
  v1::ReadAuditRequest req;
  req.set_verify(true);
  v1::ReadAuditResponse resp;
  ASSERT_TRUE(v1::Auth::NewStub(Channel(Caller::kGlobal))->ReadAudit(&ctx, req, &resp).ok());
  EXPECT_TRUE(resp.intact()) << resp.verify_message();
  std::string_view admin_id, secret;
  auth::ParseToken(tokens_[Caller::kAdmin], &admin_id, &secret);
  const v1::AuditEntry* deleted = nullptr;
  const v1::AuditEntry* refused = nullptr;
  for (const v1::AuditEntry& e : resp.entries()) {
    if (e.rpc() == "Admin.DeleteRun" && e.outcome() == "ok") deleted = &e;
    if (e.rpc() == "Admin.DeleteProject") refused = &e;
  }
  ASSERT_NE(deleted, nullptr);
  EXPECT_EQ(deleted->token_id(), admin_id);
  EXPECT_EQ(deleted->project(), "proj");
  EXPECT_THAT(deleted->detail(), HasSubstr("run \"r\""));
  EXPECT_THAT(deleted->detail(), HasSubstr("1 points"));
  ASSERT_NE(refused, nullptr);
  EXPECT_EQ(refused->outcome(), "denied");
  EXPECT_EQ(refused->project(), "other");
  // "other" is untouched.
  bool truncated = false;
  storage::SeriesFilter other{"other", std::nullopt, std::nullopt, {}, {}};
  EXPECT_EQ(engine_->ListSeries(other, 0, &truncated).size(), 1u);
  storage::SeriesFilter proj{"proj", std::nullopt, std::nullopt, {}, {}};
  EXPECT_TRUE(engine_->ListSeries(proj, 0, &truncated).empty());
}

}  // namespace
}  // namespace stepdb
