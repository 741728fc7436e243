"""The on-disk queue of one run's unacknowledged writes (SQLite, WAL mode).

Every batch is written here before it is sent and deleted once the server
acknowledged it as durable, so a network outage, a server restart or a
crashed training process loses nothing: `python3 -m stepdb sync DIR`
uploads what a queue file still holds.

One file per Run object (one writer). The process that owns a file holds an
exclusive flock on it; `sync` skips files that are still locked by a live
process.

Tables:
  meta(key, value)            project, run_id, addr, mode, created_ms
  series(ref, metric, labels) stream-independent series ids (labels as JSON)
  batches(seq, data)          a serialized WriteRequest body: SeriesPoints
                              with `ref` only (no key, no seq)
  ops(id, kind, data)         run metadata calls still to make:
                              'create' CreateRunRequest, 'update' UpdateRunRequest
"""
import fcntl
import json
import os
import sqlite3

SUFFIX = ".stepdbq"


class DiskQueue:
    """Not thread-safe: one thread (the uploader) uses it after creation."""

    def __init__(self, path, create=False, lock=True):
        self.path = path
        self._lock_fd = None
        if lock:
            fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise BlockingIOError(f"{path} is in use by another process")
            self._lock_fd = fd
        if not create and not os.path.exists(path):
            self._unlock()
            raise FileNotFoundError(path)
        self.db = sqlite3.connect(path, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed transaction survives a process crash
        # (the one failure this queue is for); a power loss may lose the
        # last transactions.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript("""
          CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
          CREATE TABLE IF NOT EXISTS series(ref INTEGER PRIMARY KEY,
                                            metric TEXT, labels TEXT);
          CREATE TABLE IF NOT EXISTS batches(seq INTEGER PRIMARY KEY, data BLOB);
          CREATE TABLE IF NOT EXISTS ops(id INTEGER PRIMARY KEY AUTOINCREMENT,
                                         kind TEXT, data BLOB);
        """)

    # ---- meta --------------------------------------------------------------
    def set_meta(self, **kv):
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in kv.items()])

    def meta(self):
        return {k: json.loads(v)
                for k, v in self.db.execute("SELECT key, value FROM meta")}

    # ---- series ------------------------------------------------------------
    def series(self):
        """{ref: (metric, labels dict)}"""
        return {r: (m, json.loads(l)) for r, m, l in
                self.db.execute("SELECT ref, metric, labels FROM series")}

    # ---- batches -----------------------------------------------------------
    def append(self, new_series, seq, data):
        """Stores one batch, and the series it introduces, in one
        transaction. new_series: [(ref, metric, labels dict)]."""
        db = self.db
        db.execute("BEGIN")
        try:
            if new_series:
                db.executemany(
                    "INSERT OR REPLACE INTO series(ref, metric, labels) "
                    "VALUES (?, ?, ?)",
                    [(r, m, json.dumps(l, sort_keys=True))
                     for r, m, l in new_series])
            db.execute("INSERT INTO batches(seq, data) VALUES (?, ?)",
                       (seq, data))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def delete_through(self, seq):
        self.db.execute("DELETE FROM batches WHERE seq <= ?", (seq,))

    def get(self, seq):
        row = self.db.execute("SELECT data FROM batches WHERE seq = ?",
                              (seq,)).fetchone()
        return None if row is None else row[0]

    def seqs_after(self, seq, limit):
        return [r[0] for r in self.db.execute(
            "SELECT seq FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit))]

    def max_seq(self):
        return self.db.execute("SELECT MAX(seq) FROM batches").fetchone()[0] or 0

    def pending_batches(self):
        return self.db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]

    # ---- run metadata ops --------------------------------------------------
    def add_op(self, kind, data):
        cur = self.db.execute("INSERT INTO ops(kind, data) VALUES (?, ?)",
                              (kind, data))
        return cur.lastrowid

    def ops(self):
        return list(self.db.execute(
            "SELECT id, kind, data FROM ops ORDER BY id"))

    def delete_op(self, op_id):
        self.db.execute("DELETE FROM ops WHERE id = ?", (op_id,))

    def pending_ops(self):
        return self.db.execute("SELECT COUNT(*) FROM ops").fetchone()[0]

    # ---- lifetime ----------------------------------------------------------
    def empty(self):
        return self.pending_batches() == 0 and self.pending_ops() == 0

    def _unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self, remove=False):
        """Closes the file; with remove=True deletes it (and its WAL)."""
        if self.db is not None:
            self.db.close()
            self.db = None
        if remove:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(self.path + suffix)
                except FileNotFoundError:
                    pass
            try:
                os.unlink(self.path + ".lock")
            except FileNotFoundError:
                pass
        self._unlock()


def list_queue_files(directory):
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.endswith(SUFFIX))
