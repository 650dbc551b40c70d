"""Running network operations (ADD, DEL, CHECK, STATUS, GC, VERSION) over a plugin chain."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from base.cancel import CallContext
from base.errors import Cancelled, DeadlineExceeded, Internal, PeapodError, Unavailable
from cni.attachment import Attachment
from cni.netconf import NetworkConfig
from cni.plugin_exec import exec_plugin, find_plugin
from cni.request import encode, plugin_env, request_config
from cni.result import Result, ResultInvalid, VersionInfo, parse_result, parse_version_info
from cni.runtime_conf import RuntimeConf
from cni.version import LATEST_VERSION

log = logging.getLogger(__name__)

DeleteTarget = Attachment | tuple[NetworkConfig, RuntimeConf, Result | Mapping[str, Any] | None]


class PluginObserver(Protocol):
    """Told how long each plugin run took (the daemon turns it into metrics)."""

    def plugin_ran(self, plugin: str, command: str, seconds: float) -> None: ...


class _NoObserver:
    def plugin_ran(self, plugin: str, command: str, seconds: float) -> None:
        pass


class _GcGate:
    """Many ADD/DEL/CHECK at once, or one GC alone (spec section 3, lifecycle)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._gc = False

    def _wait(self, ready: Any, ctx: CallContext) -> None:
        while not ready():
            timeout = ctx.timeout(0.1)
            self._cond.wait(0.1 if timeout is None else min(timeout, 0.1))

    def enter_attachment_op(self, ctx: CallContext) -> None:
        with self._cond:
            self._wait(lambda: not self._gc, ctx)
            self._active += 1

    def leave_attachment_op(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def enter_gc(self, ctx: CallContext) -> None:
        with self._cond:
            self._wait(lambda: not self._gc, ctx)
            self._gc = True
            try:
                self._wait(lambda: self._active == 0, ctx)
            except BaseException:
                self._gc = False
                self._cond.notify_all()
                raise

    def leave_gc(self) -> None:
        with self._cond:
            self._gc = False
            self._cond.notify_all()


def add_left_state(err: BaseException) -> bool:
    """True if ``err`` is a failed ADD whose rollback DEL failed too (state may remain)."""
    while err is not None:
        if getattr(err, "add_left_state", False):
            return True
        err = err.__cause__  # type: ignore[assignment]
    return False


def _with_note(err: PeapodError, note: str) -> PeapodError:
    """A copy of ``err`` (same class, reason and cause) with ``note`` appended."""
    copy = type(err)(f"{err.message}; {note}", reason=err.reason)
    copy.__cause__ = err.__cause__
    return copy


class CNIClient:
    """Runs CNI plugins found in ``plugin_dirs`` for configured networks.

    ``plugin_timeout`` caps each plugin run (on top of the caller's deadline);
    ``cleanup_timeout`` bounds the DEL that rolls back a failed ADD, which runs
    even when the caller's own deadline has passed.
    """

    def __init__(self, plugin_dirs: Sequence[str], plugin_timeout: float | None = 60.0,
                 cleanup_timeout: float = 30.0, observer: PluginObserver | None = None) -> None:
        self.plugin_dirs = list(plugin_dirs)
        self.observer: PluginObserver = observer or _NoObserver()
        self.plugin_timeout = plugin_timeout
        self.cleanup_timeout = cleanup_timeout
        self._gate = _GcGate()

    # -- one plugin run -------------------------------------------------------

    def _describe(self, network: NetworkConfig, index: int, command: str,
                  runtime: RuntimeConf | None) -> str:
        plugin = network.plugins[index]["type"]
        what = (f"CNI plugin {plugin!r} (plugin {index + 1} of {len(network.plugins)} in "
                f"network {network.name!r}")
        if network.source:
            what += f" from {network.source}"
        if runtime is not None:
            what += f", container {runtime.container_id}, ifname {runtime.ifname}"
        return f"{what}) {command}"

    def _run(self, network: NetworkConfig, index: int, command: str, ctx: CallContext,
             runtime: RuntimeConf | None = None, prev_result: Mapping[str, Any] | None = None,
             valid_attachments: Iterable[tuple[str, str]] | None = None) -> str:
        plugin = network.plugins[index]
        kind = str(plugin["type"])
        what = self._describe(network, index, command, runtime)
        path = find_plugin(kind, self.plugin_dirs, where=f"network {network.name!r}")
        conf = request_config(network, plugin, command, runtime, prev_result, valid_attachments)
        env = plugin_env(command, self.plugin_dirs, runtime)
        started = time.monotonic()
        try:
            return exec_plugin(path, plugin=kind, command=command, env=env, stdin=encode(conf),
                               ctx=ctx, cap=self.plugin_timeout, what=what)
        finally:
            self.observer.plugin_ran(kind, command, time.monotonic() - started)

    # -- ADD ------------------------------------------------------------------

    def add(self, network: NetworkConfig, runtime: RuntimeConf, ctx: CallContext) -> Attachment:
        """Run ADD through the chain; on failure run DEL over the plugins reached, then raise."""
        runtime.validate()
        for plugin in network.plugins:  # fail before any side effect if a binary is missing
            find_plugin(str(plugin["type"]), self.plugin_dirs, where=f"network {network.name!r}")
        self._gate.enter_attachment_op(ctx)
        try:
            return self._add_chain(network, runtime, ctx)
        finally:
            self._gate.leave_attachment_op()

    def _add_chain(self, network: NetworkConfig, runtime: RuntimeConf,
                   ctx: CallContext) -> Attachment:
        result: Result | None = None
        for index, plugin in enumerate(network.plugins):
            prev = result.raw if result is not None else None
            try:
                stdout = self._run(network, index, "ADD", ctx, runtime, prev)
                result = self._parse_add_output(network, index, runtime, stdout)
            except PeapodError as err:
                raise self._rolled_back(network, runtime, index, prev, err) from err.__cause__
            log.debug("CNI ADD %s/%s for %s: %s", network.name, plugin["type"],
                      runtime.container_id, stdout.strip())
        assert result is not None  # the chain has at least one plugin
        return Attachment(network=network, runtime=runtime, result=result)

    def _parse_add_output(self, network: NetworkConfig, index: int, runtime: RuntimeConf,
                          stdout: str) -> Result:
        what = self._describe(network, index, "ADD", runtime)
        kind = str(network.plugins[index]["type"])
        if not stdout.strip():
            raise Internal(f"{what} succeeded but printed no result", reason=kind)
        try:
            return parse_result(stdout, network.cni_version)
        except ResultInvalid as err:
            shown = stdout.strip()
            if len(shown) > 300:
                shown = shown[:300] + "..."
            raise Internal(f"{what} printed an invalid result: {err}; output: {shown}",
                           reason=kind) from None

    def _rolled_back(self, network: NetworkConfig, runtime: RuntimeConf, failed: int,
                     prev: Mapping[str, Any] | None, err: PeapodError) -> PeapodError:
        """DEL plugins ``failed`` .. 0 with their own budget; return ``err`` noting any trouble."""
        cleanup = CallContext.with_timeout(self.cleanup_timeout, "CNI ADD rollback")
        prev_for_del = prev if network.supports("0.4.0") else None
        problems: list[str] = []
        for index in range(failed, -1, -1):
            try:
                self._run(network, index, "DEL", cleanup, runtime, prev_for_del)
            except PeapodError as del_err:
                problems.append(del_err.message)
        if problems:
            noted = _with_note(err, "rolling back with DEL also failed: " + "; ".join(problems))
            noted.add_left_state = True  # type: ignore[attr-defined]
            return noted
        return _with_note(err, f"rolled back with DEL of the {failed + 1} plugin(s) run")

    # -- DEL / CHECK ----------------------------------------------------------

    def delete(self, target: DeleteTarget, ctx: CallContext) -> None:
        """Run DEL through the chain in reverse; tolerant of a missing netns, idempotent.

        ``target`` is an Attachment, or (network, runtime conf, ADD result or
        None) when no recorded attachment exists.
        """
        prev: Mapping[str, Any] | None
        if isinstance(target, Attachment):
            network, runtime, prev = target.network, target.runtime, target.raw_result
        else:
            network, runtime, result = target
            prev = result.raw if isinstance(result, Result) else result
        runtime.validate()
        if not network.supports("0.4.0"):
            prev = None  # prevResult on DEL arrived in spec 0.4.0
        self._gate.enter_attachment_op(ctx)
        try:
            for index in range(len(network.plugins) - 1, -1, -1):
                self._run(network, index, "DEL", ctx, runtime, prev)
        finally:
            self._gate.leave_attachment_op()

    def check(self, attachment: Attachment, ctx: CallContext) -> bool:
        """Run CHECK through the chain; False if skipped (spec < 0.4.0 or ``disableCheck``)."""
        network = attachment.network
        if network.disable_check or not network.supports("0.4.0"):
            return False
        attachment.runtime.validate()
        self._gate.enter_attachment_op(ctx)
        try:
            for index in range(len(network.plugins)):
                self._run(network, index, "CHECK", ctx, attachment.runtime,
                          attachment.raw_result)
        finally:
            self._gate.leave_attachment_op()
        return True

    # -- STATUS / GC / VERSION ------------------------------------------------

    def status(self, network: NetworkConfig, ctx: CallContext) -> None:
        """Raise Unavailable unless the network can take ADDs.

        Every plugin binary must be found; for spec >= 1.1.0 each plugin must
        also pass STATUS (the error names the first that does not). The
        caller's cancel or deadline is raised as such.
        """
        try:
            for plugin in network.plugins:
                find_plugin(str(plugin["type"]), self.plugin_dirs,
                            where=f"network {network.name!r}")
            if not network.supports("1.1.0"):
                return
            for index in range(len(network.plugins)):
                self._run(network, index, "STATUS", ctx)
        except (Cancelled, DeadlineExceeded, Unavailable):
            raise
        except PeapodError as err:
            not_ready = Unavailable(err.message, reason=err.reason)
            raise not_ready from err.__cause__

    def gc(self, network: NetworkConfig,
           valid_attachments: Iterable[Attachment | tuple[str, str]], ctx: CallContext) -> bool:
        """Run GC on every plugin with the still-valid attachments of this network.

        False if skipped (spec < 1.1.0 or ``disableGC``). All plugins run even
        if some fail; the error lists every failure. Stale attachments are not
        DEL'ed here: the caller, which holds them, must do that.
        """
        if network.disable_gc or not network.supports("1.1.0"):
            return False
        keys: list[tuple[str, str]] = []
        for item in valid_attachments:
            if isinstance(item, Attachment):
                if item.network_name == network.name:
                    keys.append(item.key)
            else:
                keys.append((item[0], item[1]))
        errors: list[PeapodError] = []
        self._gate.enter_gc(ctx)
        try:
            for index in range(len(network.plugins)):
                try:
                    self._run(network, index, "GC", ctx, valid_attachments=keys)
                except PeapodError as err:
                    errors.append(err)
        finally:
            self._gate.leave_gc()
        if len(errors) == 1:
            raise errors[0]
        if errors:
            first = errors[0]
            raise type(first)(f"GC of network {network.name!r} failed in {len(errors)} plugins: "
                              + "; ".join(e.message for e in errors), reason=first.reason)
        return True

    def version(self, plugin_type: str, ctx: CallContext) -> VersionInfo:
        """Ask a plugin which spec versions it supports (CNI_COMMAND=VERSION)."""
        path = find_plugin(plugin_type, self.plugin_dirs)
        what = f"CNI plugin {plugin_type!r} VERSION"
        env = plugin_env("VERSION", self.plugin_dirs)
        stdout = exec_plugin(
            path, plugin=plugin_type, command="VERSION", env=env,
            stdin=json.dumps({"cniVersion": LATEST_VERSION}).encode(), ctx=ctx,
            cap=self.plugin_timeout, what=what)
        try:
            return parse_version_info(stdout)
        except ResultInvalid as err:
            raise Internal(f"{what} printed an invalid answer: {err}", reason=plugin_type) from None
