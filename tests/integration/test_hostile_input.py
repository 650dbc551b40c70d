"""Hostile input: every rpc peapod serves gets valid requests mutated by hypothesis.

Each request starts as a valid one from ``support.cri_requests`` (aimed at a real pod,
a running container and pulled images) and gets one to three mutations: a field anywhere
in the message (found by walking its descriptor) set to a huge, control-character,
traversal, out-of-range or unknown value, cleared, or repeated thousands of times.
After each request:

- the answer is not INTERNAL or UNKNOWN (those are peapod's own bugs),
- the daemon still runs and answers Version within 2 s,
- no file or directory appeared in /, /etc, /tmp, /var, /run, the daemon's working
  directory, a cgroup hierarchy's root or the test's own tree, other than below the
  directories the request may name (its log_directory and mount host paths, the target
  pod's log directory), and the decoy file outside is unchanged (every path a mutation
  makes up carries TAG; in /tmp, /run and the working directory, which other test
  processes write to, an untagged new entry counts only if the request names it),
- pods, containers and images the request made are removed through the CRI, and the
  targets are rebuilt if the request took them apart.

Every example runs (no stop at the first failure, so one defect does not hide the
next); an rpc's test fails at its end listing each kind of failure with up to three
requests and the daemon's log lines for them. ``test_leak_census`` (last) removes
everything through the CRI and asserts the census of ``support.census`` is as before
the first request.

Bounded by default: ``PEAPOD_HOSTILE_EXAMPLES`` per rpc (100) and a wall-clock budget
``PEAPOD_HOSTILE_BUDGET`` seconds for all rpcs (120; an rpc stops early only after 5
requests). The seed is fixed (``PEAPOD_HOSTILE_SEED``, printed). ``tests/bench/hostile.py``
runs the long version and prints the histogram of codes (``PEAPOD_HOSTILE_STATS``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from support.census import Census, Snapshot, describe, leaks
from support.cri_requests import (
    IMAGE_RPCS,
    RUNTIME_RPCS,
    Targets,
    container_config,
    pod_config,
    valid_request,
)
from support.daemon import REPO, registries_conf_text
from support.images import StandardImages
from support.pods import PLUGIN_DIR, HostState, PodEnv
from support.registry import Registry

from api import api_pb2 as pb

EXAMPLES = int(os.environ.get("PEAPOD_HOSTILE_EXAMPLES", "100"))
SEED = int(os.environ.get("PEAPOD_HOSTILE_SEED", "1010"))
BUDGET = float(os.environ.get("PEAPOD_HOSTILE_BUDGET", "120"))
STATS = os.environ.get("PEAPOD_HOSTILE_STATS", "")
MIN_SENT = 5  # an rpc sends at least this many requests whatever the budget says
CALL_TIMEOUT = 20.0
RPCS = [*RUNTIME_RPCS, *IMAGE_RPCS]
TAG = f"ppfuzz-{secrets.token_hex(3)}"  # every path a request makes up carries it
BAD_CODES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
# Other test processes on this machine make these at the top of /tmp, /run and the
# cgroup roots; nothing a request names can (it carries TAG).
FOREIGN = re.compile(r"^(peapod-[a-z-]+[\w.-]*|grpc-floor-\w+|pytest-of-\w+|tmp\w{8}|pymp-\w+)$")
CGROUP_ROOTS = sorted({Path(line.split()[4]) for line in Path("/proc/self/mountinfo").read_text()
                       .splitlines() if " - cgroup" in line})
WATCHED = [Path("/"), Path("/etc"), Path("/tmp"), Path("/var"), Path("/run"), REPO, *CGROUP_ROOTS]
# Directories other processes write to while the suite runs: a new entry there counts
# only if it carries TAG or its name is in the request (at a cgroup root: only TAG).
SHARED = {Path("/tmp"), Path("/run"), REPO}


# ---- mutations ---------------------------------------------------------------------

FieldPath = tuple[FieldDescriptor, ...]
HUGE = "A" * (1 << 20)
STRINGS = ["", " ", "\x00", "a\x00b", "\n", "a\nb", "a\r\nb", "\t", "\x1b[31m", "\x7f", "..",
           "../..", "/", "*", "%s%n%x", "${HOME}", "$(id)", "'", '"', "\\", "é", "\u202e",
           "😀", "\ufeff", "A" * 254, "A" * 4097, "A" * (64 << 10), "A" * ((128 << 10) + 1),
           HUGE, "<pod-id>", "<ctr-id>", "<image-id>"]
PATHS = ["../../../../../../../../tmp/<tag>-up", "../<tag>-up", "../../outside/<tag>-up",
         "<base>/outside/<tag>-abs", "/tmp/<tag>-abs", "/etc/<tag>-abs", "/run/<tag>-abs",
         "/", "/proc", "/proc/self", "/sys", "/dev", "/dev/zero", "/dev/null",
         "<base>/outside/fifo", "<base>/outside/decoy", "../../outside/decoy",
         "<base>/allowed/volumes/escape/<tag>-link", "relative/<tag>-rel", "<tag>-rel",
         "a/../../../<tag>-up", "//", "/./", "/a\x00b", "/a\nb", "/" + "d" * 4096,
         "/" + "/".join(["d"] * 3000)]
IDS = ["<pod-id>", "<ctr-id>", "<pod-id>"[:0] + "0" * 64, "f" * 64, "<pod-prefix>",
       "<ctr-prefix>", "<image-id>", "a", "*", "%", "../../..", "/etc/passwd", HUGE,
       "<ctr-id>\n", " <ctr-id>", "<ctr-id>\x00"]
IMAGES = ["<registry>/busybox:latest", "<registry>/busybox", "<registry>/BUSYBOX:latest",
          "<registry>/busybox:" + "t" * 200, "<registry>/busybox@sha256:" + "0" * 64,
          "<registry>/busybox@sha256:zz", "<registry>/busybox@md5:" + "0" * 32,
          "127.0.0.1:99999/busybox:latest", "127.0.0.1:0/busybox", "127.0.0.1:1/busybox",
          "[::1]:1/busybox", "[fe80::1%lo]:1/x", "localhost:-1/x", "<registry>/../../etc",
          "<registry>//busybox", "<registry>/busybox:latest\n", "<registry>/busybox\x00",
          "<registry>/" + "a/" * 2000 + "b", "docker.io/library/busybox:latest", "sha256:",
          "<image-id>", "<image-id>"[:0] + "sha256:" + "0" * 64, HUGE]
ADDRESSES = ["fe80::1%eth0", "fe80::1%eth0\nnameserver 1.2.3.4", "fe80::1%lo", "::1",
             "1.2.3.4\noptions rotate", "999.1.1.1", "0.0.0.0", "[::1]", "10.0.0.1%lo",
             "10.0.0.0/8", "::ffff:1.2.3.4", "1.2.3.4 ", "", HUGE]
KEYS = ["", "a=b", "a\nb", "../x", "../../x", "kernel.msgmax", "net.ipv4.ip_forward",
        "net/../../../../tmp/<tag>-sysctl", "kernel.shm_rmid_forced", "cpu.weight",
        "memory.max", "\x00", "k" * 4096, HUGE]
SIGNED = [-(2**31), -1, 0, 1, 2**31 - 1, 65535, 65536, 99999]
WIDE = [2**31, 2**32, 2**53 + 1, 2**63 - 1, -(2**63)]
PATH_FIELDS = {"log_path", "log_directory", "host_path", "container_path", "localhost_ref",
               "seccomp_profile_path", "working_dir", "apparmor_profile", "cgroup_parent"}
ADDRESS_FIELDS = {"servers", "host_ip", "pod_cidr", "searches", "options", "server_address"}
INTERESTING = PATH_FIELDS | ADDRESS_FIELDS | {
    "image", "cmd", "command", "args", "timeout", "sysctls", "unified", "cpuset_cpus",
    "cpuset_mems", "hostname", "name", "uid", "namespace", "annotations", "envs",
    "username", "password", "auth", "host_port", "container_port", "protocol", "network",
    "pid", "ipc", "profile_type", "stop_signal", "propagation", "memory_limit_in_bytes",
    "cpu_quota", "cpu_period", "cpu_shares", "oom_score_adj", "runtime_handler", "target_id",
    "add_capabilities", "run_as_username", "supplemental_groups", "mount_options",
}


def _is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def leaf_paths(desc: Descriptor, ancestors: tuple[str, ...] = ()) -> list[FieldPath]:
    """Every field reachable from ``desc``, submessages walked (each type once per path)."""
    out: list[FieldPath] = []
    for f in desc.fields:
        if f.message_type is not None and not _is_map(f):
            if f.message_type.full_name in ancestors or len(ancestors) > 6:
                continue
            out.append((f,))  # the submessage itself: cleared or left empty
            out += [(f, *rest) for rest in leaf_paths(f.message_type,
                                                      (*ancestors, desc.full_name))]
        else:
            out.append((f,))
    return out


def _ints(f: FieldDescriptor) -> st.SearchStrategy[int]:
    if f.name == "host_port":  # never a real service's port: portmap would take it over
        return st.sampled_from([-1, 65536, 99999, 2**31 - 1, -(2**31)])
    t = f.type
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        lo, hi, special = 0, 2**32 - 1, [0, 2**31, 2**32 - 1]
    elif t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        lo, hi, special = 0, 2**64 - 1, [0, 2**63, 2**64 - 1]
    elif t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
               FieldDescriptor.TYPE_SFIXED64):
        lo, hi, special = -(2**63), 2**63 - 1, SIGNED + WIDE
    else:
        lo, hi, special = -(2**31), 2**31 - 1, SIGNED
    return st.sampled_from(special) | st.integers(lo, hi)


def _strings(name: str) -> st.SearchStrategy[str]:
    if name in PATH_FIELDS:
        return st.sampled_from(PATHS) | st.sampled_from(STRINGS)
    if name in ADDRESS_FIELDS:
        return st.sampled_from(ADDRESSES) | st.text(max_size=30)
    if name == "image":
        return st.sampled_from(IMAGES) | st.text(max_size=30).map(lambda s: "<registry>/" + s)
    if name == "id" or name.endswith("_id"):
        return st.sampled_from(IDS) | st.text(max_size=70)
    return st.sampled_from(STRINGS) | st.text(max_size=40)


def scalar_values(f: FieldDescriptor, name: str) -> st.SearchStrategy[Any]:
    """Hostile values for one scalar of field ``f`` (``name`` picks the flavour)."""
    if f.type == FieldDescriptor.TYPE_STRING:
        return _strings(name)
    if f.type == FieldDescriptor.TYPE_BYTES:
        return st.sampled_from([b"", b"\x00", b"\xff\xfe\xfd", HUGE.encode()]) | st.binary(
            max_size=32)
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12) | st.sampled_from([-(2**31), 2**31 - 1, 1000])
    if f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True)
    return _ints(f)


@dataclass(frozen=True)
class Mutation:
    """Set (or clear) the field at ``path``; ``many`` repeats a repeated field's value."""

    path: tuple[str, ...]
    action: str  # "set", "clear" or "many"
    value: Any = None
    key: str = ""

    def __repr__(self) -> str:
        def short(v: Any) -> str:
            r = repr(v)
            return r if len(r) < 80 else f"{r[:40]}...<{len(v)} long>"
        extra = f" key={short(self.key)}" if self.key else ""
        return f"{'.'.join(self.path)} {self.action} {short(self.value)}{extra}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def unknown_field(number: int, payload: bytes | int) -> bytes:
    """The wire bytes of a field the message does not have (varint or length-delimited)."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


UNKNOWN_FIELDS = st.builds(
    unknown_field, st.sampled_from([15, 999, 9999, 536870911]),
    st.sampled_from([b"", b"\x00" * 64, HUGE.encode()]) | st.binary(max_size=16)
    | st.integers(0, 2**64 - 1))


@st.composite
def mutation(draw: Callable[..., Any], paths: list[FieldPath]) -> Mutation:
    """One hostile change; half of them aim at the fields the issue names."""
    if not paths or draw(st.integers(0, 7)) == 0:
        return Mutation((), "unknown", draw(UNKNOWN_FIELDS))
    named = [p for p in paths if p[-1].name in INTERESTING]
    path = draw(st.sampled_from(named) if named and draw(st.booleans()) else st.sampled_from(paths))
    leaf = path[-1]
    names = tuple(f.name for f in path)
    if leaf.message_type is not None and not _is_map(leaf):
        return Mutation(names, "clear")
    if _is_map(leaf):
        value_field = leaf.message_type.fields_by_name["value"]
        if value_field.message_type is not None:
            return Mutation(names, "clear")
        key = draw(st.sampled_from(KEYS) | st.text(max_size=20))
        value = draw(scalar_values(value_field, leaf.name))
        return Mutation(names, "map", value, key)
    value = draw(scalar_values(leaf, leaf.name))
    if leaf.is_repeated:
        action = draw(st.sampled_from(["set", "append", "many"]))
        if action == "many" and isinstance(value, (str, bytes)) and len(value) > 100:
            action = "append"
        return Mutation(names, action, value)
    return Mutation(names, draw(st.sampled_from(["set", "set", "set", "clear"])), value)


def apply(msg: Message, m: Mutation, resolve: Callable[[Any], Any]) -> None:
    """Apply ``m`` to ``msg`` in place (values' <tokens> filled in by ``resolve``)."""
    if m.action == "unknown":
        return  # added to the serialized request by ``wire``
    target = msg
    for name in m.path[:-1]:
        child = getattr(target, name)
        if target.DESCRIPTOR.fields_by_name[name].is_repeated:
            child = child[0] if len(child) else child.add()
        target = child
    name = m.path[-1]
    value = resolve(m.value)
    if m.action == "clear":
        target.ClearField(name)
    elif m.action == "map":
        getattr(target, name)[resolve(m.key)] = value
    elif target.DESCRIPTOR.fields_by_name[name].is_repeated:
        seq = getattr(target, name)
        if m.action == "set":
            del seq[:]
        seq.extend([value] * (2000 if m.action == "many" else 1))
    else:
        setattr(target, name, value)


def wire(msg: Message, mutations: list[Mutation]) -> bytes:
    """The request's bytes with the unknown fields of ``mutations`` appended."""
    extra = b"".join(m.value for m in mutations if m.action == "unknown")
    return msg.SerializeToString() + extra


# ---- the daemon, its targets and what is watched -----------------------------------


@dataclass
class Stats:
    """Requests sent and codes received per rpc, for the report."""

    codes: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    unbuildable: collections.Counter[str] = field(default_factory=collections.Counter)
    over_budget: collections.Counter[str] = field(default_factory=collections.Counter)
    signatures: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))

    def sent(self, rpc: str) -> int:
        return sum(self.codes[rpc].values())


