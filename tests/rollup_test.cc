// Rollup records (storage/rollup.h): pieces cut on the grid, exact round
// trips of every value (NaN payloads, -0.0, +-Inf, float64-only values),
// and corrupt records refused without reading outside them.
#include "storage/rollup.h"

#include <bit>
#include <cmath>
#include <limits>
#include <random>

#include "gtest/gtest.h"
#include "storage/engine.h"

namespace stepdb::storage {
namespace {

constexpr uint64_t S = kMicrosPerStep;

uint64_t Bits(double v) { return std::bit_cast<uint64_t>(v); }

void ExpectSamePieces(const std::vector<RollupPiece>& got,
                      const std::vector<RollupPiece>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("piece " + std::to_string(i));
    EXPECT_EQ(got[i].first_step, want[i].first_step);
    EXPECT_EQ(got[i].last_step, want[i].last_step);
    EXPECT_EQ(got[i].min_time_ms, want[i].min_time_ms);
    EXPECT_EQ(got[i].max_time_ms, want[i].max_time_ms);
    EXPECT_EQ(got[i].count, want[i].count);
    EXPECT_EQ(got[i].nan_count, want[i].nan_count);
    EXPECT_EQ(got[i].pos_inf_count, want[i].pos_inf_count);
    EXPECT_EQ(got[i].neg_inf_count, want[i].neg_inf_count);
    EXPECT_EQ(Bits(got[i].first), Bits(want[i].first));
    EXPECT_EQ(Bits(got[i].last), Bits(want[i].last));
    EXPECT_EQ(Bits(got[i].min), Bits(want[i].min));
    EXPECT_EQ(Bits(got[i].max), Bits(want[i].max));
    EXPECT_EQ(Bits(got[i].sum), Bits(want[i].sum));
  }
}

TEST(RollupTest, PiecesFollowTheGrid) {
  PointColumns p;
  // Steps 100..355, width 128 steps: cells [0,127], [128,255], [256,383].
  for (uint64_t s = 100; s < 356; ++s) {
    p.push_back(s * S, 1000 + static_cast<int64_t>(s) * 10,
                static_cast<double>(s));
  }
  std::vector<RollupPiece> pieces;
  BuildRollupPieces(p.steps, p.times_ms, p.values, 128 * S, &pieces);
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0].first_step, 100 * S);
  EXPECT_EQ(pieces[0].last_step, 127 * S);
  EXPECT_EQ(pieces[0].count, 28u);
  EXPECT_EQ(pieces[1].first_step, 128 * S);
  EXPECT_EQ(pieces[1].count, 128u);
  EXPECT_EQ(pieces[1].min, 128.0);
  EXPECT_EQ(pieces[1].max, 255.0);
  EXPECT_EQ(pieces[1].sum, (128.0 + 255.0) * 128 / 2);
  EXPECT_EQ(pieces[1].min_time_ms, 1000 + 1280);
  EXPECT_EQ(pieces[2].last_step, 355 * S);
  EXPECT_EQ(pieces[2].count, 100u);

  // Too many cells for one record: the grid is coarsened.
  pieces.clear();
  BuildRollupPieces(p.steps, p.times_ms, p.values, 1 * S, &pieces);
  EXPECT_LE(pieces.size(), kMaxRollupPieces);
  uint64_t points = 0;
  for (const RollupPiece& piece : pieces) points += piece.count;
  EXPECT_EQ(points, p.size());
}

TEST(RollupTest, RoundTripsEveryValueExactly) {
  std::mt19937_64 rng(3);
  const double special[] = {
      std::numeric_limits<double>::quiet_NaN(),
      -std::numeric_limits<double>::quiet_NaN(),
      std::bit_cast<double>(uint64_t{0x7ff0000000000123}),  // NaN payload
      std::numeric_limits<double>::infinity(),
      -std::numeric_limits<double>::infinity(),
      -0.0,
      0.1,  // not a float32
      std::numeric_limits<double>::denorm_min(),
  };
  // Decoded into across rounds: a vector holding another record's pieces
  // (often as many) must come out exactly as a fresh one.
  std::vector<RollupPiece> reused;
  for (int round = 0; round < 200; ++round) {
    PointColumns p;
    uint64_t step = (rng() % 1000) * (round % 2 ? S : 1);
    int64_t time = static_cast<int64_t>(rng() % (uint64_t{1} << 62)) -
                   (int64_t{1} << 61);
    const size_t n = 1 + rng() % 300;
    for (size_t i = 0; i < n; ++i) {
      step += round % 2 ? S * (1 + rng() % 3) : 1 + rng() % (2 * S);
      time += static_cast<int64_t>(rng() % 2000) - 1000;
      double v = static_cast<float>(static_cast<double>(rng() % 10000) / 7);
      if (rng() % 8 == 0) v = special[rng() % std::size(special)];
      p.push_back(step, time, v);
    }
    std::vector<RollupPiece> pieces;
    BuildRollupPieces(p.steps, p.times_ms, p.values,
                      uint64_t{1} << (rng() % 40), &pieces);
    std::string encoded;
    EncodeRollup(pieces, p.steps.front(), &encoded);
    std::vector<RollupPiece> decoded;
    ASSERT_TRUE(DecodeRollup(encoded, p.steps.front(), &decoded).ok());
    ExpectSamePieces(decoded, pieces);
    ASSERT_TRUE(DecodeRollup(encoded, p.steps.front(), &reused).ok());
    ExpectSamePieces(reused, pieces);

    // Every truncation and a trailing byte are refused.
    for (size_t len = 0; len < encoded.size(); ++len) {
      const absl::Status s =
          DecodeRollup(std::string_view(encoded).substr(0, len),
                       p.steps.front(), &decoded);
      ASSERT_TRUE(absl::IsDataLoss(s)) << len << ": " << s;
      ASSERT_TRUE(decoded.empty());  // no partial pieces after an error
    }
    EXPECT_TRUE(absl::IsDataLoss(
        DecodeRollup(encoded + '\0', p.steps.front(), &decoded)));
  }
}

TEST(RollupTest, RefusesUnknownVersionsAndGarbage) {
  std::vector<RollupPiece> pieces;
  EXPECT_TRUE(absl::IsUnimplemented(DecodeRollup(std::string_view("\x02\x00", 2), 0, &pieces)));
  std::mt19937_64 rng(5);
  for (int i = 0; i < 20000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    if (!junk.empty()) junk[0] = 1;
    // Any outcome but a crash or an out-of-bounds read (ASan) is fine; a
    // record that does decode has strictly increasing pieces.
    if (DecodeRollup(junk, rng(), &pieces).ok()) {
      for (size_t k = 1; k < pieces.size(); ++k) {
        EXPECT_GT(pieces[k].first_step, pieces[k - 1].last_step);
      }
    }
  }
}

}  // namespace
}  // namespace stepdb::storage
