#!/usr/bin/python3
"""stepdb against InfluxDB 1.6 (Debian's `influxdb` package) on the same
machine and the same training telemetry: ingest rate, bytes per point on
disk, and the latency of a 1000-bucket chart read of one series.

    /usr/bin/python3 bench/compare_influxdb.py [--build build] [--ranks 4] [--steps 250000]

Data: bench/gen_telemetry.py (per rank and step a `train` line of 4 floats
and a `gpu` line of 4 values, each with an integer `step` field). Points
are the metric values (8 per rank and step); the `step` field is one more
column InfluxDB stores, its cost counts in InfluxDB's bytes, as it would
for a user storing steps there.

- InfluxDB: a fresh influxd (TSM engine, WAL fsync as configured by
  default) written over HTTP by 2 concurrent writers, 5000 lines per
  request; after the write its cache is snapshotted and the shard fully
  compacted (cold durations of 1 s), then the data and WAL directories are
  measured in allocated blocks (`bytes_per_point`; includes the series
  index, 8 preallocated segments of which only the used blocks count) and
  the TSM files alone (`tsm_bytes_per_point`). Chart: `SELECT first,last,min,max,sum,count ... GROUP BY
  time(span/1000)` over one series, timed over HTTP (keep-alive).
- stepdb: a fresh `stepdb` (fsync group commit on), `stepctl import` of the
  same file (one stream), `admin compact`, `admin stats` (whole data
  directory / points). Chart: `ReadDownsampled` with 1000 buckets of the
  same series from the Python client (gRPC, one channel).

Chart latencies are the median and p99 of 50 reads after 5 warm-ups, from
Python on the same machine for both. Prints one JSON line per system.
Not part of `make test`.
"""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def dir_bytes(path, suffix=""):
    """Bytes allocated on disk to the files under `path` (ending in
    `suffix`): InfluxDB preallocates its series files sparsely, so apparent
    sizes would overstate it."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            if f.endswith(suffix):
                try:
                    total += os.stat(os.path.join(root, f)).st_blocks * 512
                except OSError:
                    pass
    return total


def percentiles(samples_ms):
    s = sorted(samples_ms)
    return round(s[len(s) // 2], 3), round(s[min(len(s) - 1, int(len(s) * 0.99))], 3)


def time_reads(read, warmup=5, n=50):
    for _ in range(warmup):
        read()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        read()
        samples.append((time.perf_counter() - t) * 1e3)
    return percentiles(samples)


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/ping")
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


# ---- InfluxDB ----------------------------------------------------------------

INFLUX_CONF = """
reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "1s"
  compact-full-write-cold-duration = "1s"
