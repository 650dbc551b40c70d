"""Benchmark: pull and unpack a ~100 MB multi-layer image from a loopback registry.

Run as root from the repository root:
    .venv/bin/python tests/bench/bench_pull.py [--mb 100] [--runs 3]
Prints wall time per pull (PullImage through peapod's socket, image absent) and per removal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.daemon import Peapod, registries_conf_text
from support.images import big_image, push
from support.registry import Registry

from api import api_pb2 as pb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=100, help="image size in MiB")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    print(f"building a {args.mb} MiB image in {args.layers} layers ...", flush=True)
    image = big_image(total_mb=args.mb, layers=args.layers, seed=1234)
    with Registry() as registry:
        pushed = push(registry.host, "bench/big", "v1", image)
        daemon = Peapod(registries_conf=registries_conf_text([registry.host]))
        try:
            daemon.start()
            pulls, removes = [], []
            for _ in range(args.runs):
                start = time.perf_counter()
                ref = daemon.images.PullImage(
                    pb.PullImageRequest(image=pb.ImageSpec(image=pushed.ref)), timeout=600
                ).image_ref
                pulls.append(time.perf_counter() - start)
                start = time.perf_counter()
                daemon.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)))
                removes.append(time.perf_counter() - start)
        finally:
            daemon.cleanup()
    size_mb = image.size / 2**20
    print(f"image: {size_mb:.1f} MiB compressed, {len(image.layers)} layers")
    print(f"pull+unpack: median {statistics.median(pulls):.2f} s  "
          f"min {min(pulls):.2f} s  max {max(pulls):.2f} s  "
          f"({size_mb / statistics.median(pulls):.0f} MiB/s)  runs={args.runs}")
    print(f"remove:      median {statistics.median(removes) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