class Hostile:
    """One daemon on a private CNI network, its targets, watched dirs and bookkeeping."""

    def __init__(self, registry: Registry, images: StandardImages) -> None:
        self.env = PodEnv()
        self.peapod = self.env.peapod
        self.images_ref = images
        self.registry_host = registry.host
        blocked = '[[registry]]\nlocation = "docker.io"\nblocked = true\n'  # never the internet
        self.peapod.registries_conf.write_text(registries_conf_text([registry.host], blocked))
        self.base = self.peapod.base
        self.allowed = self.base / "allowed"
        self.outside = self.base / "outside"
        for d in (self.allowed / "logs", self.allowed / "volumes" / "data", self.outside):
            d.mkdir(parents=True)
        (self.allowed / "volumes" / "escape").symlink_to(self.outside)
        self.decoy = self.outside / "decoy"
        self.decoy.write_text("decoy\n")
        os.mkfifo(self.outside / "fifo")
        self.targets = Targets("", "", images.busybox.ref, images.zstd.ref,
                               self.allowed / "logs", self.allowed / "volumes")
        self.stats = Stats()
        self.census = Census.for_pod_env(self.env)
        self.before: Snapshot = {}
        self.baseline_images: set[str] = set()
        self.image_id = ""
        self.started = time.monotonic()
        self.channel: grpc.Channel | None = None  # raw bytes: requests with unknown fields
        self.failures: dict[str, dict[str, list[str]]] = collections.defaultdict(dict)

    @property
    def rt(self) -> Any:
        return self.peapod.runtime

    @property
    def img(self) -> Any:
        return self.peapod.images

    def start(self) -> None:
        self.peapod.start()
        self.census.ignore_pids.add(self.daemon_pid())
        got = self.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
            image=self.targets.image)), timeout=60)
        self.image_id = got.image_ref
        # A first pod and container make the daemon's lazily created directories.
        self.make_targets()
        self.remove_all()
        self.baseline_images = self.image_ids()
        self.before = self.census.snapshot()
        self.make_targets()

    def daemon_pid(self) -> int:
        assert self.peapod.proc is not None
        return self.peapod.proc.pid

    # ---- targets ---------------------------------------------------------------
    def make_targets(self) -> None:
        cfg = pod_config(self.targets, "target")
        pod = self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
        ccfg = container_config(self.targets, "target")
        # A shell that ends on SIGTERM, so a hostile StopContainer timeout cannot hang.
        ccfg.command[:] = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
        del ccfg.args[:]
        ctr = self.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg), timeout=60).container_id
        self.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)
        self.targets.pod_id, self.targets.container_id = pod, ctr
        self.target_log_dir = cfg.log_directory

    def targets_intact(self) -> bool:
        try:
            pod = self.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(
                pod_sandbox_id=self.targets.pod_id), timeout=10).status
            ctr = self.rt.ContainerStatus(pb.ContainerStatusRequest(
                container_id=self.targets.container_id), timeout=10).status
        except grpc.RpcError:
            return False
        return pod.state == pb.SANDBOX_READY and ctr.state == pb.CONTAINER_RUNNING

    def image_ids(self) -> set[str]:
        return {i.id for i in self.img.ListImages(pb.ListImagesRequest(), timeout=10).images}

    def tidy(self) -> None:
        """Remove what requests made; rebuild the targets if a request took them apart."""
        for ctr in self.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers:
            if ctr.id != self.targets.container_id:
                self.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr.id),
                                        timeout=60)
        for pod in self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items:
            if pod.id != self.targets.pod_id:
                self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id),
                                         timeout=60)
        for image in self.image_ids() - self.baseline_images:
            self.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image)),
                                 timeout=60)
        if self.image_id not in self.image_ids():
            self.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
                image=self.targets.image)), timeout=60)
        if not self.targets_intact():
            self.remove_all()
            self.make_targets()

    def remove_tagged(self) -> None:
        """What requests named outside the test's tree (log dirs, host paths)."""
        for top in WATCHED:
            with contextlib.suppress(OSError):
                for entry in os.scandir(top):
                    if TAG in entry.name:
                        remove_path(Path(entry.path))

    def remove_all(self) -> None:
        for pod in self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items:
            self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id),
                                     timeout=60)

    # ---- requests --------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if not isinstance(value, str) or "<" not in value:
            return value
        t = self.targets
        for token, real in (("<pod-id>", t.pod_id), ("<ctr-id>", t.container_id),
                            ("<pod-prefix>", t.pod_id[:12]), ("<ctr-prefix>", t.container_id[:12]),
                            ("<image-id>", self.image_id), ("<registry>", self.registry_host),
                            ("<tag>", TAG), ("<base>", str(self.base))):
            value = value.replace(token, real)
        return value

    def call(self, rpc: str, request: bytes) -> grpc.StatusCode:
        service = "ImageService" if rpc in IMAGE_RPCS else "RuntimeService"
        if self.channel is None:
            self.channel = grpc.insecure_channel(f"unix:{self.peapod.socket}")
        method = self.channel.unary_unary(f"/runtime.v1.{service}/{rpc}")
        try:
            method(request, timeout=CALL_TIMEOUT)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]

    def log_since(self, offset: int) -> str:
        with self.peapod.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")[-6000:]

    # ---- files -----------------------------------------------------------------
    def files(self) -> set[str]:
        """Top-level entries of the watched dirs, and the test's tree below its base."""
        out: set[str] = set()
        for top in WATCHED:
            with contextlib.suppress(OSError):
                out.update(os.path.join(top, e) for e in os.listdir(top))
        # peapod's state and host-local's reservations are the census' business
        skip = {str(self.peapod.root), str(self.peapod.runroot), str(self.env.data_dir)}
        for dirpath, dirnames, filenames in os.walk(self.base):
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
            out.update(os.path.join(dirpath, n) for n in dirnames + filenames)
        return out


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            path.rmdir()  # an empty cgroup directory
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def named_dirs(rpc: str, request: Message, h: Hostile) -> list[str]:
    """The directories a request may make files below."""
    named = [h.target_log_dir]
    if rpc == "RunPodSandbox":
        named.append(request.config.log_directory)  # type: ignore[attr-defined]
    if rpc == "CreateContainer":
        named += [m.host_path for m in request.config.mounts]  # type: ignore[attr-defined]
    out = []
    for path in named:
        if path.startswith("/") and "\x00" not in path:
            out += [os.path.normpath(path), os.path.realpath(path)]
    return [p for p in out if p != "/"]


