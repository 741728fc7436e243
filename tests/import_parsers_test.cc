#include "cli/import_parsers.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace stepdb::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

constexpr int64_t kNow = 1700000000123;

ImportDefaults Defaults(std::string run = "") {
  ImportDefaults d;
  d.run = std::move(run);
  d.now_ms = kNow;
  return d;
}

// Parses a line that must be valid.
std::vector<ParsedPoint> Influx(std::string_view line,
                                const ImportDefaults& d = Defaults()) {
  std::vector<ParsedPoint> out;
  absl::Status st = ParseInfluxLine(line, d, &out);
  EXPECT_TRUE(st.ok()) << line << ": " << st;
  return out;
}

// Parses a line that must be malformed; returns the reason.
std::string InfluxError(std::string_view line,
                        const ImportDefaults& d = Defaults("r")) {
  std::vector<ParsedPoint> out;
  absl::Status st = ParseInfluxLine(line, d, &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << line;
  EXPECT_TRUE(out.empty()) << line;
  return Msg(st);
}

// ---- ParseStep / FormatStep -------------------------------------------------

TEST(ParseStep, WholeAndFractional) {
  EXPECT_EQ(*ParseStep("0"), (Step{0, 0}));
  EXPECT_EQ(*ParseStep("12"), (Step{12, 0}));
  EXPECT_EQ(*ParseStep("12.5"), (Step{12, 500000}));
  EXPECT_EQ(*ParseStep("12.50"), (Step{12, 500000}));
  EXPECT_EQ(*ParseStep("0.000001"), (Step{0, 1}));
  EXPECT_EQ(*ParseStep("3.999999"), (Step{3, 999999}));
  EXPECT_EQ(*ParseStep("12.000000"), (Step{12, 0}));
  EXPECT_EQ(*ParseStep("007"), (Step{7, 0}));
  EXPECT_EQ(*ParseStep("9223372036854775807"),
            (Step{std::numeric_limits<int64_t>::max(), 0}));
  EXPECT_EQ(*ParseStep("9223372036854775807.999999"),
            (Step{std::numeric_limits<int64_t>::max(), 999999}));
}

TEST(ParseStep, ExactWhereDoubleIsNot) {
  // 0.1 + 0.2 style errors and 2^53 + 1 must not creep in.
  EXPECT_EQ(*ParseStep("0.3"), (Step{0, 300000}));
  EXPECT_EQ(*ParseStep("9007199254740993"), (Step{9007199254740993, 0}));
  EXPECT_EQ(*ParseStep("9007199254740993.000001"), (Step{9007199254740993, 1}));
}

TEST(ParseStep, Rejects) {
  EXPECT_THAT(Msg(ParseStep("-1").status()), HasSubstr("non-negative"));
  EXPECT_THAT(Msg(ParseStep("-0.5").status()), HasSubstr("non-negative"));
  EXPECT_THAT(Msg(ParseStep("1.0000001").status()),
              HasSubstr("more than 6 fractional digits"));
  EXPECT_THAT(Msg(ParseStep("9223372036854775808").status()),
              HasSubstr("out of range"));
  for (const char* bad : {"", ".", "1.", ".5", "+1", "1e3", "1,5", " 1", "1 ",
                          "0x10", "abc", "1.2.3", "nan", "inf"}) {
    EXPECT_EQ(ParseStep(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << "\"" << bad << "\"";
  }
}

TEST(FormatStep, ShortestExact) {
  EXPECT_EQ(FormatStep(12, 0), "12");
  EXPECT_EQ(FormatStep(12, 500000), "12.5");
  EXPECT_EQ(FormatStep(0, 1), "0.000001");
  EXPECT_EQ(FormatStep(0, 0), "0");
  EXPECT_EQ(FormatStep(7, 120000), "7.12");
  EXPECT_EQ(FormatStep(7, 999999), "7.999999");
  EXPECT_EQ(FormatStep(Step{std::numeric_limits<int64_t>::max(), 10}),
            "9223372036854775807.00001");
}

TEST(FormatStep, RoundTripsThroughParseStep) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 10000; ++i) {
    Step s{static_cast<int64_t>(rng() >> (1 + rng() % 63)),
           static_cast<uint32_t>(i % 3 == 0 ? 0 : rng() % 1000000)};
    absl::StatusOr<Step> back = ParseStep(FormatStep(s));
    ASSERT_TRUE(back.ok()) << FormatStep(s);
    EXPECT_EQ(*back, s);
  }
}

// ---- ParseValue / FormatValue ---------------------------------------------

TEST(ParseValue, Numbers) {
  EXPECT_EQ(*ParseValue("1"), 1.0);
  EXPECT_EQ(*ParseValue("-2.5"), -2.5);
  EXPECT_EQ(*ParseValue("+4E+2"), 400.0);
  EXPECT_EQ(*ParseValue(".5"), 0.5);
  EXPECT_EQ(*ParseValue("5."), 5.0);
  EXPECT_EQ(*ParseValue("1e-3"), 0.001);
  EXPECT_EQ(*ParseValue("0.1"), 0.1);
  EXPECT_EQ(*ParseValue("1.7976931348623157e308"),
            std::numeric_limits<double>::max());
  EXPECT_EQ(*ParseValue("5e-324"), std::numeric_limits<double>::denorm_min());
  EXPECT_TRUE(std::signbit(*ParseValue("-0")));
}

TEST(ParseValue, NanAndInfinities) {
  for (const char* s : {"nan", "NaN", "NAN", "-nan", "+NaN"}) {
    EXPECT_TRUE(std::isnan(*ParseValue(s))) << s;
  }
  for (const char* s : {"inf", "Inf", "INF", "+inf", "infinity", "Infinity"}) {
    EXPECT_EQ(*ParseValue(s), std::numeric_limits<double>::infinity()) << s;
  }
  for (const char* s : {"-inf", "-INF", "-Infinity"}) {
    EXPECT_EQ(*ParseValue(s), -std::numeric_limits<double>::infinity()) << s;
  }
}

TEST(ParseValue, Rejects) {
  EXPECT_THAT(Msg(ParseValue("1e400").status()), HasSubstr("range"));
  EXPECT_THAT(Msg(ParseValue("-1e400").status()), HasSubstr("range"));
  for (const char* bad :
       {"", "-", "+", ".", "e5", "1e", "1e+", "abc", "1,5", " 1", "1 ", "0x1p3",
        "1.2.3", "--1", "nana", "infi", "1f", "12i", "true"}) {
    EXPECT_EQ(ParseValue(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << "\"" << bad << "\"";
  }
}

TEST(FormatValue, Shortest) {
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1.0), "1");
  EXPECT_EQ(FormatValue(-2.5), "-2.5");
  EXPECT_EQ(FormatValue(100.0), "100");
  EXPECT_EQ(FormatValue(1e21), "1e+21");
  EXPECT_EQ(FormatValue(-0.0), "-0");
  EXPECT_EQ(FormatValue(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::denorm_min()), "5e-324");
}

TEST(FormatValue, NanAndInfinities) {
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-inf");
  EXPECT_TRUE(std::isnan(*ParseValue(FormatValue(NAN))));
  EXPECT_EQ(*ParseValue(FormatValue(INFINITY)), INFINITY);
  EXPECT_EQ(*ParseValue(FormatValue(-INFINITY)), -INFINITY);
}

TEST(FormatValue, RoundTripsRandomBitPatterns) {
  std::mt19937_64 rng(7);
  int tested = 0;
  while (tested < 200000) {
    const double x = std::bit_cast<double>(rng());
    if (std::isnan(x)) continue;
    ++tested;
    const std::string text = FormatValue(x);
    absl::StatusOr<double> back = ParseValue(text);
    ASSERT_TRUE(back.ok()) << text;
    ASSERT_EQ(std::bit_cast<uint64_t>(*back), std::bit_cast<uint64_t>(x))
        << text;
    // strtod, what scripts reading our CSV use, agrees.
    ASSERT_EQ(std::bit_cast<uint64_t>(std::strtod(text.c_str(), nullptr)),
              std::bit_cast<uint64_t>(x))
        << text;
  }
}

TEST(FormatValue, RoundTripsTrainingLikeValues) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> loss(0.0, 10.0);
  for (int i = 0; i < 100000; ++i) {
    double x = loss(rng);
    if (i % 2 == 0) x = static_cast<float>(x);  // float32 values widened
    if (i % 5 == 0) x = std::round(x * 1000) / 1000;
    const std::string text = FormatValue(x);
    ASSERT_EQ(std::bit_cast<uint64_t>(*ParseValue(text)),
              std::bit_cast<uint64_t>(x))
        << text;
  }
  // Subnormals, extremes and powers of two.
  for (double x :
       {std::numeric_limits<double>::min(), std::numeric_limits<double>::max(),
        std::numeric_limits<double>::lowest(),
        std::numeric_limits<double>::denorm_min(),
        std::numeric_limits<double>::epsilon(), 0x1p-1060, 0x1p52, 0x1p53 + 2,
        123456789.0 / 7.0}) {
    ASSERT_EQ(std::bit_cast<uint64_t>(*ParseValue(FormatValue(x))),
              std::bit_cast<uint64_t>(x))
        << FormatValue(x);
  }
}

