#include "storage/series_index.h"

#include <algorithm>
#include <iterator>
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

std::string_view SeriesIndex::IdentityArena::Store(std::string_view bytes) {
  if (bytes.empty()) return {};
  if (blocks_.empty() || bytes.size() > block_size_ - used_) {
    block_size_ = std::max(kBlockBytes, bytes.size());
    blocks_.push_back(std::make_unique_for_overwrite<char[]>(block_size_));
    used_ = 0;
  }
  char* at = blocks_.back().get() + used_;
  std::copy(bytes.begin(), bytes.end(), at);
  used_ += bytes.size();
  return {at, bytes.size()};
}

size_t SeriesIndex::SeriesHash::operator()(const SeriesProbe& p) const {
  return absl::HashOf(p.project, p.run, p.identity);
}

size_t SeriesIndex::SeriesHash::operator()(SeriesId id) const {
  return (*this)(SeriesEq::Probe(*entries, id));
}

SeriesIndex::SeriesProbe SeriesIndex::SeriesEq::Probe(const Entries& entries,
                                                      SeriesId id) {
  const SeriesEntry& e = entries[id - 1];
  return {e.project, e.run, e.identity()};
}

bool SeriesIndex::SeriesEq::operator()(const SeriesProbe& a,
                                       const SeriesProbe& b) const {
  return a.project == b.project && a.run == b.run && a.identity == b.identity;
}

absl::Status SeriesIndex::LoadRecord(std::string_view key,
                                     std::string_view value) {
  absl::MutexLock lock(&mu_);
  if (!key.empty() && key[0] == kIdHighWaterTag) {
    if (key.size() != 1 || value.size() != 12) {
      return absl::DataLossError("id high-water record: malformed");
    }
    max_project_ = std::max(max_project_, ReadBigEndian32(value.data()));
    max_run_ = std::max(max_run_, ReadBigEndian32(value.data() + 4));
    const SeriesId max_series = ReadBigEndian32(value.data() + 8);
    if (max_series > (1u << 31)) {
      return absl::DataLossError("id high-water record: bad series id");
    }
    if (entries_.size() < max_series) entries_.resize(max_series);
    return absl::OkStatus();
  }
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
      SeriesEntry entry;
      entry.project = ReadBigEndian32(key.data() + 1);
      entry.run = ReadBigEndian32(key.data() + 5);
      const std::string_view identity = key.substr(9);
      SeriesKey parsed;  // only checked: the entry keeps the bytes
      if (auto s = ParseSeriesIdentity(identity, &parsed); !s.ok()) {
        return s;
      }
      if (!project_names_.contains(entry.project) ||
          !run_names_.contains(entry.run)) {
        return absl::DataLossError("series record: unknown project or run");
      }
      if (id == 0 || id > (1u << 31)) {
        return absl::DataLossError(absl::StrCat("series record: bad id ", id));
      }
      if (entries_.size() < id) entries_.resize(id);
      if (entries_[id - 1].project != 0) {
        return absl::DataLossError(absl::StrCat("series id ", id, " repeats"));
      }
      series_by_project_[entry.project].push_back(id);
      entry.SetIdentity(identities_.Store(identity));
      entries_[id - 1] = entry;
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
    project_names_.emplace(ref.project, key.project);
    pending_.push_back({std::move(project_key), IdValue(ref.project)});
  } else {
    ref.project = pit->second;
  }
  std::string run_key = RunIndexKey(ref.project, key.run);
  auto rit = runs_.find(run_key);
  if (rit == runs_.end()) {
    ref.run = ++max_run_;
    runs_.emplace(run_key, ref.run);
    run_names_.emplace(ref.run, key.run);
    pending_.push_back({std::move(run_key), IdValue(ref.run)});
  } else {
    ref.run = rit->second;
  }
  // Another thread may have created it between Find and the lock.
  std::string identity = SeriesIdentity(key);
  if (auto sit = series_.find(SeriesProbe{ref.project, ref.run, identity});
      sit != series_.end()) {
    ref.id = *sit;
    return ref;
  }
  if (entries_.size() >= std::numeric_limits<SeriesId>::max() - 1) {
    return absl::ResourceExhaustedError("series id space exhausted");
  }
  ref.id = static_cast<SeriesId>(entries_.size() + 1);
  ref.created = true;
  pending_.push_back(
      {SeriesIndexKey(ref.project, ref.run, identity), IdValue(ref.id)});
  SeriesEntry& entry = entries_.emplace_back();
  entry.project = ref.project;
  entry.run = ref.run;
  entry.SetIdentity(identities_.Store(identity));
  series_.insert(ref.id);  // hashes entries_.back()
  series_by_project_[ref.project].push_back(ref.id);
  return ref;
}

