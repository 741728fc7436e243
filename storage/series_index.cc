#include "storage/series_index.h"

#include <limits>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace stepdb::storage {
namespace {

std::string IdValue(uint32_t id) {
  std::string v;
  AppendBigEndian32(id, &v);
  return v;
}

}  // namespace

size_t SeriesIndex::SeriesHash::operator()(const SeriesProbe& p) const {
  return absl::HashOf(p.project, p.run, p.key->metric, p.key->labels);
}

size_t SeriesIndex::SeriesHash::operator()(SeriesId id) const {
  return (*this)(SeriesEq::Probe(*entries, id));
}

SeriesIndex::SeriesProbe SeriesIndex::SeriesEq::Probe(const Entries& entries,
                                                      SeriesId id) {
  const SeriesEntry& e = *entries[id - 1];
  return {e.project, e.run, &e.key};
}

bool SeriesIndex::SeriesEq::operator()(const SeriesProbe& a,
                                       const SeriesProbe& b) const {
  return a.project == b.project && a.run == b.run &&
         a.key->metric == b.key->metric && a.key->labels == b.key->labels;
}

absl::Status SeriesIndex::LoadRecord(std::string_view key,
                                     std::string_view value) {
  absl::MutexLock lock(&mu_);
  if (key.empty() || value.size() != 4) {
    return absl::DataLossError("index record: malformed");
  }
  const uint32_t id = ReadBigEndian32(value.data());
  switch (key[0]) {
    case kProjectTag:
      projects_[std::string(key.substr(1))] = id;
      project_names_[id] = std::string(key.substr(1));
      max_project_ = std::max(max_project_, id);
      return absl::OkStatus();
    case kRunTag:
      if (key.size() < 5) return absl::DataLossError("run record: short key");
      runs_[std::string(key)] = id;
      run_names_[id] = std::string(key.substr(5));
      max_run_ = std::max(max_run_, id);
      return absl::OkStatus();
    case kSeriesTag: {
      if (key.size() < 9) return absl::DataLossError("series record: short key");
      auto entry = std::make_unique<SeriesEntry>();
      entry->project = ReadBigEndian32(key.data() + 1);
      entry->run = ReadBigEndian32(key.data() + 5);
      if (auto s = ParseSeriesIdentity(key.substr(9), &entry->key); !s.ok()) {
        return s;
      }
      auto project_name = project_names_.find(entry->project);
      auto run_name = run_names_.find(entry->run);
      if (project_name == project_names_.end() || run_name == run_names_.end()) {
        return absl::DataLossError("series record: unknown project or run");
      }
      entry->key.project = project_name->second;
      entry->key.run = run_name->second;
      if (id == 0 || id > (1u << 31)) {
        return absl::DataLossError(absl::StrCat("series record: bad id ", id));
      }
      if (entries_.size() < id) entries_.resize(id);
      if (entries_[id - 1] != nullptr) {
        return absl::DataLossError(absl::StrCat("series id ", id, " repeats"));
      }
      series_by_project_[entry->project].push_back(id);
      entries_[id - 1] = std::move(entry);
      series_.insert(id);  // hashes entries_[id - 1]
      return absl::OkStatus();
    }
    default:
      return absl::DataLossError("index record: unknown tag");
  }
}

