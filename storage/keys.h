// RocksDB key layout. Every key of run data begins with the project id and
// then the run id (both big-endian), so that deleting or expiring a run or a
// project is a single range deletion, and one series' chunks sort by step.
// See docs/FORMAT.md ("Key layout").
#ifndef STEPDB_STORAGE_KEYS_H_
#define STEPDB_STORAGE_KEYS_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace stepdb::storage {

using ProjectId = uint32_t;
using RunId = uint32_t;
using SeriesId = uint32_t;

// Fixed-point steps (in keys, chunks and everywhere in storage): whole
// steps times this, plus millionths.
inline constexpr uint64_t kMicrosPerStep = 1'000'000;

// Column family names.
inline constexpr char kIndexFamily[] = "index";
// Head log: one record per commit group, key = record sequence number
// (8 bytes, big-endian), value = the group's fragments (see docs/FORMAT.md).
inline constexpr char kHeadLogFamily[] = "headlog";
inline constexpr char kChunksFamily[] = "chunks";
// Rollups (storage/rollup.h): pre-aggregated pieces of each sealed chunk,
// key = RollupKey, written in the same batch as the chunk. Keys begin like
// the chunks' (project, run, series), so a range deletion of a run or a
// project covers both families with the same bounds.
inline constexpr char kRollupsFamily[] = "rollups";
// Tier byte of a rollup key: the pieces of one chunk (1/8 of its window).
inline constexpr char kChunkPiecesTier = 0;
// Key of the record that says the rollups of every chunk exist (written
// when a data directory made before rollups has had them built). Project
// id 0 is never allocated, so no series' key can be this one.
inline constexpr char kRollupsBuiltKey[] = {0, 0, 0, 0};
// Small records beside the points (run metadata, watch rules and events,
// tokens, audit entries, retention policies): Engine::WriteMeta/ScanMeta.
// The first key byte names the kind of record (below); keys of one
// project's records continue with the project's name so that a prefix
// scan or range deletion covers it.
inline constexpr char kMetaFamily[] = "meta";
inline constexpr char kRunMetaTag = 'r';     // r project \0 run -> RunRecord
inline constexpr char kWatchRuleTag = 'w';   // w project \0 rule id -> rule
inline constexpr char kWatchEventTag = 'e';  // e seq(8) -> event
// Auth (auth/, docs/FORMAT.md "Auth records"):
inline constexpr char kTokenTag = 'k';      // k token id -> token record
inline constexpr char kAuditTag = 'a';      // a seq(8) -> audit entry
inline constexpr char kAuditHeadTag = 'h';  // h -> last seq(8) + its hash
inline constexpr char kRetentionTag = 'p';  // p project -> raw days(4)

// Record tags of the index column family (first byte of its keys).
inline constexpr char kProjectTag = 'P';  // P name -> project id
inline constexpr char kRunTag = 'R';      // R project run-name -> run id
inline constexpr char kSeriesTag = 'S';   // S project run identity -> series
inline constexpr char kSealedTag = 'T';   // T series -> SealedStats
// N -> the largest project, run and series ids ever allocated (4 + 4 + 4),
// written by deletions so that the ids of deleted runs and projects are
// never handed out again, even after a restart.
inline constexpr char kIdHighWaterTag = 'N';

void AppendBigEndian32(uint32_t v, std::string* out);
void AppendBigEndian64(uint64_t v, std::string* out);
uint32_t ReadBigEndian32(const char* p);
uint64_t ReadBigEndian64(const char* p);

std::string ProjectIndexKey(std::string_view project);
std::string RunIndexKey(ProjectId project, std::string_view run);
// `identity` is SeriesIdentity() of the metric and labels.
std::string SeriesIndexKey(ProjectId project, RunId run,
                           std::string_view identity);
std::string SealedStatsKey(SeriesId series);
std::string IdHighWaterKey();

// The smallest key greater than every key that starts with `prefix` (the
// exclusive end of a prefix range); "" if there is none (all 0xff bytes).
std::string PrefixEnd(std::string_view prefix);
// The key prefix of a project's or a run's data in the run-data column
// families: project(4) [run(4)].
std::string ProjectDataPrefix(ProjectId project);
std::string RunDataPrefix(ProjectId project, RunId run);
// The meta key of a run's metadata record: kRunMetaTag project NUL run.
std::string RunMetaKey(std::string_view project, std::string_view run);
// The prefix of every meta record of `tag` that belongs to `project` and
// continues past it (kRunMetaTag, kWatchRuleTag): tag project NUL.
std::string ProjectMetaPrefix(char tag, std::string_view project);

// The prefix shared by every chunk and head fragment of one series:
// project(4) run(4) series(4).
inline constexpr size_t kSeriesPrefixSize = 12;
std::string SeriesDataPrefix(ProjectId project, RunId run, SeriesId series);
// SeriesDataPrefix + first step (8, big-endian): key of a chunk or fragment.
inline constexpr size_t kDataKeySize = kSeriesPrefixSize + 8;
std::string DataKey(ProjectId project, RunId run, SeriesId series,
                    uint64_t first_step);

// SeriesDataPrefix + tier(1) + first step of the chunk (8, big-endian): key
// of the rollup record of the chunk under DataKey(..., first_step).
inline constexpr size_t kRollupKeySize = kSeriesPrefixSize + 1 + 8;
std::string RollupKey(std::string_view series_prefix, char tier,
                      uint64_t first_step);

struct DataKeyParts {
  ProjectId project;
  RunId run;
  SeriesId series;
  uint64_t first_step;
};
// Returns false if `key` is not a well-formed data key.
bool ParseDataKey(std::string_view key, DataKeyParts* out);

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_KEYS_H_
