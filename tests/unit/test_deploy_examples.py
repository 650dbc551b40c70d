"""The crictl example files in deploy/examples/ parse as the CRI messages crictl sends."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import json_format

from api import api_pb2 as pb

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def test_pod_example() -> None:
    pod = json_format.ParseDict(json.loads((EXAMPLES / "pod.json").read_text()),
                                pb.PodSandboxConfig())  # fmt: skip
    assert pod.metadata.name and pod.metadata.uid and pod.metadata.namespace
    assert pod.log_directory.startswith("/")


def test_container_example() -> None:
    ctr = json_format.ParseDict(json.loads((EXAMPLES / "container.json").read_text()),
                                pb.ContainerConfig())  # fmt: skip
    assert ctr.metadata.name and ctr.image.image and ctr.command and ctr.log_path
    assert ctr.linux.security_context.HasField("seccomp")
