// Disk full, end to end: the real `stepdb` on a small tmpfs fills it. Writes
// must fail with a clear RESOURCE_EXHAUSTED, nothing acked may be lost,
// reads keep working, and writes must succeed again once the file system
// grows, without a restart. Mounting needs CAP_SYS_ADMIN (root, as CI
// runs); without it the tests are skipped and say why.
#include <grpcpp/grpcpp.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "stepdb/v1/stepdb.grpc.pb.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace stepdb {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

constexpr int kSeries = 3;
constexpr int kStepsPerRequest = 2000;

// A tmpfs of a given size, mounted for the lifetime of the object.
class SmallDisk {
 public:
  explicit SmallDisk(const std::filesystem::path& path) : path_(path) {
    std::filesystem::create_directories(path_);
  }
  ~SmallDisk() {
    if (mounted_) umount2(path_.c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  // 0 on success, else errno.
  int Mount(int megabytes) {
    const std::string data = "size=" + std::to_string(megabytes) + "m";
    if (mount("tmpfs", path_.c_str(), "tmpfs", 0, data.c_str()) != 0) return errno;
    mounted_ = true;
    return 0;
  }
  // Grows (or shrinks) the mounted file system; its files stay.
  int Resize(int megabytes) {
    const std::string data = "size=" + std::to_string(megabytes) + "m";
    return mount("tmpfs", path_.c_str(), "tmpfs", MS_REMOUNT, data.c_str()) == 0
               ? 0
               : errno;
  }
  uint64_t FreeBytes() const {
    struct statvfs fs;
    return statvfs(path_.c_str(), &fs) == 0 ? uint64_t{fs.f_bavail} * fs.f_frsize
                                            : 0;
  }
  std::string data_dir() const { return (path_ / "data").string(); }

 private:
  const std::filesystem::path path_;
  bool mounted_ = false;
};

double Value(int series, int64_t step) {
  // Noisy values, so that the write-ahead log grows fast.
  return series + std::sin(static_cast<double>(step)) * 1e3 + step * 1e-7;
}

v1::SeriesKey Key(int series) {
  v1::SeriesKey key;
  key.set_project("full");
  key.set_run("r");
  key.set_metric("m" + std::to_string(series));
  return key;
}

// Streams requests [first, first + max) one at a time, each waiting for its
// ack, until one fails. Returns the index of the last acked request (first
// - 1 if none) and the status the stream ended with.
struct WriteOutcome {
  int64_t last_acked;
  grpc::Status status;
  std::string ack_error;  // error_message of an ack with error_code set
};
WriteOutcome WriteUntilFailure(const std::string& address, int64_t first,
                               int64_t max) {
  auto stub = v1::Ingest::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub->Write(&ctx);
  WriteOutcome out{first - 1, grpc::Status::OK, ""};
  for (int64_t r = first; r < first + max; ++r) {
    v1::WriteRequest req;
    req.set_seq(r + 1);
    for (int s = 0; s < kSeries; ++s) {
      v1::SeriesPoints* points = req.add_series();
      *points->mutable_key() = Key(s);
      for (int k = 0; k < kStepsPerRequest; ++k) {
        const int64_t step = r * kStepsPerRequest + k;
        points->add_steps(step);
        points->add_times_ms(1'700'000'000'000 + step);
        points->add_values(Value(s, step));
      }
    }
    v1::WriteAck ack;
    if (!stream->Write(req) || !stream->Read(&ack)) break;
    if (ack.error_code() != 0) {
      out.ack_error = ack.error_message();
      break;
    }
    if (static_cast<int64_t>(ack.durable_seq()) < r + 1) break;
    out.last_acked = r;
  }
  stream->WritesDone();
  out.status = stream->Finish();
  return out;
}

// The number of whole requests stored, after checking that every series
// holds exactly the points of requests [0, n): each once, in order, with
// its value (a request is atomic across its series).
int64_t StoredRequests(const std::string& address) {
  auto stub = v1::Query::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  int64_t requests = -1;
  for (int s = 0; s < kSeries; ++s) {
    v1::ReadRangeRequest req;
    *req.mutable_series() = Key(s);
    grpc::ClientContext ctx;
    auto reader = stub->ReadRange(&ctx, req);
    v1::ReadRangeResponse all, page;
    while (reader->Read(&page)) all.MergeFrom(page);
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_EQ(all.steps_size() % kStepsPerRequest, 0) << "series " << s << " torn";
    for (int i = 0; i < all.steps_size(); ++i) {
      if (all.steps(i) != i ||
          std::bit_cast<uint64_t>(all.values(i)) !=
              std::bit_cast<uint64_t>(Value(s, i))) {
        ADD_FAILURE() << "series " << s << " point " << i << " is wrong";
        return -1;
      }
    }
    const int64_t n = all.steps_size() / kStepsPerRequest;
    if (requests >= 0) {
      EXPECT_EQ(n, requests) << "series " << s;
    }
    requests = n;
  }
  return requests;
}

// Resends from `from` until a request is acked again (the store resumes on
// the next write once the disk has room), for at most 10 s.
WriteOutcome WriteAgain(const std::string& address, int64_t from, int64_t max) {
  WriteOutcome out{from - 1, grpc::Status::OK, ""};
  for (int attempt = 0; attempt < 100; ++attempt) {
    out = WriteUntilFailure(address, from, max);
    if (out.last_acked >= from) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return out;
}

class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    disk_ = std::make_unique<SmallDisk>(std::filesystem::path(dir_.path()) / "mnt");
    if (const int err = disk_->Mount(8); err != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs (" << strerror(err)
                   << "); disk-full tests need CAP_SYS_ADMIN";
    }
  }

  testing::TempDir dir_;
  std::unique_ptr<SmallDisk> disk_;
};

TEST_F(DiskFullTest, AFullDiskFailsWritesCleanlyAndTheyResumeWhenSpaceReturns) {
  // No reserve: RocksDB itself runs into ENOSPC.
  testing::ServerProcess server(disk_->data_dir(), {"--min_free_disk_mb", "0"});
  ASSERT_TRUE(server.Start());
  const WriteOutcome full = WriteUntilFailure(server.address(), 0, 100'000);
  ASSERT_GE(full.last_acked, 10) << "the disk filled too early";
  ASSERT_LT(full.last_acked, 100'000 - 1) << "the disk never filled";
  const std::string error = full.status.error_message() + full.ack_error;
  EXPECT_EQ(full.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << error;
  EXPECT_THAT(error, AnyOf(HasSubstr("No space left"), HasSubstr("disk full")));

  // Everything acked is readable while the disk is full; at most the failed
  // request itself may be stored too, whole.
  const int64_t stored = StoredRequests(server.address());
  EXPECT_GE(stored, full.last_acked + 1);
  EXPECT_LE(stored, full.last_acked + 2);

  // Still full: refused again, clearly, and the server stays up.
  const WriteOutcome still = WriteUntilFailure(server.address(), stored, 5);
  EXPECT_EQ(still.last_acked, stored - 1);
  EXPECT_EQ(still.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  // Room again (well below RocksDB's own recovery threshold of 128 MiB):
  // writes resume without a restart, resent requests are duplicates.
  ASSERT_EQ(disk_->Resize(24), 0);
  const WriteOutcome resumed = WriteAgain(server.address(), full.last_acked + 1, 20);
  EXPECT_TRUE(resumed.status.ok()) << resumed.status.error_message() << resumed.ack_error;
  EXPECT_EQ(resumed.last_acked, full.last_acked + 20);
  EXPECT_EQ(StoredRequests(server.address()), full.last_acked + 21);

  // And all of it survives a restart.
  const int status = server.Kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  testing::ServerProcess again(disk_->data_dir(), {"--min_free_disk_mb", "0"});
  ASSERT_TRUE(again.Start());
  EXPECT_EQ(StoredRequests(again.address()), full.last_acked + 21);
}

TEST_F(DiskFullTest, WritesAreRefusedBelowTheFreeSpaceReserve) {
  // A 4 MiB reserve on a 16 MiB disk (RocksDB preallocates 4 MiB for its
  // manifest): writes stop before the disk is full.
  ASSERT_EQ(disk_->Resize(16), 0);
  testing::ServerProcess server(disk_->data_dir(), {"--min_free_disk_mb", "4"});
  ASSERT_TRUE(server.Start());
  const WriteOutcome refused = WriteUntilFailure(server.address(), 0, 100'000);
  ASSERT_GE(refused.last_acked, 1);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.status.error_message() + refused.ack_error,
              HasSubstr("--min_free_disk_mb"));
  // Refused by the reserve, not by a failed write: the disk still has room.
  EXPECT_GT(disk_->FreeBytes(), 1u << 20);
  EXPECT_EQ(StoredRequests(server.address()), refused.last_acked + 1);

  ASSERT_EQ(disk_->Resize(32), 0);
  const WriteOutcome resumed =
      WriteAgain(server.address(), refused.last_acked + 1, 10);
  EXPECT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  EXPECT_EQ(StoredRequests(server.address()), refused.last_acked + 11);
}

}  // namespace
}  // namespace stepdb
