"""Benchmarks of the Python client.

  python3 clients/python/bench/client_bench.py [--server build/stepdb]
      [--seconds 10] [--metrics 10] [--calls 200000]

1. log_metrics overhead: the time of one call with a dict of --metrics
   metrics, per call (perf_counter_ns around each call), p50/p90/p99, while
   the background thread uploads to a real server.
2. Sustained throughput: one process logs as fast as it can for --seconds
   and then waits until everything is acked; points/s = points / (logging
   time + time to drain), i.e. what is durable on the server per second.

Starts its own server (fsync on) on a temporary directory unless --addr is
given. Prints one JSON line per measurement.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PKG))
sys.path.insert(0, PKG)
if not os.path.exists(os.path.join(PKG, "stepdb", "v1", "stepdb_pb2.py")):
    os.environ.setdefault("STEPDB_PROTO_DIR", os.path.join(REPO, "build", "python"))
    subprocess.run([sys.executable, os.path.join(PKG, "stepdb", "codegen.py"),
                    "--proto-dir", os.path.join(REPO, "proto"),
                    "--out", os.environ["STEPDB_PROTO_DIR"]], check=True,
                   stdout=subprocess.DEVNULL)

import stepdb  # noqa: E402


def start_server(binary, data):
    p = subprocess.Popen([binary, "--data", data, "--listen", "127.0.0.1:0",
                          "--http", "127.0.0.1:0"], stdout=subprocess.PIPE,
                         text=True)
    for line in p.stdout:
        m = re.search(r"grpc=([\d.:]+)", line)
        if m:
            return p, m.group(1)
    raise RuntimeError("server did not start")


def pct(sorted_ns, q):
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def overhead(addr, queue_dir, n_metrics, calls):
    run = stepdb.init_run("bench", run_id="overhead", addr=addr, labels={},
                          queue_dir=queue_dir, git=False)
    metrics = {f"train/m{i}": 0.0 for i in range(n_metrics)}
    log = run.log_metrics
    pc = time.perf_counter_ns
    lat = [0] * calls
    for step in range(calls):
        metrics["train/m0"] = step * 1e-3
        t0 = pc()
        log(metrics, step=step)
        lat[step] = pc() - t0
        if step % 2000 == 1999:
            time.sleep(0.002)  # a training step takes time too
    ok = run.flush(timeout=300)
    run.close()
    lat.sort()
    return {"bench": "log_metrics_overhead", "metrics_per_call": n_metrics,
            "calls": calls, "p50_us": pct(lat, 0.5), "p90_us": pct(lat, 0.9),
            "p99_us": pct(lat, 0.99), "max_us": lat[-1] / 1000.0,
            "all_acked": ok}


def throughput(addr, queue_dir, n_metrics, seconds):
    run = stepdb.init_run("bench", run_id="throughput", addr=addr, labels={},
                          queue_dir=queue_dir, git=False)
    metrics = {f"train/m{i}": 0.5 for i in range(n_metrics)}
    log = run.log_metrics
    t0 = time.perf_counter()
    step = 0
    end = t0 + seconds
    while True:
        for _ in range(1000):
            log(metrics, step=step)
            step += 1
        if time.perf_counter() >= end:
            break
    t_log = time.perf_counter() - t0
    ok = run.flush(timeout=600)
    t_all = time.perf_counter() - t0
    stats = run.stats
    run.close()
    points = step * n_metrics
    return {"bench": "sustained_throughput", "metrics_per_call": n_metrics,
            "points": points, "log_seconds": round(t_log, 3),
            "durable_seconds": round(t_all, 3),
            "logged_points_per_s": round(points / t_log),
            "durable_points_per_s": round(points / t_all),
            "all_acked": ok, "points_accepted": stats["points_accepted"],
            "batches": stats["batches_acked"]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", default=os.path.join(REPO, "build", "stepdb"))
    p.add_argument("--addr", default=None)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--metrics", type=int, default=10)
    p.add_argument("--calls", type=int, default=200_000)
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="stepdb-pybench-")
    proc = None
    try:
        addr = a.addr
        if addr is None:
            proc, addr = start_server(a.server, os.path.join(tmp, "data"))
        qd = os.path.join(tmp, "queue")
        print(json.dumps(overhead(addr, qd, a.metrics, a.calls)), flush=True)
        print(json.dumps(throughput(addr, qd, a.metrics, a.seconds)), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
