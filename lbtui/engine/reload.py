# SPDX-License-Identifier: Apache-2.0
"""Reload: parse and check the file, apply the difference, roll back on any failure; and the file
watch that reloads when the file changes.

A refused or failed reload leaves everything as it was: the configuration, the runtime overrides,
every selection table slot for slot, the interfaces and the observability settings. Established
flows are never disturbed by a reload (docs/architecture.md#invariants).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Protocol

import watchfiles

from lbtui import model
from lbtui.config import Config, ConfigError, load_config
from lbtui.dataplane.families import refuse_unbuilt_families
from lbtui.engine.desired import Desired
from lbtui.engine.events import EventLog
from lbtui.engine.instance import restart_needed
from lbtui.engine.overrides import Overrides
from lbtui.engine.topology import Topology

log = logging.getLogger(__name__)

WATCH_START_TIMEOUT_S = 5.0


class ReloadTarget(Protocol):
    """What a reload changes (the engine)."""

    @property
    def config(self) -> Config: ...

    @property
    def overrides(self) -> Overrides: ...

    def from_config(self, config: Config) -> Desired:
        """The configuration alone, with the DNS answers the engine has."""

    def install(self, config: Config, overrides: Overrides) -> list[str]:
        """Make `config` with `overrides` the running state (maps included); what changed."""

    def apply_settings(self, config: Config) -> None:
        """Interfaces and observability as `config` wants them."""

    def publish(self) -> None: ...


class Reloader:
    def __init__(self, target: ReloadTarget, topology: Topology, events: EventLog):
        self._target = target
        self._topology = topology
        self._events = events
        self.watching = asyncio.Event()  # set once the file watch is live (or gave up)

    def reload(self, path: str | None = None) -> model.CommandResult:
        """Parse, validate, apply the difference; on any failure roll back to the running state."""
        target = self._target
        path = path or target.config.path
        if not path:
            return model.CommandResult(False, "no configuration file to reload (started from a string)")
        t0 = time.perf_counter()
        try:
            new = load_config(path)
            refuse_unbuilt_families(new)
        except ConfigError as exc:
            self._events.emit(
                "reload", f"reload refused, configuration unchanged:\n{exc}", level=model.Level.ERROR
            )
            return model.CommandResult(False, str(exc))
        old, old_overrides = target.config, target.overrides
        if restart_needed(old, new):
            msg = (
                f"{path}: settings.table_size, settings.max_connections, settings.xdp_mode and "
                "settings.control_socket need a restart; configuration unchanged"
            )
            self._events.emit("reload", msg, level=model.Level.ERROR)
            return model.CommandResult(False, msg)
        if new == old:
            self._events.emit("reload", f"reloaded {path}: nothing changed")
            return model.CommandResult(True, "nothing changed")
        before, after = target.from_config(old), target.from_config(new)
        overrides = old_overrides.rebased(
            before.configured_weights(), after.configured_weights(), before.limits(), after.limits()
        )
        saved_tables = self._topology.save_tables()
        try:
            changes = target.install(new, overrides)
            target.apply_settings(new)
        except Exception as exc:
            log.exception("reload")
            target.install(old, old_overrides)
            self._topology.restore_tables(saved_tables)
            target.apply_settings(old)
            msg = f"reload of {path} failed and was rolled back: {exc}"
            self._events.emit("reload", msg, level=model.Level.ERROR)
            return model.CommandResult(False, msg)
        summary = "; ".join(changes) if changes else "settings changed"
        took_ms = (time.perf_counter() - t0) * 1000
        self._events.emit("reload", f"reloaded {path} in {took_ms:.1f} ms: {summary}")
        return model.CommandResult(True, f"{summary} (applied in {took_ms:.1f} ms)")

    async def watch(self) -> None:
        """Reload when the configuration file changes (editors that replace the file included)."""
        path = self._target.config.path
        if not path:
            self.watching.set()
            return
        target = os.path.realpath(path)
        directory = os.path.dirname(target)

        def is_ours(_change: watchfiles.Change, changed: str) -> bool:
            return os.path.realpath(changed) == target

        ready = False
        try:
            async for changes in watchfiles.awatch(
                directory,
                recursive=False,  # the file's own directory only (it may be /tmp or /etc)
                watch_filter=is_ours,
                debounce=200,
                step=50,
                rust_timeout=500,
                yield_on_timeout=True,
            ):
                if not ready:
                    # the watcher is live; a change made while it was starting would be missed
                    ready = True
                    self.watching.set()
                    if self._file_differs(target):
                        self.reload()
                        self._target.publish()
                if changes and os.path.exists(target):
                    self.reload()
                    self._target.publish()
        except Exception:
            log.exception("watching %s: reloads need SIGHUP or `lbtui ctl reload` now", path)
        finally:
            self.watching.set()

    def _file_differs(self, path: str) -> bool:
        try:
            return load_config(path) != self._target.config
        except ConfigError:
            return True  # reload() reports the error
