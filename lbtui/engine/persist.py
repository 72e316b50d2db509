# SPDX-License-Identifier: Apache-2.0
"""Keeping the runtime overrides across restarts: restored from the state file at start (adopted data
path or fresh), written after every change (statefile.py says how).

The file is `settings.state_file`, else the instance's default under /var/lib/lbtui (given by whoever
builds the engine; none for an engine without one, e.g. in tests). A restart takes the overrides
back as a reload would keep them: a runtime weight or rate limit whose configured value the file
changed meanwhile is dropped (the file wins); `desired.prune` then drops what no longer exists.
Each dropped override and every problem with the file is an event; the load balancer starts anyway.
"""

from __future__ import annotations

import os

from lbtui import model
from lbtui.config import Config
from lbtui.engine.clock import Clock
from lbtui.engine.desired import Desired
from lbtui.engine.events import EventLog
from lbtui.engine.overrides import Dropped, Overrides, dropped
from lbtui.engine.statefile import (
    Saved,
    StateError,
    StateWriter,
    decode,
    encode,
    from_file,
    read,
    to_file,
)


class StateKeeper:
    def __init__(self, events: EventLog, clock: Clock, default_path: str | None):
        self._events = events
        self._clock = clock
        self._default_path = default_path
        self._writer = StateWriter(self._failed)
        self._kept: tuple[str, Saved] | None = None  # what was last handed to the writer, and where

    def path(self, config: Config) -> str | None:
        return config.settings.state_file or self._default_path

    # ---- at start -------------------------------------------------------------------------------

    def restore(self, config: Config, base: Desired) -> tuple[Overrides, Dropped]:
        """The overrides the state file holds, rebased on `base` (the configuration alone)."""
        path = self.path(config)
        if path is None:
            return Overrides(), []
        try:
            data = read(path)
            if data is None:
                return Overrides(), []
            saved = from_file(decode(data), self._clock)
        except StateError as exc:
            aside = self._move_aside(path)
            self._events.emit(
                "state",
                f"state file {path} cannot be used ({exc}); starting without runtime overrides{aside}",
                level=model.Level.ERROR,
            )
            return Overrides(), []
        restored = saved.overrides.rebased(
            saved.weights, base.configured_weights(), saved.limits, base.limits()
        )
        gone = dropped(saved.overrides, restored, _why_a_restart_drops)
        count = len(saved.overrides.entries())
        self._events.emit(
            "state", f"restored {count} runtime override{'s' if count != 1 else ''} from {path}"
        )
        self._kept = (path, saved)
        return restored, gone

    def _move_aside(self, path: str) -> str:
        aside = f"{path}.unreadable"
        try:
            os.replace(path, aside)
        except OSError:
            return ""
        return f"; it was moved to {aside}"

    # ---- on every change ------------------------------------------------------------------------

    def keep(self, config: Config, overrides: Overrides, base: Desired) -> None:
        """Have the state file hold `overrides` (with the configured values they override)."""
        path = self.path(config)
        if path is None:
            return
        weights = base.configured_weights()
        limits = base.limits()
        saved = Saved(
            overrides,
            weights={ref: weights[ref] for ref in overrides.weights if ref in weights},
            limits={p: limits[p] for p in overrides.limits if p in limits},
        )
        if self._kept == (path, saved):
            return
        self._kept = (path, saved)
        self._writer.submit(path, encode(to_file(saved, self._clock)))

    async def flush(self) -> None:
        """Until the newest state is on disk (commands answer only then)."""
        await self._writer.flush()

    def _failed(self, error: str) -> None:
        self._kept = None  # write again on the next change
        self._events.emit(
            "state",
            f"cannot save the runtime overrides to {error}; "
            "they are in force but would not survive a restart",
            level=model.Level.ERROR,
        )


def _why_a_restart_drops(e: model.OverrideView) -> str:
    if e.kind == "weight":
        return "the file changed its weight while lbtui was stopped"
    return "the file changed the proxy's rate limits while lbtui was stopped"
