#include "storage/keys.h"

namespace stepdb::storage {

void AppendBigEndian32(uint32_t v, std::string* out) {
  char buf[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                 static_cast<char>(v >> 8), static_cast<char>(v)};
  out->append(buf, 4);
}

void AppendBigEndian64(uint64_t v, std::string* out) {
  AppendBigEndian32(static_cast<uint32_t>(v >> 32), out);
  AppendBigEndian32(static_cast<uint32_t>(v), out);
}

uint32_t ReadBigEndian32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) |
         (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

uint64_t ReadBigEndian64(const char* p) {
  return (uint64_t{ReadBigEndian32(p)} << 32) | ReadBigEndian32(p + 4);
}

std::string ProjectIndexKey(std::string_view project) {
  std::string key(1, kProjectTag);
  key.append(project);
  return key;
}

std::string RunIndexKey(ProjectId project, std::string_view run) {
  std::string key(1, kRunTag);
  AppendBigEndian32(project, &key);
  key.append(run);
  return key;
}

std::string SeriesIndexKey(ProjectId project, RunId run,
                           std::string_view identity) {
  std::string key(1, kSeriesTag);
  AppendBigEndian32(project, &key);
  AppendBigEndian32(run, &key);
  key.append(identity);
  return key;
}

std::string SealedStatsKey(SeriesId series) {
  std::string key(1, kSealedTag);
  AppendBigEndian32(series, &key);
  return key;
}

std::string IdHighWaterKey() { return std::string(1, kIdHighWaterTag); }

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty() && static_cast<unsigned char>(end.back()) == 0xff) {
    end.pop_back();
  }
  if (!end.empty()) end.back() = static_cast<char>(end.back() + 1);
  return end;
}

std::string ProjectDataPrefix(ProjectId project) {
  std::string key;
  AppendBigEndian32(project, &key);
  return key;
}

std::string RunDataPrefix(ProjectId project, RunId run) {
  std::string key = ProjectDataPrefix(project);
  AppendBigEndian32(run, &key);
  return key;
}

std::string RunMetaKey(std::string_view project, std::string_view run) {
  std::string key = ProjectMetaPrefix(kRunMetaTag, project);
  key.append(run);
  return key;
}

std::string ProjectMetaPrefix(char tag, std::string_view project) {
  std::string key(1, tag);
  key.append(project);
  key.push_back('\0');
  return key;
}

std::string SeriesDataPrefix(ProjectId project, RunId run, SeriesId series) {
  std::string key;
  key.reserve(kDataKeySize);
  AppendBigEndian32(project, &key);
  AppendBigEndian32(run, &key);
  AppendBigEndian32(series, &key);
  return key;
}

std::string DataKey(ProjectId project, RunId run, SeriesId series,
                    uint64_t first_step) {
  std::string key = SeriesDataPrefix(project, run, series);
  AppendBigEndian64(first_step, &key);
  return key;
}

std::string RollupKey(std::string_view series_prefix, char tier,
                      uint64_t first_step) {
  std::string key;
  key.reserve(kRollupKeySize);
  key.append(series_prefix);
  key.push_back(tier);
  AppendBigEndian64(first_step, &key);
  return key;
}

bool ParseDataKey(std::string_view key, DataKeyParts* out) {
  if (key.size() != kDataKeySize) return false;
  out->project = ReadBigEndian32(key.data());
  out->run = ReadBigEndian32(key.data() + 4);
  out->series = ReadBigEndian32(key.data() + 8);
  out->first_step = ReadBigEndian64(key.data() + 12);
  return true;
}

}  // namespace stepdb::storage
