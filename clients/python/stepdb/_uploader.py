"""Uploads a DiskQueue to a server: the bidi Ingest.Write stream with
stream-local series refs, acks by durable_seq, reconnects with backoff, and
the queued run metadata calls (CreateRun, UpdateRun).

Used by one thread at a time: the Run's background thread, or `stepdb sync`.
A batch is deleted from the disk queue only once an ack's durable_seq
covers it; after any stream error every batch still in the queue is sent
again on a new stream (the server drops points that repeat an existing
(step, value), so a resend after a lost ack stores nothing twice).
"""
import collections
import logging
import queue
import random
import threading
import time

import grpc

from ._pb import pb

log = logging.getLogger("stepdb")

# Stream errors worth logging loudly (the rest are the network or load).
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
              grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL,
              grpc.StatusCode.UNKNOWN}


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _series_field(elem):
    """One `repeated SeriesPoints series = 2` element on the wire."""
    return b"\x12" + _varint(len(elem)) + elem


def make_channel(addr):
    return grpc.insecure_channel(addr, options=[
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
        # Reconnect quickly after a server restart.
        # (gRPC's defaults wait 1-20 s before trying again.)
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.keepalive_time_ms", 30000),
    ])


class Stats:
    __slots__ = ("batches_sent", "batches_acked", "points_accepted",
                 "points_duplicate", "points_rejected", "reconnects",
                 "last_error")

    def __init__(self):
        self.batches_sent = self.batches_acked = 0
        self.points_accepted = self.points_duplicate = 0
        self.points_rejected = self.reconnects = 0
        self.last_error = None

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class Uploader:
    def __init__(self, dq, addr, project, run_id, channel=None, window=32,
                 max_backoff=5.0, wake=None, cache_bytes=64 << 20):
        self.dq = dq
        self.addr = addr
        self.project = project.encode() if isinstance(project, str) else project
        self.run_id = run_id.encode() if isinstance(run_id, str) else run_id
        self._own_channel = channel is None
        self.channel = channel or make_channel(addr)
        self._write = self.channel.stream_stream(
            "/stepdb.v1.Ingest/Write", request_serializer=None,
            response_deserializer=pb.WriteAck.FromString)
        self._create_run = self.channel.unary_unary(
            "/stepdb.v1.Ingest/CreateRun",
            request_serializer=None,
            response_deserializer=pb.CreateRunResponse.FromString)
        self._update_run = self.channel.unary_unary(
            "/stepdb.v1.Ingest/UpdateRun",
            request_serializer=None,
            response_deserializer=pb.Run.FromString)
        self.window = window
        self.max_backoff = max_backoff
        self.wake = wake or threading.Event()
        self.stats = Stats()
        # series ref -> serialized SeriesPoints{key, ref} (registration).
        self._reg = {}
        for ref, (metric, labels) in dq.series().items():
            self.add_series(ref, metric, labels)
        # seq -> (data, refs) of batches not yet acked (bounded by bytes).
        self._cache = {}
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self.acked = 0  # every seq <= acked is durable (or dropped)
        self._unsent = collections.deque(dq.seqs_after(0, 1 << 62))
        self._sent = collections.deque()
        self._call = None
        self._req_q = None
        self._events = None  # SimpleQueue of acks / errors from the reader
        self._registered = set()
        self._backoff = 0.0
        self._retry_at = 0.0
        self._warned_unimplemented = False
        self._warned = 0
        self.run_created = None  # CreateRunResponse once the call succeeded

    # ---- input -------------------------------------------------------------
    def add_series(self, ref, metric, labels):
        key = pb.SeriesKey(project=self.project, run=self.run_id,
                           metric=metric.encode())
        for k, v in labels.items():
            key.labels[k] = v.encode()
        self._reg[ref] = _series_field(
            pb.SeriesPoints(key=key, ref=ref).SerializeToString())

    def add_batch(self, seq, data, refs):
        """A batch already stored in the disk queue, to be sent."""
        if self._cache_bytes + len(data) <= self._cache_limit:
            self._cache[seq] = (data, refs)
            self._cache_bytes += len(data)
        self._unsent.append(seq)

    def idle(self):
        """True when nothing is waiting to be sent or acked."""
        return not self._unsent and not self._sent and self.dq.pending_ops() == 0

    # ---- the pump ----------------------------------------------------------
    def pump(self):
        """Does whatever can be done now without blocking long: takes acks,
        (re)opens the stream after its backoff, makes the queued run calls,
        sends batches up to the window. Returns True if connected."""
        self._drain_events()
        if self._call is None:
            if time.monotonic() < self._retry_at:
                return False
            if not self._run_ops():
                return False
            if not self._unsent and not self._sent:
                return True  # nothing to write: no stream needed
            self._open()
        elif self.dq.pending_ops() and not self._run_ops():
            return True
        while self._unsent and len(self._sent) < self.window:
            seq = self._unsent.popleft()
            item = self._cache.get(seq)
            if item is None:
                data = self.dq.get(seq)
                if data is None:
                    continue  # acked meanwhile
                item = (data, {s.ref for s in pb.WriteRequest.FromString(
                    data).series})
            data, refs = item
            reg = [self._reg[r] for r in refs if r not in self._registered]
            if reg:
                self._registered.update(refs)
                msg = b"\x08" + _varint(seq) + b"".join(reg) + data
            else:
                msg = b"\x08" + _varint(seq) + data
            self._sent.append(seq)
            self._req_q.put(msg)
            self.stats.batches_sent += 1
        return True

    def _open(self):
        self._req_q = queue.SimpleQueue()
        self._events = queue.SimpleQueue()
        self._registered = set()
        req_q, events, wake = self._req_q, self._events, self.wake

        def requests():
            while True:
                m = req_q.get()
                if m is None:
                    return
                yield m

        # wait_for_ready: while the server is down the stream waits for it
        # (batches stay queued in the disk queue) instead of failing fast.
        call = self._write(requests(), wait_for_ready=True)
        self._call = call

        def reader():
            try:
                for ack in call:
                    events.put(ack)
                    wake.set()
                events.put(None)  # stream ended cleanly
            except grpc.RpcError as e:
                events.put(e)
            wake.set()

        threading.Thread(target=reader, name="stepdb-acks", daemon=True).start()

    def _drain_events(self):
        ev = self._events
        if ev is None:
            return
        while True:
            try:
                item = ev.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, pb.WriteAck):
                self._on_ack(item)
            else:
                self._on_stream_end(item)
                return

    def _on_ack(self, ack):
        st = self.stats
        st.points_accepted += ack.points_accepted
        st.points_duplicate += ack.points_duplicate
        st.points_rejected += ack.points_rejected
        if ack.error_code:
            # The whole request was malformed: resending cannot help.
            self._warn("write seq %d refused (code %d): %s", ack.seq,
                       ack.error_code, ack.error_message)
        for r in ack.rejections:
            self._warn("%d point(s) of %s rejected (code %d): %s",
                       r.points_rejected, r.series, r.code, r.message)
        d = ack.durable_seq
        if d > self.acked:
            while self._sent and self._sent[0] <= d:
                seq = self._sent.popleft()
                item = self._cache.pop(seq, None)
                if item is not None:
                    self._cache_bytes -= len(item[0])
                st.batches_acked += 1
            self.acked = d
            self.dq.delete_through(d)
        self._backoff = 0.0

    def _on_stream_end(self, err):
        self._call = None
        self._events = None
        if self._req_q is not None:
            self._req_q.put(None)
            self._req_q = None
        if self._sent or self._unsent:
            # Everything not acked goes again, in seq order, on a new stream.
            self._unsent = collections.deque(
                sorted(set(self._sent) | set(self._unsent)))
            self._sent.clear()
        if err is None:
            return
        code = err.code()
        self.stats.reconnects += 1
        self.stats.last_error = f"{code.name}: {err.details()}"
        self._schedule_retry()
        msg = "write stream to %s ended with %s: %s; retrying in %.2fs"
        args = (self.addr, code.name, err.details(), self._backoff)
        if code in _TRANSIENT:
            log.info(msg, *args)
        else:
            log.warning(msg, *args)

    def _schedule_retry(self):
        self._backoff = min(self.max_backoff, max(0.05, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff * (
            0.5 + random.random() / 2)

    def _warn(self, fmt, *args):
        self._warned += 1
        if self._warned <= 20:
            log.warning(fmt, *args)
        elif self._warned == 21:
            log.warning("stepdb: further rejections are not logged")

    # ---- run metadata ------------------------------------------------------
    def call_op(self, kind, data, timeout):
        """Makes one run call. Returns 'done', 'retry' (the server could not
        be reached) or raises grpc.RpcError for an error to report."""
        fn = self._create_run if kind == "create" else self._update_run
        try:
            resp = fn(data, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED):
                return "retry"
            if code == grpc.StatusCode.UNIMPLEMENTED:
                if not self._warned_unimplemented:
                    self._warned_unimplemented = True
                    log.warning("stepdb: server %s does not implement run "
                                "metadata (%s); params, tags and state are "
                                "not stored, metrics are", self.addr,
                                e.details())
                return "done"
            raise
        if kind == "create":
            self.run_created = resp
        return "done"

    def _run_ops(self):
        """Makes the queued run calls in order. False if the server is not
        reachable (retry scheduled)."""
        for op_id, kind, data in self.dq.ops():
            try:
                r = self.call_op(kind, data, timeout=10)
            except grpc.RpcError as e:
                log.error("stepdb: %s run %s/%s failed: %s: %s", kind,
                          self.project.decode(errors="replace"),
                          self.run_id.decode(errors="replace"),
                          e.code().name, e.details())
                r = "done"  # a retry cannot succeed
            if r == "retry":
                self._schedule_retry()
                return False
            self.dq.delete_op(op_id)
        return True

    def close_stream(self, timeout=5.0):
        """Half-closes the stream and waits for its end."""
        if self._req_q is not None:
            self._req_q.put(None)
        deadline = time.monotonic() + timeout
        while self._call is not None and time.monotonic() < deadline:
            self.wake.wait(0.05)
            self.wake.clear()
            self._drain_events()
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def close(self):
        self.close_stream()
        if self._own_channel:
            self.channel.close()
