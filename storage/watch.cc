#include "storage/watch.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "storage/keys.h"
#include "storage/meta_codec.h"
#include "storage/thread_name.h"

namespace stepdb::storage {
namespace {

using internal::GetFixed64;
using internal::GetVarint;
using internal::PutFixed64;
using internal::PutVarint;
using internal::UnZigZag;
using internal::ZigZag;
using meta::GetByte;
using meta::GetString;
using meta::PutString;
using meta::Sv;

constexpr uint8_t kRuleVersion = 1;
constexpr uint8_t kEventVersion = 1;
// Events read from the meta records per ReadEvents call at most, so that a
// selective filter over a long log cannot make one call unbounded.
constexpr size_t kMaxScannedPerRead = 4096;
constexpr absl::Duration kMinStallTick = absl::Milliseconds(10);

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

absl::Status BadCondition(std::string_view text, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("condition \"", Sv(text), "\": ", Sv(why)));
}

std::string RuleKey(std::string_view project, std::string_view id) {
  std::string key = ProjectMetaPrefix(kWatchRuleTag, project);
  key.append(id);
  return key;
}

void PutLabels(const Labels& labels, std::string* out) {
  PutVarint(labels.size(), out);
  for (const auto& [k, v] : labels) {
    PutString(k, out);
    PutString(v, out);
  }
}

bool GetLabels(std::string_view* in, Labels* labels) {
  uint64_t n;
  if (!GetVarint(in, &n) || n > kMaxLabels) return false;
  labels->resize(n);
  for (auto& [k, v] : *labels) {
    if (!GetString(in, &k) || !GetString(in, &v)) return false;
  }
  return true;
}

// Whether `series` belongs to `rule` (the project is matched by the index).
bool Matches(const WatchRuleSpec& rule, const SeriesKey& series) {
  if (!rule.run.empty() && rule.run != series.run) return false;
  if (!rule.metric.empty() && rule.metric != series.metric) return false;
  for (const auto& [k, v] : rule.labels) {
    auto it = std::lower_bound(series.labels.begin(), series.labels.end(), k,
                               [](const auto& label, const std::string& key) {
                                 return label.first < key;
                               });
    if (it == series.labels.end() || it->first != k || it->second != v) {
      return false;
    }
  }
  return true;
}

bool EventMatches(const WatchEventRecord& e, std::string_view project,
                  std::string_view run) {
  return e.series.project == project && (run.empty() || e.series.run == run);
}

std::string StepText(uint64_t micro_step) {
  std::string out = absl::StrCat(micro_step / kMicrosPerStep);
  if (uint64_t micros = micro_step % kMicrosPerStep; micros != 0) {
    std::string frac = std::to_string(micros + kMicrosPerStep).substr(1);
    while (frac.back() == '0') frac.pop_back();
    absl::StrAppend(&out, ".", frac);
  }
  return out;
}

}  // namespace

// ---- condition syntax -------------------------------------------------------

