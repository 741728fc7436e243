#include "storage/run_store.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "storage/chunk_codec_internal.h"
#include "storage/keys.h"
#include "storage/meta_codec.h"
#include "storage/series_key.h"

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

constexpr uint8_t kRunRecordVersion = 1;
enum ParamType : uint8_t { kInt = 0, kFloat = 1, kString = 2, kBool = 3 };

bool ValidState(uint8_t s) { return s >= 1 && s <= 4; }

// Numbers compare across int and float; other types only with their own.
std::optional<int> Compare(const ParamValue& a, const ParamValue& b) {
  auto number = [](const ParamValue& v) -> std::optional<double> {
    if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
    if (auto* d = std::get_if<double>(&v)) return *d;
    return std::nullopt;
  };
  if (auto x = number(a), y = number(b); x && y) {
    if (std::isnan(*x) || std::isnan(*y)) return std::nullopt;
    // Two ints compare exactly (doubles lose precision past 2^53).
    if (auto *i = std::get_if<int64_t>(&a), *j = std::get_if<int64_t>(&b); i && j) {
      return *i < *j ? -1 : (*i > *j ? 1 : 0);
    }
    return *x < *y ? -1 : (*x > *y ? 1 : 0);
  }
  if (a.index() != b.index()) return std::nullopt;
  if (auto* s = std::get_if<std::string>(&a)) {
    const int c = s->compare(std::get<std::string>(b));
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  const bool x = std::get<bool>(a), y = std::get<bool>(b);
  return x == y ? 0 : (x ? 1 : -1);
}

absl::Status ValidateParams(const std::map<std::string, ParamValue>& params) {
  if (params.size() > kMaxParams) {
    return absl::InvalidArgumentError(absl::StrCat(
        "params: ", params.size(), " params, more than the limit of ", kMaxParams));
  }
  for (const auto& [name, value] : params) {
    if (auto s = ValidateName("param name", name, kMaxParamNameBytes); !s.ok()) {
      return s;
    }
    if (auto* str = std::get_if<std::string>(&value)) {
      if (str->size() > kMaxParamStringBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("param \"", name, "\": ", str->size(),
                         " bytes, more than the limit of ", kMaxParamStringBytes));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateTags(const std::vector<std::string>& tags) {
  for (const std::string& tag : tags) {
    if (auto s = ValidateName("tag", tag, kMaxTagBytes); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ValidateText(std::string_view field,
                          const std::optional<std::string>& text) {
  if (text.has_value() && text->size() > kMaxRunTextBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        Sv(field), ": ", text->size(), " bytes, more than the limit of ",
        kMaxRunTextBytes));
  }
  return absl::OkStatus();
}

absl::Status ValidateUpdate(const RunUpdate& update) {
  if (auto s = ValidateParams(update.set_params); !s.ok()) return s;
  if (auto s = ValidateTags(update.add_tags); !s.ok()) return s;
  if (auto s = ValidateText("commit_sha", update.commit_sha); !s.ok()) return s;
  if (auto s = ValidateText("data_version", update.data_version); !s.ok()) return s;
  return ValidateText("description", update.description);
}

// Applies `update` to `run`; false if nothing changed.
bool Apply(const RunUpdate& update, RunRecord* run) {
  const std::string before = EncodeRunRecord(*run);
  for (const auto& [name, value] : update.set_params) run->params[name] = value;
  for (const std::string& name : update.remove_params) run->params.erase(name);
  run->tags.insert(run->tags.end(), update.add_tags.begin(), update.add_tags.end());
  std::sort(run->tags.begin(), run->tags.end());
  run->tags.erase(std::unique(run->tags.begin(), run->tags.end()), run->tags.end());
  std::erase_if(run->tags, [&](const std::string& t) {
    return std::find(update.remove_tags.begin(), update.remove_tags.end(), t) !=
           update.remove_tags.end();
  });
  if (update.commit_sha) run->commit_sha = *update.commit_sha;
  if (update.data_version) run->data_version = *update.data_version;
  if (update.description) run->description = *update.description;
  if (update.state) run->state = *update.state;
  return EncodeRunRecord(*run) != before;
}

// What a create request of an existing run merges into it.
RunUpdate MergeOf(const RunRecord& run) {
  RunUpdate update;
  update.set_params = run.params;
  update.add_tags = run.tags;
  auto non_empty = [](const std::string& s) {
    return s.empty() ? std::nullopt : std::optional<std::string>(s);
  };
  update.commit_sha = non_empty(run.commit_sha);
  update.data_version = non_empty(run.data_version);
  update.description = non_empty(run.description);
  return update;
}

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

absl::StatusOr<ParamValue> ParseLiteral(std::string_view text) {
  if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
    return ParamValue(std::string(text.substr(1, text.size() - 2)));
  }
  if (text == "true") return ParamValue(true);
  if (text == "false") return ParamValue(false);
  int64_t i;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), i);
  if (ec == std::errc() && p == text.data() + text.size()) return ParamValue(i);
  // strtod takes what from_chars(double) does and is everywhere.
  std::string copy(text);
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(copy.c_str(), &end);
  if (!copy.empty() && end == copy.c_str() + copy.size() && errno == 0) {
    return ParamValue(d);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "filter: \"", Sv(text), "\" is not a number, true/false or a \"quoted string\""));
}

}  // namespace

