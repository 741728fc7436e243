// A RocksDB handle on a closed engine's data directory with every column
// family open, for tests that look at or tamper with the stored bytes.
#ifndef STEPDB_TESTS_RAW_DB_H_
#define STEPDB_TESTS_RAW_DB_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/keys.h"

namespace stepdb::testing {

struct RawDb {
  // Read-only unless `writable`.
  explicit RawDb(const std::string& dir, bool writable = false) {
    EXPECT_TRUE(
        rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const std::string& name : names) {
      descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    rocksdb::DB* raw = nullptr;
    const rocksdb::Status s =
        writable ? rocksdb::DB::Open(rocksdb::DBOptions(), dir, descriptors,
                                     &handles, &raw)
                 : rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir,
                                                descriptors, &handles, &raw);
    EXPECT_TRUE(s.ok()) << s.ToString();
    db.reset(raw);
  }
  ~RawDb() {
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  rocksdb::ColumnFamilyHandle* family(std::string_view name) const {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) return handles[i];
    }
    ADD_FAILURE() << "no column family " << name;
    return nullptr;
  }
  // A big-endian uint32 id stored in the index under `key`.
  uint32_t Id(const std::string& key) const {
    std::string v;
    EXPECT_TRUE(db->Get(rocksdb::ReadOptions(), family(storage::kIndexFamily),
                        key, &v)
                    .ok());
    if (v.size() != 4) return 0;
    return storage::ReadBigEndian32(v.data());
  }

  std::vector<std::string> names;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::unique_ptr<rocksdb::DB> db;
};

}  // namespace stepdb::testing

#endif  // STEPDB_TESTS_RAW_DB_H_
