"""Build deterministic OCI and Docker images in Python and push them over the distribution API.

Everything here is reproducible: tar entries have fixed mtimes and owners and a
fixed order, gzip headers carry mtime 0, JSON is serialized with sorted keys.
The same inputs therefore give the same digests on every run (the busybox layer
depends on the host's busybox-static binary).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import platform as _platform
import random
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import quote, urlsplit

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z, every tar entry's mtime
CREATED = "2023-11-14T22:13:20Z"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

Media = Literal["docker", "oci"]
Compression = Literal["gzip", "zstd", "none"]
Auth = tuple[str, str] | None

# Users and groups in the busybox rootfs: name -> (uid, gid, home).
PASSWD_USERS: dict[str, tuple[int, int, str]] = {
    "root": (0, 0, "/root"),
    "peapod": (1000, 1000, "/home/peapod"),
    "nobody": (65534, 65534, "/nonexistent"),
}
# Groups: name -> (gid, members).
GROUPS: dict[str, tuple[int, tuple[str, ...]]] = {
    "root": (0, ()),
    "peapod": (1000, ()),
    "extra": (2000, ("peapod",)),
    "nobody": (65534, ()),
}
# Applets the tests rely on; busybox_rootfs_layer() fails loudly if one is missing.
_REQUIRED = """
    sh ls cat echo id sleep true false env hostname ip ifconfig nslookup ping wget nc
    mount umount ps kill touch mkdir rm stat head tail grep sed tr wc dd uname whoami
    printf date top sysctl cut sort uniq find xargs chmod chown ln readlink df du free
    test expr seq nproc timeout mkfifo realpath sha256sum md5sum tee base64 od
"""
REQUIRED_APPLETS = frozenset(_REQUIRED.split())
# Paths after unpacking whiteouts:latest.
WHITEOUT_PRESENT = ("/data/keep", "/opaque/b")
WHITEOUT_ABSENT = ("/data/gone", "/opaque/a")
# Files of layered:latest and their final contents (layer 3 overrides layer 2's shared.txt).
LAYERED_FILES = {
    "/layered/one.txt": b"one\n",
    "/layered/two.txt": b"two\n",
    "/layered/shared.txt": b"from layer 3\n",
    "/layered/owned.txt": b"owned by peapod\n",
    "/etc/peapod-layered": b"layered\n",
}
ARCH_MARKER = "/etc/peapod-arch"  # in every multiarch image: "<os>/<arch>[/<variant>]\n"


def sha256_digest(data: bytes) -> str:
    """`sha256:<hex>` of data."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_arch() -> str:
    """This machine's architecture in OCI spelling (amd64, arm64, ...)."""
    machine = _platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )


def _canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# -- layers -------------------------------------------------------------------


