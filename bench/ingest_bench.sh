#!/usr/bin/env bash
# Ingest benchmark: starts a fresh stepdb on a temporary data directory,
# runs stepdb-loadgen against it with the given arguments, and prints the
# loadgen's JSON line extended with server-side figures: CPU seconds per
# million points, peak RSS, and write amplification (bytes RocksDB wrote to
# disk -- WAL, flushes, compactions -- per byte of raw point data, 24 bytes a
# point). Not part of `make test`.
#
#   bench/ingest_bench.sh [BUILD_DIR] -- [stepdb-loadgen flags...]
# e.g.
#   bench/ingest_bench.sh build -- --nodes 64 --gpus 8 --metrics 10 \
#       --steps 2000 --batch-steps 20 --streams 32 --window 4
set -euo pipefail
build=${1:-build}
shift || true
[ "${1:-}" = "--" ] && shift
data=$(mktemp -d /tmp/stepdb-bench.XXXXXX)
port=$((20000 + RANDOM % 20000))
# STEPDB_FLAGS: extra server flags, e.g. "--memory_limit_mb 64".
# STEPDB_SAMPLE=SECONDS: also print the server's memory gauges (RSS, what
# the budget counts, heads, RocksDB memtables; MB) and seal queue to stderr
# that often during the run.
"$build/stepdb" --data "$data" --listen "127.0.0.1:$port" --http "127.0.0.1:$((port + 1))" ${STEPDB_FLAGS:-} \
  > "$data.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data" "$data.log"' EXIT
for _ in $(seq 50); do grep -q "stepdb ready" "$data.log" && break; sleep 0.1; done
ticks=$(getconf CLK_TCK)
cpu_before=$(awk '{print $14 + $15}' "/proc/$server/stat")
sampler=
if [ -n "${STEPDB_SAMPLE:-}" ]; then
  ( while sleep "$STEPDB_SAMPLE"; do
      curl -s "127.0.0.1:$((port + 1))/metrics" | awk -v t="$(date +%T)" '
        $1 == "process_resident_memory_bytes" {r = $2}
        $1 == "stepdb_memory_used_bytes" {u = $2}
        $1 == "stepdb_head_bytes" {h = $2}
        $1 == "stepdb_rocksdb_memtable_bytes" {m = $2}
        $1 == "stepdb_seals_queued" {q = $2}
        $1 == "stepdb_ingest_read_waits_total" {w = $2}
        $1 == "stepdb_allocator_allocated_bytes" {a = $2}
        $1 == "stepdb_allocator_dirty_bytes" {d = $2}
        END {printf "%s rss %d budget %d heads %d memtables %d allocated %d dirty %d seals_queued %d waits %d\n",
                    t, r / 1e6, u / 1e6, h / 1e6, m / 1e6, a / 1e6, d / 1e6, q, w}' >&2
    done ) &
  sampler=$!
fi
result=$("$build/stepdb-loadgen" --addr "127.0.0.1:$port" "$@")
[ -n "$sampler" ] && kill "$sampler"
cpu_after=$(awk '{print $14 + $15}' "/proc/$server/stat")
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
metrics=$(curl -s "127.0.0.1:$((port + 1))/metrics")
metric() { echo "$metrics" | awk -v m="$1" '$1 == m {print $2}'; }
python3 - "$result" "$cpu_before" "$cpu_after" "$ticks" "$rss_kb" \
  "$(metric stepdb_wal_written_bytes_total)" "$(metric stepdb_flush_written_bytes_total)" \
  "$(metric stepdb_compaction_written_bytes_total)" "$(metric stepdb_write_groups_total)" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
before, after, ticks, rss = map(float, sys.argv[2:6])
wal, flush, compaction, groups = map(float, sys.argv[6:10])
cpu = (after - before) / ticks
r["server_cpu_seconds"] = round(cpu, 2)
r["server_cpu_seconds_per_million_points"] = round(cpu / (r["points"] / 1e6), 3)
r["server_peak_rss_mb"] = round(rss / 1024, 1)
r["disk_bytes_written_per_point"] = round((wal + flush + compaction) / r["points"], 2)
r["write_amplification"] = round((wal + flush + compaction) / (24 * r["points"]), 3)
r["wal_bytes_per_point"] = round(wal / r["points"], 2)
r["group_commits"] = int(groups)
print(json.dumps(r))
PY
