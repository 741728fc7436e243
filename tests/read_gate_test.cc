#include "ingest/read_gate.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace stepdb::ingest {
namespace {

// Records the order of its Resume calls in a shared log.
class RecordingWaiter : public ReadGate::Waiter {
 public:
  RecordingWaiter(std::string name, std::vector<std::string>* log)
      : name_(std::move(name)), log_(log) {}
  void Resume() override { log_->push_back(name_); }

 private:
  std::string name_;
  std::vector<std::string>* log_;
};

class ReadGateTest : public ::testing::Test {
 protected:
  std::atomic<uint64_t> queued_{0};
  std::vector<std::string> resumed_;
  RecordingWaiter a_{"a", &resumed_}, b_{"b", &resumed_}, c_{"c", &resumed_};
};

TEST_F(ReadGateTest, WithoutLimitEveryReadStarts) {
  ReadGate gate(0, [this] { return queued_.load(); });
  queued_ = 1 << 30;
  EXPECT_TRUE(gate.Admit(&a_, 1 << 30));
  EXPECT_TRUE(gate.Admit(&b_, 1 << 30));
  EXPECT_EQ(gate.waits(), 0u);
}

TEST_F(ReadGateTest, TheReadThatCrossesTheLimitGoesTheNextWaits) {
  ReadGate gate(100, [this] { return queued_.load(); });
  queued_ = 40;
  EXPECT_TRUE(gate.Admit(&a_, 50));  // 90 < 100 after
  EXPECT_TRUE(gate.Admit(&b_, 500));  // 90 < 100 before: let through
  EXPECT_FALSE(gate.Admit(&c_, 1));   // 590 >= 100
  EXPECT_EQ(gate.waits(), 1u);
  gate.Wake();
  EXPECT_TRUE(resumed_.empty()) << "no room yet";

  // a's and b's requests reach the engine's queue, then commit.
  queued_ += 550;
  gate.Release(&a_);
  gate.Release(&b_);
  gate.Release(&b_);  // twice: nothing more
  gate.Wake();
  EXPECT_TRUE(resumed_.empty()) << "the queue still holds them";
  queued_ = 0;
  gate.Wake();
  EXPECT_EQ(resumed_, std::vector<std::string>{"c"});
}

TEST_F(ReadGateTest, LargerThanTheLimitStillGoesAlone) {
  ReadGate gate(100, [this] { return queued_.load(); });
  EXPECT_TRUE(gate.Admit(&a_, 1000));
  EXPECT_FALSE(gate.Admit(&b_, 1000));
  gate.Release(&a_);  // a's read dropped (its stream ended)
  gate.Wake();
  EXPECT_EQ(resumed_, std::vector<std::string>{"b"});
}

TEST_F(ReadGateTest, WaitersResumeFirstComeFirstServedAndReserveTheirBytes) {
  ReadGate gate(100, [this] { return queued_.load(); });
  queued_ = 100;
  EXPECT_FALSE(gate.Admit(&a_, 30));
  EXPECT_FALSE(gate.Admit(&b_, 60));
  EXPECT_FALSE(gate.Admit(&c_, 30));
  queued_ = 0;
  // A newcomer waits behind them even though there is room now.
  RecordingWaiter d("d", &resumed_);
  EXPECT_FALSE(gate.Admit(&d, 1));
  gate.Wake();
  // a (30) and b (90 reserved after) fit; c would start at 90 < 100 and
  // cross; d waits.
  EXPECT_EQ(resumed_, (std::vector<std::string>{"a", "b", "c"}));
  // a's and b's requests reach the engine's queue.
  queued_ = 90;
  gate.Release(&a_);
  gate.Release(&b_);
  gate.Wake();
  EXPECT_EQ(resumed_.size(), 3u) << "90 queued + c's 30 reserved: no room";
  queued_ = 0;  // committed
  gate.Wake();
  EXPECT_EQ(resumed_.back(), "d");
  EXPECT_EQ(gate.waits(), 4u);
}

// A read reserves its room before its client sends; a quiet client must
// not keep the others waiting for long.
TEST_F(ReadGateTest, OldReservationsExpire) {
  ReadGate gate(100, [this] { return queued_.load(); });
  EXPECT_TRUE(gate.Admit(&a_, 1000));  // its client goes quiet
  EXPECT_FALSE(gate.Admit(&b_, 10));
  gate.ExpireReservations(absl::Hours(1));
  gate.Wake();
  EXPECT_TRUE(resumed_.empty()) << "a's reservation is recent";
  absl::SleepFor(absl::Milliseconds(20));
  gate.ExpireReservations(absl::Milliseconds(10));
  gate.Wake();
  EXPECT_EQ(resumed_, std::vector<std::string>{"b"});
  // a's read still comes; its late release finds nothing to release.
  gate.Release(&a_);
  EXPECT_TRUE(gate.Admit(&c_, 10)) << "b's 10 reserved: room left";
}

TEST_F(ReadGateTest, ACancelledWaiterIsNeverResumed) {
  ReadGate gate(10, [this] { return queued_.load(); });
  queued_ = 10;
  EXPECT_FALSE(gate.Admit(&a_, 1));
  EXPECT_FALSE(gate.Admit(&b_, 1));
  EXPECT_TRUE(gate.Cancel(&a_));
  EXPECT_FALSE(gate.Cancel(&a_)) << "not waiting any more";
  queued_ = 0;
  gate.Wake();
  EXPECT_EQ(resumed_, std::vector<std::string>{"b"});
  EXPECT_FALSE(gate.Cancel(&b_)) << "already resumed";
}

}  // namespace
}  // namespace stepdb::ingest
