"""Generate Python, gRPC and mypy stubs for protos/ into an output directory.

protoc comes from grpcio-tools and the stub generators from mypy-protobuf, both pinned in
uv.lock, so the output is the same on every machine and `make lint` can compare it byte for byte.
"""

import os
import sys
from importlib import resources

from grpc_tools import protoc  # type: ignore[import-untyped]


def main(argv: list[str]) -> int:
    """Run protoc over the given .proto files, writing everything under argv[0]."""
    out, files = argv[0], argv[1:]
    os.makedirs(out, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    bin_dir = os.path.dirname(sys.executable)
    args = [
        "protoc",
        "-Iprotos",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={bin_dir}/protoc-gen-mypy",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir}/protoc-gen-mypy_grpc",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *files,
    ]
    status: int = protoc.main(args)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
