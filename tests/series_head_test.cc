#include "storage/series_head.h"

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <span>

#include "gtest/gtest.h"

namespace stepdb::storage {
namespace {

// The compressed head must behave exactly as the three uncompressed
// columns it replaced: same points, bit for bit, after any sequence of
// appends (prepared fragments or not) and cuts of its first points, read
// whole or by range.
TEST(SeriesHeadTest, MatchesUncompressedColumnsUnderRandomAppendsAndCuts) {
  std::mt19937_64 rng(42);
  const double specials[] = {std::numeric_limits<double>::quiet_NaN(),
                             std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity(), -0.0,
                             std::numeric_limits<double>::denorm_min(), 0.1};
  for (int round = 0; round < 200; ++round) {
    SeriesHead head;
    PointColumns want;
    uint64_t step = rng() % 1000 * 1'000'000;
    int64_t time = static_cast<int64_t>(rng() % 2'000'000'000'000);
    for (int op = 0; op < 40; ++op) {
      if (rng() % 4 == 0 && head.WantsMerge()) {
        const size_t bytes = head.bytes();
        ASSERT_TRUE(head.MergeSmallTail().ok());
        EXPECT_FALSE(head.WantsMerge());
        EXPECT_LE(head.bytes(), bytes);
      } else if (rng() % 5 == 0 && !want.empty()) {
        const size_t k = rng() % (want.size() + 1);
        ASSERT_TRUE(head.DropFirst(k).ok());
        PointColumns rest;
        for (size_t i = k; i < want.size(); ++i) {
          rest.push_back(want.steps[i], want.times_ms[i], want.values[i]);
        }
        want = rest;
      } else {
        PointColumns add;
        // Half of the appends small enough for merges.
        const size_t n = 1 + rng() % (rng() % 2 == 0 ? 5 : 30);
        for (size_t i = 0; i < n; ++i) {
          step += rng() % 3 == 0 ? 1 + rng() % 5'000'000 : 1'000'000;
          time += static_cast<int64_t>(rng() % 200) - 50;  // any direction
          const double value = rng() % 4 == 0 ? specials[rng() % 6]
                                              : std::sin(step * 1e-7) * 3;
          add.push_back(step, time, value);
        }
        std::string fragment;
        if (rng() % 2 == 0) {
          internal::EncodeChunkV1(add.steps, add.times_ms, add.values, &fragment);
        }
        head.Append(add.steps, add.times_ms, add.values, fragment);
        for (size_t i = 0; i < n; ++i) {
          want.push_back(add.steps[i], add.times_ms[i], add.values[i]);
        }
      }
      ASSERT_EQ(head.size(), want.size());
      ASSERT_EQ(head.empty(), want.empty());
      if (!want.empty()) {
        ASSERT_EQ(head.first_step(), want.steps[0]);
      }
      // A range read decodes only some fragments: it must give exactly the
      // points a filter of the whole head gives (random step and time
      // bounds, often cutting through fragments, often outside the head).
      ReadRange range;
      if (!want.empty() && rng() % 4 != 0) {
        range.steps.from = want.steps[rng() % want.size()] - rng() % 2;
        range.steps.to = range.steps.from + rng() % (20 * 1'000'000);
      }
      if (!want.empty() && rng() % 3 == 0) {
        range.times.from_ms = want.times_ms[rng() % want.size()] - 100;
        range.times.to_ms = range.times.from_ms + static_cast<int64_t>(rng() % 3000);
      }
      PointColumns in_range, want_in_range;
      ASSERT_TRUE(head.DecodeRange(range, &in_range).ok());
      AppendInRange(want, range, &want_in_range);
      ASSERT_EQ(in_range.steps, want_in_range.steps);
      ASSERT_EQ(in_range.times_ms, want_in_range.times_ms);
      for (size_t i = 0; i < want_in_range.size(); ++i) {
        ASSERT_EQ(std::bit_cast<uint64_t>(in_range.values[i]),
                  std::bit_cast<uint64_t>(want_in_range.values[i]));
      }
      PointColumns got;
      ASSERT_TRUE(head.Decode(&got).ok());
      ASSERT_EQ(got.steps, want.steps);
      ASSERT_EQ(got.times_ms, want.times_ms);
      ASSERT_EQ(got.values.size(), want.values.size());
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(std::bit_cast<uint64_t>(got.values[i]),
                  std::bit_cast<uint64_t>(want.values[i]));
      }
    }
  }
}

TEST(SeriesHeadTest, IsSmallerThanTheColumns) {
  SeriesHead head;
  for (uint64_t s = 0; s < 1000; s += 4) {
    const uint64_t steps[] = {s * 1'000'000, (s + 1) * 1'000'000,
                              (s + 2) * 1'000'000, (s + 3) * 1'000'000};
    const int64_t t = 1'700'000'000'000 + static_cast<int64_t>(s) * 100;
    const int64_t times[] = {t, t + 100, t + 200, t + 300};
    const double values[] = {0.5, 0.25, 0.125, 0.0625};
    head.Append(steps, times, values, {});
  }
  EXPECT_EQ(head.size(), 1000u);
  // Even 4-point fragments (a header of about 20 bytes each, values that
  // do not compress) with up to a quarter of growth slack stay below the
  // 24 bytes a point of the columns (which had up to double slack).
  EXPECT_LT(head.bytes(), 1000u * 24);
}

// Small write batches (an SDK flushing every few steps, a million series)
// make fragments that are mostly header; merging them as the engine's
// sealer does keeps a head near the size of one fragment of its points.
TEST(SeriesHeadTest, MergingSmallFragmentsShrinksTheHead) {
  SeriesHead merged, unmerged;
  int merges = 0;
  for (uint64_t s = 0; s < 256; s += 4) {
    uint64_t steps[4];
    int64_t times[4];
    double values[4];
    for (uint64_t i = 0; i < 4; ++i) {
      steps[i] = (s + i) * 1'000'000;
      times[i] = 1'700'000'000'000 + static_cast<int64_t>((s + i) * 500 + i % 3);
      values[i] = static_cast<double>(static_cast<float>(2.5 - (s + i) * 1e-3));
    }
    merged.Append(steps, times, values, {});
    unmerged.Append(steps, times, values, {});
    EXPECT_FALSE(unmerged.WantsMerge() && s < 4 * 3);  // 4 fragments needed
    if (merged.WantsMerge()) {
      ASSERT_TRUE(merged.MergeSmallTail().ok());
      ++merges;
    }
  }
  EXPECT_GT(merges, 0);
  EXPECT_TRUE(unmerged.WantsMerge());
  PointColumns a, b;
  ASSERT_TRUE(merged.Decode(&a).ok());
  ASSERT_TRUE(unmerged.Decode(&b).ok());
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.times_ms, b.times_ms);
  EXPECT_EQ(a.values, b.values);
  EXPECT_LT(merged.bytes() * 2, unmerged.bytes());
}

