// The head-log records a series' head fragments live in, compactly.
//
// Each head fragment of a series was written in one head-log record (one
// per commit group); a record can be deleted once every series it holds
// has sealed past its fragment. A series keeps, per fragment and in append
// order, the record's sequence number and the fragment's last step. With a
// million series and small write batches a series holds dozens of these;
// as a vector of two uint64 each, plus its doubling slack, they were about
// a fifth of the server's memory. Here they are varint deltas: about
// 5 bytes a reference instead of 16-32.
//
// Thread-compatible: the engine guards each series' references with its
// mutex.
#ifndef STEPDB_STORAGE_LOG_REFS_H_
#define STEPDB_STORAGE_LOG_REFS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace stepdb::storage {

class LogRefs {
 public:
  struct Ref {
    uint64_t seq;        // the head-log record
    uint64_t last_step;  // the fragment's last step
  };

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  // Heap bytes held.
  size_t bytes() const { return bytes_.capacity() > 15 ? bytes_.capacity() : 0; }

  // Appends a reference. Sequence numbers and steps normally grow; any
  // value is stored faithfully (deltas are zigzag-coded).
  void Append(Ref ref);

  // Every reference, in append order.
  std::vector<Ref> ToVector() const;

  // Removes the first n references (n <= size()).
  void EraseFirst(size_t n);

  void Clear() { *this = LogRefs(); }

 private:
  // Per reference: varint(zigzag(seq - previous seq)), varint(zigzag(
  // last_step - previous last_step)); the first one's "previous" is 0.
  std::string bytes_;
  Ref last_{0, 0};  // the last reference appended (the next delta's base)
  uint32_t count_ = 0;
};

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_LOG_REFS_H_
