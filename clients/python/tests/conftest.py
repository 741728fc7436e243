"""Fixtures: the real `stepdb` server on a free loopback port.

STEPDB_BIN names the server binary (default <repo>/build/stepdb).
STEPDB_PROTO_DIR is where the gRPC stubs are generated (default
<repo>/build/python); they are generated here, before stepdb is imported.
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PKG))
sys.path.insert(0, PKG)
os.environ.setdefault("STEPDB_PROTO_DIR", os.path.join(REPO, "build", "python"))
subprocess.run([sys.executable, os.path.join(PKG, "stepdb", "codegen.py"),
                "--proto-dir", os.path.join(REPO, "proto"),
                "--out", os.environ["STEPDB_PROTO_DIR"]],
               check=True, stdout=subprocess.DEVNULL)

STEPDB_BIN = os.environ.get("STEPDB_BIN", os.path.join(REPO, "build", "stepdb"))
READY = re.compile(r"stepdb ready: grpc=([\d.]+):(\d+)")


class Server:
    def __init__(self, data_dir, flags=()):
        self.data_dir = data_dir
        self.flags = list(flags)
        self.port = 0
        self.proc = None

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        """Starts the server (on the same port as before, after a restart)."""
        if not os.path.exists(STEPDB_BIN):
            pytest.skip(f"no server binary at {STEPDB_BIN} (set STEPDB_BIN)")
        cmd = [STEPDB_BIN, "--data", self.data_dir, "--listen",
               f"127.0.0.1:{self.port}", "--http", "127.0.0.1:0"] + self.flags
        for attempt in range(50):
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True)
            for line in self.proc.stdout:
                m = READY.search(line)
                if m:
                    self.port = int(m.group(2))
                    return self
            self.proc.wait()
            time.sleep(0.1)  # the old port may still be held: retry
        raise RuntimeError("stepdb did not start: " + " ".join(cmd))

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None

    def stop(self):
        self.kill(signal.SIGTERM)


@pytest.fixture
def server(tmp_path):
    s = Server(str(tmp_path / "data")).start()
    yield s
    s.kill()


@pytest.fixture
def queue_dir(tmp_path):
    d = tmp_path / "queue"
    d.mkdir()
    return str(d)
