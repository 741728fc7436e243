// stepctl: the command-line client of stepdb. See docs/USER_GUIDE.md.
//
//   stepctl [--addr HOST:PORT] [--token T] [--tls_ca FILE] [--timeout SECONDS] VERB ...
//
// Exit status: 0 on success; 1 if an RPC failed, or anything was rejected or
// malformed; 2 on a usage error.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "auth/client_channel.h"
#include "cli/format.h"
#include "cli/import_parsers.h"
#include "stepdb/v1/stepdb.grpc.pb.h"

namespace stepdb::cli {
namespace {

namespace v1 = ::stepdb::v1;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// ---- common ---------------------------------------------------------------

// Debian's Abseil has its own absl::string_view (not std::string_view).
absl::string_view AV(std::string_view s) { return {s.data(), s.size()}; }
std::string_view Msg(const absl::Status& s) {
  return {s.message().data(), s.message().size()};
}

struct GlobalOptions {
  std::string addr = "127.0.0.1:7390";
  double timeout_s = 30;
  std::string token;   // bearer token; empty: none
  std::string tls_ca;  // CA bundle: use TLS; empty: plaintext
  std::string tls_cert, tls_key;  // client certificate (mTLS)
};

int RpcError(std::string_view verb, const grpc::Status& status) {
  std::cerr << "stepctl: " << verb << ": " << CodeName(status.error_code())
            << ": " << status.error_message() << "\n";
  return kExitFailure;
}

int UsageError(std::string_view verb, std::string_view message) {
  std::cerr << "stepctl: " << verb << ": " << message << "\n";
  return kExitUsage;
}

std::shared_ptr<grpc::Channel> MakeChannel(const GlobalOptions& g) {
  grpc::ChannelArguments args;
  // Read answers can be large; the server bounds them, not the client.
  args.SetMaxReceiveMessageSize(256 << 20);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (!g.tls_ca.empty()) {
    auto tls = auth::TlsCredentials(g.tls_ca, g.tls_cert, g.tls_key);
    if (!tls) {
      std::cerr << "stepctl: cannot read --tls_ca/--tls_cert/--tls_key\n";
      std::exit(kExitUsage);
    }
    credentials = *tls;
  }
  return auth::MakeClientChannel(g.addr, credentials, args, g.token);
}

void SetDeadline(grpc::ClientContext* ctx, double seconds) {
  ctx->set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0)));
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Parses repeated "--label k=v" arguments into sorted, unique labels.
absl::StatusOr<Labels> ParseLabelArgs(const std::vector<std::string>& args) {
  Labels labels;
  for (const std::string& a : args) {
    const size_t eq = a.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--label \"", a, "\": expected KEY=VALUE"));
    }
    labels.emplace_back(a.substr(0, eq), a.substr(eq + 1));
  }
  std::sort(labels.begin(), labels.end());
  for (size_t i = 1; i < labels.size(); ++i) {
    if (labels[i].first == labels[i - 1].first) {
      return absl::InvalidArgumentError(
          absl::StrCat("--label ", labels[i].first, " given twice"));
    }
  }
  return labels;
}

// "--label k=v" selectors as equality matchers of a request.
void AddEqualityMatchers(
    const Labels& labels,
    google::protobuf::RepeatedPtrField<v1::LabelMatcher>* out) {
  for (const auto& [k, v] : labels) {
    v1::LabelMatcher* m = out->Add();
    m->set_key(k);
    m->set_value(v);
  }
}

void FillKey(std::string_view project, std::string_view run,
             std::string_view metric, const Labels& labels,
             v1::SeriesKey* key) {
  key->set_project(std::string(project));
  key->set_run(std::string(run));
  key->set_metric(std::string(metric));
  for (const auto& [k, v] : labels) (*key->mutable_labels())[k] = v;
}

// "k=v,k=v", sorted by key.
std::string LabelsText(const v1::SeriesKey& key) {
  std::map<std::string, std::string> sorted(key.labels().begin(),
                                            key.labels().end());
  return absl::StrJoin(sorted, ",", absl::PairFormatter("="));
}

std::string LabelsJson(const v1::SeriesKey& key) {
  std::map<std::string, std::string> sorted(key.labels().begin(),
                                            key.labels().end());
  std::string out = "{";
  for (const auto& [k, v] : sorted) {
    if (out.size() > 1) out += ',';
    absl::StrAppend(&out, JsonString(k), ":", JsonString(v));
  }
  out += '}';
  return out;
}

// Parses repeated "--match" arguments: KEY=VALUE, KEY!=VALUE, KEY=~REGEX or
// KEY!~REGEX (Prometheus' selector operators; the key ends at the first
// '=' or '!').
absl::StatusOr<std::vector<v1::LabelMatcher>> ParseMatchArgs(
    const std::vector<std::string>& args) {
  std::vector<v1::LabelMatcher> out;
  for (const std::string& a : args) {
    const size_t op = a.find_first_of("=!");
    v1::LabelMatcher& m = out.emplace_back();
    std::string_view rest;
    if (op != std::string::npos && op > 0) {
      rest = std::string_view(a).substr(op);
      if (rest.starts_with("=~")) {
        m.set_op(v1::LabelMatcher::REGEX);
      } else if (rest.starts_with("!~")) {
        m.set_op(v1::LabelMatcher::NOT_REGEX);
      } else if (rest.starts_with("!=")) {
        m.set_op(v1::LabelMatcher::NOT_EQUAL);
      } else if (rest.starts_with("=")) {
        m.set_op(v1::LabelMatcher::EQUAL);
        rest.remove_prefix(1);
      } else {
        rest = {};
      }
    }
    if (rest.data() == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--match \"", a, "\": expected KEY=VALUE, KEY!=VALUE, KEY=~REGEX "
          "or KEY!~REGEX"));
    }
    if (m.op() != v1::LabelMatcher::EQUAL) rest.remove_prefix(2);
    m.set_key(a.substr(0, op));
    m.set_value(std::string(rest));
  }
  return out;
}

// "A:B" (either end may be empty: open) into its two ends.
absl::StatusOr<std::pair<std::string, std::string>> SplitRangeArg(
    std::string_view flag, const std::string& arg) {
  const size_t colon = arg.find(':');
  if (colon == std::string::npos || arg.find(':', colon + 1) != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(flag), " \"", arg, "\": expected FROM:TO (either may be empty)"));
  }
  return std::make_pair(arg.substr(0, colon), arg.substr(colon + 1));
}

// ---- write ----------------------------------------------------------------

struct WriteOptions {
  std::string project, run, metric;
  std::vector<std::string> labels;
  std::string step, time, value;
  std::vector<std::string> points;
};

struct CliPoint {
  bool has_step = false;
  Step step;
  std::optional<int64_t> time_ms;
  double value = 0;
};

// "STEP:VALUE" or "STEP:TIME:VALUE"; STEP may be empty in the second form (a
// time-indexed point).
absl::StatusOr<CliPoint> ParsePointArg(std::string_view arg) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    const size_t colon = arg.find(':', start);
    parts.push_back(arg.substr(start, colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--point \"", AV(arg), "\": ", AV(why),
                     " (expected STEP:VALUE or STEP:TIME_MS:VALUE)"));
  };
  if (parts.size() != 2 && parts.size() != 3) return bad("wrong shape");
  CliPoint p;
  if (!parts[0].empty() || parts.size() == 2) {
    absl::StatusOr<Step> s = ParseStep(parts[0]);
    if (!s.ok()) return bad(Msg(s.status()));
    p.has_step = true;
    p.step = *s;
  }
  if (parts.size() == 3) {
    absl::StatusOr<int64_t> t = ParseInt64(parts[1]);
    if (!t.ok()) return bad(Msg(t.status()));
    p.time_ms = *t;
  }
  absl::StatusOr<double> v = ParseValue(parts.back());
  if (!v.ok()) return bad(Msg(v.status()));
  p.value = *v;
  return p;
}

