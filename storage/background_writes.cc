#include "storage/background_writes.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <system_error>
#include <vector>

#include "absl/time/clock.h"

namespace stepdb::storage {

BackgroundWritePacer::BackgroundWritePacer(Options options)
    : options_(options),
      limiter_(rocksdb::NewGenericRateLimiter(
          static_cast<int64_t>(options.max_bytes_per_sec),
          /*refill_period_us=*/100'000, /*fairness=*/10,
          rocksdb::RateLimiter::Mode::kWritesOnly, /*auto_tuned=*/false)),
      file_manager_(rocksdb::NewSstFileManager(
          rocksdb::Env::Default(), /*info_log=*/nullptr, /*trash_dir=*/"",
          static_cast<int64_t>(2 * options.max_bytes_per_sec),
          /*delete_existing_trash=*/true, /*status=*/nullptr,
          // Trash up to the size of the tables; past it, deleted at once.
          /*max_trash_db_ratio=*/1.0,
          /*bytes_max_delete_chunk=*/uint64_t{4} << 20)) {}

void BackgroundWritePacer::SetLimit(uint64_t bytes_per_sec) {
  limiter_->SetBytesPerSecond(static_cast<int64_t>(bytes_per_sec));
  file_manager_->SetDeleteRateBytesPerSecond(
      static_cast<int64_t>(2 * bytes_per_sec));
}

void BackgroundWritePacer::Update(absl::Time now) {
  Update(now, static_cast<uint64_t>(
                  limiter_->GetTotalBytesThrough(rocksdb::Env::IO_TOTAL)));
}

void BackgroundWritePacer::Update(absl::Time now, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  const bool first = last_update_ == absl::InfinitePast();
  const double seconds = absl::ToDoubleSeconds(now - last_update_);
  const bool went_back = seconds <= 0 || bytes < last_bytes_;
  const double rate =
      went_back ? 0 : static_cast<double>(bytes - last_bytes_) / seconds;
  last_update_ = now;
  last_bytes_ = bytes;
  if (first && unpaced_ == 0) SetLimit(options_.min_bytes_per_sec);
  if (first || went_back || unpaced_ > 0) return;
  const double alpha =
      1 - std::exp(-seconds / absl::ToDoubleSeconds(options_.averaging));
  average_ += alpha * (rate - average_);
  const double current = static_cast<double>(limiter_->GetBytesPerSecond());
  double limit = options_.headroom * average_;
  // Used (nearly) to the full: the need may be above the limit, which the
  // average of what got through cannot show. Double it now.
  if (rate >= 0.9 * current) limit = std::max(limit, 2 * current);
  limit = std::clamp(limit, static_cast<double>(options_.min_bytes_per_sec),
                     static_cast<double>(options_.max_bytes_per_sec));
  SetLimit(static_cast<uint64_t>(limit));
}

BackgroundWritePacer::Unpaced::Unpaced(BackgroundWritePacer* pacer)
    : pacer_(pacer) {
  absl::MutexLock lock(&pacer_->mu_);
  ++pacer_->unpaced_;
  pacer_->SetLimit(pacer_->options_.max_bytes_per_sec);
}

// The limit stays lifted until the next Update.
BackgroundWritePacer::Unpaced::~Unpaced() {
  absl::MutexLock lock(&pacer_->mu_);
  --pacer_->unpaced_;
}

namespace {

std::vector<std::filesystem::path> TrashFiles(const std::string& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (it->path().extension() == ".trash") files.push_back(it->path());
  }
  return files;
}

}  // namespace

bool BackgroundWritePacer::WaitForEmptyTrash(const std::string& dir,
                                             absl::Duration timeout) {
  const auto deadline =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
  while (!TrashFiles(dir).empty()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::error_code ec;
      for (const auto& file : TrashFiles(dir)) std::filesystem::remove(file, ec);
      return TrashFiles(dir).empty();
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

uint64_t BackgroundWritePacer::bytes_per_sec() const {
  return static_cast<uint64_t>(limiter_->GetBytesPerSecond());
}

uint64_t BackgroundWritePacer::delete_bytes_per_sec() const {
  return static_cast<uint64_t>(file_manager_->GetDeleteRateBytesPerSecond());
}

}  // namespace stepdb::storage
