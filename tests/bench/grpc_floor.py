"""The floor of a Python gRPC server on this machine: Version round trips to a bare
grpcio server (sync, thread pool) and a bare grpc.aio server, each in its own process,
with the same handler and nothing else: no interceptor, no peapod.

    .venv/bin/python tests/bench/grpc_floor.py [--calls 2000]

Compare with the "Version (an empty rpc: the floor)" row of compare.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from api import api_pb2 as pb
from api import api_pb2_grpc

REPLY = pb.VersionResponse(version="0.1.0", runtime_name="floor", runtime_version="0",
                           runtime_api_version="v1")


class SyncVersion(api_pb2_grpc.RuntimeServiceServicer):
    def Version(self, request: pb.VersionRequest, context: object) -> pb.VersionResponse:
        return REPLY


class AioVersion(api_pb2_grpc.RuntimeServiceServicer):
    async def Version(self, request: pb.VersionRequest, context: object) -> pb.VersionResponse:
        return REPLY


def serve(kind: str, sock: str) -> None:
    if kind == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(8))
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(SyncVersion(), server)
        server.add_insecure_port(f"unix:{sock}")
        server.start()
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server()
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(AioVersion(), server)
        server.add_insecure_port(f"unix:{sock}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def measure(sock: str, calls: int) -> list[float]:
    with grpc.insecure_channel(f"unix:{sock}") as channel:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        deadline = time.monotonic() + 10
        while True:
            try:
                stub.Version(pb.VersionRequest(), timeout=1)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for _ in range(200):
            stub.Version(pb.VersionRequest())
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            stub.Version(pb.VersionRequest())
            out.append((time.perf_counter() - t0) * 1000)
        return out


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grpc-floor-") as tmp:
        for kind in ("sync", "aio"):
            sock = f"{tmp}/{kind}.sock"
            proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, sock])
            try:
                got = sorted(measure(sock, args.calls))
            finally:
                proc.kill()
                proc.wait()
            print(f"bare grpcio {kind:<4} server, Version round trip: median "
                  f"{statistics.median(got):.3f} ms, p90 {got[int(0.9 * len(got))]:.3f} ms")


if __name__ == "__main__":
    main()