int RunWrite(const GlobalOptions& g, const WriteOptions& o,
             const CLI::App& cmd) {
  constexpr std::string_view kVerb = "write";
  absl::StatusOr<Labels> labels = ParseLabelArgs(o.labels);
  if (!labels.ok()) return UsageError(kVerb, Msg(labels.status()));

  std::vector<CliPoint> points;
  const bool has_step_opt = cmd.count("--step") > 0;
  const bool has_time_opt = cmd.count("--time") > 0;
  if (cmd.count("--value") > 0) {
    CliPoint p;
    if (!has_step_opt && !has_time_opt) {
      return UsageError(kVerb,
                        "--value needs --step (or --time for a "
                        "time-indexed series)");
    }
    if (has_step_opt) {
      absl::StatusOr<Step> s = ParseStep(o.step);
      if (!s.ok()) return UsageError(kVerb, Msg(s.status()));
      p.has_step = true;
      p.step = *s;
    }
    if (has_time_opt) {
      absl::StatusOr<int64_t> t = ParseInt64(o.time);
      if (!t.ok()) return UsageError(kVerb, Msg(t.status()));
      p.time_ms = *t;
    }
    absl::StatusOr<double> v = ParseValue(o.value);
    if (!v.ok()) return UsageError(kVerb, Msg(v.status()));
    p.value = *v;
    points.push_back(p);
  } else if (has_step_opt || has_time_opt) {
    return UsageError(kVerb, "--step/--time given without --value");
  }
  for (const std::string& arg : o.points) {
    absl::StatusOr<CliPoint> p = ParsePointArg(arg);
    if (!p.ok()) return UsageError(kVerb, Msg(p.status()));
    points.push_back(*p);
  }
  if (points.empty()) {
    return UsageError(kVerb,
                      "nothing to write: give --step S --value V "
                      "and/or --point STEP:VALUE");
  }
  const bool stepped = points[0].has_step;
  bool any_time = false;
  for (const CliPoint& p : points) {
    if (p.has_step != stepped) {
      return UsageError(kVerb,
                        "cannot mix points with and without a step in one "
                        "write");
    }
    if (!p.has_step && !p.time_ms) {
      return UsageError(kVerb, "a point without a step needs a time");
    }
    any_time = any_time || p.time_ms.has_value();
  }

  v1::WriteRequest req;
  v1::SeriesPoints* sp = req.add_series();
  FillKey(o.project, o.run, o.metric, *labels, sp->mutable_key());
  bool any_micros = false;
  for (const CliPoint& p : points) any_micros |= p.step.micros != 0;
  const int64_t now = NowMs();
  for (const CliPoint& p : points) {
    if (stepped) {
      sp->add_steps(p.step.whole);
      if (any_micros) sp->add_step_micros(p.step.micros);
    }
    // Without any time, the server stamps the points on receipt; with some,
    // the others get the client's clock.
    if (any_time) sp->add_times_ms(p.time_ms.value_or(now));
    sp->add_values(p.value);
  }

  auto stub = v1::Ingest::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::WriteResponse resp;
  grpc::Status status = stub->WriteOne(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  std::cout << "accepted " << resp.points_accepted() << ", duplicate "
            << resp.points_duplicate() << ", rejected "
            << resp.points_rejected() << "\n";
  for (const v1::SeriesRejection& r : resp.rejections()) {
    std::cerr << "stepctl: write: rejected " << r.series() << ": "
              << CodeName(r.code()) << ": " << r.message() << " ("
              << r.points_rejected() << " points)\n";
  }
  return resp.points_rejected() > 0 || resp.rejections_size() > 0 ? kExitFailure
                                                                  : kExitOk;
}

// ---- import ---------------------------------------------------------------

struct ImportOptions {
  std::string project, run, format, on_error = "skip", file;
  int batch = 10000;
  int in_flight = 8;
};

// Sends points over one Ingest.Write stream as columnar requests, at most
// `max_in_flight` unacknowledged requests at a time, and tallies the acks.
//
// Each series is registered once per stream: its first SeriesPoints carries
// the key and a non-zero ref, later ones only the ref. If the request that
// registered a ref failed as a whole, or rejected that series as malformed,
// the key is sent again with the next use of the ref.
//
// Thread-safety: Add/Send/Finish from one thread; a reader thread owned by
// this object consumes acks.
class StreamImporter {
 public:
  StreamImporter(v1::Ingest::Stub* stub, std::string project,
                 size_t batch_points, size_t max_in_flight)
      : project_(std::move(project)),
        batch_points_(batch_points),
        max_in_flight_(max_in_flight) {
    stream_ = stub->Write(&ctx_);
    reader_ = std::thread([this] { ReadAcks(); });
  }
  ~StreamImporter() {
    if (reader_.joinable()) {
      ctx_.TryCancel();
      reader_.join();
    }
  }
  StreamImporter(const StreamImporter&) = delete;
  StreamImporter& operator=(const StreamImporter&) = delete;

  // Queues one point; sends the request when it holds `batch_points`.
  // Returns false once the stream is broken (Finish() then says why).
  bool Add(const ParsedPoint& p) {
    if (broken_) return false;
    const uint32_t ref = RefFor(p);
    const uint64_t slot_key = uint64_t{ref} << 1 | (p.has_step ? 1 : 0);
    auto [it, inserted] = slots_.try_emplace(slot_key, req_.series_size());
    v1::SeriesPoints* sp;
    if (inserted) {
      sp = req_.add_series();
      sp->set_ref(ref);
      SeriesState& s = series_[ref - 1];
      if (!s.registered) {
        FillKey(project_, s.run, s.metric, s.labels, sp->mutable_key());
        s.registered = true;
        registering_.push_back(ref);
      } else {
        registering_.push_back(0);
      }
    } else {
      sp = req_.mutable_series(it->second);
    }
    if (p.has_step) {
      // step_micros stays empty while every step is whole.
      if (p.step.micros != 0 && sp->step_micros_size() == 0) {
        for (int i = 0; i < sp->steps_size(); ++i) sp->add_step_micros(0);
      }
      sp->add_steps(p.step.whole);
      if (sp->step_micros_size() > 0) sp->add_step_micros(p.step.micros);
    }
    sp->add_times_ms(p.time_ms);
    sp->add_values(p.value);
    ++points_in_request_;
    if (points_in_request_ >= batch_points_) return Send();
    return true;
  }

  size_t points_in_request() const { return points_in_request_; }

  // Sends the request being built, if any, once fewer than max_in_flight
  // requests await their ack. Returns false once the stream is broken.
  bool Send() {
    if (broken_) return false;
    if (req_.series_size() == 0) return true;
    req_.set_seq(++seq_);
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock,
               [&] { return in_flight_ < max_in_flight_ || reader_done_; });
      if (reader_done_) {
        broken_ = true;
        return false;
      }
      pending_[seq_] = Pending{points_in_request_, std::move(registering_)};
      ++in_flight_;
    }
    const bool ok = stream_->Write(req_);
    points_sent_ += points_in_request_;
    req_.Clear();
    slots_.clear();
    registering_.clear();
    points_in_request_ = 0;
    std::vector<uint32_t> unregister;
    {
      std::lock_guard lock(mu_);
      unregister.swap(unregister_);
    }
    for (uint32_t ref : unregister) series_[ref - 1].registered = false;
    if (!ok) broken_ = true;
    return ok;
  }

  // Sends what is left, half-closes the stream, waits for the outstanding
  // acks and returns the stream's final status.
  grpc::Status Finish() {
    Send();
    stream_->WritesDone();
    reader_.join();
    return stream_->Finish();
  }

  struct Totals {
    uint64_t sent = 0;
    uint64_t accepted = 0;
    uint64_t duplicate = 0;
    uint64_t rejected = 0;
    uint64_t unacknowledged = 0;  // sent, but no ack came back
  };
  Totals totals() const {
    std::lock_guard lock(mu_);
    Totals t;
    t.sent = points_sent_;
    t.accepted = accepted_;
    t.duplicate = duplicate_;
    t.rejected = rejected_;
    for (const auto& [seq, p] : pending_) t.unacknowledged += p.points;
    return t;
  }

  // Prints the per-series rejections and request errors, a bounded number.
  void PrintProblems(std::ostream& err) const {
    std::lock_guard lock(mu_);
    constexpr size_t kMaxShown = 20;
    size_t shown = 0;
    for (const std::string& e : request_errors_) {
      if (shown++ == kMaxShown) break;
      err << "stepctl: import: " << e << "\n";
    }
    for (const auto& [series, r] : rejections_) {
      if (shown++ >= kMaxShown) break;
      err << "stepctl: import: rejected " << series << ": " << CodeName(r.code)
          << ": " << r.message << " (" << r.points << " points)\n";
    }
    const size_t total = request_errors_.size() + rejections_.size();
    if (total > kMaxShown) {
      err << "stepctl: import: ... and " << total - kMaxShown
          << " more rejected series or failed requests\n";
    }
  }

 private:
  struct SeriesState {
    std::string run, metric;
    Labels labels;
    bool registered = false;
  };
  struct Pending {
    size_t points = 0;
    // Per series index of the request: the ref it registers, or 0.
    std::vector<uint32_t> registering;
  };
  struct Rejection {
    int code = 0;
    std::string message;  // the first one
    uint64_t points = 0;
  };

  uint32_t RefFor(const ParsedPoint& p) {
    // Length-prefixed, so that no two keys encode alike.
    std::string key =
        absl::StrCat(p.run.size(), ":", p.run, p.metric.size(), ":", p.metric);
    for (const auto& [k, v] : p.labels) {
      absl::StrAppend(&key, k.size(), ":", k, v.size(), ":", v);
    }
    auto [it, inserted] = refs_.try_emplace(std::move(key), 0);
    if (inserted) {
      series_.push_back(SeriesState{p.run, p.metric, p.labels, false});
      it->second = static_cast<uint32_t>(series_.size());  // never 0
    }
    return it->second;
  }

  void ReadAcks() {
    v1::WriteAck ack;
    while (stream_->Read(&ack)) {
      std::lock_guard lock(mu_);
      auto it = pending_.find(ack.seq());
      if (it == pending_.end()) continue;  // not ours, or acked twice
      Pending p = std::move(it->second);
      pending_.erase(it);
      --in_flight_;
      if (ack.error_code() != 0) {
        // Nothing of the request was stored, registrations included.
        rejected_ += p.points;
        request_errors_.push_back(absl::StrCat(
            "request ", ack.seq(), " (", p.points, " points) failed: ",
            CodeName(ack.error_code()), ": ", ack.error_message()));
        for (uint32_t ref : p.registering) {
          if (ref != 0) unregister_.push_back(ref);
        }
      } else {
        accepted_ += ack.points_accepted();
        duplicate_ += ack.points_duplicate();
        rejected_ += ack.points_rejected();
        for (const v1::SeriesRejection& r : ack.rejections()) {
          Rejection& agg = rejections_[r.series()];
          if (agg.message.empty()) {
            agg.code = r.code();
            agg.message = r.message();
          }
          agg.points += r.points_rejected();
          if (r.code() ==
                  static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT) &&
              r.index() < p.registering.size() &&
              p.registering[r.index()] != 0) {
            unregister_.push_back(p.registering[r.index()]);
          }
        }
      }
      cv_.notify_all();
    }
    std::lock_guard lock(mu_);
    reader_done_ = true;
    cv_.notify_all();
  }

  // Constant after construction
  const std::string project_;
  const size_t batch_points_;
  const size_t max_in_flight_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WriteRequest, v1::WriteAck>>
      stream_;

  // Owned by the writing thread
  std::unordered_map<std::string, uint32_t> refs_;
  std::vector<SeriesState> series_;  // by ref - 1
  v1::WriteRequest req_;
  std::unordered_map<uint64_t, int> slots_;  // (ref, has_step) -> index
  std::vector<uint32_t> registering_;        // per index of req_.series
  size_t points_in_request_ = 0;
  uint64_t seq_ = 0;
  bool broken_ = false;

  // Protected by mu_
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Pending> pending_;
  size_t in_flight_ = 0;
  bool reader_done_ = false;
  uint64_t points_sent_ = 0;
  uint64_t accepted_ = 0, duplicate_ = 0, rejected_ = 0;
  std::vector<uint32_t> unregister_;
  std::map<std::string, Rejection> rejections_;
  std::vector<std::string> request_errors_;

  std::thread reader_;  // last: started once everything else exists
};

