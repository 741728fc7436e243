#include "ingest/request_decoder.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace stepdb::ingest {
namespace {

using storage::kMicrosPerStep;

// The largest whole step whose micro-step fits in 64 bits.
constexpr int64_t kMaxWholeStep =
    static_cast<int64_t>(std::numeric_limits<uint64_t>::max() / kMicrosPerStep) -
    1;

storage::SeriesKey KeyFromWire(const v1::SeriesKey& wire) {
  storage::SeriesKey key{wire.project(), wire.run(), wire.metric(), {}};
  key.labels.reserve(wire.labels_size());
  for (const auto& [k, v] : wire.labels()) key.labels.emplace_back(k, v);
  return key;
}

// Checks the columns of one series. `where` prefixes messages.
absl::Status CheckColumns(const v1::SeriesPoints& s, const std::string& where) {
  const int n = s.values_size();
  if (s.steps_size() == 0 && s.times_ms_size() == 0 && n > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": steps and times_ms are both empty; a point needs one"));
  }
  if (s.steps_size() != 0 && s.steps_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": steps has ", s.steps_size(), " entries but values has ", n));
  }
  if (s.times_ms_size() != 0 && s.times_ms_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": times_ms has ", s.times_ms_size(), " entries but values has ", n));
  }
  if (s.step_micros_size() != 0 && s.step_micros_size() != s.steps_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": step_micros has ", s.step_micros_size(),
                     " entries but steps has ", s.steps_size()));
  }
  for (int i = 0; i < s.steps_size(); ++i) {
    if (s.steps(i) < 0 || s.steps(i) > kMaxWholeStep) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": steps[", i, "] = ", s.steps(i), " is out of range [0, ",
          kMaxWholeStep, "]"));
    }
  }
  for (int i = 0; i < s.step_micros_size(); ++i) {
    if (s.step_micros(i) >= kMicrosPerStep) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": step_micros[", i, "] = ", s.step_micros(i),
          " is not below 1000000"));
    }
  }
  if (s.steps_size() == 0) {
    // Time-indexed: the time is the step, so it must be a valid step.
    for (int i = 0; i < s.times_ms_size(); ++i) {
      if (s.times_ms(i) < 0 || s.times_ms(i) > kMaxWholeStep) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": times_ms[", i, "] = ", s.times_ms(i),
            " cannot be the step of a time-indexed series"));
      }
    }
  }
  return absl::OkStatus();
}

// Appends the points of `s` to the batch as one series.
void AddColumns(storage::SeriesId id, const v1::SeriesPoints& s, int64_t now_ms,
                storage::AppendBatch* batch) {
  batch->StartSeries(id);
  const int n = s.values_size();
  const bool has_steps = s.steps_size() != 0;
  const bool has_micros = s.step_micros_size() != 0;
  const bool has_times = s.times_ms_size() != 0;
  for (int i = 0; i < n; ++i) {
    const int64_t time = has_times ? s.times_ms(i) : now_ms;
    const uint64_t step =
        has_steps ? storage::MicroStep(s.steps(i), has_micros ? s.step_micros(i) : 0)
                  : storage::MicroStep(time, 0);
    batch->AddPoint(step, time, s.values(i));
  }
}

}  // namespace

const StreamRefs::Entry* StreamRefs::Find(uint32_t ref) const {
  auto it = refs_.find(ref);
  return it == refs_.end() ? nullptr : &it->second;
}

void StreamRefs::Register(uint32_t ref, storage::SeriesId id,
                          storage::SeriesKey key) {
  refs_[ref] = Entry{id, std::move(key)};
}

absl::StatusOr<DecodedRequest> DecodeWriteRequest(
    const v1::WriteRequest& request, storage::Engine& engine,
    StreamRefs* refs, int64_t now_ms, const RequestLimits& limits) {
  if (static_cast<size_t>(request.series_size()) > limits.max_series) {
    return absl::InvalidArgumentError(
        absl::StrCat("series: ", request.series_size(),
                     " series in one request, more than the limit of ",
                     limits.max_series));
  }
  // Pass 1: structure only, so that a malformed request registers nothing.
  std::vector<storage::SeriesKey> keys(request.series_size());
  // A ref registered earlier in this same request.
  absl::flat_hash_map<uint32_t, int> new_refs;
  size_t total_points = 0;
  for (int i = 0; i < request.series_size(); ++i) {
    const v1::SeriesPoints& s = request.series(i);
    std::string where = absl::StrCat("series[", i, "]");
    if (s.has_key()) {
      keys[i] = KeyFromWire(s.key());
      absl::Status valid = storage::CanonicalizeLabels(&keys[i].labels);
      if (valid.ok()) valid = storage::ValidateSeriesKey(keys[i]);
      if (!valid.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, " \"", storage::SeriesDisplayName(keys[i]), "\": ",
            valid.message()));
      }
      if (s.ref() != 0) {
        if (refs == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": ref: refs need the streaming Write"));
        }
        const StreamRefs::Entry* old = refs->Find(s.ref());
        auto in_request = new_refs.find(s.ref());
        if ((old != nullptr && old->key != keys[i]) ||
            (in_request != new_refs.end() && keys[in_request->second] != keys[i])) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": ref ", s.ref(), " already names another series"));
        }
        new_refs.emplace(s.ref(), i);
      }
      where = absl::StrCat(where, " \"", storage::SeriesDisplayName(keys[i]), "\"");
    } else {
      if (refs == nullptr || s.ref() == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": key: missing (and no ref)"));
      }
      if (auto it = new_refs.find(s.ref()); it != new_refs.end()) {
        keys[i] = keys[it->second];
      } else if (const StreamRefs::Entry* e = refs->Find(s.ref())) {
        keys[i] = e->key;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": ref ", s.ref(), " is not registered in this stream"));
      }
      where = absl::StrCat(where, " \"", storage::SeriesDisplayName(keys[i]), "\"");
    }
    if (auto st = CheckColumns(s, where); !st.ok()) return st;
    total_points += s.values_size();
    if (total_points > limits.max_points) {
      return absl::InvalidArgumentError(
          absl::StrCat("series: more than ", limits.max_points,
                       " points in one request"));
    }
  }

  // Pass 2: resolve and convert.
  DecodedRequest out;
  out.batch.Reserve(request.series_size(), total_points);
  for (int i = 0; i < request.series_size(); ++i) {
    const v1::SeriesPoints& s = request.series(i);
    storage::SeriesId id;
    const StreamRefs::Entry* known =
        (!s.has_key() && refs != nullptr) ? refs->Find(s.ref()) : nullptr;
    if (known != nullptr && new_refs.find(s.ref()) == new_refs.end()) {
      id = known->id;
    } else {
      auto resolved = engine.ResolveSeries(keys[i]);
      if (!resolved.ok()) return resolved.status();
      id = *resolved;
      if (s.has_key() && s.ref() != 0) refs->Register(s.ref(), id, keys[i]);
    }
    AddColumns(id, s, now_ms, &out.batch);
  }
  // Encoding here, on the gRPC threads, takes it off the commit thread.
  out.batch.Prepare();
  return out;
}

}  // namespace stepdb::ingest
