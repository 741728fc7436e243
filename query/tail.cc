#include "query/tail.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/grpc_status.h"
#include "proto/wire_convert.h"

namespace stepdb::query {

// One Tail stream. Points arrive through Offer (commit thread) into
// `pending_`; the reactor writes one message at a time, and whoever finds
// it idle with something to send (Offer, or OnWriteDone) starts the next
// write. A resuming subscriber first gets its backfill pages; live points
// queue meanwhile, and those a backfill already covered are skipped.
//
// Lock order: the hub's mutex, then mu_ (Offer and Close run under the
// hub's mutex). Reactions never take the hub's mutex while holding mu_.
class TailHub::Reactor : public grpc::ServerWriteReactor<v1::TailResponse>,
                         public TailSubscriber {
 public:
  Reactor(TailHub* hub, storage::SeriesFilter filter)
      : hub_(hub), filter_(std::move(filter)) {}

  // Subscribes, backfills if asked, and starts writing.
  void Start(std::optional<uint64_t> after_step) {
    if (!hub_->Subscribe(this)) {
      Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "too many tail subscribers, or shutting down"));
      return;
    }
    subscribed_ = true;
    if (after_step) Backfill(*after_step);
    {
      absl::MutexLock lock(&mu_);
      backfilling_ = false;
      if (writing_ || finished_) return;
      writing_ = true;
    }
    WriteNext();
  }

  const storage::SeriesFilter& filter() const override { return filter_; }

  void Offer(storage::SeriesId series, const storage::PointSpan& points) override {
    {
      absl::MutexLock lock(&mu_);
      if (closing_) return;
      // Points a backfill already sent are not sent again.
      size_t from = 0;
      if (auto it = sent_up_to_.find(series); it != sent_up_to_.end()) {
        while (from < points.size() && points.steps[from] <= it->second) ++from;
      }
      const size_t n = points.size() - from;
      if (n == 0) return;
      if (pending_points_ + n > hub_->options_.max_pending_points) {
        dropped_ += n;
      } else {
        if (pending_.empty() || pending_.back().first != series) {
          pending_.emplace_back(series, storage::PointColumns());
        }
        storage::PointColumns& columns = pending_.back().second;
        const storage::PointSpan tail = points.Suffix(from);
        columns.steps.insert(columns.steps.end(), tail.steps.begin(), tail.steps.end());
        columns.times_ms.insert(columns.times_ms.end(), tail.times_ms.begin(),
                                tail.times_ms.end());
        columns.values.insert(columns.values.end(), tail.values.begin(),
                              tail.values.end());
        pending_points_ += n;
      }
      if (writing_ || backfilling_) return;
      writing_ = true;
    }
    WriteNext();
  }

  void Close(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    CloseLocked(status);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      CloseLocked(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    WriteNext();
  }

  void OnCancel() override { Close(grpc::Status::CANCELLED); }

  void OnDone() override {
    if (subscribed_) hub_->Unsubscribe(this);
    delete this;
  }

 private:
  // Finishes now if no write is in flight, else when it completes.
  void CloseLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!closing_) {
      closing_ = true;
      close_status_ = status;
    }
    if (!writing_ && !finished_) {
      finished_ = true;
      Finish(close_status_);
    }
  }

  // Called by the owner of the write slot (writing_ is true).
  void WriteNext() {
    absl::MutexLock lock(&mu_);
    if (closing_) {
      writing_ = false;
      CloseLocked(close_status_);
      return;
    }
    response_.Clear();
    if (!backfill_.empty()) {
      response_ = std::move(backfill_.front());
      backfill_.pop_front();
    } else {
      TakePendingLocked();
    }
    if (response_.series_size() == 0 && dropped_ == 0) {
      writing_ = false;  // idle until the next Offer
      return;
    }
    response_.set_dropped_points(response_.dropped_points() + dropped_);
    dropped_ = 0;
    StartWrite(&response_);
  }

  // Moves up to a page of pending points into response_.
  void TakePendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    size_t budget = hub_->options_.page_points;
    while (!pending_.empty() && budget > 0) {
      auto& [series, columns] = pending_.front();
      const size_t n = std::min(budget, columns.size());
      if (n == columns.size()) {
        AddSeries(series, columns, &response_);
        pending_.pop_front();
      } else {
        storage::PointColumns slice;
        slice.steps.assign(columns.steps.begin(), columns.steps.begin() + n);
        slice.times_ms.assign(columns.times_ms.begin(), columns.times_ms.begin() + n);
        slice.values.assign(columns.values.begin(), columns.values.begin() + n);
        columns.steps.erase(columns.steps.begin(), columns.steps.begin() + n);
        columns.times_ms.erase(columns.times_ms.begin(), columns.times_ms.begin() + n);
        columns.values.erase(columns.values.begin(), columns.values.begin() + n);
        AddSeries(series, slice, &response_);
      }
      pending_points_ -= n;
      budget -= n;
    }
  }

  void AddSeries(storage::SeriesId series, const storage::PointColumns& points,
                 v1::TailResponse* out) const {
    v1::TailSeries* s = out->add_series();
    if (const std::optional<storage::SeriesKey> key =
            hub_->engine_->KeyOf(series)) {
      wire::KeyToWire(*key, s->mutable_key());
    }
    wire::AppendPointColumns(points, s);
  }

  // Queues the stored points after `after_step` of every matching series,
  // in pages, and notes per series the last step sent so that live points
  // already covered are skipped. Runs before any write starts.
  void Backfill(uint64_t after_step) {
    bool more = false;
    const std::vector<storage::SeriesInfo> series =
        hub_->engine_->ListSeries(filter_, 0, &more);
    size_t budget = hub_->options_.max_backfill_points;
    uint64_t skipped = 0;
    std::deque<v1::TailResponse> pages;
    size_t page_points = hub_->options_.page_points;  // forces a first page
    for (const storage::SeriesInfo& info : series) {
      storage::ReadRange range;
      range.steps.from = after_step + 1;
      uint64_t last = after_step;
      auto read = hub_->engine_->Read(
          info.id, range, 0, [&](const storage::PointColumns& points) {
            if (budget == 0) {
              skipped += points.size();
              return true;
            }
            storage::PointColumns slice = points;
            if (slice.size() > budget) {
              skipped += slice.size() - budget;
              slice.steps.resize(budget);
              slice.times_ms.resize(budget);
              slice.values.resize(budget);
            }
            if (page_points + slice.size() > hub_->options_.page_points) {
              pages.emplace_back();
              page_points = 0;
            }
            AddSeries(info.id, slice, &pages.back());
            page_points += slice.size();
            budget -= slice.size();
            last = slice.steps.back();
            return true;
          });
      // A series that cannot be read (corrupt chunk) is skipped; its live
      // points still flow.
      if (!read.ok()) continue;
      absl::MutexLock lock(&mu_);
      // Live points up to the series' current last step are covered by the
      // read even past the budget: they count as skipped, not resent.
      sent_up_to_[info.id] = std::max(last, info.last_step);
    }
    absl::MutexLock lock(&mu_);
    backfill_ = std::move(pages);
    dropped_ += skipped;
  }

  TailHub* const hub_;
  const storage::SeriesFilter filter_;
  bool subscribed_ = false;  // set before any reaction can run

  absl::Mutex mu_;
  std::deque<v1::TailResponse> backfill_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<storage::SeriesId, storage::PointColumns>> pending_
      ABSL_GUARDED_BY(mu_);
  size_t pending_points_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<storage::SeriesId, uint64_t> sent_up_to_ ABSL_GUARDED_BY(mu_);
  bool backfilling_ ABSL_GUARDED_BY(mu_) = true;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status close_status_ ABSL_GUARDED_BY(mu_);
  v1::TailResponse response_;  // owned by the write slot
};

