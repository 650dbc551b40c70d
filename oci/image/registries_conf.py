"""containers-registries.conf(5): where to pull an image from.

Reads the TOML file CRI-O, podman and skopeo share (normally
/etc/containers/registries.conf plus /etc/containers/registries.conf.d/*.conf):
short-name search registries and aliases, per-prefix ``[[registry]]`` tables
with location rewriting, mirrors, ``insecure`` and ``blocked``. The deprecated
v1 layout (``[registries.search]`` ...) is translated to the same model.

Drop-ins are applied in lexical order: a ``[[registry]]`` with the same prefix
replaces the earlier one, top-level keys present in a drop-in replace earlier
values, and aliases merge (an empty alias value removes the alias).
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.errors import InvalidArgument, PermissionDenied
from oci.image.reference import (
    DOCKER_DOMAIN,
    Reference,
    is_short_name,
    is_valid_domain,
    parse,
    parse_short,
)

PULL_ALL = "all"
PULL_DIGEST_ONLY = "digest-only"
PULL_TAG_ONLY = "tag-only"
_PULL_MODES = (PULL_ALL, PULL_DIGEST_ONLY, PULL_TAG_ONLY)
SHORT_NAME_MODES = ("enforcing", "permissive", "disabled")
DEFAULT_SHORT_NAME_MODE = "permissive"
DOCKER_ENDPOINT = "registry-1.docker.io"


def endpoint_for(domain: str) -> str:
    """The host[:port] to dial for a registry domain (docker.io is special)."""
    return DOCKER_ENDPOINT if domain in (DOCKER_DOMAIN, "index.docker.io") else domain


@dataclass(frozen=True)
class Mirror:
    """One ``[[registry.mirror]]`` table."""

    location: str
    insecure: bool = False
    pull_from_mirror: str = PULL_ALL

    def serves(self, by_digest: bool) -> bool:
        """Whether this mirror may be used for a pull by digest (or by tag)."""
        if self.pull_from_mirror == PULL_DIGEST_ONLY:
            return by_digest
        if self.pull_from_mirror == PULL_TAG_ONLY:
            return not by_digest
        return True


@dataclass(frozen=True)
class Registry:
    """One ``[[registry]]`` table; ``origin`` is the file that defined it."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    origin: str = ""

    @property
    def wildcard(self) -> bool:
        return self.prefix.startswith("*.")

    def match(self, ref: Reference) -> int | None:
        """Length of the part of ``str(ref)`` this prefix matches, or None."""
        text = str(ref)
        if self.wildcard:
            host = ref.domain.rsplit(":", 1)[0] if not ref.domain.startswith("[") else ""
            suffix = self.prefix[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return len(host)
            return None
        if "/" not in self.prefix:
            return len(self.prefix) if ref.domain == self.prefix else None
        if text == self.prefix:
            return len(text)
        if text.startswith(self.prefix) and text[len(self.prefix)] in "/:@":
            return len(self.prefix)
        return None


@dataclass(frozen=True)
class Source:
    """One place to try pulling from: ``endpoint`` to dial, ``repository`` there.

    ``reference`` is the tag or digest to ask that endpoint for.
    """

    endpoint: str
    repository: str
    insecure: bool
    mirror: bool
    reference: str = ""


@dataclass
class RegistriesConf:
    """The merged configuration of registries.conf and its drop-ins."""

    unqualified_search_registries: list[str] = field(default_factory=lambda: [DOCKER_DOMAIN])
    short_name_mode: str = DEFAULT_SHORT_NAME_MODE
    registries: list[Registry] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    search_origin: str = "peapod's default search list"

    def find(self, ref: Reference) -> Registry | None:
        """The ``[[registry]]`` with the longest matching prefix (exact beats wildcard)."""
        best: tuple[int, int] | None = None
        found: Registry | None = None
        for reg in self.registries:
            if reg.match(ref) is None:
                continue
            key = (len(reg.prefix), 0 if reg.wildcard else 1)
            if best is None or key > best:
                best, found = key, reg
        return found

    def candidates(self, image: str) -> list[Reference]:
        """Fully qualified references to try for ``image``, in order."""
        if not is_short_name(image):
            return [parse(image)]
        short = parse_short(image)
        alias = self.aliases.get(short.path)
        if alias:
            target = parse(alias, default_tag=False)
            tag = short.tag if short.tag is not None or short.digest is not None else "latest"
            return [Reference(target.domain, target.path, tag, short.digest)]
        if not self.unqualified_search_registries:
            raise InvalidArgument(
                f"short name {image!r}: no unqualified-search registries are configured "
                f"(see {self.search_origin}); use a fully qualified name such as "
                f"'docker.io/library/{short.path}'"
            )
        return [short.qualify(domain) for domain in self.unqualified_search_registries]

    def sources(self, ref: Reference) -> list[Source]:
        """Where to pull ``ref`` from: usable mirrors first, then the primary location."""
        reg = self.find(ref)
        if reg is None:
            return [Source(endpoint_for(ref.domain), ref.path, False, False, ref.identifier)]
        if reg.blocked:
            raise PermissionDenied(
                f"pulling {ref} is not allowed: registry prefix {reg.prefix!r} is blocked "
                f"in {reg.origin}",
                reason="BLOCKED",
            )
        by_digest = ref.digest is not None
        out = [
            _rewrite(ref, reg, m.location, m.insecure, True)
            for m in reg.mirrors
            if m.serves(by_digest)
        ]
        out.append(_rewrite(ref, reg, reg.location, reg.insecure, False))
        return out


def _rewrite(ref: Reference, reg: Registry, location: str, insecure: bool, mirror: bool) -> Source:
    matched = reg.match(ref)
    assert matched is not None
    target = ref
    if location:
        text = location + str(ref)[matched:]
        try:
            target = parse(text)
        except InvalidArgument as err:
            raise InvalidArgument(
                f"rewriting {ref} with location {location!r} from {reg.origin} gives an invalid "
                f"reference: {err.message}; fix the [[registry]] table with prefix {reg.prefix!r}"
            ) from None
    return Source(endpoint_for(target.domain), target.path, insecure, mirror, target.identifier)


# ---- file parsing ---------------------------------------------------------------------------


@dataclass
class _Partial:
    """What one file sets; None means "not set here"."""

    origin: str
    search: list[str] | None = None
    short_name_mode: str | None = None
    registries: list[Registry] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)


