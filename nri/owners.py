"""Which plugin set which field of which container, and conflicts between plugins.

Within one event, a field (or one entry of a compound field: an annotation, a mount
destination, an environment variable...) belongs to the first plugin that sets or
removes it; another plugin touching it is a conflict that names both. OCI hooks are
the exception: every plugin may add some. The field names are NRI's ``Field``
values, which validator plugins receive.
"""

from __future__ import annotations

from api import nri_pb2


class Conflict(Exception):
    """Two plugins adjusted the same thing."""


class Owners:
    """Field ownership for the containers of one event."""

    def __init__(self) -> None:
        self._simple: dict[tuple[str, int], str] = {}
        self._compound: dict[tuple[str, int, str], str] = {}

    def claim(self, ctr_id: str, field: str, plugin: str, key: str | None = None) -> None:
        """``plugin`` sets ``field`` (entry ``key``); Conflict if another did first."""
        num = nri_pb2.Field.Value(field)
        slot: tuple[str, int] | tuple[str, int, str]
        if key is None:
            slot = (ctr_id, num)
            other = self._simple.get(slot)
        else:
            slot = (ctr_id, num, key)
            other = self._compound.get(slot)
        if other is not None and other.lstrip("-") != plugin:
            what = field if key is None else f"{field} {key!r}"
            raise Conflict(f"plugins {plugin} and {other.lstrip('-')} both tried to set {what} "
                           f"of container {ctr_id[:12]}")
        if key is None:
            self._simple[(ctr_id, num)] = plugin
        else:
            self._compound[(ctr_id, num, key)] = plugin

    def clear(self, ctr_id: str, field: str, plugin: str, key: str | None = None) -> None:
        """``plugin`` removes ``field`` (entry ``key``): the same rules as setting it."""
        self.claim(ctr_id, field, plugin, key)
        num = nri_pb2.Field.Value(field)
        if key is None:
            self._simple[(ctr_id, num)] = "-" + plugin
        else:
            self._compound[(ctr_id, num, key)] = "-" + plugin

    def add_to(self, ctr_id: str, field: str, plugin: str) -> None:
        """``plugin`` adds to an accumulating field (OCI hooks): never a conflict."""
        num = nri_pb2.Field.Value(field)
        old = self._simple.get((ctr_id, num))
        names = old.split(",") if old else []
        if plugin not in names:
            names.append(plugin)
        self._simple[(ctr_id, num)] = ",".join(names)

    def message(self) -> nri_pb2.OwningPlugins:
        """The ownership as validator plugins get it."""
        out = nri_pb2.OwningPlugins()
        for (ctr_id, num), plugin in self._simple.items():
            out.owners[ctr_id].simple[num] = plugin
        for (ctr_id, num, key), plugin in self._compound.items():
            out.owners[ctr_id].compound[num].owners[key] = plugin
        return out
