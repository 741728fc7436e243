"""End-to-end tests of the Python client against the real server."""
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import pytest

import stepdb
from conftest import PKG

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


def bits(x):
    return struct.pack("<d", x)


def dead_addr():
    """A loopback address nobody listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


def read_list(run_or_client, *args, **kw):
    return run_or_client.read(*args, format="list", **kw)


def test_round_trip_bit_exact(server, queue_dir):
    special = [0.1, -0.0, float("nan"), float("inf"), float("-inf"), 5e-324,
               1.7976931348623157e308, 3, True, -12345678901]
    if np is not None:
        special += [np.float32(0.1), np.float64(2.5), np.int64(7)]
    with stepdb.init_run("team/llm", run_id="rt", addr=server.addr,
                         labels={}, queue_dir=queue_dir, git=False) as run:
        for i, v in enumerate(special):
            run.log_metrics({"train/loss": v, "train/lr": 1e-4 * i}, step=i,
                            time=1700000000 + i)
        run.log_metrics({"frac": 1.0}, step=0.5)
        run.log_metrics({"frac": 2.0}, step=1.000001)
        run.log_metrics({"frac": 3.0}, step=2)
    assert os.listdir(queue_dir) == []  # everything acked: queue removed
    pts = read_list(stepdb.Client(server.addr), "team/llm", "rt", "train/loss")
    assert pts.steps == list(range(len(special)))
    assert pts.times_ms == [1700000000000 + 1000 * i for i in range(len(special))]
    assert [bits(v) for v in pts.values] == [bits(float(v)) for v in special]
    assert math.isnan(pts.values[2])
    frac = read_list(stepdb.Client(server.addr), "team/llm", "rt", "frac")
    assert frac.steps == [0.5, 1.000001, 2]
    assert frac.values == [1.0, 2.0, 3.0]
    if np is not None:
        arr = run.read("train/lr")
        assert arr.values.dtype == np.float64 and len(arr.values) == len(special)


def test_labels_steps_and_bad_values(server, queue_dir, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    labels = stepdb.default_labels()
    assert labels == {"rank": "3", "local_rank": "1",
                      "node": socket.gethostname()}
    run = stepdb.init_run("p", run_id="lbl", addr=server.addr,
                          queue_dir=queue_dir, git=False)
    assert run.labels == labels
    for _ in range(3):
        run.log_metrics({"loss": 1.0})  # steps 0, 1, 2
    # Bad input is the caller's exception, and nothing of the call is kept.
    with pytest.raises(TypeError, match="'bad'.*not a number"):
        run.log_metrics({"loss": 2.0, "bad": "not a number"})
    with pytest.raises(ValueError, match="'loss'.*backwards"):
        run.log_metrics({"loss": 2.0}, step=1)
    with pytest.raises(ValueError):
        run.log_metrics({"loss": 2.0}, step=-1)
    run.log_metrics({"util": 97}, step=2, labels={"gpu": "0"})
    run.log_metrics({"util": 95}, step=2, labels={"gpu": "1"})
    run.log_metrics({"util": 90}, step=1, labels={"gpu": "2"})  # another series
    run.close()
    assert run.stats["points_dropped_invalid"] == 0
    assert read_list(run, "loss").steps == [0, 1, 2]
    assert read_list(run, "util", labels=dict(labels, gpu="1")).values == [95.0]
    names = {(s["metric"], s["labels"].get("gpu"))
             for s in stepdb.Client(server.addr).list_series("p", run="lbl")}
    assert names == {("loss", None), ("util", "0"), ("util", "1"), ("util", "2")}
    with pytest.raises(stepdb.RunError):
        run.log_metrics({"loss": 1.0})


def test_log_metrics_never_blocks(server, queue_dir):
    """With the server frozen (SIGSTOP) log_metrics still returns at once;
    once it resumes every point arrives."""
    run = stepdb.init_run("p", run_id="nb", addr=server.addr, labels={},
                          queue_dir=queue_dir, git=False)
    run.log_metrics({"x": 0.0}, step=0)
    assert run.flush(timeout=30)
    server.proc.send_signal(signal.SIGSTOP)
    try:
        worst = 0.0
        for step in range(1, 20001):
            t0 = time.perf_counter()
            run.log_metrics({"x": float(step), "y": -step}, step=step)
            worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.3)  # the sender has batched and sent into the void
        # A call that waited for the frozen server would never return; the
        # bound leaves room for GIL hand-offs on a loaded CI machine.
        assert worst < 0.5, f"log_metrics blocked for {worst:.3f}s"
    finally:
        server.proc.send_signal(signal.SIGCONT)
    run.close(timeout=60)
    assert read_list(run, "x").steps == list(range(20001))
    assert read_list(run, "y").values == [-float(s) for s in range(1, 20001)]


def test_server_killed_and_restarted(server, queue_dir):
    """SIGKILL the server mid-run and start it again on the same port: no
    point is lost and none is stored twice."""
    run = stepdb.init_run("p", run_id="kill", addr=server.addr, labels={},
                          queue_dir=queue_dir, git=False, flush_interval=0.01)
    n = 3000
    for step in range(n):
        run.log_metrics({"loss": 1.0 / (step + 1), "acc": step * 1e-3},
                        step=step)
        if step % 100 == 0:
            time.sleep(0.05)  # 3000 steps in ~1.5 s, ~0.5 s of it down
        if step == 1000:
            server.kill(signal.SIGKILL)
        if step == 2000:
            server.start()
    assert run.flush(timeout=60)
    assert run.stats["reconnects"] >= 1
    run.close()
    for metric, fn in (("loss", lambda s: 1.0 / (s + 1)),
                       ("acc", lambda s: s * 1e-3)):
        pts = read_list(run, metric)
        assert pts.steps == list(range(n))  # no gap, no duplicate
        assert pts.values == [fn(s) for s in range(n)]
    # and once more after a clean restart: still exactly n
    server.stop()
    server.start()
    assert len(read_list(stepdb.Client(server.addr), "p", "kill", "loss").steps) == n


def test_offline_then_sync(server, queue_dir):
    run = stepdb.init_run("p", run_id="off", mode="offline", labels={},
                          addr=server.addr, queue_dir=queue_dir, git=False,
                          params={"lr": 0.1})
    for step in range(500):
        run.log_metrics({"loss": float(step)}, step=step)
    run.close()
    assert len(os.listdir(queue_dir)) >= 1
    with pytest.raises(grpc.RpcError) as e:
        read_list(stepdb.Client(server.addr), "p", "off", "loss")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    out = subprocess.run([sys.executable, "-m", "stepdb", "sync", queue_dir],
                         cwd=PKG, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done" in out.stdout
    pts = read_list(stepdb.Client(server.addr), "p", "off", "loss")
    assert pts.steps == list(range(500))
    assert not [f for f in os.listdir(queue_dir) if f.endswith(".stepdbq")]


CRASH = textwrap.dedent("""
    import os, sys
    import stepdb
    addr, queue_dir = sys.argv[1], sys.argv[2]
    run = stepdb.init_run("p", run_id="crash", addr=addr, labels={},
                          queue_dir=queue_dir, git=False, init_timeout=2)
    for step in range(1000):
        run.log_metrics({"loss": step * 0.5, "nan": float("nan")}, step=step)
    assert run.flush(acked=False, timeout=30)   # on disk, not yet uploaded
    os._exit(3)                                  # no close(), no atexit
