"""Generates the gRPC stubs of proto/stepdb/v1/stepdb.proto.

    python3 -m stepdb.codegen --proto-dir PROTO_DIR --out OUT_DIR

writes OUT_DIR/stepdb/v1/stepdb_pb2.py and stepdb_pb2_grpc.py. The package
imports them as ``stepdb.v1.stepdb_pb2``: either they sit in the installed
package (setup.py runs this at build time) or OUT_DIR is named by the
environment variable STEPDB_PROTO_DIR (the tests do that).

Uses ``python3 -m grpc_tools.protoc`` when grpcio-tools is installed, else
``protoc --python_out`` plus ``grpc_python_plugin`` (Debian:
protobuf-compiler, protobuf-compiler-grpc). Deliberately imports nothing
from the rest of the package, so that setup.py can run it on its own.
"""
import argparse
import os
import shutil
import subprocess
import sys

PROTO_REL = os.path.join("stepdb", "v1", "stepdb.proto")


def find_proto_dir(start):
    """The first `proto` directory holding stepdb/v1/stepdb.proto, looking
    in `start`, then upwards (clients/python -> repository root)."""
    d = os.path.abspath(start)
    while True:
        cand = os.path.join(d, "proto")
        if os.path.isfile(os.path.join(cand, PROTO_REL)):
            return cand
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def _protoc_command(proto_dir, out_dir):
    try:
        import grpc_tools  # noqa: F401
        import grpc_tools.protoc  # noqa: F401
        return [sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir,
                "--python_out=" + out_dir, "--grpc_python_out=" + out_dir]
    except ImportError:
        pass
    protoc = shutil.which("protoc")
    plugin = shutil.which("grpc_python_plugin")
    if not protoc or not plugin:
        raise RuntimeError(
            "stepdb: cannot generate the gRPC stubs: install grpcio-tools, or "
            "protoc and grpc_python_plugin (Debian: protobuf-compiler "
            "protobuf-compiler-grpc)")
    return [protoc, "-I", proto_dir, "--python_out=" + out_dir,
            "--grpc_out=" + out_dir, "--plugin=protoc-gen-grpc=" + plugin]


def generate(proto_dir, out_dir):
    """Generates the stubs into out_dir/stepdb/v1/. Skips the work when they
    are newer than the .proto. Returns the directory of the stubs."""
    src = os.path.join(proto_dir, PROTO_REL)
    dest = os.path.join(out_dir, "stepdb", "v1")
    pb2 = os.path.join(dest, "stepdb_pb2.py")
    grpc_pb2 = os.path.join(dest, "stepdb_pb2_grpc.py")
    if (os.path.exists(pb2) and os.path.exists(grpc_pb2)
            and os.path.getmtime(pb2) >= os.path.getmtime(src)
            and os.path.getmtime(grpc_pb2) >= os.path.getmtime(src)):
        return dest
    os.makedirs(dest, exist_ok=True)
    cmd = _protoc_command(proto_dir, out_dir) + [src]
    subprocess.run(cmd, check=True)
    # A namespace-free layout: OUT_DIR/stepdb/v1 is only ever added to the
    # real package's __path__, never imported as a package of its own.
    return dest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proto-dir", default=None,
                   help="directory holding stepdb/v1/stepdb.proto "
                        "(default: found upwards from the current directory)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    proto_dir = a.proto_dir or find_proto_dir(os.getcwd())
    if proto_dir is None:
        p.error("no proto/stepdb/v1/stepdb.proto found; pass --proto-dir")
    print(generate(proto_dir, a.out))


if __name__ == "__main__":
    main()
