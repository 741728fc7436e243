// Prometheus text exposition of the server's own counters.
#ifndef STEPDB_SERVER_METRICS_H_
#define STEPDB_SERVER_METRICS_H_

#include <optional>
#include <string>

#include "ingest/ingest_service.h"
#include "server/allocator.h"
#include "storage/engine.h"

namespace stepdb::server {

// `allocator`: printed when known (jemalloc is the allocator).
std::string FormatPrometheusMetrics(
    const storage::EngineStats& engine, const ingest::IngestCounters& ingest,
    const std::optional<AllocatorStats>& allocator);

}  // namespace stepdb::server

#endif  // STEPDB_SERVER_METRICS_H_
