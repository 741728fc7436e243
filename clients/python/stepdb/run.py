"""Runs: init_run, fork_run and the Run object that logs metrics."""
import array
import atexit
import collections
import datetime
import logging
import math
import numbers
import os
import socket
import subprocess
import sys
import threading
import time as _time
import uuid
import weakref

import grpc

from ._pb import pb
from ._queue import SUFFIX, DiskQueue
from ._uploader import Uploader, _varint, make_channel
from .query import Client, _b

log = logging.getLogger("stepdb")

DEFAULT_ADDR = "127.0.0.1:7390"
_MAX_BATCH_POINTS = 50_000
_MAX_BATCH_SERIES = 10_000


def default_queue_dir():
    d = os.environ.get("STEPDB_QUEUE_DIR")
    if d:
        return d
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "stepdb", "queue")


def default_labels():
    """Labels a rank of a distributed job gets when init_run is not given
    `labels`: `rank` and `local_rank` from $RANK and $LOCAL_RANK (torchrun,
    DeepSpeed, Slurm wrappers set them) and `node` = the host name. A
    process with neither variable set (a single-process job) gets none, so
    its series are the plain, unlabelled ones."""
    labels = {}
    for env, key in (("RANK", "rank"), ("LOCAL_RANK", "local_rank")):
        v = os.environ.get(env)
        if v is not None and v != "":
            labels[key] = v
    if labels:
        labels["node"] = socket.gethostname()
    return labels