absl::StatusOr<WatchCondition> ParseWatchCondition(std::string_view text) {
  if (text.size() > kMaxWatchConditionBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "condition: longer than ", kMaxWatchConditionBytes, " bytes"));
  }
  std::vector<std::string> words =
      absl::StrSplit(Sv(text), absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty());
  if (words.empty()) return absl::InvalidArgumentError("condition: empty");
  const std::string keyword = absl::AsciiStrToLower(words[0]);
  auto arity = [&](size_t n) -> absl::Status {
    if (words.size() == n) return absl::OkStatus();
    return BadCondition(text, absl::StrCat("\"", keyword, "\" takes ", n - 1,
                                           n == 2 ? " argument" : " arguments",
                                           ", got ", words.size() - 1));
  };
  WatchCondition c;
  if (keyword == "nonfinite") {
    if (auto s = arity(1); !s.ok()) return s;
    c.kind = WatchCondition::Kind::kNonFinite;
    return c;
  }
  if (keyword == "above" || keyword == "below") {
    c.kind = keyword == "above" ? WatchCondition::Kind::kAbove
                                : WatchCondition::Kind::kBelow;
    if (words.size() != 2 && words.size() != 4) {
      return BadCondition(
          text, absl::StrCat("expected \"", keyword, " X\" or \"", keyword,
                             " X for K\""));
    }
    if (!absl::SimpleAtod(words[1], &c.threshold) ||
        !std::isfinite(c.threshold)) {
      return BadCondition(text, absl::StrCat("threshold \"", words[1],
                                             "\" is not a finite number"));
    }
    if (words.size() == 4) {
      if (absl::AsciiStrToLower(words[2]) != "for") {
        return BadCondition(
            text, absl::StrCat("expected \"for\", got \"", words[2], "\""));
      }
      if (!absl::SimpleAtoi(words[3], &c.count) || c.count == 0 ||
          c.count > 1'000'000'000) {
        return BadCondition(
            text, absl::StrCat("count \"", words[3], "\" is not in [1, 1e9]"));
      }
    }
    return c;
  }
  if (keyword == "plateau") {
    if (auto s = arity(2); !s.ok()) return s;
    c.kind = WatchCondition::Kind::kPlateau;
    double steps;
    if (!absl::SimpleAtod(words[1], &steps) || !(steps > 0) || steps > 1e12) {
      return BadCondition(text, absl::StrCat("steps \"", words[1],
                                             "\" is not a positive number"));
    }
    c.plateau_steps =
        static_cast<uint64_t>(std::llround(steps * kMicrosPerStep));
    if (c.plateau_steps == 0) {
      return BadCondition(text, "steps: below one micro-step");
    }
    return c;
  }
  if (keyword == "stalled") {
    if (auto s = arity(2); !s.ok()) return s;
    c.kind = WatchCondition::Kind::kStalled;
    if (!absl::ParseDuration(words[1], &c.stalled) ||
        c.stalled <= absl::ZeroDuration() ||
        c.stalled == absl::InfiniteDuration()) {
      return BadCondition(text, absl::StrCat("duration \"", words[1],
                                             "\" is not like 500ms, 30s, 5m "
                                             "or 1h"));
    }
    return c;
  }
  return BadCondition(text, absl::StrCat("unknown condition \"", words[0],
                                         "\"; expected nonfinite, above, "
                                         "below, plateau or stalled"));
}

// ---- record encodings -------------------------------------------------------

std::string EncodeWatchRule(const WatchRuleSpec& rule) {
  std::string out(1, static_cast<char>(kRuleVersion));
  PutString(rule.id, &out);
  PutString(rule.project, &out);
  PutString(rule.run, &out);
  PutString(rule.metric, &out);
  PutLabels(rule.labels, &out);
  PutString(rule.condition, &out);
  PutString(rule.name, &out);
  return out;
}

absl::StatusOr<WatchRuleSpec> DecodeWatchRule(std::string_view in) {
  uint8_t version;
  WatchRuleSpec rule;
  if (!GetByte(&in, &version) || version != kRuleVersion ||
      !GetString(&in, &rule.id) || !GetString(&in, &rule.project) ||
      !GetString(&in, &rule.run) || !GetString(&in, &rule.metric) ||
      !GetLabels(&in, &rule.labels) || !GetString(&in, &rule.condition) ||
      !GetString(&in, &rule.name) || !in.empty()) {
    return absl::DataLossError("corrupt watch rule record");
  }
  return rule;
}

std::string EncodeWatchEvent(const WatchEventRecord& e) {
  std::string out(1, static_cast<char>(kEventVersion));
  PutVarint(e.seq, &out);
  out.push_back(static_cast<char>(e.kind));
  PutString(e.rule_id, &out);
  PutString(e.rule_name, &out);
  PutString(e.condition, &out);
  PutString(e.series.project, &out);
  PutString(e.series.run, &out);
  PutString(e.series.metric, &out);
  PutLabels(e.series.labels, &out);
  PutVarint(e.step, &out);
  PutFixed64(std::bit_cast<uint64_t>(e.value), &out);
  PutVarint(ZigZag(static_cast<uint64_t>(e.time_ms)), &out);
  PutVarint(ZigZag(static_cast<uint64_t>(e.fired_ms)), &out);
  PutString(e.message, &out);
  return out;
}

