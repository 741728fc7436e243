#include "storage/chunk_codec.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/bit_stream.h"
#include "storage/codec_kernels.h"

namespace stepdb::storage {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr uint64_t kStep = 1'000'000;  // one whole step in micro-steps
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

uint64_t Bits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof(u));
  return u;
}

double FromBits(uint64_t u) {
  double d;
  std::memcpy(&d, &u, sizeof(d));
  return d;
}

std::vector<uint64_t> ValueBits(const std::vector<double>& values) {
  std::vector<uint64_t> bits;
  bits.reserve(values.size());
  for (double v : values) bits.push_back(Bits(v));
  return bits;
}

std::string Encode(const PointColumns& p) {
  std::string out;
  EncodeChunk(p.steps, p.times_ms, p.values, &out);
  return out;
}

ChunkSummary ExpectedSummary(const PointColumns& p) {
  ChunkSummary s;
  s.count = static_cast<uint32_t>(p.size());
  s.min_step = p.steps.front();
  s.max_step = p.steps.back();
  s.min_time_ms = *std::min_element(p.times_ms.begin(), p.times_ms.end());
  s.max_time_ms = *std::max_element(p.times_ms.begin(), p.times_ms.end());
  return s;
}

void ExpectSummaryEq(const ChunkSummary& got, const ChunkSummary& want) {
  EXPECT_EQ(got.count, want.count);
  EXPECT_EQ(got.min_step, want.min_step);
  EXPECT_EQ(got.max_step, want.max_step);
  EXPECT_EQ(got.min_time_ms, want.min_time_ms);
  EXPECT_EQ(got.max_time_ms, want.max_time_ms);
}

// Encodes, decodes and checks every column bit-exactly, and the summary.
// Returns the encoding.
std::string ExpectRoundTrip(const PointColumns& p) {
  std::string chunk = Encode(p);
  PointColumns got;
  absl::Status s = DecodeChunk(chunk, &got);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(got.steps, ElementsAreArray(p.steps));
  EXPECT_THAT(got.times_ms, ElementsAreArray(p.times_ms));
  // Bit patterns, not doubles: NaN != NaN and -0.0 == 0.0.
  EXPECT_THAT(ValueBits(got.values), ElementsAreArray(ValueBits(p.values)));
  absl::StatusOr<ChunkSummary> summary = ReadChunkSummary(chunk);
  EXPECT_TRUE(summary.ok()) << summary.status();
  if (summary.ok()) ExpectSummaryEq(*summary, ExpectedSummary(p));
  return chunk;
}

// 1000 consecutive steps, ~500 ms apart with +-20 ms jitter, float32 values.
PointColumns Telemetry(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> jitter(-20, 20);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  PointColumns p;
  const int64_t t0 = 1'700'000'000'000;
  for (size_t i = 0; i < n; ++i) {
    const float loss =
        3.0f * std::exp(-static_cast<float>(i) / 400.0f) + 0.1f + noise(rng);
    p.push_back((1000 + i) * kStep,
                t0 + 500 * static_cast<int64_t>(i) + jitter(rng),
                static_cast<double>(loss));
  }
  return p;
}

// Values whose bit patterns stress the XOR coder.
std::vector<double> SpecialValues() {
  constexpr double kDenormMin = std::numeric_limits<double>::denorm_min();
  return {
      std::numeric_limits<double>::quiet_NaN(),
      std::numeric_limits<double>::signaling_NaN(),
      FromBits(0x7ff0000000000001),  // signaling, smallest payload
      FromBits(0x7ff4000000000000),  // signaling
      FromBits(0xfff8000000000000),  // negative quiet NaN
      FromBits(0x7fffffffffffffff),  // quiet, all-ones payload
      FromBits(0xffffffffffffffff),
      FromBits(0x7ff8dead0000beef),
      std::numeric_limits<double>::infinity(),
      -std::numeric_limits<double>::infinity(),
      -0.0,
      0.0,
      -0.0,
      kDenormMin,
      4.9e-324,  // == denorm_min
      std::nextafter(kDenormMin, 1.0),
      std::nextafter(0.0, -1.0),
      FromBits(0x000fffffffffffff),  // largest denormal
      std::numeric_limits<double>::min(),
      DBL_MAX,
      -DBL_MAX,
      DBL_MAX,
      1.0,
      FromBits(Bits(1.0) ^ 1),  // differs in the last bit only
      FromBits(Bits(1.0) ^ (uint64_t{1} << 63)),  // in the first bit only
      FromBits(Bits(1.0) ^ 0x8000000000000001),   // first and last: 64 bits
      0.0,
      FromBits(1),                   // leading zeros = 63
      FromBits(uint64_t{1} << 63),   // leading 0, trailing 63
      FromBits(0x00000000ffffffff),  // leading zeros = 32
      FromBits(0x0000000100000000),
      std::numeric_limits<double>::quiet_NaN(),
      std::numeric_limits<double>::quiet_NaN(),
  };
}

PointColumns WithValues(const std::vector<double>& values) {
  PointColumns p;
  for (size_t i = 0; i < values.size(); ++i) {
    p.push_back(i * kStep, static_cast<int64_t>(i) * 500, values[i]);
  }
  return p;
}

TEST(BitStreamTest, RoundTripsMixedWidths) {
  std::mt19937_64 rng(7);
  std::vector<std::pair<uint64_t, int>> written;
  std::string buf = "prefix";
  BitWriter w(&buf);
  for (int i = 0; i < 10000; ++i) {
    const int n = static_cast<int>(rng() % 65);
    const uint64_t v = n == 0 ? 0 : rng() >> (64 - n);
    w.Write(v, n);
    written.emplace_back(v, n);
  }
  w.Finish();
  ASSERT_EQ(buf.substr(0, 6), "prefix");
  BitReader r(std::string_view(buf).substr(6));
  for (const auto& [v, n] : written) {
    ASSERT_EQ(r.Read(n), v) << n;
  }
  EXPECT_TRUE(r.ok());
  EXPECT_LT(r.bits_remaining(), 8u);
}

TEST(BitStreamTest, ReadPastEndIsStickyError) {
  std::string buf;
  BitWriter w(&buf);
  w.Write(0b101, 3);
  w.Finish();
  ASSERT_EQ(buf.size(), 1u);
  EXPECT_EQ(static_cast<uint8_t>(buf[0]), 0b10100000);
  BitReader r(buf);
  EXPECT_EQ(r.Peek(12), 0b101000000000u);  // zero-filled, no error
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.Read(3), 0b101u);
  EXPECT_EQ(r.Read(6), 0u);  // only 5 bits left
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.Read(1), 0u);
  EXPECT_FALSE(r.ok());
}

TEST(BitStreamTest, EmptyInput) {
  BitReader r("");
  EXPECT_EQ(r.bits_remaining(), 0u);
  EXPECT_EQ(r.Read(0), 0u);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.Read(64), 0u);
  EXPECT_FALSE(r.ok());
}

TEST(ChunkCodecTest, SinglePoint) {
  PointColumns p;
  p.push_back(42 * kStep, -5, 0.25);
  std::string chunk = ExpectRoundTrip(p);
  EXPECT_LE(chunk.size(), 1u + 5 * 2 + 8);
}

TEST(ChunkCodecTest, SinglePointExtremes) {
  PointColumns p;
  p.push_back(std::numeric_limits<uint64_t>::max(), kInt64Min,
              FromBits(0x7ff0000000000001));
  ExpectRoundTrip(p);
  p.clear();
  p.push_back(0, kInt64Max, -0.0);
  ExpectRoundTrip(p);
}

TEST(ChunkCodecTest, ConsecutiveStepsJitteredTimesFloat32Values) {
  PointColumns p = Telemetry(1000, 1);
  std::string chunk = ExpectRoundTrip(p);
  // One bit per step, ~1 byte per jittered time, float32 XORs.
  EXPECT_LT(chunk.size(), 1000u * 6);
}

TEST(ChunkCodecTest, SpecialValues) {
  std::vector<double> values = SpecialValues();
  ExpectRoundTrip(WithValues(values));
  // And each one after a plain value and after each other.
  std::vector<double> pairs;
  for (double a : values) {
    for (double b : values) {
      pairs.push_back(a);
      pairs.push_back(b);
    }
  }
  ExpectRoundTrip(WithValues(pairs));
}

TEST(ChunkCodecTest, RandomBitPatterns) {
  std::mt19937_64 rng(12345);
  std::vector<double> values;
  for (int i = 0; i < 4096; ++i) values.push_back(FromBits(rng()));
  ExpectRoundTrip(WithValues(values));
}

TEST(ChunkCodecTest, RandomBitPatternsWithSharedPrefixes) {
  // Values that share a random number of high and low bits with the
  // previous one: exercises every window position and window reuse.
  std::mt19937_64 rng(99);
  std::vector<double> values;
  uint64_t v = rng();
  for (int i = 0; i < 8192; ++i) {
    const int lead = static_cast<int>(rng() % 64);
    const int trail = static_cast<int>(rng() % (64 - lead));
    const uint64_t mask = (~uint64_t{0} >> lead) & (~uint64_t{0} << trail);
    v ^= rng() & mask;
    values.push_back(FromBits(v));
  }
  ExpectRoundTrip(WithValues(values));
}

TEST(ChunkCodecTest, ConstantValues) {
  std::vector<double> values(5000, 3.5);
  std::string chunk = ExpectRoundTrip(WithValues(values));
  // 1 bit per step, 1 per value; times here are exactly 500 ms apart.
  EXPECT_LT(chunk.size(), 5000u * 3 / 8 + 32);
}

TEST(ChunkCodecTest, HugeStepGaps) {
  PointColumns p;
  p.push_back(0, 0, 1.0);
  p.push_back(uint64_t{1} << 63, 1, 2.0);
  ExpectRoundTrip(p);

  p.clear();
  const uint64_t kMax = std::numeric_limits<uint64_t>::max();
  for (uint64_t s :
       {uint64_t{0}, uint64_t{1}, uint64_t{2}, uint64_t{1} << 32,
        uint64_t{1} << 63, (uint64_t{1} << 63) + 1, kMax - 1, kMax}) {
    p.push_back(s, static_cast<int64_t>(p.size()), 0.0);
  }
  ExpectRoundTrip(p);
}

TEST(ChunkCodecTest, IrregularAndFractionalSteps) {
  std::mt19937_64 rng(5);
  PointColumns p;
  uint64_t step = 7 * kStep;
  for (int i = 0; i < 3000; ++i) {
    switch (rng() % 5) {
      case 0:
        step += 1;  // smallest possible increment
        break;
      case 1:
        step += 250'000;  // a quarter step
        break;
      case 2:
        step += kStep * (1 + rng() % 100);  // eval every N steps
        break;
      case 3:
        step += 1 + rng() % (uint64_t{1} << 40);
        break;
      default:
        step += kStep;
    }
    p.push_back(step, i * 500, i * 0.5);
  }
  ExpectRoundTrip(p);
}

