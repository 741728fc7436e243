// Prometheus text exposition of the server's own counters.
#ifndef STEPDB_SERVER_METRICS_H_
#define STEPDB_SERVER_METRICS_H_

#include <string>

#include "ingest/ingest_service.h"
#include "storage/engine.h"

namespace stepdb::server {

std::string FormatPrometheusMetrics(const storage::EngineStats& engine,
                                    const ingest::IngestCounters& ingest);

}  // namespace stepdb::server

#endif  // STEPDB_SERVER_METRICS_H_