// ---- ParseInt64 / NanosToMillisFloor ----------------------------------------

TEST(ParseInt64, Basics) {
  EXPECT_EQ(*ParseInt64("0"), 0);
  EXPECT_EQ(*ParseInt64("-12"), -12);
  EXPECT_EQ(*ParseInt64("9223372036854775807"),
            std::numeric_limits<int64_t>::max());
  EXPECT_EQ(*ParseInt64("-9223372036854775808"),
            std::numeric_limits<int64_t>::min());
  EXPECT_THAT(Msg(ParseInt64("9223372036854775808").status()),
              HasSubstr("out of range"));
  for (const char* bad : {"", "-", "+1", "1.0", "1e3", " 1", "abc", "--1"}) {
    EXPECT_FALSE(ParseInt64(bad).ok()) << bad;
  }
}

TEST(NanosToMillisFloor, FloorsTowardsMinusInfinity) {
  EXPECT_EQ(NanosToMillisFloor(0), 0);
  EXPECT_EQ(NanosToMillisFloor(999999), 0);
  EXPECT_EQ(NanosToMillisFloor(1000000), 1);
  EXPECT_EQ(NanosToMillisFloor(1700000000123456789), 1700000000123);
  EXPECT_EQ(NanosToMillisFloor(-1), -1);
  EXPECT_EQ(NanosToMillisFloor(-999999), -1);
  EXPECT_EQ(NanosToMillisFloor(-1000000), -1);
  EXPECT_EQ(NanosToMillisFloor(-1000001), -2);
  EXPECT_EQ(NanosToMillisFloor(std::numeric_limits<int64_t>::min()),
            -9223372036855);
  EXPECT_EQ(NanosToMillisFloor(std::numeric_limits<int64_t>::max()),
            9223372036854);
}

