// Watch rules: conditions on the points of matching series (a loss that goes
// NaN, a metric above a threshold, a plateau, a stalled run) that raise
// FIRING and RESOLVED events, the early-stopping signal of a training run.
//
// The evaluator is a CommitObserver: it sees every committed group's points
// on the engine's commit thread. There it costs one hash lookup per series
// of the group (the cached list of rules that match the series) plus O(1)
// per point and matching rule; it never waits for disk. Events go to an
// in-memory queue; a background thread persists them as meta records
// (kWatchEventTag + seq), keeps the newest of them in memory for
// subscribers, wakes the subscribers, and checks `stalled` rules on a timer.
//
// Episodes: a (rule, series) pair fires once when its condition starts to
// hold and resolves once when it stops holding. Episode state lives in
// memory only: after a restart every pair starts afresh, so a rule that
// was firing fires again (once) if its condition still holds on the new
// points, and a RESOLVED for an episode that began before the restart is
// never sent. See docs/ARCHITECTURE.md ("Watch rules").
//
// Thread-safety: every public method is thread-safe.
#ifndef STEPDB_STORAGE_WATCH_H_
#define STEPDB_STORAGE_WATCH_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/engine.h"
#include "storage/run_store.h"
#include "storage/series_key.h"

namespace stepdb::storage {

inline constexpr size_t kMaxWatchConditionBytes = 256;
inline constexpr size_t kMaxWatchNameBytes = 256;

// A parsed `condition` (syntax in docs/USER_GUIDE.md, "Watch rules").
struct WatchCondition {
  enum class Kind : uint8_t { kNonFinite, kAbove, kBelow, kPlateau, kStalled };
  Kind kind = Kind::kNonFinite;
  double threshold = 0;        // above / below
  uint64_t count = 1;          // above / below: consecutive points (>= 1)
  uint64_t plateau_steps = 0;  // plateau: micro-steps (> 0)
  absl::Duration stalled;      // stalled (> 0)
};

// Parses `nonfinite`, `above X [for K]`, `below X [for K]`, `plateau N`,
// `stalled T` (T = number + ms|s|m|h). Keywords are case-insensitive,
// words are separated by blanks. InvalidArgument naming the problem
// otherwise, e.g. `condition "above x": threshold "x" is not a number`.
absl::StatusOr<WatchCondition> ParseWatchCondition(std::string_view text);

struct WatchRuleSpec {
  std::string id;  // assigned by CreateRule
  std::string project;
  std::string run;     // empty: every run of the project
  std::string metric;  // empty: every metric
  Labels labels;       // each must be present and equal; sorted by key
  std::string condition;
  std::string name;
};

enum class WatchEventKind : uint8_t { kFiring = 1, kResolved = 2 };

struct WatchEventRecord {
  uint64_t seq = 0;  // increasing over the store's lifetime, from 1
  WatchEventKind kind = WatchEventKind::kFiring;
  std::string rule_id;
  std::string rule_name;
  std::string condition;
  SeriesKey series;
  uint64_t step = 0;  // micro-steps: the point that fired or resolved
  double value = 0;
  int64_t time_ms = 0;   // that point's time
  int64_t fired_ms = 0;  // when the server saw it
  std::string message;
};

// The meta record encodings (docs/FORMAT.md, "Watch rules and events").
std::string EncodeWatchRule(const WatchRuleSpec& rule);
absl::StatusOr<WatchRuleSpec> DecodeWatchRule(std::string_view bytes);
std::string EncodeWatchEvent(const WatchEventRecord& event);
absl::StatusOr<WatchEventRecord> DecodeWatchEvent(std::string_view bytes);
// kWatchEventTag + seq (8 bytes, big-endian).
std::string WatchEventKey(uint64_t seq);

struct WatchOptions {
  // Newest events kept in memory for subscribers; older ones are read back
  // from the meta records.
  size_t memory_events = 4096;
  // Events waiting to be persisted at most; past it new events are dropped
  // (and counted) rather than block the commit thread or grow without
  // bound while the disk is stuck.
  size_t max_pending_events = 100'000;
  // Longest wait between two checks of `stalled` rules; a rule with a short
  // T is checked every T/4 (at least every 10 ms).
  absl::Duration stall_check_interval = absl::Seconds(1);
};

// Woken (on the evaluator's background thread) when new events have been
// persisted. Must not block; typically it schedules a read of the events.
class WatchListener {
 public:
  virtual ~WatchListener() = default;
  virtual void OnNewEvents() = 0;
};

class WatchEvaluator final : public CommitObserver {
 public:
  // Loads the rules and the newest events of `engine` and starts the
  // background thread. The caller registers the evaluator with
  // engine->AddCommitObserver and removes it before destroying it.
  // `runs` (may be null: every run counts as running) tells `stalled`
  // whether a run is RUNNING. Both must outlive the evaluator. Returns the
  // engine's error, or DataLoss for a record that does not parse.
  static absl::StatusOr<std::unique_ptr<WatchEvaluator>> Open(
      Engine* engine, const RunStore* runs, WatchOptions options = {});
  // Persists the events still queued and stops the background thread.
  ~WatchEvaluator() override;
  WatchEvaluator(const WatchEvaluator&) = delete;
  WatchEvaluator& operator=(const WatchEvaluator&) = delete;

