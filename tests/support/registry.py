"""A real Docker distribution registry (Debian's docker-registry) on a loopback port."""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .background import Background
from .images import PushedImage
from .ports import free_port

REGISTRY_BIN = Path("/usr/bin/docker-registry")
HTPASSWD_BIN = Path("/usr/bin/htpasswd")
_SETPRIV = shutil.which("setpriv")


class RegistryError(RuntimeError):
    """The registry process could not be started or answered unexpectedly."""


def registry_available() -> bool:
    """Tell whether the docker-registry binary is installed."""
    return REGISTRY_BIN.is_file() and os.access(REGISTRY_BIN, os.X_OK)


class Registry(Background):
    """A `docker-registry serve` process with its own temp storage, optionally behind htpasswd.

    Use as a context manager or call start()/stop(). Every started registry is also
    killed at interpreter exit, and (when started from the main thread) dies with
    its parent via PR_SET_PDEATHSIG.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        startup_timeout: float = 10.0,
        binary: Path = REGISTRY_BIN,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.username = username
        self.password = password
        self.startup_timeout = startup_timeout
        self.binary = binary
        self.port = 0
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths and addresses -------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        """The registry's private temp directory (config, log, htpasswd, storage)."""
        if self._tmp is None:
            raise RegistryError("registry not started")
        return self._tmp

    @property
    def storage_dir(self) -> Path:
        """Root of the filesystem storage driver."""
        return self.tmp_dir / "storage"

    @property
    def log_path(self) -> Path:
        """File receiving the registry's stdout and stderr."""
        return self.tmp_dir / "registry.log"

    @property
    def config_path(self) -> Path:
        """The registry's config file (JSON, which the YAML parser accepts)."""
        return self.tmp_dir / "config.yml"

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry part of image references."""
        if not self.port:
            raise RegistryError("registry not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL, `http://127.0.0.1:PORT`."""
        return f"http://{self.host}"

    @property
    def auth(self) -> tuple[str, str] | None:
        """(username, password) when htpasswd auth is on, else None."""
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    def auth_headers(self) -> dict[str, str]:
        """An Authorization header for basic auth, or no headers without auth."""
        if self.auth is None:
            return {}
        raw = f"{self.username}:{self.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def blob_data_path(self, digest: str) -> Path:
        """On-disk path of a blob's bytes, e.g. to corrupt it."""
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64:
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.storage_dir / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def corrupt_blob(self, digest: str) -> bytes:
        """Flip the first 64 bytes of a stored blob in place (size kept); return the old bytes."""
        path = self.blob_data_path(digest)
        old = path.read_bytes()
        head = bytes(b ^ 0xFF for b in old[:64])
        path.write_bytes(head + old[64:])
        return old

    def log_text(self) -> str:
        """The registry's log so far (empty if none)."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, RegistryError):
            return ""

    # -- lifecycle -----------------------------------------------------------

    def _config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.host,
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self.auth is not None:
            config["auth"] = {
                "htpasswd": {"realm": "peapod-test", "path": str(self.tmp_dir / "htpasswd")}
            }
        return config

    def _write_htpasswd(self) -> None:
        assert self.username is not None and self.password is not None
        line = subprocess.run(
            [str(HTPASSWD_BIN), "-Bbn", self.username, self.password],
            check=True,
            capture_output=True,
        ).stdout
        (self.tmp_dir / "htpasswd").write_bytes(line.strip() + b"\n")

    def _command(self) -> list[str]:
        cmd = [str(self.binary), "serve", str(self.config_path)]
        if _SETPRIV and threading.current_thread() is threading.main_thread():
            cmd = [_SETPRIV, "--pdeathsig", "KILL", "--", *cmd]
        return cmd

    def start(self) -> Registry:
        """Start the process and wait until `GET /v2/` answers; RegistryError if it does not."""
        if self._proc is not None:
            raise RegistryError("registry already started")
        self._tmp = Path(tempfile.mkdtemp(prefix="peapod-registry-"))
        try:
            self.storage_dir.mkdir()
            if self.auth is not None:
                self._write_htpasswd()
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            for _attempt in range(3):
                self.port = free_port()
                self.config_path.write_text(json.dumps(self._config(), indent=2))
                self._track()
                with open(self.log_path, "ab") as log:
                    self._proc = subprocess.Popen(
                        self._command(),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                if self._wait_ready():
                    return self
                exit_code = self._proc.poll()
                self._kill_proc()
                if "address already in use" not in self.log_text():
                    break
            how = f"exited with {exit_code}" if exit_code is not None else "timed out"
            raise RegistryError(
                f"docker-registry did not answer GET /v2/ on {self.host} ({how} after at most "
                f"{self.startup_timeout}s); log:\n{self.log_text()}"
            )
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
            try:
                conn.request("GET", "/v2/")
                status = conn.getresponse().status
                if status in (200, 401):
                    return True
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.02)
        return False

    def _kill_proc(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        """Stop the process and remove its temp directory; safe to call more than once."""
        try:
            self._kill_proc()
        finally:
            self._untrack()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
            self.port = 0

    def __repr__(self) -> str:
        state = self.host if self.port else "stopped"
        return f"<Registry {state}{' auth' if self.auth else ''}>"


@dataclass(frozen=True)
class AuthRegistry:
    """A htpasswd-protected Registry, its credentials and the busybox image pushed to it."""

    registry: Registry
    busybox: PushedImage  # busybox:latest on this registry

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`."""
        return self.registry.host

    @property
    def username(self) -> str:
        """The htpasswd user."""
        assert self.registry.username is not None
        return self.registry.username

    @property
    def password(self) -> str:
        """The htpasswd user's password."""
        assert self.registry.password is not None
        return self.registry.password

    @property
    def auth(self) -> tuple[str, str]:
        """(username, password)."""
        return (self.username, self.password)
