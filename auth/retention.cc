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

// Record: raw_days(4) rollup_days(4), big-endian; records written before
// rollup periods existed hold raw_days(4) only.
std::optional<ProjectRetention> DecodePolicy(std::string_view value) {
  if (value.size() != 4 && value.size() != 8) return std::nullopt;
  ProjectRetention policy;
  policy.raw_days = storage::ReadBigEndian32(value.data());
  if (value.size() == 8) {
    policy.rollup_days = storage::ReadBigEndian32(value.data() + 4);
  }
  return policy;
}

}  // namespace

absl::Status RetentionPolicies::Set(std::string_view project,
                                    ProjectRetention policy) {
  if (project.empty()) return absl::InvalidArgumentError("project: empty");
  if (policy.raw_days == 0 && policy.rollup_days != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rollup_days: ", policy.rollup_days,
        " needs raw_days (raw_days 0 keeps raw points forever, and rollups "
        "are kept at least as long as raw points)"));
  }
  if (policy.rollup_days != 0 && policy.rollup_days < policy.raw_days) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rollup_days: ", policy.rollup_days, " is less than raw_days ",
        policy.raw_days,
        "; rollups are kept at least as long as raw points (0: as long)"));
  }
  storage::MetaWrite write{PolicyKey(project), std::nullopt};
  if (policy.raw_days > 0) {
    write.value.emplace();
    storage::AppendBigEndian32(policy.raw_days, &*write.value);
    storage::AppendBigEndian32(policy.rollup_days, &*write.value);
  }
  return engine_->WriteMeta({&write, 1});
}

absl::StatusOr<std::optional<ProjectRetention>> RetentionPolicies::Get(
    std::string_view project) const {
  auto value = engine_->GetMeta(PolicyKey(project));
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::nullopt;
  std::optional<ProjectRetention> policy = DecodePolicy(**value);
  if (!policy) return absl::DataLossError("retention policy record: corrupt");
  return policy;
}

absl::StatusOr<std::vector<std::pair<std::string, ProjectRetention>>>
RetentionPolicies::List() const {
  std::vector<std::pair<std::string, ProjectRetention>> out;
  absl::Status scan = engine_->ScanMeta(
      std::string(1, storage::kRetentionTag),
      [&](std::string_view key, std::string_view value) {
        if (std::optional<ProjectRetention> policy = DecodePolicy(value)) {
          out.emplace_back(std::string(key.substr(1)), *policy);
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
  for (const auto& [project, policy] : *policies) {
    auto r = engine_->ExpireChunks(
        project, now - int64_t{policy.raw_days} * kMillisPerDay,
        now - int64_t{policy.effective_rollup_days()} * kMillisPerDay);
    if (!r.ok()) return r.status();
    total.chunks += r->chunks;
    total.points += r->points;
    total.rollup_records += r->rollup_records;
    total.rollup_points += r->rollup_points;
  }
  return total;
}

RetentionEnforcer::RetentionEnforcer(RetentionPolicies* policies,
                                     absl::Duration interval)
    : policies_(policies),
      thread_("stepdb-retain", interval,
              storage::PeriodicThread::FirstRun::kAfterInterval,
              [this] { Enforce(); }) {}

void RetentionEnforcer::Enforce() {
  auto result = policies_->Enforce();
  if (!result.ok()) {
    std::cerr << "stepdb: retention: " << result.status() << std::endl;
  } else if (result->chunks > 0 || result->rollup_records > 0) {
    std::cerr << "stepdb: retention: expired " << result->chunks
              << " chunks (" << result->points << " points), "
              << result->rollup_records << " rollup records ("
              << result->rollup_points << " points)" << std::endl;
  }
}

}  // namespace stepdb::auth
