// End to end through the binaries a newcomer uses: `stepdb` and `stepctl`
// (import a line-protocol file, query it back exactly, list, stats), plus
// the HTTP side port.
#include <httplib.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

using testing::CommandResult;
using testing::RunCommand;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.Start()); }

  std::string Stepctl(const std::string& args) {
    return testing::BinaryDir() + "/stepctl --addr " + server_.address() + " " + args;
  }

  testing::TempDir dir_;
  testing::ServerProcess server_{dir_.path() + "/data"};
};

TEST_F(CliTest, ImportedLineProtocolQueriesBackExactly) {
  // Values that stress a text round trip: random bit patterns, float32
  // widened, extremes, subnormals, -0.0, NaN and infinities.
  std::mt19937_64 rng(42);
  std::vector<double> values;
  for (int i = 0; i < 400; ++i) {
    double v;
    do {
      v = std::bit_cast<double>(rng());
    } while (std::isnan(v));
    values.push_back(v);
    values.push_back(static_cast<double>(static_cast<float>(i * 0.37 + 0.001)));
  }
  values.insert(values.end(),
                {-0.0, 0.0, std::numeric_limits<double>::denorm_min(),
                 std::numeric_limits<double>::max(),
                 -std::numeric_limits<double>::max(), 1e-310,
                 std::numeric_limits<double>::infinity(),
                 -std::numeric_limits<double>::infinity(),
                 std::numeric_limits<double>::quiet_NaN()});
  const std::string file = dir_.path() + "/metrics.lp";
  {
    std::ofstream out(file);
    out << "# exported from a training job\n";
    for (size_t i = 0; i < values.size(); ++i) {
      char v[64];
      if (std::isnan(values[i])) {
        snprintf(v, sizeof v, "nan");
      } else if (std::isinf(values[i])) {
        snprintf(v, sizeof v, "%sinf", values[i] < 0 ? "-" : "");
      } else {
        snprintf(v, sizeof v, "%.17g", values[i]);
      }
      // Timestamps in ns, one every ~500 ms.
      out << "train,run=r1,node=n\\ 1 loss=" << v << ",step=" << i << "i "
          << (1'700'000'000'000 + 500 * static_cast<int64_t>(i)) * 1'000'000 << "\n";
    }
    out << "train,run=r1,node=n\\ 1 loss=\"oops\",step=99999i 1\n";  // malformed
  }
  CommandResult import = RunCommand(Stepctl("import --project p --format influx " + file));
  EXPECT_EQ(import.exit_code, 1);  // one malformed line was skipped
  EXPECT_THAT(import.out, HasSubstr("points imported: " + std::to_string(values.size())));

  CommandResult query = RunCommand(Stepctl(
      "query --project p --run r1 --metric train_loss --label 'node=n 1' --format csv"));
  ASSERT_EQ(query.exit_code, 0);
  std::vector<std::string> lines = absl::StrSplit(query.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), values.size() + 1);
  EXPECT_EQ(lines[0], "step,time,value");
  for (size_t i = 0; i < values.size(); ++i) {
    std::vector<std::string> cols = absl::StrSplit(lines[i + 1], ',');
    ASSERT_EQ(cols.size(), 3u) << lines[i + 1];
    EXPECT_EQ(cols[0], std::to_string(i));
    EXPECT_EQ(cols[1], std::to_string(1'700'000'000'000 + 500 * static_cast<int64_t>(i)));
    const double got = std::strtod(cols[2].c_str(), nullptr);
    if (std::isnan(values[i])) {
      EXPECT_TRUE(std::isnan(got));
    } else {
      EXPECT_EQ(std::bit_cast<uint64_t>(got), std::bit_cast<uint64_t>(values[i]))
          << "line " << i + 2 << ": " << cols[2];
    }
  }

  // A step range and a limit.
  query = RunCommand(Stepctl("query --project p --run r1 --metric train_loss "
                      "--label 'node=n 1' --from-step 10 --to-step 14 --format csv"));
  lines = absl::StrSplit(query.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(lines[1].substr(0, 3), "10,");

  CommandResult series = RunCommand(Stepctl("series --project p --format csv"));
  EXPECT_EQ(series.exit_code, 0);
  EXPECT_THAT(series.out, HasSubstr("train_loss"));

  // Importing the same file again is an idempotent retry.
  import = RunCommand(Stepctl("import --project p --format influx " + file));
  EXPECT_THAT(import.out, HasSubstr("duplicates:      " + std::to_string(values.size())));
  EXPECT_THAT(import.out, HasSubstr("rejected:        0"));

  ASSERT_EQ(RunCommand(Stepctl("admin compact")).exit_code, 0);
  CommandResult stats = RunCommand(Stepctl("admin stats"));
  EXPECT_THAT(stats.out, HasSubstr("\"points\": " + std::to_string(values.size())));
  EXPECT_THAT(stats.out, HasSubstr("\"head_points\": 0"));
}