absl::StatusOr<WatchEventRecord> DecodeWatchEvent(std::string_view in) {
  uint8_t version, kind;
  uint64_t value, time, fired;
  WatchEventRecord e;
  if (!GetByte(&in, &version) || version != kEventVersion ||
      !GetVarint(&in, &e.seq) || !GetByte(&in, &kind) || kind < 1 || kind > 2 ||
      !GetString(&in, &e.rule_id) || !GetString(&in, &e.rule_name) ||
      !GetString(&in, &e.condition) || !GetString(&in, &e.series.project) ||
      !GetString(&in, &e.series.run) || !GetString(&in, &e.series.metric) ||
      !GetLabels(&in, &e.series.labels) || !GetVarint(&in, &e.step) ||
      !GetFixed64(&in, &value) || !GetVarint(&in, &time) ||
      !GetVarint(&in, &fired) || !GetString(&in, &e.message) || !in.empty()) {
    return absl::DataLossError("corrupt watch event record");
  }
  e.kind = static_cast<WatchEventKind>(kind);
  e.value = std::bit_cast<double>(value);
  e.time_ms = static_cast<int64_t>(UnZigZag(time));
  e.fired_ms = static_cast<int64_t>(UnZigZag(fired));
  return e;
}

std::string WatchEventKey(uint64_t seq) {
  std::string key(1, kWatchEventTag);
  AppendBigEndian64(seq, &key);
  return key;
}

// ---- evaluator state --------------------------------------------------------

struct WatchEvaluator::Rule {
  WatchRuleSpec spec;
  WatchCondition condition;
};

// An immutable snapshot of the rules, indexed so that finding the rules of
// a series looks only at its project's rules for its metric and at those
// for any metric.
struct WatchEvaluator::RuleSet {
  struct Project {
    absl::flat_hash_map<std::string, std::vector<std::shared_ptr<const Rule>>>
        by_metric;
    std::vector<std::shared_ptr<const Rule>> any_metric;
  };
  uint64_t version = 0;
  absl::flat_hash_map<std::string, Project> projects;
};

// One rule applied to one series: the state of its current episode.
struct WatchEvaluator::Binding {
  explicit Binding(std::shared_ptr<const Rule> r)
      : rule(std::move(r)), condition(rule->condition) {}
  std::shared_ptr<const Rule> rule;
  // A copy of rule->condition: the commit path reads only the bindings
  // vector, not one Rule allocation per binding (a cache miss each).
  WatchCondition condition;
  uint64_t consecutive = 0;  // points in a row for which the condition held
  bool firing = false;
  // plateau: the smallest finite value so far and the step that set it.
  bool has_min = false;
  double min = 0;
  uint64_t min_step = 0;
};

struct WatchEvaluator::SeriesState {
  // Kept only while some rule is bound (events name the series): a copy
  // per committed series would cost ~300 bytes each at a million series.
  std::optional<SeriesKey> key;
  uint64_t version = 0;            // of the rule set `bindings` was built for
  std::vector<Binding> bindings;
  bool stall_watched = false;
  // The last point and when it was committed (server clock), for `stalled`.
  int64_t last_seen_ms = 0;
  uint64_t last_step = 0;
  double last_value = 0;
  int64_t last_time_ms = 0;
};

WatchEvaluator::WatchEvaluator(Engine* engine, const RunStore* runs,
                               WatchOptions options)
    : engine_(engine), runs_(runs), options_(options) {}

absl::StatusOr<std::unique_ptr<WatchEvaluator>> WatchEvaluator::Open(
    Engine* engine, const RunStore* runs, WatchOptions options) {
  std::unique_ptr<WatchEvaluator> evaluator(
      new WatchEvaluator(engine, runs, options));
  if (auto s = evaluator->Load(); !s.ok()) return s;
  evaluator->background_ =
      std::thread([e = evaluator.get()] {
        NameThisThread("stepdb-watch");
        e->BackgroundLoop();
      });
  return evaluator;
}

