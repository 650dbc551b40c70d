"""Image references: parsing, validation and docker.io normalisation.

Follows the docker/distribution reference grammar::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component ( "/" path-component )*
    domain     := host [ ":" port ]
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}

A name is *fully qualified* when its first component is a domain, i.e. it
contains a '.' or ':' or is 'localhost'. Anything else is a *short name*,
which only registries.conf can turn into real references.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from base.errors import InvalidArgument
from base.text import shorten

DOCKER_DOMAIN = "docker.io"
DOCKER_LEGACY_DOMAIN = "index.docker.io"
DEFAULT_TAG = "latest"
NAME_MAX = 255
TAG_MAX = 128
# name + ":" + tag + "@" + a sha512 digest, with room to spare.
MAX_REFERENCE_LEN = 1024
_ECHO = 300  # a valid reference is quoted whole in messages; a longer text is cut

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_DIGEST_HEX_LEN = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


_IMAGE_ID = re.compile(r"(sha256:)?[a-f0-9]{64}")


def _bad(text: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid image reference {shorten(text, _ECHO)}: {why}")


def _check_text(text: str) -> None:
    if text != text.strip():
        raise _bad(text, "it has leading or trailing whitespace")
    if len(text) > MAX_REFERENCE_LEN:
        raise _bad(text, f"it is longer than {MAX_REFERENCE_LEN} characters")


def _check_port(text: str, domain: str) -> None:
    """A registry port must be 1-65535 (the grammar alone takes any digits)."""
    _host, colon, port = domain.rpartition(":")
    if colon and port.isdigit() and not 0 < int(port) < 65536:
        raise _bad(text, f"registry port {shorten(port, 8)} is outside 1-65535")


def parse_digest(digest: str, context: str | None = None) -> tuple[str, str]:
    """Validate ``algorithm:hex`` and return ``(algorithm, hex)``.

    Only sha256 (64 hex) and sha512 (128 hex) are accepted, lowercase.
    """
    where = f"invalid image reference {shorten(context, _ECHO)}: " if context else ""
    algo, sep, hexpart = digest.partition(":")
    if not sep or not algo or not hexpart:
        raise InvalidArgument(
            f"{where}digest {shorten(digest, 140)} must look like 'sha256:<64 hex digits>'"
        )
    want = _DIGEST_HEX_LEN.get(algo)
    if want is None:
        raise InvalidArgument(
            f"{where}digest {shorten(digest, 140)} uses unsupported algorithm {shorten(algo, 16)}; "
            "use sha256 or sha512"
        )
    if len(hexpart) != want or not _HEX.fullmatch(hexpart):
        raise InvalidArgument(
            f"{where}digest {shorten(digest, 140)} must have exactly {want} lowercase hex digits "
            f"after '{algo}:'"
        )
    return algo, hexpart


def is_digest(text: str) -> bool:
    """Whether ``text`` is a valid, supported digest."""
    try:
        parse_digest(text)
    except InvalidArgument:
        return False
    return True


def validate_tag(tag: str, context: str | None = None) -> None:
    """Raise InvalidArgument unless ``tag`` is a valid tag."""
    where = context if context is not None else tag
    if not tag:
        raise _bad(where, "the tag is empty")
    if len(tag) > TAG_MAX:
        raise _bad(where, f"tag is {len(tag)} characters long; the limit is {TAG_MAX}")
    if not _TAG.fullmatch(tag):
        raise _bad(
            where,
            f"tag {shorten(tag)} may only contain letters, digits, '_', '.' and '-' "
            "and must not start with '.' or '-'",
        )


def validate_path(path: str, context: str | None = None) -> None:
    """Raise InvalidArgument unless ``path`` is a valid repository path."""
    where = context if context is not None else path
    if not path:
        raise _bad(where, "the repository name is empty")
    for component in path.split("/"):
        if not component:
            raise _bad(
                where,
                "the repository name has an empty path component ('//' or a "
                "leading or trailing '/')",
            )
        if not _PATH_COMPONENT.fullmatch(component):
            if component.lower() != component and _PATH_COMPONENT.fullmatch(component.lower()):
                raise _bad(where, f"repository name must be lowercase (got {shorten(component)})")
            raise _bad(
                where,
                f"path component {shorten(component)} may only contain lowercase letters, digits "
                "and single separators ('.', '_', '__' or dashes) between them",
            )


def is_valid_domain(text: str) -> bool:
    """Whether ``text`` is a syntactically valid registry ``host[:port]``."""
    return _DOMAIN.fullmatch(text) is not None


def looks_like_domain(component: str) -> bool:
    """Whether the first name component denotes a registry host."""
    return "." in component or ":" in component or component == "localhost"


def is_short_name(text: str) -> bool:
    """Whether ``text`` names no registry (e.g. ``busybox`` or ``library/busybox:1``)."""
    name = text.partition("@")[0]
    first, slash, _ = name.partition("/")
    return not slash or not looks_like_domain(first)


def _split(text: str) -> tuple[str, str | None, str | None]:
    """Split ``name[:tag][@digest]`` without validating the parts."""
    name, at, digest = text.partition("@")
    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, (digest if at else None)


@dataclass(frozen=True)
class Reference:
    """A fully qualified image reference."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``domain/path``, without tag or digest."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> Reference:
        """The same name with ``tag`` and no digest."""
        validate_tag(tag, f"{self.name}:{tag}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """The same name pinned to ``digest`` (any tag is dropped)."""
        parse_digest(digest, f"{self.name}@{digest}")
        return replace(self, tag=None, digest=digest)

    @property
    def identifier(self) -> str:
        """What to ask a registry for: the digest if there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG


def _check_parts(text: str, tag: str | None, digest: str | None) -> None:
    if tag is not None:
        validate_tag(tag, text)
    if digest is not None:
        parse_digest(digest, text)


def parse(text: str, default_tag: bool = True) -> Reference:
    """Parse a fully qualified reference, e.g. ``quay.io/a/b:1`` or ``localhost:5000/x@sha256:..``.

    ``docker.io/busybox`` becomes ``docker.io/library/busybox``, ``index.docker.io``
    becomes ``docker.io``, and ``latest`` is added when there is neither tag nor digest
    (unless ``default_tag`` is false). Short names raise InvalidArgument.
    """
    if not text or not text.strip():
        raise InvalidArgument("invalid image reference '': the image name is empty")
    _check_text(text)
    name, tag, digest = _split(text)
    first, slash, rest = name.partition("/")
    if not slash or not looks_like_domain(first):
        raise _bad(
            text,
            "it is not fully qualified; name the registry, e.g. 'docker.io/library/busybox'",
        )
    if not _DOMAIN.fullmatch(first):
        raise _bad(text, f"{shorten(first)} is not a valid registry host[:port]")
    _check_port(text, first)
    validate_path(rest, text)
    _check_parts(text, tag, digest)
    domain = DOCKER_DOMAIN if first == DOCKER_LEGACY_DOMAIN else first
    path = rest
    if domain == DOCKER_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise _bad(text, f"the repository name is longer than {NAME_MAX} characters")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


@dataclass(frozen=True)
class ShortName:
    """A reference without a registry, e.g. ``busybox:1.36`` → path ``busybox``."""

    path: str
    tag: str | None = None
    digest: str | None = None

    def qualify(self, domain: str, default_tag: bool = True) -> Reference:
        """This name at registry ``domain`` (docker.io adds ``library/`` for one component)."""
        text = f"{domain}/{self.path}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return parse(text, default_tag=default_tag)


def parse_short(text: str) -> ShortName:
    """Parse a short name such as ``busybox``, ``library/busybox:1`` or ``app@sha256:..``."""
    if not text or not text.strip():
        raise InvalidArgument("invalid image reference '': the image name is empty")
    _check_text(text)
    if not is_short_name(text):
        raise _bad(text, "it names a registry; it is not a short name")
    if _IMAGE_ID.fullmatch(text):
        raise _bad(
            text,
            "it is an image ID, not a name; images are pulled by name (repo:tag or "
            "repo@digest), and one already present is found by ID",
        )
    name, tag, digest = _split(text)
    validate_path(name, text)
    _check_parts(text, tag, digest)
    return ShortName(name, tag, digest)
