# SPDX-License-Identifier: Apache-2.0
"""The one weight composition function (docs/architecture.md#who-gets-traffic).

effective = round(configured x health x drain x circuit x algorithm), at least 1 while the product is
above 0 (a half-open or slow-starting backend must keep a trickle). If that leaves every backend of
a group at 0 while some backend is neither drained nor in maintenance, the group panics: every such
backend gets its configured weight. Drained backends and backends in maintenance never get traffic,
not even in panic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PANIC_REASON = "panic: all backends down"


@dataclass(frozen=True)
class BackendState:
    key: str  # "ip:port"
    configured: int  # configured weight or runtime reweight
    health: float = 1.0  # 1.0 up (or unknown), 0.0 down, 0..1 slow-start ramp
    drained: bool = False  # draining or drained: no new flows
    circuit: float = 1.0  # 1.0 closed, 0.0 open, small (e.g. 0.05) half-open
    algorithm: float = 1.0  # least-connections: 1 / (1 + active connections)
    maintenance: bool = False  # in maintenance: no new flows either


@dataclass(frozen=True)
class Composition:
    weights: dict[str, int]  # key -> effective weight
    panic: bool
    reasons: dict[str, str]  # key -> short human text ("ok" when nothing reduces the weight)


def effective_weight(state: BackendState) -> int:
    """The backend's weight from its own factors alone (no panic rule)."""
    if state.drained or state.maintenance:
        return 0
    product = state.configured * state.health * state.circuit * state.algorithm
    if product <= 0:
        return 0
    return max(1, round(product))


def _percent(factor: float) -> str:
    return f"{round(factor * 100)}%"


def describe(state: BackendState) -> str:
    """Why the backend's weight is what it is, e.g. "health down, circuit open" or "ok"."""
    parts = []
    if state.maintenance:
        parts.append("maintenance")
    if state.drained:
        parts.append("draining")
    if state.configured <= 0:
        parts.append("weight 0")
    if state.health <= 0:
        parts.append("health down")
    elif state.health < 1:
        parts.append(f"slow start {_percent(state.health)}")
    if state.circuit <= 0:
        parts.append("circuit open")
    elif state.circuit < 1:
        parts.append("circuit half-open")
    if state.algorithm < 1:
        parts.append(f"least connections {_percent(state.algorithm)}")
    return ", ".join(parts) if parts else "ok"


def compose(group: Sequence[BackendState]) -> Composition:
    """Effective weights of one backend group (one selection table), with the panic rule."""
    weights = {s.key: effective_weight(s) for s in group}
    reasons = {s.key: describe(s) for s in group}
    if any(weights.values()):
        return Composition(weights, panic=False, reasons=reasons)

    # Everything is at 0. Panic only helps if some non-drained backend has a weight to fall back on;
    # drained backends, maintenance and an operator's weight 0 are deliberate and stay at 0.
    candidates = [s for s in group if not s.drained and not s.maintenance and s.configured > 0]
    if not candidates:
        return Composition(weights, panic=False, reasons=reasons)
    for s in candidates:
        weights[s.key] = s.configured
        reasons[s.key] = f"{PANIC_REASON} ({reasons[s.key]})"
    return Composition(weights, panic=True, reasons=reasons)