class TarBuilder:
    """Collects tar entries in insertion order and renders a reproducible tar stream.

    Paths are given with or without a leading "/" and stored relative ("bin/sh").
    Missing parent directories are added automatically (0755, root).
    """

    def __init__(self) -> None:
        self._entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
        self._dirs: set[str] = set()

    @staticmethod
    def _norm(path: str) -> str:
        name = path.strip("/")
        if not name or ".." in name.split("/"):
            raise ValueError(f"bad tar path {path!r}")
        return name

    def _info(self, name: str, kind: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mtime = MTIME
        return info

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self._dirs:
                self.dir(parent)

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> TarBuilder:
        """Add a directory."""
        name = self._norm(path)
        self._parents(name)
        self._dirs.add(name)
        self._entries.append((self._info(name, tarfile.DIRTYPE, mode, uid, gid), None))
        return self

    def file(
        self, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> TarBuilder:
        """Add a regular file."""
        name = self._norm(path)
        self._parents(name)
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        info.size = len(data)
        self._entries.append((info, data))
        return self

    def hardlink(self, path: str, target: str) -> TarBuilder:
        """Add a hard link to a regular file added earlier (header mode and owner copied)."""
        name = self._norm(path)
        linkname = self._norm(target)
        found = [i for i, _d in self._entries if i.name == linkname and i.type == tarfile.REGTYPE]
        if not found:
            raise ValueError(f"hard link target {target!r} not added yet")
        self._parents(name)
        info = self._info(name, tarfile.LNKTYPE, found[-1].mode, found[-1].uid, found[-1].gid)
        info.linkname = linkname
        self._entries.append((info, None))
        return self

    def symlink(self, path: str, target: str) -> TarBuilder:
        """Add a symbolic link (target stored verbatim)."""
        name = self._norm(path)
        self._parents(name)
        info = self._info(name, tarfile.SYMTYPE, 0o777, 0, 0)
        info.linkname = target
        self._entries.append((info, None))
        return self

    def whiteout(self, path: str) -> TarBuilder:
        """Add an AUFS-style whiteout deleting `path` from lower layers."""
        name = self._norm(path)
        head, _, base = name.rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}", b"", mode=0o600)

    def opaque(self, directory: str) -> TarBuilder:
        """Mark `directory` opaque: lower layers' contents of it are hidden."""
        return self.file(f"{self._norm(directory)}/.wh..wh..opq", b"", mode=0o600)

    def tar(self) -> bytes:
        """The tar stream."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in self._entries:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def layer(self) -> Layer:
        """The tar stream wrapped as a Layer."""
        return Layer(self.tar())


def compress(data: bytes, compression: Compression) -> bytes:
    """Compress reproducibly: gzip level 6 with mtime 0, zstd level 3 via /usr/bin/zstd, or none."""
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        zstd = shutil.which("zstd")
        if zstd is None:
            raise RuntimeError("zstd binary not found (apt-get install zstd)")
        return subprocess.run(
            [zstd, "-q", "-c", "-3", "--no-progress"], input=data, capture_output=True, check=True
        ).stdout
    if compression == "none":
        return data
    raise ValueError(f"unknown compression {compression!r}")


class Layer:
    """An uncompressed layer tar plus its diff_id; compressed blobs are computed once and cached."""

    def __init__(self, tar: bytes) -> None:
        self.tar = tar
        self.diff_id = sha256_digest(tar)
        self._blobs: dict[str, bytes] = {}

    def blob(self, compression: Compression) -> bytes:
        """The layer compressed as asked."""
        if compression not in self._blobs:
            self._blobs[compression] = compress(self.tar, compression)
        return self._blobs[compression]

    def digest(self, compression: Compression) -> str:
        """Digest of the compressed blob."""
        return sha256_digest(self.blob(compression))

    def __repr__(self) -> str:
        return f"<Layer {self.diff_id[:19]} {len(self.tar)} bytes>"


def busybox_applets() -> list[str]:
    """Install paths ("bin/sh", "usr/bin/env", ...) of every applet the host busybox offers."""
    out = subprocess.run(
        [str(BUSYBOX), "--list-full"], capture_output=True, check=True, text=True
    ).stdout
    return sorted({p for p in out.split() if "/" in p and p != "bin/busybox"})


@cache
def busybox_rootfs_layer() -> Layer:
    """A minimal rootfs: static /bin/busybox, hard links for its applets, users and groups.

    /etc/passwd has root, peapod (1000:1000) and nobody; /etc/group has root,
    peapod (1000), extra (2000, member peapod) and nobody. /tmp is 1777 and
    /etc/hostname is absent.
    """
    applets = busybox_applets()
    names = {p.rsplit("/", 1)[-1] for p in applets}
    missing = REQUIRED_APPLETS - names
    if missing:
        raise RuntimeError(f"{BUSYBOX} lacks applets the tests need: {sorted(missing)}")
    tb = TarBuilder()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/local/bin", "etc", "var"):
        tb.dir(d)
    tb.dir("root", mode=0o700)
    tb.dir("home")
    tb.dir("home/peapod", uid=1000, gid=1000)
    tb.dir("tmp", mode=0o1777)
    tb.dir("var/tmp", mode=0o1777)
    for d in ("proc", "sys", "dev", "run", "mnt"):
        tb.dir(d)
    passwd = "".join(
        f"{name}:x:{uid}:{gid}:{name}:{home}:{'/bin/false' if name == 'nobody' else '/bin/sh'}\n"
        for name, (uid, gid, home) in PASSWD_USERS.items()
    )
    group = "".join(
        f"{name}:x:{gid}:{','.join(members)}\n" for name, (gid, members) in GROUPS.items()
    )
    tb.file("etc/passwd", passwd.encode())
    tb.file("etc/group", group.encode())
    tb.file("bin/busybox", BUSYBOX.read_bytes(), mode=0o755)
    for path in applets:
        tb.hardlink(path, "bin/busybox")
    return tb.layer()


def marker_layer(path: str, text: str) -> Layer:
    """A one-file layer, handy to make images differ."""
    return TarBuilder().file(path, text.encode()).layer()


def whiteout_layers() -> tuple[Layer, Layer]:
    """Two layers: the first adds /data/{keep,gone} and /opaque/a; the second whites out
    /data/gone, makes /opaque opaque and adds /opaque/b.
    """
    first = (
        TarBuilder()
        .dir("data")
        .file("data/keep", b"keep\n")
        .file("data/gone", b"gone\n")
        .dir("opaque")
        .file("opaque/a", b"a\n")
        .layer()
    )
    second = (
        TarBuilder()
        .dir("data")
        .whiteout("data/gone")
        .dir("opaque")
        .opaque("opaque")
        .file("opaque/b", b"b\n")
        .layer()
    )
    return first, second


def layered_layers() -> list[Layer]:
    """Three layers on top of busybox giving LAYERED_FILES, a symlink and an empty dir."""
    return [
        TarBuilder()
        .dir("layered")
        .file("layered/one.txt", b"one\n")
        .file("layered/shared.txt", b"from layer 2\n")
        .layer(),
        TarBuilder()
        .dir("layered")
        .file("layered/two.txt", b"two\n")
        .file("layered/shared.txt", b"from layer 3\n")
        .layer(),
        TarBuilder()
        .dir("layered")
        .file("layered/owned.txt", b"owned by peapod\n", mode=0o600, uid=1000, gid=1000)
        .symlink("layered/link", "one.txt")
        .dir("layered/emptydir")
        .file("etc/peapod-layered", b"layered\n")
        .layer(),
    ]


# -- images -------------------------------------------------------------------


class LayerBlob(NamedTuple):
    """One layer as stored in the registry."""

    digest: str
    data: bytes
    media_type: str


@dataclass(frozen=True)
class BuiltImage:
    """A single-platform image: manifest, config and layer blobs."""

    manifest_bytes: bytes
    manifest_media_type: str
    manifest_digest: str
    config_bytes: bytes
    config_digest: str
    config_media_type: str
    layers: list[LayerBlob]
    diff_ids: list[str]

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest, parsed."""
        return dict(json.loads(self.manifest_bytes))

    @property
    def config(self) -> dict[str, Any]:
        """The image config, parsed."""
        return dict(json.loads(self.config_bytes))

    @property
    def platform(self) -> dict[str, str]:
        """os/architecture/variant from the config."""
        cfg = self.config
        plat = {"architecture": cfg["architecture"], "os": cfg["os"]}
        if cfg.get("variant"):
            plat["variant"] = cfg["variant"]
        return plat

    @property
    def size(self) -> int:
        """Total bytes of manifest, config and layers."""
        return (
            len(self.manifest_bytes)
            + len(self.config_bytes)
            + sum(len(layer.data) for layer in self.layers)
        )

    def blobs(self) -> list[tuple[str, bytes]]:
        """(digest, bytes) of the config and every layer."""
        return [(self.config_digest, self.config_bytes)] + [(b.digest, b.data) for b in self.layers]


def _layer_media_type(media: Media, compression: Compression) -> str:
    if media == "oci":
        return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER_TAR}[compression]
    if compression == "zstd":
        raise ValueError("Docker schema 2 has no zstd layer type; use media='oci'")
    return DOCKER_LAYER_GZIP if compression == "gzip" else DOCKER_LAYER_TAR


