"""Request checks shared by the converters: enums, names, maps, paths.

The proto's enums are open: a client may send any number, which must come back as
INVALID_ARGUMENT naming the field and the values it takes, never as a KeyError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from base.errors import InvalidArgument
from base.text import check_no_nul, check_text, shorten

T = TypeVar("T")

# An object name the kubelet sends (pod, namespace, container): at most a DNS
# subdomain long, nothing that would break the sandbox and container names
# (k8s_<container>_<pod>_...), CNI_ARGS or a path.
MAX_NAME_LEN = 253
_BAD_NAME_CHARS = re.compile(r"[^!-~]|[/;=]")  # printable ASCII only (conmon took no other)
# Label and annotation keys are qualified names (prefix/name): bounded, printable.
MAX_KEY_LEN = 317  # a 253-character DNS prefix, '/', a 63-character name
# The API server caps a pod's annotations at 256 KiB in total; labels are far smaller.
MAX_MAP_BYTES = 256 << 10


def choice(enum: EnumTypeWrapper, table: Mapping[int, T], value: int, field: str) -> T:
    """The domain value for proto enum ``value``; InvalidArgument for any other number."""
    if value in table:
        return table[value]
    names = ", ".join(enum.Name(v) for v in table)
    try:
        given = enum.Name(value)
    except ValueError:
        given = str(value)
    raise InvalidArgument(f"{field} {given} is not supported; use one of {names}")


def object_name(value: str, field: str) -> str:
    """A pod, namespace, uid or container name the kubelet sends."""
    if not value:
        raise InvalidArgument(f"{field} is empty")
    if len(value) > MAX_NAME_LEN or _BAD_NAME_CHARS.search(value):
        raise InvalidArgument(
            f"{field} {shorten(value)} is not valid: at most {MAX_NAME_LEN} printable ASCII "
            "characters, without whitespace, '/', ';' or '='"
        )
    return value


def string_map(values: Mapping[str, str], field: str) -> dict[str, str]:
    """Labels or annotations: printable bounded keys, values without NUL, bounded in total.

    Values may hold any other text (annotations carry JSON and multi-line notes); they
    reach files only JSON-encoded.
    """
    total = 0
    for key, value in values.items():
        if not key:
            raise InvalidArgument(f"{field} has an empty key")
        check_text(key, f"{field} key", MAX_KEY_LEN)
        check_no_nul(value, f"{field}[{shorten(key)}]")
        total += len(key) + len(value)
    if total > MAX_MAP_BYTES:
        raise InvalidArgument(f"{field} hold {total} bytes in total; the limit is {MAX_MAP_BYTES}")
    return dict(values)