// ---- InfluxDB line protocol -------------------------------------------------

TEST(Influx, BasicLine) {
  auto pts = Influx(
      "train,run=r1,node=n12,gpu=3 loss=0.25,lr=1e-4,step=100i "
      "1700000000123456789");
  ASSERT_EQ(pts.size(), 2u);
  EXPECT_EQ(pts[0].run, "r1");
  EXPECT_EQ(pts[0].metric, "train_loss");
  EXPECT_THAT(pts[0].labels,
              ElementsAre(Pair("gpu", "3"), Pair("node", "n12")));
  EXPECT_TRUE(pts[0].has_step);
  EXPECT_EQ(pts[0].step, (Step{100, 0}));
  EXPECT_EQ(pts[0].time_ms, 1700000000123);
  EXPECT_EQ(pts[0].value, 0.25);
  EXPECT_EQ(pts[1].metric, "train_lr");
  EXPECT_EQ(pts[1].value, 1e-4);
  EXPECT_EQ(pts[1].step, (Step{100, 0}));
  EXPECT_EQ(pts[1].labels, pts[0].labels);
}

TEST(Influx, RunFromDefaultsAndMissingRun) {
  auto pts = Influx("m f=1", Defaults("fallback"));
  ASSERT_EQ(pts.size(), 1u);
  EXPECT_EQ(pts[0].run, "fallback");
  EXPECT_TRUE(pts[0].labels.empty());
  // The tag wins over --run.
  pts = Influx("m,run=tagged f=1", Defaults("fallback"));
  EXPECT_EQ(pts[0].run, "tagged");
  EXPECT_THAT(InfluxError("m f=1", Defaults("")), HasSubstr("no run"));
}