def unexpected(new: set[str], allowed: list[str], request: bytes) -> list[str]:
    """New paths no request could explain (see ``SHARED``)."""
    bad = []
    for path in sorted(new):
        if any(path == a or path.startswith(a + "/") for a in allowed):
            continue
        name, parent = os.path.basename(path), Path(path).parent
        if TAG not in path:
            if parent in CGROUP_ROOTS:
                continue  # other tests' cgroup parents; a made-up one carries TAG
            if parent in SHARED and name.encode() not in request:
                continue  # another process on this machine
            if FOREIGN.match(name):
                continue  # another test process's temp dir
        bad.append(path)
    return bad


CRASH_TEXT = re.compile(r"([A-Z]\w*(?:Error|Exception): [^\"\\]{0,100})")
ERROR_TEXT = re.compile(r'error=\\?"((?:[^"\\]|\\.){0,140})')


def signature(kind: str, detail: str) -> str:
    """A failure's kind and the daemon's error, ids and long runs cut, for counting."""
    found = CRASH_TEXT.findall(detail) or ERROR_TEXT.findall(detail)
    text = re.sub(r"[0-9a-f]{64}", "<id>", found[-1] if found else detail[:100])
    text = re.sub(r"(.)\1{9,}", r"\1...", text.replace('\\"', '"'))
    return f"{kind}: {text}"


