#include "auth/retention.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "storage/keys.h"

namespace stepdb::auth {
namespace {

std::string PolicyKey(std::string_view project) {
  std::string key(1, storage::kRetentionTag);
  key.append(project);
  return key;
}

}  // namespace

absl::Status RetentionPolicies::Set(std::string_view project,
                                    uint32_t raw_days) {
  if (project.empty()) return absl::InvalidArgumentError("project: empty");
  storage::MetaWrite write{PolicyKey(project), std::nullopt};
  if (raw_days > 0) {
    write.value.emplace();
    storage::AppendBigEndian32(raw_days, &*write.value);
  }
  return engine_->WriteMeta({&write, 1});
}

absl::StatusOr<std::optional<uint32_t>> RetentionPolicies::Get(
    std::string_view project) const {
  auto value = engine_->GetMeta(PolicyKey(project));
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::nullopt;
  if ((*value)->size() != 4) {
    return absl::DataLossError("retention policy record: corrupt");
  }
  return storage::ReadBigEndian32((*value)->data());
}

absl::StatusOr<std::vector<std::pair<std::string, uint32_t>>>
RetentionPolicies::List() const {
  std::vector<std::pair<std::string, uint32_t>> out;
  absl::Status scan = engine_->ScanMeta(
      std::string(1, storage::kRetentionTag),
      [&](std::string_view key, std::string_view value) {
        if (value.size() == 4) {
          out.emplace_back(std::string(key.substr(1)),
                           storage::ReadBigEndian32(value.data()));
        }
        return true;
      });
  if (!scan.ok()) return scan;
  return out;
}

absl::StatusOr<storage::ExpireResult> RetentionPolicies::Enforce() {
  auto policies = List();
  if (!policies.ok()) return policies.status();
  storage::ExpireResult total;
  const int64_t now = clock_();
  for (const auto& [project, days] : *policies) {
    auto r = engine_->ExpireChunks(project, now - int64_t{days} * kMillisPerDay);
    if (!r.ok()) return r.status();
    total.chunks += r->chunks;
    total.points += r->points;
  }
  return total;
}

RetentionEnforcer::RetentionEnforcer(RetentionPolicies* policies,
                                     absl::Duration interval)
    : policies_(policies), interval_(interval) {
  thread_ = std::thread([this] { Loop(); });
}

RetentionEnforcer::~RetentionEnforcer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void RetentionEnforcer::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_);
      if (stopping_) return;
    }
    auto result = policies_->Enforce();
    if (!result.ok()) {
      std::cerr << "stepdb: retention: " << result.status() << std::endl;
    } else if (result->chunks > 0) {
      std::cerr << "stepdb: retention: expired " << result->chunks
                << " chunks (" << result->points << " points)" << std::endl;
    }
  }
}

}  // namespace stepdb::auth