def build_image(
    layers: Sequence[bytes | Layer],
    config: dict[str, Any] | None = None,
    *,
    media: Media = "docker",
    compression: Compression = "gzip",
    arch: str | None = None,
    variant: str | None = None,
    os: str = "linux",
    layer_media_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> BuiltImage:
    """Build an image from layers (uncompressed tar bytes or Layer objects).

    `config` overrides keys of the container config (User, Env, Entrypoint, Cmd,
    WorkingDir, StopSignal, Labels, ExposedPorts, ...); a None value deletes a
    default. Defaults are Env=[PATH=...] and Cmd=["sh"]. `layer_media_type`
    forces the layers' media type (for negative tests). `annotations` go in the
    manifest (OCI only). `arch` defaults to this host's (amd64 here).
    """
    layer_objs = [lay if isinstance(lay, Layer) else Layer(lay) for lay in layers]
    container: dict[str, Any] = {"Env": [DEFAULT_PATH], "Cmd": ["sh"]}
    for key, value in (config or {}).items():
        if value is None:
            container.pop(key, None)
        else:
            container[key] = value
    diff_ids = [lay.diff_id for lay in layer_objs]
    image_config: dict[str, Any] = {
        "created": CREATED,
        "architecture": arch or host_arch(),
        "os": os,
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": CREATED, "created_by": f"peapod test layer {i}"}
            for i in range(len(layer_objs))
        ],
    }
    if variant:
        image_config["variant"] = variant
    config_bytes = _canonical_json(image_config)
    config_digest = sha256_digest(config_bytes)
    ltype = layer_media_type or _layer_media_type(media, compression)
    blobs = [LayerBlob(lay.digest(compression), lay.blob(compression), ltype) for lay in layer_objs]
    manifest_type = OCI_MANIFEST if media == "oci" else DOCKER_MANIFEST
    config_type = OCI_CONFIG if media == "oci" else DOCKER_CONFIG
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "size": len(config_bytes), "digest": config_digest},
        "layers": [
            {"mediaType": b.media_type, "size": len(b.data), "digest": b.digest} for b in blobs
        ],
    }
    if annotations:
        if media != "oci":
            raise ValueError("annotations need media='oci'")
        manifest["annotations"] = annotations
    manifest_bytes = _canonical_json(manifest)
    return BuiltImage(
        manifest_bytes=manifest_bytes,
        manifest_media_type=manifest_type,
        manifest_digest=sha256_digest(manifest_bytes),
        config_bytes=config_bytes,
        config_digest=config_digest,
        config_media_type=config_type,
        layers=blobs,
        diff_ids=diff_ids,
    )