TEST(Influx, NoTimestampMeansNow) {
  auto pts = Influx("m,run=r f=1");
  ASSERT_EQ(pts.size(), 1u);
  EXPECT_EQ(pts[0].time_ms, kNow);
  EXPECT_FALSE(pts[0].has_step);
}

TEST(Influx, NegativeTimestampFloors) {
  EXPECT_EQ(Influx("m,run=r f=1 -1")[0].time_ms, -1);
  EXPECT_EQ(Influx("m,run=r f=1 -1000000")[0].time_ms, -1);
  EXPECT_EQ(Influx("m,run=r f=1 -1500000")[0].time_ms, -2);
  EXPECT_EQ(Influx("m,run=r f=1 1999999")[0].time_ms, 1);
  EXPECT_EQ(Influx("m,run=r f=1 0")[0].time_ms, 0);
}

TEST(Influx, FieldTypes) {
  auto pts = Influx(
      "m,run=r a=1.5,b=-3i,c=7u,d=t,e=T,f=true,g=True,h=TRUE,i=f,j=F,k=false,"
      "l=False,m=FALSE,n=2.5e3,o=-1E-2,p=10,q=NaN,s=-inf 1");
  std::vector<double> want = {1.5, -3, 7, 1, 1, 1,    1,     1,
                              0,   0,  0, 0, 0, 2500, -0.01, 10};
  ASSERT_EQ(pts.size(), want.size() + 2);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(pts[i].value, want[i]) << pts[i].metric;
  }
  EXPECT_EQ(pts[0].metric, "m_a");
  EXPECT_EQ(pts[12].metric, "m_m");
  EXPECT_TRUE(std::isnan(pts[16].value));
  EXPECT_EQ(pts[17].value, -INFINITY);
  EXPECT_EQ(Influx("m,run=r big=9223372036854775807i")[0].value, 0x1p63);
  EXPECT_EQ(Influx("m,run=r big=18446744073709551615u")[0].value, 0x1p64);
}

TEST(Influx, StringFieldsAreRejected) {
  EXPECT_THAT(InfluxError("m,run=r msg=\"hello world\",f=1"),
              HasSubstr("string"));
  EXPECT_THAT(InfluxError("m,run=r f=1,msg=\"a \\\"quoted\\\" b\""),
              HasSubstr("\"msg\" is a string"));
  EXPECT_THAT(InfluxError("m,run=r msg=\"unterminated"),
              HasSubstr("unterminated string"));
}

TEST(Influx, BadNumbers) {
  EXPECT_THAT(InfluxError("m,run=r f=abc"), HasSubstr("field \"f\""));
  EXPECT_THAT(InfluxError("m,run=r f=1.5i"), HasSubstr("not an integer"));
  EXPECT_THAT(InfluxError("m,run=r f=-1u"), HasSubstr("unsigned"));
  EXPECT_THAT(InfluxError("m,run=r f=99999999999999999999i"),
              HasSubstr("out of range"));
  EXPECT_THAT(InfluxError("m,run=r f=1e999"), HasSubstr("range"));
  EXPECT_THAT(InfluxError("m,run=r f=1 12abc"), HasSubstr("timestamp"));
  EXPECT_THAT(InfluxError("m,run=r f=1 1.5"), HasSubstr("timestamp"));
  EXPECT_THAT(InfluxError("m,run=r f=1 99999999999999999999"),
              HasSubstr("timestamp"));
  EXPECT_THAT(InfluxError("m,run=r f=1 1 2"), HasSubstr("after the timestamp"));
  EXPECT_THAT(InfluxError("m,run=r f="), HasSubstr("empty value"));
  EXPECT_THAT(InfluxError("m,run=r f=,g=1"), HasSubstr("empty value"));
}

