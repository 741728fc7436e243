"""The generated wire stubs: stepdb_pb2 and stepdb_pb2_grpc.

They are never committed. An installed package has them here (setup.py
generates them at build time). Otherwise they are looked up in
$STEPDB_PROTO_DIR/stepdb/v1 (the tests generate them into the build
directory), and, when running from a source checkout, generated once into
~/.cache/stepdb/stubs/<hash of the .proto>.
"""
import os as _os

_here = _os.path.dirname(_os.path.abspath(__file__))


def _extend_path():
    if _os.path.exists(_os.path.join(_here, "stepdb_pb2.py")):
        return
    extra = _os.environ.get("STEPDB_PROTO_DIR")
    if extra:
        d = _os.path.join(extra, "stepdb", "v1")
        if _os.path.exists(_os.path.join(d, "stepdb_pb2.py")):
            __path__.append(d)  # noqa: F821 (package __path__)
            return
    # A source checkout: clients/python/stepdb/v1 -> <repo>/proto.
    from .. import codegen
    proto_dir = codegen.find_proto_dir(_here)
    if proto_dir is None:
        return  # the import of stepdb_pb2 fails with a clear ImportError
    import hashlib
    with open(_os.path.join(proto_dir, codegen.PROTO_REL), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = _os.environ.get("XDG_CACHE_HOME") or _os.path.join(
        _os.path.expanduser("~"), ".cache")
    out = _os.path.join(cache, "stepdb", "stubs", digest)
    __path__.append(codegen.generate(proto_dir, out))  # noqa: F821


_extend_path()
