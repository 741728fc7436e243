"""Installs the stepdb Python client. The gRPC stubs are generated from
../../proto at build time (never committed); see stepdb/codegen.py."""
import importlib.util
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        # Loaded by path: importing the package would need the stubs.
        spec = importlib.util.spec_from_file_location(
            "stepdb_codegen", os.path.join(HERE, "stepdb", "codegen.py"))
        codegen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(codegen)
        proto_dir = codegen.find_proto_dir(HERE)
        if proto_dir is None:
            raise RuntimeError("stepdb: proto/stepdb/v1/stepdb.proto not found "
                               "above " + HERE)
        codegen.generate(proto_dir, self.build_lib)


setup(
    name="stepdb",
    version="0.1.0",
    description="Python client of stepdb, a metrics store for ML training",
    packages=["stepdb", "stepdb.v1"],
    python_requires=">=3.9",
    install_requires=["grpcio>=1.49", "protobuf>=3.20"],
    extras_require={"numpy": ["numpy"], "pandas": ["pandas"],
                    "plot": ["matplotlib"]},
    cmdclass={"build_py": BuildWithStubs},
)
