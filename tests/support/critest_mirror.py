"""Serve critest's stand-in images to a running peapod, for running critest by hand.

    PYTHONPATH=tests .venv/bin/python -m support.critest_mirror [--dropin FILE]

Starts a loopback docker-registry, pushes the stand-ins (support.critest_images) and
writes a registries.conf drop-in (default
/etc/containers/registries.conf.d/90-critest-mirror.conf) that mirrors registry.k8s.io,
k8s.gcr.io and gcr.io to it; peapod reads it at its next pull. Ctrl-C (or SIGTERM)
removes the drop-in and stops the registry.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from .critest_images import push_critest_images
from .registry import Registry

DROPIN = Path("/etc/containers/registries.conf.d/90-critest-mirror.conf")


def main() -> int:
    """Serve until interrupted; the drop-in goes away with the registry."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dropin", type=Path, default=DROPIN,
                        help=f"registries.conf drop-in to write (default {DROPIN})")
    args = parser.parse_args()
    if args.dropin.exists():
        print(f"{args.dropin} exists; remove it or pass another --dropin", file=sys.stderr)
        return 1

    def stop(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with Registry() as registry:
        images = push_critest_images(registry.host)
        args.dropin.parent.mkdir(parents=True, exist_ok=True)
        args.dropin.write_text(images.registries_conf(search=False))
        try:
            print(f"{len(images.images)} images on {registry.host}; mirrors in {args.dropin}; "
                  "Ctrl-C to stop", flush=True)
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            args.dropin.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