absl::Status WatchEvaluator::Load() {
  absl::Status error;
  absl::MutexLock rules_lock(&rules_mu_);
  auto scanned = engine_->ScanMeta(
      std::string(1, kWatchRuleTag),
      [&](std::string_view, std::string_view value) {
        auto spec = DecodeWatchRule(value);
        if (!spec.ok()) {
          error = spec.status();
          return false;
        }
        auto condition = ParseWatchCondition(spec->condition);
        if (!condition.ok()) {
          error = absl::DataLossError(absl::StrCat(
              "watch rule ", spec->id, ": ", condition.status().message()));
          return false;
        }
        uint64_t numeric_id;
        if (absl::SimpleAtoi(spec->id, &numeric_id)) {
          next_rule_id_ = std::max(next_rule_id_, numeric_id + 1);
        }
        std::string id = spec->id;
        rules_[id] =
            std::make_shared<const Rule>(Rule{*std::move(spec), *condition});
        return true;
      });
  if (!scanned.ok()) return scanned;
  if (!error.ok()) return error;

  // Events are rare (episodes, not points), so one pass over the log at
  // open is cheap; it finds the last seq and fills the in-memory window.
  {
    absl::MutexLock events_lock(&events_mu_);
    scanned = engine_->ScanMeta(
        std::string(1, kWatchEventTag),
        [&](std::string_view key, std::string_view value) {
          if (key.size() != 9) return true;
          const uint64_t seq = ReadBigEndian64(key.data() + 1);
          persisted_seq_ = std::max(persisted_seq_, seq);
          if (options_.memory_events == 0) return true;
          auto event = DecodeWatchEvent(value);
          if (!event.ok()) {
            error = event.status();
            return false;
          }
          recent_.push_back(*std::move(event));
          if (recent_.size() > options_.memory_events) recent_.pop_front();
          return true;
        });
    if (!scanned.ok()) return scanned;
    if (!error.ok()) return error;
    next_seq_ = persisted_seq_ + 1;
  }
  PublishRules();
  return absl::OkStatus();
}

WatchEvaluator::~WatchEvaluator() {
  {
    absl::MutexLock lock(&events_mu_);
    stopping_ = true;
  }
  if (background_.joinable()) background_.join();
}

void WatchEvaluator::PublishRules() {
  auto set = std::make_shared<RuleSet>();
  absl::Duration shortest_stall = absl::InfiniteDuration();
  for (const auto& [id, rule] : rules_) {
    RuleSet::Project& project = set->projects[rule->spec.project];
    if (rule->spec.metric.empty()) {
      project.any_metric.push_back(rule);
    } else {
      project.by_metric[rule->spec.metric].push_back(rule);
    }
    if (rule->condition.kind == WatchCondition::Kind::kStalled) {
      shortest_stall = std::min(shortest_stall, rule->condition.stalled);
    }
  }
  {
    absl::MutexLock lock(&state_mu_);
    set->version = rule_set_ == nullptr ? 1 : rule_set_->version + 1;
    rule_set_ = std::move(set);
  }
  absl::MutexLock lock(&events_mu_);
  tick_changed_ = true;  // wakes the background thread to use the new tick
  stall_tick_ =
      std::clamp(shortest_stall / 4, kMinStallTick,
                 std::max(kMinStallTick, options_.stall_check_interval));
}

WatchEvaluator::SeriesState& WatchEvaluator::StateOf(SeriesId series) {
  std::unique_ptr<SeriesState>& slot = series_[series];
  if (slot == nullptr) {
    slot = std::make_unique<SeriesState>();
  }
  SeriesState& state = *slot;
  if (state.version == rule_set_->version) return state;
  const std::optional<SeriesKey> key = engine_->KeyOf(series);
  if (!key) return state;  // an unknown or deleted series
  // Rebuild for the new rule set, keeping the episodes of surviving rules.
  state.version = rule_set_->version;
  std::vector<Binding> bindings;
  bool stalled = false;
  auto add = [&](const std::vector<std::shared_ptr<const Rule>>& rules) {
    for (const auto& rule : rules) {
      if (!Matches(rule->spec, *key)) continue;
      auto old = std::find_if(state.bindings.begin(), state.bindings.end(),
                              [&](const Binding& b) { return b.rule == rule; });
      bindings.push_back(old != state.bindings.end() ? std::move(*old)
                                                     : Binding(rule));
      stalled |= rule->condition.kind == WatchCondition::Kind::kStalled;
    }
  };
  if (auto p = rule_set_->projects.find(key->project);
      p != rule_set_->projects.end()) {
    if (auto m = p->second.by_metric.find(key->metric);
        m != p->second.by_metric.end()) {
      add(m->second);
    }
    add(p->second.any_metric);
  }
  state.bindings = std::move(bindings);
  state.key = state.bindings.empty() ? std::nullopt : key;
  state.stall_watched = stalled;
  if (stalled) {
    stall_watched_.insert(&state);
  } else {
    stall_watched_.erase(&state);
  }
  return state;
}

