"""Regenerate the committed gRPC stubs from proto/: ``python -m embedserve.proto_gen``.

Needs grpcio-tools (the ``dev`` extra). The stubs are committed so that serving
needs no code generation at install time.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "embedserve/v1/embedserve.proto"


def main() -> int:
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        f"-I{ROOT / 'proto'}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        str(ROOT / "proto" / PROTO),
    ]
    return protoc.main(args)


if __name__ == "__main__":
    sys.exit(main())