def parse_platform(spec: str | dict[str, str]) -> dict[str, str]:
    """ "linux/arm64/v8" -> {"os": "linux", "architecture": "arm64", "variant": "v8"}."""
    if isinstance(spec, dict):
        return dict(spec)
    parts = spec.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"bad platform {spec!r}")
    plat = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        plat["variant"] = parts[2]
    return plat


def platform_string(plat: dict[str, str]) -> str:
    """{"os": "linux", "architecture": "arm64", "variant": "v8"} -> "linux/arm64/v8"."""
    parts = [plat["os"], plat["architecture"]]
    if plat.get("variant"):
        parts.append(plat["variant"])
    return "/".join(parts)


@dataclass(frozen=True)
class BuiltIndex:
    """A manifest list / image index and the images it lists."""

    manifest_bytes: bytes
    media_type: str
    digest: str
    entries: list[tuple[BuiltImage, dict[str, str]]]

    def for_platform(self, spec: str | dict[str, str]) -> BuiltImage:
        """The image listed for a platform ("linux/amd64")."""
        want = parse_platform(spec)
        for image, plat in self.entries:
            if plat == want:
                return image
        raise KeyError(platform_string(want))


def build_index(
    entries: Sequence[tuple[BuiltImage, str | dict[str, str] | None]], media: Media = "oci"
) -> BuiltIndex:
    """An OCI index or Docker manifest list; a None platform is taken from the image config."""
    resolved = [(img, parse_platform(p) if p else img.platform) for img, p in entries]
    media_type = OCI_INDEX if media == "oci" else DOCKER_MANIFEST_LIST
    index = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": img.manifest_media_type,
                "size": len(img.manifest_bytes),
                "digest": img.manifest_digest,
                "platform": plat,
            }
            for img, plat in resolved
        ],
    }
    data = _canonical_json(index)
    return BuiltIndex(data, media_type, sha256_digest(data), resolved)


