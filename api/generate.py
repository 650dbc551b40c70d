"""Regenerate the Python stubs of api/api.proto (CRI), api/nri.proto and api/ttrpc.proto.

Usage, from anywhere::

    python -m api.generate          # rewrite api/api_pb2*.py* in place
    python -m api.generate --check  # exit 1 and list stubs that are stale

The stubs are produced by grpc_tools' bundled protoc with the repository root
as the include path, so the generated code imports ``from api import api_pb2``.
The NRI and ttrpc protos get message stubs only: their calls travel over ttrpc
(``nri/ttrpc.py``), not gRPC.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO = "api/api.proto"
MESSAGE_PROTOS = ("api/nri.proto", "api/ttrpc.proto")  # no gRPC service stubs
STUBS = (
    "api/api_pb2.py", "api/api_pb2.pyi", "api/api_pb2_grpc.py",
    "api/nri_pb2.py", "api/nri_pb2.pyi", "api/ttrpc_pb2.py", "api/ttrpc_pb2.pyi",
)


def generate(out_dir: Path) -> None:
    """Run protoc on the protos, writing every stub of STUBS under out_dir/api/."""
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    common = ["grpc_tools.protoc", f"-I{REPO_ROOT}", f"-I{well_known}",
              f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
    runs = [[*common, f"--grpc_python_out={out_dir}", str(REPO_ROOT / PROTO)],
            [*common, *(str(REPO_ROOT / p) for p in MESSAGE_PROTOS)]]
    for args in runs:
        rc = protoc.main(args)
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc}")


def stale_stubs() -> list[str]:
    """Return the committed stub paths whose content differs from a fresh generation."""
    with tempfile.TemporaryDirectory(prefix="peapod-api-") as tmp:
        generate(Path(tmp))
        stale = []
        for rel in STUBS:
            fresh = (Path(tmp) / rel).read_bytes()
            current = REPO_ROOT / rel
            if not current.exists() or current.read_bytes() != fresh:
                stale.append(rel)
        return stale


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if any committed stub differs from a fresh build",
    )
    opts = parser.parse_args(argv)
    if opts.check:
        stale = stale_stubs()
        for rel in stale:
            print(f"stale: {rel}", file=sys.stderr)
        return 1 if stale else 0
    generate(REPO_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