// A cut keeps the fragments after it byte for byte (a seal must not pay
// for re-encoding the rest of the head), re-encodes only the fragment it
// falls into, and the small-tail bookkeeping follows the kept fragments.
TEST(SeriesHeadTest, DropFirstReencodesOnlyTheFragmentItCuts) {
  auto fragment_of = [](uint64_t first, size_t n, PointColumns* all) {
    PointColumns p;
    for (uint64_t i = first; i < first + n; ++i) {
      p.push_back(i * 1'000'000, 1'700'000'000'000 + static_cast<int64_t>(i * 500),
                  std::cos(static_cast<double>(i)));
      all->push_back(p.steps.back(), p.times_ms.back(), p.values.back());
    }
    return p;
  };
  for (size_t cut : {1, 19, 20, 21, 45, 60, 61, 63}) {
    SeriesHead head;
    PointColumns all;
    size_t tail_bytes = 0;  // the small fragments' frames
    // Three 20-point fragments, then four small ones (3 points each).
    for (uint64_t f = 0; f < 3; ++f) {
      PointColumns p = fragment_of(f * 20, 20, &all);
      head.Append(p.steps, p.times_ms, p.values, {});
    }
    for (uint64_t f = 0; f < 4; ++f) {
      PointColumns p = fragment_of(60 + f * 3, 3, &all);
      head.Append(p.steps, p.times_ms, p.values, {});
      std::string encoded;
      internal::EncodeChunkV1(p.steps, p.times_ms, p.values, &encoded);
      tail_bytes += 4 + encoded.size();
    }
    ASSERT_TRUE(head.WantsMerge());
    ASSERT_TRUE(head.DropFirst(cut).ok()) << cut;
    ASSERT_EQ(head.size(), all.size() - cut);
    EXPECT_EQ(head.first_step(), all.steps[cut]);
    PointColumns got;
    ASSERT_TRUE(head.Decode(&got).ok());
    EXPECT_EQ(got.steps, std::vector(all.steps.begin() + cut, all.steps.end()));
    EXPECT_EQ(got.values, std::vector(all.values.begin() + cut, all.values.end()));
    // The four small fragments (or what is left of them) are still a small
    // tail: a cut inside them leaves one re-encoded small fragment plus the
    // rest, fewer than four only when whole ones were dropped.
    EXPECT_EQ(head.WantsMerge(), cut <= 61) << cut;
    if (cut == 60) {
      // Exactly the small fragments remain, as they were appended.
      EXPECT_EQ(head.bytes(), tail_bytes);
    }
  }
}

