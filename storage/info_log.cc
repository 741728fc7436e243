#include "storage/info_log.h"

#include <sys/time.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <filesystem>

namespace stepdb::storage {
namespace {

class StdioLogger : public rocksdb::Logger {
 public:
  explicit StdioLogger(FILE* file) : file_(file) {}
  ~StdioLogger() override {
    if (file_ != nullptr) fclose(file_);
  }

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    if (file_ == nullptr) return;
    timeval now;
    gettimeofday(&now, nullptr);
    tm local;
    localtime_r(&now.tv_sec, &local);
    // One line at a time: stdio's lock keeps concurrent lines whole; a
    // failed write sets the stream's error flag and is otherwise ignored.
    flockfile(file_);
    fprintf(file_, "%04d/%02d/%02d-%02d:%02d:%02d.%06ld ", local.tm_year + 1900,
            local.tm_mon + 1, local.tm_mday, local.tm_hour, local.tm_min,
            local.tm_sec, static_cast<long>(now.tv_usec));
    vfprintf(file_, format, ap);
    fputc('\n', file_);
    fflush(file_);
    clearerr(file_);
    funlockfile(file_);
  }

  void Flush() override {
    if (file_ != nullptr) fflush(file_);
  }

 private:
  FILE* const file_;  // nullptr if the file could not be opened
};

}  // namespace

std::shared_ptr<rocksdb::Logger> OpenInfoLog(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  const std::string path = data_dir + "/LOG";
  std::filesystem::rename(path, path + ".old", ec);  // absent the first time
  return std::make_shared<StdioLogger>(fopen(path.c_str(), "w"));
}

}  // namespace stepdb::storage