int RunImport(const GlobalOptions& g, ImportOptions o) {
  constexpr std::string_view kVerb = "import";
  if (o.format.empty()) {
    o.format = o.file.size() > 4 && o.file.ends_with(".csv") ? "csv" : "influx";
  }
  const bool csv = o.format == "csv";
  const bool stop_on_error = o.on_error == "stop";

  std::ifstream file;
  std::istream* in = &std::cin;
  const std::string name = o.file == "-" ? "<stdin>" : o.file;
  if (o.file != "-") {
    file.open(o.file, std::ios::in | std::ios::binary);
    if (!file) {
      std::cerr << "stepctl: import: cannot open " << o.file << ": "
                << std::strerror(errno) << "\n";
      return kExitFailure;
    }
    in = &file;
  }

  auto stub = v1::Ingest::NewStub(MakeChannel(g));
  const auto start = std::chrono::steady_clock::now();
  StreamImporter importer(stub.get(), o.project, static_cast<size_t>(o.batch),
                          static_cast<size_t>(o.in_flight));

  // Lines are read one at a time and parsed completely before any of their
  // points is queued, so a malformed line is never half imported.
  constexpr size_t kMaxReportedMalformed = 1000;
  constexpr size_t kMaxCsvRecordBytes = 1 << 20;
  constexpr auto kMaxBatchAge = std::chrono::seconds(1);
  uint64_t malformed = 0;
  bool stopped = false;
  uint64_t line_no = 0;
  std::string line, record;
  ImportDefaults defaults;
  defaults.run = o.run;
  CsvImporter csv_importer;
  std::vector<ParsedPoint> points;
  auto last_send = std::chrono::steady_clock::now();

  auto report = [&](uint64_t at, std::string_view reason) {
    ++malformed;
    if (malformed <= kMaxReportedMalformed) {
      std::cerr << name << ":" << at << ": " << reason << "\n";
    } else if (malformed == kMaxReportedMalformed + 1) {
      std::cerr << "stepctl: import: more malformed lines; not shown\n";
    }
  };

  while (!stopped && std::getline(*in, line)) {
    ++line_no;
    const uint64_t record_line = line_no;
    points.clear();
    defaults.now_ms = NowMs();
    absl::Status st;
    if (!csv) {
      st = ParseInfluxLine(line, defaults, &points);
    } else {
      // A quoted field may span lines: join them into one record.
      record = std::move(line);
      bool too_long = false;
      while (CsvRecordIsOpen(record)) {
        if (record.size() > kMaxCsvRecordBytes) {
          too_long = true;
          break;
        }
        if (!std::getline(*in, line)) break;
        ++line_no;
        record += '\n';
        record += line;
      }
      std::string_view r = record;
      if (!r.empty() && r.back() == '\r') r.remove_suffix(1);
      if (too_long) {
        st = absl::InvalidArgumentError("quoted field not closed within 1 MiB");
      } else if (r.find_first_not_of(" \t") == std::string_view::npos) {
        continue;  // blank line
      } else if (!csv_importer.has_header()) {
        absl::Status h = csv_importer.SetHeader(r);
        if (!h.ok()) {
          // Without a header no row can be read.
          report(record_line, Msg(h));
          stopped = true;
        }
        continue;
      } else {
        points.emplace_back();
        st = csv_importer.ParseRow(r, defaults, &points.back());
      }
    }
    if (!st.ok()) {
      report(record_line, Msg(st));
      if (stop_on_error) stopped = true;
      continue;
    }
    for (const ParsedPoint& p : points) {
      if (!importer.Add(p)) {
        stopped = true;
        break;
      }
    }
    // Keep a slow producer (a pipe from a live job) flowing.
    const auto now = std::chrono::steady_clock::now();
    if (importer.points_in_request() == 0) {
      last_send = now;
    } else if (now - last_send >= kMaxBatchAge) {
      if (!importer.Send()) stopped = true;
      last_send = now;
    }
  }
  bool read_error = in->bad();

  const grpc::Status status = importer.Finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  importer.PrintProblems(std::cerr);
  const StreamImporter::Totals t = importer.totals();
  std::printf(
      "points imported: %llu\nduplicates:      %llu\nrejected:        "
      "%llu\nmalformed lines: %llu\n",
      static_cast<unsigned long long>(t.accepted),
      static_cast<unsigned long long>(t.duplicate),
      static_cast<unsigned long long>(t.rejected),
      static_cast<unsigned long long>(malformed));
  if (t.unacknowledged > 0) {
    std::printf("unacknowledged:  %llu\n",
                static_cast<unsigned long long>(t.unacknowledged));
  }
  std::printf("seconds:         %.3f\npoints/s:        %.0f\n", seconds,
              seconds > 0 ? static_cast<double>(t.sent) / seconds : 0.0);
  std::fflush(stdout);

  int rc = kExitOk;
  if (read_error) {
    std::cerr << "stepctl: import: error reading " << name << "\n";
    rc = kExitFailure;
  }
  if (!status.ok()) rc = RpcError(kVerb, status);
  if (t.rejected > 0 || malformed > 0 || t.unacknowledged > 0) {
    rc = kExitFailure;
  }
  return rc;
}

// ---- query ----------------------------------------------------------------

struct QueryOptions {
  std::string project, run, metric;
  std::vector<std::string> labels;
  std::string from_step, to_step, from_time, to_time;
  uint64_t limit = 0;
  uint32_t buckets = 0;  // > 0: a downsampled read (--buckets)
  std::string format = "table";
};

// The downsampled form of `query` (--buckets): one row per non-empty bucket.
int RunQueryBuckets(const GlobalOptions& g,
                    const v1::ReadDownsampledRequest& req,
                    OutputFormat format) {
  constexpr std::string_view kVerb = "query";
  auto stub = v1::Query::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, std::max(g.timeout_s, 600.0));
  v1::ReadDownsampledResponse resp;
  const grpc::Status status = stub->ReadDownsampled(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  auto writer = RowWriter::Create(
      format, std::cout,
      {"bucket_start", "bucket_end", "first", "last", "min", "max", "sum",
       "count", "nan_count", "pos_inf_count", "neg_inf_count"});
  const bool by_time = req.has_time();
  auto bound = [&](const v1::Step& step, int64_t ms) {
    if (!by_time) return StepCell(step.whole(), step.micros());
    if (format == OutputFormat::kTable) return StringCell(FormatTimeIso(ms));
    return IntCell(ms);
  };
  // min and max are absent when a bucket holds only NaN/Inf.
  auto optional_value = [](bool has, double v) {
    return has ? ValueCell(v) : Cell{"", "null", true};
  };
  for (const v1::DownsampledBucket& b : resp.buckets()) {
    writer->AddRow({bound(b.start_step(), b.start_ms()),
                    bound(b.end_step(), b.end_ms()), ValueCell(b.first()),
                    ValueCell(b.last()), optional_value(b.has_min(), b.min()),
                    optional_value(b.has_max(), b.max()), ValueCell(b.sum()),
                    UintCell(b.count()), UintCell(b.nan_count()),
                    UintCell(b.pos_inf_count()), UintCell(b.neg_inf_count())});
  }
  writer->Finish();
  // On stderr, so that the columns scripts parse stay the same.
  const auto coarse = std::count_if(
      resp.buckets().begin(), resp.buckets().end(),
      [](const v1::DownsampledBucket& b) { return b.coarse(); });
  if (coarse > 0) {
    std::cerr << "note: " << coarse
              << " bucket(s) are coarse: their raw points expired and whole "
                 "rollup pieces were placed at their last point\n";
  }
  return kExitOk;
}

int RunQuery(const GlobalOptions& g, const QueryOptions& o,
             const CLI::App& cmd) {
  constexpr std::string_view kVerb = "query";
  absl::StatusOr<Labels> labels = ParseLabelArgs(o.labels);
  if (!labels.ok()) return UsageError(kVerb, Msg(labels.status()));
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));

  v1::ReadRangeRequest req;
  FillKey(o.project, o.run, o.metric, *labels, req.mutable_series());
  req.set_limit(o.limit);
  const bool by_step = cmd.count("--from-step") + cmd.count("--to-step") > 0;
  const bool by_time = cmd.count("--from-time") + cmd.count("--to-time") > 0;
  if (by_step && by_time) {
    return UsageError(kVerb, "give a step range or a time range, not both");
  }
  if (by_step) {
    v1::StepRange* r = req.mutable_steps();
    if (cmd.count("--from-step") > 0) {
      absl::StatusOr<Step> s = ParseStep(o.from_step);
      if (!s.ok()) return UsageError(kVerb, Msg(s.status()));
      r->mutable_from()->set_whole(s->whole);
      r->mutable_from()->set_micros(s->micros);
    }
    if (cmd.count("--to-step") > 0) {
      absl::StatusOr<Step> s = ParseStep(o.to_step);
      if (!s.ok()) return UsageError(kVerb, Msg(s.status()));
      r->mutable_to()->set_whole(s->whole);
      r->mutable_to()->set_micros(s->micros);
    }
  } else if (by_time) {
    v1::TimeRange* r = req.mutable_time();
    // An unset end is open.
    if (cmd.count("--from-time") > 0) {
      absl::StatusOr<int64_t> t = ParseInt64(o.from_time);
      if (!t.ok()) return UsageError(kVerb, Msg(t.status()));
      r->set_from_ms(*t);
    }
    if (cmd.count("--to-time") > 0) {
      absl::StatusOr<int64_t> t = ParseInt64(o.to_time);
      if (!t.ok()) return UsageError(kVerb, Msg(t.status()));
      r->set_to_ms(*t);
    }
  }

  if (cmd.count("--buckets") > 0) {
    if (cmd.count("--limit") > 0) {
      return UsageError(kVerb, "give --limit or --buckets, not both");
    }
    v1::ReadDownsampledRequest dreq;
    *dreq.mutable_series() = req.series();
    if (req.has_steps()) {
      *dreq.mutable_steps() = req.steps();
    } else if (req.has_time()) {
      *dreq.mutable_time() = req.time();
    }
    dreq.set_buckets(o.buckets);
    return RunQueryBuckets(g, dreq, *format);
  }

  auto stub = v1::Query::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  // A bounded answer, but possibly a long one.
  SetDeadline(&ctx, std::max(g.timeout_s, 600.0));
  auto reader = stub->ReadRange(&ctx, req);
  auto writer =
      RowWriter::Create(*format, std::cout, {"step", "time", "value"});
  const bool table = *format == OutputFormat::kTable;
  v1::ReadRangeResponse resp;
  bool truncated = false;
  bool malformed = false;
  uint64_t rows = 0;
  while (reader->Read(&resp)) {
    const int n = resp.values_size();
    if ((resp.steps_size() != n && resp.steps_size() != 0) ||
        (resp.step_micros_size() != 0 &&
         resp.step_micros_size() != resp.steps_size()) ||
        (resp.times_ms_size() != n && resp.times_ms_size() != 0) ||
        (resp.steps_size() == 0 && resp.times_ms_size() == 0 && n > 0)) {
      malformed = true;
      ctx.TryCancel();
      break;
    }
    for (int i = 0; i < n; ++i) {
      std::vector<Cell> row;
      if (resp.steps_size() > 0) {
        row.push_back(StepCell(resp.steps(i), resp.step_micros_size() > 0
                                                  ? resp.step_micros(i)
                                                  : 0));
      } else {
        // Time-indexed: the step of a point is its time.
        row.push_back(IntCell(resp.times_ms(i)));
      }
      if (resp.times_ms_size() == 0) {
        row.push_back(StringCell(""));
      } else if (table) {
        row.push_back(StringCell(FormatTimeIso(resp.times_ms(i))));
      } else {
        row.push_back(IntCell(resp.times_ms(i)));
      }
      row.push_back(ValueCell(resp.values(i)));
      writer->AddRow(std::move(row));
      ++rows;
    }
    truncated = truncated || resp.truncated();
  }
  const grpc::Status status = reader->Finish();
  // A failed call prints no empty table, but closes what it started.
  if (status.ok() || rows > 0) writer->Finish();
  if (malformed) {
    std::cerr << "stepctl: query: malformed response from the server "
                 "(column lengths differ)\n";
    return kExitFailure;
  }
  if (!status.ok()) return RpcError(kVerb, status);
  if (truncated) {
    std::cerr << "stepctl: query: truncated: more points match than the "
                 "limit ("
              << (o.limit > 0 ? absl::StrCat("--limit ", o.limit)
                              : std::string("the server's limit"))
              << "); narrow the range to read the rest\n";
  }
  return kExitOk;
}

// ---- agg ------------------------------------------------------------------

struct AggOptions {
  std::string project, metric;
  std::vector<std::string> runs, matches, group_by;
  std::string fn = "mean";
  uint32_t buckets = 0;
  std::string steps, time;
  std::string format = "table";
};

