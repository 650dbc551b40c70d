"""Where deploy/build-peers.sh put CRI-O and containerd 2, and whether it did."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PINS = REPO / "tests" / "tools" / "peers" / "go.mod"
BUILD_HINT = "build it with deploy/build-peers.sh (./deploy/setup.sh bench does)"


def peers_dir() -> Path:
    """$PEAPOD_PEERS_DIR, or .cache/peers in the checkout (as build-peers.sh)."""
    return Path(os.environ.get("PEAPOD_PEERS_DIR") or REPO / ".cache" / "peers")


def peer_binary(name: str) -> Path:
    return peers_dir() / name


def built(*names: str) -> bool:
    """Whether every one of ``names`` is an executable in the peers directory."""
    return all(os.access(peer_binary(n), os.X_OK) for n in names)


def pinned_version(module: str) -> str:
    """The version tests/tools/peers/go.mod pins for ``module`` ("" if none)."""
    for line in PINS.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == module:
            return parts[1]
    return ""