""")


def test_crashed_process_leaves_queue_that_sync_uploads(server, queue_dir):
    # The crashing process cannot reach its server: nothing is acked.
    p = subprocess.run([sys.executable, "-c", CRASH, dead_addr(), queue_dir],
                       cwd=PKG, env=dict(os.environ), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 3, p.stderr
    assert any(f.endswith(".stepdbq") for f in os.listdir(queue_dir))
    results = stepdb.sync(queue_dir, addr=server.addr, timeout=60)
    assert [st for _, st in results.values()] == ["done"]
    pts = read_list(stepdb.Client(server.addr), "p", "crash", "loss")
    assert pts.steps == list(range(1000))
    assert pts.values == [s * 0.5 for s in range(1000)]
    nan = read_list(stepdb.Client(server.addr), "p", "crash", "nan")
    assert all(math.isnan(v) for v in nan.values) and len(nan.values) == 1000
    # Syncing again finds nothing and stores nothing twice.
    assert stepdb.sync(queue_dir, addr=server.addr) == {}


def test_threads_as_ranks_and_downsampled(server, queue_dir):
    def rank(r):
        with stepdb.init_run("p", run_id="ranks", addr=server.addr,
                             labels={"rank": str(r)}, queue_dir=queue_dir,
                             git=False) as run:
            for step in range(1000):
                run.log_metrics({"gpu/util": 50 + r, "train/loss": 1.0 / (step + 1)},
                                step=step)
    ts = [threading.Thread(target=rank, args=(r,)) for r in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    c = stepdb.Client(server.addr)
    series = c.list_series("p", run="ranks", metric="gpu/util")
    assert sorted(s["labels"]["rank"] for s in series) == ["0", "1", "2", "3"]
    assert all(s["points"] == 1000 for s in series)
    buckets = c.read_downsampled("p", "ranks", "train/loss", {"rank": "2"},
                                 buckets=10)
    assert len(buckets) <= 10
    assert sum(b["count"] for b in buckets) == 1000
    assert buckets[0]["first"] == 1.0 and buckets[0]["max"] == 1.0
    # Across the ranks: utilisation 50 + rank, so the mean is 51.5 and the
    # max of ranks 1 and 2 (matched by regex) is 52.
    groups = c.aggregate("p", "gpu/util", fn="mean", runs=["ranks"], buckets=4)
    assert len(groups) == 1 and groups[0]["series_count"] == 4
    assert all(b["value"] == 51.5 and b["series"] == 4
               for b in groups[0]["buckets"])
    per_rank = c.aggregate("p", "gpu/util", fn="max", matchers=["rank=~1|2"],
                           group_by=["rank"], buckets=1)
    assert [g["labels"] for g in per_rank] == [{"rank": "1"}, {"rank": "2"}]
    assert [g["buckets"][0]["value"] for g in per_rank] == [51.0, 52.0]
    with pytest.raises(ValueError):
        c.aggregate("p", "gpu/util", matchers=["=x"])


def test_unreachable_server_does_not_block_init(queue_dir):
    t0 = time.monotonic()
    run = stepdb.init_run("p", run_id="down", addr=dead_addr(), labels={},
                          queue_dir=queue_dir, git=False, init_timeout=2)
    run.log_metrics({"x": 1.0}, step=0)
    run.close(timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert any(f.endswith(".stepdbq") for f in os.listdir(queue_dir))


# ---- run metadata ---------------------------------------------------------

def test_run_metadata(server, queue_dir, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], check=True)
    (repo / "f").write_text("1")
    subprocess.run(git + ["add", "f"], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    sha = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    (repo / "f").write_text("2")  # dirty
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        run = stepdb.init_run("team/llm", run_id="meta", addr=server.addr,
                              labels={}, queue_dir=queue_dir,
                              params={"lr": 3e-4, "layers": 12, "opt": "adam",
                                      "warmup": True},
                              tags=["baseline", "a"])
    finally:
        os.chdir(cwd)
    assert run.created is True
    assert run.commit_sha == sha and run.git_dirty is True
    run.log_metrics({"loss": 2.0}, step=1)
    run.log_params({"lr": 1e-4, "batch": 256})
    run.add_tags("best")
    run.close()
    c = stepdb.Client(server.addr)
    info, series = c.get_run("team/llm", "meta")
    assert info["params"] == {"lr": 1e-4, "layers": 12, "opt": "adam",
                              "warmup": True, "batch": 256, "git.dirty": True}
    assert info["tags"] == ["a", "baseline", "best"]
    assert info["commit_sha"] == sha
    assert info["state"] == "finished"
    assert [s["metric"] for s in series] == ["loss"]
    runs = c.list_runs("team/llm", filters=["lr < 2e-4"], tags=["best"])
    assert [r["run_id"] for r in runs] == ["meta"]
    # init_run again resumes the same run: not created, params merged.
    again = stepdb.init_run("team/llm", run_id="meta", addr=server.addr,
                            labels={}, queue_dir=queue_dir, git=False,
                            params={"resumed": 1})
    assert again.created is False
    again.close(state="failed")
    info, _ = c.get_run("team/llm", "meta")
    assert info["params"]["resumed"] == 1 and info["state"] == "failed"


def test_context_manager_marks_failure(server, queue_dir):
    with pytest.raises(ZeroDivisionError):
        with stepdb.init_run("p", run_id="boom", addr=server.addr, labels={},
                             queue_dir=queue_dir, git=False) as run:
            run.log_metrics({"loss": 1.0}, step=0)
            1 / 0
    info, _ = stepdb.Client(server.addr).get_run("p", "boom")
    assert info["state"] == "failed"


def test_fork_run(server, queue_dir):
    parent = stepdb.init_run("p", run_id="parent", addr=server.addr, labels={},
                             queue_dir=queue_dir, git=False, params={"lr": 0.1})
    for step in range(10):
        parent.log_metrics({"loss": float(10 - step)}, step=step)
    parent.close()
    child = stepdb.fork_run(parent, step=5, run_id="child",
                            params={"lr": 0.01})
    for step in range(6, 12):
        child.log_metrics({"loss": 100.0 + step}, step=step)
    child.close()
    pts = read_list(child, "loss")
    assert pts.steps == list(range(12))
    assert pts.values == [float(10 - s) for s in range(6)] + \
        [100.0 + s for s in range(6, 12)]
    info, _ = stepdb.Client(server.addr).get_run("p", "child")
    assert info["fork"] == {"parent_run": "parent", "step": 5}
    assert info["params"]["lr"] == 0.01
    with pytest.raises(stepdb.RunError):  # the parent must exist
        stepdb.fork_run("nope", step=1, project="p", run_id="orphan",
                        addr=server.addr, queue_dir=queue_dir, git=False)


def test_examples(server, tmp_path):
    env = dict(os.environ, STEPDB_QUEUE_DIR=str(tmp_path / "q"))
    ex = os.path.join(PKG, "examples")
    t = subprocess.run([sys.executable, os.path.join(ex, "train.py"), "--addr",
                        server.addr, "--run", "ex", "--ranks", "2", "--steps",
                        "120", "--nan-at", "60"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert t.returncode == 0, t.stderr
    png = str(tmp_path / "run.png")
    p = subprocess.run([sys.executable, os.path.join(ex, "plot.py"), "--addr",
                        server.addr, "--run", "ex", "--out", png], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "train/loss" in p.stdout and "points=120" in p.stdout
    assert os.path.exists(png) or "matplotlib is not installed" in p.stdout
    loss = stepdb.Client(server.addr).read(
        "demo/llm", "ex", "train/loss",
        {"rank": "0", "node": "node0", "gpu": "0"}, format="list")
    assert math.isnan(loss.values[60]) and len(loss.values) == 120


def test_resource_exhausted_is_retried(tmp_path, queue_dir):
    """A server over its memory budget ends streams with RESOURCE_EXHAUSTED;
    the client backs off and resends until everything is stored once."""
    from conftest import Server
    srv = Server(str(tmp_path / "data"), flags=["--memory_limit_mb", "2"]).start()
    try:
        run = stepdb.init_run("p", run_id="re", addr=srv.addr, labels={},
                              queue_dir=queue_dir, git=False)
        m = {f"m{i}": 0.5 for i in range(100)}
        for step in range(3000):
            m["m0"] = step
            run.log_metrics(m, step=step)
        assert run.flush(timeout=120)
        stats = run.stats
        run.close()
        assert stats["points_accepted"] == 300_000
        assert stats["points_rejected"] == 0
        pts = read_list(run, "m0")
        assert pts.steps == list(range(3000))
        assert pts.values == [float(s) for s in range(3000)]
    finally:
        srv.kill()