TEST(Influx, StepField) {
  auto pts = Influx("m,run=r loss=1,step=42i");
  ASSERT_EQ(pts.size(), 1u);
  EXPECT_EQ(pts[0].metric, "m_loss");
  EXPECT_EQ(pts[0].step, (Step{42, 0}));
  // The step field may come first and be unsigned.
  pts = Influx("m,run=r step=7u,loss=1");
  EXPECT_EQ(pts[0].step, (Step{7, 0}));
  // Untyped (float) steps are taken exactly from their digits.
  pts = Influx("m,run=r step=12.5,loss=1");
  EXPECT_EQ(pts[0].step, (Step{12, 500000}));
  pts = Influx("m,run=r step=3,loss=1");
  EXPECT_EQ(pts[0].step, (Step{3, 0}));

  EXPECT_THAT(InfluxError("m,run=r step=-1i,loss=1"),
              HasSubstr("non-negative"));
  EXPECT_THAT(InfluxError("m,run=r step=1.0000001,loss=1"),
              HasSubstr("6 fractional digits"));
  EXPECT_THAT(InfluxError("m,run=r step=1e3,loss=1"), HasSubstr("step"));
  EXPECT_THAT(InfluxError("m,run=r step=t,loss=1"), HasSubstr("boolean"));
  EXPECT_THAT(InfluxError("m,run=r step=\"3\",loss=1"), HasSubstr("string"));
  EXPECT_THAT(InfluxError("m,run=r step=9223372036854775808u,loss=1"),
              HasSubstr("out of range"));
  EXPECT_THAT(InfluxError("m,run=r step=1i"), HasSubstr("no metric fields"));
  EXPECT_THAT(InfluxError("m,run=r step=1i,step=2i,loss=1"),
              HasSubstr("twice"));
}

TEST(Influx, Escaping) {
  auto pts = Influx(
      "my\\ meas\\,ure,run=r\\ 1,ta\\=g\\ k\\,ey=v\\,a\\ l\\=ue "
      "fi\\ el\\=d\\,x=1 5000000");
  ASSERT_EQ(pts.size(), 1u);
  EXPECT_EQ(pts[0].run, "r 1");
  EXPECT_EQ(pts[0].metric, "my meas,ure_fi el=d,x");
  EXPECT_THAT(pts[0].labels, ElementsAre(Pair("ta=g k,ey", "v,a l=ue")));
  EXPECT_EQ(pts[0].time_ms, 5);
  // "\\" is one backslash; a backslash before anything else is literal.
  pts = Influx("a\\\\b\\x,run=r f=1");
  EXPECT_EQ(pts[0].metric, "a\\b\\x_f");
  // '=' needs no escape in a measurement; metric paths keep their slashes.
  pts = Influx("gpu/util=x,run=r v=1");
  EXPECT_EQ(pts[0].metric, "gpu/util=x_v");
}

TEST(Influx, CommentsBlankLinesAndWhitespace) {
  std::vector<ParsedPoint> out;
  EXPECT_TRUE(ParseInfluxLine("", Defaults(), &out).ok());
  EXPECT_TRUE(ParseInfluxLine("   ", Defaults(), &out).ok());
  EXPECT_TRUE(ParseInfluxLine("\r", Defaults(), &out).ok());
  EXPECT_TRUE(ParseInfluxLine("# a comment", Defaults(), &out).ok());
  EXPECT_TRUE(ParseInfluxLine("  # indented comment", Defaults(), &out).ok());
  EXPECT_TRUE(out.empty());
  // CRLF line endings and trailing blanks are tolerated.
  auto pts = Influx("m,run=r f=1 2000000\r");
  ASSERT_EQ(pts.size(), 1u);
  EXPECT_EQ(pts[0].time_ms, 2);
  pts = Influx("m,run=r f=1  ");
  EXPECT_EQ(pts[0].time_ms, kNow);
  pts = Influx("m,run=r  f=1   3000000 ");
  EXPECT_EQ(pts[0].time_ms, 3);
}