TEST_F(CliTest, WriteConflictsAreReportedAndHealthAndMetricsServe) {
  CommandResult w = RunCommand(Stepctl(
      "write --project p --run r --metric loss --point 1:0.5 --point 2:0.25"));
  EXPECT_EQ(w.exit_code, 0);
  w = RunCommand(Stepctl("write --project p --run r --metric loss --step 1 --value 9"));
  EXPECT_EQ(w.exit_code, 1);  // step 1 already has another value

  httplib::Client http("127.0.0.1", server_.http_port());
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("stepdb_points_accepted_total 2\n"));
  EXPECT_THAT(metrics->body, HasSubstr("stepdb_points_rejected_total 1\n"));
  EXPECT_THAT(metrics->body, HasSubstr("# TYPE stepdb_series gauge"));
  // The memory gauges read the live process and RocksDB: the points just
  // written sit in a memtable.
  EXPECT_THAT(
      metrics->body,
      ContainsRegex("\nprocess_resident_memory_bytes [1-9][0-9]{6,}\n"));
  EXPECT_THAT(metrics->body,
              ContainsRegex("\nstepdb_rocksdb_memtable_bytes [1-9][0-9]*\n"));
  // Both writes were acked and timed (the second stored nothing: its one
  // point was rejected); the first one's group commit was timed too.
  EXPECT_THAT(metrics->body, HasSubstr("# TYPE stepdb_ingest_ack_seconds histogram\n"));
  EXPECT_THAT(metrics->body, HasSubstr("\nstepdb_ingest_ack_seconds_bucket{le=\"+Inf\"} 2\n"));
  EXPECT_THAT(metrics->body, HasSubstr("\nstepdb_ingest_ack_seconds_count 2\n"));
  EXPECT_THAT(metrics->body,
              ContainsRegex("\nstepdb_group_write_seconds_count [1-9][0-9]*\n"));
  EXPECT_THAT(metrics->body,
              HasSubstr("\nstepdb_group_write_seconds_bucket{le=\"0.0005\"} "));
  EXPECT_THAT(metrics->body, HasSubstr("\nstepdb_ingest_read_waits_total 0\n"));
  // Flushes and compactions of an idle server are paced at the floor.
  EXPECT_THAT(metrics->body,
              HasSubstr("\nstepdb_background_write_limit_bytes_per_second 33554432\n"));
#ifdef STEPDB_SERVER_JEMALLOC
  // jemalloc's own view: what it handed out, what it holds resident (more),
  // and of that what it keeps freed for reuse.
  EXPECT_THAT(metrics->body,
              ContainsRegex("\nstepdb_allocator_allocated_bytes [1-9][0-9]{5,}\n"));
  EXPECT_THAT(metrics->body,
              ContainsRegex("\nstepdb_allocator_resident_bytes [1-9][0-9]{5,}\n"));
  EXPECT_THAT(metrics->body,
              ContainsRegex("\nstepdb_allocator_dirty_bytes [0-9]+\n"));
