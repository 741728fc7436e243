// Scopes and the one table of which scope each RPC needs. Every handler
// names its RPC (an enum, so a typo does not compile) and the project it
// touches; auth::Check looks the scope up here.
#ifndef STEPDB_AUTH_RPC_SCOPES_H_
#define STEPDB_AUTH_RPC_SCOPES_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace stepdb::auth {

// Ordered: admin implies write implies read.
enum class Scope : uint8_t { kRead = 1, kWrite = 2, kAdmin = 3 };

std::string_view ScopeName(Scope scope);  // "read", "write", "admin"
std::optional<Scope> ParseScope(std::string_view name);

// Tokens of this project act on every project (global administrators).
inline constexpr std::string_view kAllProjects = "*";

enum class Rpc : uint8_t {
  kIngestWrite,
  kIngestWriteOne,
  kIngestCreateRun,
  kIngestUpdateRun,
  kQueryReadRange,
  kQueryListSeries,
  kQueryReadDownsampled,
  kQueryListRuns,
  kQueryGetRun,
  kQueryTail,
  kQueryAggregate,
  kWatchCreateRule,
  kWatchListRules,
  kWatchDeleteRule,
  kWatchEvents,
  kAdminStats,
  kAdminCompact,
  kAdminDeleteRun,
  kAdminDeleteProject,
  kAuthCreateToken,
  kAuthListTokens,
  kAuthRevokeToken,
  kAuthReadAudit,
  kAuthSetRetention,
  kAuthGetRetention,
  kAuthEnforceRetention,
  kHttpMetrics,  // GET /metrics on the HTTP side port
};

struct RpcInfo {
  Rpc rpc;
  std::string_view name;  // as logged in the audit log
  Scope scope;
};

// The per-RPC scope table. Server-wide RPCs (stats, compaction, audit,
// /metrics) are checked against kAllProjects: only a global admin passes.
inline constexpr RpcInfo kRpcTable[] = {
    {Rpc::kIngestWrite, "Ingest.Write", Scope::kWrite},
    {Rpc::kIngestWriteOne, "Ingest.WriteOne", Scope::kWrite},
    {Rpc::kIngestCreateRun, "Ingest.CreateRun", Scope::kWrite},
    {Rpc::kIngestUpdateRun, "Ingest.UpdateRun", Scope::kWrite},
    {Rpc::kQueryReadRange, "Query.ReadRange", Scope::kRead},
    {Rpc::kQueryListSeries, "Query.ListSeries", Scope::kRead},
    {Rpc::kQueryReadDownsampled, "Query.ReadDownsampled", Scope::kRead},
    {Rpc::kQueryListRuns, "Query.ListRuns", Scope::kRead},
    {Rpc::kQueryGetRun, "Query.GetRun", Scope::kRead},
    {Rpc::kQueryTail, "Query.Tail", Scope::kRead},
    {Rpc::kQueryAggregate, "Query.Aggregate", Scope::kRead},
    {Rpc::kWatchCreateRule, "Watch.CreateRule", Scope::kWrite},
    {Rpc::kWatchListRules, "Watch.ListRules", Scope::kRead},
    {Rpc::kWatchDeleteRule, "Watch.DeleteRule", Scope::kWrite},
    {Rpc::kWatchEvents, "Watch.Events", Scope::kRead},
    {Rpc::kAdminStats, "Admin.Stats", Scope::kAdmin},
    {Rpc::kAdminCompact, "Admin.Compact", Scope::kAdmin},
    // Checked against the request's project: a project's admin may erase
    // its runs or the whole project.
    {Rpc::kAdminDeleteRun, "Admin.DeleteRun", Scope::kAdmin},
    {Rpc::kAdminDeleteProject, "Admin.DeleteProject", Scope::kAdmin},
    {Rpc::kAuthCreateToken, "Auth.CreateToken", Scope::kAdmin},
    {Rpc::kAuthListTokens, "Auth.ListTokens", Scope::kAdmin},
    {Rpc::kAuthRevokeToken, "Auth.RevokeToken", Scope::kAdmin},
    {Rpc::kAuthReadAudit, "Auth.ReadAudit", Scope::kAdmin},
    {Rpc::kAuthSetRetention, "Auth.SetRetention", Scope::kAdmin},
    {Rpc::kAuthGetRetention, "Auth.GetRetention", Scope::kAdmin},
    {Rpc::kAuthEnforceRetention, "Auth.EnforceRetention", Scope::kAdmin},
    {Rpc::kHttpMetrics, "HTTP /metrics", Scope::kAdmin},
};

constexpr const RpcInfo& InfoOf(Rpc rpc) {
  return kRpcTable[static_cast<size_t>(rpc)];
}

// The table is indexed by the enum.
constexpr bool RpcTableIsIndexed() {
  for (size_t i = 0; i < std::size(kRpcTable); ++i) {
    if (static_cast<size_t>(kRpcTable[i].rpc) != i) return false;
  }
  return true;
}
static_assert(RpcTableIsIndexed(), "kRpcTable must list Rpc in enum order");

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_RPC_SCOPES_H_