TEST(Influx, StructuralErrors) {
  EXPECT_THAT(InfluxError("m"), HasSubstr("no fields"));
  EXPECT_THAT(InfluxError("m,run=r"), HasSubstr("no fields"));
  EXPECT_THAT(InfluxError("m,run=r "), HasSubstr("no fields"));
  EXPECT_THAT(InfluxError(",run=r f=1"), HasSubstr("empty measurement"));
  EXPECT_THAT(InfluxError("m,=v f=1"), HasSubstr("empty tag key"));
  EXPECT_THAT(InfluxError("m,k= f=1"), HasSubstr("empty value"));
  EXPECT_THAT(InfluxError("m,k f=1"), HasSubstr("no '=value'"));
  EXPECT_THAT(InfluxError("m,k=1,k=2 f=1"), HasSubstr("twice"));
  EXPECT_THAT(InfluxError("m,run=a,run=b f=1"), HasSubstr("twice"));
  EXPECT_THAT(InfluxError("m f"), HasSubstr("no '=value'"));
  EXPECT_THAT(InfluxError("m =1"), HasSubstr("empty field key"));
  EXPECT_THAT(InfluxError("m f=1,f=2"), HasSubstr("twice"));
  EXPECT_THAT(InfluxError("m f=1,"), HasSubstr("no '=value'"));
}

TEST(Influx, ErrorLeavesOutputUntouched) {
  std::vector<ParsedPoint> out = Influx("m,run=r a=1");
  ASSERT_EQ(out.size(), 1u);
  // The first field is fine, the second is not: nothing is appended.
  EXPECT_FALSE(ParseInfluxLine("m,run=r a=1,b=\"x\"", Defaults(), &out).ok());
  EXPECT_FALSE(ParseInfluxLine("m,run=r a=1,b=oops", Defaults(), &out).ok());
  EXPECT_EQ(out.size(), 1u);
  // Appends after what is there.
  EXPECT_TRUE(ParseInfluxLine("m,run=r b=2,c=3", Defaults(), &out).ok());
  EXPECT_EQ(out.size(), 3u);
}

TEST(Influx, LabelsAreSortedAndRunIsNotALabel) {
  auto pts = Influx("m,z=1,run=r,a=2,m=3 f=1");
  EXPECT_THAT(pts[0].labels,
              ElementsAre(Pair("a", "2"), Pair("m", "3"), Pair("z", "1")));
}

// ---- CSV
// ----------------------------------------------------------------------

TEST(CsvSplit, Quoting) {
  EXPECT_THAT(*SplitCsvRecord("a,b,c"), ElementsAre("a", "b", "c"));
  EXPECT_THAT(*SplitCsvRecord("\"a,b\",c"), ElementsAre("a,b", "c"));
  EXPECT_THAT(*SplitCsvRecord("\"say \"\"hi\"\"\",x"),
              ElementsAre("say \"hi\"", "x"));
  EXPECT_THAT(*SplitCsvRecord("\"\""), ElementsAre(""));
  EXPECT_THAT(*SplitCsvRecord("a,,c,"), ElementsAre("a", "", "c", ""));
  EXPECT_THAT(*SplitCsvRecord(""), ElementsAre(""));
  EXPECT_THAT(*SplitCsvRecord("a,b\r"), ElementsAre("a", "b"));
  EXPECT_THAT(*SplitCsvRecord("\"line\nbreak\",z"),
              ElementsAre("line\nbreak", "z"));
  EXPECT_THAT(*SplitCsvRecord(" a , b "), ElementsAre(" a ", " b "));
  EXPECT_THAT(Msg(SplitCsvRecord("\"open,b").status()),
              HasSubstr("unterminated"));
  EXPECT_THAT(Msg(SplitCsvRecord("\"a\"b,c").status()),
              HasSubstr("after a closing quote"));
}