# ---- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(registry: Registry, test_images: StandardImages) -> Iterator[Hostile]:
    if os.geteuid() != 0:
        pytest.fail("hostile-input tests need root (namespaces, mounts, cgroups, iptables)")
    for tool in ("bridge", "host-local", "portmap", "loopback"):
        if not os.access(f"{PLUGIN_DIR}/{tool}", os.X_OK):
            pytest.fail(f"CNI plugin {PLUGIN_DIR}/{tool} missing; run deploy/setup.sh test")
    print(f"\nhostile input: seed {SEED}, {EXAMPLES} examples per rpc, budget {BUDGET:.0f} s, "
          f"tag {TAG}; reproduce with PEAPOD_HOSTILE_SEED={SEED} "
          f"PEAPOD_HOSTILE_EXAMPLES={EXAMPLES}")
    home = tempfile.mkdtemp(prefix="peapod-hypothesis-")
    set_hypothesis_home_dir(home)  # its caches, which would land in the working directory
    state = HostState()
    h = Hostile(registry, test_images)
    try:
        h.start()
        yield h
    finally:
        if STATS:
            Path(STATS).write_text(json.dumps({
                "seed": SEED, "examples": EXAMPLES, "codes": h.stats.codes,
                "unbuildable": h.stats.unbuildable, "over_budget": h.stats.over_budget,
                "failures": {rpc: dict(sigs) for rpc, sigs in h.stats.signatures.items()
                             if sigs},
                "seconds": time.monotonic() - h.started}, indent=1))
        h.remove_tagged()
        h.env.sweep()
        state.restore()
        shutil.rmtree(home, ignore_errors=True)