std::optional<SeriesRef> SeriesIndex::Find(const SeriesKey& key) const {
  absl::ReaderMutexLock lock(&mu_);
  auto pit = projects_.find(key.project);
  if (pit == projects_.end()) return std::nullopt;
  auto rit = runs_.find(RunIndexKey(pit->second, key.run));
  if (rit == runs_.end()) return std::nullopt;
  const std::string identity = SeriesIdentity(key);
  auto sit = series_.find(SeriesProbe{pit->second, rit->second, identity});
  if (sit == series_.end()) return std::nullopt;
  return SeriesRef{*sit, pit->second, rit->second, false};
}

void SeriesIndex::TakePendingRecords(std::vector<IndexRecord>* out) {
  absl::MutexLock lock(&mu_);
  for (auto& r : pending_) out->push_back(std::move(r));
  // Frees the buffer too: it would otherwise keep, for good, the capacity
  // of the largest burst of registrations between two commits (64 bytes a
  // series).
  std::vector<IndexRecord>().swap(pending_);
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
    if (!run || entries_[id - 1].run == *run) out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<SeriesRef> SeriesIndex::RefOf(SeriesId id) const {
  absl::ReaderMutexLock lock(&mu_);
  if (id == 0 || id > entries_.size() || entries_[id - 1].project == 0) {
    return std::nullopt;
  }
  const SeriesEntry& e = entries_[id - 1];
  return SeriesRef{id, e.project, e.run, false};
}

std::vector<SeriesId> SeriesIndex::Remove(ProjectId project,
                                          std::optional<RunId> run) {
  absl::MutexLock lock(&mu_);
  std::vector<SeriesId> removed;
  if (auto it = series_by_project_.find(project);
      it != series_by_project_.end()) {
    std::erase_if(it->second, [&](SeriesId id) {
      SeriesEntry& entry = entries_[id - 1];
      if (run && entry.run != *run) return false;
      series_.erase(id);  // hashes the entry: before it is cleared
      entry = SeriesEntry();
      removed.push_back(id);
      return true;
    });
    if (it->second.empty()) series_by_project_.erase(it);
  }
  std::sort(removed.begin(), removed.end());

  // Index keys of what goes: R project [run-name], S project [run], P name.
  const std::string runs_prefix = RunIndexKey(project, "");
  std::string run_key;  // with `run`: its R key
  for (auto it = runs_.begin(); it != runs_.end();) {
    auto next = std::next(it);
    if (it->first.starts_with(runs_prefix) && (!run || it->second == *run)) {
      if (run) run_key = it->first;
      run_names_.erase(it->second);
      runs_.erase(it);
    }
    it = next;
  }
  std::string series_prefix(1, kSeriesTag);
  AppendBigEndian32(project, &series_prefix);
  if (run) AppendBigEndian32(*run, &series_prefix);
  std::string project_key;
  if (!run) {
    project_names_.erase(project);
    for (auto it = projects_.begin(); it != projects_.end(); ++it) {
      if (it->second != project) continue;
      project_key = ProjectIndexKey(it->first);
      projects_.erase(it);
      break;
    }
  }
  // Records not written yet must not be written at all.
  std::erase_if(pending_, [&](const IndexRecord& r) {
    if (r.key.starts_with(series_prefix)) return true;
    if (run) return !run_key.empty() && r.key == run_key;
    return r.key.starts_with(runs_prefix) ||
           (!project_key.empty() && r.key == project_key);
  });
  return removed;
}

IndexRecord SeriesIndex::HighWaterRecord() const {
  absl::ReaderMutexLock lock(&mu_);
  IndexRecord record{IdHighWaterKey(), ""};
  AppendBigEndian32(max_project_, &record.value);
  AppendBigEndian32(max_run_, &record.value);
  AppendBigEndian32(static_cast<uint32_t>(entries_.size()), &record.value);
  return record;
}

std::optional<SeriesKey> SeriesIndex::KeyOf(SeriesId id) const {
  absl::ReaderMutexLock lock(&mu_);
  if (id == 0 || id > entries_.size() || entries_[id - 1].project == 0) {
    return std::nullopt;
  }
  const SeriesEntry& e = entries_[id - 1];
  auto project = project_names_.find(e.project);
  auto run = run_names_.find(e.run);
  SeriesKey key;
  // Entries are checked when made, so neither fails but on a bug.
  if (project == project_names_.end() || run == run_names_.end() ||
      !ParseSeriesIdentity(e.identity(), &key).ok()) {
    return std::nullopt;
  }
  key.project = project->second;
  key.run = run->second;
  return key;
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
