# SPDX-License-Identifier: Apache-2.0
"""Runtime overrides: what operators changed at run time, kept apart from what the file says.

`Overrides` is a frozen value: every command makes a new one, and `desired.compose` lays it over the
configuration-derived state in one place. What survives what (docs/architecture.md#state):

- a DNS change keeps every override (the file did not change);
- a reload of a changed file keeps weights and rate limits the file did not change for that backend
  or proxy, keeps drains, and drops backends added or removed at run time (the file says again
  which backends exist, as HAProxy's and IPVS's reloads do);
- overrides of backends and proxies that no longer exist are pruned.

A state file (a later addition) persists exactly this value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from lbtui import model
from lbtui.dataplane.port import RateLimits

BackendRef = tuple[str, str]  # (proxy, "ip:port")


@dataclass(frozen=True)
class DrainOverride:
    state: model.DrainState  # DRAINING, then DRAINED once its flows are gone or the timeout passed
    deadline: float | None = None  # monotonic seconds
    cut: bool = False  # at the deadline, remove the flows still open


@dataclass(frozen=True)
class Overrides:
    weights: Mapping[BackendRef, int] = field(default_factory=dict)
    drains: Mapping[BackendRef, DrainOverride] = field(default_factory=dict)
    added: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # proxy -> address -> weight
    removed: Mapping[str, frozenset[str]] = field(default_factory=dict)  # proxy -> addresses
    limits: Mapping[str, RateLimits] = field(default_factory=dict)

    # ---- one change each (commands) -------------------------------------------------------------

    def with_weight(self, ref: BackendRef, weight: int) -> Overrides:
        return replace(self, weights={**self.weights, ref: weight})

    def with_drain(self, ref: BackendRef, drain: DrainOverride | None) -> Overrides:
        drains = {k: v for k, v in self.drains.items() if k != ref}
        if drain is not None:
            drains[ref] = drain
        return replace(self, drains=drains)

    def with_backend(self, proxy: str, address: str, weight: int) -> Overrides:
        """`address` added to the proxy's default group (again, if it was removed)."""
        added = {**self.added, proxy: {**self.added.get(proxy, {}), address: weight}}
        removed = {**self.removed, proxy: self.removed.get(proxy, frozenset()) - {address}}
        return replace(self, added=added, removed=removed)

    def without_backend(self, proxy: str, address: str) -> Overrides:
        """`address` taken out of the proxy's default group."""
        added = {**self.added, proxy: {a: w for a, w in self.added.get(proxy, {}).items() if a != address}}
        removed = {**self.removed, proxy: self.removed.get(proxy, frozenset()) | {address}}
        return replace(self, added=added, removed=removed)

    def with_limits(self, proxy: str, limits: RateLimits) -> Overrides:
        return replace(self, limits={**self.limits, proxy: limits})

    # ---- across configuration changes -----------------------------------------------------------

    def rebased(
        self,
        weights_before: Mapping[BackendRef, tuple[int, ...]],
        weights_after: Mapping[BackendRef, tuple[int, ...]],
        limits_before: Mapping[str, RateLimits],
        limits_after: Mapping[str, RateLimits],
    ) -> Overrides:
        """After a reload of a changed file: what the file changed wins; membership is the file's.

        The arguments are the configuration-derived weights and limits of the old and new file.
        """
        return Overrides(
            weights={
                ref: w for ref, w in self.weights.items() if weights_before.get(ref) == weights_after.get(ref)
            },
            drains=self.drains,
            limits={p: lim for p, lim in self.limits.items() if limits_before.get(p) == limits_after.get(p)},
        )

    def pruned(self, backends: set[BackendRef], proxies: set[str]) -> Overrides:
        """Without overrides of backends and proxies that no longer exist."""
        pruned = Overrides(
            weights={r: w for r, w in self.weights.items() if r in backends},
            drains={r: d for r, d in self.drains.items() if r in backends},
            added={p: a for p, a in self.added.items() if p in proxies and a},
            removed={p: r for p, r in self.removed.items() if p in proxies and r},
            limits={p: lim for p, lim in self.limits.items() if p in proxies},
        )
        return self if pruned == self else pruned


class Intent(Protocol):
    """Where runtime overrides live and change (the engine): a change is applied at once."""

    @property
    def overrides(self) -> Overrides: ...

    def change(self, overrides: Overrides, cause: str) -> None:
        """Make `overrides` the runtime overrides and the maps match; cause: for weight events."""
