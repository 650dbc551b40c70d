"""User namespaces: mapping checks, pod and container conversion, spec, features (no kernel)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from api import api_pb2 as pb
from base.errors import InvalidArgument
from cri.config import Config
from cri.convert import sandbox as sandbox_convert
from cri.convert.container import create_request
from oci.container import runtimes
from oci.container.idmapped import check_mounts
from oci.spec.generate import generate_spec
from oci.spec.inputs import (
    ContainerRequest,
    DaemonFacts,
    ImageConfig,
    Mount,
    MountPropagation,
    NamespaceMode,
    NamespaceOptions,
    SecurityContext,
)
from sandbox.facts import SandboxFacts
from sandbox.idmappings import ID_LIMIT, IdMapping, UserNamespaceMappings, check_mappings
from sandbox.pod_config import PodMetadata
from sandbox.record import READY, SandboxRecord

POD_MAP = UserNamespaceMappings((IdMapping(0, 1000, 65536),), (IdMapping(0, 2000, 65536),))


def m(container: int, host: int, length: int) -> pb.IDMapping:
    return pb.IDMapping(container_id=container, host_id=host, length=length)


def pod(mode: int = pb.POD, uids: list[pb.IDMapping] | None = None,
        gids: list[pb.IDMapping] | None = None, **ns: int) -> pb.PodSandboxConfig:  # fmt: skip
    userns = pb.UserNamespace(mode=mode, uids=uids or [], gids=gids or [])
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"),
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(userns_options=userns, **ns))),
    )  # fmt: skip


GOOD = [m(0, 1000, 65536)]


def test_pod_mappings_convert() -> None:
    config = sandbox_convert.pod_config(pod(uids=GOOD, gids=[m(0, 2000, 65536)]), Config())
    assert config.userns == POD_MAP
    assert (config.userns.root_uid, config.userns.root_gid) == (1000, 2000)
    assert config.userns.uid_map() == "0 1000 65536\n"


def test_node_mode_and_no_options_mean_the_host_user_namespace() -> None:
    assert sandbox_convert.pod_config(pod(mode=pb.NODE), Config()).userns is None
    plain = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"))
    assert sandbox_convert.pod_config(plain, Config()).userns is None


@pytest.mark.parametrize(("config", "match"), [
    (pod(uids=[m(0, 1000, 100000), m(100000, 200000, 10)], gids=GOOD), "2 given"),
    (pod(uids=[m(0, 1000, 100000), m(0, 2000, 100000)], gids=GOOD), "overlap on the container"),
    (pod(uids=[m(0, 1000, 100), m(100, 1050, 100)], gids=GOOD), "overlap on the host"),
    (pod(uids=[m(1, 1000, 100000)], gids=GOOD), "container uid 0 is not mapped"),
    (pod(uids=GOOD, gids=[m(5, 1000, 10)]), "container gid 0 is not mapped"),
    (pod(uids=GOOD, gids=[]), "gid mappings are missing"),
    (pod(), "uid mappings are missing"),
    (pod(uids=[m(0, 1000, 0)], gids=GOOD), "length must be above 0"),
    (pod(uids=[m(0, ID_LIMIT - 10, 11)], gids=GOOD), "overflows the host id range"),
    (pod(uids=[m(0, 1000, ID_LIMIT)], gids=GOOD), "overflows the host id range"),
    (pod(uids=[m(0, 0, 65536)], gids=GOOD), "host uid 0"),
    (pod(mode=pb.CONTAINER), "userns_options mode CONTAINER is not supported"),
    (pod(mode=pb.TARGET), "userns_options mode TARGET is not supported"),
    (pod(mode=pb.NODE, uids=GOOD, gids=GOOD), "mode NODE .* takes no uid or gid mappings"),
    (pod(uids=GOOD, gids=GOOD, network=pb.NODE), "cannot use the host's network"),
    (pod(uids=GOOD, gids=GOOD, ipc=pb.NODE), "cannot use the host's network, IPC"),
    (pod(uids=GOOD, gids=GOOD, pid=pb.NODE), "IPC or PID namespace"),
])  # fmt: skip
def test_bad_pod_user_namespaces_are_invalid_arguments(
    config: pb.PodSandboxConfig, match: str
) -> None:
    with pytest.raises(InvalidArgument, match=match):
        sandbox_convert.pod_config(config, Config())


def test_a_range_ending_right_below_the_limit_is_taken() -> None:
    ok = check_mappings([IdMapping(0, ID_LIMIT - 10, 10)], [IdMapping(0, 1, 10)], "x")
    assert ok.root_uid == ID_LIMIT - 10


def record(userns: UserNamespaceMappings | None) -> SandboxRecord:
    return SandboxRecord(
        id="a" * 64, name="n", metadata=PodMetadata("p", "u", "n"), state=READY, created_at=1,
        pod_dir="/run/x/pods/a", ns_paths={"net": "/run/x/ns/net", "user": "/run/x/ns/user"},
        userns=userns.to_record() if userns else None,
    )  # fmt: skip


def test_record_keeps_the_mappings_and_status_reports_them() -> None:
    rec = SandboxRecord.from_json(record(POD_MAP).to_json())
    assert rec.mappings == POD_MAP
    facts = rec.facts()
    assert (facts.userns, facts.userns_path) == (POD_MAP, "/run/x/ns/user")
    status = sandbox_convert.to_pb_status(rec)
    userns = status.linux.namespaces.options.userns_options
    assert userns.mode == pb.POD
    assert [(u.container_id, u.host_id, u.length) for u in userns.gids] == [(0, 2000, 65536)]
    info = json.loads(sandbox_convert.verbose_info(rec)["info"])
    assert info["userNamespace"] == {"uids": [[0, 1000, 65536]], "gids": [[0, 2000, 65536]]}
    plain = sandbox_convert.to_pb_status(record(None)).linux.namespaces.options
    assert not plain.HasField("userns_options")


def ctr(userns: pb.UserNamespace | None = None, mounts: list[pb.Mount] | None = None
        ) -> pb.CreateContainerRequest:  # fmt: skip
    sc = pb.LinuxContainerSecurityContext(namespace_options=pb.NamespaceOption(
        userns_options=userns))  # fmt: skip
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"),
                             image=pb.ImageSpec(image="busybox"), mounts=mounts or [],
                             linux=pb.LinuxContainerConfig(security_context=sc))  # fmt: skip
    return pb.CreateContainerRequest(pod_sandbox_id="pod1", config=cfg)


def test_container_user_namespace_options_convert() -> None:
    given = create_request(ctr(pb.UserNamespace(mode=pb.POD, uids=GOOD, gids=[m(0, 2000, 65536)])))
    options = given.container.security.namespace_options
    assert (options.user, options.userns) == (NamespaceMode.POD, POD_MAP)
    node = create_request(ctr(pb.UserNamespace(mode=pb.NODE))).container.security
    assert node.namespace_options.user is NamespaceMode.NODE
    assert create_request(ctr()).container.security.namespace_options.user is None
    with pytest.raises(InvalidArgument, match="mode TARGET"):
        create_request(ctr(pb.UserNamespace(mode=pb.TARGET)))


def test_mount_mappings_convert_and_are_checked() -> None:
    mount = pb.Mount(container_path="/data", host_path="/srv/data", uidMappings=GOOD,
                     gidMappings=[m(0, 2000, 65536)])  # fmt: skip
    (got,) = create_request(ctr(mounts=[mount])).container.mounts
    assert got.idmap == POD_MAP
    bad = pb.Mount(container_path="/data", host_path="/srv", uidMappings=[m(3, 1000, 5)],
                   gidMappings=GOOD)  # fmt: skip
    with pytest.raises(InvalidArgument, match="mount '/data': uid mappings: container uid 0"):
        create_request(ctr(mounts=[bad]))


def test_idmapped_mounts_must_match_the_pod() -> None:
    mapped = Mount("/data", "/srv", idmap=POD_MAP)
    check_mounts([mapped, Mount("/plain", "/srv")], POD_MAP)
    with pytest.raises(InvalidArgument, match="pod has no user namespace"):
        check_mounts([mapped], None)
    other = UserNamespaceMappings((IdMapping(0, 5000, 10),), (IdMapping(0, 5000, 10),))
    with pytest.raises(InvalidArgument, match="differ from the pod's"):
        check_mounts([Mount("/data", "/srv", idmap=other)], POD_MAP)
    with pytest.raises(InvalidArgument, match="private propagation"):
        check_mounts([Mount("/data", "/srv", idmap=POD_MAP,
                            propagation=MountPropagation.HOST_TO_CONTAINER)], POD_MAP)  # fmt: skip


def spec(facts: SandboxFacts, options: NamespaceOptions, rootfs: Path) -> dict[str, object]:
    request = ContainerRequest(id="c" * 64, name="c", command=("/bin/true",),
                               security=SecurityContext(namespace_options=options))  # fmt: skip
    daemon = DaemonFacts(bounding_set=frozenset({"CAP_CHOWN"}))
    return generate_spec(request, ImageConfig(), facts, daemon, str(rootfs))


def test_the_spec_joins_the_pods_user_namespace_with_its_mappings(tmp_path: Path) -> None:
    facts = SandboxFacts(netns_path="/ns/net", ipcns_path="/ns/ipc", utsns_path="/ns/uts",
                         pidns_path="/proc/1/ns/pid", userns_path="/ns/user",
                         userns=POD_MAP)  # fmt: skip
    out = spec(facts, NamespaceOptions(), tmp_path)
    linux = out["linux"]
    assert {"type": "user", "path": "/ns/user"} in linux["namespaces"]  # type: ignore[index]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 65536}]  # type: ignore[index]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 2000, "size": 65536}]  # type: ignore[index]
    same = NamespaceOptions(user=NamespaceMode.POD, userns=POD_MAP)
    assert spec(facts, same, tmp_path)["linux"] == linux
    with pytest.raises(InvalidArgument, match="mode NODE cannot be granted"):
        spec(facts, NamespaceOptions(user=NamespaceMode.NODE), tmp_path)
    other = UserNamespaceMappings((IdMapping(0, 9, 1),), (IdMapping(0, 9, 1),))
    with pytest.raises(InvalidArgument, match="differ from its pod's"):
        spec(facts, NamespaceOptions(user=NamespaceMode.POD, userns=other), tmp_path)
    host = SandboxFacts(netns_path="/ns/net", pidns_path="/proc/1/ns/pid")
    plain = spec(host, NamespaceOptions(), tmp_path)["linux"]
    assert "uidMappings" not in plain  # type: ignore[operator]
    assert all(n["type"] != "user" for n in plain["namespaces"])  # type: ignore[index]
    with pytest.raises(InvalidArgument, match="its pod runs in the host's"):
        spec(host, NamespaceOptions(user=NamespaceMode.POD, userns=POD_MAP), tmp_path)


def handlers() -> runtimes.RuntimeHandlers:
    handler = runtimes.RuntimeHandler("runc", "/usr/sbin/runc", "/run/r", "conmon", {}, 10.0)
    return runtimes.RuntimeHandlers({"runc": handler}, "runc")


def features_doc(monkeypatch: pytest.MonkeyPatch, doc: dict[str, object]) -> None:
    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(argv, 0, json.dumps(doc).encode(), b"")

    monkeypatch.setattr(runtimes.subprocess, "run", run)


def test_user_namespaces_are_advertised_only_when_runtime_and_host_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    features_doc(monkeypatch, {"linux": {"namespaces": ["mount", "user"]}})
    found = handlers()
    assert not found.features("").user_namespaces  # the host was not probed yet
    assert "not probed" in found.user_namespaces_refusal("")
    found.set_host_user_namespaces("")
    assert found.features("").user_namespaces
    assert found.user_namespaces_refusal("runc") == ""
    found.set_host_user_namespaces("/tmp/x is not searchable by others")
    assert not found.features("runc").user_namespaces
    assert "searchable" in found.user_namespaces_refusal("runc")


def test_a_runtime_without_the_user_namespace_is_not_advertised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    features_doc(monkeypatch, {"linux": {"namespaces": ["mount", "pid"]}})
    found = handlers()
    found.set_host_user_namespaces("")
    assert not found.features("").user_namespaces
    assert "does not list the user namespace" in found.user_namespaces_refusal("")