TEST(ChunkCodecTest, TimesAnyDirection) {
  PointColumns p;
  // Decreasing, then negative, then wild jumps across the whole int64 range.
  const std::vector<int64_t> times = {1'000'000,
                                      999'500,
                                      999'000,
                                      998'000,
                                      0,
                                      -1,
                                      -500,
                                      -1000,
                                      -1000,
                                      -1000,
                                      kInt64Min,
                                      kInt64Max,
                                      kInt64Min,
                                      0,
                                      kInt64Max,
                                      kInt64Max - 1,
                                      kInt64Min + 1,
                                      -1,
                                      1,
                                      kInt64Min,
                                      kInt64Min,
                                      5};
  for (size_t i = 0; i < times.size(); ++i) {
    p.push_back(i * kStep, times[i], static_cast<double>(i));
  }
  ExpectRoundTrip(p);

  std::mt19937_64 rng(11);
  p.clear();
  for (int i = 0; i < 2000; ++i) {
    p.push_back(static_cast<uint64_t>(i) * kStep, static_cast<int64_t>(rng()),
                1.0);
  }
  ExpectRoundTrip(p);
}

TEST(ChunkCodecTest, AllTimesExtreme) {
  PointColumns p;
  for (int i = 0; i < 10; ++i) p.push_back(i, kInt64Min, 0.0);
  ExpectRoundTrip(p);
  p.clear();
  for (int i = 0; i < 10; ++i) p.push_back(i, kInt64Max, 0.0);
  ExpectRoundTrip(p);
}

TEST(ChunkCodecTest, SummaryIsReadFromHeader) {
  PointColumns p = Telemetry(300, 3);
  p.times_ms[100] = p.times_ms[0] - 123'456;  // min not at an end
  p.times_ms[200] = p.times_ms[0] + 999'999'999;
  std::string chunk = Encode(p);
  absl::StatusOr<ChunkSummary> s = ReadChunkSummary(chunk);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->count, 300u);
  EXPECT_EQ(s->min_step, 1000 * kStep);
  EXPECT_EQ(s->max_step, 1299 * kStep);
  EXPECT_EQ(s->min_time_ms, p.times_ms[0] - 123'456);
  EXPECT_EQ(s->max_time_ms, p.times_ms[0] + 999'999'999);

  // The summary needs only the header: dropping the bitstream's last byte
  // breaks decoding but not the summary.
  std::string truncated = chunk.substr(0, chunk.size() - 1);
  EXPECT_TRUE(ReadChunkSummary(truncated).ok());
  PointColumns out;
  EXPECT_EQ(DecodeChunk(truncated, &out).code(), absl::StatusCode::kDataLoss);
}

TEST(ChunkCodecTest, AppendsToNonEmptyOutputs) {
  PointColumns a = Telemetry(100, 1);
  PointColumns b = WithValues(SpecialValues());
  std::string buf = "head";
  EncodeChunk(a.steps, a.times_ms, a.values, &buf);
  const size_t a_end = buf.size();
  EncodeChunk(b.steps, b.times_ms, b.values, &buf);
  ASSERT_EQ(buf.substr(0, 4), "head");
  EXPECT_EQ(buf.substr(4, a_end - 4), Encode(a));
  EXPECT_EQ(buf.substr(a_end), Encode(b));

  PointColumns out;
  out.push_back(1, 2, 3.0);
  ASSERT_TRUE(
      DecodeChunk(std::string_view(buf).substr(4, a_end - 4), &out).ok());
  ASSERT_TRUE(DecodeChunk(std::string_view(buf).substr(a_end), &out).ok());
  ASSERT_EQ(out.size(), 1 + a.size() + b.size());
  EXPECT_EQ(out.steps[0], 1u);
  EXPECT_EQ(out.times_ms[0], 2);
  EXPECT_EQ(out.values[0], 3.0);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(out.steps[1 + i], a.steps[i]);
    EXPECT_EQ(out.times_ms[1 + i], a.times_ms[i]);
    EXPECT_EQ(Bits(out.values[1 + i]), Bits(a.values[i]));
  }
  for (size_t i = 0; i < b.size(); ++i) {
    const size_t j = 1 + a.size() + i;
    EXPECT_EQ(out.steps[j], b.steps[i]);
    EXPECT_EQ(out.times_ms[j], b.times_ms[i]);
    EXPECT_EQ(Bits(out.values[j]), Bits(b.values[i]));
  }
}

TEST(ChunkCodecTest, FailedDecodeLeavesOutputUnchanged) {
  std::string chunk = Encode(Telemetry(100, 1));
  chunk.pop_back();
  PointColumns out;
  out.push_back(1, 2, 3.0);
  EXPECT_FALSE(DecodeChunk(chunk, &out).ok());
  EXPECT_EQ(out.size(), 1u);
}

TEST(ChunkCodecTest, EmptyInputIsDataLoss) {
  PointColumns out;
  EXPECT_EQ(DecodeChunk("", &out).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadChunkSummary("").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(out.empty());
}

TEST(ChunkCodecTest, UnknownVersionIsUnimplemented) {
  std::string chunk = Encode(Telemetry(10, 1));
  for (int version : {0, 4, 0x81, 0xff}) {
    chunk[0] = static_cast<char>(version);
    PointColumns out;
    EXPECT_EQ(DecodeChunk(chunk, &out).code(),
              absl::StatusCode::kUnimplemented);
    EXPECT_EQ(ReadChunkSummary(chunk).status().code(),
              absl::StatusCode::kUnimplemented);
    EXPECT_EQ(ReadChunkSummary(chunk.substr(0, 1)).status().code(),
              absl::StatusCode::kUnimplemented);
  }
}

TEST(ChunkCodecTest, EveryTruncationIsAnError) {
  for (const PointColumns& p :
       {Telemetry(1, 1), Telemetry(2, 1), Telemetry(300, 2),
        WithValues(SpecialValues())}) {
    const std::string chunk = Encode(p);
    for (size_t len = 0; len < chunk.size(); ++len) {
      PointColumns out;
      absl::Status s = DecodeChunk(chunk.substr(0, len), &out);
      EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << len << " " << s;
      EXPECT_TRUE(out.empty());
      // The summary may or may not be readable, but never crashes.
      (void)ReadChunkSummary(chunk.substr(0, len));
    }
  }
}

TEST(ChunkCodecTest, TrailingBytesAreDataLoss) {
  std::string chunk = Encode(Telemetry(50, 1));
  PointColumns out;
  EXPECT_EQ(DecodeChunk(chunk + '\0', &out).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeChunk(chunk + "garbage", &out).code(),
            absl::StatusCode::kDataLoss);
}

std::string Varint(uint64_t v) {
  std::string s;
  while (v >= 0x80) {
    s.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  s.push_back(static_cast<char>(v));
  return s;
}

// The header of format version 1, built independently of the encoder (see
// docs/FORMAT.md).
std::string Header(uint64_t count, uint64_t first_step, uint64_t step_span,
                   uint64_t first_time_zigzag, uint64_t below_first,
                   uint64_t above_first) {
  return std::string(1, '\x01') + Varint(count) + Varint(first_step) +
         Varint(step_span) + Varint(first_time_zigzag) + Varint(below_first) +
         Varint(above_first);
}

std::string EncodeV1(const PointColumns& p) {
  std::string out;
  internal::EncodeChunkV1(p.steps, p.times_ms, p.values, &out);
  return out;
}

// Version 2 starts with the same six varints as version 1.
std::string Header2(uint64_t count, uint64_t first_step, uint64_t step_span,
                    uint64_t first_time_zigzag, uint64_t below_first,
                    uint64_t above_first) {
  std::string h = Header(count, first_step, step_span, first_time_zigzag,
                         below_first, above_first);
  h[0] = '\x02';
  return h;
}

class InconsistentHeaderTest : public ::testing::TestWithParam<int> {};

TEST_P(InconsistentHeaderTest, IsDataLoss) {
  const bool v2 = GetParam() == 2;
  auto Header = v2 ? Header2 : ::stepdb::storage::Header;
  // Steps 0, 1e6, 2e6; times 10, 5, 20; first time 10 zigzags to 20.
  PointColumns p;
  p.push_back(0, 10, 1.0);
  p.push_back(kStep, 5, 2.0);
  p.push_back(2 * kStep, 20, 3.0);
  const std::string chunk = v2 ? Encode(p) : EncodeV1(p);
  const std::string header = Header(3, 0, 2 * kStep, 20, 5, 10);
  ASSERT_EQ(chunk.substr(0, header.size()), header) << "format drifted";
  const std::string body = chunk.substr(header.size());

  auto decode = [&](const std::string& h) {
    PointColumns out;
    return DecodeChunk(h + body, &out).code();
  };
  EXPECT_EQ(decode(header), absl::StatusCode::kOk);
  // Wrong last step (still a plausible span; in version 2, where these
  // regular steps are implied by the span, one that does not divide).
  EXPECT_EQ(decode(Header(3, 0, 2 * kStep + 1, 20, 5, 10)),
            absl::StatusCode::kDataLoss);
  // Span too small for 3 strictly increasing steps.
  EXPECT_EQ(decode(Header(3, 0, 1, 20, 5, 10)), absl::StatusCode::kDataLoss);
  // Last step overflows.
  EXPECT_EQ(decode(Header(3, 1, ~uint64_t{0}, 20, 5, 10)),
            absl::StatusCode::kDataLoss);
  // Wrong min / max time.
  EXPECT_EQ(decode(Header(3, 0, 2 * kStep, 20, 4, 10)),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(decode(Header(3, 0, 2 * kStep, 20, 5, 11)),
            absl::StatusCode::kDataLoss);
  // Min time below INT64_MIN.
  EXPECT_EQ(decode(Header(3, 0, 2 * kStep, 20, ~uint64_t{0}, 10)),
            absl::StatusCode::kDataLoss);
  // Fewer points than encoded: trailing bits remain.
  EXPECT_EQ(decode(Header(2, 0, kStep, 20, 5, 0)), absl::StatusCode::kDataLoss);
  // Zero points.
  EXPECT_EQ(decode(Header(0, 0, 0, 20, 0, 0)), absl::StatusCode::kDataLoss);
  // A one-point chunk cannot span steps or times.
  EXPECT_EQ(decode(Header(1, 0, 1, 20, 0, 0)), absl::StatusCode::kDataLoss);
  // Overlong varint (11 bytes).
  EXPECT_EQ(decode(std::string("\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
                               "\x01",
                               12)),
            absl::StatusCode::kDataLoss);
}

INSTANTIATE_TEST_SUITE_P(Versions, InconsistentHeaderTest,
                         ::testing::Values(1, 2));

TEST(ChunkCodecTest, HugeCountIsRejectedWithoutAllocating) {
  const std::string body(64, '\0');
  for (uint64_t count : {uint64_t{1} << 24, (uint64_t{1} << 24) + 1,
                         uint64_t{1} << 32, ~uint64_t{0}, uint64_t{200}}) {
    const std::string chunk =
        Header(count, 0, ~uint64_t{0} >> 1, 0, 0, 0) + body;
    PointColumns out;
    EXPECT_EQ(DecodeChunk(chunk, &out).code(), absl::StatusCode::kDataLoss)
        << count;
    EXPECT_EQ(ReadChunkSummary(chunk).status().code(),
              absl::StatusCode::kDataLoss)
        << count;
    EXPECT_EQ(out.steps.capacity(), 0u);
  }
}

// `chunk` with 1-3 random bytes flipped in one bit or replaced.
std::string Corrupted(const std::string& chunk, std::mt19937_64& rng) {
  std::string bad = chunk;
  const int flips = 1 + static_cast<int>(rng() % 3);
  for (int f = 0; f < flips; ++f) {
    const size_t pos = rng() % bad.size();
    if (rng() % 2) {
      bad[pos] = static_cast<char>(bad[pos] ^ (1 << (rng() % 8)));
    } else {
      bad[pos] = static_cast<char>(rng());
    }
  }
  return bad;
}

// Decodes `bad`, a damaged chunk: what decodes must agree with its own
// header; an error must be DataLoss, Unimplemented, or FailedPrecondition
// (the version byte became 3: a follower, which DecodeChunk does not
// decode), with nothing appended. Returns whether it was an error.
bool DecodeDamaged(const std::string& bad) {
  PointColumns out;
  absl::Status s = DecodeChunk(bad, &out);
  if (s.ok()) {
    absl::StatusOr<ChunkSummary> summary = ReadChunkSummary(bad);
    EXPECT_TRUE(summary.ok()) << summary.status();
    if (summary.ok()) ExpectSummaryEq(*summary, ExpectedSummary(out));
    return false;
  }
  EXPECT_TRUE(s.code() == absl::StatusCode::kDataLoss ||
              s.code() == absl::StatusCode::kUnimplemented ||
              s.code() == absl::StatusCode::kFailedPrecondition)
      << s;
  EXPECT_TRUE(out.empty());
  return true;
}

TEST(ChunkCodecTest, RandomCorruptionNeverCrashes) {
  std::vector<std::string> chunks = {Encode(Telemetry(1, 1)),
                                     Encode(Telemetry(500, 2)),
                                     Encode(WithValues(SpecialValues()))};
  std::mt19937_64 rng(2024);
  int decoded = 0;
  int failed = 0;
  for (const std::string& chunk : chunks) {
    for (int iter = 0; iter < 3000; ++iter) {
      if (DecodeDamaged(Corrupted(chunk, rng))) {
        ++failed;
      } else {
        ++decoded;
      }
    }
  }
  EXPECT_GT(failed, 0);
  RecordProperty("decoded", decoded);
}

TEST(ChunkCodecTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(77);
  for (int iter = 0; iter < 20000; ++iter) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    if (!bytes.empty() && rng() % 4 != 0) bytes[0] = 1;
    PointColumns out;
    absl::Status s = DecodeChunk(bytes, &out);
    (void)ReadChunkSummary(bytes);
    if (!s.ok()) {
      EXPECT_TRUE(out.empty());
    }
  }
}

// ---------------------------------------------------------------------------
// Format version 2: value codecs, aggregates, compatibility.

ChunkDescription Describe(const std::string& chunk) {
  absl::StatusOr<ChunkDescription> d = DescribeChunk(chunk);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : ChunkDescription();
}

// Consecutive steps, times every ~500 ms with +-20 ms jitter.
PointColumns Series(const std::vector<double>& values, uint32_t seed = 1) {
  std::mt19937_64 rng(seed);
  PointColumns p;
  for (size_t i = 0; i < values.size(); ++i) {
    p.push_back((7 + i) * kStep,
                1'717'000'000'000 + 500 * static_cast<int64_t>(i) +
                    static_cast<int64_t>(rng() % 41) - 20,
                values[i]);
  }
  return p;
}

std::vector<double> GpuUtil(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> v;
  for (size_t i = 0; i < n; ++i) {
    v.push_back(rng() % 30 == 0 ? static_cast<double>(rng() % 101)
                                : 96.0 + static_cast<double>(rng() % 5));
  }
  return v;
}

std::vector<double> Watts(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 5.0);
  std::vector<double> v;
  for (size_t i = 0; i < n; ++i) {
    v.push_back(std::round((350.0 + normal(rng)) * 10.0) / 10.0);
  }
  return v;
}

std::vector<double> Float32Loss(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.03f);
  std::vector<double> v;
  for (size_t i = 0; i < n; ++i) {
    v.push_back(static_cast<double>(
        2.0f * std::exp(-static_cast<float>(i) / 500.0f) + 0.3f + noise(rng)));
  }
  return v;
}

