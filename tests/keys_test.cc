#include "storage/keys.h"

#include <string>

#include "gtest/gtest.h"
#include "storage/series_key.h"

namespace stepdb::storage {
namespace {

TEST(KeysTest, DataKeysSortBySeriesThenStep) {
  // Big-endian: byte order equals numeric order, including across the
  // 255 -> 256 boundary that little-endian would get wrong.
  EXPECT_LT(DataKey(1, 1, 1, 255), DataKey(1, 1, 1, 256));
  EXPECT_LT(DataKey(1, 1, 1, uint64_t{1} << 40), DataKey(1, 1, 2, 0));
  EXPECT_LT(DataKey(1, 2, 9, 0), DataKey(2, 1, 1, 0));
  // Every key of a run starts with project then run.
  const std::string key = DataKey(7, 9, 11, 13);
  EXPECT_EQ(key.substr(0, 8), SeriesDataPrefix(7, 9, 11).substr(0, 8));
  EXPECT_EQ(key.size(), kDataKeySize);
}

TEST(KeysTest, ParseDataKeyRoundTrips) {
  DataKeyParts parts;
  ASSERT_TRUE(ParseDataKey(DataKey(0xFFFFFFFF, 2, 3, ~uint64_t{0}), &parts));
  EXPECT_EQ(parts.project, 0xFFFFFFFFu);
  EXPECT_EQ(parts.run, 2u);
  EXPECT_EQ(parts.series, 3u);
  EXPECT_EQ(parts.first_step, ~uint64_t{0});
  EXPECT_FALSE(ParseDataKey("short", &parts));
}

SeriesKey Key(std::string metric, Labels labels = {}) {
  return SeriesKey{"proj", "run-1", std::move(metric), std::move(labels)};
}

TEST(SeriesKeyTest, ValidKeysPass) {
  EXPECT_TRUE(ValidateSeriesKey(Key("train/loss")).ok());
  EXPECT_TRUE(ValidateSeriesKey(Key("gpu/util", {{"gpu", "3"}, {"node", "n12"}})).ok());
  EXPECT_TRUE(ValidateSeriesKey(Key("verlust/über")).ok());
  EXPECT_TRUE(ValidateSeriesKey(Key(std::string(kMaxMetricBytes, 'm'))).ok());
}

TEST(SeriesKeyTest, BadKeysNameTheField) {
  auto message = [](const SeriesKey& k) {
    return std::string(ValidateSeriesKey(k).message());
  };
  SeriesKey k = Key("");
  EXPECT_EQ(ValidateSeriesKey(k).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(message(k), "metric: empty");
  k = Key("loss");
  k.project = "";
  EXPECT_EQ(message(k), "project: empty");
  k = Key("loss");
  k.run = std::string(kMaxRunBytes + 1, 'r');
  EXPECT_EQ(message(k), "run: 129 bytes, more than the limit of 128");
  EXPECT_EQ(message(Key(std::string(kMaxMetricBytes + 1, 'm'))),
            "metric: 1025 bytes, more than the limit of 1024");
  EXPECT_EQ(message(Key("bad\xC3(utf8")), "metric: not valid UTF-8");
  EXPECT_EQ(message(Key(std::string("nul\0byte", 8))), "metric: contains a NUL byte");
  EXPECT_EQ(message(Key("loss", {{"gpu", ""}})), "label \"gpu\" value: empty");
  Labels many;
  for (size_t i = 0; i <= kMaxLabels; ++i) many.emplace_back("k" + std::to_string(1000 + i), "v");
  EXPECT_EQ(message(Key("loss", many)), "labels: 33 labels, more than the limit of 32");
}

TEST(SeriesKeyTest, CanonicalizeSortsAndRejectsRepeats) {
  Labels labels = {{"node", "n1"}, {"gpu", "0"}};
  ASSERT_TRUE(CanonicalizeLabels(&labels).ok());
  EXPECT_EQ(labels[0].first, "gpu");
  Labels repeated = {{"gpu", "0"}, {"gpu", "1"}};
  EXPECT_EQ(CanonicalizeLabels(&repeated).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SeriesKeyTest, IdentityRoundTrips) {
  const SeriesKey key = Key("train/loss", {{"gpu", "3"}, {"node", "n=12,x"}});
  SeriesKey parsed{"proj", "run-1", "", {}};
  ASSERT_TRUE(ParseSeriesIdentity(SeriesIdentity(key), &parsed).ok());
  EXPECT_EQ(parsed, key);
  EXPECT_EQ(SeriesDisplayName(key), "proj/run-1/train/loss{gpu=3,node=n=12,x}");
  EXPECT_FALSE(ParseSeriesIdentity(std::string("a\0b", 3), &parsed).ok());
}

}  // namespace
}  // namespace stepdb::storage
