"""The Go no-op NRI plugin (tests/bench/nri_noop), built on containerd/nri's own stub.

It is built inside a copy of tests/tools' module, whose go.mod and go.sum pin
containerd/nri v0.12.2 and ttrpc v1.2.9 (what critest is built with), into
``.cache/clients/nri-noop-<hash>``; a build is reused until its source or those pins
change. Needs Go and the module cache (or proxy) deploy/build-clients.sh uses.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.daemon import REPO

SOURCE = REPO / "tests" / "bench" / "nri_noop" / "main.go"
TOOLS = REPO / "tests" / "tools"
CLIENTS = REPO / ".cache" / "clients"


def build_noop() -> Path:
    """The plugin binary, built if needed."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in
                                     (SOURCE, TOOLS / "go.mod", TOOLS / "go.sum"))).hexdigest()
    out = CLIENTS / f"nri-noop-{digest[:12]}"
    if out.is_file():
        return out
    if shutil.which("go") is None:
        raise RuntimeError("building the Go NRI plugin needs Go on PATH (as "
                           "deploy/build-clients.sh does)")
    with tempfile.TemporaryDirectory(prefix="nri-noop-") as tmp:
        for name in ("go.mod", "go.sum"):
            shutil.copy(TOOLS / name, Path(tmp) / name)
        (Path(tmp) / "nrinoop").mkdir()
        shutil.copy(SOURCE, Path(tmp) / "nrinoop" / "main.go")
        CLIENTS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-mod=mod", "-trimpath", "-o", str(out), "./nrinoop"],
                       cwd=tmp, check=True, capture_output=True, timeout=600)
    return out
