"""CRI container messages to domain requests and records back to messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api import api_pb2 as pb
from base.errors import InvalidArgument
from cri.convert.container import (
    container_filter,
    create_request,
    cri_signal,
    signal_name,
    to_pb_container,
    to_pb_status,
    verbose_info,
)
from oci.container.record import EXITED, RUNNING, ContainerRecord
from oci.spec.inputs import (
    MountPropagation,
    NamespaceMode,
    SeccompProfileType,
    SupplementalGroupsPolicy,
)


def request(**config: object) -> pb.CreateContainerRequest:
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="web", attempt=2),
        image=pb.ImageSpec(image="busybox:latest", user_specified_image="busybox"),
        **config,  # type: ignore[arg-type]
    )
    return pb.CreateContainerRequest(pod_sandbox_id="pod1", config=cfg)


def test_basic_fields_map_to_the_domain_request() -> None:
    req = request(
        command=["sh", "-c"],
        args=["echo hi"],
        working_dir="/srv",
        envs=[pb.KeyValue(key="A", value=b"1"), pb.KeyValue(key="B", value="\u00e9".encode())],
        labels={"app": "web"},
        annotations={"a": "b"},
        log_path="web/2.log",
        tty=True,
        stop_signal=pb.SIGNAL_SIGINT,
    )
    out = create_request(req)
    c = out.container
    assert (out.pod_id, out.attempt, out.image, out.log_path) == (
        "pod1", 2, "busybox:latest", "web/2.log",
    )  # fmt: skip
    assert out.user_specified_image == "busybox"
    assert out.stop_signal == "SIGINT"
    assert (c.name, c.command, c.args, c.working_dir) == ("web", ("sh", "-c"), ("echo hi",), "/srv")
    assert c.envs == (("A", "1"), ("B", "\u00e9"))
    assert dict(c.labels) == {"app": "web"} and dict(c.annotations) == {"a": "b"}
    assert c.tty and not c.stdin


def test_security_context_namespaces_and_resources(tmp_path: Path) -> None:
    profile = tmp_path / "p.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    sc = pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["ALL"]),
        privileged=False,
        namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.TARGET, target_id="abc"),
        run_as_user=pb.Int64Value(value=0),
        run_as_group=pb.Int64Value(value=7),
        readonly_rootfs=True,
        supplemental_groups=[5, 6],
        supplemental_groups_policy=pb.Strict,
        no_new_privs=True,
        masked_paths=["/proc/x"],
        seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost,
                                   localhost_ref=str(profile)),
    )
    res = pb.LinuxContainerResources(
        cpu_shares=512, cpu_quota=50000, cpu_period=100000, memory_limit_in_bytes=1 << 26,
        cpuset_cpus="0", hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=4096)],
    )  # fmt: skip
    out = create_request(request(linux=pb.LinuxContainerConfig(resources=res, security_context=sc)))
    s = out.container.security
    assert s.capabilities.add == ("NET_ADMIN",) and s.capabilities.drop == ("ALL",)
    ns = s.namespace_options
    assert (ns.network, ns.pid, ns.ipc, ns.target_id) == (
        NamespaceMode.NODE, NamespaceMode.TARGET, NamespaceMode.POD, "abc",
    )  # fmt: skip
    assert s.run_as_user == 0 and s.run_as_group == 7  # zero is a value, not "unset"
    assert s.readonly_rootfs and s.no_new_privs
    assert s.supplemental_groups == (5, 6)
    assert s.supplemental_groups_policy is SupplementalGroupsPolicy.STRICT
    assert s.masked_paths == ("/proc/x",) and s.readonly_paths is None
    assert s.seccomp is not None and s.seccomp.type is SeccompProfileType.LOCALHOST
    assert s.seccomp.localhost_ref == str(profile)
    assert s.seccomp.loaded == {"defaultAction": "SCMP_ACT_ALLOW"}  # read before the pod lock
    r = out.container.resources
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes) == (
        512, 50000, 100000, 1 << 26,
    )  # fmt: skip
    assert r.cpuset_cpus == "0" and r.hugepage_limits[0].page_size == "2MB"


def test_seccomp_unset_is_unconfined_and_legacy_path_is_honoured() -> None:
    plain = create_request(request())
    assert plain.container.security.seccomp is None
    assert plain.container.security.run_as_user is None
    legacy = pb.LinuxContainerSecurityContext(seccomp_profile_path="runtime/default")
    out = create_request(request(linux=pb.LinuxContainerConfig(security_context=legacy)))
    assert out.container.security.seccomp is not None
    assert out.container.security.seccomp.type is SeccompProfileType.RUNTIME_DEFAULT
    explicit = pb.LinuxContainerSecurityContext(seccomp=pb.SecurityProfile())
    out = create_request(request(linux=pb.LinuxContainerConfig(security_context=explicit)))
    assert out.container.security.seccomp.type is SeccompProfileType.RUNTIME_DEFAULT


def test_mounts_keep_propagation_readonly_and_options() -> None:
    mounts = [
        pb.Mount(container_path="/a", host_path="/h/a", readonly=True,
                 propagation=pb.PROPAGATION_HOST_TO_CONTAINER, mount_options=["noexec"]),
        pb.Mount(container_path="/b", host_path="/h/b", propagation=pb.PROPAGATION_BIDIRECTIONAL),
    ]  # fmt: skip
    out = create_request(request(mounts=mounts)).container.mounts
    assert out[0].readonly and out[0].propagation is MountPropagation.HOST_TO_CONTAINER
    assert out[0].options == ("noexec",)
    assert not out[1].readonly and out[1].propagation is MountPropagation.BIDIRECTIONAL


def test_image_volumes_map_to_mounts_without_host_path() -> None:
    spec = pb.ImageSpec(image="sha256:" + "c" * 64, user_specified_image="reg/data:1")
    mounts = [pb.Mount(container_path="/data", image=spec, readonly=True, image_sub_path="etc",
                       mount_options=["noexec"])]  # fmt: skip
    [out] = create_request(request(mounts=mounts)).container.mounts
    assert (out.image, out.user_specified_image, out.image_sub_path) == (
        spec.image, "reg/data:1", "etc",
    )  # fmt: skip
    assert out.host_path == "" and out.readonly and out.options == ("noexec",)


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"mounts": [pb.Mount(container_path="/i", image=pb.ImageSpec(image="x"))]},
         "image volume '/i' must be readonly"),
        ({"mounts": [pb.Mount(container_path="/i", image=pb.ImageSpec(image="x"), readonly=True,
                              host_path="/h")]}, "both an image and host_path"),
        ({"mounts": [pb.Mount(container_path="/i", image=pb.ImageSpec(image="x"), readonly=True,
                              propagation=pb.PROPAGATION_BIDIRECTIONAL)]}, "must be private"),
        ({"mounts": [pb.Mount(container_path="/i", image=pb.ImageSpec(image="x"), readonly=True,
                              image_sub_path="a/../../b")]}, "without '..'"),
        ({"mounts": [pb.Mount(container_path="/i", image=pb.ImageSpec(image="x"), readonly=True,
                              image_sub_path="/etc")]}, "relative to the image's root"),
        ({"mounts": [pb.Mount(container_path="/i", host_path="/h", image_sub_path="etc")]},
         "names no image"),
        ({"envs": [pb.KeyValue(key="A", value=b"\xff")]}, "UTF-8"),
        ({"CDI_devices": [pb.CDIDevice(name="vendor.com/gpu=0")]}, "CDI"),
        ({"stop_signal": pb.SIGNAL_SIGRTMINPLUS3}, "real-time"),
    ],
)
def test_unsupported_requests_are_invalid(config: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        create_request(request(**config))


def test_missing_pod_name_or_image_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="pod_sandbox_id"):
        create_request(pb.CreateContainerRequest(config=request().config))
    bad = request()
    bad.config.image.image = ""
    with pytest.raises(InvalidArgument, match="image"):
        create_request(bad)


def test_signal_names_round_trip() -> None:
    assert signal_name(pb.SIGNAL_RUNTIME_DEFAULT) == ""
    for value in (pb.SIGNAL_SIGTERM, pb.SIGNAL_SIGKILL, pb.SIGNAL_SIGUSR1, pb.SIGNAL_SIGRTMAX):
        assert cri_signal(signal_name(value)) == value
    assert cri_signal("NOSUCH") == pb.SIGNAL_RUNTIME_DEFAULT


def record(**kw: object) -> ContainerRecord:
    base: dict[str, object] = dict(
        id="c" * 64, sandbox_id="p" * 64, name="k8s_web_pod_ns_uid_2", metadata_name="web",
        attempt=2, state=EXITED, created_at=1, runtime_handler="runc", image="busybox",
        image_id="sha256:" + "a" * 64, image_ref="reg/busybox@sha256:" + "b" * 64,
        bundle="/run/x", storage_dir="/var/x", log_path="/logs/web/2.log",
        stop_signal="SIGQUIT", labels={"l": "1"}, annotations={"an": "2"},
        mounts=[{"container_path": "/a", "host_path": "/h", "readonly": True,
                 "propagation": "HOST_TO_CONTAINER", "selinux_relabel": False,
                 "recursive_read_only": False}],
        resources={"cpu_shares": 2, "memory_limit_in_bytes": 10, "hugepage_limits": [],
                   "unified": {}},
        user={"uid": 1000, "gid": 1000, "additional_gids": [2000]},
        started_at=2, finished_at=3, exit_code=137, reason="OOMKilled", pid=42,
    )  # fmt: skip
    base.update(kw)
    return ContainerRecord(**base)  # type: ignore[arg-type]


def test_status_and_listing_messages() -> None:
    rec = record()
    st = to_pb_status(rec)
    assert st.state == pb.CONTAINER_EXITED and st.exit_code == 137 and st.reason == "OOMKilled"
    assert (st.created_at, st.started_at, st.finished_at) == (1, 2, 3)
    assert st.image.image == "busybox" and st.image_id == rec.image_id
    assert st.image_ref == rec.image_ref and st.log_path == "/logs/web/2.log"
    assert st.mounts[0].propagation == pb.PROPAGATION_HOST_TO_CONTAINER and st.mounts[0].readonly
    assert st.resources.linux.cpu_shares == 2 and st.resources.linux.memory_limit_in_bytes == 10
    assert st.user.linux.uid == 1000 and list(st.user.linux.supplemental_groups) == [2000]
    assert st.stop_signal == pb.SIGNAL_SIGQUIT
    assert st.metadata.name == "web" and st.metadata.attempt == 2
    c = to_pb_container(replace_state(rec, RUNNING))
    assert c.state == pb.CONTAINER_RUNNING and c.pod_sandbox_id == rec.sandbox_id
    assert dict(c.labels) == {"l": "1"} and c.image_id == rec.image_id
    info = json.loads(verbose_info(rec, {"ociVersion": "1.0.2"})["info"])
    assert info["pid"] == 42 and info["runtimeSpec"]["ociVersion"] == "1.0.2"


def test_status_reports_an_image_volume_with_its_image_id() -> None:
    volume = {"container_path": "/v", "host_path": "", "readonly": True,
              "propagation": "PRIVATE", "selinux_relabel": False, "recursive_read_only": False,
              "image": {"image": "reg/data:1", "user_specified_image": "data:1",
                        "image_id": "sha256:" + "d" * 64, "image_sub_path": "etc"}}  # fmt: skip
    st = to_pb_status(record(mounts=[*record().mounts, volume]))
    plain, image = st.mounts
    assert not plain.HasField("image") and plain.image_sub_path == ""
    assert (image.image.image, image.image.user_specified_image, image.image.image_ref) == (
        "reg/data:1", "data:1", "sha256:" + "d" * 64,
    )  # fmt: skip
    assert image.image_sub_path == "etc" and image.readonly and image.host_path == ""


def replace_state(rec: ContainerRecord, state: str) -> ContainerRecord:
    from dataclasses import replace

    return replace(rec, state=state)


def test_filter() -> None:
    rec = record(state=RUNNING)
    assert container_filter(pb.ContainerFilter()).matches(rec)  # type: ignore[union-attr]
    f = container_filter(pb.ContainerFilter(id="ccc", pod_sandbox_id="ppp",
                                            label_selector={"l": "1"}))  # fmt: skip
    assert f is not None and f.matches(rec)
    running = container_filter(
        pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))
    )
    exited = container_filter(
        pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_EXITED))
    )
    assert running is not None and running.matches(rec)
    assert exited is not None and not exited.matches(rec)
    assert not container_filter(pb.ContainerFilter(label_selector={"l": "2"})).matches(rec)  # type: ignore[union-attr]
    assert not container_filter(pb.ContainerFilter(id="cd")).matches(rec)  # type: ignore[union-attr]
    unknown = pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_UNKNOWN))
    assert container_filter(unknown) is None