# ---- the tests ---------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("rpc", RPCS)
def test_hostile_requests(hostile: Hostile, rpc: str) -> None:
    """Mutated requests of ``rpc``: no INTERNAL/UNKNOWN, daemon alive, no stray files."""
    h = hostile
    index = RPCS.index(rpc)
    slice_end = h.started + BUDGET * (index + 1) / len(RPCS)
    request_type = {**RUNTIME_RPCS, **IMAGE_RPCS}[rpc]
    paths = leaf_paths(request_type.DESCRIPTOR)

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutations=st.lists(mutation(paths), min_size=1, max_size=3))
    def check(mutations: list[Mutation]) -> None:
        if h.stats.sent(rpc) >= MIN_SENT and time.monotonic() > slice_end:
            h.stats.over_budget[rpc] += 1
            return
        request = valid_request(rpc, h.targets)
        try:
            for m in mutations:
                apply(request, m, h.resolve)
        except (ValueError, TypeError, OverflowError):
            h.stats.unbuildable[rpc] += 1  # protobuf refuses it (e.g. an int out of range)
            return
        allowed = named_dirs(rpc, request, h)
        before = h.files()
        decoy = h.decoy.read_bytes()
        offset = h.peapod.log_path.stat().st_size
        code = h.call(rpc, wire(request, mutations))
        h.stats.codes[rpc][code.name] += 1
        what = f"{rpc} with {mutations}"
        found: list[tuple[str, str]] = []  # (kind, detail)
        if code in BAD_CODES:
            found.append((f"answered {code.name}", h.log_since(offset)))
        if h.peapod.proc is None or h.peapod.proc.poll() is not None:
            found.append(("killed the daemon", h.log_since(offset)))
            h.peapod.stop()
            h.channel = None
            h.peapod.start()
            h.census.ignore_pids.add(h.daemon_pid())
        t0 = time.monotonic()
        try:
            h.rt.Version(pb.VersionRequest(), timeout=2)
        except grpc.RpcError as exc:
            found.append(("left Version unanswered",
                          f"{exc.code().name} after {time.monotonic() - t0:.1f} s"))
        stray = unexpected(h.files() - before, allowed, wire(request, mutations))
        if stray:
            found.append(("made files outside what it names", str(stray[:10])))
        if h.decoy.read_bytes() != decoy:
            found.append(("changed the decoy file", str(h.decoy)))
            h.decoy.write_bytes(decoy)
        h.tidy()
        leftovers = [e for top in CGROUP_ROOTS for e in os.listdir(top) if TAG in e]
        h.remove_tagged()
        if leftovers:
            found.append(("left cgroups after its pods were removed", str(leftovers)))
        for kind, detail in found:
            h.failures[rpc].setdefault(kind, []).append(f"{what}: {kind}\n{detail}")
            h.stats.signatures[rpc][signature(kind, detail)] += 1

    # Every example runs; the first few of each kind of failure are reported at the end.
    check()
    print(f"{rpc}: {h.stats.sent(rpc)} sent {dict(h.stats.codes[rpc])}")
    failures = h.failures[rpc]
    assert not failures, f"seed {SEED}: " + "\n\n".join(
        f"{kind}: {len(items)} request(s), e.g.\n" + "\n".join(items[:3])
        for kind, items in failures.items())