std::string EncodeRunRecord(const RunRecord& run) {
  std::string out(1, static_cast<char>(kRunRecordVersion));
  PutString(run.project, &out);
  PutString(run.run_id, &out);
  PutVarint(run.params.size(), &out);
  for (const auto& [name, value] : run.params) {
    PutString(name, &out);
    out.push_back(static_cast<char>(value.index()));
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, int64_t>) {
            PutVarint(ZigZag(static_cast<uint64_t>(v)), &out);
          } else if constexpr (std::is_same_v<T, double>) {
            PutFixed64(std::bit_cast<uint64_t>(v), &out);
          } else if constexpr (std::is_same_v<T, std::string>) {
            PutString(v, &out);
          } else {
            out.push_back(v ? 1 : 0);
          }
        },
        value);
  }
  PutVarint(run.tags.size(), &out);
  for (const std::string& tag : run.tags) PutString(tag, &out);
  PutString(run.commit_sha, &out);
  PutString(run.data_version, &out);
  PutString(run.description, &out);
  out.push_back(static_cast<char>(run.state));
  PutVarint(ZigZag(static_cast<uint64_t>(run.created_ms)), &out);
  PutVarint(ZigZag(static_cast<uint64_t>(run.updated_ms)), &out);
  out.push_back(run.fork.has_value() ? 1 : 0);
  if (run.fork) {
    PutString(run.fork->parent_run, &out);
    PutVarint(run.fork->step, &out);
  }
  return out;
}