def _err(origin: str, key: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"registries configuration {origin}: {key}: {why}")


def _typed(table: dict[str, Any], key: str, kind: type, origin: str, where: str) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise _err(
            origin, f"{where}{key}", f"must be a {kind.__name__}, not {type(value).__name__}"
        )
    return value


def _str_list(table: dict[str, Any], key: str, origin: str, where: str = "") -> list[str] | None:
    value = _typed(table, key, list, origin, where)
    if value is None:
        return None
    if not all(isinstance(item, str) for item in value):
        raise _err(origin, f"{where}{key}", "must be a list of strings")
    return list(value)


def _location(value: str, origin: str, key: str) -> str:
    trimmed = value.strip().rstrip("/")
    if trimmed.startswith(("http://", "https://")):
        raise _err(origin, key, f"{value!r}: URL schemes are not allowed; write host[:port][/path]")
    if trimmed and not is_valid_domain(trimmed.split("/", 1)[0]):
        raise _err(origin, key, f"{value!r} does not start with a valid host[:port]")
    return trimmed


def _search_entry(value: str, origin: str, key: str) -> str:
    entry = value.strip().rstrip("/")
    if not is_valid_domain(entry):
        raise _err(origin, key, f"{value!r} is not a registry host[:port]")
    return entry


def _parse_registry(table: Any, origin: str, index: int) -> Registry:
    where = f"registry[{index}]."
    if not isinstance(table, dict):
        raise _err(origin, f"registry[{index}]", "must be a table")
    location = _typed(table, "location", str, origin, where) or ""
    prefix = _typed(table, "prefix", str, origin, where) or ""
    insecure = _typed(table, "insecure", bool, origin, where) or False
    blocked = _typed(table, "blocked", bool, origin, where) or False
    by_digest = _typed(table, "mirror-by-digest-only", bool, origin, where) or False
    if "pull-from-mirror" in table:
        raise _err(origin, f"{where}pull-from-mirror", "may only be set in [[registry.mirror]]")
    location = _location(location, origin, f"{where}location")
    prefix = prefix.strip()
    if not prefix.startswith("*."):
        prefix = _location(prefix, origin, f"{where}prefix")
    if not prefix:
        if not location:
            raise _err(origin, f"registry[{index}]", "needs a prefix or a location")
        prefix = location
    if prefix.startswith("*."):
        if any(c in prefix for c in "/:@") or len(prefix) < 3:
            raise _err(
                origin,
                f"{where}prefix",
                f"{prefix!r}: a wildcard prefix must look like "
                "'*.example.com' (no port, path, tag or digest)",
            )
    elif not location:
        raise _err(origin, f"{where}location", f"must be set for prefix {prefix!r}")
    raw_mirrors = _typed(table, "mirror", list, origin, where) or []
    mirrors = []
    for j, raw in enumerate(raw_mirrors):
        mwhere = f"{where}mirror[{j}]."
        if not isinstance(raw, dict):
            raise _err(origin, f"{where}mirror[{j}]", "must be a table")
        mloc = _location(
            _typed(raw, "location", str, origin, mwhere) or "", origin, f"{mwhere}location"
        )
        if not mloc:
            raise _err(origin, f"{mwhere}location", "must be set")
        minsecure = _typed(raw, "insecure", bool, origin, mwhere) or False
        mode = _typed(raw, "pull-from-mirror", str, origin, mwhere) or ""
        if mode and mode not in _PULL_MODES:
            raise _err(
                origin,
                f"{mwhere}pull-from-mirror",
                f"{mode!r} is not one of {', '.join(_PULL_MODES)}",
            )
        if by_digest and mode:
            raise _err(
                origin,
                f"{mwhere}pull-from-mirror",
                "cannot be combined with mirror-by-digest-only on the registry",
            )
        if by_digest:
            mode = PULL_DIGEST_ONLY
        mirrors.append(Mirror(mloc, minsecure, mode or PULL_ALL))
    return Registry(prefix, location, insecure, blocked, tuple(mirrors), origin)