// ---- evaluation -------------------------------------------------------------

void WatchEvaluator::OnCommit(std::span<const CommittedPoints> committed) {
  const int64_t now_ms = NowMs();
  absl::MutexLock lock(&state_mu_);
  ForgetDeletedLocked();
  // Without rules there is nothing to match: keep no per-series state.
  if (rule_set_->projects.empty()) return;
  for (const CommittedPoints& c : committed) {
    if (c.points.empty()) continue;
    SeriesState& state = StateOf(c.series);
    if (state.bindings.empty()) continue;
    for (Binding& b : state.bindings) Evaluate(b, state, c.points, now_ms);
    const size_t last = c.points.size() - 1;
    state.last_seen_ms = now_ms;
    state.last_step = c.points.steps[last];
    state.last_value = c.points.values[last];
    state.last_time_ms = c.points.times_ms[last];
  }
}

void WatchEvaluator::Evaluate(Binding& b, const SeriesState& s,
                              const PointSpan& points, int64_t now_ms) {
  const WatchCondition& c = b.condition;
  auto emit = [&](WatchEventKind kind, size_t i, std::string message) {
    Emit(kind, *b.rule, *s.key, points.steps[i], points.values[i],
         points.times_ms[i], now_ms, std::move(message));
  };
  // The episode logic over the points for one kind of condition. Dispatching
  // on the kind once per (binding, group) rather than per point keeps the
  // inner loop free of unpredictable branches (rules of mixed kinds
  // interleave on a series).
  auto run = [&](auto holds, auto describe) {
    for (size_t i = 0; i < points.size(); ++i) {
      if (!holds(i)) {
        b.consecutive = 0;
        if (b.firing) {
          b.firing = false;
          emit(WatchEventKind::kResolved, i, "condition no longer holds");
        }
        continue;
      }
      ++b.consecutive;
      if (b.firing || b.consecutive < c.count) continue;
      b.firing = true;
      emit(WatchEventKind::kFiring, i, describe(i));
    }
  };
  const std::span<const double> values = points.values;
  switch (c.kind) {
    case WatchCondition::Kind::kNonFinite:
      run([&](size_t i) { return !std::isfinite(values[i]); },
          [&](size_t i) { return absl::StrCat("value is ", values[i]); });
      return;
    case WatchCondition::Kind::kAbove:
    case WatchCondition::Kind::kBelow: {
      const bool above = c.kind == WatchCondition::Kind::kAbove;
      // NaN compares false either way: neither above nor below.
      auto describe = [&](size_t i) {
        return absl::StrCat("value ", values[i], above ? " > " : " < ",
                            c.threshold, " for ", b.consecutive,
                            b.consecutive == 1 ? " point" : " points");
      };
      if (above) {
        run([&](size_t i) { return values[i] > c.threshold; }, describe);
      } else {
        run([&](size_t i) { return values[i] < c.threshold; }, describe);
      }
      return;
    }
    case WatchCondition::Kind::kPlateau:
      run(
          [&](size_t i) {
            const double v = values[i];
            if (std::isfinite(v) && (!b.has_min || v < b.min)) {
              b.has_min = true;
              b.min = v;
              b.min_step = points.steps[i];
            }
            return b.has_min && points.steps[i] - b.min_step >= c.plateau_steps;
          },
          [&](size_t) {
            return absl::StrCat("minimum ", b.min, " not improved since step ",
                                StepText(b.min_step));
          });
      return;
    case WatchCondition::Kind::kStalled:
      // Any point ends a stall; the timer (CheckStalled) starts one.
      if (b.firing) {
        b.firing = false;
        emit(WatchEventKind::kResolved, 0, "points resumed");
      }
      return;
  }
}

