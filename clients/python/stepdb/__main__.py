"""python3 -m stepdb sync DIR [--addr HOST:PORT] [--timeout S]

Uploads what offline runs (mode="offline") and crashed training processes
left in a queue directory (default of init_run: $STEPDB_QUEUE_DIR, else
~/.cache/stepdb/queue). Each file is deleted once all its points are
durable on the server; files of processes still running are skipped.
Exit status 0 if every file was uploaded, 1 otherwise.
"""
import argparse
import logging
import sys

from .run import default_queue_dir
from .sync import sync


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m stepdb")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sync", help="upload queued runs")
    s.add_argument("dir", nargs="?", default=None,
                   help="queue directory (default: %s)" % default_queue_dir())
    s.add_argument("--addr", default=None,
                   help="server address (default: the one each run used)")
    s.add_argument("--timeout", type=float, default=300.0,
                   help="seconds per queue file (default 300)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    results = sync(a.dir or default_queue_dir(), addr=a.addr,
                   timeout=a.timeout)
    ok = True
    for path, (batches, status) in results.items():
        print(f"{status:8} {batches:8d} batches  {path}")
        ok = ok and status in ("done", "busy")
    if not results:
        print("nothing to sync")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
