# SPDX-License-Identifier: Apache-2.0
"""The running intent: the configuration and the operators' runtime overrides, composed in one place.

Every change of either (start, a command, a reload or its rollback, a DNS answer) goes through
`apply`: the overrides that no longer fit the configuration are dropped (each with an event), the
capacity is checked before anything is written, the supervisors get the operators' holds, the
topology makes the maps match and the state file keeps the overrides (docs/architecture.md#state).
"""

from __future__ import annotations

from lbtui import model
from lbtui.config import Config
from lbtui.dataplane.port import DataplaneSpec
from lbtui.engine.desired import Desired, check_capacity, from_config, overlay, prune
from lbtui.engine.events import EventLog
from lbtui.engine.overrides import Dropped, Overrides
from lbtui.engine.persist import StateKeeper
from lbtui.engine.supervision import Supervision
from lbtui.engine.topology import Topology


class Intended:
    """Owns the configuration and the runtime overrides; the engine's Intent and ReloadTarget."""

    def __init__(
        self,
        config: Config,
        spec: DataplaneSpec,
        topology: Topology,
        supervision: Supervision,
        state: StateKeeper,
        events: EventLog,
    ):
        self.config = config
        self._overrides = Overrides()
        self._spec = spec
        self._topology = topology
        self._supervision = supervision
        self._state = state
        self._events = events

    @property
    def overrides(self) -> Overrides:
        return self._overrides

    def from_config(self, config: Config) -> Desired:
        """The configuration alone, with the DNS answers the engine has."""
        return from_config(config, self._supervision.addresses)

    def restore(self) -> None:
        """The overrides the state file kept (an earlier run's, adopted data path or fresh)."""
        overrides, gone = self._state.restore(self.config, self.from_config(self.config))
        self.report_dropped(gone)
        self._overrides = overrides

    def apply(
        self, cause: str, full: bool = True, first: bool = False, overrides: Overrides | None = None
    ) -> list[str]:
        """Compose the configuration and the overrides and make the maps match; what changed.

        CapacityError (nothing written, the overrides unchanged) if the maps cannot hold it."""
        base = self.from_config(self.config)
        kept, gone = prune(self._overrides if overrides is None else overrides, base)
        desired = overlay(base, kept)
        check_capacity(desired, self._spec)
        self._overrides = kept
        self.report_dropped(gone)
        self._supervision.configure(self.config, desired, self._overrides)
        changes = self._topology.apply(desired, cause, full=full, first=first)
        self._state.keep(self.config, self._overrides, base)
        return changes

    def report_dropped(self, gone: Dropped) -> None:
        for override, line in gone:
            self._events.emit(
                "override", line, level=model.Level.WARNING, proxy=override.proxy, backend=override.backend
            )

    def change(self, overrides: Overrides, cause: str) -> None:
        """New runtime overrides (a command), applied at once to the groups they touch."""
        self.apply(cause, full=False, overrides=overrides)

    def install(self, config: Config, overrides: Overrides) -> list[str]:
        """A new configuration with its overrides (reload, rollback)."""
        self.config, self._overrides = config, overrides
        return self.apply("configuration")
