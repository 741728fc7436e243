#include "storage/chunk_codec.h"

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/bit_stream.h"

namespace stepdb::storage {
namespace {

using ::testing::ElementsAreArray;

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
  for (int version : {0, 2, 0x81, 0xff}) {
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

TEST(ChunkCodecTest, InconsistentHeaderIsDataLoss) {
  // Steps 0, 1e6, 2e6; times 10, 5, 20; first time 10 zigzags to 20.
  PointColumns p;
  p.push_back(0, 10, 1.0);
  p.push_back(kStep, 5, 2.0);
  p.push_back(2 * kStep, 20, 3.0);
  const std::string chunk = Encode(p);
  const std::string header = Header(3, 0, 2 * kStep, 20, 5, 10);
  ASSERT_EQ(chunk.substr(0, header.size()), header) << "format drifted";
  const std::string body = chunk.substr(header.size());

  auto decode = [&](const std::string& h) {
    PointColumns out;
    return DecodeChunk(h + body, &out).code();
  };
  EXPECT_EQ(decode(header), absl::StatusCode::kOk);
  // Wrong last step (still a plausible span).
  EXPECT_EQ(decode(Header(3, 0, 3 * kStep, 20, 5, 10)),
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

TEST(ChunkCodecTest, RandomCorruptionNeverCrashes) {
  std::vector<std::string> chunks = {Encode(Telemetry(1, 1)),
                                     Encode(Telemetry(500, 2)),
                                     Encode(WithValues(SpecialValues()))};
  std::mt19937_64 rng(2024);
  int decoded = 0;
  int failed = 0;
  for (const std::string& chunk : chunks) {
    for (int iter = 0; iter < 3000; ++iter) {
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
      PointColumns out;
      absl::Status s = DecodeChunk(bad, &out);
      if (s.ok()) {
        ++decoded;
        absl::StatusOr<ChunkSummary> summary = ReadChunkSummary(bad);
        ASSERT_TRUE(summary.ok());
        // Whatever decodes is consistent with its own header.
        ExpectSummaryEq(*summary, ExpectedSummary(out));
      } else {
        ++failed;
        EXPECT_TRUE(s.code() == absl::StatusCode::kDataLoss ||
                    s.code() == absl::StatusCode::kUnimplemented)
            << s;
        EXPECT_TRUE(out.empty());
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

}  // namespace
}  // namespace stepdb::storage