void WatchEvaluator::Emit(WatchEventKind kind, const Rule& rule,
                          const SeriesKey& series, uint64_t step, double value,
                          int64_t time_ms, int64_t now_ms,
                          std::string message) {
  absl::MutexLock lock(&events_mu_);
  if (pending_.size() >= options_.max_pending_events) {
    ++dropped_;
    return;
  }
  WatchEventRecord& e = pending_.emplace_back();
  e.seq = next_seq_++;
  e.kind = kind;
  e.rule_id = rule.spec.id;
  e.rule_name = rule.spec.name;
  e.condition = rule.spec.condition;
  e.series = series;
  e.step = step;
  e.value = value;
  e.time_ms = time_ms;
  e.fired_ms = now_ms;
  e.message = std::move(message);
}

void WatchEvaluator::CheckStalled(int64_t now_ms) {
  absl::MutexLock lock(&state_mu_);
  ForgetDeletedLocked();
  for (SeriesState* s : stall_watched_) {
    for (Binding& b : s->bindings) {
      const WatchCondition& c = b.rule->condition;
      if (c.kind != WatchCondition::Kind::kStalled) continue;
      const bool elapsed =
          now_ms - s->last_seen_ms >= absl::ToInt64Milliseconds(c.stalled);
      if (!b.firing && !elapsed) continue;
      // Only now is the run's state worth a look-up.
      bool running = true;
      if (runs_ != nullptr) {
        auto run = runs_->Get(s->key->project, s->key->run);
        running = !run || run->state == RunState::kRunning;
      }
      if (!b.firing && running) {
        b.firing = true;
        Emit(WatchEventKind::kFiring, *b.rule, *s->key, s->last_step,
             s->last_value, s->last_time_ms, now_ms,
             absl::StrCat("no point for ", now_ms - s->last_seen_ms,
                          " ms while the run is running"));
      } else if (b.firing && !running) {
        b.firing = false;
        Emit(WatchEventKind::kResolved, *b.rule, *s->key, s->last_step,
             s->last_value, s->last_time_ms, now_ms,
             "the run is no longer running");
      }
    }
  }
}

void WatchEvaluator::BackgroundLoop() {
  int64_t next_stall_check = 0;
  for (;;) {
    std::vector<WatchEventRecord> batch;
    bool stopping;
    {
      absl::MutexLock lock(&events_mu_);
      events_mu_.AwaitWithTimeout(
          absl::Condition(
              +[](WatchEvaluator* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(
                   e->events_mu_) {
                return !e->pending_.empty() || e->stopping_ || e->tick_changed_;
              },
              this),
          stall_tick_);
      batch.swap(pending_);
      stopping = stopping_;
      if (tick_changed_) {
        tick_changed_ = false;
        next_stall_check = 0;
      }
    }
    if (!batch.empty()) {
      std::vector<MetaWrite> writes;
      writes.reserve(batch.size());
      for (const WatchEventRecord& e : batch) {
        writes.push_back({WatchEventKey(e.seq), EncodeWatchEvent(e)});
      }
      if (absl::Status s = engine_->WriteMeta(writes); !s.ok()) {
        std::cerr << "stepdb: watch: cannot persist " << batch.size()
                  << " events: " << s << std::endl;
        if (stopping) return;
        // Keep them (in seq order, before newer ones) and try again.
        absl::MutexLock lock(&events_mu_);
        pending_.insert(pending_.begin(),
                        std::make_move_iterator(batch.begin()),
                        std::make_move_iterator(batch.end()));
        events_mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                                    absl::Milliseconds(100));
        continue;
      }
      {
        absl::MutexLock lock(&events_mu_);
        persisted_seq_ = batch.back().seq;
        for (WatchEventRecord& e : batch) {
          if (options_.memory_events == 0) break;
          recent_.push_back(std::move(e));
          if (recent_.size() > options_.memory_events) recent_.pop_front();
        }
      }
      absl::MutexLock lock(&listeners_mu_);
      for (WatchListener* listener : listeners_) listener->OnNewEvents();
    } else if (stopping) {
      return;  // everything queued is persisted
    }
    if (const int64_t now = NowMs(); now >= next_stall_check) {
      CheckStalled(now);
      next_stall_check = now + absl::ToInt64Milliseconds(StallTick());
    }
  }
}