@pytest.mark.integration
def test_exec_of_a_missing_binary_is_not_internal(hostile: Hostile) -> None:
    """Found by the harness: runc's "executable file not found" came back as INTERNAL."""
    h = hostile
    h.tidy()
    for cmd in (["/no/such/binary"], ["no-such-command", "arg"], [" "]):
        request = pb.ExecSyncRequest(container_id=h.targets.container_id, cmd=cmd, timeout=5)
        code = h.call("ExecSync", request.SerializeToString())
        assert code not in BAD_CODES, f"ExecSync {cmd} answered {code.name}"
        if code == grpc.StatusCode.OK:
            reply = h.rt.ExecSync(request, timeout=CALL_TIMEOUT)
            assert reply.exit_code != 0, f"ExecSync {cmd} claims success"


@pytest.mark.integration
def test_leak_census(hostile: Hostile) -> None:
    """After every hostile request and removing everything through the CRI, nothing is left."""
    h = hostile
    h.remove_all()
    for image in h.image_ids() - h.baseline_images:
        h.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
    found = leaks(h.before, h.census.snapshot())
    total = sum(h.stats.sent(r) for r in RPCS)
    print(f"hostile input: {total} requests; codes "
          f"{dict(sum(h.stats.codes.values(), collections.Counter()))}")
    assert found == {}, "left after hostile requests:\n" + describe(found)