absl::StatusOr<RunRecord> DecodeRunRecord(std::string_view in) {
  const auto corrupt = [](std::string_view what) {
    return absl::DataLossError(absl::StrCat("corrupt run record: ", Sv(what)));
  };
  uint8_t version;
  if (!GetByte(&in, &version) || version != kRunRecordVersion) {
    return corrupt("unknown version");
  }
  RunRecord run;
  uint64_t n;
  if (!GetString(&in, &run.project) || !GetString(&in, &run.run_id) ||
      !GetVarint(&in, &n) || n > in.size()) {
    return corrupt("names");
  }
  for (uint64_t i = 0; i < n; ++i) {
    std::string name;
    uint8_t type;
    if (!GetString(&in, &name) || !GetByte(&in, &type)) return corrupt("param");
    uint64_t bits;
    std::string str;
    uint8_t b;
    switch (type) {
      case kInt:
        if (!GetVarint(&in, &bits)) return corrupt("int param");
        run.params[name] = static_cast<int64_t>(UnZigZag(bits));
        break;
      case kFloat:
        if (!GetFixed64(&in, &bits)) return corrupt("float param");
        run.params[name] = std::bit_cast<double>(bits);
        break;
      case kString:
        if (!GetString(&in, &str)) return corrupt("string param");
        run.params[name] = std::move(str);
        break;
      case kBool:
        if (!GetByte(&in, &b)) return corrupt("bool param");
        run.params[name] = b != 0;
        break;
      default:
        return corrupt("param type");
    }
  }
  if (!GetVarint(&in, &n) || n > in.size()) return corrupt("tags");
  run.tags.resize(n);
  for (std::string& tag : run.tags) {
    if (!GetString(&in, &tag)) return corrupt("tag");
  }
  uint8_t state, has_fork;
  uint64_t created, updated;
  if (!GetString(&in, &run.commit_sha) || !GetString(&in, &run.data_version) ||
      !GetString(&in, &run.description) || !GetByte(&in, &state) ||
      !ValidState(state) || !GetVarint(&in, &created) ||
      !GetVarint(&in, &updated) || !GetByte(&in, &has_fork)) {
    return corrupt("fields");
  }
  run.state = static_cast<RunState>(state);
  run.created_ms = static_cast<int64_t>(UnZigZag(created));
  run.updated_ms = static_cast<int64_t>(UnZigZag(updated));
  if (has_fork) {
    ForkPoint fork;
    if (!GetString(&in, &fork.parent_run) || !GetVarint(&in, &fork.step)) {
      return corrupt("fork");
    }
    run.fork = std::move(fork);
  }
  if (!in.empty()) return corrupt("trailing bytes");
  return run;
}

bool ParamComparison::Matches(
    const std::map<std::string, ParamValue>& params) const {
  auto it = params.find(name);
  if (it == params.end()) return false;
  const std::optional<int> c = Compare(it->second, literal);
  if (!c) return false;
  switch (op) {
    case Op::kEq: return *c == 0;
    case Op::kNe: return *c != 0;
    case Op::kLt: return *c < 0;
    case Op::kLe: return *c <= 0;
    case Op::kGt: return *c > 0;
    case Op::kGe: return *c >= 0;
  }
  return false;
}

absl::StatusOr<ParamComparison> ParseParamComparison(std::string_view text) {
  // Longest operators first, so that "<=" is not read as "<".
  static constexpr std::pair<std::string_view, ParamComparison::Op> kOps[] = {
      {"!=", ParamComparison::Op::kNe}, {"<=", ParamComparison::Op::kLe},
      {">=", ParamComparison::Op::kGe}, {"==", ParamComparison::Op::kEq},
      {"=", ParamComparison::Op::kEq},  {"<", ParamComparison::Op::kLt},
      {">", ParamComparison::Op::kGt},
  };
  size_t best = std::string_view::npos;
  std::pair<std::string_view, ParamComparison::Op> found;
  for (const auto& op : kOps) {
    const size_t at = text.find(op.first);
    if (at < best) {
      best = at;
      found = op;
    }
  }
  if (best == std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "filter \"", Sv(text), "\": expected NAME OP VALUE with OP one of = != < <= > >="));
  }
  ParamComparison c;
  c.name = std::string(absl::StripAsciiWhitespace(
      absl::string_view(text.data(), best)));
  c.op = found.second;
  const absl::string_view rest(text.data() + best + found.first.size(),
                               text.size() - best - found.first.size());
  const absl::string_view literal = absl::StripAsciiWhitespace(rest);
  if (c.name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("filter \"", Sv(text), "\": missing param name"));
  }
  auto value = ParseLiteral(std::string_view(literal.data(), literal.size()));
  if (!value.ok()) return value.status();
  c.literal = std::move(*value);
  return c;
}

