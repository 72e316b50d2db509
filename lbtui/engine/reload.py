# SPDX-License-Identifier: Apache-2.0
"""Reload: parse and check the file, apply the difference, roll back on any failure; and the file
watch that reloads when the file changes.

The file is read and parsed off the engine's loop, and only a regular file of bounded size
(config.load_regular_config): a FIFO, a device or a huge file never stalls the load balancer. A
refused or failed reload leaves everything as it was: the configuration, the runtime overrides,
every selection table slot for slot, the interfaces and the observability settings. Established
flows are never disturbed by a reload (docs/architecture.md#invariants). The watch follows the
file the running configuration came from, also after a reload from another path, and only while
settings.watch_config is on (a reload that turns it on or off starts or stops it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Protocol

import watchfiles

from lbtui import model
from lbtui.config import Config, ConfigError, load_regular_config
from lbtui.engine.desired import Desired, overlay, prune
from lbtui.engine.events import EventLog
from lbtui.engine.instance import restart_needed
from lbtui.engine.overrides import Dropped, Overrides, dropped
from lbtui.engine.plan import config_changes, restart_changes, topology_changes
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

    def report_dropped(self, gone: Dropped) -> None:
        """An event for each runtime override that went."""

    def publish(self) -> None: ...


class Reloader:
    def __init__(self, target: ReloadTarget, topology: Topology, events: EventLog):
        self._target = target
        self._topology = topology
        self._events = events
        self.watching = asyncio.Event()  # set once the file watch is live (or gave up)
        self._rewatch = asyncio.Event()  # the file to watch, or whether to watch, changed

    async def reload(self, path: str | None = None, dry_run: bool = False) -> model.CommandResult:
        """Read and validate (off the loop), apply the difference; on any failure roll back.

        The result's `changes` is the change list (plan.py); dry_run: the same list, nothing applied
        and no event."""
        target = self._target
        path = path or target.config.path
        if not path:
            return model.CommandResult(False, "no configuration file to reload (started from a string)")
        t0 = time.perf_counter()
        try:
            new = await asyncio.to_thread(load_regular_config, path)
        except ConfigError as exc:
            if not dry_run:
                self._events.emit(
                    "reload", f"reload refused, configuration unchanged:\n{exc}", level=model.Level.ERROR
                )
            return model.CommandResult(False, str(exc))
        old, old_overrides = target.config, target.overrides
        if restart_needed(old, new):
            lines = tuple(restart_changes(old, new))
            keys = [line.split()[0] for line in lines]
            verb = "needs" if len(keys) == 1 else "need"
            msg = f"{path}: {', '.join(keys)} {verb} a restart; configuration unchanged"
            if not dry_run:
                self._events.emit("reload", f"{msg}: {'; '.join(lines)}", level=model.Level.ERROR)
            return model.CommandResult(False, msg, lines)
        if new == old:
            if dry_run:
                return model.CommandResult(True, "nothing would change")
            if new.path != old.path:  # the same settings from another file: follow that one now
                target.install(new, old_overrides)
                self._rewatch.set()
            self._events.emit("reload", f"reloaded {path}: nothing changed")
            return model.CommandResult(True, "nothing changed")
        overrides, gone = self._rebase(old, new, old_overrides)
        planned = topology_changes(self._topology, overlay(target.from_config(new), overrides))
        said = config_changes(old, new) + [line for _, line in gone]
        if dry_run:
            n = len(planned) + len(said)
            what = f"{n} change{'' if n == 1 else 's'}"
            return model.CommandResult(True, f"a reload of {path} would make {what}", (*planned, *said))
        saved_tables = self._topology.save_tables()
        try:
            applied = target.install(new, overrides)
            target.apply_settings(new)
        except Exception as exc:
            log.exception("reload")
            target.install(old, old_overrides)
            self._topology.restore_tables(saved_tables)
            target.apply_settings(old)
            msg = f"reload of {path} failed and was rolled back: {exc}"
            self._events.emit("reload", msg, level=model.Level.ERROR)
            return model.CommandResult(False, msg)
        target.report_dropped(gone)
        if applied != planned:  # plan.py and Topology.apply disagree: a bug in one of them
            log.error("reload of %s: planned %s, applied %s", path, planned, applied)
        if (new.path, new.settings.watch_config) != (old.path, old.settings.watch_config):
            self._rewatch.set()
        changes = (*applied, *said)
        summary = "; ".join(changes) if changes else "settings changed"
        took_ms = (time.perf_counter() - t0) * 1000
        self._events.emit("reload", f"reloaded {path} in {took_ms:.1f} ms: {summary}")
        return model.CommandResult(True, f"{summary} (applied in {took_ms:.1f} ms)", changes)

    def _rebase(self, old: Config, new: Config, overrides: Overrides) -> tuple[Overrides, Dropped]:
        """The overrides a reload from `old` to `new` keeps (README.md#runtime-state), pruned against
        the new file, and why each of the others goes."""
        before, after = self._target.from_config(old), self._target.from_config(new)
        kept, gone = prune(overrides, after)  # what the file no longer has: said so first
        rebased = kept.rebased(
            before.configured_weights(), after.configured_weights(), before.limits(), after.limits()
        ).without_membership()
        final, orphans = prune(rebased, after)  # e.g. the drain of a backend added at run time
        return final, gone + dropped(kept, rebased, _why_a_reload_drops) + orphans

    async def watch(self) -> None:
        """While settings.watch_config is on, reload when the configuration file changes (editors
        that replace the file included); after a reload from another file, watch that one."""
        try:
            while True:
                self._rewatch.clear()
                config = self._target.config
                path = config.path if config.settings.watch_config else None
                if path:
                    await self._watch(path)
                else:
                    self.watching.set()
                    await self._rewatch.wait()
        finally:
            self.watching.set()

    async def _watch(self, path: str) -> None:
        """Watch `path` until the running configuration comes from another file."""
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
                step=250,
                rust_timeout=500,
                yield_on_timeout=True,
                stop_event=self._rewatch,
            ):
                if not ready:
                    # the watcher is live; a change made while it was starting would be missed
                    ready = True
                    self.watching.set()
                    if await self._file_differs(target):
                        await self._reload_and_publish()
                if changes and os.path.exists(target):
                    await self._reload_and_publish()
        except Exception:
            log.exception("watching %s: reloads need SIGHUP or `lbtui ctl reload` now", path)
            self.watching.set()
            await self._rewatch.wait()  # until a reload switches files: then try that one

    async def _reload_and_publish(self) -> None:
        await self.reload()
        self._target.publish()

    async def _file_differs(self, path: str) -> bool:
        try:
            return await asyncio.to_thread(load_regular_config, path) != self._target.config
        except ConfigError:
            return True  # reload() reports the error


def _why_a_reload_drops(e: model.OverrideView) -> str:
    if e.kind == "weight":
        return "the file changed its weight"
    if e.kind == "rate_limit":
        return "the file changed the proxy's rate limits"
    return "a reload of a changed file takes the file's backends"
