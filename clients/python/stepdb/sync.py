"""Uploads the queue files that offline or crashed runs left behind."""
import logging
import os
import time

from ._queue import DiskQueue, list_queue_files
from ._uploader import Uploader

log = logging.getLogger("stepdb")


def sync_file(path, addr=None, timeout=300.0):
    """Uploads one queue file and deletes it once everything in it is
    durable on the server. Returns (batches uploaded, 'done' | 'busy' |
    'timeout'). A file still locked by a live process is left alone."""
    try:
        dq = DiskQueue(path)
    except BlockingIOError:
        return 0, "busy"
    try:
        meta = dq.meta()
        addr = addr or meta.get("addr")
        total = dq.pending_batches()
        up = Uploader(dq, addr, meta["project"], meta["run_id"])
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                up.pump()
                if up.idle():
                    break
                up.wake.wait(0.05)
                up.wake.clear()
            done = up.idle()
        finally:
            up.close()
        if done:
            dq.close(remove=True)
            return total, "done"
        return total - dq.pending_batches(), "timeout"
    finally:
        if dq.db is not None:
            dq.close()


def sync(directory, addr=None, timeout=300.0):
    """Uploads every queue file (*.stepdbq) in `directory`. addr overrides
    the address each run logged to. Returns {path: (batches, status)}."""
    results = {}
    if not os.path.isdir(directory):
        raise FileNotFoundError(directory)
    for path in list_queue_files(directory):
        results[path] = sync_file(path, addr=addr, timeout=timeout)
    return results
