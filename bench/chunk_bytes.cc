// stepdb-chunkbytes DATA_DIR: where the bytes of a (stopped) server's data
// directory go, for the bytes-per-point budget (docs/BENCHMARKS.md,
// "Storage size"). Opens the directory read-only, decodes every sealed chunk
// (following the references of follower chunks, format version 3) and
// re-encodes its points to split the format version 2 cost of the same
// points into header, step column, time column and value column:
//
//   v2     = EncodeChunk(points)                       (what v2 stores)
//   values = EncodeFollowerChunk(points) - reference   (header + values)
//   header = EncodeFollowerChunk(points, values = 0) - reference
//            (a constant value column costs ~2 bytes per 255 points)
//   steps  = v2 - EncodeChunk(regular steps, same times, values)
//   times  = v2 - values - steps
//
// plus the sizes RocksDB reports per column family (SST files) and the
// whole directory. Prints one table; every figure is over the points.
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "rocksdb/db.h"
#include "storage/chunk_codec.h"
#include "storage/keys.h"

namespace {

using stepdb::storage::ChunkDescription;
using stepdb::storage::PointColumns;

int Fail(const std::string& what) {
  std::fprintf(stderr, "stepdb-chunkbytes: %s\n", what.c_str());
  return 1;
}

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  namespace storage = stepdb::storage;
  if (argc != 2) return Fail("usage: stepdb-chunkbytes DATA_DIR");
  const std::string dir = argv[1];
  std::vector<std::string> names;
  if (!rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok()) {
    return Fail("not a data directory: " + dir);
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : names) {
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  if (auto s = rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir,
                                            descriptors, &handles, &raw);
      !s.ok()) {
    return Fail(s.ToString());
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::ColumnFamilyHandle* chunks = nullptr;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == storage::kChunksFamily) chunks = handles[i];
  }
  if (chunks == nullptr) return Fail("no chunks column family");

  uint64_t points = 0, count = 0, followers = 0, stored = 0, keys = 0;
  uint64_t v2 = 0, values = 0, header = 0, steps = 0;
  PointColumns p;
  std::string leader, encoded;
  std::unique_ptr<rocksdb::Iterator> it(
      db->NewIterator(rocksdb::ReadOptions(), chunks));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string_view key = it->key().ToStringView();
    const std::string_view chunk = it->value().ToStringView();
    auto d = storage::DescribeChunk(chunk);
    if (!d.ok() || key.size() != storage::kDataKeySize) {
      return Fail("bad chunk: " + d.status().ToString());
    }
    p.clear();
    absl::Status decoded;
    if (d->leader_series != 0) {
      std::string leader_key(key.substr(0, 8));
      storage::AppendBigEndian32(d->leader_series, &leader_key);
      leader_key.append(key.substr(storage::kSeriesPrefixSize));
      if (!db->Get(rocksdb::ReadOptions(), chunks, leader_key, &leader).ok()) {
        return Fail("missing leader chunk");
      }
      decoded = storage::DecodeFollowerChunk(chunk, leader, &p);
      ++followers;
    } else {
      decoded = storage::DecodeChunk(chunk, &p);
    }
    if (!decoded.ok()) return Fail(decoded.ToString());
    const size_t n = p.size();
    ++count;
    points += n;
    stored += chunk.size();
    keys += key.size();
    encoded.clear();
    storage::EncodeChunk(p.steps, p.times_ms, p.values, &encoded);
    const uint64_t own = encoded.size();
    v2 += own;
    // The reference: leader varint (series ids here are small: 1-3 bytes)
    // and the 4-byte column check; taken out of the follower sizes below.
    encoded.clear();
    storage::EncodeFollowerChunk(p.steps, p.times_ms, p.values, 1, &encoded);
    const uint64_t vals = encoded.size() - 5;
    values += vals;
    encoded.clear();
    const std::vector<double> zeros(n, 0.0);
    storage::EncodeFollowerChunk(p.steps, p.times_ms, zeros, 1, &encoded);
    header += encoded.size() - 5;
    std::vector<uint64_t> regular(n);
    for (size_t i = 0; i < n; ++i) regular[i] = p.steps[0] + i;
    encoded.clear();
    storage::EncodeChunk(regular, p.times_ms, p.values, &encoded);
    steps += own > encoded.size() ? own - encoded.size() : 0;
  }
  if (!it->status().ok()) return Fail(it->status().ToString());
  if (points == 0) return Fail("no sealed points");

  const double pts = static_cast<double>(points);
  auto per = [pts](uint64_t bytes) { return static_cast<double>(bytes) / pts; };
  const uint64_t times = v2 - values - steps;
  std::printf("points %" PRIu64 " in %" PRIu64 " chunks (%" PRIu64
              " followers)\n",
              points, count, followers);
  std::printf("as version 2 chunks: %.3f B/pt = header %.3f + steps %.3f + "
              "times %.3f + values %.3f\n",
              per(v2), per(header), per(steps), per(times),
              per(values - header));
  std::printf("stored chunk values: %.3f B/pt (%" PRIu64
              " bytes); chunk keys %.3f B/pt\n",
              per(stored), stored, per(keys));
  for (size_t i = 0; i < names.size(); ++i) {
    uint64_t sst = 0;
    db->GetIntProperty(handles[i], "rocksdb.total-sst-files-size", &sst);
    std::printf("family %-8s SST %10" PRIu64 " bytes = %.3f B/pt\n",
                names[i].c_str(), sst, per(sst));
  }
  const uint64_t total = DirectoryBytes(dir);
  std::printf("directory %" PRIu64 " bytes = %.3f B/pt\n", total, per(total));
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file() &&
        entry.path().extension().string() != ".sst") {
      std::printf("  %-28s %8" PRIuMAX "\n",
                  entry.path().filename().string().c_str(),
                  static_cast<uintmax_t>(entry.file_size()));
    }
  }
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  return 0;
}