// A rate computed in float64 (tokens / elapsed seconds): noise in every
// mantissa bit, a few distinct signs and exponents (values straddle 2^20).
std::vector<double> ComputedRates(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v;
  for (size_t i = 0; i < n; ++i) {
    v.push_back(524'288.0 / (0.5 + 0.02 * normal(rng)));
  }
  return v;
}

std::vector<double> RandomBitPatterns(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> v;
  for (size_t i = 0; i < n; ++i) v.push_back(std::bit_cast<double>(rng()));
  return v;
}

std::vector<double> RandomDoubles(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1e6, 1e6);
  std::vector<double> v;
  for (size_t i = 0; i < n; ++i) v.push_back(u(rng));
  return v;
}

TEST(ChunkCodecV2Test, EachCodecIsChosenForItsData) {
  struct Case {
    const char* name;
    std::vector<double> values;
    std::vector<ChunkValueCodec> want;  // any of
    int exponent;
    uint32_t max_exceptions = 0;
  };
  std::vector<double> memory(1024, 41'943'040'000.0);
  for (size_t i = 500; i < memory.size(); ++i) memory[i] += 2'097'152.0;
  std::vector<double> sign_flips;  // float32 patterns one bit apart
  std::mt19937_64 rng(3);
  for (int i = 0; i < 1024; ++i) {
    sign_flips.push_back((rng() % 2 ? 1.0 : -1.0) *
                         static_cast<double>(0.1f * (1 + rng() % 2)));
  }
  const std::vector<Case> cases = {
      {"gpu_util", GpuUtil(1024, 1), {ChunkValueCodec::kInteger}, 0},
      {"memory", memory, {ChunkValueCodec::kInteger}, 0},
      {"watts", Watts(1024, 2), {ChunkValueCodec::kDecimal}, 1},
      {"loss",
       Float32Loss(1024, 3),
       {ChunkValueCodec::kFloat32Int, ChunkValueCodec::kXor32},
       0},
      {"sign_flips", sign_flips, {ChunkValueCodec::kXor32}, 0},
      // Uniform in +-1e6: random signs and ~20 exponents, most values in
      // the top few; either real-double codec may be the smaller.
      {"random",
       RandomDoubles(1024, 4),
       {ChunkValueCodec::kXor64, ChunkValueCodec::kAlpRd},
       0},
      // A rare outlier's exponent is not in the dictionary.
      {"computed_rates",
       ComputedRates(1024, 5),
       {ChunkValueCodec::kAlpRd},
       0,
       1024 / 100},
      {"bit_noise", RandomBitPatterns(1024, 6), {ChunkValueCodec::kXor64}, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string chunk = ExpectRoundTrip(Series(c.values));
    const ChunkDescription d = Describe(chunk);
    EXPECT_EQ(d.version, 2);
    EXPECT_THAT(c.want, ::testing::Contains(d.value_codec));
    EXPECT_EQ(d.decimal_exponent, c.exponent);
    EXPECT_LE(d.exceptions, c.max_exceptions);
    EXPECT_TRUE(d.regular_steps);
  }
}

TEST(ChunkCodecV2Test, LrScheduleIsFloat32AsIntegers) {
  // Linear warm-up then cosine decay computed in float32: smooth patterns,
  // so delta-of-deltas of the ordered patterns are tiny.
  std::vector<double> lr;
  for (int i = 0; i < 1024; ++i) {
    const float s = static_cast<float>(i + 5000);
    lr.push_back(static_cast<double>(
        1.5e-4f * (1.0f + std::cos(3.14159265f * s / 200000.0f))));
  }
  const std::string chunk = ExpectRoundTrip(Series(lr));
  EXPECT_EQ(Describe(chunk).value_codec, ChunkValueCodec::kFloat32Int);
}

TEST(ChunkCodecV2Test, FewOddValuesBecomeExceptions) {
  for (const std::vector<double>& base : {GpuUtil(1024, 5), Watts(1024, 6)}) {
    std::vector<double> v = base;
    v[0] = std::numeric_limits<double>::quiet_NaN();
    v[10] = -0.0;
    v[11] = std::numeric_limits<double>::infinity();
    v[500] = FromBits(0x7ff0000000000001);  // signaling NaN
    v[1023] = 1.0 / 3.0;
    const std::string chunk = ExpectRoundTrip(Series(v));
    const ChunkDescription d = Describe(chunk);
    EXPECT_TRUE(d.value_codec == ChunkValueCodec::kInteger ||
                d.value_codec == ChunkValueCodec::kDecimal);
    EXPECT_EQ(d.exceptions, 5u);
    // Far below the XOR fallback.
    EXPECT_LT(chunk.size(), 1024u * 3);
  }
}

TEST(ChunkCodecV2Test, Float32WithExceptions) {
  std::vector<double> v = Float32Loss(1024, 7);
  v[3] = 0.1;  // not a float32
  v[700] = FromBits(0x7ff4000000000001);
  const std::string chunk = ExpectRoundTrip(Series(v));
  const ChunkDescription d = Describe(chunk);
  EXPECT_TRUE(d.value_codec == ChunkValueCodec::kFloat32Int ||
              d.value_codec == ChunkValueCodec::kXor32);
  EXPECT_EQ(d.exceptions, 2u);
}

TEST(ChunkCodecV2Test, CompressesTelemetryFarBelowVersion1) {
  for (const std::vector<double>& v :
       {GpuUtil(1024, 8), Watts(1024, 9), Float32Loss(1024, 10)}) {
    const PointColumns p = Series(v);
    EXPECT_LT(Encode(p).size() * 10, EncodeV1(p).size() * 9);
  }
}

// Values drawn from one of several classes, switching class at random
// points, so that codecs see mixtures, exceptions and boundaries.
std::vector<double> MixedValues(size_t n, std::mt19937_64& rng) {
  std::vector<double> special = SpecialValues();
  std::vector<double> v;
  int kind = static_cast<int>(rng() % 8);
  double level = static_cast<double>(rng() % 1000);
  for (size_t i = 0; i < n; ++i) {
    if (rng() % 64 == 0) kind = static_cast<int>(rng() % 8);
    switch (kind) {
      case 0:  // small integers
        v.push_back(level + static_cast<double>(rng() % 5));
        break;
      case 1:  // decimals of 1..4 digits
        v.push_back(
            static_cast<double>(static_cast<int64_t>(rng() % 200000) - 100000) /
            std::pow(10.0, 1 + rng() % 4));
        break;
      case 2:  // float32 values
        v.push_back(static_cast<double>(
            std::bit_cast<float>(static_cast<uint32_t>(rng()))));
        break;
      case 3:  // any bit pattern
        v.push_back(FromBits(rng()));
        break;
      case 4:  // special values
        v.push_back(special[rng() % special.size()]);
        break;
      case 5:  // repeats
        v.push_back(v.empty() ? 0.0 : v.back());
        break;
      case 6:  // computed float64 (ALP_rd's data)
        v.push_back(524288.0 /
                    (0.5 + static_cast<double>(rng() % 4001) * 1e-5 - 0.02));
        break;
      default:  // big integers near 2^53
        v.push_back(static_cast<double>((int64_t{1} << 53) -
                                        static_cast<int64_t>(rng() % 1000)) *
                    (rng() % 2 ? 1 : -1));
    }
  }
  return v;
}

// A chunk of n points of one class, for the property test.
std::vector<double> ClassValues(int kind, size_t n, std::mt19937_64& rng) {
  switch (kind) {
    case 0:
      return GpuUtil(n, static_cast<uint32_t>(rng()));
    case 1:
      return Watts(n, static_cast<uint32_t>(rng()));
    case 2:
      return Float32Loss(n, static_cast<uint32_t>(rng()));
    case 3:
      return RandomDoubles(n, static_cast<uint32_t>(rng()));
    case 5: {  // ALP_rd, with some exceptions
      std::vector<double> v = ComputedRates(n, static_cast<uint32_t>(rng()));
      const std::vector<double> specials = SpecialValues();
      for (size_t i = rng() % 16; i < n; i += 16) {
        v[i] = specials[rng() % specials.size()];
      }
      return v;
    }
    default:
      return MixedValues(n, rng);
  }
}

TEST(ChunkCodecV2Test, PropertyRoundTrips) {
  std::mt19937_64 rng(4242);
  const std::vector<size_t> sizes = {1, 2, 3, 7, 8, 9, 63, 64, 65, 300, 1024};
  for (int iter = 0; iter < 400; ++iter) {
    const size_t n = sizes[rng() % sizes.size()];
    PointColumns p;
    std::vector<double> values =
        ClassValues(static_cast<int>(rng() % 6), n, rng);
    // Sprinkle odd values into some chunks.
    if (rng() % 3 == 0) {
      std::vector<double> special = SpecialValues();
      for (int k = static_cast<int>(rng() % 4); k > 0; --k) {
        values[rng() % n] = special[rng() % special.size()];
      }
    }
    const int step_kind = static_cast<int>(rng() % 3);
    const int time_kind = static_cast<int>(rng() % 3);
    uint64_t step = rng() % (uint64_t{1} << 40);
    uint64_t time = rng();  // wraps around: any int64 sequence is valid
    for (size_t i = 0; i < n; ++i) {
      p.push_back(step, static_cast<int64_t>(time), values[i]);
      step += step_kind == 0   ? kStep
              : step_kind == 1 ? 1 + rng() % 3
                               : 1 + rng() % (uint64_t{1} << 30);
      time += time_kind == 0   ? 500
              : time_kind == 1 ? 480 + rng() % 41
                               : (rng() >> 8) - (uint64_t{1} << 54);
    }
    SCOPED_TRACE(::testing::Message() << "iter " << iter << " n " << n);
    ExpectRoundTrip(p);
    if (HasFailure()) break;
  }
}

void ExpectValueStats(const PointColumns& p, const ChunkSummary& s) {
  if (p.size() < kMinPointsForValueStats) {
    EXPECT_FALSE(s.has_value_stats);
    return;
  }
  ASSERT_TRUE(s.has_value_stats);
  uint32_t nan = 0, pinf = 0, ninf = 0;
  double min = 0, max = 0, sum = 0;
  bool any = false;
  for (double v : p.values) {
    if (std::isnan(v)) {
      ++nan;
    } else if (std::isinf(v)) {
      ++(v > 0 ? pinf : ninf);
    } else {
      if (!any || v < min) min = v;
      if (!any || max < v) max = v;
      any = true;
      sum += v;
    }
  }
  EXPECT_EQ(s.nan_count, nan);
  EXPECT_EQ(s.pos_inf_count, pinf);
  EXPECT_EQ(s.neg_inf_count, ninf);
  EXPECT_EQ(s.finite_count(), p.size() - nan - pinf - ninf);
  EXPECT_EQ(Bits(s.min_value), Bits(min));
  EXPECT_EQ(Bits(s.max_value), Bits(max));
  EXPECT_EQ(Bits(s.sum), Bits(sum));
  EXPECT_EQ(Bits(s.first_value), Bits(p.values.front()));
  EXPECT_EQ(Bits(s.last_value), Bits(p.values.back()));
}

TEST(ChunkCodecV2Test, SummaryValueAggregates) {
  std::vector<double> v = Watts(100, 11);
  v[5] = std::numeric_limits<double>::quiet_NaN();
  v[6] = FromBits(0xfff8000000000001);  // negative NaN
  v[7] = std::numeric_limits<double>::infinity();
  v[8] = -std::numeric_limits<double>::infinity();
  v[9] = -std::numeric_limits<double>::infinity();
  v[10] = -1e300;
  v[99] = std::numeric_limits<double>::quiet_NaN();
  PointColumns p = Series(v);
  absl::StatusOr<ChunkSummary> s = ReadChunkSummary(Encode(p));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->nan_count, 3u);
  EXPECT_EQ(s->pos_inf_count, 1u);
  EXPECT_EQ(s->neg_inf_count, 2u);
  EXPECT_EQ(s->min_value, -1e300);
  EXPECT_TRUE(std::isnan(s->last_value));
  ExpectValueStats(p, *s);

  // No finite value at all; and every size around the threshold.
  std::vector<double> nans(20, std::numeric_limits<double>::quiet_NaN());
  nans[3] = -std::numeric_limits<double>::infinity();
  p = Series(nans);
  s = ReadChunkSummary(ExpectRoundTrip(p));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->finite_count(), 0u);
  EXPECT_EQ(s->sum, 0.0);
  ExpectValueStats(p, *s);
  for (size_t n = 1; n <= 12; ++n) {
    p = Series(Float32Loss(n, 12));
    s = ReadChunkSummary(ExpectRoundTrip(p));
    ASSERT_TRUE(s.ok());
    ExpectValueStats(p, *s);
  }
  std::mt19937_64 rng(13);
  for (int iter = 0; iter < 50; ++iter) {
    p = Series(MixedValues(1 + rng() % 300, rng));
    s = ReadChunkSummary(Encode(p));
    ASSERT_TRUE(s.ok());
    ExpectValueStats(p, *s);
  }
}