def _check_conflicts(registries: list[Registry], origin: str) -> None:
    seen: dict[str, Registry] = {}
    for reg in registries:
        key = reg.location or reg.prefix
        other = seen.setdefault(key, reg)
        if other.insecure != reg.insecure:
            raise _err(
                origin,
                "registry",
                f"{key!r} is defined more than once with conflicting 'insecure' settings",
            )
        if other.blocked != reg.blocked:
            raise _err(
                origin,
                "registry",
                f"{key!r} is defined more than once with conflicting 'blocked' settings",
            )


def _parse_aliases(table: Any, origin: str) -> dict[str, str]:
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise _err(origin, "aliases", "must be a table")
    out: dict[str, str] = {}
    for name, value in table.items():
        key = f"aliases.{name!r}"
        if not isinstance(value, str):
            raise _err(origin, key, "must be a string")
        try:
            short = parse_short(name)
        except InvalidArgument as err:
            raise _err(origin, key, f"the alias name must be a short name: {err.message}") from None
        if short.tag is not None or short.digest is not None:
            raise _err(origin, key, "the alias name must not have a tag or digest")
        if value:
            try:
                target = parse(value, default_tag=False)
            except InvalidArgument as err:
                raise _err(
                    origin, key, f"the value must be a fully qualified name: {err.message}"
                ) from None
            if target.tag is not None or target.digest is not None:
                raise _err(origin, key, "the value must not have a tag or digest")
        out[name] = value
    return out


def _from_v1(doc: dict[str, Any], origin: str) -> _Partial:
    table = doc["registries"]
    if not isinstance(table, dict):
        raise _err(origin, "registries", "must be a table")
    lists: dict[str, list[str]] = {}
    for section in ("search", "insecure", "block"):
        sub = _typed(table, section, dict, origin, "registries.")
        lists[section] = (
            _str_list(sub, "registries", origin, f"registries.{section}.") or [] if sub else []
        )
    order: list[str] = []
    flags: dict[str, dict[str, bool]] = {}
    for section, flag in (("block", "blocked"), ("insecure", "insecure")):
        for entry in lists[section]:
            loc = _location(entry, origin, f"registries.{section}.registries")
            if not loc:
                raise _err(origin, f"registries.{section}.registries", "has an empty entry")
            if loc not in flags:
                order.append(loc)
                flags[loc] = {"blocked": False, "insecure": False}
            flags[loc][flag] = True
    partial = _Partial(origin)
    partial.registries = [
        Registry(loc, loc, flags[loc]["insecure"], flags[loc]["blocked"], (), origin)
        for loc in order
    ]
    sub = table.get("search")
    if sub and "registries" in sub:
        partial.search = [
            _search_entry(e, origin, "registries.search.registries") for e in lists["search"]
        ]
    return partial