TEST(CsvSplit, RecordIsOpen) {
  EXPECT_FALSE(CsvRecordIsOpen("a,b"));
  EXPECT_FALSE(CsvRecordIsOpen("\"a,b\",c"));
  EXPECT_TRUE(CsvRecordIsOpen("\"a,b"));
  EXPECT_TRUE(CsvRecordIsOpen("x,\"multi"));
  EXPECT_FALSE(CsvRecordIsOpen("x,\"multi\nline\""));
  EXPECT_TRUE(CsvRecordIsOpen("x,\"he said \"\"hi"));
  EXPECT_FALSE(CsvRecordIsOpen("x,\"\"\"\""));
  // A quote inside an unquoted field does not open anything.
  EXPECT_FALSE(CsvRecordIsOpen("5\" disk,1"));
}

ParsedPoint CsvRow(const CsvImporter& csv, std::string_view row,
                   const ImportDefaults& d = Defaults("dflt")) {
  ParsedPoint p;
  absl::Status st = csv.ParseRow(row, d, &p);
  EXPECT_TRUE(st.ok()) << row << ": " << st;
  return p;
}

std::string CsvRowError(const CsvImporter& csv, std::string_view row,
                        const ImportDefaults& d = Defaults("dflt")) {
  ParsedPoint p;
  absl::Status st = csv.ParseRow(row, d, &p);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << row;
  return Msg(st);
}

TEST(Csv, FullLayout) {
  CsvImporter csv;
  ASSERT_TRUE(csv.SetHeader("run,metric,step,time_ms,value,node,gpu").ok());
  ParsedPoint p = CsvRow(csv, "r1,train/loss,12.5,1700000000000,0.25,n1,3");
  EXPECT_EQ(p.run, "r1");
  EXPECT_EQ(p.metric, "train/loss");
  EXPECT_TRUE(p.has_step);
  EXPECT_EQ(p.step, (Step{12, 500000}));
  EXPECT_EQ(p.time_ms, 1700000000000);
  EXPECT_EQ(p.value, 0.25);
  EXPECT_THAT(p.labels, ElementsAre(Pair("gpu", "3"), Pair("node", "n1")));
}

TEST(Csv, OptionalColumnsAndEmptyCells) {
  CsvImporter csv;
  ASSERT_TRUE(csv.SetHeader("metric,value").ok());
  ParsedPoint p = CsvRow(csv, "loss,1.5");
  EXPECT_EQ(p.run, "dflt");
  EXPECT_FALSE(p.has_step);
  EXPECT_EQ(p.time_ms, kNow);
  EXPECT_TRUE(p.labels.empty());
  EXPECT_THAT(CsvRowError(csv, "loss,1.5", Defaults("")),
              HasSubstr("no \"run\" column"));

  ASSERT_TRUE(csv.SetHeader("metric,value,step,time_ms,run,host").ok());
  p = CsvRow(csv, "loss,2,,,,");
  EXPECT_FALSE(p.has_step);
  EXPECT_EQ(p.time_ms, kNow);
  EXPECT_EQ(p.run, "dflt");
  EXPECT_TRUE(p.labels.empty());  // empty cell = label absent
  EXPECT_THAT(CsvRowError(csv, "loss,2,,,,", Defaults("")),
              HasSubstr("\"run\" cell is empty"));
  // Whitespace around numbers is ignored.
  p = CsvRow(csv, "loss, 3 , 4 , 5 ,r,h");
  EXPECT_EQ(p.value, 3);
  EXPECT_EQ(p.step, (Step{4, 0}));
  EXPECT_EQ(p.time_ms, 5);
  EXPECT_EQ(p.run, "r");
  EXPECT_THAT(p.labels, ElementsAre(Pair("host", "h")));
}