TailHub::TailHub(const storage::Engine* engine, TailOptions options)
    : engine_(engine), options_(options) {}

void TailHub::OnCommit(std::span<const storage::CommittedPoints> committed) {
  absl::MutexLock lock(&mu_);
  if (subscribers_.empty()) return;
  for (const storage::CommittedPoints& c : committed) {
    auto [it, inserted] = matches_.try_emplace(c.series);
    if (inserted) {
      if (const std::optional<storage::SeriesKey> key =
              engine_->KeyOf(c.series)) {
        for (TailSubscriber* s : subscribers_) {
          if (s->filter().Matches(*key)) it->second.push_back(s);
        }
      }
    }
    for (TailSubscriber* s : it->second) s->Offer(c.series, c.points);
  }
}

void TailHub::OnSeriesDeleted(std::span<const storage::SeriesId> series) {
  absl::MutexLock lock(&mu_);
  for (storage::SeriesId id : series) matches_.erase(id);
}

grpc::ServerWriteReactor<v1::TailResponse>* TailHub::StartTail(
    const v1::TailRequest& request) {
  storage::SeriesFilter filter;
  filter.project = request.project();
  if (!request.run().empty()) filter.run = request.run();
  if (!request.metric().empty()) filter.metric = request.metric();
  auto matchers = wire::MatchersFromWire(request.labels());
  if (matchers.ok()) filter.matchers = *std::move(matchers);
  auto* reactor = new Reactor(this, std::move(filter));
  if (request.project().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "project: empty"));
    return reactor;
  }
  if (!matchers.ok()) {
    reactor->Finish(ToGrpcStatus(matchers.status()));
    return reactor;
  }
  std::optional<uint64_t> after;
  if (request.has_after_step()) {
    auto step = wire::StepFromWire(request.after_step(), "after_step");
    if (!step.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   std::string(step.status().message())));
      return reactor;
    }
    after = *step;
  }
  reactor->Start(after);
  return reactor;
}

bool TailHub::Subscribe(TailSubscriber* subscriber) {
  absl::MutexLock lock(&mu_);
  if (shut_down_ || subscribers_.size() >= options_.max_subscribers) return false;
  subscribers_.push_back(subscriber);
  matches_.clear();
  return true;
}

void TailHub::Unsubscribe(TailSubscriber* subscriber) {
  absl::MutexLock lock(&mu_);
  std::erase(subscribers_, subscriber);
  matches_.clear();
}

void TailHub::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  for (TailSubscriber* s : subscribers_) {
    s->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
  }
}

size_t TailHub::subscribers() const {
  absl::MutexLock lock(&mu_);
  return subscribers_.size();
}

}  // namespace stepdb::query