_V2_KEYS = ("registry", "unqualified-search-registries", "short-name-mode", "aliases")


def _parse_doc(doc: dict[str, Any], origin: str, dropin: bool) -> _Partial:
    if "registries" in doc:
        if dropin:
            raise _err(
                origin,
                "registries",
                "drop-in files must use the v2 format "
                "([[registry]] tables), not [registries.search] and friends",
            )
        if any(k in doc for k in _V2_KEYS):
            raise _err(
                origin,
                "registries",
                "mixes the v1 format ([registries.*]) with v2 keys; use one format per file",
            )
        return _from_v1(doc, origin)
    partial = _Partial(origin)
    search = _str_list(doc, "unqualified-search-registries", origin)
    if search is not None:
        partial.search = [_search_entry(e, origin, "unqualified-search-registries") for e in search]
    mode = _typed(doc, "short-name-mode", str, origin, "")
    if mode:
        if mode not in SHORT_NAME_MODES:
            raise _err(
                origin, "short-name-mode", f"{mode!r} is not one of {', '.join(SHORT_NAME_MODES)}"
            )
        partial.short_name_mode = mode
    raw = _typed(doc, "registry", list, origin, "") or []
    regs = [_parse_registry(t, origin, i) for i, t in enumerate(raw)]
    _check_conflicts(regs, origin)
    unique: dict[str, Registry] = {}
    for reg in regs:
        unique.setdefault(reg.prefix, reg)  # the first table with a prefix wins
    partial.registries = list(unique.values())
    partial.aliases = _parse_aliases(doc.get("aliases"), origin)
    return partial


def parse_text(text: str, origin: str = "<text>", dropin: bool = False) -> _Partial:
    """Parse one file's contents; ``origin`` names it in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InvalidArgument(
            f"registries configuration {origin} is not valid TOML: {err}"
        ) from None
    return _parse_doc(doc, origin, dropin)


def _read(path: Path, dropin: bool) -> _Partial | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"cannot read registries configuration {path}: {err}") from None
    return parse_text(text, str(path), dropin)


def load(
    path: Path | None,
    dropin_dir: Path | None = None,
    default_search: Sequence[str] = (DOCKER_DOMAIN,),
) -> RegistriesConf:
    """Load ``path`` (absent → defaults) then ``dropin_dir/*.conf`` in lexical order."""
    parts: list[_Partial] = []
    if path is not None:
        main = _read(path, dropin=False)
        if main is not None:
            parts.append(main)
    if dropin_dir is not None and dropin_dir.is_dir():
        for entry in sorted(dropin_dir.iterdir(), key=lambda p: p.name):
            if entry.name.endswith(".conf") and entry.is_file():
                part = _read(entry, dropin=True)
                if part is not None:
                    parts.append(part)
    return merge(parts, default_search)


def merge(
    parts: Sequence[_Partial], default_search: Sequence[str] = (DOCKER_DOMAIN,)
) -> RegistriesConf:
    """Combine parsed files, later ones overriding earlier ones."""
    conf = RegistriesConf(unqualified_search_registries=list(default_search))
    by_prefix: dict[str, Registry] = {}
    for part in parts:
        if part.search is not None:
            conf.unqualified_search_registries = list(part.search)
            conf.search_origin = part.origin
        if part.short_name_mode is not None:
            conf.short_name_mode = part.short_name_mode
        for reg in part.registries:
            by_prefix[reg.prefix] = reg
        for name, value in part.aliases.items():
            if value:
                conf.aliases[name] = value
            else:
                conf.aliases.pop(name, None)
    conf.registries = [by_prefix[p] for p in sorted(by_prefix)]
    return conf