absl::Duration WatchEvaluator::StallTick() const {
  absl::MutexLock lock(&events_mu_);
  return stall_tick_;
}

// ---- rules ------------------------------------------------------------------

absl::StatusOr<WatchRuleSpec> WatchEvaluator::CreateRule(WatchRuleSpec rule) {
  if (auto s = ValidateName("project", rule.project, kMaxProjectBytes);
      !s.ok()) {
    return s;
  }
  if (!rule.run.empty()) {
    if (auto s = ValidateName("run", rule.run, kMaxRunBytes); !s.ok()) return s;
  }
  if (!rule.metric.empty()) {
    if (auto s = ValidateName("metric", rule.metric, kMaxMetricBytes);
        !s.ok()) {
      return s;
    }
  }
  if (rule.labels.size() > kMaxLabels) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels: more than ", kMaxLabels));
  }
  for (const auto& [k, v] : rule.labels) {
    if (auto s = ValidateName("label key", k, kMaxLabelKeyBytes); !s.ok())
      return s;
    if (auto s =
            ValidateName(absl::StrCat("label ", k), v, kMaxLabelValueBytes);
        !s.ok()) {
      return s;
    }
  }
  if (auto s = CanonicalizeLabels(&rule.labels); !s.ok()) return s;
  if (rule.name.size() > kMaxWatchNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("name: longer than ", kMaxWatchNameBytes, " bytes"));
  }
  auto condition = ParseWatchCondition(rule.condition);
  if (!condition.ok()) return condition.status();

  absl::MutexLock lock(&rules_mu_);
  rule.id = absl::StrCat(next_rule_id_);
  const MetaWrite write{RuleKey(rule.project, rule.id), EncodeWatchRule(rule)};
  if (auto s = engine_->WriteMeta(std::span(&write, 1)); !s.ok()) return s;
  ++next_rule_id_;
  rules_[rule.id] = std::make_shared<const Rule>(Rule{rule, *condition});
  PublishRules();
  return rule;
}

std::vector<WatchRuleSpec> WatchEvaluator::ListRules(
    std::string_view project) const {
  std::vector<WatchRuleSpec> out;
  {
    absl::MutexLock lock(&rules_mu_);
    for (const auto& [id, rule] : rules_) {
      if (rule->spec.project == project) out.push_back(rule->spec);
    }
  }
  // By id, numerically (ids are decimal counters).
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.id.size(), a.id) <
           std::make_pair(b.id.size(), b.id);
  });
  return out;
}

absl::Status WatchEvaluator::DeleteRule(std::string_view project,
                                        std::string_view id) {
  absl::MutexLock lock(&rules_mu_);
  auto it = rules_.find(Sv(id));
  if (it == rules_.end() || it->second->spec.project != project) {
    return absl::NotFoundError(absl::StrCat("watch rule \"", Sv(id),
                                            "\" not found in project \"",
                                            Sv(project), "\""));
  }
  const MetaWrite write{RuleKey(project, id), std::nullopt};
  if (auto s = engine_->WriteMeta(std::span(&write, 1)); !s.ok()) return s;
  rules_.erase(it);
  PublishRules();
  return absl::OkStatus();
}

absl::StatusOr<size_t> WatchEvaluator::DeleteProjectRules(
    std::string_view project) {
  absl::MutexLock lock(&rules_mu_);
  std::vector<MetaWrite> writes;
  for (const auto& [id, rule] : rules_) {
    if (rule->spec.project == project) {
      writes.push_back({RuleKey(project, id), std::nullopt});
    }
  }
  if (writes.empty()) return 0;
  if (auto s = engine_->WriteMeta(writes); !s.ok()) return s;
  absl::erase_if(rules_, [&](const auto& entry) {
    return entry.second->spec.project == project;
  });
  PublishRules();
  return writes.size();
}

void WatchEvaluator::OnSeriesDeleted(std::span<const SeriesId> series) {
  absl::MutexLock lock(&deleted_mu_);
  deleted_.insert(deleted_.end(), series.begin(), series.end());
  has_deleted_.store(true, std::memory_order_release);
}

