# SPDX-License-Identifier: Apache-2.0
"""A backend group: its members and the selection table they make (one table per group).

`Group` owns its members' runtime state and its table as the data path holds it. `plan()` composes
the members' effective weights (control.weights) and builds the next table (control.selection); it
returns the slots that change, which the caller writes to the map before `commit()` makes the plan
the group's state. The group never touches a map itself, so a failed write leaves it as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lbtui import model
from lbtui.addresses import format_endpoint
from lbtui.control import selection
from lbtui.control.supervisor import NEUTRAL, BackendKey, Factors
from lbtui.control.weights import BackendState, Composition, compose

# Weights are scaled before composition so that fractional factors (slow start, half-open trickle,
# least-connections 1/(1+active)) keep their proportions after rounding to integer slot weights.
WEIGHT_SCALE = 1000


@dataclass
class Member:
    """Runtime state of one backend in one group (mutable; never leaves the engine)."""

    id: int
    proxy: str
    group: str
    ip: str
    port: int
    configured: int  # from the configuration (a DNS name's share included)
    weight: int  # what selection uses: configured, or an operator's runtime weight
    source: str = "static"
    drain: model.DrainState = model.DrainState.ACTIVE
    maintenance: bool = False
    factors: Factors = NEUTRAL
    algorithm_factor: float = 1.0  # least-connections: 1 / (1 + live flows)
    effective: int = 0
    reason: str = ""
    active_flows: int = 0  # established flows not ended (the data path counts them)
    accepts_new: bool = True  # what lb_backends says (LB_BE_F_NO_NEW cleared): effective weight > 0

    @property
    def address(self) -> str:
        return format_endpoint(self.ip, self.port)

    @property
    def key(self) -> BackendKey:
        return BackendKey(self.proxy, self.address)

    def state(self, least_connections: bool) -> BackendState:
        return BackendState(
            key=self.address,
            configured=self.weight * WEIGHT_SCALE,
            health=self.factors.health,
            drained=self.drain != model.DrainState.ACTIVE,
            maintenance=self.maintenance,
            circuit=self.factors.circuit,
            algorithm=self.algorithm_factor if least_connections else 1.0,
        )


@dataclass(frozen=True)
class SlotDelta:
    """Slots of one group's table and the backend ids they get: what the map write must carry."""

    slots: np.ndarray
    backend_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.slots)


@dataclass(frozen=True)
class TablePlan:
    composition: Composition
    table: np.ndarray
    inputs: tuple[object, ...]
    delta: SlotDelta


def _no_table() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


def delta_between(old: np.ndarray, new: np.ndarray) -> SlotDelta:
    """The slots of `new` that differ from `old` (all of them when `old` is not a full table)."""
    slots = np.flatnonzero(old != new) if len(old) == len(new) else np.arange(len(new))
    return SlotDelta(slots, new[slots])


@dataclass
class Group:
    id: int
    label: str  # "default" or a source route's CIDR
    table_size: int
    members: dict[str, Member] = field(default_factory=dict)
    table: np.ndarray = field(default_factory=_no_table)  # slot -> backend id, as in the map
    inputs: tuple[object, ...] = ()  # what the table was last built from
    panic: bool = False

    def forget_table(self) -> None:
        """Build the next table from scratch (a new index scheme after an algorithm change)."""
        self.table = _no_table()

    def plan(self, algorithm: str) -> TablePlan:
        """Effective weights of the members and the table they make; the same weights make the
        same table, so then nothing changes."""
        comp = compose([m.state(algorithm == "least-connections") for m in self.members.values()])
        by_id = {m.id: comp.weights.get(m.address, 0) for m in self.members.values()}
        inputs = (algorithm, tuple(sorted(by_id.items())))
        built = len(self.table) == self.table_size
        if inputs == self.inputs and built:
            return TablePlan(comp, self.table, inputs, delta_between(self.table, self.table))
        if algorithm == "maglev":
            named = {m.id: (m.address, by_id[m.id]) for m in self.members.values() if by_id[m.id] > 0}
            table = np.asarray(
                selection.maglev_table(named, self.table_size)
                if named
                else [selection.EMPTY] * self.table_size,
                dtype=np.int64,
            )
        else:
            table = selection.weighted_table_array(by_id, self.table_size, self.table if built else None)
        return TablePlan(comp, table, inputs, delta_between(self.table, table))

    def commit(self, plan: TablePlan) -> list[tuple[Member, int]]:
        """Make a written plan the group's state; (member, old effective weight) of those changed."""
        self.table, self.inputs = plan.table, plan.inputs
        self.panic = plan.composition.panic
        changed = []
        for m in self.members.values():
            scaled = plan.composition.weights.get(m.address, 0)
            effective = max(1, round(scaled / WEIGHT_SCALE)) if scaled > 0 else 0
            m.reason = plan.composition.reasons.get(m.address, "")
            if effective != m.effective:
                changed.append((m, m.effective))
            m.effective = effective
        return changed
