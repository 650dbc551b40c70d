"""``peapod unit``: the systemd unit (package data ``cri/peapod.service``) for this install.

``ExecStart`` names the ``peapod`` command of the environment running this code: the
scripts directory of its Python installation (a venv's ``bin/``, or where pip puts
console scripts), else the first ``peapod`` on PATH.
"""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

TEMPLATE = Path(__file__).with_name("peapod.service")
PLACEHOLDER = "@PEAPOD@"


def installed_command() -> str:
    """The absolute path of this installation's ``peapod`` command."""
    candidate = Path(sysconfig.get_path("scripts")) / "peapod"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("peapod")
    if found is None:
        raise FileNotFoundError("no installed peapod command found (pip install peapod first)")
    return str(Path(found).resolve())


def render(command: str | None = None) -> str:
    """The unit text with ExecStart running ``command`` (default: the installed one)."""
    return TEMPLATE.read_text().replace(PLACEHOLDER, command or installed_command())