def big_image(
    total_mb: int = 100,
    layers: int = 5,
    *,
    seed: int = 0,
    files_per_layer: int = 300,
    runnable: bool = True,
    media: Media = "docker",
    compression: Compression = "gzip",
) -> BuiltImage:
    """An image of `layers` layers holding about `total_mb` MiB of incompressible data.

    Data files go under /data/<n>/, `files_per_layer` per layer, sizes varying.
    Contents come from random.Random(seed), so digests are stable. With
    `runnable`, the first layer is the busybox rootfs and the data is spread
    over the other `layers - 1`.
    """
    data_layers = layers - 1 if runnable else layers
    if data_layers < 1:
        raise ValueError("need at least one data layer")
    rng = random.Random(seed)
    per_layer = (total_mb << 20) // data_layers
    result: list[Layer] = [busybox_rootfs_layer()] if runnable else []
    for n in range(data_layers):
        weights = [rng.uniform(0.2, 1.8) for _ in range(files_per_layer)]
        scale = per_layer / sum(weights)
        tb = TarBuilder().dir("data").dir(f"data/{n}")
        for i, weight in enumerate(weights):
            tb.file(f"data/{n}/f{i:04d}.bin", rng.randbytes(int(weight * scale)))
        result.append(tb.layer())
    return build_image(
        result,
        {"Labels": {"org.peapod.test": "big", "org.peapod.seed": str(seed)}},
        media=media,
        compression=compression,
    )


# -- pushing ------------------------------------------------------------------


class PushError(RuntimeError):
    """The registry refused a push step."""


@dataclass(frozen=True)
class Response:
    """A plain HTTP response."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def _basic(auth: Auth) -> dict[str, str]:
    if auth is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}


def request(
    host: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    auth: Auth = None,
    timeout: float = 60.0,
) -> Response:
    """One plain-http request to `host` ("127.0.0.1:PORT"); `auth` adds basic auth."""
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={**_basic(auth), **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def _expect(resp: Response, statuses: tuple[int, ...], what: str) -> Response:
    if resp.status not in statuses:
        raise PushError(f"{what}: HTTP {resp.status}: {resp.body[:500]!r}")
    return resp


def push_blob(host: str, repo: str, digest: str, data: bytes, auth: Auth = None) -> None:
    """Upload one blob (POST an upload, PUT it with ?digest=) unless the registry has it."""
    if request(host, "HEAD", f"/v2/{repo}/blobs/{digest}", auth=auth).status == 200:
        return
    start = _expect(
        request(host, "POST", f"/v2/{repo}/blobs/uploads/", b"", auth=auth), (202,), "start upload"
    )
    location = urlsplit(start.headers["location"])
    sep = "&" if location.query else "?"
    target = f"{location.path}?{location.query}" if location.query else location.path
    put = request(
        host,
        "PUT",
        f"{target}{sep}digest={quote(digest)}",
        data,
        {"Content-Type": "application/octet-stream"},
        auth=auth,
    )
    _expect(put, (201,), f"upload {digest}")


def push_manifest(
    host: str, repo: str, reference: str, data: bytes, media_type: str, auth: Auth = None
) -> str:
    """PUT a manifest under a tag or digest; return the digest the registry reports."""
    resp = _expect(
        request(
            host,
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            data,
            {"Content-Type": media_type},
            auth=auth,
        ),
        (201,),
        f"put manifest {repo}:{reference}",
    )
    digest = resp.headers.get("docker-content-digest", "")
    if digest != sha256_digest(data):
        raise PushError(f"registry says {digest!r} for manifest {sha256_digest(data)}")
    return digest


@dataclass(frozen=True)
class PushedImage:
    """An image pushed to a registry, with what a test should expect when running it."""

    host: str
    repo: str
    tag: str | None
    image: BuiltImage
    uid: int = 0
    gid: int = 0
    username: str = "root"

    @property
    def digest(self) -> str:
        """Manifest digest."""
        return self.image.manifest_digest

    @property
    def config_digest(self) -> str:
        """Config digest (the CRI image id)."""
        return self.image.config_digest

    @property
    def repo_ref(self) -> str:
        """`host/repo`."""
        return f"{self.host}/{self.repo}"

    @property
    def ref(self) -> str:
        """`host/repo:tag`, or the digest reference when pushed without a tag."""
        return f"{self.repo_ref}:{self.tag}" if self.tag else self.digest_ref

    @property
    def digest_ref(self) -> str:
        """`host/repo@sha256:...`."""
        return f"{self.repo_ref}@{self.digest}"

    @property
    def user(self) -> str | None:
        """The User field of the image config, if any."""
        value = self.image.config["config"].get("User")
        return str(value) if value else None


@dataclass(frozen=True)
class PushedIndex:
    """A multi-platform index pushed to a registry."""

    host: str
    repo: str
    tag: str | None
    index: BuiltIndex

    @property
    def digest(self) -> str:
        """Index digest."""
        return self.index.digest

    @property
    def media_type(self) -> str:
        """Index media type."""
        return self.index.media_type

    @property
    def repo_ref(self) -> str:
        """`host/repo`."""
        return f"{self.host}/{self.repo}"

    @property
    def ref(self) -> str:
        """`host/repo:tag`, or the digest reference when pushed without a tag."""
        return f"{self.repo_ref}:{self.tag}" if self.tag else self.digest_ref

    @property
    def digest_ref(self) -> str:
        """`host/repo@sha256:...` of the index."""
        return f"{self.repo_ref}@{self.digest}"

    @property
    def platforms(self) -> list[str]:
        """Listed platforms, "linux/arm64/v8" style, in index order."""
        return [platform_string(p) for _img, p in self.index.entries]

    def for_platform(self, spec: str | dict[str, str]) -> BuiltImage:
        """The image listed for a platform."""
        return self.index.for_platform(spec)

    @property
    def host_image(self) -> BuiltImage:
        """The entry for linux/<this host's arch>."""
        return self.for_platform(f"linux/{host_arch()}")