TEST(ChunkCodecV2Test, Version1ChunksStillDecode) {
  for (const PointColumns& p :
       {Telemetry(1, 1), Telemetry(1000, 2), WithValues(SpecialValues()),
        Series(GpuUtil(500, 3))}) {
    const std::string chunk = EncodeV1(p);
    ASSERT_EQ(chunk[0], '\x01');
    PointColumns got;
    ASSERT_TRUE(DecodeChunk(chunk, &got).ok());
    EXPECT_THAT(got.steps, ElementsAreArray(p.steps));
    EXPECT_THAT(got.times_ms, ElementsAreArray(p.times_ms));
    EXPECT_THAT(ValueBits(got.values), ElementsAreArray(ValueBits(p.values)));
    absl::StatusOr<ChunkSummary> s = ReadChunkSummary(chunk);
    ASSERT_TRUE(s.ok());
    ExpectSummaryEq(*s, ExpectedSummary(p));
    EXPECT_FALSE(s->has_value_stats);
    const ChunkDescription d = Describe(chunk);
    EXPECT_EQ(d.version, 1);
    EXPECT_EQ(d.value_codec, ChunkValueCodec::kGorillaV1);
  }
}

constexpr char kGoldenV1[] =
    "\x01\x03\xc0\x84\x3d\xc0\x8d\xb7\x01\xd0\x0f\x00\xf4\x03\x70\xf4\x24\x07"
    "\x1f\x47\x1f\xd9\xff\x80\x00\x00\x00\x00\x00\x03\x00\xcb\xff";

TEST(ChunkCodecV2Test, Version1GoldenBytes) {
  // Written by the version 1 encoder of release 0.1: steps 1e6, 2e6, 4e6;
  // times 1000, 1500, 1490; values 1.0, 1.0, -0.0.
  const std::string golden(kGoldenV1, sizeof(kGoldenV1) - 1);
  PointColumns got;
  ASSERT_TRUE(DecodeChunk(golden, &got).ok());
  EXPECT_THAT(got.steps, ElementsAreArray({kStep, 2 * kStep, 4 * kStep}));
  EXPECT_THAT(got.times_ms, ElementsAreArray({1000, 1500, 1490}));
  EXPECT_THAT(ValueBits(got.values),
              ElementsAreArray(ValueBits({1.0, 1.0, -0.0})));
}

// Chunks whose encodings the fingerprint below pins. Built from raw
// mt19937_64 outputs and exact arithmetic only (no <random> distributions,
// no libm), so the inputs are the same on every platform.
std::vector<PointColumns> StableSamples() {
  std::mt19937_64 rng(20240601);
  std::vector<PointColumns> chunks;
  const size_t sizes[] = {1, 2, 3, 5, 8, 9, 17, 64, 100, 257, 1000, 1024};
  for (int iter = 0; iter < 240; ++iter) {
    const size_t n = sizes[rng() % std::size(sizes)];
    const int value_kind = static_cast<int>(rng() % 10);
    const int step_kind = static_cast<int>(rng() % 3);
    const int time_kind = static_cast<int>(rng() % 4);
    PointColumns p;
    uint64_t step = rng() % (uint64_t{1} << 40);
    uint64_t time = 1'700'000'000'000 + rng() % 1'000'000;
    double level = static_cast<double>(rng() % 1000);
    float f = static_cast<float>(rng() % 1000) / 256.0f;
    for (size_t i = 0; i < n; ++i) {
      const uint64_t x = rng();
      double v = 0.0;
      switch (value_kind) {
        case 0:  // gpu util
          v = x % 32 == 0 ? static_cast<double>(x % 101)
                          : 96.0 + static_cast<double>(x % 5);
          break;
        case 1:  // watts, one decimal
          v = static_cast<double>(3000 + static_cast<int64_t>(x % 801)) / 10.0;
          break;
        case 2:  // float32 random walk
          f +=
              static_cast<float>(static_cast<int64_t>(x % 2001) - 1000) * 1e-4f;
          v = static_cast<double>(f);
          break;
        case 3:  // any bit pattern
          v = std::bit_cast<double>(x);
          break;
        case 4:  // mostly constant, rare jumps
          if (x % 500 == 0) level += static_cast<double>(x % 64) * 2097152.0;
          v = level;
          break;
        case 5:  // computed float64
          v = 524288.0 /
              (0.5 +
               static_cast<double>(static_cast<int64_t>(x % 41) - 20) * 0.001);
          break;
        case 6:  // float32 from random bits (NaN payloads included)
          v = static_cast<double>(
              std::bit_cast<float>(static_cast<uint32_t>(x)));
          break;
        case 7:  // decimals of 2 digits with a few odd values
          v = x % 97 == 0 ? std::bit_cast<double>(x)
                          : static_cast<double>(
                                static_cast<int64_t>(x % 20000) - 10000) /
                                100.0;
          break;
        case 8:  // slowly drifting integer
          if (x % 20 == 0) level += x % 40 < 20 ? 1.0 : -1.0;
          v = level;
          break;
        default:  // special values
          v = SpecialValues()[x % SpecialValues().size()];
          break;
      }
      p.push_back(step, static_cast<int64_t>(time), v);
      const uint64_t y = rng();
      step += step_kind == 0   ? kStep
              : step_kind == 1 ? 1 + y % 3
                               : 1 + y % (uint64_t{1} << 30);
      time += time_kind == 0   ? 500
              : time_kind == 1 ? 480 + y % 41
              : time_kind == 2 ? (y % 100 == 0 ? 5000 : 1000)
                               : (y >> 8) - (uint64_t{1} << 54);
    }
    chunks.push_back(std::move(p));
  }
  return chunks;
}

// The version 2 encoder's output is pinned: changing any encoder decision
// (or the layout) changes this fingerprint (FNV-1a over all encodings).
// Update it only deliberately, noting the size change; a layout change also
// needs docs/FORMAT.md. Every chunk must round-trip regardless.
TEST(ChunkCodecV2Test, EncodingsAreStable) {
  uint64_t hash = 0xcbf29ce484222325;
  size_t bytes = 0;
  for (const PointColumns& p : StableSamples()) {
    const std::string chunk = ExpectRoundTrip(p);
    bytes += chunk.size();
    for (const char c : chunk) {
      hash = (hash ^ static_cast<uint8_t>(c)) * 0x100000001b3;
    }
  }
  // 381,499 bytes before the ALP_rd codec (the computed float64 samples,
  // value kind 5, moved to it from XOR64).
  EXPECT_EQ(bytes, 377231u);
  EXPECT_EQ(hash, uint64_t{14756355278558674712u});
}