absl::StatusOr<RunSort> ParseRunSort(std::string_view text, bool descending) {
  RunSort sort;
  sort.descending = descending;
  if (text.empty() || text == "created") return sort;
  if (text == "updated") {
    sort.key = RunSort::Key::kUpdated;
  } else if (text == "run_id") {
    sort.key = RunSort::Key::kRunId;
  } else if (text.starts_with("param:") && text.size() > 6) {
    sort.key = RunSort::Key::kParam;
    sort.name = std::string(text.substr(6));
  } else if (text.starts_with("metric:") && text.size() > 7) {
    sort.key = RunSort::Key::kMetric;
    sort.name = std::string(text.substr(7));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "sort_by \"", Sv(text),
        "\": expected created, updated, run_id, param:NAME or metric:NAME"));
  }
  return sort;
}

absl::StatusOr<std::unique_ptr<RunStore>> RunStore::Open(Engine* engine) {
  std::unique_ptr<RunStore> store(new RunStore(engine));
  absl::Status decode_error;
  absl::MutexLock lock(&store->mu_);
  auto scanned = engine->ScanMeta(
      std::string(1, kRunMetaTag),
      [&](std::string_view, std::string_view value) {
        auto run = DecodeRunRecord(value);
        if (!run.ok()) {
          decode_error = run.status();
          return false;
        }
        auto key = std::make_pair(run->project, run->run_id);
        store->runs_.emplace(std::move(key), *std::move(run));
        return true;
      });
  if (!scanned.ok()) return scanned;
  if (!decode_error.ok()) return decode_error;
  return store;
}

absl::Status RunStore::Persist(const RunRecord& run) {
  const MetaWrite write{RunMetaKey(run.project, run.run_id),
                        EncodeRunRecord(run)};
  return engine_->WriteMeta(std::span(&write, 1));
}

absl::StatusOr<std::pair<RunRecord, bool>> RunStore::Create(RunRecord run) {
  if (auto s = ValidateName("project", run.project, kMaxProjectBytes); !s.ok()) {
    return s;
  }
  if (auto s = ValidateName("run_id", run.run_id, kMaxRunBytes); !s.ok()) {
    return s;
  }
  if (run.fork) {
    if (auto s = ValidateName("fork parent_run", run.fork->parent_run, kMaxRunBytes);
        !s.ok()) {
      return s;
    }
  }
  const RunUpdate merge = MergeOf(run);
  if (auto s = ValidateUpdate(merge); !s.ok()) return s;

  absl::MutexLock lock(&mu_);
  AwaitNoDeletionLocked(run.project, run.run_id);
  auto it = runs_.find(std::make_pair(run.project, run.run_id));
  if (it != runs_.end()) {
    if (run.fork && it->second.fork != run.fork) {
      return absl::FailedPreconditionError(absl::StrCat(
          "run \"", run.run_id, "\" exists with a different fork point"));
    }
    RunRecord merged = it->second;
    if (Apply(merge, &merged)) {
      merged.updated_ms = NowMs();
      if (auto s = Persist(merged); !s.ok()) return s;
      it->second = merged;
    }
    return std::make_pair(std::move(merged), false);
  }
  if (run.fork) {
    if (run.fork->parent_run == run.run_id) {
      return absl::FailedPreconditionError("a run cannot fork from itself");
    }
    if (!runs_.contains(std::make_pair(run.project, run.fork->parent_run))) {
      return absl::FailedPreconditionError(absl::StrCat(
          "fork parent run \"", run.fork->parent_run, "\" does not exist"));
    }
  }
  RunRecord created;
  created.project = run.project;
  created.run_id = run.run_id;
  created.fork = run.fork;
  created.state = run.state;
  Apply(merge, &created);
  created.created_ms = created.updated_ms = NowMs();
  if (auto s = Persist(created); !s.ok()) return s;
  runs_.emplace(std::make_pair(created.project, created.run_id), created);
  return std::make_pair(std::move(created), true);
}