int RunAgg(const GlobalOptions& g, const AggOptions& o, const CLI::App& cmd) {
  constexpr std::string_view kVerb = "agg";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  auto matchers = ParseMatchArgs(o.matches);
  if (!matchers.ok()) return UsageError(kVerb, Msg(matchers.status()));
  v1::AggregateRequest::Fn fn;
  if (!v1::AggregateRequest::Fn_Parse(absl::AsciiStrToUpper(o.fn), &fn)) {
    return UsageError(kVerb, "--fn: expected mean, min, max, sum, count, last, "
                             "p50, p90 or p99");
  }

  v1::AggregateRequest req;
  req.set_project(o.project);
  req.set_metric(o.metric);
  for (const std::string& run : o.runs) req.add_runs(run);
  for (v1::LabelMatcher& m : *matchers) *req.add_matchers() = std::move(m);
  for (const std::string& key : o.group_by) req.add_group_by(key);
  req.set_fn(fn);
  req.set_buckets(o.buckets);
  if (cmd.count("--steps") > 0 && cmd.count("--time") > 0) {
    return UsageError(kVerb, "give --steps or --time, not both");
  }
  if (cmd.count("--steps") > 0) {
    auto ends = SplitRangeArg("--steps", o.steps);
    if (!ends.ok()) return UsageError(kVerb, Msg(ends.status()));
    v1::StepRange* r = req.mutable_steps();
    for (auto [text, step] : {std::pair{ends->first, r->mutable_from()},
                              std::pair{ends->second, r->mutable_to()}}) {
      if (text.empty()) continue;
      absl::StatusOr<Step> s = ParseStep(text);
      if (!s.ok()) return UsageError(kVerb, Msg(s.status()));
      step->set_whole(s->whole);
      step->set_micros(s->micros);
    }
    if (ends->first.empty()) r->clear_from();
    if (ends->second.empty()) r->clear_to();
  } else if (cmd.count("--time") > 0) {
    auto ends = SplitRangeArg("--time", o.time);
    if (!ends.ok()) return UsageError(kVerb, Msg(ends.status()));
    v1::TimeRange* r = req.mutable_time();
    if (!ends->first.empty()) {
      absl::StatusOr<int64_t> t = ParseInt64(ends->first);
      if (!t.ok()) return UsageError(kVerb, Msg(t.status()));
      r->set_from_ms(*t);
    }
    if (!ends->second.empty()) {
      absl::StatusOr<int64_t> t = ParseInt64(ends->second);
      if (!t.ok()) return UsageError(kVerb, Msg(t.status()));
      r->set_to_ms(*t);
    }
  }

  auto stub = v1::Query::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, std::max(g.timeout_s, 600.0));
  v1::AggregateResponse resp;
  const grpc::Status status = stub->Aggregate(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);

  auto writer = RowWriter::Create(
      *format, std::cout,
      {"group", "bucket_start", "bucket_end", "value", "series", "nan_count",
       "pos_inf_count", "neg_inf_count"});
  const bool by_time = req.has_time();
  auto bound = [&](const v1::Step& step, int64_t ms) {
    if (!by_time) return StepCell(step.whole(), step.micros());
    if (*format == OutputFormat::kTable) return StringCell(FormatTimeIso(ms));
    return IntCell(ms);
  };
  for (const v1::AggregateGroup& group : resp.groups()) {
    // "k=v,k=v" in --group-by order; keys the group lacks are left out.
    std::string text, json = "{";
    for (const std::string& key : o.group_by) {
      const auto it = group.labels().find(key);
      if (it == group.labels().end()) continue;
      absl::StrAppend(&text, text.empty() ? "" : ",", key, "=", it->second);
      absl::StrAppend(&json, json.size() > 1 ? "," : "", JsonString(key), ":",
                      JsonString(it->second));
    }
    Cell group_cell = StringCell(text);
    group_cell.json = json + "}";
    for (const v1::AggregateBucket& b : group.buckets()) {
      writer->AddRow({group_cell, bound(b.start_step(), b.start_ms()),
                      bound(b.end_step(), b.end_ms()),
                      // Absent when the bucket holds only NaN/Inf.
                      b.has_value() ? ValueCell(b.value()) : Cell{"", "null", true},
                      UintCell(b.series()), UintCell(b.nan_count()),
                      UintCell(b.pos_inf_count()), UintCell(b.neg_inf_count())});
    }
  }
  writer->Finish();
  return kExitOk;
}

// ---- series ---------------------------------------------------------------

struct SeriesOptions {
  std::string project, run, metric;
  std::vector<std::string> labels;
  std::vector<std::string> matches;
  uint32_t limit = 0;
  std::string format = "table";
};

int RunSeries(const GlobalOptions& g, const SeriesOptions& o) {
  constexpr std::string_view kVerb = "series";
  absl::StatusOr<Labels> labels = ParseLabelArgs(o.labels);
  if (!labels.ok()) return UsageError(kVerb, Msg(labels.status()));
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));

  v1::ListSeriesRequest req;
  req.set_project(o.project);
  req.set_run(o.run);
  req.set_metric(o.metric);
  req.set_limit(o.limit);
  AddEqualityMatchers(*labels, req.mutable_labels());
  auto matchers = ParseMatchArgs(o.matches);
  if (!matchers.ok()) return UsageError(kVerb, Msg(matchers.status()));
  for (v1::LabelMatcher& m : *matchers) *req.add_labels() = std::move(m);
  auto stub = v1::Query::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::ListSeriesResponse resp;
  const grpc::Status status = stub->ListSeries(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);

  auto writer = RowWriter::Create(
      *format, std::cout,
      {"run", "metric", "labels", "points", "last_step", "last_value"});
  for (const v1::SeriesInfo& s : resp.series()) {
    Cell labels_cell = StringCell(LabelsText(s.key()));
    labels_cell.json = LabelsJson(s.key());
    std::vector<Cell> row;
    row.push_back(StringCell(s.key().run()));
    row.push_back(StringCell(s.key().metric()));
    row.push_back(std::move(labels_cell));
    row.push_back(UintCell(s.points()));
    row.push_back(StepCell(s.last_step().whole(), s.last_step().micros()));
    row.push_back(ValueCell(s.last_value()));
    writer->AddRow(std::move(row));
  }
  writer->Finish();
  if (resp.truncated()) {
    std::cerr << "stepctl: series: truncated: more series match than the "
                 "limit; narrow the filter or raise --limit\n";
  }
  return kExitOk;
}

// ---- watch ----------------------------------------------------------------

struct WatchOptions {
  std::string project, run, metric, condition, name, id;
  std::vector<std::string> labels;
  uint64_t after = 0;
  bool follow = false;
  std::string format = "table";
};

const std::vector<std::string> kRuleColumns = {"id",     "name",   "run",
                                         "metric", "labels", "condition"};

std::vector<Cell> RuleRow(const v1::WatchRule& r) {
  v1::SeriesKey labels;  // for LabelsText / LabelsJson
  for (const v1::LabelMatcher& m : r.labels()) {
    (*labels.mutable_labels())[m.key()] = m.value();
  }
  Cell labels_cell = StringCell(LabelsText(labels));
  labels_cell.json = LabelsJson(labels);
  return {StringCell(r.id()),     StringCell(r.name()),
          StringCell(r.run()),    StringCell(r.metric()),
          std::move(labels_cell), StringCell(r.condition())};
}

int RunWatchRulesAdd(const GlobalOptions& g, const WatchOptions& o) {
  constexpr std::string_view kVerb = "watch rules add";
  absl::StatusOr<Labels> labels = ParseLabelArgs(o.labels);
  if (!labels.ok()) return UsageError(kVerb, Msg(labels.status()));
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::WatchRule req;
  req.set_project(o.project);
  req.set_run(o.run);
  req.set_metric(o.metric);
  AddEqualityMatchers(*labels, req.mutable_labels());
  req.set_condition(o.condition);
  req.set_name(o.name);
  auto stub = v1::Watch::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::WatchRule created;
  const grpc::Status status = stub->CreateRule(&ctx, req, &created);
  if (!status.ok()) return RpcError(kVerb, status);
  auto writer = RowWriter::Create(*format, std::cout, kRuleColumns);
  writer->AddRow(RuleRow(created));
  writer->Finish();
  return kExitOk;
}

int RunWatchRulesList(const GlobalOptions& g, const WatchOptions& o) {
  constexpr std::string_view kVerb = "watch rules list";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::ListWatchRulesRequest req;
  req.set_project(o.project);
  auto stub = v1::Watch::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::ListWatchRulesResponse resp;
  const grpc::Status status = stub->ListRules(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  auto writer = RowWriter::Create(*format, std::cout, kRuleColumns);
  for (const v1::WatchRule& r : resp.rules()) writer->AddRow(RuleRow(r));
  writer->Finish();
  return kExitOk;
}

int RunWatchRulesDelete(const GlobalOptions& g, const WatchOptions& o) {
  constexpr std::string_view kVerb = "watch rules delete";
  v1::DeleteWatchRuleRequest req;
  req.set_project(o.project);
  req.set_id(o.id);
  auto stub = v1::Watch::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::DeleteWatchRuleResponse resp;
  const grpc::Status status = stub->DeleteRule(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  return kExitOk;
}

// Streams events; with --follow until interrupted (no deadline). Rows are
// flushed as they come for csv and json; tables are buffered in blocks.
int RunWatchEvents(const GlobalOptions& g, const WatchOptions& o) {
  constexpr std::string_view kVerb = "watch events";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::WatchEventsRequest req;
  req.set_project(o.project);
  req.set_run(o.run);
  req.set_after_seq(o.after);
  req.set_follow(o.follow);
  auto stub = v1::Watch::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  if (!o.follow) SetDeadline(&ctx, g.timeout_s);
  auto reader = stub->Events(&ctx, req);
  auto writer = RowWriter::Create(
      *format, std::cout,
      {"seq", "kind", "rule_id", "rule_name", "condition", "run", "metric",
       "labels", "step", "value", "time", "fired", "message"});
  v1::WatchEvent e;
  while (reader->Read(&e)) {
    Cell labels_cell = StringCell(LabelsText(e.series()));
    labels_cell.json = LabelsJson(e.series());
    std::vector<Cell> row;
    row.push_back(UintCell(e.seq()));
    row.push_back(StringCell(e.kind() == v1::WatchEvent::FIRING ? "FIRING"
                                                                 : "RESOLVED"));
    row.push_back(StringCell(e.rule_id()));
    row.push_back(StringCell(e.rule_name()));
    row.push_back(StringCell(e.condition()));
    row.push_back(StringCell(e.series().run()));
    row.push_back(StringCell(e.series().metric()));
    row.push_back(std::move(labels_cell));
    row.push_back(StepCell(e.step().whole(), e.step().micros()));
    row.push_back(ValueCell(e.value()));
    row.push_back(StringCell(FormatTimeIso(e.time_ms())));
    row.push_back(StringCell(FormatTimeIso(e.fired_ms())));
    row.push_back(StringCell(e.message()));
    writer->AddRow(std::move(row));
    if (o.follow) std::cout << std::flush;
  }
  writer->Finish();
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return RpcError(kVerb, status);
  return kExitOk;
}

// ---- admin ----------------------------------------------------------------

// Prints name/value pairs as one JSON object or as rows.
void PrintRecord(OutputFormat format,
                 const std::vector<std::pair<std::string, Cell>>& fields) {
  if (format == OutputFormat::kJson) {
    std::string out = "{\n";
    for (size_t i = 0; i < fields.size(); ++i) {
      const Cell& c = fields[i].second;
      absl::StrAppend(&out, "  ", JsonString(fields[i].first), ": ",
                      c.json.empty() ? JsonString(c.text) : c.json,
                      i + 1 < fields.size() ? ",\n" : "\n");
    }
    out += "}\n";
    std::cout << out << std::flush;
    return;
  }
  auto writer = RowWriter::Create(format, std::cout, {"stat", "value"});
  for (const auto& [name, cell] : fields)
    writer->AddRow({StringCell(name), cell});
  writer->Finish();
}

// ---- runs -----------------------------------------------------------------

// "KEY=VALUE": VALUE is an int, a float, true/false, or else a string
// ("quoted" to force a string, e.g. "3").
absl::Status AddParamArg(std::string_view arg,
                         google::protobuf::Map<std::string, v1::ParamValue>* out) {
  const size_t eq = arg.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--param \"", AV(arg), "\": expected KEY=VALUE"));
  }
  const std::string key(arg.substr(0, eq));
  const std::string value(arg.substr(eq + 1));
  v1::ParamValue& p = (*out)[key];
  char* end = nullptr;
  errno = 0;
  const long long i = std::strtoll(value.c_str(), &end, 10);
  if (!value.empty() && *end == '\0' && errno == 0) {
    p.set_int_value(i);
    return absl::OkStatus();
  }
  errno = 0;
  const double d = std::strtod(value.c_str(), &end);
  if (!value.empty() && *end == '\0' && errno == 0) {
    p.set_float_value(d);
  } else if (value == "true" || value == "false") {
    p.set_bool_value(value == "true");
  } else if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    p.set_string_value(value.substr(1, value.size() - 2));
  } else {
    p.set_string_value(value);
  }
  return absl::OkStatus();
}

