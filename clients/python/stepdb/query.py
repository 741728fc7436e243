"""Reads: Client.read (Query.ReadRange), read_downsampled, list_series,
list_runs, get_run. Results are plain lists, numpy arrays when numpy is
installed, or a pandas DataFrame on request (format="pandas")."""
import collections
import math

import grpc

from ._pb import pb, pb_grpc

try:  # optional
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None


def _b(s):
    return s if isinstance(s, bytes) else str(s).encode()


def _s(b):
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def series_key(project, run, metric, labels=None):
    k = pb.SeriesKey(project=_b(project), run=_b(run), metric=_b(metric))
    for lk, lv in (labels or {}).items():
        k.labels[str(lk)] = _b(lv)
    return k


def _step_msg(step):
    whole = math.floor(step)
    micros = round((step - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, 0
    return pb.Step(whole=int(whole), micros=int(micros))


def _step_value(whole, micros):
    return whole if not micros else whole + micros / 1e6


def step_range(steps):
    """(from, to) with None for an open end -> StepRange."""
    r = pb.StepRange()
    if steps is not None:
        lo, hi = steps
        if lo is not None:
            getattr(r, "from").CopyFrom(_step_msg(lo))
        if hi is not None:
            r.to.CopyFrom(_step_msg(hi))
    return r


def time_range(time_ms):
    r = pb.TimeRange()
    if time_ms is not None:
        lo, hi = time_ms
        if lo is not None:
            r.from_ms = int(lo)
        if hi is not None:
            r.to_ms = int(hi)
    return r


Points = collections.namedtuple("Points", "steps times_ms values truncated")
Points.__doc__ = """The points of one series in step order. steps are ints
(floats where a step has a fractional part), times_ms ints (Unix ms),
values floats (NaN and +-Inf as stored). truncated: `limit` cut it short."""


def _matcher(text):
    """"k=v", "k!=v", "k=~re" or "k!~re" as a LabelMatcher."""
    for op, kind in (("!~", pb.LabelMatcher.NOT_REGEX),
                     ("=~", pb.LabelMatcher.REGEX),
                     ("!=", pb.LabelMatcher.NOT_EQUAL),
                     ("=", pb.LabelMatcher.EQUAL)):
        key, sep, value = text.partition(op)
        if sep and key:
            return pb.LabelMatcher(key=key, value=value, op=kind)
    raise ValueError("matcher %r: expected k=v, k!=v, k=~re or k!~re" % text)


def _pick_format(fmt):
    if fmt == "auto":
        return "numpy" if _np is not None else "list"
    if fmt not in ("list", "numpy", "pandas"):
        raise ValueError("format must be auto, list, numpy or pandas")
    return fmt


class Client:
    """A connection to a stepdb server for reads (and run listing)."""

    def __init__(self, addr="127.0.0.1:7390", timeout=60.0, channel=None):
        self.addr = addr
        self.timeout = timeout
        self._own = channel is None
        self.channel = channel or grpc.insecure_channel(addr, options=[
            ("grpc.max_receive_message_length", 64 << 20)])
        self.query = pb_grpc.QueryStub(self.channel)
        self.ingest = pb_grpc.IngestStub(self.channel)
        self._aggregate = getattr(self.query, "Aggregate", None)

    def close(self):
        if self._own:
            self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read(self, project, run, metric, labels=None, steps=None, time_ms=None,
             limit=0, format="auto"):
        """One series' raw points (Query.ReadRange). steps=(from, to) and
        time_ms=(from, to) are inclusive ranges, None for an open end.
        format: "auto" (numpy if installed, else lists), "list", "numpy",
        "pandas" (a DataFrame indexed by step). NOT_FOUND (grpc.RpcError)
        for an unknown series."""
        fmt = _pick_format(format)
        req = pb.ReadRangeRequest(series=series_key(project, run, metric, labels),
                                  limit=limit)
        if steps is not None:
            req.steps.CopyFrom(step_range(steps))
        if time_ms is not None:
            req.time.CopyFrom(time_range(time_ms))
        whole, micros, times, values = [], [], [], []
        truncated = False
        for page in self.query.ReadRange(req, timeout=self.timeout):
            n = len(page.values)
            whole.extend(page.steps)
            if page.step_micros:
                micros.extend(page.step_micros)
            else:
                micros.extend([0] * n)
            times.extend(page.times_ms)
            values.extend(page.values)
            truncated = truncated or page.truncated
        fractional = any(micros)
        if fmt == "list":
            steps_out = [_step_value(w, m) for w, m in zip(whole, micros)] \
                if fractional else whole
            return Points(steps_out, times, values, truncated)
        if _np is None:
            raise RuntimeError("numpy is not installed")
        if fractional:
            steps_arr = _np.asarray(whole, dtype=_np.float64) + \
                _np.asarray(micros, dtype=_np.float64) / 1e6
        else:
            steps_arr = _np.asarray(whole, dtype=_np.int64)
        pts = Points(steps_arr, _np.asarray(times, dtype=_np.int64),
                     _np.asarray(values, dtype=_np.float64), truncated)
        if fmt == "numpy":
            return pts
        import pandas as pd
        return pd.DataFrame({"time_ms": pts.times_ms, "value": pts.values},
                            index=pd.Index(pts.steps, name="step"))

    def read_downsampled(self, project, run, metric, labels=None, buckets=1000,
                         steps=None, time_ms=None, format="list"):
        """A chart read (Query.ReadDownsampled): at most `buckets` buckets of
        the series over `steps` or `time_ms` (one of them; neither: by step
        over the whole series). Returns a list of dicts with start/end
        (steps, or ms on a time read), first, last, min, max (None if the
        bucket has no finite value), sum, count, nan_count, pos_inf_count,
        neg_inf_count; format="pandas" returns a DataFrame of the same."""
        req = pb.ReadDownsampledRequest(
            series=series_key(project, run, metric, labels), buckets=buckets)
        if time_ms is not None:
            req.time.CopyFrom(time_range(time_ms))
        elif steps is not None:
            req.steps.CopyFrom(step_range(steps))
        resp = self.query.ReadDownsampled(req, timeout=self.timeout)
        out = []
        for b in resp.buckets:
            if b.HasField("start_ms"):
                start, end = b.start_ms, b.end_ms
            else:
                start = _step_value(b.start_step.whole, b.start_step.micros)
                end = _step_value(b.end_step.whole, b.end_step.micros)
            out.append({
                "start": start, "end": end, "first": b.first, "last": b.last,
                "min": b.min if b.HasField("min") else None,
                "max": b.max if b.HasField("max") else None,
                "sum": b.sum, "count": b.count, "nan_count": b.nan_count,
                "pos_inf_count": b.pos_inf_count,
                "neg_inf_count": b.neg_inf_count})
        if format == "pandas":
            import pandas as pd
            return pd.DataFrame(out)
        return out

    def aggregate(self, project, metric, fn="mean", runs=None, matchers=None,
                  group_by=None, buckets=1000, steps=None, time_ms=None,
                  format="list"):
        """A cross-series read (Query.Aggregate): the series of `metric` in
        `runs` (None: every run of the project) matching `matchers`
        ("k=v", "k!=v", "k=~re", "k!~re"), grouped by the label keys in
        `group_by` ("run" groups by run: a compare-runs chart), reduced per
        bucket with `fn` (mean, min, max, sum, count, last, p50, p90, p99).
        Returns [{"labels": {...}, "series_count": n, "buckets": [{start,
        end, value (None if no series had a finite value), series,
        nan_count, pos_inf_count, neg_inf_count}]}]; format="pandas"
        returns one DataFrame with a column per group_by key."""
        req = pb.AggregateRequest(
            project=project, metric=metric, runs=list(runs or []),
            group_by=list(group_by or []), buckets=buckets,
            fn=pb.AggregateRequest.Fn.Value(fn.upper()))
        for m in matchers or []:
            req.matchers.append(_matcher(m))
        if time_ms is not None:
            req.time.CopyFrom(time_range(time_ms))
        elif steps is not None:
            req.steps.CopyFrom(step_range(steps))
        resp = self.query.Aggregate(req, timeout=self.timeout)
        groups = []
        for g in resp.groups:
            out = []
            for b in g.buckets:
                if b.HasField("start_ms"):
                    start, end = b.start_ms, b.end_ms
                else:
                    start = _step_value(b.start_step.whole, b.start_step.micros)
                    end = _step_value(b.end_step.whole, b.end_step.micros)
                out.append({
                    "start": start, "end": end,
                    "value": b.value if b.HasField("value") else None,
                    "series": b.series, "nan_count": b.nan_count,
                    "pos_inf_count": b.pos_inf_count,
                    "neg_inf_count": b.neg_inf_count})
            groups.append({"labels": dict(g.labels),
                           "series_count": g.series_count, "buckets": out})
        if format == "pandas":
            import pandas as pd
            return pd.DataFrame([dict(g["labels"], **b) for g in groups
                                 for b in g["buckets"]])
        return groups

    def list_series(self, project, run="", metric="", labels=None, limit=0):
        """[{project, run, metric, labels, points, first_step, last_step,
        last_time_ms, last_value}] (Query.ListSeries)."""
        req = pb.ListSeriesRequest(project=project, run=run, metric=metric,
                                   limit=limit)
        for k, v in (labels or {}).items():
            req.labels.add(key=k, value=v)
        resp = self.query.ListSeries(req, timeout=self.timeout)
        return [{
            "project": _s(s.key.project), "run": _s(s.key.run),
            "metric": _s(s.key.metric),
            "labels": {k: _s(v) for k, v in s.key.labels.items()},
            "points": s.points,
            "first_step": _step_value(s.first_step.whole, s.first_step.micros),
            "last_step": _step_value(s.last_step.whole, s.last_step.micros),
            "last_time_ms": s.last_time_ms, "last_value": s.last_value,
        } for s in resp.series]

    def list_runs(self, project, tags=None, states=None, filters=None,
                  sort_by="", descending=False, limit=0):
        """[run dict] (Query.ListRuns); see run_to_dict. filters are strings
        such as "lr < 1e-3" or 'model = "resnet50"'."""
        from .run import _STATES
        req = pb.ListRunsRequest(
            project=_b(project), tags=tags or [],
            states=[_STATES[s] if isinstance(s, str) else s
                    for s in (states or [])],
            filters=filters or [], sort_by=sort_by, descending=descending,
            limit=limit)
        resp = self.query.ListRuns(req, timeout=self.timeout)
        return [run_to_dict(r) for r in resp.runs]

    def get_run(self, project, run_id):
        """(run dict, [series dict]) (Query.GetRun); NOT_FOUND for an
        unknown run."""
        resp = self.query.GetRun(pb.GetRunRequest(project=_b(project),
                                                  run_id=_b(run_id)),
                                 timeout=self.timeout)
        series = [{
            "metric": _s(s.key.metric),
            "labels": {k: _s(v) for k, v in s.key.labels.items()},
            "points": s.points,
            "first_step": _step_value(s.first_step.whole, s.first_step.micros),
            "last_step": _step_value(s.last_step.whole, s.last_step.micros),
            "last_value": s.last_value,
            "min": s.min if s.HasField("min") else None,
            "max": s.max if s.HasField("max") else None,
        } for s in resp.series]
        return run_to_dict(resp.run), series


def param_to_python(pv):
    kind = pv.WhichOneof("kind")
    return None if kind is None else getattr(pv, kind)


def run_to_dict(r):
    """A Run message as {project, run_id, params, tags, commit_sha,
    data_version, description, state, created_ms, updated_ms, fork}."""
    state = pb.RunState.Name(r.state).replace("RUN_STATE_", "").lower()
    fork = None
    if r.HasField("fork"):
        fork = {"parent_run": _s(r.fork.parent_run),
                "step": _step_value(r.fork.step.whole, r.fork.step.micros)}
    return {
        "project": _s(r.project), "run_id": _s(r.run_id),
        "params": {k: param_to_python(v) for k, v in r.params.items()},
        "tags": list(r.tags), "commit_sha": r.commit_sha,
        "data_version": r.data_version, "description": r.description,
        "state": state, "created_ms": r.created_ms, "updated_ms": r.updated_ms,
        "fork": fork,
    }