def push(
    host: str, repo: str, tag: str | None, image: BuiltImage, auth: Auth = None
) -> PushedImage:
    """Push blobs and manifest; the manifest goes under `tag`, or only its digest if None."""
    for digest, data in image.blobs():
        push_blob(host, repo, digest, data, auth)
    reference = tag or image.manifest_digest
    push_manifest(host, repo, reference, image.manifest_bytes, image.manifest_media_type, auth)
    return PushedImage(host, repo, tag, image)


def push_index(
    host: str,
    repo: str,
    tag: str | None,
    entries: Sequence[tuple[BuiltImage, str | dict[str, str] | None]],
    media: Media = "oci",
    auth: Auth = None,
) -> PushedIndex:
    """Push each image by digest, then the index listing them under `tag`."""
    index = build_index(entries, media)
    for image, _plat in index.entries:
        push(host, repo, None, image, auth)
    push_manifest(host, repo, tag or index.digest, index.manifest_bytes, index.media_type, auth)
    return PushedIndex(host, repo, tag, index)


# -- the standard set ---------------------------------------------------------


def busybox_image(user: str | None = None, **kw: Any) -> BuiltImage:
    """The plain busybox image, optionally with a config User."""
    return build_image([busybox_rootfs_layer()], {"User": user} if user else None, **kw)


def multiarch_images(media: Media) -> list[tuple[BuiltImage, dict[str, str]]]:
    """One image for this host's arch (busybox + marker) and two foreign ones (marker only)."""
    host = {"os": "linux", "architecture": host_arch()}
    foreign = [
        p
        for p in (
            {"os": "linux", "architecture": "arm64", "variant": "v8"},
            {"os": "linux", "architecture": "s390x"},
            {"os": "linux", "architecture": "amd64"},
        )
        if p["architecture"] != host["architecture"]
    ][:2]
    result = []
    for plat in [host, *foreign]:
        marker = marker_layer(ARCH_MARKER, platform_string(plat) + "\n")
        base = [busybox_rootfs_layer()] if plat is host else []
        image = build_image(
            [*base, marker],
            {"Labels": {"org.peapod.platform": platform_string(plat)}},
            media=media,
            arch=plat["architecture"],
            variant=plat.get("variant"),
        )
        result.append((image, plat))
    return result