std::string ParamText(const v1::ParamValue& p) {
  switch (p.kind_case()) {
    case v1::ParamValue::kIntValue: return absl::StrCat(p.int_value());
    case v1::ParamValue::kFloatValue: return FormatValue(p.float_value());
    case v1::ParamValue::kBoolValue: return p.bool_value() ? "true" : "false";
    case v1::ParamValue::kStringValue: return p.string_value();
    case v1::ParamValue::KIND_NOT_SET: break;
  }
  return "";
}

std::string ParamJson(const v1::ParamValue& p) {
  switch (p.kind_case()) {
    case v1::ParamValue::kFloatValue: return FormatJsonValue(p.float_value());
    case v1::ParamValue::kStringValue: return JsonString(p.string_value());
    case v1::ParamValue::KIND_NOT_SET: return "null";
    default: return ParamText(p);
  }
}

constexpr const char* kRunStates[] = {"", "running", "finished", "failed",
                                      "aborted"};

absl::StatusOr<v1::RunState> ParseRunState(std::string_view name) {
  for (int i = 1; i <= 4; ++i) {
    if (name == kRunStates[i]) return static_cast<v1::RunState>(i);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "state \"", AV(name), "\": expected running, finished, failed or aborted"));
}

std::string RunStateName(v1::RunState state) {
  return state >= 1 && state <= 4 ? kRunStates[state] : "unknown";
}

// The run's params as "k=v,k=v" and as a JSON object, sorted by name.
Cell ParamsCell(const v1::Run& run) {
  std::map<std::string, v1::ParamValue> sorted(run.params().begin(),
                                               run.params().end());
  std::string text, json = "{";
  for (const auto& [k, v] : sorted) {
    if (!text.empty()) text += ',';
    if (json.size() > 1) json += ',';
    absl::StrAppend(&text, k, "=", ParamText(v));
    absl::StrAppend(&json, JsonString(k), ":", ParamJson(v));
  }
  Cell cell = StringCell(text);
  cell.json = json + "}";
  return cell;
}

Cell TagsCell(const v1::Run& run) {
  Cell cell = StringCell(absl::StrJoin(run.tags(), ","));
  cell.json = "[";
  for (const std::string& t : run.tags()) {
    if (cell.json.size() > 1) cell.json += ',';
    cell.json += JsonString(t);
  }
  cell.json += "]";
  return cell;
}

struct RunsOptions {
  std::string project, run_id, format = "table";
  // list
  std::vector<std::string> tags, states, filters;
  std::string sort;
  bool descending = false;
  uint32_t limit = 0;
  // create / update
  std::vector<std::string> params, remove_params, remove_tags;
  std::optional<std::string> commit_sha, data_version, description, state;
  std::string fork_parent, fork_step;
};

void PrintRun(OutputFormat format, const v1::Run& run) {
  std::vector<std::pair<std::string, Cell>> fields = {
      {"project", StringCell(run.project())},
      {"run_id", StringCell(run.run_id())},
      {"state", StringCell(RunStateName(run.state()))},
      {"created", StringCell(FormatTimeIso(run.created_ms()))},
      {"updated", StringCell(FormatTimeIso(run.updated_ms()))},
      {"tags", TagsCell(run)},
      {"params", ParamsCell(run)},
      {"commit_sha", StringCell(run.commit_sha())},
      {"data_version", StringCell(run.data_version())},
      {"description", StringCell(run.description())}};
  if (run.has_fork()) {
    fields.push_back({"fork_parent", StringCell(run.fork().parent_run())});
    fields.push_back({"fork_step", StepCell(run.fork().step().whole(),
                                            run.fork().step().micros())});
  }
  PrintRecord(format, fields);
}

