#include "storage/log_refs.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace stepdb::storage {
namespace {

void ExpectSame(const LogRefs& refs, const std::vector<LogRefs::Ref>& want) {
  ASSERT_EQ(refs.size(), want.size());
  EXPECT_EQ(refs.empty(), want.empty());
  const std::vector<LogRefs::Ref> got = refs.ToVector();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].seq, want[i].seq) << i;
    EXPECT_EQ(got[i].last_step, want[i].last_step) << i;
  }
}

// Behaves as the vector it replaced under random appends and cuts,
// including values that go backwards and the extremes of uint64.
TEST(LogRefsTest, MatchesAVectorUnderRandomAppendsAndErases) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 100; ++round) {
    LogRefs refs;
    std::vector<LogRefs::Ref> want;
    uint64_t seq = rng() % 1000, step = rng() % 10 * 1'000'000;
    for (int op = 0; op < 200; ++op) {
      if (rng() % 6 == 0) {
        const size_t n = want.empty() ? 0 : rng() % (want.size() + 1);
        refs.EraseFirst(n);
        want.erase(want.begin(), want.begin() + static_cast<std::ptrdiff_t>(n));
      } else if (rng() % 50 == 0) {
        refs.Clear();
        want.clear();
      } else {
        switch (rng() % 9) {
          case 0: seq = rng(); break;            // anywhere
          case 1: step = UINT64_MAX - rng() % 3; break;
          case 2: step = rng() % 2; break;       // backwards
          case 3: step = rng(); break;           // jumps of any size
          case 4: step += 1 + rng() % 999'999; break;  // micro-steps
          default:
            seq += rng() % 3;
            step += 1'000'000 * (1 + rng() % 8);
        }
        refs.Append({seq, step});
        want.push_back({seq, step});
      }
      ExpectSame(refs, want);
    }
  }
}

TEST(LogRefsTest, IsAFewBytesAReference) {
  LogRefs refs;
  uint64_t step = 123'000'000;
  for (uint64_t seq = 5'000'000; seq < 5'000'040; ++seq) {
    refs.Append({seq, step += 4'000'000});  // 4-step fragments, one a group
  }
  EXPECT_EQ(refs.size(), 40u);
  EXPECT_LE(refs.bytes(), 128u);  // 4 + 39 * 2 bytes, and the growth slack
  // 1 byte of seq delta and 1 of step delta (whole steps), after a first
  // of 4 + 1.
  const std::vector<LogRefs::Ref> all = refs.ToVector();
  EXPECT_EQ(all.front().seq, 5'000'000u);
  EXPECT_EQ(all.back().last_step, 123'000'000u + 40 * 4'000'000u);
  refs.EraseFirst(39);
  ExpectSame(refs, {{5'000'039, 123'000'000u + 40 * 4'000'000u}});
  refs.Clear();
  EXPECT_EQ(refs.bytes(), 0u);  // the buffer is freed, not kept
}

}  // namespace
}  // namespace stepdb::storage