#endif
}

TEST_F(CliTest, AggregateAcrossSeriesAsCsv) {
  // Two runs x two GPUs; gpu 1 of run b logs a NaN at step 2.
  for (const std::string run : {"a", "b"}) {
    for (int gpu = 0; gpu < 2; ++gpu) {
      const std::string nan = run == "b" && gpu == 1 ? "nan" : "4";
      ASSERT_EQ(RunCommand(Stepctl(absl::StrCat(
                    "write --project p --run ", run,
                    " --metric gpu/util --label node=n1 --label gpu=", gpu,
                    " --point 0:", gpu * 10, " --point 1:2 --point 2:", nan,
                    " --point 3:6")))
                    .exit_code,
                0);
    }
  }
  CommandResult agg = RunCommand(Stepctl(
      "agg --project p --metric gpu/util --match 'node=~n.' --match 'gpu!=7' "
      "--group-by run --group-by node --fn mean --buckets 2 --steps 0:3 "
      "--format csv"));
  ASSERT_EQ(agg.exit_code, 0);
  // Buckets [0, 1] and [2, 3]; per run, the mean of the GPUs' means:
  // run a: (1 + 6) / 2 = 3.5 and (5 + 5) / 2 = 5; run b: 3.5 and (5 + 6) / 2.
  EXPECT_EQ(agg.out,
            "group,bucket_start,bucket_end,value,series,nan_count,"
            "pos_inf_count,neg_inf_count\n"
            "\"run=a,node=n1\",0,1.999999,3.5,2,0,0,0\n"
            "\"run=a,node=n1\",2,3,5,2,0,0,0\n"
            "\"run=b,node=n1\",0,1.999999,3.5,2,0,0,0\n"
            "\"run=b,node=n1\",2,3,5.5,2,1,0,0\n");
  // A bad regex is the server's INVALID_ARGUMENT; a bad matcher a usage error.
  EXPECT_EQ(RunCommand(Stepctl("agg --project p --metric gpu/util --fn max "
                               "--buckets 2 --match 'gpu=~('"))
                .exit_code,
            1);
  EXPECT_EQ(RunCommand(Stepctl("agg --project p --metric gpu/util --fn max "
                               "--buckets 2 --match gpu"))
                .exit_code,
            2);
  CommandResult series = RunCommand(
      Stepctl("series --project p --match 'gpu!~0' --format csv"));
  EXPECT_EQ(series.exit_code, 0);
  EXPECT_THAT(series.out, HasSubstr("a,gpu/util,\"gpu=1,node=n1\""));
  EXPECT_THAT(series.out, ::testing::Not(HasSubstr("gpu=0")));
}