def _git_info():
    """(commit sha, dirty) of the working directory's git checkout, or
    (None, None)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if sha.returncode != 0:
            return None, None
        st = subprocess.run(["git", "status", "--porcelain",
                             "--untracked-files=no"], capture_output=True,
                            text=True, timeout=10)
        return sha.stdout.strip(), (st.returncode == 0 and bool(st.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        return None, None


def _new_run_id():
    return datetime.datetime.now().strftime("run-%Y%m%d-%H%M%S-") + \
        uuid.uuid4().hex[:6]


def param_value(v):
    """A Python value as a ParamValue (bool, int, float, str; anything else,
    and numpy scalars, by its float or str)."""
    pv = pb.ParamValue()
    if isinstance(v, bool):
        pv.bool_value = v
    elif isinstance(v, numbers.Integral):
        pv.int_value = int(v)
    elif isinstance(v, numbers.Real):
        pv.float_value = float(v)
    elif hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return param_value(v.item())  # numpy scalars
    else:
        pv.string_value = str(v)
    return pv


_FAST_NUMBERS = (float, int, bool)


def _step_parts(step):
    """(whole, micros) of a non-negative step with at most 6 decimals."""
    if type(step) is int:
        whole, micros = step, 0
    else:
        if isinstance(step, numbers.Integral):
            whole, micros = int(step), 0
        else:
            f = float(step)
            if not math.isfinite(f):
                raise ValueError(f"step {step!r} is not finite")
            whole = math.floor(f)
            micros = round((f - whole) * 1e6)
            if micros >= 1_000_000:
                whole, micros = whole + 1, 0
    if whole < 0:
        raise ValueError(f"step {step!r} is negative")
    return whole, micros


_live_runs = weakref.WeakSet()


@atexit.register
def _close_live_runs():
    for run in list(_live_runs):
        try:
            run.close(timeout=run.exit_timeout)
        except Exception:  # pragma: no cover
            log.exception("stepdb: closing run at exit")


class Run:
    """One training process's handle on a run. Create it with init_run()
    or fork_run(). Thread-safe: several threads may log to one Run."""

    def __init__(self, project, run_id=None, params=None, tags=None,
                 addr=None, labels=None, mode="online", queue_dir=None,
                 commit_sha=None, description=None, data_version=None,
                 fork=None, git=True, flush_interval=0.05,
                 init_timeout=10.0, close_timeout=60.0, exit_timeout=10.0):
        if mode not in ("online", "offline"):
            raise ValueError("mode must be 'online' or 'offline'")
        if not project:
            raise ValueError("project is required")
        self.project = project
        self.run_id = run_id or os.environ.get("STEPDB_RUN_ID") or _new_run_id()
        self.addr = addr or os.environ.get("STEPDB_ADDR") or DEFAULT_ADDR
        self.mode = mode
        self.labels = dict(default_labels() if labels is None else labels)
        self.labels = {str(k): str(v) for k, v in self.labels.items()}
        self.params = dict(params or {})
        self.tags = sorted(set(tags or []))
        self.commit_sha = commit_sha
        self.git_dirty = None
        if commit_sha is None and git:
            self.commit_sha, self.git_dirty = _git_info()
            if self.git_dirty is not None:
                self.params.setdefault("git.dirty", self.git_dirty)
        self.fork = fork
        self.description = description
        self.data_version = data_version
        self.close_timeout = close_timeout
        self.exit_timeout = exit_timeout
        self.flush_interval = flush_interval
        self.queue_dir = queue_dir or default_queue_dir()
        os.makedirs(self.queue_dir, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_"
                       for c in f"{project}__{self.run_id}")[:150]
        self.queue_path = os.path.join(
            self.queue_dir,
            f"{safe}__{os.getpid()}_{uuid.uuid4().hex[:8]}{SUFFIX}")
        self.created = None  # True/False from the server, None: unknown
        self.server_run = None  # the server's Run after CreateRun

        # ---- the hot path's state: only deque appends and plain fields.
        self._q = collections.deque()
        self._append = self._q.append
        self._last_step = -1
        # Last step logged per metric (and per extra labels): log_metrics
        # refuses a step going backwards.
        self._series_steps = {}
        self._series_steps_labeled = {}
        self._closed = False

        self._dq = DiskQueue(self.queue_path, create=True)
        self._dq.set_meta(project=project, run_id=self.run_id, addr=self.addr,
                          mode=mode, labels=self.labels,
                          created_ms=int(_time.time() * 1000))
        create = pb.CreateRunRequest(run=self._run_message())
        op_id = self._dq.add_op("create", create.SerializeToString())

        self._channel = None
        self._uploader = None
        self._offline_wake = threading.Event()
        self._client = None
        if mode == "online":
            self._channel = make_channel(self.addr)
            self._wake = threading.Event()
            self._uploader = Uploader(self._dq, self.addr, project,
                                      self.run_id, channel=self._channel,
                                      wake=self._wake)
            self._create_now(op_id, create, init_timeout)
        # Sender state (the background thread only).
        self._refs = {}  # labels None: metric -> ref
        self._refs_labeled = {}  # (metric, labels tuple) -> ref
        self._next_ref = max(self._dq.series(), default=0) + 1
        self._next_seq = self._dq.max_seq() + 1
        self._flushes = []  # [(event, wait_acked, seq)]
        self._dropped = 0
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="stepdb-sender",
                                        daemon=True)
        self._thread.start()
        _live_runs.add(self)

    def _run_message(self):
        r = pb.Run(project=_b(self.project), run_id=_b(self.run_id),
                   tags=self.tags, state=pb.RUN_STATE_RUNNING)
        for k, v in self.params.items():
            r.params[k].CopyFrom(param_value(v))
        if self.commit_sha:
            r.commit_sha = self.commit_sha
        if self.description:
            r.description = self.description
        if self.data_version:
            r.data_version = self.data_version
        if self.fork is not None:
            parent, (whole, micros) = self.fork
            r.fork.parent_run = _b(parent)
            r.fork.step.whole = whole
            r.fork.step.micros = micros
        return r

    def _create_now(self, op_id, create, timeout):
        """CreateRun at once, so that a bad request fails init_run. A server
        that cannot be reached does not block logging: the call stays queued
        and the background thread makes it later."""
        try:
            r = self._uploader.call_op("create", create.SerializeToString(),
                                       timeout=timeout)
        except grpc.RpcError as e:
            self._dq.close(remove=True)
            raise RunError(f"CreateRun {self.project}/{self.run_id}: "
                           f"{e.code().name}: {e.details()}") from e
        if r == "done":
            self._dq.delete_op(op_id)
            resp = self._uploader.run_created
            if resp is not None:
                self.created = resp.created
                self.server_run = resp.run
        else:
            log.warning("stepdb: server %s not reachable; logging to %s and "
                        "uploading in the background", self.addr,
                        self.queue_path)

    # ---- logging (the hot path) -------------------------------------------
    def log_metrics(self, metrics, step=None, time=None, labels=None):
        """Queues one point per metric at `step` and returns at once.

        metrics: {name: value}; values are Python ints, floats, bools or
        numpy scalars (anything float() accepts), NaN and +-Inf included.
        step: a non-negative number with at most 6 decimals; None means the
        previous step + 1 (0 first). time: Unix seconds (as time.time()),
        default now. labels: extra labels for these points, merged over the
        run's.
        """
        if self._closed:
            raise RunError("log_metrics on a closed run")
        if step is None:
            step = self._last_step + 1
        elif type(step) is not int or step < 0:
            _step_parts(step)  # ValueError/TypeError for a bad step
        # Checked here, at the call, so that a bad value or a step going
        # backwards is the caller's exception, not a silent drop later; the
        # whole call is refused. Per series: other metrics or labels may be
        # at lower steps.
        last = (self._series_steps if labels is None else
                self._series_steps_labeled.setdefault(
                    tuple(sorted(labels.items())), {}))
        for name, value in metrics.items():
            if type(value) not in _FAST_NUMBERS and \
                    not isinstance(value, numbers.Real):
                raise TypeError(f"metric {name!r}: {value!r} is not a number")
            prev = last.get(name)
            if prev is not None and step < prev:
                raise ValueError(f"metric {name!r}: step {step!r} goes "
                                 f"backwards (already logged step {prev!r})")
        last.update(dict.fromkeys(metrics, step))
        self._last_step = step
        self._append((step, _time.time() if time is None else time,
                      metrics.copy(), labels))

    log = log_metrics

    def log_params(self, params):
        """Sets hyperparameters (merged into the run's)."""
        self.params.update(params)
        u = pb.UpdateRunRequest(project=_b(self.project), run_id=_b(self.run_id))
        for k, v in params.items():
            u.set_params[k].CopyFrom(param_value(v))
        self._op("update", u)

    def add_tags(self, *tags):
        """add_tags("a", "b") or add_tags(["a", "b"])."""
        if len(tags) == 1 and not isinstance(tags[0], str):
            tags = tuple(tags[0])
        self.tags = sorted(set(self.tags) | set(tags))
        self._op("update", pb.UpdateRunRequest(
            project=_b(self.project), run_id=_b(self.run_id), add_tags=tags))

    def remove_tags(self, *tags):
        if len(tags) == 1 and not isinstance(tags[0], str):
            tags = tuple(tags[0])
        self.tags = sorted(set(self.tags) - set(tags))
        self._op("update", pb.UpdateRunRequest(
            project=_b(self.project), run_id=_b(self.run_id), remove_tags=tags))

    def set_state(self, state):
        """'running', 'finished', 'failed' or 'aborted'."""
        self._op("update", pb.UpdateRunRequest(
            project=_b(self.project), run_id=_b(self.run_id),
            state=_STATES[state]))

    def _op(self, kind, msg):
        if self._closed:
            raise RunError("run is closed")
        self._append(("op", kind, msg.SerializeToString()))

    def flush(self, timeout=None, acked=True):
        """Blocks until everything logged so far is stored in the local
        queue and, with acked=True in online mode, durable on the server.
        Returns False on timeout."""
        ev = threading.Event()
        self._append(("flush", ev, acked and self.mode == "online"))
        self._wake_sender()
        return ev.wait(timeout)

    def _wake_sender(self):
        if self._uploader is not None:
            self._uploader.wake.set()
        else:
            self._offline_wake.set()

    def close(self, timeout=None, state="finished"):
        """Marks the run finished, uploads what is queued (waiting up to
        `timeout` seconds, default close_timeout) and stops the background
        thread. What could not be uploaded stays in the queue file:
        `python3 -m stepdb sync QUEUE_DIR` uploads it later. Idempotent."""
        if self._closed:
            return
        if state:
            self.set_state(state)
        self._closed = True
        _live_runs.discard(self)
        timeout = self.close_timeout if timeout is None else timeout
        done = self.flush(timeout=timeout)
        self._stop = True
        self._wake_sender()
        self._thread.join()
        left = self._dq.pending_batches()
        if self.mode == "online" and done and self._dq.empty():
            self._dq.close(remove=True)
        else:
            self._dq.close()
            if self.mode == "online":
                log.warning("stepdb: %d batch(es) of run %s/%s not uploaded; "
                            "they are in %s: run `python3 -m stepdb sync %s`",
                            left, self.project, self.run_id, self.queue_path,
                            self.queue_dir)
        if self._uploader is not None:
            self._uploader.close()
        if self._client is not None:
            self._client.close()
        if self._channel is not None:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(state="finished" if exc_type is None else
                   ("aborted" if issubclass(exc_type, KeyboardInterrupt)
                    else "failed"))
        return False

    @property
    def stats(self):
        """Upload counters (batches sent/acked, points accepted/duplicate/
        rejected, reconnects, last error)."""
        d = self._uploader.stats.as_dict() if self._uploader else {}
        d["points_dropped_invalid"] = self._dropped
        d["queued_batches"] = len(self._q)
        return d

    # ---- reads -------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = Client(self.addr)
        return self._client

    def read(self, metric, labels=None, **kw):
        """This run's series `metric` (labels: default the run's). See
        Client.read."""
        return self.client.read(self.project, self.run_id, metric,
                                self.labels if labels is None else labels, **kw)

    def read_downsampled(self, metric, labels=None, **kw):
        return self.client.read_downsampled(
            self.project, self.run_id, metric,
            self.labels if labels is None else labels, **kw)

    def get(self):
        """The server's view of the run: (Run, [RunSeries]). See Client.get_run."""
        return self.client.get_run(self.project, self.run_id)

    # ---- the background thread ---------------------------------------------
    def _loop(self):
        up = self._uploader
        wake = up.wake if up is not None else self._offline_wake
        try:
            while True:
                stop = self._stop
                self._drain()
                if up is not None:
                    try:
                        up.pump()
                    except Exception:  # never kill the thread
                        log.exception("stepdb: upload error")
                        up._schedule_retry()
                    self._check_flushes()
                if stop:
                    break
                wake.wait(self.flush_interval)
                wake.clear()
        finally:
            if up is not None:
                up.close_stream()
            for ev, _, _ in self._flushes:
                ev.set()  # nobody waits forever on a closed run

    def _check_flushes(self):
        if not self._flushes:
            return
        up = self._uploader
        keep = []
        ops_done = self._dq.pending_ops() == 0
        for item in self._flushes:
            ev, _, seq = item
            if up.acked >= seq and ops_done:
                ev.set()
            else:
                keep.append(item)
        self._flushes = keep

    def _drain(self):
        """Turns what log_metrics queued into batches in the disk queue."""
        q = self._q
        popleft = q.popleft
        while q:
            # Rows of calls with the same metric names and labels, kept
            # together so that each column is transposed at C speed.
            groups = {}
            order = 0
            npoints = 0
            flushes = []
            while q and npoints < _MAX_BATCH_POINTS and \
                    len(groups) < _MAX_BATCH_SERIES:
                item = popleft()
                if len(item) == 4:
                    step, t, metrics, labels = item
                    if type(step) is int and step >= 0:
                        whole, micros = step, 0
                    else:
                        try:
                            whole, micros = _step_parts(step)
                        except (TypeError, ValueError) as e:
                            self._dropped += len(metrics)
                            log.warning("stepdb: points dropped: %s", e)
                            continue
                    gkey = (tuple(metrics), None if labels is None else
                            tuple(sorted((str(k), str(v))
                                         for k, v in labels.items())))
                    g = groups.get(gkey)
                    if g is None:
                        g = groups[gkey] = ([], [], [], [], [])
                    g[0].append(whole)
                    g[1].append(micros)
                    g[2].append(int(t * 1000))
                    g[3].append(tuple(metrics.values()))
                    g[4].append(order)
                    order += 1
                    npoints += len(metrics)
                    continue
                if item[0] == "op":
                    if groups:
                        self._store(groups)
                        groups = {}
                    self._dq.add_op(item[1], item[2])
                elif item[0] == "flush":
                    flushes.append(item)
                    break
            if groups:
                self._store(groups)
            for _, ev, acked in flushes:
                if acked:
                    self._flushes.append((ev, True, self._next_seq - 1))
                else:
                    ev.set()
            if flushes and self._uploader is not None:
                self._check_flushes()

    def _columns(self, groups, new_series):
        """{ref: (order, steps, micros, times, values)} of the groups."""
        cols = {}
        for (names, lkey), (whole, micros, times, rows, order) in groups.items():
            if lkey is None:
                refs = [self._refs.get(n) or self._new_ref(n, None, new_series)
                        for n in names]
            else:
                refs = [self._refs_labeled.get((n, lkey)) or
                        self._new_ref(n, lkey, new_series) for n in names]
            for ref, name, column in zip(refs, names, zip(*rows)):
                try:
                    values = list(map(float, column))
                    c = (order, whole, micros, times, values)
                except (TypeError, ValueError):
                    c = self._filter_bad(name, column, order, whole, micros,
                                         times)
                old = cols.get(ref)
                cols[ref] = c if old is None else _merge(old, c)
        return cols

    def _filter_bad(self, name, column, order, whole, micros, times):
        keep = ([], [], [], [], [])
        for i, v in enumerate(column):
            try:
                f = float(v)
            except (TypeError, ValueError):
                self._dropped += 1
                if self._dropped <= 10:
                    log.warning("stepdb: %s = %r is not a number; dropped",
                                name, v)
                continue
            for k, src in enumerate((order, whole, micros, times)):
                keep[k].append(src[i])
            keep[4].append(f)
        return keep

    def _new_ref(self, name, lkey, new_series):
        ref = self._next_ref
        self._next_ref += 1
        labels = dict(self.labels)
        if lkey is None:
            self._refs[name] = ref
        else:
            labels.update(lkey)
            self._refs_labeled[(name, lkey)] = ref
        new_series.append((ref, str(name), labels))
        if self._uploader is not None:
            self._uploader.add_series(ref, str(name), labels)
        return ref

    def _store(self, groups):
        new_series = []
        cols = self._columns(groups, new_series)
        parts = []
        refs = []
        for ref, (_, steps, micros, times, values) in cols.items():
            if not values:
                continue
            refs.append(ref)
            sp = pb.SeriesPoints(ref=ref, steps=steps, times_ms=times)
            if any(micros):
                sp.step_micros.extend(micros)
            # The packed doubles are appended raw (field 6): array's copy
            # is ~10x faster than the protobuf container's extend.
            raw = array.array("d", values)
            if sys.byteorder != "little":  # pragma: no cover
                raw.byteswap()
            raw = raw.tobytes()
            elem = sp.SerializeToString() + b"\x32" + _varint(len(raw)) + raw
            parts.append(b"\x12" + _varint(len(elem)) + elem)
        data = b"".join(parts)
        seq = self._next_seq
        self._next_seq += 1
        self._dq.append(new_series, seq, data)
        if self._uploader is not None:
            self._uploader.add_batch(seq, data, refs)


def _merge(a, b):
    """Two column sets of one series, merged back into call order."""
    rows = sorted(list(zip(*a)) + list(zip(*b)), key=lambda r: r[0])
    return tuple(list(col) for col in zip(*rows))


_STATES = {"running": pb.RUN_STATE_RUNNING, "finished": pb.RUN_STATE_FINISHED,
           "failed": pb.RUN_STATE_FAILED, "aborted": pb.RUN_STATE_ABORTED}


class RunError(RuntimeError):
    pass


def init_run(project, run_id=None, params=None, tags=None, addr=None,
             labels=None, mode="online", queue_dir=None, **kw):
    """Starts (or resumes) a run and returns its Run.

    project: e.g. "team/llm". run_id: default $STEPDB_RUN_ID, else generated
    (give every rank of a job the same one). params: hyperparameters (bool,
    int, float, str). tags: strings. addr: default $STEPDB_ADDR, else
    127.0.0.1:7390. labels: added to every series of this Run; None means
    default_labels() (rank, local_rank, node for a rank of a distributed
    job). mode: "online" uploads in the background; "offline" only writes
    the local queue (upload it later with `python3 -m stepdb sync`).
    queue_dir: default $STEPDB_QUEUE_DIR, else ~/.cache/stepdb/queue.
    Keyword options: commit_sha (default: git rev-parse HEAD of the working
    directory; a dirty tree adds the param git.dirty=True), description,
    git=False, flush_interval (s), init_timeout, close_timeout (s).
    """
    return Run(project, run_id=run_id, params=params, tags=tags, addr=addr,
               labels=labels, mode=mode, queue_dir=queue_dir, **kw)


def fork_run(parent, step, run_id=None, project=None, **kw):
    """Starts a run forked from `parent` (a Run or a run id) at `step`:
    reads of the new run's series return the parent's points up to and
    including `step`, then the new run's own. Other arguments as init_run;
    the parent's params, tags and labels are inherited unless given."""
    if isinstance(parent, Run):
        project = project or parent.project
        kw.setdefault("addr", parent.addr)
        kw.setdefault("labels", parent.labels)
        kw.setdefault("params", dict(parent.params))
        kw.setdefault("tags", list(parent.tags))
        kw.setdefault("mode", parent.mode)
        kw.setdefault("queue_dir", parent.queue_dir)
        parent_id = parent.run_id
    else:
        parent_id = parent
    if project is None:
        raise ValueError("project is required when parent is a run id")
    return Run(project, run_id=run_id, fork=(parent_id, _step_parts(step)), **kw)
