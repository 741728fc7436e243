#ifndef STEPDB_STORAGE_INFO_LOG_H_
#define STEPDB_STORAGE_INFO_LOG_H_

#include <memory>
#include <string>

#include "rocksdb/env.h"

namespace stepdb::storage {

// RocksDB's informational log (`DIR/LOG`) written with plain stdio, and
// writes that fail (disk full, read-only disk) dropped. RocksDB's own
// logger goes through its checked file writer, which, in Debian's build
// (assertions on), aborts the process on the first line logged after a
// failed write: on a full disk the store would crash while reporting the
// error instead of refusing writes. The previous log is kept as LOG.old.
// Thread-safe (stdio locks the stream per call).
std::shared_ptr<rocksdb::Logger> OpenInfoLog(const std::string& data_dir);

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_INFO_LOG_H_