TEST(Csv, QuotedCells) {
  CsvImporter csv;
  ASSERT_TRUE(csv.SetHeader("metric,value,\"note, with comma\"").ok());
  ParsedPoint p = CsvRow(csv, "\"eval/acc,top1\",0.5,\"say \"\"hi\"\"\"");
  EXPECT_EQ(p.metric, "eval/acc,top1");
  EXPECT_THAT(p.labels, ElementsAre(Pair("note, with comma", "say \"hi\"")));
}

TEST(Csv, Values) {
  CsvImporter csv;
  ASSERT_TRUE(csv.SetHeader("metric,value").ok());
  EXPECT_TRUE(std::isnan(CsvRow(csv, "m,nan").value));
  EXPECT_TRUE(std::isnan(CsvRow(csv, "m,NaN").value));
  EXPECT_EQ(CsvRow(csv, "m,inf").value, INFINITY);
  EXPECT_EQ(CsvRow(csv, "m,-INF").value, -INFINITY);
  EXPECT_EQ(CsvRow(csv, "m,1.5e-3").value, 0.0015);
  EXPECT_EQ(CsvRow(csv, "m,-2").value, -2);
  EXPECT_THAT(CsvRowError(csv, "m,abc"), HasSubstr("column \"value\""));
  EXPECT_THAT(CsvRowError(csv, "m,"), HasSubstr("\"value\" is empty"));
  EXPECT_THAT(CsvRowError(csv, ",1"), HasSubstr("\"metric\" is empty"));
}

TEST(Csv, BadRows) {
  CsvImporter csv;
  ASSERT_TRUE(csv.SetHeader("metric,value,step,time_ms").ok());
  EXPECT_THAT(CsvRowError(csv, "m,1,2"), HasSubstr("3 fields"));
  EXPECT_THAT(CsvRowError(csv, "m,1,2,3,4"), HasSubstr("5 fields"));
  EXPECT_THAT(CsvRowError(csv, "m,1,-1,3"), HasSubstr("non-negative"));
  EXPECT_THAT(CsvRowError(csv, "m,1,1.1234567,3"),
              HasSubstr("6 fractional digits"));
  EXPECT_THAT(CsvRowError(csv, "m,1,1e3,3"), HasSubstr("column \"step\""));
  EXPECT_THAT(CsvRowError(csv, "m,1,1,3.5"), HasSubstr("time_ms"));
  EXPECT_THAT(CsvRowError(csv, "\"m,1,1,3"), HasSubstr("unterminated"));
  // Negative times are valid Unix milliseconds.
  EXPECT_EQ(CsvRow(csv, "m,1,1,-5").time_ms, -5);
}

TEST(Csv, Header) {
  CsvImporter csv;
  EXPECT_FALSE(csv.has_header());
  EXPECT_THAT(Msg(csv.SetHeader("metric,step")), HasSubstr("\"value\""));
  EXPECT_THAT(Msg(csv.SetHeader("value,step")), HasSubstr("\"metric\""));
  EXPECT_THAT(Msg(csv.SetHeader("metric,value,value")), HasSubstr("twice"));
  EXPECT_THAT(Msg(csv.SetHeader("metric,value,,x")), HasSubstr("empty name"));
  EXPECT_THAT(Msg(csv.SetHeader("metric,\"value")), HasSubstr("unterminated"));
  EXPECT_FALSE(csv.has_header());
  // A UTF-8 byte order mark, CRLF and blanks around names are tolerated.
  ASSERT_TRUE(csv.SetHeader("\xEF\xBB\xBFmetric , value\r").ok());
  EXPECT_TRUE(csv.has_header());
  EXPECT_EQ(CsvRow(csv, "m,4\r").value, 4);
}

TEST(Csv, LabelColumnsSortedByName) {
  CsvImporter csv;
  ASSERT_TRUE(csv.SetHeader("zone,metric,value,app,rank").ok());
  ParsedPoint p = CsvRow(csv, "eu,m,1,,7");
  EXPECT_THAT(p.labels, ElementsAre(Pair("rank", "7"), Pair("zone", "eu")));
}

}  // namespace
}  // namespace stepdb::cli