TEST_F(CliTest, UnreachableServerIsAClearError) {
  CommandResult r = RunCommand(testing::BinaryDir() +
                        "/stepctl --addr 127.0.0.1:1 --timeout 2 series --project p 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("UNAVAILABLE"));
}

TEST_F(CliTest, RunsAreCreatedFilteredShownAndForked) {
  CommandResult c = RunCommand(Stepctl(
      "runs create --project p base --param lr=0.001 --param model=resnet50 "
      "--param amp=true --tag baseline --commit abc123 --format json"));
  ASSERT_EQ(c.exit_code, 0) << c.out;
  EXPECT_THAT(c.out, HasSubstr("\"state\": \"running\""));
  EXPECT_THAT(c.out, HasSubstr("\"amp\":true,\"lr\":0.001,\"model\":\"resnet50\""));
  ASSERT_EQ(RunCommand(Stepctl("runs create --project p other --param lr=0.1")).exit_code, 0);
  ASSERT_EQ(RunCommand(Stepctl("write --project p --run base --metric loss "
                               "--point 1:0.5 --point 2:0.25 --point 3:0.125"))
                .exit_code,
            0);
  ASSERT_EQ(RunCommand(Stepctl("runs create --project p fork --fork-parent base "
                               "--fork-step 2"))
                .exit_code,
            0);
  ASSERT_EQ(RunCommand(Stepctl("write --project p --run fork --metric loss --point 3:7"))
                .exit_code,
            0);

  CommandResult list = RunCommand(
      Stepctl("runs list --project p --filter 'lr < 1e-2' --format csv"));
  ASSERT_EQ(list.exit_code, 0);
  std::vector<std::string> lines = absl::StrSplit(list.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << list.out;
  EXPECT_EQ(lines[1].substr(0, 5), "base,");

  CommandResult bad = RunCommand(Stepctl("runs list --project p --filter 'lr <'"));
  EXPECT_EQ(bad.exit_code, 1);

  CommandResult update = RunCommand(
      Stepctl("runs update --project p base --state finished --format csv"));
  ASSERT_EQ(update.exit_code, 0);
  EXPECT_THAT(update.out, HasSubstr("state,finished"));

  CommandResult show = RunCommand(Stepctl("runs show --project p fork --format csv"));
  ASSERT_EQ(show.exit_code, 0);
  EXPECT_THAT(show.out, HasSubstr("fork_parent,base"));
  // The fork reads the parent's steps 1-2, then its own step 3.
  EXPECT_THAT(show.out, HasSubstr("loss,,3,3,7,0.25,7"));
  CommandResult query = RunCommand(
      Stepctl("query --project p --run fork --metric loss --format csv"));
  lines = absl::StrSplit(query.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << query.out;
  EXPECT_EQ(lines[1].substr(0, 2), "1,");
  EXPECT_EQ(lines[3].substr(0, 2), "3,");
  EXPECT_EQ(lines[3].substr(lines[3].size() - 2), ",7");
}

TEST_F(CliTest, DeleteRunNeedsConfirmationThenDeletes) {
  ASSERT_EQ(RunCommand(Stepctl("write --project p --run gone --metric loss "
                               "--point 1:0.5 --point 2:0.25"))
                .exit_code,
            0);
  ASSERT_EQ(RunCommand(Stepctl("write --project p --run kept --metric loss --point 1:1"))
                .exit_code,
            0);
  // Not a terminal and no --yes: refused, nothing deleted.
  CommandResult refused =
      RunCommand(Stepctl("admin delete-run --project p --run gone < /dev/null"));
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_THAT(RunCommand(Stepctl("series --project p")).out, HasSubstr("gone"));

  CommandResult deleted = RunCommand(
      Stepctl("admin delete-run --project p --run gone --yes --format json"));
  ASSERT_EQ(deleted.exit_code, 0) << deleted.out;
  EXPECT_THAT(deleted.out, HasSubstr("\"points\": 2"));
  const std::string series = RunCommand(Stepctl("series --project p")).out;
  EXPECT_THAT(series, ::testing::Not(HasSubstr("gone")));
  EXPECT_THAT(series, HasSubstr("kept"));
  // Again: nothing left to delete.
  EXPECT_EQ(RunCommand(Stepctl("admin delete-run --project p --run gone --yes")).exit_code, 1);

  EXPECT_EQ(RunCommand(Stepctl("admin delete-project --project p --yes")).exit_code, 0);
  EXPECT_THAT(RunCommand(Stepctl("series --project p")).out,
              ::testing::Not(HasSubstr("kept")));
}

TEST_F(CliTest, TailPrintsPointsAsTheyAreWritten) {
  ASSERT_EQ(RunCommand(Stepctl("write --project p --run r --metric loss "
                               "--point 1:0.5 --point 2:0.25"))
                .exit_code,
            0);
  // Resume after step 1, then two live points: --count 3 ends the tail.
  const std::string out = dir_.path() + "/tail.csv";
  const std::string tail = Stepctl("tail --project p --metric loss --after 1 --count 3 "
                                   "--format csv > " + out + " &");
  ASSERT_EQ(std::system(tail.c_str()), 0);
  std::string text;
  for (int i = 0; i < 100; ++i) {
    RunCommand(Stepctl("write --project p --run r --metric loss --point " +
                       std::to_string(3 + i) + ":1"));
    std::ifstream in(out);
    std::stringstream buf;
    buf << in.rdbuf();
    text = buf.str();
    if (std::count(text.begin(), text.end(), '\n') >= 4) break;
  }
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 4u) << text;
  EXPECT_EQ(lines[0], "run,metric,labels,step,time_ms,value");
  EXPECT_THAT(lines[1], HasSubstr(",2,"));
  EXPECT_THAT(lines[2], HasSubstr(",3,"));
}

// The load generator's figures are only as good as its bookkeeping: every
// point it counts must be acked and queryable, and a rerun of the same run
// must come back as duplicates, not as new points or rejections.
TEST_F(CliTest, LoadgenPointsAllLandAndARerunIsDuplicates) {
  // 2 nodes x 2 GPUs x 3 metrics = 12 series of 100 steps, in 5 requests
  // per stream, paced and spread like the documented fixed-rate runs. A
  // hang (a stream that never reaches the start gate) fails, not blocks.
  const std::string loadgen =
      "timeout 60 " + testing::BinaryDir() + "/stepdb-loadgen --addr " +
      server_.address() +
      " --project lg --run r --nodes 2 --gpus 2 --metrics 3 --steps 100"
      " --batch-steps 20 --streams 2 --window 2 --step-rate 1000"
      " --spread-flushes --warmup 0";
  CommandResult first = RunCommand(loadgen);
  ASSERT_EQ(first.exit_code, 0);
  EXPECT_THAT(first.out, ContainsRegex("\"points\":1200[,}]"));
  EXPECT_THAT(first.out, ContainsRegex("\"requests\":10[,}]"));
  EXPECT_THAT(first.out, ContainsRegex("\"errors\":0[,}]"));
  EXPECT_THAT(first.out, ContainsRegex("\"rejected_points\":0[,}]"));
  EXPECT_THAT(first.out, ContainsRegex("\"duplicate_points\":0[,}]"));

  CommandResult series = RunCommand(Stepctl("series --project lg --format csv"));
  ASSERT_EQ(series.exit_code, 0);
  std::vector<std::string> lines = absl::StrSplit(series.out, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 13u) << series.out;  // header + 12 series

  // One rank's loss (metric m0) holds steps 0..99, in order.
  CommandResult query = RunCommand(Stepctl(
      "query --project lg --run r --metric m0 --label node=n1 --label gpu=0 "
      "--format csv"));
  ASSERT_EQ(query.exit_code, 0);
  lines = absl::StrSplit(query.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 101u) << query.out;
  EXPECT_EQ(lines[1].substr(0, 2), "0,");
  EXPECT_EQ(lines[100].substr(0, 3), "99,");

  CommandResult again = RunCommand(loadgen);
  ASSERT_EQ(again.exit_code, 0);
  EXPECT_THAT(again.out, ContainsRegex("\"duplicate_points\":1200[,}]"));
  EXPECT_THAT(again.out, ContainsRegex("\"rejected_points\":0[,}]"));
  CommandResult stats = RunCommand(Stepctl("admin stats"));
  EXPECT_THAT(stats.out, ContainsRegex("\"points\": 1200[,\n]"));

  // No steps is a usage error, not a wait for streams that never start.
  CommandResult none = RunCommand("timeout 60 " + testing::BinaryDir() +
                                  "/stepdb-loadgen --addr " + server_.address() +
                                  " --steps 0");
  EXPECT_EQ(none.exit_code, 2);
}

}  // namespace
}  // namespace stepdb