absl::StatusOr<SeriesRef> SeriesIndex::Resolve(const SeriesKey& key) {
  // Fast path: the series exists.
  if (auto found = Find(key)) return *found;

  absl::MutexLock lock(&mu_);
  SeriesRef ref;
  std::string project_key = ProjectIndexKey(key.project);
  auto pit = projects_.find(key.project);
  if (pit == projects_.end()) {
    ref.project = ++max_project_;
    projects_.emplace(key.project, ref.project);
    pending_.push_back({std::move(project_key), IdValue(ref.project)});
  } else {
    ref.project = pit->second;
  }
  std::string run_key = RunIndexKey(ref.project, key.run);
  auto rit = runs_.find(run_key);
  if (rit == runs_.end()) {
    ref.run = ++max_run_;
    runs_.emplace(run_key, ref.run);
    pending_.push_back({std::move(run_key), IdValue(ref.run)});
  } else {
    ref.run = rit->second;
  }
  // Another thread may have created it between Find and the lock.
  if (auto sit = series_.find(SeriesProbe{ref.project, ref.run, &key});
      sit != series_.end()) {
    ref.id = *sit;
    return ref;
  }
  if (entries_.size() >= std::numeric_limits<SeriesId>::max() - 1) {
    return absl::ResourceExhaustedError("series id space exhausted");
  }
  ref.id = static_cast<SeriesId>(entries_.size() + 1);
  ref.created = true;
  entries_.push_back(std::make_unique<SeriesEntry>(
      SeriesEntry{key, ref.project, ref.run}));
  series_.insert(ref.id);  // hashes entries_.back()
  series_by_project_[ref.project].push_back(ref.id);
  pending_.push_back({SeriesIndexKey(ref.project, ref.run, SeriesIdentity(key)),
                      IdValue(ref.id)});
  return ref;
}

std::optional<SeriesRef> SeriesIndex::Find(const SeriesKey& key) const {
  absl::ReaderMutexLock lock(&mu_);
  auto pit = projects_.find(key.project);
  if (pit == projects_.end()) return std::nullopt;
  auto rit = runs_.find(RunIndexKey(pit->second, key.run));
  if (rit == runs_.end()) return std::nullopt;
  auto sit = series_.find(SeriesProbe{pit->second, rit->second, &key});
  if (sit == series_.end()) return std::nullopt;
  return SeriesRef{*sit, pit->second, rit->second, false};
}

void SeriesIndex::TakePendingRecords(std::vector<IndexRecord>* out) {
  absl::MutexLock lock(&mu_);
  for (auto& r : pending_) out->push_back(std::move(r));
  pending_.clear();
}

void SeriesIndex::RestorePendingRecords(std::vector<IndexRecord> records) {
  absl::MutexLock lock(&mu_);
  for (auto& r : pending_) records.push_back(std::move(r));
  pending_ = std::move(records);
}

std::optional<ProjectId> SeriesIndex::FindProject(
    const std::string& project) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = projects_.find(project);
  if (it == projects_.end()) return std::nullopt;
  return it->second;
}

std::optional<RunId> SeriesIndex::FindRun(ProjectId project,
                                          const std::string& run) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = runs_.find(RunIndexKey(project, run));
  if (it == runs_.end()) return std::nullopt;
  return it->second;
}

std::vector<SeriesId> SeriesIndex::SeriesOf(ProjectId project,
                                            std::optional<RunId> run) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<SeriesId> out;
  auto it = series_by_project_.find(project);
  if (it == series_by_project_.end()) return out;
  for (SeriesId id : it->second) {
    if (!run || entries_[id - 1]->run == *run) out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<SeriesRef> SeriesIndex::RefOf(SeriesId id) const {
  absl::ReaderMutexLock lock(&mu_);
  if (id == 0 || id > entries_.size() || entries_[id - 1] == nullptr) {
    return std::nullopt;
  }
  const SeriesEntry& e = *entries_[id - 1];
  return SeriesRef{id, e.project, e.run, false};
}

const SeriesKey* SeriesIndex::KeyOf(SeriesId id) const {
  absl::ReaderMutexLock lock(&mu_);
  if (id == 0 || id > entries_.size() || entries_[id - 1] == nullptr) {
    return nullptr;
  }
  return &entries_[id - 1]->key;
}

size_t SeriesIndex::project_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return projects_.size();
}

size_t SeriesIndex::run_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return runs_.size();
}

size_t SeriesIndex::series_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return series_.size();
}

SeriesId SeriesIndex::max_series_id() const {
  absl::ReaderMutexLock lock(&mu_);
  return static_cast<SeriesId>(entries_.size());
}

}  // namespace stepdb::storage
