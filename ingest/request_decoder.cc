#include "ingest/request_decoder.h"

#include <limits>

#include "absl/functional/function_ref.h"
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

// Checks the columns of one series. `where` makes the prefix of messages;
// it is called only on an error, so that a valid request builds no names.
absl::Status CheckColumns(const v1::SeriesPoints& s,
                          absl::FunctionRef<std::string()> where) {
  const int n = s.values_size();
  if (s.steps_size() == 0 && s.times_ms_size() == 0 && n > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where(), ": steps and times_ms are both empty; a point needs one"));
  }
  if (s.steps_size() != 0 && s.steps_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        where(), ": steps has ", s.steps_size(), " entries but values has ", n));
  }
  if (s.times_ms_size() != 0 && s.times_ms_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        where(), ": times_ms has ", s.times_ms_size(), " entries but values has ", n));
  }
  if (s.step_micros_size() != 0 && s.step_micros_size() != s.steps_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where(), ": step_micros has ", s.step_micros_size(),
                     " entries but steps has ", s.steps_size()));
  }
  for (int i = 0; i < s.steps_size(); ++i) {
    if (s.steps(i) < 0 || s.steps(i) > kMaxWholeStep) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), ": steps[", i, "] = ", s.steps(i), " is out of range [0, ",
          kMaxWholeStep, "]"));
    }
  }
  for (int i = 0; i < s.step_micros_size(); ++i) {
    if (s.step_micros(i) >= kMicrosPerStep) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), ": step_micros[", i, "] = ", s.step_micros(i),
          " is not below 1000000"));
    }
  }
  if (s.steps_size() == 0) {
    // Time-indexed: the time is the step, so it must be a valid step.
    for (int i = 0; i < s.times_ms_size(); ++i) {
      if (s.times_ms(i) < 0 || s.times_ms(i) > kMaxWholeStep) {
        return absl::InvalidArgumentError(absl::StrCat(
            where(), ": times_ms[", i, "] = ", s.times_ms(i),
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

std::optional<storage::SeriesId> StreamRefs::Find(uint32_t ref) const {
  auto it = refs_.find(ref);
  if (it == refs_.end()) return std::nullopt;
  return it->second;
}

void StreamRefs::Register(uint32_t ref, storage::SeriesId id) {
  refs_[ref] = id;
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
  // The hot path (a bare ref) copies no key and builds no string: names are
  // made only for error messages. Keys are parsed only for series that
  // carry one (empty SeriesKeys allocate nothing).
  std::vector<storage::SeriesKey> keys(request.series_size());
  // A ref registered earlier in this same request: the index of its series.
  absl::flat_hash_map<uint32_t, int> new_refs;
  size_t total_points = 0;
  for (int i = 0; i < request.series_size(); ++i) {
    const v1::SeriesPoints& s = request.series(i);
    // The series' name for messages: its key, or the key its ref names.
    auto name = [&]() -> std::string {
      if (s.has_key()) return storage::SeriesDisplayName(keys[i]);
      if (auto it = new_refs.find(s.ref()); it != new_refs.end()) {
        return storage::SeriesDisplayName(keys[it->second]);
      }
      const std::optional<storage::SeriesId> id =
          refs != nullptr ? refs->Find(s.ref()) : std::nullopt;
      const std::optional<storage::SeriesKey> key =
          id ? engine.KeyOf(*id) : std::nullopt;
      return key ? storage::SeriesDisplayName(*key)
                            : absl::StrCat("ref ", s.ref());
    };
    auto where = [&]() {
      return absl::StrCat("series[", i, "] \"", name(), "\"");
    };
    if (s.has_key()) {
      keys[i] = KeyFromWire(s.key());
      absl::Status valid = storage::CanonicalizeLabels(&keys[i].labels);
      if (valid.ok()) valid = storage::ValidateSeriesKey(keys[i]);
      if (!valid.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), ": ", valid.message()));
      }
      if (s.ref() != 0) {
        if (refs == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(
              "series[", i, "]: ref: refs need the streaming Write"));
        }
        // The index keeps keys canonical, as keys[i] now is.
        const std::optional<storage::SeriesId> old = refs->Find(s.ref());
        const std::optional<storage::SeriesKey> old_key =
            old ? engine.KeyOf(*old) : std::nullopt;
        auto in_request = new_refs.find(s.ref());
        if ((old_key && *old_key != keys[i]) ||
            (in_request != new_refs.end() && keys[in_request->second] != keys[i])) {
          return absl::InvalidArgumentError(absl::StrCat(
              "series[", i, "]: ref ", s.ref(), " already names another series"));
        }
        new_refs.emplace(s.ref(), i);
      }
    } else {
      if (refs == nullptr || s.ref() == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("series[", i, "]: key: missing (and no ref)"));
      }
      if (!new_refs.contains(s.ref()) && !refs->Find(s.ref())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "series[", i, "]: ref ", s.ref(), " is not registered in this stream"));
      }
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
  // The id of each series of the request so far (for refs registered in it).
  std::vector<storage::SeriesId> ids(request.series_size());
  for (int i = 0; i < request.series_size(); ++i) {
    const v1::SeriesPoints& s = request.series(i);
    if (s.has_key()) {
      auto resolved = engine.ResolveSeries(keys[i]);
      if (!resolved.ok()) return resolved.status();
      ids[i] = *resolved;
      if (s.ref() != 0) refs->Register(s.ref(), ids[i]);
    } else if (auto it = new_refs.find(s.ref());
               it != new_refs.end() && it->second < i) {
      ids[i] = ids[it->second];
    } else {
      // Registered by an earlier request (a later entry of this one may
      // register the same key again; pass 1 checked it is the same).
      ids[i] = *refs->Find(s.ref());
    }
    AddColumns(ids[i], s, now_ms, &out.batch);
  }
  // Encoding here, on the gRPC threads, takes it off the commit thread.
  out.batch.Prepare();
  return out;
}

}  // namespace stepdb::ingest
