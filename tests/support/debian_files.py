"""Debian binaries for test images: a program with the shared libraries it loads.

Installed programs are read from the host. A package that cannot be installed beside
the suite's own (Debian's dynamic ``busybox`` conflicts with ``busybox-static``) or
whose install would start a service (``nginx``) is fetched with ``apt-get download``
into ``.cache/debs/`` and unpacked there with ``dpkg-deb -x``; nothing is installed.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .images import TarBuilder

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "debs"
_LDD_LINE = re.compile(r"^\s*(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$")


class DebianFilesError(RuntimeError):
    """A package could not be fetched or a program's libraries not resolved."""


def unpacked(package: str) -> Path:
    """The root of ``package``'s files, downloaded and unpacked once into the cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = sorted(CACHE.glob(f"{package}_*/.unpacked"))
        if done:
            return done[-1].parent
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            got = subprocess.run(
                ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True
            )
            debs = list(Path(tmp).glob(f"{package}_*.deb"))
            if got.returncode != 0 or len(debs) != 1:
                raise DebianFilesError(
                    f"apt-get download {package} failed ({got.returncode}): "
                    f"{got.stderr.strip()[-500:]}; the test images need Debian's {package} "
                    "package (run apt-get update if the package lists are missing)"
                )
            root = CACHE / debs[0].name.removesuffix(".deb")
            shutil.rmtree(root, ignore_errors=True)
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
            (root / ".unpacked").write_text(debs[0].name + "\n")
            return root


def shared_libraries(program: Path) -> list[str]:
    """Absolute paths of the libraries (and loader) ``ldd`` says ``program`` loads."""
    got = subprocess.run(["ldd", str(program)], capture_output=True, text=True)
    if got.returncode != 0:
        raise DebianFilesError(f"ldd {program}: {got.stderr.strip() or got.stdout.strip()}")
    paths = []
    for line in got.stdout.splitlines():
        if "not found" in line:
            raise DebianFilesError(f"ldd {program}: {line.strip()}")
        match = _LDD_LINE.match(line)
        if match:
            paths.append(match.group(1))
    return paths


class ProgramLayer:
    """A layer of programs, each with the libraries it loads (added once, as files)."""

    def __init__(self, tb: TarBuilder | None = None) -> None:
        self.tb = tb or TarBuilder()
        self._libraries: set[str] = set()

    def program(self, source: Path, dest: str, mode: int = 0o755) -> ProgramLayer:
        """Add ``source`` at ``dest`` and every library it loads at the path ``ldd`` names."""
        self.tb.file(dest, source.read_bytes(), mode=mode)
        return self.libraries_of(source)

    def libraries_of(self, program: Path) -> ProgramLayer:
        """Add the libraries ``program`` loads that are not in the layer yet."""
        for lib in shared_libraries(program):
            self.library(lib)
        return self

    def beside_libc(self, name: str) -> ProgramLayer:
        """Add a library glibc dlopens (``libgcc_s.so.1``), from libc's own directory."""
        libc = next((p for p in self._libraries if Path(p).name == "libc.so.6"), None)
        if libc is None:
            raise DebianFilesError(f"no libc in the layer to find {name} beside")
        return self.library(str(Path(libc).parent / name))

    def library(self, path: str) -> ProgramLayer:
        """Add one library unless the layer has it."""
        if path not in self._libraries:
            self._libraries.add(path)
            self.tb.file(path, Path(path).resolve().read_bytes(), mode=0o755)
        return self