absl::StatusOr<RunRecord> RunStore::Update(std::string_view project,
                                           std::string_view run_id,
                                           const RunUpdate& update) {
  if (auto s = ValidateUpdate(update); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  AwaitNoDeletionLocked(std::string(project), std::string(run_id));
  auto it = runs_.find(std::make_pair(std::string(project), std::string(run_id)));
  if (it == runs_.end()) {
    return absl::NotFoundError(absl::StrCat("run \"", Sv(run_id), "\" not found"));
  }
  RunRecord updated = it->second;
  if (Apply(update, &updated)) {
    updated.updated_ms = NowMs();
    if (auto s = Persist(updated); !s.ok()) return s;
    it->second = updated;
  }
  return updated;
}

void RunStore::AwaitNoDeletionLocked(const std::string& project,
                                     const std::string& run_id) {
  while (deleting_projects_.contains(project) ||
         deleting_runs_.contains(std::make_pair(project, run_id))) {
    deletion_done_.Wait(&mu_);
  }
}

absl::StatusOr<RunDeletion> RunStore::DeleteRun(std::string_view project,
                                                std::string_view run_id) {
  const auto key = std::make_pair(std::string(project), std::string(run_id));
  std::optional<RunRecord> taken;
  {
    absl::MutexLock lock(&mu_);
    AwaitNoDeletionLocked(key.first, key.second);
    // Gone from reads at once; put back if the engine fails.
    if (auto it = runs_.find(key); it != runs_.end()) {
      taken = std::move(it->second);
      runs_.erase(it);
    }
    deleting_runs_.insert(key);
  }
  auto data = engine_->DeleteRun(project, run_id);
  absl::MutexLock lock(&mu_);
  deleting_runs_.erase(key);
  deletion_done_.SignalAll();
  if (!data.ok()) {
    if (taken) runs_.emplace(key, *std::move(taken));
    return data.status();
  }
  RunDeletion deletion{*data, taken ? 1u : 0u};
  if (deletion.run_records == 0 && deletion.data.runs == 0) {
    return absl::NotFoundError(absl::StrCat("run \"", Sv(run_id),
                                            "\" not found in project \"",
                                            Sv(project), "\""));
  }
  return deletion;
}

absl::StatusOr<RunDeletion> RunStore::DeleteProject(std::string_view project) {
  const std::string p(project);
  std::vector<RunRecord> taken;
  {
    absl::MutexLock lock(&mu_);
    while (deleting_projects_.contains(p) ||
           std::any_of(deleting_runs_.begin(), deleting_runs_.end(),
                       [&](const auto& key) { return key.first == p; })) {
      deletion_done_.Wait(&mu_);
    }
    auto begin = runs_.lower_bound({p, std::string()});
    auto end = begin;
    for (; end != runs_.end() && end->first.first == p; ++end) {
      taken.push_back(std::move(end->second));
    }
    runs_.erase(begin, end);
    deleting_projects_.insert(p);
  }
  auto data = engine_->DeleteProject(project);
  absl::MutexLock lock(&mu_);
  deleting_projects_.erase(p);
  deletion_done_.SignalAll();
  if (!data.ok()) {
    for (RunRecord& run : taken) {
      auto key = std::make_pair(run.project, run.run_id);
      runs_.emplace(std::move(key), std::move(run));
    }
    return data.status();
  }
  return RunDeletion{*data, taken.size()};
}

std::optional<RunRecord> RunStore::Get(std::string_view project,
                                       std::string_view run_id) const {
  absl::MutexLock lock(&mu_);
  auto it = runs_.find(std::make_pair(std::string(project), std::string(run_id)));
  if (it == runs_.end()) return std::nullopt;
  return it->second;
}

std::vector<RunRecord> RunStore::List(std::string_view project,
                                      const RunFilter& filter,
                                      const RunSort& sort, size_t limit,
                                      bool* truncated) const {
  std::vector<RunRecord> runs;
  {
    absl::MutexLock lock(&mu_);
    const std::string p(project);
    for (auto it = runs_.lower_bound({p, std::string()});
         it != runs_.end() && it->first.first == p; ++it) {
      const RunRecord& run = it->second;
      if (!filter.states.empty() &&
          std::find(filter.states.begin(), filter.states.end(), run.state) ==
              filter.states.end()) {
        continue;
      }
      if (!std::all_of(filter.tags.begin(), filter.tags.end(),
                       [&](const std::string& t) {
                         return std::binary_search(run.tags.begin(),
                                                   run.tags.end(), t);
                       })) {
        continue;
      }
      if (!std::all_of(filter.params.begin(), filter.params.end(),
                       [&](const ParamComparison& c) {
                         return c.Matches(run.params);
                       })) {
        continue;
      }
      runs.push_back(run);
    }
  }
  // Each run's sort key; nullopt sorts last whatever the direction.
  std::vector<std::pair<std::optional<ParamValue>, size_t>> keys;
  keys.reserve(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunRecord& run = runs[i];
    std::optional<ParamValue> key;
    switch (sort.key) {
      case RunSort::Key::kCreated: key = run.created_ms; break;
      case RunSort::Key::kUpdated: key = run.updated_ms; break;
      case RunSort::Key::kRunId: key = run.run_id; break;
      case RunSort::Key::kParam:
        if (auto it = run.params.find(sort.name); it != run.params.end()) {
          key = it->second;
        }
        break;
      case RunSort::Key::kMetric: {
        SeriesFilter series_filter;
        series_filter.project = run.project;
        series_filter.run = run.run_id;
        series_filter.metric = sort.name;
        bool more = false;
        const auto series = engine_->ListSeries(series_filter, 0, &more);
        const SeriesInfo* pick = nullptr;
        for (const SeriesInfo& info : series) {
          if (info.points == 0) continue;
          if (pick == nullptr || info.key.labels.empty()) pick = &info;
          if (info.key.labels.empty()) break;
        }
        if (pick != nullptr) key = pick->last_value;
        break;
      }
    }
    keys.emplace_back(std::move(key), i);
  }
  std::stable_sort(keys.begin(), keys.end(), [&](const auto& a, const auto& b) {
    if (a.first.has_value() != b.first.has_value()) return a.first.has_value();
    if (a.first.has_value()) {
      const std::optional<int> c = Compare(*a.first, *b.first);
      if (c && *c != 0) return sort.descending ? *c > 0 : *c < 0;
    }
    return runs[a.second].run_id < runs[b.second].run_id;
  });
  *truncated = limit != 0 && keys.size() > limit;
  std::vector<RunRecord> out;
  out.reserve(limit == 0 ? keys.size() : std::min(limit, keys.size()));
  for (const auto& [key, index] : keys) {
    if (limit != 0 && out.size() == limit) break;
    out.push_back(std::move(runs[index]));
  }
  return out;
}

std::vector<LineageSegment> RunStore::Lineage(std::string_view project,
                                              std::string_view run_id) const {
  // Walk up from the run: each run contributes the steps above its own fork
  // point and up to its child's; collected child first, then reversed.
  std::vector<LineageSegment> segments;
  absl::MutexLock lock(&mu_);
  std::string run(run_id);
  uint64_t to = std::numeric_limits<uint64_t>::max();
  for (size_t depth = 0; depth <= kMaxForkDepth; ++depth) {
    auto it = runs_.find(std::make_pair(std::string(project), run));
    const RunRecord* record = it == runs_.end() ? nullptr : &it->second;
    if (record == nullptr || !record->fork || depth == kMaxForkDepth) {
      segments.push_back({run, 0, to});
      break;
    }
    const ForkPoint& fork = *record->fork;
    if (fork.step < to) segments.push_back({run, fork.step + 1, to});
    to = std::min(to, fork.step);
    run = fork.parent_run;
  }
  std::reverse(segments.begin(), segments.end());
  return segments;
}

}  // namespace stepdb::storage