std::vector<std::string> CodecSamples() {
  std::mt19937_64 rng(99);
  std::vector<std::string> chunks;
  for (const std::vector<double>& v :
       {GpuUtil(300, 1), Watts(300, 2), Float32Loss(300, 3),
        RandomDoubles(300, 4), MixedValues(300, rng), GpuUtil(9, 5),
        Watts(2, 6), ComputedRates(300, 7)}) {
    chunks.push_back(Encode(Series(v)));
  }
  std::vector<double> rates = ComputedRates(300, 8);  // ALP_rd, exceptions
  rates[0] = std::numeric_limits<double>::quiet_NaN();
  rates[150] = -0.0;
  rates[299] = std::numeric_limits<double>::denorm_min();
  chunks.push_back(Encode(Series(rates)));
  std::vector<double> v = GpuUtil(300, 7);
  v[3] = std::numeric_limits<double>::quiet_NaN();
  v[200] = 0.5;
  chunks.push_back(Encode(Series(v)));
  PointColumns irregular = Series(Watts(200, 8));
  for (size_t i = 0; i < irregular.size(); ++i) irregular.steps[i] += i * i;
  chunks.push_back(Encode(irregular));
  return chunks;
}

TEST(ChunkCodecV2Test, EveryTruncationIsAnError) {
  for (const std::string& chunk : CodecSamples()) {
    for (size_t len = 0; len < chunk.size(); ++len) {
      PointColumns out;
      absl::Status s = DecodeChunk(chunk.substr(0, len), &out);
      EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << len << " " << s;
      EXPECT_TRUE(out.empty());
      (void)ReadChunkSummary(chunk.substr(0, len));
      (void)DescribeChunk(chunk.substr(0, len));
    }
  }
}

TEST(ChunkCodecV2Test, RandomCorruptionNeverCrashes) {
  std::mt19937_64 rng(2025);
  for (const std::string& chunk : CodecSamples()) {
    for (int iter = 0; iter < 1500; ++iter) {
      const std::string bad = Corrupted(chunk, rng);
      DecodeDamaged(bad);
      (void)DescribeChunk(bad);
    }
  }
}

TEST(ChunkCodecV2Test, HugeCountIsRejectedWithoutAllocating) {
  const std::string body(64, '\0');
  for (uint64_t count : {uint64_t{1} << 24, (uint64_t{1} << 24) + 1,
                         uint64_t{1} << 32, ~uint64_t{0}}) {
    // Flags 0, codec XOR64.
    const std::string chunk = Header2(count, 0, ~uint64_t{0} >> 1, 0, 0, 0) +
                              std::string("\x00\x01", 2) + body;
    PointColumns out;
    EXPECT_EQ(DecodeChunk(chunk, &out).code(), absl::StatusCode::kDataLoss)
        << count;
    EXPECT_EQ(out.steps.capacity(), 0u);
  }
}



// ---------------------------------------------------------------------------
// The ALP_rd value codec (kAlpRd): real doubles as a dictionary-coded left
// part and a fixed-width right part.

// Values of noise mantissas whose left parts (sign, exponent) take `lefts`
// distinct values, with every `special_every`-th value (0: none) replaced
// by a special value or random bits.
std::vector<double> AlpValues(size_t n, int lefts, size_t special_every,
                              std::mt19937_64& rng) {
  const std::vector<double> specials = SpecialValues();
  std::vector<double> v;
  for (size_t i = 0; i < n; ++i) {
    if (special_every != 0 && i % special_every == special_every - 1) {
      v.push_back(rng() % 2 ? specials[rng() % specials.size()]
                            : std::bit_cast<double>(rng()));
      continue;
    }
    const int which = static_cast<int>(rng() % static_cast<uint64_t>(lefts));
    const double sign = which % 2 ? -1.0 : 1.0;
    const double mantissa =
        1.0 + static_cast<double>(rng() >> 12) * 0x1p-52;  // [1, 2)
    v.push_back(sign * std::ldexp(mantissa, 10 + which / 2));
  }
  return v;
}

TEST(AlpRdTest, RoundTripsBitExactlyWithEveryDictionarySize) {
  std::mt19937_64 rng(31);
  uint32_t total_exceptions = 0;
  for (const int lefts : {1, 2, 3, 4, 5, 8}) {
    for (const size_t n : {size_t{2}, size_t{9}, size_t{100}, size_t{1000},
                           size_t{1500}}) {
      for (const size_t special_every : {size_t{0}, size_t{50}, size_t{97}}) {
        SCOPED_TRACE(::testing::Message() << "lefts " << lefts << " n " << n
                                          << " specials " << special_every);
        const std::vector<double> values =
            AlpValues(n, lefts, special_every, rng);
        const PointColumns p = Series(values);
        const std::string chunk = ExpectRoundTrip(p);
        if (n < 100) continue;
        const ChunkDescription d = Describe(chunk);
        EXPECT_EQ(d.value_codec, ChunkValueCodec::kAlpRd);
        const size_t specials = special_every == 0 ? 0 : n / special_every;
        EXPECT_LE(d.exceptions, specials);
        total_exceptions += d.exceptions;
        // The values alone (a follower has no step and time columns): an
        // index of bit_width(lefts - 1) bits and a 52-bit right part each,
        // plus the exceptions (or one more index bit instead of some).
        std::string follower;
        EncodeFollowerChunk(p.steps, p.times_ms, p.values, 1, &follower);
        const size_t index_bits = std::bit_width(static_cast<size_t>(lefts - 1));
        EXPECT_LE(follower.size(),
                  n * (53 + index_bits) / 8 + specials * 10 + 100);
      }
    }
  }
  EXPECT_GT(total_exceptions, 0u);
}

TEST(AlpRdTest, ComputedRatesAreSmallerThanTheXorCode) {
  const std::vector<double> rates = ComputedRates(1024, 12);
  const std::string chunk = ExpectRoundTrip(Series(rates));
  EXPECT_EQ(Describe(chunk).value_codec, ChunkValueCodec::kAlpRd);
  // The XOR code spent ~7.1 bytes a value on these, the time column and
  // header ~0.9 a point; ALP_rd ~6.4 (48-bit right parts, 2-bit indices).
  EXPECT_LT(chunk.size(), 1024u * 73 / 10);
}