  // Validates and stores `rule` under a new id (its `id` is ignored) and
  // returns it. It applies to points committed after it returns.
  // InvalidArgument (naming the field) for a bad project, run, metric,
  // label, name or condition; the engine's write error (nothing stored).
  absl::StatusOr<WatchRuleSpec> CreateRule(WatchRuleSpec rule);
  // The rules of `project`, by id.
  std::vector<WatchRuleSpec> ListRules(std::string_view project) const;
  // NotFound for an unknown rule; the engine's write error.
  absl::Status DeleteRule(std::string_view project, std::string_view id);

  // Deletes every rule of `project` (durably, then in memory) and returns
  // how many there were: the rule side of a project deletion. Idempotent
  // with Engine::DeleteProject, which deletes the records too. Returns the
  // engine's write error (nothing changed then).
  absl::StatusOr<size_t> DeleteProjectRules(std::string_view project);
  // Events of `project` (and `run`, unless empty) with seq > after_seq, in
  // seq order, at most `limit`. *scanned_through is the seq up to which
  // the log was examined (events past it may exist: read again from
  // there); it is below the first event not returned. Reads the in-memory
  // window when it covers after_seq, the meta records otherwise.
  absl::StatusOr<std::vector<WatchEventRecord>> ReadEvents(
      std::string_view project, std::string_view run, uint64_t after_seq,
      size_t limit, uint64_t* scanned_through) const;
  // The seq of the newest persisted event (0 if none).
  uint64_t LastSeq() const;

  // Listeners are woken after each batch of events is persisted. A removed
  // listener is not called after RemoveListener returns.
  void AddListener(WatchListener* listener);
  void RemoveListener(WatchListener* listener);

  // Events dropped because the persistence queue was full.
  uint64_t dropped_events() const;

  // CommitObserver.
  void OnCommit(std::span<const CommittedPoints> committed) override;
  // Forgets the evaluation state of deleted series, so that a `stalled`
  // rule does not fire for them. Their stored events are kept. Only queues
  // the ids: the engine calls this while the run store's mutex may be
  // held, which the stall check takes under state_mu_; the next commit or
  // stall check drops the states first thing.
  void OnSeriesDeleted(std::span<const SeriesId> series) override;

 private:
  struct Rule;
  struct RuleSet;
  struct Binding;
  struct SeriesState;

  WatchEvaluator(Engine* engine, const RunStore* runs, WatchOptions options);
  absl::Status Load();
  // Publishes a new immutable rule set built from rules_.
  void PublishRules() ABSL_EXCLUSIVE_LOCKS_REQUIRED(rules_mu_);
  // The bindings of `series` for the current rule set (rebuilt if stale).
  SeriesState& StateOf(SeriesId series)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  void Evaluate(Binding& b, const SeriesState& s, const PointSpan& points,
                int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  void Emit(WatchEventKind kind, const Rule& rule, const SeriesKey& series,
            uint64_t step, double value, int64_t time_ms, int64_t now_ms,
            std::string message);
  void CheckStalled(int64_t now_ms);
  // Drops the states of the series queued by OnSeriesDeleted.
  void ForgetDeletedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  absl::Duration StallTick() const;
  void BackgroundLoop();
  absl::Status ReadStoredEvents(std::string_view project, std::string_view run,
                                uint64_t after_seq, uint64_t upto, size_t limit,
                                std::vector<WatchEventRecord>* out,
                                uint64_t* scanned_through) const;

  // Constant after construction.
  Engine* const engine_;
  const RunStore* const runs_;
  const WatchOptions options_;

  // Rules as stored; serializes rule changes. Lock order: rules_mu_ before
  // state_mu_.
  mutable absl::Mutex rules_mu_;
  // By id. Shared with the rule sets and the bindings built from them, so
  // that a deleted rule lives until no binding refers to it.
  absl::flat_hash_map<std::string, std::shared_ptr<const Rule>> rules_
      ABSL_GUARDED_BY(rules_mu_);
  uint64_t next_rule_id_ ABSL_GUARDED_BY(rules_mu_) = 1;

  // Evaluation state: taken once per commit group and by the stall check.
  absl::Mutex state_mu_;
  std::shared_ptr<const RuleSet> rule_set_ ABSL_GUARDED_BY(state_mu_);
  absl::flat_hash_map<SeriesId, std::unique_ptr<SeriesState>> series_
      ABSL_GUARDED_BY(state_mu_);
  // Series with a `stalled` binding, for the timer.
  absl::flat_hash_set<SeriesState*> stall_watched_ ABSL_GUARDED_BY(state_mu_);
  // Deleted series whose state is still to be dropped. Lock order:
  // state_mu_ before deleted_mu_.
  absl::Mutex deleted_mu_;
  std::vector<SeriesId> deleted_ ABSL_GUARDED_BY(deleted_mu_);
  std::atomic<bool> has_deleted_{false};  // deleted_ is not empty

  // The event log. Lock order: state_mu_ before events_mu_.
  mutable absl::Mutex events_mu_;
  uint64_t next_seq_ ABSL_GUARDED_BY(events_mu_) = 1;
  std::vector<WatchEventRecord> pending_ ABSL_GUARDED_BY(events_mu_);
  std::deque<WatchEventRecord> recent_ ABSL_GUARDED_BY(events_mu_);
  uint64_t persisted_seq_ ABSL_GUARDED_BY(events_mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(events_mu_) = 0;
  absl::Duration stall_tick_ ABSL_GUARDED_BY(events_mu_);
  bool tick_changed_ ABSL_GUARDED_BY(events_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(events_mu_) = false;

  // Serializes wake-ups with RemoveListener.
  absl::Mutex listeners_mu_;
  std::vector<WatchListener*> listeners_ ABSL_GUARDED_BY(listeners_mu_);

  std::thread background_;
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_WATCH_H_