@dataclass(frozen=True)
class StandardImages:
    """What push_standard_images() put in a registry; refs are `host/repo:tag`."""

    host: str
    base_layer: Layer  # the busybox layer shared by most images
    base_layer_digest: str  # its gzip blob digest
    busybox: PushedImage  # busybox:latest, no User (root)
    busybox_user: PushedImage  # busybox:user, User "peapod" -> 1000:1000
    busybox_uid: PushedImage  # busybox:uid, User "1000:1000"
    tagged: dict[str, PushedImage]  # tagged:one/two/three, one manifest
    multiarch: PushedIndex  # multiarch:latest, Docker manifest list
    multiarch_oci: PushedIndex  # multiarch:oci, OCI index
    whiteouts: PushedImage  # whiteouts:latest, see WHITEOUT_PRESENT / WHITEOUT_ABSENT
    zstd: PushedImage  # zstd:latest, OCI media, zstd layers
    layered: PushedImage  # layered:latest, busybox + 3 layers, see LAYERED_FILES

    @property
    def missing_tag_ref(self) -> str:
        """A reference to a tag that does not exist in an existing repository."""
        return f"{self.host}/busybox:no-such-tag"

    @property
    def missing_repo_ref(self) -> str:
        """A reference to a repository that does not exist."""
        return f"{self.host}/no-such-repo:latest"


def push_busybox(
    host: str, repo: str = "busybox", tag: str = "latest", auth: Auth = None
) -> PushedImage:
    """Push the plain busybox image (e.g. to an auth registry)."""
    return push(host, repo, tag, busybox_image(), auth)


def push_standard_images(host: str, auth: Auth = None) -> StandardImages:
    """Push the standard test set to the registry at `host`."""
    base = busybox_rootfs_layer()
    peapod_uid, peapod_gid, _home = PASSWD_USERS["peapod"]
    busybox = push(host, "busybox", "latest", busybox_image(), auth)
    user = push(host, "busybox", "user", busybox_image("peapod"), auth)
    uid = push(host, "busybox", "uid", busybox_image(f"{peapod_uid}:{peapod_gid}"), auth)
    tagged_image = build_image([base, marker_layer("/etc/peapod-tagged", "tagged\n")])
    tagged = {t: push(host, "tagged", t, tagged_image, auth) for t in ("one", "two", "three")}
    multiarch = push_index(host, "multiarch", "latest", multiarch_images("docker"), "docker", auth)
    multiarch_oci = push_index(host, "multiarch", "oci", multiarch_images("oci"), "oci", auth)
    whiteouts = push(host, "whiteouts", "latest", build_image([base, *whiteout_layers()]), auth)
    zstd = push(
        host,
        "zstd",
        "latest",
        build_image(
            [base, marker_layer("/etc/peapod-zstd", "zstd\n")], media="oci", compression="zstd"
        ),
        auth,
    )
    layered = push(
        host,
        "layered",
        "latest",
        build_image(
            [base, *layered_layers()],
            {
                "Env": [DEFAULT_PATH, "LAYERED=yes"],
                "WorkingDir": "/layered",
                "Labels": {"org.peapod.test": "layered"},
            },
        ),
        auth,
    )
    return StandardImages(
        host=host,
        base_layer=base,
        base_layer_digest=base.digest("gzip"),
        busybox=busybox,
        busybox_user=replace(user, uid=peapod_uid, gid=peapod_gid, username="peapod"),
        busybox_uid=replace(uid, uid=peapod_uid, gid=peapod_gid, username="peapod"),
        tagged=tagged,
        multiarch=multiarch,
        multiarch_oci=multiarch_oci,
        whiteouts=whiteouts,
        zstd=zstd,
        layered=layered,
    )