[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""


def influx(args, lines, points):
    d = tempfile.mkdtemp(prefix="cmp-influx.")
    port = 18086
    conf = os.path.join(d, "influxdb.conf")
    with open(conf, "w") as f:
        f.write(INFLUX_CONF.format(d=d, rpc=port + 2, http=port))
    log = open(os.path.join(d, "log"), "w")
    server = subprocess.Popen([args.influxd, "-config", conf], stdout=log, stderr=log)
    try:
        wait_port(port)

        def query(q, conn=None):
            c = conn or http.client.HTTPConnection("127.0.0.1", port)
            c.request("POST", "/query?" + urllib.parse.urlencode({"db": "bench", "q": q}))
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(body)
            return json.loads(body)

        query("CREATE DATABASE bench")
        batches = [lines[i:i + 5000] for i in range(0, len(lines), 5000)]

        def writer(part):
            c = http.client.HTTPConnection("127.0.0.1", port)
            for b in part:
                c.request("POST", "/write?db=bench&precision=ns", body="\n".join(b))
                r = c.getresponse()
                r.read()
                if r.status != 204:
                    raise RuntimeError(f"write: {r.status}")

        t = time.perf_counter()
        threads = [threading.Thread(target=writer, args=(batches[i::2],)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        seconds = time.perf_counter() - t
        # Snapshot and full compaction once the shard is cold; wait until
        # the on-disk size settles.
        last, stable = -1, 0
        while stable < 5:
            time.sleep(2)
            size = dir_bytes(os.path.join(d, "data")) + dir_bytes(os.path.join(d, "wal"))
            stable = stable + 1 if size == last else 0
            last = size
        first_ns = int(lines[0].rsplit(" ", 1)[1])
        last_ns = int(lines[-1].rsplit(" ", 1)[1])
        width_ms = max(1, (last_ns - first_ns) // 1_000_000 // 1000)
        q = (f"SELECT first(loss),last(loss),min(loss),max(loss),sum(loss),count(loss) "
             f"FROM train WHERE rank='0' AND time >= {first_ns} AND time <= {last_ns} "
             f"GROUP BY time({width_ms}ms)")
        conn = http.client.HTTPConnection("127.0.0.1", port)
        rows = len(query(q, conn)["results"][0]["series"][0]["values"])
        p50, p99 = time_reads(lambda: query(q, conn))
        tsm = dir_bytes(os.path.join(d, "data"), ".tsm")
        return {"system": "influxdb-1.6", "points": points,
                "ingest_seconds": round(seconds, 2),
                "points_per_sec": round(points / seconds),
                "bytes_on_disk": last, "bytes_per_point": round(last / points, 3),
                "tsm_bytes_per_point": round(tsm / points, 3),
                "chart_buckets": rows, "chart_p50_ms": p50, "chart_p99_ms": p99}
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(d, ignore_errors=True)


# ---- stepdb ------------------------------------------------------------------

def stepdb(args, path, points):
    d = tempfile.mkdtemp(prefix="cmp-stepdb.")
    server = subprocess.Popen(
        [os.path.join(args.build, "stepdb"), "--data", os.path.join(d, "data"),
         "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr = None
        for line in server.stdout:
            if line.startswith("stepdb ready: grpc="):
                addr = line.split("grpc=")[1].split()[0]
                break
        ctl = [os.path.join(args.build, "stepctl"), "--addr", addr]
        t = time.perf_counter()
        subprocess.run(ctl + ["import", "--project", "p", "--format", "influx", path],
                       check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t
        subprocess.run(ctl + ["admin", "compact"], check=True, stdout=subprocess.DEVNULL)
        stats = json.loads(subprocess.run(ctl + ["admin", "stats"], check=True,
                                          capture_output=True, text=True).stdout)
        sys.path.insert(0, os.path.join(REPO, "clients", "python"))
        os.environ.setdefault("STEPDB_PROTO_DIR", os.path.join(args.build, "python"))
        import stepdb as client_lib  # noqa: E402
        client = client_lib.Client(addr)
        read = lambda: client.read_downsampled("p", "r1", "train_loss", {"rank": "0"},
                                               buckets=1000)
        buckets = len(read())
        p50, p99 = time_reads(read)
        return {"system": "stepdb", "points": stats["points"],
                "ingest_seconds": round(seconds, 2),
                "points_per_sec": round(points / seconds),
                "bytes_on_disk": stats["bytes_on_disk"],
                "bytes_per_point": round(stats["bytes_per_point"], 3),
                "chart_buckets": buckets, "chart_p50_ms": p50, "chart_p99_ms": p99}
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(REPO, "build"))
    p.add_argument("--influxd", default=shutil.which("influxd") or "/usr/bin/influxd")
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--steps", type=int, default=250000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".lp", delete=False) as f:
        path = f.name
        subprocess.run([sys.executable, os.path.join(HERE, "gen_telemetry.py"),
                        "--ranks", str(args.ranks), "--steps", str(args.steps),
                        "--seed", str(args.seed)], stdout=f, check=True)
    try:
        with open(path) as f:
            lines = [l.rstrip("\n") for l in f if l.strip()]
        points = 8 * args.ranks * args.steps
        print(json.dumps(stepdb(args, path, points)), flush=True)
        print(json.dumps(influx(args, lines, points)), flush=True)
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