void WatchEvaluator::ForgetDeletedLocked() {
  if (!has_deleted_.load(std::memory_order_acquire)) return;
  std::vector<SeriesId> deleted;
  {
    absl::MutexLock lock(&deleted_mu_);
    deleted.swap(deleted_);
    has_deleted_.store(false, std::memory_order_relaxed);
  }
  for (SeriesId id : deleted) {
    auto it = series_.find(id);
    if (it == series_.end()) continue;
    stall_watched_.erase(it->second.get());
    series_.erase(it);
  }
}

// ---- events -----------------------------------------------------------------

absl::StatusOr<std::vector<WatchEventRecord>> WatchEvaluator::ReadEvents(
    std::string_view project, std::string_view run, uint64_t after_seq,
    size_t limit, uint64_t* scanned_through) const {
  std::vector<WatchEventRecord> out;
  *scanned_through = after_seq;
  uint64_t first_recent;
  {
    absl::MutexLock lock(&events_mu_);
    if (after_seq >= persisted_seq_ || limit == 0) return out;
    first_recent = recent_.empty() ? persisted_seq_ + 1 : recent_.front().seq;
    if (first_recent <= after_seq + 1) {
      // The window is dense in seq: index straight to after_seq + 1.
      for (size_t i = after_seq + 1 - first_recent; i < recent_.size(); ++i) {
        const WatchEventRecord& e = recent_[i];
        if (EventMatches(e, project, run)) {
          out.push_back(e);
          if (out.size() == limit) {
            *scanned_through = e.seq;
            return out;
          }
        }
      }
      *scanned_through = persisted_seq_;
      return out;
    }
  }
  // Older than the window: from the meta records, without holding the lock.
  if (auto s = ReadStoredEvents(project, run, after_seq, first_recent - 1,
                                limit, &out, scanned_through);
      !s.ok()) {
    return s;
  }
  return out;
}

absl::Status WatchEvaluator::ReadStoredEvents(
    std::string_view project, std::string_view run, uint64_t after_seq,
    uint64_t upto, size_t limit, std::vector<WatchEventRecord>* out,
    uint64_t* scanned_through) const {
  // ScanMeta takes a prefix, not a start key, so walk the log in blocks of
  // 256 seqs: the key prefix without the last seq byte names one block and
  // lets RocksDB seek straight to it.
  size_t examined = 0;
  absl::Status error;
  bool stop = false;
  for (uint64_t block = (after_seq + 1) & ~uint64_t{0xff};
       block <= upto && !stop; block += 256) {
    std::string prefix = WatchEventKey(block);
    prefix.pop_back();
    auto scanned = engine_->ScanMeta(
        prefix, [&](std::string_view key, std::string_view value) {
          if (key.size() != 9) return true;
          const uint64_t seq = ReadBigEndian64(key.data() + 1);
          if (seq <= after_seq) return true;
          if (seq > upto) {
            *scanned_through = upto;
            stop = true;
            return false;
          }
          auto event = DecodeWatchEvent(value);
          if (!event.ok()) {
            error = event.status();
            stop = true;
            return false;
          }
          *scanned_through = seq;
          if (EventMatches(*event, project, run))
            out->push_back(*std::move(event));
          if (out->size() >= limit || ++examined >= kMaxScannedPerRead) {
            stop = true;
            return false;
          }
          return true;
        });
    if (!scanned.ok()) return scanned;
    if (!error.ok()) return error;
    if (!stop) *scanned_through = std::min(upto, block + 255);
  }
  return absl::OkStatus();
}

uint64_t WatchEvaluator::LastSeq() const {
  absl::MutexLock lock(&events_mu_);
  return persisted_seq_;
}

uint64_t WatchEvaluator::dropped_events() const {
  absl::MutexLock lock(&events_mu_);
  return dropped_;
}

void WatchEvaluator::AddListener(WatchListener* listener) {
  absl::MutexLock lock(&listeners_mu_);
  listeners_.push_back(listener);
}

void WatchEvaluator::RemoveListener(WatchListener* listener) {
  absl::MutexLock lock(&listeners_mu_);
  std::erase(listeners_, listener);
}

}  // namespace stepdb::storage
