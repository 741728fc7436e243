#include "storage/shared_columns.h"

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "storage/keys.h"

namespace stepdb::storage {

std::string ColumnGroupKey(std::string_view run_data_prefix,
                           const Labels& labels) {
  // Names hold no NUL byte (series_key.h), so NUL separators are
  // unambiguous, as in the series identity.
  std::string key(run_data_prefix);
  for (const auto& [k, v] : labels) {
    key.append(k);
    key.push_back('\0');
    key.append(v);
    key.push_back('\0');
  }
  return key;
}

uint64_t HashColumns(std::span<const uint64_t> steps,
                     std::span<const int64_t> times_ms) {
  // Abseil's hash: 16 KB a 1024-point chunk, where libstdc++'s murmur hash
  // took ~3 % of the sealer's time.
  const absl::Hash<absl::string_view> hash;
  const uint64_t a = hash(absl::string_view(
      reinterpret_cast<const char*>(steps.data()), steps.size_bytes()));
  const uint64_t b = hash(absl::string_view(
      reinterpret_cast<const char*>(times_ms.data()), times_ms.size_bytes()));
  return a ^ (b * 0x9e3779b97f4a7c15ULL);
}

std::string LeaderCache::Key(std::string_view group, uint64_t first_step) {
  std::string key(group);
  AppendBigEndian64(first_step, &key);
  return key;
}

std::optional<SeriesId> LeaderCache::Find(std::string_view group,
                                          uint64_t first_step, uint64_t hash,
                                          SeriesId follower) const {
  auto it = entries_.find(Key(group, first_step));
  if (it == entries_.end() || it->second.hash != hash ||
      it->second.series >= follower) {
    return std::nullopt;
  }
  return it->second.series;
}

void LeaderCache::Add(std::string_view group, uint64_t first_step,
                      uint64_t hash, SeriesId series) {
  std::string key = Key(group, first_step);
  auto [it, inserted] = entries_.try_emplace(key, Entry{hash, series});
  if (!inserted) {
    if (series < it->second.series) it->second = Entry{hash, series};
    return;
  }
  order_.push_back(std::move(key));
  while (order_.size() > capacity_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
}

const PointColumns* RecentLeaderColumns::Find(SeriesId leader,
                                              uint64_t first_step) const {
  auto it = entries_.find(Key{leader, first_step});
  return it == entries_.end() ? nullptr : &it->second;
}

void RecentLeaderColumns::Add(SeriesId leader, std::span<const uint64_t> steps,
                              std::span<const int64_t> times_ms) {
  const Key key{leader, steps.front()};
  PointColumns columns;
  columns.steps.assign(steps.begin(), steps.end());
  columns.times_ms.assign(times_ms.begin(), times_ms.end());
  if (Bytes(columns) > max_bytes_) return;
  auto [it, inserted] = entries_.try_emplace(key);
  if (!inserted) bytes_ -= Bytes(it->second);
  bytes_ += Bytes(columns);
  it->second = std::move(columns);
  if (inserted) order_.push_back(key);
  while (bytes_ > max_bytes_) {
    auto oldest = entries_.find(order_.front());
    bytes_ -= Bytes(oldest->second);
    entries_.erase(oldest);
    order_.pop_front();
  }
}

void RecentLeaderColumns::Clear() {
  entries_.clear();
  order_.clear();
  bytes_ = 0;
}

}  // namespace stepdb::storage