// A merge takes the small fragments at the end and nothing before them;
// a head emptied by a cut holds no buffer any more.
TEST(SeriesHeadTest, MergeTakesOnlyTheSmallTailAndEmptyingFreesTheBuffer) {
  SeriesHead head;
  std::string big[3];  // encodings of the three 20-point fragments
  PointColumns small;  // the small fragments' points
  for (uint64_t f = 0; f < 7; ++f) {
    const uint64_t first = f < 3 ? f * 20 : 60 + (f - 3) * 3;
    const size_t n = f < 3 ? 20 : 3;
    PointColumns p;
    for (uint64_t i = first; i < first + n; ++i) {
      p.push_back(i * 1'000'000, 1'700'000'000'000 + static_cast<int64_t>(i * 500),
                  std::cos(static_cast<double>(i)));
      if (f >= 3) small.push_back(p.steps.back(), p.times_ms.back(), p.values.back());
    }
    if (f < 3) internal::EncodeChunkV1(p.steps, p.times_ms, p.values, &big[f]);
    head.Append(p.steps, p.times_ms, p.values, {});
  }
  ASSERT_TRUE(head.WantsMerge());
  ASSERT_TRUE(head.MergeSmallTail().ok());
  EXPECT_FALSE(head.WantsMerge());
  // Cutting the first fragment away leaves the second and third byte for
  // byte, then the one merged fragment of the 12 small points.
  ASSERT_TRUE(head.DropFirst(20).ok());
  std::string merged;
  internal::EncodeChunkV1(small.steps, small.times_ms, small.values, &merged);
  EXPECT_EQ(head.bytes(), 4 + big[1].size() + 4 + big[2].size() + 4 + merged.size());
  ASSERT_EQ(head.size(), 52u);
  ASSERT_TRUE(head.DropFirst(52).ok());
  EXPECT_TRUE(head.empty());
  EXPECT_EQ(head.bytes(), 0u);  // nothing on the heap
}

// A seal replaces a head by the head without its sealed points: when that
// is empty, the old allocation must go with it.
TEST(SeriesHeadTest, AssigningAnEmptiedHeadFreesTheBuffer) {
  SeriesHead head;
  PointColumns p;
  for (uint64_t i = 0; i < 100; ++i) {
    p.push_back(i * 1'000'000, static_cast<int64_t>(i * 500),
                std::sin(static_cast<double>(i)));
  }
  head.Append(p.steps, p.times_ms, p.values, {});
  ASSERT_GT(head.bytes(), 100u);
  SeriesHead rest = head;
  ASSERT_TRUE(rest.DropFirst(rest.size()).ok());
  head = std::move(rest);
  EXPECT_TRUE(head.empty());
  EXPECT_EQ(head.bytes(), 0u);
}

// With a million heads, growth slack is memory: a head grows by about a
// quarter (rounded to the allocator's size class), never by doubling.
TEST(SeriesHeadTest, GrowsByAQuarterNotByDoubling) {
  SeriesHead head;
  size_t framed = 0;  // bytes of the frames appended
  size_t worst = 0;   // largest capacity / size seen, in percent
  for (uint64_t i = 0; i < 2000; i += 20) {
    PointColumns p;
    for (uint64_t j = i; j < i + 20; ++j) {
      p.push_back(j * 1'000'000, 1'700'000'000'000 + static_cast<int64_t>(j * 500),
                  std::sin(static_cast<double>(j)));
    }
    std::string encoded;
    internal::EncodeChunkV1(p.steps, p.times_ms, p.values, &encoded);
    framed += 4 + encoded.size();
    head.Append(p.steps, p.times_ms, p.values, encoded);
    if (framed > 1000) worst = std::max(worst, head.bytes() * 100 / framed);
  }
  EXPECT_LE(worst, 150u);  // 125 % plus the size-class rounding
}

}  // namespace
}  // namespace stepdb::storage
