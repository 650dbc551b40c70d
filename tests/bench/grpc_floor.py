"""The floor of a Python gRPC server on this machine: Version round trips to bare
grpcio servers, each in its own process, with the same handler and nothing else, and
the server's CPU per call (its utime + stime over the calls).

    .venv/bin/python tests/bench/grpc_floor.py [--calls 2000] [--rounds 3]
        [--servers sync8,sync1,sync32,aio,interceptor,list100,list100-encoded]

Servers: ``syncN`` the thread-pool server with N workers (peapod's is sync with
``grpc_workers``, 100); ``aio`` grpc.aio on one event loop (GRPC_ENABLE_FORK_SUPPORT=0:
grpc.aio and fork do not mix); ``interceptor`` sync8 with peapod's CallInterceptor
(metrics, logging, error mapping); ``list100`` answers Version-shaped calls with a
ListContainersResponse of 100 containers built from cached items, as peapod did before
it kept replies encoded, and ``list100-encoded`` with those items' wire bytes joined
(``cri.convert.wire``). Rounds alternate the servers. Compare with the "Version (an
empty rpc: the floor)" row of compare.py.
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
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from api import api_pb2 as pb
from api import api_pb2_grpc

REPLY = pb.VersionResponse(version="0.1.0", runtime_name="floor", runtime_version="0",
                           runtime_api_version="v1")
TICKS = os.sysconf("SC_CLK_TCK")
SERVERS = "sync8,sync1,sync32,aio,interceptor,list100,list100-encoded"


def _containers() -> list[pb.Container]:
    labels = {"io.kubernetes.container.name": "c", "io.kubernetes.pod.namespace": "default",
              "io.kubernetes.pod.uid": "u" * 36}
    return [pb.Container(id=f"{n:064x}", pod_sandbox_id=f"{n + 1000:064x}",
                         metadata=pb.ContainerMetadata(name="c"),
                         image=pb.ImageSpec(image="127.0.0.1:5000/busybox:latest"),
                         image_ref="127.0.0.1:5000/busybox@sha256:" + "b" * 64,
                         image_id="sha256:" + "a" * 64, state=pb.CONTAINER_RUNNING,
                         created_at=time.time_ns(),
                         labels={**labels, "io.kubernetes.pod.name": f"pod{n}"},
                         annotations={"io.kubernetes.container.hash": "abcd"})
            for n in range(100)]  # fmt: skip


def _server(kind: str) -> grpc.Server:
    from cri.convert.wire import Encoded, field, serializer

    workers = int(kind[4:]) if kind.startswith("sync") else 8
    interceptors: list[Any] = []
    if kind == "interceptor":
        from cri.interceptor import CallInterceptor
        from cri.metrics import Metrics

        interceptors = [CallInterceptor(Metrics())]
    items = _containers()
    encoded = b"".join(field(1, c.SerializeToString()) for c in items)

    def version(request: Any, context: Any) -> Any:
        if kind == "list100":
            return pb.ListContainersResponse(containers=items)
        if kind == "list100-encoded":
            return Encoded(pb.ListContainersResponse, encoded)
        return REPLY

    reply_type = pb.ListContainersResponse if kind.startswith("list") else pb.VersionResponse
    handler = grpc.unary_unary_rpc_method_handler(
        version, request_deserializer=pb.VersionRequest.FromString,
        response_serializer=serializer(reply_type),
    )  # fmt: skip
    server = grpc.server(futures.ThreadPoolExecutor(workers), interceptors=interceptors)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "runtime.v1.RuntimeService", {"Version": handler}),))  # fmt: skip
    return server


def serve(kind: str, sock: str) -> None:
    if kind != "aio":
        server = _server(kind)
        server.add_insecure_port(f"unix:{sock}")
        server.start()
        server.wait_for_termination()
        return

    class AioVersion(api_pb2_grpc.RuntimeServiceServicer):
        async def Version(self, request: pb.VersionRequest, context: object) -> pb.VersionResponse:
            return REPLY

    async def main() -> None:
        server = grpc.aio.server()
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(AioVersion(), server)
        server.add_insecure_port(f"unix:{sock}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(sock: str, calls: int, pid: int) -> tuple[float, float]:
    """(median round trip, server CPU per call), in ms."""
    with grpc.insecure_channel(f"unix:{sock}") as channel:
        call = channel.unary_unary("/runtime.v1.RuntimeService/Version",
                                   request_serializer=pb.VersionRequest.SerializeToString,
                                   response_deserializer=lambda b: b)  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                call(pb.VersionRequest(), timeout=1)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for _ in range(200):
            call(pb.VersionRequest())
        out = []
        cpu0 = _cpu(pid)
        for _ in range(calls):
            t0 = time.perf_counter()
            call(pb.VersionRequest())
            out.append((time.perf_counter() - t0) * 1000)
        return statistics.median(out), (_cpu(pid) - cpu0) * 1000 / calls


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", default=SERVERS)
    args = parser.parse_args()
    kinds = [k for k in args.servers.split(",") if k]
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="grpc-floor-") as tmp:
        procs = {k: subprocess.Popen([sys.executable, __file__, "--serve", k, f"{tmp}/{k}.sock"])
                 for k in kinds}  # fmt: skip
        try:
            for r in range(args.rounds):
                for k in kinds if r % 2 == 0 else kinds[::-1]:
                    got[k].append(measure(f"{tmp}/{k}.sock", args.calls, procs[k].pid))
        finally:
            for p in procs.values():
                p.kill()
                p.wait()
    print(f"load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds of {args.calls} calls")
    for k, rows in got.items():
        print(f"{k:<16} round trip median {statistics.median(r[0] for r in rows):.3f} ms, "
              f"server CPU {statistics.median(r[1] for r in rows):.3f} ms per call")


if __name__ == "__main__":
    main()