int RunRunsList(const GlobalOptions& g, const RunsOptions& o) {
  constexpr std::string_view kVerb = "runs list";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::ListRunsRequest req;
  req.set_project(o.project);
  for (const auto& t : o.tags) req.add_tags(t);
  for (const auto& name : o.states) {
    auto state = ParseRunState(name);
    if (!state.ok()) return UsageError(kVerb, Msg(state.status()));
    req.add_states(*state);
  }
  for (const auto& f : o.filters) req.add_filters(f);
  req.set_sort_by(o.sort);
  req.set_descending(o.descending);
  req.set_limit(o.limit);
  auto stub = v1::Query::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::ListRunsResponse resp;
  const grpc::Status status = stub->ListRuns(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  auto writer = RowWriter::Create(
      *format, std::cout,
      {"run_id", "state", "created", "tags", "params", "commit_sha"});
  for (const v1::Run& run : resp.runs()) {
    writer->AddRow({StringCell(run.run_id()), StringCell(RunStateName(run.state())),
                    StringCell(FormatTimeIso(run.created_ms())), TagsCell(run),
                    ParamsCell(run), StringCell(run.commit_sha())});
  }
  writer->Finish();
  if (resp.truncated()) {
    std::cerr << "stepctl: runs list: truncated: more runs match than the "
                 "limit; narrow the filter or raise --limit\n";
  }
  return kExitOk;
}

int RunRunsShow(const GlobalOptions& g, const RunsOptions& o) {
  constexpr std::string_view kVerb = "runs show";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::GetRunRequest req;
  req.set_project(o.project);
  req.set_run_id(o.run_id);
  auto stub = v1::Query::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::GetRunResponse resp;
  const grpc::Status status = stub->GetRun(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  if (*format == OutputFormat::kJson) {
    // One object: the run's fields, then its series.
    std::cout << "{\"run\":\n";
    PrintRun(*format, resp.run());
    std::cout << ",\"series\":\n";
  } else {
    PrintRun(*format, resp.run());
    std::cout << "\n";
  }
  auto writer = RowWriter::Create(
      *format, std::cout,
      {"metric", "labels", "points", "last_step", "last_value", "min", "max"});
  for (const v1::RunSeries& s : resp.series()) {
    Cell labels_cell = StringCell(LabelsText(s.key()));
    labels_cell.json = LabelsJson(s.key());
    writer->AddRow({StringCell(s.key().metric()), std::move(labels_cell),
                    UintCell(s.points()),
                    StepCell(s.last_step().whole(), s.last_step().micros()),
                    ValueCell(s.last_value()),
                    s.has_min() ? ValueCell(s.min()) : StringCell(""),
                    s.has_max() ? ValueCell(s.max()) : StringCell("")});
  }
  writer->Finish();
  if (*format == OutputFormat::kJson) std::cout << "}\n";
  return kExitOk;
}

int RunRunsCreate(const GlobalOptions& g, const RunsOptions& o) {
  constexpr std::string_view kVerb = "runs create";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::CreateRunRequest req;
  v1::Run* run = req.mutable_run();
  run->set_project(o.project);
  run->set_run_id(o.run_id);
  for (const auto& p : o.params) {
    if (auto s = AddParamArg(p, run->mutable_params()); !s.ok()) {
      return UsageError(kVerb, Msg(s));
    }
  }
  for (const auto& t : o.tags) run->add_tags(t);
  run->set_commit_sha(o.commit_sha.value_or(""));
  run->set_data_version(o.data_version.value_or(""));
  run->set_description(o.description.value_or(""));
  if (o.state) {
    auto state = ParseRunState(*o.state);
    if (!state.ok()) return UsageError(kVerb, Msg(state.status()));
    run->set_state(*state);
  }
  if (!o.fork_parent.empty()) {
    auto step = ParseStep(o.fork_step);
    if (!step.ok()) return UsageError(kVerb, Msg(step.status()));
    run->mutable_fork()->set_parent_run(o.fork_parent);
    run->mutable_fork()->mutable_step()->set_whole(step->whole);
    run->mutable_fork()->mutable_step()->set_micros(step->micros);
  }
  auto stub = v1::Ingest::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::CreateRunResponse resp;
  const grpc::Status status = stub->CreateRun(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  if (!resp.created()) {
    std::cerr << "stepctl: runs create: run existed; merged into it\n";
  }
  PrintRun(*format, resp.run());
  return kExitOk;
}

int RunRunsUpdate(const GlobalOptions& g, const RunsOptions& o) {
  constexpr std::string_view kVerb = "runs update";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::UpdateRunRequest req;
  req.set_project(o.project);
  req.set_run_id(o.run_id);
  for (const auto& p : o.params) {
    if (auto s = AddParamArg(p, req.mutable_set_params()); !s.ok()) {
      return UsageError(kVerb, Msg(s));
    }
  }
  for (const auto& p : o.remove_params) req.add_remove_params(p);
  for (const auto& t : o.tags) req.add_add_tags(t);
  for (const auto& t : o.remove_tags) req.add_remove_tags(t);
  if (o.commit_sha) req.set_commit_sha(*o.commit_sha);
  if (o.data_version) req.set_data_version(*o.data_version);
  if (o.description) req.set_description(*o.description);
  if (o.state) {
    auto state = ParseRunState(*o.state);
    if (!state.ok()) return UsageError(kVerb, Msg(state.status()));
    req.set_state(*state);
  }
  auto stub = v1::Ingest::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::Run resp;
  const grpc::Status status = stub->UpdateRun(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  PrintRun(*format, resp);
  return kExitOk;
}

// ---- tail -----------------------------------------------------------------

struct TailOptions {
  std::string project, run, metric, after;
  std::vector<std::string> labels;
  uint64_t count = 0;  // stop after this many points; 0 = until interrupted
  std::string format = "table";
};

int RunTail(const GlobalOptions& g, const TailOptions& o) {
  constexpr std::string_view kVerb = "tail";
  absl::StatusOr<Labels> labels = ParseLabelArgs(o.labels);
  if (!labels.ok()) return UsageError(kVerb, Msg(labels.status()));
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::TailRequest req;
  req.set_project(o.project);
  req.set_run(o.run);
  req.set_metric(o.metric);
  AddEqualityMatchers(*labels, req.mutable_labels());
  if (!o.after.empty()) {
    auto step = ParseStep(o.after);
    if (!step.ok()) return UsageError(kVerb, Msg(step.status()));
    req.mutable_after_step()->set_whole(step->whole);
    req.mutable_after_step()->set_micros(step->micros);
  }
  auto stub = v1::Query::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;  // no deadline: a tail runs until stopped
  auto reader = stub->Tail(&ctx, req);
  auto writer = RowWriter::Create(
      *format, std::cout,
      {"run", "metric", "labels", "step", "time_ms", "value"});
  uint64_t seen = 0;
  v1::TailResponse resp;
  while ((o.count == 0 || seen < o.count) && reader->Read(&resp)) {
    if (resp.dropped_points() > 0) {
      std::cerr << "stepctl: tail: gap: " << resp.dropped_points()
                << " points skipped (reading too slowly)\n";
    }
    for (const v1::TailSeries& s : resp.series()) {
      const std::string labels_text = LabelsText(s.key());
      const std::string labels_json = LabelsJson(s.key());
      for (int i = 0; i < s.steps_size() && (o.count == 0 || seen < o.count); ++i) {
        Cell labels_cell = StringCell(labels_text);
        labels_cell.json = labels_json;
        writer->AddRow({StringCell(s.key().run()), StringCell(s.key().metric()),
                        std::move(labels_cell),
                        StepCell(s.steps(i), s.step_micros_size() > 0
                                                 ? s.step_micros(i) : 0),
                        IntCell(s.times_ms(i)), ValueCell(s.values(i))});
        ++seen;
      }
    }
    // Tables buffer in blocks; a live tail shows each message as it comes.
    if (*format != OutputFormat::kTable) std::cout << std::flush;
  }
  writer->Finish();
  if (o.count != 0 && seen >= o.count) {
    ctx.TryCancel();
    reader->Finish().IgnoreError();
    return kExitOk;
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return RpcError(kVerb, status);
  return kExitOk;
}

int RunStats(const GlobalOptions& g, const std::string& format_name) {
  constexpr std::string_view kVerb = "admin stats";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(format_name);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  auto stub = v1::Admin::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::StatsResponse r;
  const grpc::Status status = stub->Stats(&ctx, v1::StatsRequest(), &r);
  if (!status.ok()) return RpcError(kVerb, status);
  PrintRecord(*format, {{"projects", UintCell(r.projects())},
                        {"runs", UintCell(r.runs())},
                        {"series", UintCell(r.series())},
                        {"points", UintCell(r.points())},
                        {"head_points", UintCell(r.head_points())},
                        {"sealed_chunks", UintCell(r.sealed_chunks())},
                        {"bytes_on_disk", UintCell(r.bytes_on_disk())},
                        {"bytes_per_point", ValueCell(r.bytes_per_point())}});
  return kExitOk;
}

int RunCompact(const GlobalOptions& g, const std::string& format_name) {
  constexpr std::string_view kVerb = "admin compact";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(format_name);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  auto stub = v1::Admin::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  // A full compaction of a large store takes minutes.
  SetDeadline(&ctx, std::max(g.timeout_s, 600.0));
  v1::CompactResponse r;
  const grpc::Status status = stub->Compact(&ctx, v1::CompactRequest(), &r);
  if (!status.ok()) return RpcError(kVerb, status);
  PrintRecord(*format,
              {{"chunks_sealed", UintCell(r.chunks_sealed())},
               {"bytes_on_disk_before", UintCell(r.bytes_on_disk_before())},
               {"bytes_on_disk_after", UintCell(r.bytes_on_disk_after())}});
  return kExitOk;
}

// ---- admin delete-run / delete-project ---------------------------------------

struct DeleteOptions {
  std::string project;
  std::string run;  // empty: the whole project
  bool yes = false;
  std::string format = "table";
};

// A deletion cannot be undone: without --yes, a terminal user must type the
// name of what goes; a script must say --yes.
bool ConfirmDeletion(std::string_view verb, const DeleteOptions& o) {
  if (o.yes) return true;
  const std::string& name = o.run.empty() ? o.project : o.run;
  const std::string what =
      o.run.empty() ? absl::StrCat("project \"", o.project, "\" (every run, its watch rules and retention policy)")
                    : absl::StrCat("run \"", o.run, "\" of project \"", o.project, "\"");
  if (!isatty(fileno(stdin))) {
    std::cerr << "stepctl: " << verb << ": this deletes " << what
              << " for good; pass --yes to confirm\n";
    return false;
  }
  std::cerr << "This deletes " << what << " for good.\nType \"" << name
            << "\" to confirm: " << std::flush;
  std::string typed;
  std::getline(std::cin, typed);
  if (typed == name) return true;
  std::cerr << "stepctl: " << verb << ": not confirmed, nothing deleted\n";
  return false;
}

int RunDelete(const GlobalOptions& g, const DeleteOptions& o) {
  const std::string_view verb =
      o.run.empty() ? "admin delete-project" : "admin delete-run";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(verb, Msg(format.status()));
  if (!ConfirmDeletion(verb, o)) return kExitUsage;
  auto stub = v1::Admin::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  // Reclaiming the space of a large project compacts for a while.
  SetDeadline(&ctx, std::max(g.timeout_s, 600.0));
  v1::DeleteResponse r;
  grpc::Status status;
  if (o.run.empty()) {
    v1::DeleteProjectRequest req;
    req.set_project(o.project);
    status = stub->DeleteProject(&ctx, req, &r);
  } else {
    v1::DeleteRunRequest req;
    req.set_project(o.project);
    req.set_run(o.run);
    status = stub->DeleteRun(&ctx, req, &r);
  }
  if (!status.ok()) return RpcError(verb, status);
  std::vector<std::pair<std::string, Cell>> fields = {
      {"runs", UintCell(r.runs())},
      {"series", UintCell(r.series())},
      {"points", UintCell(r.points())},
      {"chunks", UintCell(r.chunks())},
      {"run_records", UintCell(r.run_records())}};
  if (o.run.empty()) fields.push_back({"watch_rules", UintCell(r.watch_rules())});
  fields.push_back({"bytes_on_disk_before", UintCell(r.bytes_on_disk_before())});
  fields.push_back({"bytes_on_disk_after", UintCell(r.bytes_on_disk_after())});
  PrintRecord(*format, fields);
  return kExitOk;
}

// ---- admin token / audit ----------------------------------------------------

const char* ScopeText(v1::Scope scope) {
  switch (scope) {
    case v1::SCOPE_READ:
      return "read";
    case v1::SCOPE_WRITE:
      return "write";
    case v1::SCOPE_ADMIN:
      return "admin";
    default:
      return "unspecified";
  }
}

struct TokenOptions {
  std::string project, scope, description, id, format = "table";
  uint64_t max_points_per_second = 0;
};

int RunTokenCreate(const GlobalOptions& g, const TokenOptions& o) {
  constexpr std::string_view kVerb = "admin token create";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::CreateTokenRequest req;
  req.set_project(o.project);
  req.set_scope(o.scope == "admin"   ? v1::SCOPE_ADMIN
                : o.scope == "write" ? v1::SCOPE_WRITE
                                     : v1::SCOPE_READ);
  req.set_description(o.description);
  req.set_max_points_per_second(o.max_points_per_second);
  auto stub = v1::Auth::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::CreateTokenResponse r;
  const grpc::Status status = stub->CreateToken(&ctx, req, &r);
  if (!status.ok()) return RpcError(kVerb, status);
  PrintRecord(*format, {{"id", StringCell(r.info().id())},
                        {"project", StringCell(r.info().project())},
                        {"scope", StringCell(ScopeText(r.info().scope()))},
                        {"token", StringCell(r.token())}});
  if (*format == OutputFormat::kTable) {
    std::cerr << "stepctl: the token is shown only this once\n";
  }
  return kExitOk;
}

int RunTokenList(const GlobalOptions& g, const TokenOptions& o) {
  constexpr std::string_view kVerb = "admin token list";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::ListTokensRequest req;
  req.set_project(o.project);
  auto stub = v1::Auth::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::ListTokensResponse r;
  const grpc::Status status = stub->ListTokens(&ctx, req, &r);
  if (!status.ok()) return RpcError(kVerb, status);
  auto writer = RowWriter::Create(
      *format, std::cout,
      {"id", "project", "scope", "created", "revoked", "points/s",
       "description"});
  for (const v1::TokenInfo& t : r.tokens()) {
    writer->AddRow({StringCell(t.id()), StringCell(t.project()),
                    StringCell(ScopeText(t.scope())),
                    StringCell(FormatTimeIso(t.created_ms())),
                    StringCell(t.revoked() ? FormatTimeIso(t.revoked_ms()) : ""),
                    UintCell(t.max_points_per_second()),
                    StringCell(t.description())});
  }
  writer->Finish();
  return kExitOk;
}

int RunTokenRevoke(const GlobalOptions& g, const TokenOptions& o) {
  constexpr std::string_view kVerb = "admin token revoke";
  v1::RevokeTokenRequest req;
  req.set_id(o.id);
  auto stub = v1::Auth::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::RevokeTokenResponse r;
  const grpc::Status status = stub->RevokeToken(&ctx, req, &r);
  if (!status.ok()) return RpcError(kVerb, status);
  std::cout << "revoked " << r.token().id() << "\n";
  return kExitOk;
}

struct AuditOptions {
  uint64_t after = 0;
  uint32_t limit = 0;
  bool verify = false;
  std::string format = "table";
};

// Exit status 1 if --verify finds the chain broken.
int RunAudit(const GlobalOptions& g, const AuditOptions& o) {
  constexpr std::string_view kVerb = "admin audit";
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(o.format);
  if (!format.ok()) return UsageError(kVerb, Msg(format.status()));
  v1::ReadAuditRequest req;
  req.set_after_seq(o.after);
  req.set_limit(o.limit);
  req.set_verify(o.verify);
  auto stub = v1::Auth::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  v1::ReadAuditResponse r;
  const grpc::Status status = stub->ReadAudit(&ctx, req, &r);
  if (!status.ok()) return RpcError(kVerb, status);
  auto writer = RowWriter::Create(
      *format, std::cout,
      {"seq", "time", "token", "rpc", "project", "peer", "outcome", "detail"});
  for (const v1::AuditEntry& e : r.entries()) {
    writer->AddRow({UintCell(e.seq()), StringCell(FormatTimeIso(e.time_ms())),
                    StringCell(e.token_id()), StringCell(e.rpc()),
                    StringCell(e.project()), StringCell(e.peer()),
                    StringCell(e.outcome()), StringCell(e.detail())});
  }
  writer->Finish();
  if (r.truncated()) std::cerr << "stepctl: admin audit: more entries follow (--after)\n";
  if (!r.verified()) return kExitOk;
  if (r.intact()) {
    std::cerr << "audit chain intact: " << r.verified_entries()
              << " entries, head " << r.head_hash() << "\n";
    return kExitOk;
  }
  std::cerr << "audit chain BROKEN at entry " << r.first_bad_seq() << ": "
            << r.verify_message() << "\n";
  return kExitFailure;
}

struct RetentionOptions {
  std::string project;
  uint32_t raw_days = 0;
  uint32_t rollup_days = 0;
};

// "N days", or what 0 means.
std::string RetentionDays(uint32_t days, std::string_view zero) {
  return days == 0 ? std::string(zero) : absl::StrCat(days, " days");
}

int RunRetentionSet(const GlobalOptions& g, const RetentionOptions& o) {
  constexpr std::string_view kVerb = "admin retention set";
  v1::RetentionPolicy req, resp;
  req.set_project(o.project);
  req.set_raw_days(o.raw_days);
  req.set_rollup_days(o.rollup_days);
  auto stub = v1::Auth::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  const grpc::Status status = stub->SetRetention(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  std::cout << "project " << o.project << ": raw points kept "
            << RetentionDays(o.raw_days, "forever") << ", rollups kept "
            << RetentionDays(o.rollup_days == 0 ? o.raw_days : o.rollup_days,
                             "forever")
            << "\n";
  return kExitOk;
}

int RunRetentionShow(const GlobalOptions& g, const RetentionOptions& o) {
  constexpr std::string_view kVerb = "admin retention show";
  v1::GetRetentionRequest req;
  req.set_project(o.project);
  v1::RetentionPolicy resp;
  auto stub = v1::Auth::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_s);
  const grpc::Status status = stub->GetRetention(&ctx, req, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  std::cout << "raw_days " << resp.raw_days()
            << (resp.raw_days() == 0 ? " (keep forever)" : "") << "\n"
            << "rollup_days "
            << (resp.rollup_days() == 0 ? resp.raw_days() : resp.rollup_days())
            << (resp.raw_days() == 0       ? " (keep forever)"
                : resp.rollup_days() == 0 ? " (as raw_days)"
                                           : "")
            << "\n";
  return kExitOk;
}

int RunRetentionEnforce(const GlobalOptions& g) {
  constexpr std::string_view kVerb = "admin retention enforce";
  v1::EnforceRetentionResponse resp;
  auto stub = v1::Auth::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, std::max(g.timeout_s, 600.0));
  const grpc::Status status = stub->EnforceRetention(&ctx, {}, &resp);
  if (!status.ok()) return RpcError(kVerb, status);
  std::cout << "expired " << resp.chunks_deleted() << " chunks ("
            << resp.points_deleted() << " points), "
            << resp.rollup_records_deleted() << " rollup records ("
            << resp.rollup_points_deleted() << " points)\n";
  return kExitOk;
}

// ---- command line ---------------------------------------------------------

int Main(int argc, char** argv) {
  CLI::App app{"stepctl: command-line client of the stepdb metrics store",
               "stepctl"};
  app.fallthrough();  // global options may also follow the verb
  app.require_subcommand(1);
  GlobalOptions g;
  if (const char* env = std::getenv("STEPDB_ADDR"); env && *env) g.addr = env;
  app.add_option("--addr", g.addr,
                 "server address HOST:PORT (env STEPDB_ADDR; default "
                 "127.0.0.1:7390)");
  if (const char* env = std::getenv("STEPDB_TOKEN"); env && *env) g.token = env;
  app.add_option("--token", g.token,
                 "bearer token sdb_<id>_<secret> (env STEPDB_TOKEN)");
  app.add_option("--tls_ca", g.tls_ca,
                 "PEM CA bundle: connect with TLS and verify the server");
  app.add_option("--tls_cert", g.tls_cert,
                 "PEM client certificate (mTLS; needs --tls_ca)");
  app.add_option("--tls_key", g.tls_key, "PEM key of --tls_cert");
  app.add_option("--timeout", g.timeout_s,
                 "deadline of unary calls in seconds (compact and query: at "
                 "least 600)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);

  const std::vector<std::string> kOutputFormats = {"table", "csv", "json"};

  // write
  WriteOptions wo;
  CLI::App* write_cmd = app.add_subcommand(
      "write", "write points of one series (unary WriteOne)");
  write_cmd->add_option("--project", wo.project, "project")->required();
  write_cmd->add_option("--run", wo.run, "run id")->required();
  write_cmd->add_option("--metric", wo.metric, "metric, e.g. train/loss")
      ->required();
  write_cmd->add_option("--label", wo.labels, "label KEY=VALUE (repeatable)")
      ->allow_extra_args(false);
  write_cmd->add_option("--step", wo.step, "step: 12, 12.5, up to 6 decimals");
  write_cmd->add_option("--time", wo.time, "time in Unix milliseconds");
  write_cmd->add_option("--value", wo.value,
                        "value: float, nan, inf, -inf (use --value=-1 for "
                        "negatives)");
  write_cmd
      ->add_option("--point", wo.points,
                   "more points: STEP:VALUE or STEP:TIME_MS:VALUE "
                   "(repeatable)")
      ->allow_extra_args(false);

  // import
  ImportOptions io;
  CLI::App* import_cmd = app.add_subcommand(
      "import", "import InfluxDB line protocol or CSV (streaming Write)");
  import_cmd->add_option("--project", io.project, "project")->required();
  import_cmd->add_option("--run", io.run,
                         "run id for lines/rows that name none");
  import_cmd
      ->add_option("--format", io.format,
                   "influx or csv (default: csv if FILE ends in .csv, else "
                   "influx)")
      ->check(CLI::IsMember({"influx", "csv"}));
  import_cmd
      ->add_option("--on-error", io.on_error,
                   "on a malformed line: skip it, or stop before it")
      ->capture_default_str()
      ->check(CLI::IsMember({"skip", "stop"}));
  import_cmd->add_option("--batch", io.batch, "points per request")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  import_cmd
      ->add_option("--in-flight", io.in_flight,
                   "requests awaiting their ack at most")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  import_cmd->add_option("file", io.file, "input file, - for stdin")
      ->required();

  // query
  QueryOptions qo;
  CLI::App* query_cmd =
      app.add_subcommand("query",
                         "read the points of one series, or (--buckets) a "
                         "downsampled chart of it");
  query_cmd->add_option("--project", qo.project, "project")->required();
  query_cmd->add_option("--run", qo.run, "run id")->required();
  query_cmd->add_option("--metric", qo.metric, "metric")->required();
  query_cmd->add_option("--label", qo.labels, "label KEY=VALUE (repeatable)")
      ->allow_extra_args(false);
  query_cmd->add_option("--from-step", qo.from_step, "first step (inclusive)");
  query_cmd->add_option("--to-step", qo.to_step, "last step (inclusive)");
  query_cmd->add_option("--from-time", qo.from_time,
                        "first time, Unix ms (inclusive)");
  query_cmd->add_option("--to-time", qo.to_time,
                        "last time, Unix ms (inclusive)");
  query_cmd->add_option("--limit", qo.limit, "at most N points (0 = server's)");
  query_cmd
      ->add_option("--buckets", qo.buckets,
                   "downsample: at most N equal-width buckets of first, last, "
                   "min, max, sum, count and NaN/Inf counts (1..100000)")
      ->check(CLI::Range(1, 100000));
  query_cmd->add_option("--format", qo.format, "table, csv or json")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));

  // agg
  AggOptions ao;
  CLI::App* agg_cmd = app.add_subcommand(
      "agg", "aggregate a metric across series, per group and bucket");
  agg_cmd->add_option("--project", ao.project, "project")->required();
  agg_cmd->add_option("--run", ao.runs, "only these runs (repeatable)")
      ->allow_extra_args(false);
  agg_cmd->add_option("--metric", ao.metric, "metric (exact)")->required();
  agg_cmd
      ->add_option("--match", ao.matches,
                   "label matcher KEY=VALUE, KEY!=VALUE, KEY=~REGEX, "
                   "KEY!~REGEX (RE2, whole value; repeatable)")
      ->allow_extra_args(false);
  agg_cmd
      ->add_option("--group-by", ao.group_by,
                   "label key to group by; `run` groups by run (repeatable)")
      ->allow_extra_args(false);
  agg_cmd
      ->add_option("--fn", ao.fn,
                   "mean, min, max, sum, count, last, p50, p90 or p99")
      ->required()
      ->check(CLI::IsMember({"mean", "min", "max", "sum", "count", "last",
                             "p50", "p90", "p99"}));
  agg_cmd->add_option("--buckets", ao.buckets, "at most N buckets (1..100000)")
      ->required()
      ->check(CLI::Range(1, 100000));
  agg_cmd->add_option("--steps", ao.steps,
                      "step range FROM:TO, inclusive, either end may be empty");
  agg_cmd->add_option("--time", ao.time,
                      "time range FROM_MS:TO_MS (Unix ms), inclusive, either "
                      "end may be empty");
  agg_cmd->add_option("--format", ao.format, "table, csv or json")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));

  // series
  SeriesOptions so;
  CLI::App* series_cmd = app.add_subcommand("series", "list series");
  series_cmd->add_option("--project", so.project, "project")->required();
  series_cmd->add_option("--run", so.run, "only this run");
  series_cmd->add_option("--metric", so.metric, "only this metric");
  series_cmd
      ->add_option("--label", so.labels,
                   "only series with label KEY=VALUE (repeatable)")
      ->allow_extra_args(false);
  series_cmd
      ->add_option("--match", so.matches,
                   "only series whose labels match: KEY=VALUE, KEY!=VALUE, "
                   "KEY=~REGEX, KEY!~REGEX (RE2, whole value; repeatable)")
      ->allow_extra_args(false);
  series_cmd->add_option("--limit", so.limit,
                         "at most N series (0 = server's)");
  series_cmd->add_option("--format", so.format, "table, csv or json")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));

  // runs
  RunsOptions ro;
  CLI::App* runs_cmd = app.add_subcommand("runs", "run metadata");
  runs_cmd->require_subcommand(1);
  CLI::App* runs_list = runs_cmd->add_subcommand("list", "list and filter runs");
  runs_list->add_option("--tag", ro.tags, "only runs with this tag (repeatable)");
  runs_list->add_option("--state", ro.states,
                        "only runs in this state: running, finished, failed, "
                        "aborted (repeatable)");
  runs_list->add_option("--filter", ro.filters,
                        "param comparison, e.g. 'lr < 1e-3' or "
                        "'model = \"resnet50\"' (repeatable)");
  runs_list->add_option("--sort", ro.sort,
                        "created, updated, run_id, param:NAME or metric:NAME");
  runs_list->add_flag("--desc", ro.descending, "sort descending");
  runs_list->add_option("--limit", ro.limit, "at most N runs (0 = server's)");
  CLI::App* runs_show = runs_cmd->add_subcommand(
      "show", "one run with its series and their last value, min and max");
  CLI::App* runs_create = runs_cmd->add_subcommand(
      "create", "create a run (idempotent: an existing run is merged into)");
  CLI::App* runs_update = runs_cmd->add_subcommand("update", "update a run");
  for (CLI::App* c : {runs_show, runs_create, runs_update}) {
    c->add_option("run_id", ro.run_id, "run id")->required();
  }
  for (CLI::App* c : {runs_create, runs_update}) {
    c->add_option("--param", ro.params,
                  "KEY=VALUE (int, float, true/false, else string; repeatable)");
    c->add_option("--tag", ro.tags, "add a tag (repeatable)");
    c->add_option("--commit", ro.commit_sha, "commit SHA");
    c->add_option("--data-version", ro.data_version, "data version");
    c->add_option("--description", ro.description, "description");
    c->add_option("--state", ro.state, "running, finished, failed or aborted");
  }
  runs_create->add_option("--fork-parent", ro.fork_parent,
                          "fork from this run (with --fork-step)");
  runs_create->add_option("--fork-step", ro.fork_step,
                          "the parent's last step the fork inherits");
  runs_update->add_option("--remove-param", ro.remove_params, "remove a param");
  runs_update->add_option("--remove-tag", ro.remove_tags, "remove a tag");
  for (CLI::App* c : {runs_list, runs_show, runs_create, runs_update}) {
    c->add_option("--project", ro.project, "project")->required();
    c->add_option("--format", ro.format, "table, csv or json")
        ->capture_default_str()
        ->check(CLI::IsMember(kOutputFormats));
  }

  // tail
  TailOptions to;
  CLI::App* tail_cmd = app.add_subcommand(
      "tail", "print new points of matching series as they are written");
  tail_cmd->add_option("--project", to.project, "project")->required();
  tail_cmd->add_option("--run", to.run, "only this run");
  tail_cmd->add_option("--metric", to.metric, "only this metric");
  tail_cmd->add_option("--label", to.labels,
                       "only series with label KEY=VALUE (repeatable)");
  tail_cmd->add_option("--after", to.after,
                       "first print the stored points after this step "
                       "(resume where a previous tail stopped)");
  tail_cmd->add_option("--count", to.count, "stop after N points");
  tail_cmd->add_option("--format", to.format, "table, csv or json")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));

  // watch
  WatchOptions wa;
  CLI::App* watch_cmd =
      app.add_subcommand("watch", "watch rules and their events");
  watch_cmd->require_subcommand(1);
  CLI::App* rules_cmd =
      watch_cmd->add_subcommand("rules", "create, list, delete watch rules");
  rules_cmd->require_subcommand(1);
  CLI::App* rules_add_cmd = rules_cmd->add_subcommand(
      "add", "add a rule (syntax: docs/USER_GUIDE.md, \"Watch rules\")");
  rules_add_cmd->add_option("--project", wa.project, "project")->required();
  rules_add_cmd->add_option("--run", wa.run, "only this run");
  rules_add_cmd->add_option("--metric", wa.metric, "only this metric");
  rules_add_cmd
      ->add_option("--match", wa.labels,
                   "only series with label KEY=VALUE (repeatable)")
      ->allow_extra_args(false);
  rules_add_cmd
      ->add_option("--condition", wa.condition,
                   "nonfinite | above X [for K] | below X [for K] | plateau "
                   "N | stalled T")
      ->required();
  rules_add_cmd->add_option("--name", wa.name, "a name for people");
  rules_add_cmd->add_option("--format", wa.format, "table, csv or json")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));
  CLI::App* rules_list_cmd =
      rules_cmd->add_subcommand("list", "list the rules of a project");
  rules_list_cmd->add_option("--project", wa.project, "project")->required();
  rules_list_cmd->add_option("--format", wa.format, "table, csv or json")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));
  CLI::App* rules_delete_cmd =
      rules_cmd->add_subcommand("delete", "delete a rule");
  rules_delete_cmd->add_option("--project", wa.project, "project")->required();
  rules_delete_cmd->add_option("id", wa.id, "rule id")->required();
  CLI::App* events_cmd = watch_cmd->add_subcommand(
      "events", "print the events of the rules (FIRING / RESOLVED)");
  events_cmd->add_option("--project", wa.project, "project")->required();
  events_cmd->add_option("--run", wa.run, "only this run");
  events_cmd->add_option("--after", wa.after, "only events after this seq");
  events_cmd->add_flag("--follow", wa.follow,
                       "keep streaming new events until interrupted");
  events_cmd->add_option("--format", wa.format, "table, csv or json")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));

  // admin
  CLI::App* admin_cmd = app.add_subcommand("admin", "server administration");
  admin_cmd->require_subcommand(1);
  std::string stats_format = "json";
  CLI::App* stats_cmd =
      admin_cmd->add_subcommand("stats", "storage statistics");
  stats_cmd->add_option("--format", stats_format, "json, table or csv")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));
  std::string compact_format = "table";
  CLI::App* compact_cmd = admin_cmd->add_subcommand(
      "compact", "seal every head chunk and compact the store fully");
  compact_cmd->add_option("--format", compact_format, "table, json or csv")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));

  DeleteOptions dro, dpo;
  CLI::App* delete_run_cmd = admin_cmd->add_subcommand(
      "delete-run", "delete a run's points and metadata for good (admin of the project)");
  delete_run_cmd->add_option("--project", dro.project, "project")->required();
  delete_run_cmd->add_option("--run", dro.run, "run id")->required();
  CLI::App* delete_project_cmd = admin_cmd->add_subcommand(
      "delete-project",
      "delete every run of a project, its watch rules and retention policy, "
      "for good (admin of the project)");
  delete_project_cmd->add_option("--project", dpo.project, "project")->required();
  for (auto [cmd, o] : {std::pair{delete_run_cmd, &dro}, std::pair{delete_project_cmd, &dpo}}) {
    cmd->add_flag("--yes", o->yes, "confirm (required when stdin is not a terminal)");
    cmd->add_option("--format", o->format, "table, json or csv")
        ->capture_default_str()
        ->check(CLI::IsMember(kOutputFormats));
  }

  TokenOptions tko;
  CLI::App* token_cmd =
      admin_cmd->add_subcommand("token", "create, list and revoke tokens");
  token_cmd->require_subcommand(1);
  CLI::App* token_create_cmd =
      token_cmd->add_subcommand("create", "create a token (shown once)");
  token_create_cmd
      ->add_option("--project", tko.project, "project, or * for every project")
      ->required();
  token_create_cmd->add_option("--scope", tko.scope, "read, write or admin")
      ->required()
      ->check(CLI::IsMember({"read", "write", "admin"}));
  token_create_cmd->add_option("--description", tko.description,
                               "what the token is for");
  token_create_cmd->add_option("--max_points_per_second",
                               tko.max_points_per_second,
                               "ingest rate limit of the token (0: none)");
  token_create_cmd->add_option("--format", tko.format, "table, csv or json")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));
  CLI::App* token_list_cmd = token_cmd->add_subcommand(
      "list", "list tokens (ids, scopes, times; never secrets)");
  token_list_cmd->add_option("--project", tko.project,
                             "only this project's (default: all)");
  token_list_cmd->add_option("--format", tko.format, "table, csv or json")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));
  CLI::App* token_revoke_cmd =
      token_cmd->add_subcommand("revoke", "revoke a token by id");
  token_revoke_cmd->add_option("id", tko.id, "token id")->required();

  AuditOptions auo;
  CLI::App* audit_cmd = admin_cmd->add_subcommand(
      "audit", "read the audit log (admin actions and denied requests)");
  audit_cmd->add_option("--after", auo.after, "entries after this seq");
  audit_cmd->add_option("--limit", auo.limit, "at most N entries (0 = server's)");
  audit_cmd->add_flag("--verify", auo.verify,
                      "check the hash chain; exit 1 if it is broken");
  audit_cmd->add_option("--format", auo.format, "table, csv or json")
      ->capture_default_str()
      ->check(CLI::IsMember(kOutputFormats));

  RetentionOptions rto;
  CLI::App* retention_cmd = admin_cmd->add_subcommand(
      "retention", "per-project retention of raw points and rollups");
  retention_cmd->require_subcommand(1);
  CLI::App* retention_set_cmd = retention_cmd->add_subcommand(
      "set",
      "keep raw points N days (0: forever) and their rollups M >= N days");
  retention_set_cmd->add_option("--project", rto.project, "project")->required();
  retention_set_cmd->add_option("--raw_days", rto.raw_days, "days")->required();
  retention_set_cmd->add_option(
      "--rollup_days", rto.rollup_days,
      "days rollups (chart data) are kept, >= raw_days (0: as raw_days)");
  CLI::App* retention_show_cmd =
      retention_cmd->add_subcommand("show", "show a project's policy");
  retention_show_cmd->add_option("--project", rto.project, "project")->required();
  CLI::App* retention_enforce_cmd = retention_cmd->add_subcommand(
      "enforce", "run the retention pass now (global admin)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  if (*write_cmd) return RunWrite(g, wo, *write_cmd);
  if (*import_cmd) return RunImport(g, io);
  if (*query_cmd) return RunQuery(g, qo, *query_cmd);
  if (*agg_cmd) return RunAgg(g, ao, *agg_cmd);
  if (*series_cmd) return RunSeries(g, so);
  if (*runs_list) return RunRunsList(g, ro);
  if (*runs_show) return RunRunsShow(g, ro);
  if (*runs_create) return RunRunsCreate(g, ro);
  if (*runs_update) return RunRunsUpdate(g, ro);
  if (*tail_cmd) return RunTail(g, to);
  if (*stats_cmd) return RunStats(g, stats_format);
  if (*compact_cmd) return RunCompact(g, compact_format);
  if (*delete_run_cmd) return RunDelete(g, dro);
  if (*delete_project_cmd) return RunDelete(g, dpo);
  if (*rules_add_cmd) return RunWatchRulesAdd(g, wa);
  if (*rules_list_cmd) return RunWatchRulesList(g, wa);
  if (*rules_delete_cmd) return RunWatchRulesDelete(g, wa);
  if (*events_cmd) return RunWatchEvents(g, wa);
  if (*token_create_cmd) return RunTokenCreate(g, tko);
  if (*token_list_cmd) return RunTokenList(g, tko);
  if (*token_revoke_cmd) return RunTokenRevoke(g, tko);
  if (*audit_cmd) return RunAudit(g, auo);
  if (*retention_set_cmd) return RunRetentionSet(g, rto);
  if (*retention_show_cmd) return RunRetentionShow(g, rto);
  if (*retention_enforce_cmd) return RunRetentionEnforce(g);
  return kExitUsage;
}

}  // namespace
}  // namespace stepdb::cli

int main(int argc, char** argv) { return stepdb::cli::Main(argc, argv); }
