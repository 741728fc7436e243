// Run metadata: params, tags, commit SHA, data version, state, and the fork
// point (lineage), kept as meta records of the engine (one per run, key
// kRunMetaTag project NUL run) and cached in memory, so that listing and
// filtering thousands of runs costs no disk read.
//
// Thread-safety: every method is thread-safe.
#ifndef STEPDB_STORAGE_RUN_STORE_H_
#define STEPDB_STORAGE_RUN_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "storage/engine.h"

namespace stepdb::storage {

inline constexpr size_t kMaxParamNameBytes = 256;
inline constexpr size_t kMaxParamStringBytes = 4096;
inline constexpr size_t kMaxParams = 1024;
inline constexpr size_t kMaxTagBytes = 256;
inline constexpr size_t kMaxTags = 256;
inline constexpr size_t kMaxRunTextBytes = 4096;  // SHA, data version, ...
inline constexpr size_t kMaxForkDepth = 64;

using ParamValue = std::variant<int64_t, double, std::string, bool>;

enum class RunState : uint8_t {
  kRunning = 1,
  kFinished = 2,
  kFailed = 3,
  kAborted = 4,
};

struct ForkPoint {
  std::string parent_run;
  uint64_t step = 0;  // micro-steps, inclusive
  bool operator==(const ForkPoint&) const = default;
};

struct RunRecord {
  std::string project;
  std::string run_id;
  std::map<std::string, ParamValue> params;
  std::vector<std::string> tags;  // sorted, unique
  std::string commit_sha;
  std::string data_version;
  std::string description;
  RunState state = RunState::kRunning;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  std::optional<ForkPoint> fork;
};

// A change to a run; unset/empty members leave the run as it is.
struct RunUpdate {
  std::map<std::string, ParamValue> set_params;
  std::vector<std::string> remove_params;
  std::vector<std::string> add_tags;
  std::vector<std::string> remove_tags;
  std::optional<std::string> commit_sha;
  std::optional<std::string> data_version;
  std::optional<std::string> description;
  std::optional<RunState> state;
};

// `NAME OP LITERAL`, e.g. `lr < 1e-3` or `model = "resnet50"`.
struct ParamComparison {
  enum class Op { kEq, kNe, kLt, kLe, kGt, kGe };
  std::string name;
  Op op = Op::kEq;
  ParamValue literal;
  // Whether a run's params satisfy it. Numbers compare across int and
  // float; a missing param or a type mismatch fails (also for !=).
  bool Matches(const std::map<std::string, ParamValue>& params) const;
};
// Parses the text form. InvalidArgument naming what is wrong.
absl::StatusOr<ParamComparison> ParseParamComparison(std::string_view text);

struct RunFilter {
  std::vector<std::string> tags;  // all present
  std::vector<RunState> states;   // any of them; empty = any
  std::vector<ParamComparison> params;  // all hold
};

struct RunSort {
  enum class Key { kCreated, kUpdated, kRunId, kParam, kMetric };
  Key key = Key::kCreated;
  std::string name;  // param or metric name
  bool descending = false;
};
// Parses `created`, `updated`, `run_id`, `param:NAME`, `metric:NAME` ("" =
// created). InvalidArgument otherwise.
absl::StatusOr<RunSort> ParseRunSort(std::string_view text, bool descending);

// A piece of a run's lineage: the points of `run` with steps in
// [from_step, to_step] (micro-steps) belong to the (forked) run being read.
struct LineageSegment {
  std::string run;
  uint64_t from_step = 0;
  uint64_t to_step = 0;
};

// What RunStore::DeleteRun / DeleteProject removed.
struct RunDeletion {
  DeleteResult data;         // points, series, chunks (Engine)
  uint64_t run_records = 0;  // run metadata records
};

class RunStore {
 public:
  // Loads every run record of `engine`, which must outlive the store.
  // Returns the engine's error, or DataLoss for a record that does not parse.
  static absl::StatusOr<std::unique_ptr<RunStore>> Open(Engine* engine);
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;

  // Creates `run` (created/updated times are set here) and returns it with
  // created = true. If it exists, `run`'s params,
  // tags and non-empty strings are merged into it (an idempotent retry or a
  // resumed job) and it is returned with created = false. Errors:
  // InvalidArgument for a bad name, param or tag; FailedPrecondition if
  // the run exists with a different fork point, or the fork's parent run
  // does not exist or is the run itself; the engine's write error.
  absl::StatusOr<std::pair<RunRecord, bool>> Create(RunRecord run);

  // Applies `update`. NotFound for an unknown run; InvalidArgument for a
  // bad param or tag; the engine's write error (nothing changed then).
  absl::StatusOr<RunRecord> Update(std::string_view project,
                                   std::string_view run_id,
                                   const RunUpdate& update);

  // Right to erasure: deletes the run's points and its metadata record in
  // one atomic write (Engine::DeleteRun) and forgets the run. A Create or
  // Update of the run meanwhile waits for the deletion, so that it lands
  // wholly before (and is deleted) or after it (a new, empty run).
  // Forks of the run keep their own points; their lineage names the
  // parent by run id, so the deleted steps read as absent, and as the new
  // run's steps if the name is written again. NotFound if the run has
  // neither metadata nor points; the engine's error (nothing deleted).
  absl::StatusOr<RunDeletion> DeleteRun(std::string_view project,
                                        std::string_view run_id);
  // As DeleteRun for every run of `project` and the project itself
  // (Engine::DeleteProject: also its watch rules and retention policy on
  // disk). Returns what was deleted, all zero if the project had no run
  // and no points (not an error: the per-project records may still have
  // existed). The engine's error (nothing deleted).
  absl::StatusOr<RunDeletion> DeleteProject(std::string_view project);

  std::optional<RunRecord> Get(std::string_view project,
                               std::string_view run_id) const;

  // The runs of `project` that pass `filter`, ordered by `sort` (runs
  // lacking the sort key last, ties by run id), at most `limit` (0 = all);
  // *truncated tells whether more passed.
  std::vector<RunRecord> List(std::string_view project, const RunFilter& filter,
                              const RunSort& sort, size_t limit,
                              bool* truncated) const;

  // What a read of `run_id`'s series covers: for a run without a fork, the
  // run itself over all steps; for a fork, its ancestors' steps up to each
  // fork point, then its own steps after it, in step order. A run without
  // metadata reads as itself.
  std::vector<LineageSegment> Lineage(std::string_view project,
                                      std::string_view run_id) const;

 private:
  explicit RunStore(Engine* engine) : engine_(engine) {}
  absl::Status Persist(const RunRecord& run);

  // Constant after construction.
  Engine* const engine_;

  // Waits while a deletion of the run (or its project) is under way, so
  // that a create or update lands wholly before or after it.
  void AwaitNoDeletionLocked(const std::string& project,
                             const std::string& run_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // (project, run id) -> record.
  absl::btree_map<std::pair<std::string, std::string>, RunRecord> runs_
      ABSL_GUARDED_BY(mu_);
  // Deletions under way (the engine write happens without mu_: the engine
  // calls commit observers, and the watch evaluator's stall check calls
  // Get while holding its own lock). Signalled by deletion_done_.
  absl::flat_hash_set<std::pair<std::string, std::string>> deleting_runs_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> deleting_projects_ ABSL_GUARDED_BY(mu_);
  absl::CondVar deletion_done_;
};

// The binary encoding of a run record (the meta record's value); see
// docs/FORMAT.md ("Meta records").
std::string EncodeRunRecord(const RunRecord& run);
absl::StatusOr<RunRecord> DecodeRunRecord(std::string_view bytes);

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_RUN_STORE_H_
