"""The generated messages and stubs (see stepdb/v1/__init__.py)."""
try:
    from .v1 import stepdb_pb2 as pb
    from .v1 import stepdb_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover
    raise ImportError(
        "stepdb: the gRPC stubs are missing: install the package with pip "
        "(it generates them), or set STEPDB_PROTO_DIR to a directory made by "
        "`python3 -m stepdb.codegen --out DIR`: " + str(e)) from e

__all__ = ["pb", "pb_grpc"]