// Past the thread-local scratch's kept size (64k entries), whose buffers
// are released after the chunk.
TEST(AlpRdTest, LargeChunkRoundTrips) {
  const std::string chunk = ExpectRoundTrip(Series(ComputedRates(70'000, 13)));
  EXPECT_EQ(Describe(chunk).value_codec, ChunkValueCodec::kAlpRd);
  // And a small one after it reuses the (released) scratch.
  ExpectRoundTrip(Series(ComputedRates(300, 14)));
}

TEST(AlpRdTest, EveryBitFlipDecodesOrFailsCleanly) {
  std::mt19937_64 rng(32);
  std::vector<double> values = AlpValues(40, 4, 9, rng);
  const std::string chunk = Encode(Series(values));
  ASSERT_EQ(Describe(chunk).value_codec, ChunkValueCodec::kAlpRd);
  int failed = 0;
  for (size_t bit = 0; bit < chunk.size() * 8; ++bit) {
    std::string bad = chunk;
    bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
    SCOPED_TRACE(bit);
    failed += DecodeDamaged(bad) ? 1 : 0;
    (void)DescribeChunk(bad);
  }
  EXPECT_GT(failed, 0);
}

// ---------------------------------------------------------------------------
// Format version 3: follower chunks sharing a leader's step and time columns.

namespace follower {

// The points of `p` with other values (a sibling metric of the same call).
PointColumns Sibling(const PointColumns& p, uint32_t seed) {
  std::mt19937_64 rng(seed);
  PointColumns q = p;
  for (double& v : q.values) v = static_cast<double>(rng() % 1000) / 10.0;
  return q;
}

std::string EncodeFollower(const PointColumns& p, uint32_t leader) {
  std::string out;
  EncodeFollowerChunk(p.steps, p.times_ms, p.values, leader, &out);
  return out;
}

// Every shape of columns the v2 tests use, as (leader points, follower
// points) pairs with identical steps and times.
std::vector<PointColumns> Shapes() {
  std::vector<PointColumns> shapes = {Telemetry(1, 1), Telemetry(2, 2),
                                      Telemetry(1000, 3),
                                      WithValues(SpecialValues())};
  PointColumns irregular = Series(Watts(200, 8));
  for (size_t i = 0; i < irregular.size(); ++i) irregular.steps[i] += i * i;
  shapes.push_back(irregular);
  std::mt19937_64 rng(5);
  for (const std::vector<double>& v :
       {GpuUtil(300, 1), Watts(300, 2), Float32Loss(300, 3),
        RandomDoubles(300, 4), MixedValues(300, rng), GpuUtil(9, 5)}) {
    shapes.push_back(Series(v));
  }
  PointColumns backwards = Telemetry(50, 9);  // times going any direction
  for (size_t i = 0; i < backwards.size(); i += 3) backwards.times_ms[i] -= 7000;
  shapes.push_back(backwards);
  return shapes;
}

TEST(ChunkCodecV3Test, FollowerRoundTripsBitExactly) {
  uint32_t seed = 1;
  for (const PointColumns& p : Shapes()) {
    for (const PointColumns& leader_points : {Sibling(p, seed), p}) {
      const std::string leader = Encode(leader_points);
      const std::string chunk = EncodeFollower(p, 42);
      PointColumns got;
      got.push_back(1, 2, 3.0);  // appends
      absl::Status s = DecodeFollowerChunk(chunk, leader, &got);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_EQ(got.size(), p.size() + 1);
      EXPECT_THAT(std::span(got.steps).subspan(1), ElementsAreArray(p.steps));
      EXPECT_THAT(std::span(got.times_ms).subspan(1),
                  ElementsAreArray(p.times_ms));
      got.values.erase(got.values.begin());
      EXPECT_THAT(ValueBits(got.values), ElementsAreArray(ValueBits(p.values)));
      // The header is complete: summaries need no leader.
      absl::StatusOr<ChunkSummary> follower_summary = ReadChunkSummary(chunk);
      absl::StatusOr<ChunkSummary> own_summary = ReadChunkSummary(Encode(p));
      ASSERT_TRUE(follower_summary.ok()) << follower_summary.status();
      ExpectSummaryEq(*follower_summary, ExpectedSummary(p));
      EXPECT_EQ(follower_summary->has_value_stats, own_summary->has_value_stats);
      EXPECT_EQ(Bits(follower_summary->sum), Bits(own_summary->sum));
      EXPECT_EQ(Bits(follower_summary->last_value),
                Bits(own_summary->last_value));
      const ChunkDescription d = Describe(chunk);
      EXPECT_EQ(d.version, 3);
      EXPECT_EQ(d.leader_series, 42u);
      EXPECT_EQ(d.value_codec, Describe(Encode(p)).value_codec);
      EXPECT_EQ(Describe(leader).leader_series, 0u);
      // Never larger than storing the columns.
      EXPECT_LE(chunk.size(), Encode(p).size() + 5);
    }
    ++seed;
  }
}

TEST(ChunkCodecV3Test, JitteredTimesCostNothingInAFollower) {
  const PointColumns p = Telemetry(1024, 11);
  const std::string own = Encode(p);
  const std::string follower = EncodeFollower(p, 3);
  // ~6.8 bits a point of time column are left out.
  EXPECT_LT(follower.size() * 8, own.size() * 8 - 6 * p.size());
}

// The follower chunks' bytes (their columns checks, both kinds, at every
// count mod 4) are pinned like EncodingsAreStable's: a check computed
// another way must still give the same value, or stored followers would
// no longer decode.
TEST(ChunkCodecV3Test, FollowerEncodingsAreStable) {
  uint64_t hash = 0xcbf29ce484222325;
  size_t bytes = 0;
  for (const PointColumns& p : StableSamples()) {
    for (size_t n : {p.size(), p.size() / 2 + 1, p.size() / 3 + 2, size_t{1},
                     size_t{2}, size_t{3}, size_t{5}}) {
      PointColumns q;
      for (size_t i = 0; i < n && i < p.size(); ++i) {
        q.push_back(p.steps[i], p.times_ms[i], p.values[i]);
      }
      std::string serial;
      internal::EncodeFollowerChunkSerialCheck(q.steps, q.times_ms, q.values,
                                               7, &serial);
      for (const std::string& chunk : {EncodeFollower(q, 7), serial}) {
        bytes += chunk.size();
        for (const char c : chunk) {
          hash = (hash ^ static_cast<uint8_t>(c)) * 0x100000001b3;
        }
      }
    }
  }
  EXPECT_EQ(bytes, 863068u);
  EXPECT_EQ(hash, 8230144561898293793u);
}

// Version 1 is still written: head fragments (the head log on disk) are
// version 1 chunks. Its bytes are pinned like EncodingsAreStable's, so that
// a faster encoder cannot change what older releases read back.
TEST(ChunkCodecV1Test, EncodingsAreStable) {
  uint64_t hash = 0xcbf29ce484222325;
  size_t bytes = 0;
  for (const PointColumns& p : StableSamples()) {
    for (size_t n : {p.size(), p.size() / 2 + 1, size_t{1}, size_t{2}}) {
      PointColumns q;
      for (size_t i = 0; i < n && i < p.size(); ++i) {
        q.push_back(p.steps[i], p.times_ms[i], p.values[i]);
      }
      std::string chunk;
      internal::EncodeChunkV1(q.steps, q.times_ms, q.values, &chunk);
      bytes += chunk.size();
      for (const char c : chunk) {
        hash = (hash ^ static_cast<uint8_t>(c)) * 0x100000001b3;
      }
      PointColumns out;
      ASSERT_TRUE(DecodeChunk(chunk, &out).ok());
      EXPECT_EQ(out.steps, q.steps);
      EXPECT_EQ(out.times_ms, q.times_ms);
      ASSERT_EQ(out.values.size(), q.values.size());
      for (size_t i = 0; i < q.values.size(); ++i) {
        EXPECT_EQ(std::bit_cast<uint64_t>(out.values[i]),
                  std::bit_cast<uint64_t>(q.values[i]));
      }
    }
  }
  EXPECT_EQ(bytes, 784439u);
  EXPECT_EQ(hash, 17853395594092280541u);
}

TEST(ChunkCodecV3Test, DecodeChunkRefusesAFollower) {
  const PointColumns p = Telemetry(100, 1);
  PointColumns out;
  absl::Status s = DecodeChunk(EncodeFollower(p, 9), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("series 9"));
  EXPECT_TRUE(out.empty());
  // And DecodeFollowerChunk refuses what is not a follower.
  EXPECT_EQ(DecodeFollowerChunk(Encode(p), Encode(p), &out).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ChunkCodecV3Test, WrongLeaderIsDataLoss) {
  const PointColumns p = Telemetry(100, 1);
  const std::string chunk = EncodeFollower(p, 9);
  PointColumns other_times = p;
  other_times.times_ms[50] += 1000;  // new max time
  PointColumns shorter = p;
  shorter.steps.pop_back();
  shorter.times_ms.pop_back();
  shorter.values.pop_back();
  PointColumns shifted = p;
  for (uint64_t& step : shifted.steps) step += kStep;
  std::string v1;
  internal::EncodeChunkV1(p.steps, p.times_ms, p.values, &v1);
  for (const std::string& leader :
       {Encode(other_times), Encode(shorter), Encode(shifted), v1,
        EncodeFollower(p, 8), std::string()}) {
    PointColumns out;
    absl::Status s = DecodeFollowerChunk(chunk, leader, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_TRUE(out.empty());
  }
}

TEST(ChunkCodecV3Test, EveryTruncationIsAnError) {
  for (const PointColumns& p : Shapes()) {
    const std::string leader = Encode(p);
    const std::string chunk = EncodeFollower(p, 300);
    for (size_t len = 0; len < chunk.size(); ++len) {
      PointColumns out;
      absl::Status s = DecodeFollowerChunk(chunk.substr(0, len), leader, &out);
      EXPECT_TRUE(s.code() == absl::StatusCode::kDataLoss ||
                  (len == 0 && s.code() != absl::StatusCode::kOk))
          << len << " " << s;
      EXPECT_TRUE(out.empty());
      (void)ReadChunkSummary(chunk.substr(0, len));
      (void)DescribeChunk(chunk.substr(0, len));
    }
    for (size_t len = 0; len < leader.size(); ++len) {
      PointColumns out;
      absl::Status s = DecodeFollowerChunk(chunk, leader.substr(0, len), &out);
      // A leader cut inside its value column still holds whole step and
      // time columns, which is all a follower reads of it.
      if (!s.ok()) {
        EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << len << " " << s;
        EXPECT_TRUE(out.empty());
      }
    }
  }
}

TEST(ChunkCodecV3Test, RandomCorruptionNeverCrashes) {
  std::mt19937_64 rng(2026);
  for (const PointColumns& p : Shapes()) {
    const std::string leader = Encode(p);
    const std::string chunk = EncodeFollower(p, 77);
    for (int iter = 0; iter < 500; ++iter) {
      const bool in_leader = iter % 2 == 0;
      const std::string bad = Corrupted(in_leader ? leader : chunk, rng);
      PointColumns out;
      absl::Status s = in_leader ? DecodeFollowerChunk(chunk, bad, &out)
                                 : DecodeFollowerChunk(bad, leader, &out);
      (void)DescribeChunk(bad);
      (void)ReadChunkSummary(bad);
      if (s.ok()) {
        // Whatever decodes is consistent with the follower's header.
        absl::StatusOr<ChunkSummary> summary =
            ReadChunkSummary(in_leader ? chunk : bad);
        ASSERT_TRUE(summary.ok());
        ExpectSummaryEq(*summary, ExpectedSummary(out));
      } else {
        EXPECT_TRUE(s.code() == absl::StatusCode::kDataLoss ||
                    s.code() == absl::StatusCode::kUnimplemented ||
                    s.code() == absl::StatusCode::kInvalidArgument)
            << s;
        EXPECT_TRUE(out.empty());
      }
    }
  }
}


// Followers written before the lane check (flag bit 2 clear, the serial
// ColumnsCheck) still decode, and both checks catch a leader whose
// columns have the follower's ranges but other points.
TEST(ChunkCodecV3Test, BothColumnChecksDecodeAndCatchAnotherLeader) {
  for (const PointColumns& p : Shapes()) {
    std::string serial;
    internal::EncodeFollowerChunkSerialCheck(p.steps, p.times_ms, p.values,
                                             42, &serial);
    const std::string lanes = EncodeFollower(p, 42);
    ASSERT_NE(serial, lanes);
    // Same size: only the check and one flag bit differ.
    EXPECT_EQ(serial.size(), lanes.size());
    const std::string leader = Encode(p);
    PointColumns other = p;  // same ranges, one time moved inside them
    if (p.size() >= 3) {
      const size_t mid = p.size() / 2;
      const int64_t lo = *std::min_element(p.times_ms.begin(), p.times_ms.end());
      const int64_t hi = *std::max_element(p.times_ms.begin(), p.times_ms.end());
      if (p.times_ms[mid] != lo && p.times_ms[mid] != hi &&
          p.times_ms[mid] + 1 < hi) {
        other.times_ms[mid] += 1;
      } else {
        other.steps.clear();
      }
    } else {
      other.steps.clear();
    }
    for (const std::string& chunk : {serial, lanes}) {
      PointColumns got;
      absl::Status s = DecodeFollowerChunk(chunk, leader, &got);
      ASSERT_TRUE(s.ok()) << s;
      EXPECT_EQ(got.steps, p.steps);
      EXPECT_EQ(got.times_ms, p.times_ms);
      EXPECT_EQ(ValueBits(got.values), ValueBits(p.values));
      if (!other.steps.empty()) {
        PointColumns out;
        s = DecodeFollowerChunk(chunk, Encode(other), &out);
        EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
        EXPECT_THAT(std::string(s.message()), HasSubstr("differ"));
        EXPECT_TRUE(out.empty());
      }
    }
  }
}

TEST(ChunkCodecV3Test, LaneCheckFlagOutsideAFollowerIsDataLoss) {
  PointColumns p;
  p.push_back(5, 1000, 1.5);
  std::string chunk = Encode(p);
  const size_t flags = Header2(1, 5, 0, 2000, 0, 0).size();  // zigzag(1000)
  ASSERT_EQ(chunk[flags], '\0');
  chunk[flags] = '\x04';
  PointColumns out;
  absl::Status s = DecodeChunk(chunk, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(ReadChunkSummary(chunk).status().code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace follower


// ---------------------------------------------------------------------------
// Decode kernels (storage/codec_kernels.h): both tables must decode every
// chunk to the same bits; the x86-64-v3 one is in use on CPUs that have it.

// The kernel tables this build and CPU can run.
std::vector<std::string> RunnableKernels() {
  std::vector<std::string> names = {"portable"};
  if (internal::UseCodecKernelsForTesting("x86-64-v3")) {
    names.push_back("x86-64-v3");
  }
  return names;
}

// Restores the kernels chosen at startup when a test ends.
class KernelsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    ASSERT_TRUE(internal::UseCodecKernelsForTesting(start_.c_str()));
  }
  const std::string start_ = internal::ActiveCodecKernels().name;
};

TEST_F(KernelsTest, X86V3KernelsAreUsedWhenTheCpuHasThem) {
#if defined(__x86_64__) && defined(STEPDB_HAVE_X86V3_KERNELS)
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("x86-64-v3");
  const char* force = std::getenv("STEPDB_CODEC_KERNELS");
  const bool forced = force != nullptr && std::string(force) == "portable";
  EXPECT_EQ(start_, v3 && !forced ? "x86-64-v3" : "portable");
  EXPECT_EQ(internal::UseCodecKernelsForTesting("x86-64-v3"), v3);
#else
  EXPECT_EQ(start_, "portable");
#endif
  EXPECT_TRUE(internal::UseCodecKernelsForTesting("portable"));
  EXPECT_STREQ(internal::ActiveCodecKernels().name, "portable");
  EXPECT_FALSE(internal::UseCodecKernelsForTesting("no-such-kernels"));
  EXPECT_STREQ(internal::ActiveCodecKernels().name, "portable");
}

// Random code widths {w1, w2} (w1 <= w2 <= 55): every third iteration the
// fixed shape (w1 == w2), else the plain one.
std::pair<int, int> RandomCodeWidths(int iter, std::mt19937_64& rng) {
  const int w2 = 1 + static_cast<int>(rng() % 55);
  const int w1 = iter % 3 == 0 ? w2 : static_cast<int>(rng() % (w2 + 1));
  return {w1, w2};
}

// Writes m random codes of the plain shape (a quarter of them wide) or of
// the fixed one (w1 == w2); returns their values.
std::vector<uint64_t> WriteRandomCodes(int w1, int w2, size_t m,
                                       std::mt19937_64& rng, BitWriter* w) {
  std::vector<uint64_t> codes(m);
  for (size_t i = 0; i < m; ++i) {
    const bool wide = w1 != w2 && rng() % 4 == 0;
    const int width = wide ? w2 : w1;
    codes[i] = width == 0 ? 0 : rng() >> (64 - width);
    if (w1 != w2) w->WriteBit(wide);
    w->Write(codes[i], width);
  }
  return codes;
}

// Writes codes of the plain shape (or the fixed one, w1 == w2) for z with
// the reference BitWriter, then unpacks them with each kernel table, from
// every bit offset 0..7, and compares with the codes (unpack_fixed) or
// their integration (unpack_sum, against the integrate kernel, which the
// next test checks against a scalar reference) and with the reader
// position a checked BitReader reaches.
TEST_F(KernelsTest, UnpackMatchesTheBitReader) {
  std::mt19937_64 rng(77);
  for (const std::string& name : RunnableKernels()) {
    ASSERT_TRUE(internal::UseCodecKernelsForTesting(name.c_str()));
    const internal::CodecKernels& k = internal::ActiveCodecKernels();
    for (int iter = 0; iter < 300; ++iter) {
      const auto [w1, w2] = RandomCodeWidths(iter, rng);
      const bool fixed = w1 == w2;
      const size_t m = rng() % 200;
      const int lead = static_cast<int>(rng() % 8);
      std::string bytes;
      BitWriter w(&bytes);
      w.Write(0, lead);
      const std::vector<uint64_t> want = WriteRandomCodes(w1, w2, m, rng, &w);
      w.Write(0x5a, 8);  // a marker after the codes
      w.Finish();
      SCOPED_TRACE(::testing::Message() << name << " w1 " << w1 << " w2 "
                                        << w2 << " m " << m << " lead "
                                        << lead);
      BitReader r(bytes);
      r.Skip(lead);
      const BitReader::RawState s = r.raw_state();
      internal::KernelBits bits = {s.p, s.end, s.buf, s.avail};
      // unpack_fixed gives the codes; unpack_sum (both shapes) what
      // integrate makes of them, with a random order, base and start.
      const int order = static_cast<int>(rng() % 3);
      const uint64_t base = rng(), prev = rng(), delta = rng();
      std::vector<uint64_t> want_sum(m);
      k.integrate(order, want.data(), m, base, prev, delta, want_sum.data());
      const bool raw = fixed && iter % 2 == 0;
      std::vector<uint64_t> got(m + 1, ~uint64_t{0});
      const size_t done =
          raw ? k.unpack_fixed(&bits, m, w2, got.data())
              : k.unpack_sum(&bits, m, w1, w2, order, base, prev, delta,
                             got.data());
      ASSERT_LE(done, m);
      EXPECT_LE(bits.p, bits.end);
      EXPECT_EQ(got[m], ~uint64_t{0});  // nothing written past m
      for (size_t i = 0; i < done; ++i) {
        ASSERT_EQ(got[i], raw ? want[i] : want_sum[i]) << i;
      }
      // The reader continues where the kernel stopped: the next codes and
      // then the marker.
      r.set_raw_state({bits.p, bits.end, bits.buf, bits.avail});
      for (size_t i = done; i < m; ++i) {
        if (!fixed) {
          const bool wide = r.ReadBit();
          ASSERT_EQ(r.Read(wide ? w2 : w1), want[i]) << i;
        } else {
          ASSERT_EQ(r.Read(w2), want[i]) << i;
        }
      }
      EXPECT_EQ(r.Read(8), 0x5au);
      EXPECT_TRUE(r.ok());
      // With 8 bytes or more left, the kernel stops only at m.
      if (done < m) {
        EXPECT_LT(bits.end - bits.p, 8);
      }
    }
  }
}

// unpack_sum_check writes what unpack_sum writes, and leaves the columns
// check as columns_check over the same points would, with the range of the
// times it wrote; from any point (lane) it starts at.
TEST_F(KernelsTest, UnpackSumCheckMatchesUnpackSumThenTheCheck) {
  std::mt19937_64 rng(79);
  for (const std::string& name : RunnableKernels()) {
    ASSERT_TRUE(internal::UseCodecKernelsForTesting(name.c_str()));
    const internal::CodecKernels& k = internal::ActiveCodecKernels();
    for (int iter = 0; iter < 300; ++iter) {
      const auto [w1, w2] = RandomCodeWidths(iter, rng);
      const size_t m = rng() % 600;
      const size_t head = rng() % 6;  // points mixed before the kernel's
      const size_t n = head + m;
      std::string bytes;
      BitWriter w(&bytes);
      WriteRandomCodes(w1, w2, m, rng, &w);
      w.Write(0, 32);  // so that the kernel unpacks every code
      w.Write(0, 32);
      w.Finish();
      const int order = static_cast<int>(rng() % 3);
      const uint64_t base = rng(), prev = rng(), delta = rng();
      std::vector<uint64_t> steps(n), want(n), got(n);
      for (size_t i = 0; i < n; ++i) steps[i] = rng();
      for (size_t i = 0; i < head; ++i) want[i] = got[i] = rng();
      SCOPED_TRACE(::testing::Message()
                   << name << " w1 " << w1 << " w2 " << w2 << " m " << m
                   << " head " << head << " order " << order);
      const BitReader::RawState s = BitReader(bytes).raw_state();
      internal::KernelBits bits = {s.p, s.end, s.buf, s.avail};
      const size_t done = k.unpack_sum(&bits, m, w1, w2, order, base, prev,
                                       delta, want.data() + head);
      const auto start = [&](const std::vector<uint64_t>& times) {
        internal::KernelColumnsCheck c = {
            .steps = steps.data(),
            .times = times.data(),
            .lane = {rng(), rng(), rng(), rng()},
            .next = 0,
            .min_time = std::numeric_limits<int64_t>::max(),
            .max_time = std::numeric_limits<int64_t>::min()};
        return c;
      };
      internal::KernelColumnsCheck want_check = start(want);
      internal::KernelColumnsCheck got_check = want_check;
      got_check.times = got.data();
      k.columns_check(&want_check, head + done);
      k.columns_check(&got_check, head);
      bits = {s.p, s.end, s.buf, s.avail};
      ASSERT_EQ(k.unpack_sum_check(&bits, m, w1, w2, order, base, prev, delta,
                                   got.data() + head, &got_check),
                done);
      for (size_t i = 0; i < head + done; ++i) ASSERT_EQ(got[i], want[i]) << i;
      EXPECT_EQ(got_check.next, head + done);
      for (int j = 0; j < 4; ++j) {
        EXPECT_EQ(got_check.lane[j], want_check.lane[j]) << j;
      }
      int64_t lo = std::numeric_limits<int64_t>::max();
      int64_t hi = std::numeric_limits<int64_t>::min();
      for (size_t i = head; i < head + done; ++i) {
        lo = std::min(lo, static_cast<int64_t>(want[i]));
        hi = std::max(hi, static_cast<int64_t>(want[i]));
      }
      EXPECT_EQ(got_check.min_time, lo);
      EXPECT_EQ(got_check.max_time, hi);
    }
  }
}

TEST_F(KernelsTest, IntegrateAndMapMatchScalarReference) {
  std::mt19937_64 rng(78);
  for (const std::string& name : RunnableKernels()) {
    ASSERT_TRUE(internal::UseCodecKernelsForTesting(name.c_str()));
    const internal::CodecKernels& k = internal::ActiveCodecKernels();
    for (int iter = 0; iter < 200; ++iter) {
      const size_t m = 1 + rng() % 300;
      const int order = iter % 3;
      // Small and huge magnitudes: the int -> double fast path covers
      // |v| < 2^51 only.
      const int width = iter % 5 == 0 ? 64 : 1 + static_cast<int>(rng() % 40);
      std::vector<uint64_t> z(m);
      for (uint64_t& v : z) v = width == 64 ? rng() : rng() >> (64 - width);
      const uint64_t base = rng() % 1000;
      const uint64_t prev = rng(), delta = rng() % 100;
      std::vector<uint64_t> want(m);
      uint64_t p = prev, d = delta;
      for (size_t i = 0; i < m; ++i) {
        const uint64_t r = ((z[i] >> 1) ^ (~(z[i] & 1) + 1)) + base;
        if (order == 0) {
          want[i] = r;
        } else if (order == 1) {
          want[i] = p += r;
        } else {
          d += r;
          want[i] = p += d;
        }
      }
      std::vector<uint64_t> got(m);
      k.integrate(order, z.data(), m, base, prev, delta, got.data());
      ASSERT_EQ(got, want) << name << " order " << order;
      std::vector<double> out(m);
      k.map_integer(got.data(), m, out.data());
      for (size_t i = 0; i < m; ++i) {
        ASSERT_EQ(Bits(out[i]),
                  Bits(static_cast<double>(static_cast<int64_t>(got[i]))));
      }
      k.map_decimal(got.data(), m, 1e3, out.data());
      for (size_t i = 0; i < m; ++i) {
        ASSERT_EQ(Bits(out[i]),
                  Bits(static_cast<double>(static_cast<int64_t>(got[i])) /
                       1e3));
      }
      int64_t lo, hi;
      k.min_max(reinterpret_cast<const int64_t*>(got.data()), m, &lo, &hi);
      std::vector<int64_t> t(m);
      std::memcpy(t.data(), got.data(), m * sizeof(int64_t));
      EXPECT_EQ(lo, *std::min_element(t.begin(), t.end()));
      EXPECT_EQ(hi, *std::max_element(t.begin(), t.end()));
    }
    // float32 patterns as ordered integers, every class of pattern.
    std::vector<uint32_t> patterns = {0, 0x80000000u, 1, 0x80000001u,
                                      0x7f800000u, 0xff800000u, 0x7fc00001u,
                                      0xffc12345u, 0x00400000u, 0x3f800000u};
    for (int j = 0; j < 1000; ++j) patterns.push_back(static_cast<uint32_t>(rng()));
    std::vector<uint64_t> ordered;
    for (const uint32_t b : patterns) {
      ordered.push_back((b >> 31) != 0
                            ? static_cast<uint64_t>(
                                  -static_cast<int64_t>(b & 0x7fffffff) - 1)
                            : b);
    }
    std::vector<double> out(ordered.size());
    k.map_float32(ordered.data(), ordered.size(), out.data());
    for (size_t i = 0; i < patterns.size(); ++i) {
      const double want =
          static_cast<double>(std::bit_cast<float>(patterns[i]));
      ASSERT_EQ(Bits(out[i]), Bits(want)) << name << " " << patterns[i];
    }
  }
}

TEST_F(KernelsTest, AlpRdSplitAndJoinMatchScalarReference) {
  std::mt19937_64 rng(80);
  for (const std::string& name : RunnableKernels()) {
    ASSERT_TRUE(internal::UseCodecKernelsForTesting(name.c_str()));
    const internal::CodecKernels& k = internal::ActiveCodecKernels();
    for (int iter = 0; iter < 200; ++iter) {
      const int right_bits = 48 + static_cast<int>(rng() % 8);
      const size_t n = rng() % 300;
      const int entries = 1 + static_cast<int>(rng() % 8);
      uint64_t dict[8];
      for (int j = 0; j < 8; ++j) {
        dict[j] = j < entries ? rng() >> right_bits : dict[0];
      }
      std::vector<double> v(n);
      for (size_t i = 0; i < n; ++i) {
        const uint64_t left = rng() % 5 == 0 ? rng() >> right_bits
                                             : dict[rng() % entries];
        const uint64_t low = rng() >> (64 - right_bits);
        v[i] = std::bit_cast<double>(left << right_bits | low);
      }
      std::vector<uint64_t> idx(n + 1, 99), right(n + 1, 99);
      const size_t misses = k.alp_rd_split(v.data(), n, right_bits, dict,
                                           idx.data(), right.data());
      size_t want_misses = 0;
      for (size_t i = 0; i < n; ++i) {
        const uint64_t bits = std::bit_cast<uint64_t>(v[i]);
        uint64_t want = 8;
        for (int j = 7; j >= 0; --j) {
          if (dict[j] == bits >> right_bits) want = static_cast<uint64_t>(j);
        }
        want_misses += want == 8;
        ASSERT_EQ(idx[i], want) << name << " " << i;
        ASSERT_EQ(right[i], bits & ((uint64_t{1} << right_bits) - 1));
      }
      EXPECT_EQ(misses, want_misses);
      EXPECT_EQ(idx[n], 99u);  // nothing written past n
      EXPECT_EQ(right[n], 99u);
      // Join: hits come back bit-exactly; so does everything with a
      // one-entry dictionary and no index array.
      for (size_t i = 0; i < n; ++i) idx[i] &= 7;
      std::vector<double> out(n + 1, 1.0);
      k.alp_rd_join(idx.data(), right.data(), n, dict, right_bits,
                    out.data());
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(Bits(out[i]), dict[idx[i]] << right_bits | right[i]);
      }
      EXPECT_EQ(out[n], 1.0);
      k.alp_rd_join(nullptr, right.data(), n, dict, right_bits, out.data());
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(Bits(out[i]), dict[0] << right_bits | right[i]);
      }
    }
  }
}

// The encoder's planning kernels against plain scalar references: the
// width histograms at sample points, the runs shape's run-length bits, the
// decimal mapping, and the regular step column.
TEST_F(KernelsTest, EncoderKernelsMatchScalarReference) {
  std::mt19937_64 rng(81);
  const auto width = [](uint64_t v) { return std::bit_width(v); };
  const auto zigzag = [](uint64_t v) {
    return (v << 1) ^ static_cast<uint64_t>(static_cast<int64_t>(v) >> 63);
  };
  for (const std::string& name : RunnableKernels()) {
    ASSERT_TRUE(internal::UseCodecKernelsForTesting(name.c_str()));
    const internal::CodecKernels& k = internal::ActiveCodecKernels();
    SCOPED_TRACE(name);
    for (int iter = 0; iter < 300; ++iter) {
      // Some columns span several blocks of the run-length kernel.
      const size_t n = 1 + rng() % (iter % 10 == 3 ? 5000 : 700);
      // Columns with long and short runs of equal differences (zero
      // residuals) and some noise of every width.
      std::vector<uint64_t> u(n);
      uint64_t v = rng(), d = rng() % 100;
      for (size_t i = 0; i < n; ++i) {
        // Every 11th column is regular: runs longer than 255.
        const int kind = iter % 11 == 0 ? 2 : static_cast<int>(rng() % 16);
        if (kind == 0) d = rng() >> (rng() % 64);
        if (kind == 1) v += rng() % 7;
        if (iter % 7 == 0 && rng() % 3 == 0) v = rng();
        u[i] = v += d;
      }
      const uint64_t base[3] = {iter % 5 == 0 ? rng() : u[n / 2], d, 0};
      const int orders = 1 + static_cast<int>(rng() % 7);
      // Histograms at sample points.
      if (n >= 3) {
        const size_t first = 2 + rng() % 3;
        const size_t stride = 1 + rng() % 4;
        const size_t count = first < n ? (n - 1 - first) / stride + 1 : 0;
        std::vector<uint32_t> got(3 * 65, 1), want(3 * 65, 1);
        k.sample_histograms(u.data(), first, stride, count, base, orders,
                            got.data());
        for (size_t j = 0; j < count; ++j) {
          const size_t i = first + j * stride;
          const uint64_t d1 = u[i] - u[i - 1];
          const uint64_t d2 = d1 - (u[i - 1] - u[i - 2]);
          const uint64_t r[3] = {u[i], d1, d2};
          for (int o = 0; o < 3; ++o) {
            if ((orders >> o & 1) != 0) {
              ++want[o * 65 + width(zigzag(r[o] - base[o]))];
            }
          }
        }
        ASSERT_EQ(got, want) << "n " << n << " orders " << orders;
      }
      // Run-length bits: a running count, cut at 255.
      for (int order = 0; order <= 2 && static_cast<size_t>(order) < n;
           ++order) {
        uint64_t want = 0, run = 0;
        for (size_t i = order; i < n; ++i) {
          uint64_t diff = u[i];
          if (order >= 1) diff = u[i] - u[i - 1];
          if (order == 2) diff -= u[i - 1] - u[i - 2];
          if (diff == base[order]) {
            if (++run == 255) {
              want += 16;
              run = 0;
            }
          } else {
            want += 2 * width(run);
            run = 0;
          }
        }
        want += 2 * width(run);
        ASSERT_EQ(k.run_bits(u.data(), n, order, base[order]), want)
            << "n " << n << " order " << order;
      }
      // Regular steps.
      std::vector<uint64_t> steps(n + 1, 7);
      k.arithmetic(u[0], d, n, steps.data());
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(steps[i], u[0] + i * d);
      EXPECT_EQ(steps[n], 7u);
    }
    // Decimals: values of 0-3 decimals, float32 and real doubles, huge and
    // special values; a mapped value is the integer of the scalar rule.
    for (int e = 1; e <= 10; ++e) {
      const double pow10 = std::pow(10.0, e);
      std::vector<double> v = {0.0, -0.0, 1e300, -1e300, 2.5e15, 1e-300,
                               std::numeric_limits<double>::infinity(),
                               std::numeric_limits<double>::quiet_NaN(),
                               std::numeric_limits<double>::denorm_min()};
      for (int j = 0; j < 300; ++j) {
        const int64_t i = static_cast<int64_t>(rng() % 2000001) - 1000000;
        switch (j % 4) {
          case 0:
            v.push_back(static_cast<double>(i) / pow10);
            break;
          case 1:
            v.push_back(static_cast<double>(i) / 10.0);
            break;
          case 2:
            v.push_back(static_cast<float>(static_cast<double>(i) / 7.0));
            break;
          default:
            v.push_back(std::bit_cast<double>(rng()));
            break;
        }
      }
      std::vector<uint64_t> got(v.size() + 1, 5);
      const size_t misses =
          k.decimal_patterns(v.data(), v.size(), pow10, got.data());
      size_t want_misses = 0;
      for (size_t j = 0; j < v.size(); ++j) {
        const double scaled = v[j] * pow10;
        const bool in_range = std::fabs(scaled) < 2251799813685248.0;
        const int64_t i =
            in_range ? static_cast<int64_t>(std::nearbyint(scaled)) : 0;
        const bool hit = in_range && Bits(static_cast<double>(i) / pow10) ==
                                         Bits(v[j]);
        want_misses += hit ? 0 : 1;
        if (hit) {
          ASSERT_EQ(got[j], static_cast<uint64_t>(i)) << e << " " << v[j];
        }
      }
      EXPECT_EQ(misses, want_misses) << "e " << e;
      EXPECT_EQ(got[v.size()], 5u);
    }
  }
}

// Every chunk of the property corpus, and every truncation of some, decodes
// to the same bits (or the same error) with each kernel table.
// n points of a random ClassValues kind, steps regular (kStep apart) or
// irregular, times ~500 ms apart with jitter.
PointColumns RandomClassPoints(size_t n, bool regular_steps,
                               std::mt19937_64& rng) {
  const std::vector<double> values =
      ClassValues(static_cast<int>(rng() % 6), n, rng);
  PointColumns p;
  uint64_t step = rng() % 1000;
  int64_t time = 1'717'000'000'000;
  for (size_t i = 0; i < n; ++i) {
    p.push_back(step, time, values[i]);
    step += regular_steps ? kStep : 1 + rng() % 5;
    time += 480 + static_cast<int64_t>(rng() % 41);
  }
  return p;
}

// The encoder's kernels (sizing, statistics, packing) must make the same
// bytes whichever table runs them: chunks written on one machine are read
// and compared (duplicates, pinned tests) on another.
TEST_F(KernelsTest, EveryKernelTableEncodesTheSameBytes) {
  std::mt19937_64 rng(83);
  const std::vector<std::string> names = RunnableKernels();
  for (int iter = 0; iter < 300; ++iter) {
    const size_t n = 1 + rng() % (iter % 10 == 0 ? 5000 : 1500);
    const PointColumns p = RandomClassPoints(n, iter % 3 == 0, rng);
    std::vector<std::string> chunks;
    for (const std::string& name : names) {
      ASSERT_TRUE(internal::UseCodecKernelsForTesting(name.c_str()));
      chunks.push_back(Encode(p));
    }
    for (size_t j = 1; j < chunks.size(); ++j) {
      EXPECT_EQ(chunks[j], chunks[0]) << names[j] << " vs " << names[0]
                                      << ", chunk " << iter << ", " << n
                                      << " points";
    }
  }
}

TEST_F(KernelsTest, ChunksDecodeTheSameWithEveryKernelTable) {
  std::mt19937_64 rng(79);
  const std::vector<std::string> names = RunnableKernels();
  for (int iter = 0; iter < 200; ++iter) {
    const size_t n = 1 + rng() % 1500;
    const PointColumns p = RandomClassPoints(n, iter % 2 == 0, rng);
    const std::vector<double>& values = p.values;
    const std::string chunk = Encode(p);
    std::vector<std::string> cuts = {chunk};
    if (iter % 10 == 0) {
      for (size_t len = 0; len < chunk.size(); len += 1 + chunk.size() / 50) {
        cuts.push_back(chunk.substr(0, len));
      }
    }
    for (const std::string& bytes : cuts) {
      std::vector<std::pair<absl::Status, PointColumns>> results;
      for (const std::string& name : names) {
        ASSERT_TRUE(internal::UseCodecKernelsForTesting(name.c_str()));
        PointColumns out;
        absl::Status s = DecodeChunk(bytes, &out);
        results.emplace_back(s, std::move(out));
      }
      if (bytes.size() == chunk.size()) {
        ASSERT_TRUE(results[0].first.ok()) << results[0].first;
        EXPECT_EQ(ValueBits(results[0].second.values), ValueBits(values));
      } else {
        EXPECT_FALSE(results[0].first.ok());
      }
      for (size_t j = 1; j < results.size(); ++j) {
        EXPECT_EQ(results[j].first, results[0].first) << names[j];
        EXPECT_EQ(results[j].second.steps, results[0].second.steps);
        EXPECT_EQ(results[j].second.times_ms, results[0].second.times_ms);
        EXPECT_EQ(ValueBits(results[j].second.values),
                  ValueBits(results[0].second.values));
      }
    }
    if (HasFailure()) break;
  }
}

}  // namespace
}  // namespace stepdb::storage
