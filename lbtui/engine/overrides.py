# SPDX-License-Identifier: Apache-2.0
"""Runtime overrides: what operators changed at run time, kept apart from what the file says.

`Overrides` is a frozen value: every command makes a new one, and `desired.overlay` lays it over the
configuration-derived state in one place; `desired.prune` drops what no longer applies to the
configuration, and the state file (statefile.py) keeps exactly this value across restarts. What
survives what (docs/architecture.md#state, README.md#runtime-state):

- a restart keeps every override that still matches the configuration (weights and rate limits
  only while the file has not changed the value they override);
- a DNS change keeps every override (the file did not change);
- a reload of a changed file keeps weights and rate limits the file did not change for that backend
  or proxy; keeps drains, maintenance, forced health, circuit holds and VIP withdrawals; and drops
  backends added or removed at run time (the file says again which backends exist, as HAProxy's and
  IPVS's reloads do);
- overrides of backends and proxies that no longer exist are dropped, each with an event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from lbtui import model
from lbtui.dataplane.port import RateLimits

K = TypeVar("K")
V = TypeVar("V")

BackendRef = tuple[str, str]  # (proxy, "ip:port"): the backend in every group of the proxy that has it
MemberRef = tuple[str, str, str]  # (proxy, group label, "ip:port"): the backend in one group


@dataclass(frozen=True)
class DrainOverride:
    state: model.DrainState  # DRAINING, then DRAINED once its flows are gone or the timeout passed
    deadline: float | None = None  # monotonic seconds
    cut: bool = False  # at the deadline, remove the flows still open


@dataclass(frozen=True)
class Overrides:
    weights: Mapping[BackendRef, int] = field(default_factory=dict)
    drains: Mapping[BackendRef, DrainOverride] = field(default_factory=dict)
    maintenance: frozenset[BackendRef] = frozenset()  # no new flows, health checks paused
    health: Mapping[BackendRef, model.Health] = field(default_factory=dict)  # forced UP or DOWN
    circuits: Mapping[BackendRef, model.Circuit] = field(default_factory=dict)  # held OPEN or CLOSED
    added: Mapping[MemberRef, int] = field(default_factory=dict)  # -> the weight it was added with
    removed: frozenset[MemberRef] = frozenset()
    limits: Mapping[str, RateLimits] = field(default_factory=dict)
    # proxies whose VIP the operator took out of BGP rotation (`announce withdraw`, engine/announce.py):
    # a VIP is one route, so a hold names every proxy on it and any of them holds it
    withdrawn: frozenset[str] = frozenset()

    # ---- one change each (commands) -------------------------------------------------------------

    def with_weight(self, ref: BackendRef, weight: int | None) -> Overrides:
        return replace(self, weights=_set(self.weights, ref, weight))

    def with_drain(self, ref: BackendRef, drain: DrainOverride | None) -> Overrides:
        return replace(self, drains=_set(self.drains, ref, drain))

    def with_maintenance(self, ref: BackendRef, on: bool) -> Overrides:
        return replace(self, maintenance=self.maintenance | {ref} if on else self.maintenance - {ref})

    def with_health(self, ref: BackendRef, health: model.Health | None) -> Overrides:
        return replace(self, health=_set(self.health, ref, health))

    def with_circuit(self, ref: BackendRef, hold: model.Circuit | None) -> Overrides:
        return replace(self, circuits=_set(self.circuits, ref, hold))

    def with_backend(self, member: MemberRef, weight: int) -> Overrides:
        """The backend added to one group of its proxy (again, if it was removed from it)."""
        return replace(self, added={**self.added, member: weight}, removed=self.removed - {member})

    def without_backend(self, proxy: str, address: str, groups: Iterable[str]) -> Overrides:
        """The backend taken out of these groups of its proxy, with everything else said about it."""
        members = {(proxy, g, address) for g in groups}
        return replace(
            self.cleared(proxy, address),
            added={m: w for m, w in self.added.items() if m not in members},
            # a backend the file has is remembered as removed; one added at run time just goes
            removed=self.removed | {m for m in members if m not in self.added},
        )

    def with_limits(self, proxy: str, limits: RateLimits) -> Overrides:
        return replace(self, limits={**self.limits, proxy: limits})

    def with_withdrawn(self, proxies: Iterable[str], on: bool) -> Overrides:
        held = self.withdrawn | set(proxies) if on else self.withdrawn - set(proxies)
        return replace(self, withdrawn=frozenset(held))

    def cleared(self, proxy: str | None = None, address: str | None = None) -> Overrides:
        """Without the overrides of a proxy (and only of one backend of it, if given), or without any.

        A backend's own overrides: weight, drain, maintenance, forced health, circuit hold, and its
        addition or removal; a proxy's: those of all its backends, its rate limits and its VIP's
        withdrawal."""
        if proxy is None:
            return Overrides()

        def keep_ref(ref: BackendRef) -> bool:
            return ref[0] != proxy or (address is not None and ref[1] != address)

        def keep_member(m: MemberRef) -> bool:
            return keep_ref((m[0], m[2]))

        return Overrides(
            weights={r: w for r, w in self.weights.items() if keep_ref(r)},
            drains={r: d for r, d in self.drains.items() if keep_ref(r)},
            maintenance=frozenset(r for r in self.maintenance if keep_ref(r)),
            health={r: h for r, h in self.health.items() if keep_ref(r)},
            circuits={r: c for r, c in self.circuits.items() if keep_ref(r)},
            added={m: w for m, w in self.added.items() if keep_member(m)},
            removed=frozenset(m for m in self.removed if keep_member(m)),
            limits={p: lim for p, lim in self.limits.items() if address is not None or p != proxy},
            withdrawn=frozenset(p for p in self.withdrawn if address is not None or p != proxy),
        )

    # ---- across configuration changes -----------------------------------------------------------

    def rebased(
        self,
        weights_before: Mapping[BackendRef, tuple[int, ...]],
        weights_after: Mapping[BackendRef, tuple[int, ...]],
        limits_before: Mapping[str, RateLimits],
        limits_after: Mapping[str, RateLimits],
    ) -> Overrides:
        """What the file changed wins: runtime weights and rate limits whose configured value changed
        between two configurations are dropped (the arguments are their configured values). Those of
        a backend or proxy the new one lacks are left to `desired.prune`, which says so."""
        return replace(
            self,
            weights={
                r: w
                for r, w in self.weights.items()
                if r not in weights_after or weights_before.get(r) == weights_after[r]
            },
            limits={
                p: lim
                for p, lim in self.limits.items()
                if p not in limits_after or limits_before.get(p) == limits_after[p]
            },
        )

    def without_membership(self) -> Overrides:
        """After a reload of a changed file: the file says again which backends exist."""
        return replace(self, added={}, removed=frozenset())

    def entries(self, now: float | None = None) -> tuple[model.OverrideView, ...]:
        """Every override as the operator reads it (`lbtui ctl overrides`, the snapshot).

        now: the monotonic time, to say how long a drain has left."""
        out = [_view("weight", ref, str(w)) for ref, w in sorted(self.weights.items())]
        out += [_view("drain", ref, _drain_text(d, now)) for ref, d in sorted(self.drains.items())]
        out += [
            _view("maintenance", ref, "no new connections, health checks paused")
            for ref in sorted(self.maintenance)
        ]
        out += [_view("health", ref, f"forced {h.value}") for ref, h in sorted(self.health.items())]
        out += [_view("circuit", ref, f"held {c.value}") for ref, c in sorted(self.circuits.items())]
        out += [
            model.OverrideView("added", p, a, g, f"added with weight {w}")
            for (p, g, a), w in sorted(self.added.items())
        ]
        out += [model.OverrideView("removed", p, a, g, "removed") for p, g, a in sorted(self.removed)]
        out += [
            model.OverrideView("rate_limit", p, None, None, limits_text(lim))
            for p, lim in sorted(self.limits.items())
        ]
        out += [
            model.OverrideView("withdrawn", p, None, None, "VIP out of BGP rotation until `announce`")
            for p in sorted(self.withdrawn)
        ]
        return tuple(out)


Dropped = list[tuple[model.OverrideView, str]]  # each override that went, and the line that says why


def dropped(before: Overrides, after: Overrides, why: Callable[[model.OverrideView], str]) -> Dropped:
    """Each override of `before` that `after` no longer has, with a line saying why it went."""
    kept = {_identity(e) for e in after.entries()}
    return [(e, f"{describe(e)} dropped: {why(e)}") for e in before.entries() if _identity(e) not in kept]


def describe(e: model.OverrideView) -> str:
    """`runtime weight 5 of web 10.0.2.11:8080`, `rate limits of web`, ..."""
    where = f"{e.proxy} {e.backend}" if e.backend else e.proxy
    if e.group and e.group != "default":
        where += f" (route {e.group})"
    what = {
        "weight": f"runtime weight {e.value}",
        "drain": "drain",
        "maintenance": "maintenance",
        "health": f"health {e.value}",
        "circuit": f"circuit {e.value}",
        "added": "backend added at run time",
        "removed": "backend removed at run time",
        "rate_limit": "runtime rate limits",
        "withdrawn": "VIP withdrawal",
    }[e.kind]
    return f"{what} of {where}"


def limits_text(lim: RateLimits) -> str:
    def one(rate: int, burst: int) -> str:
        return f"{rate}/s burst {burst}" if rate else "off"

    return f"per source {one(lim.src_rate, lim.src_burst)}, per backend {one(lim.be_rate, lim.be_burst)}"


def _identity(e: model.OverrideView) -> tuple[str, str, str | None, str | None]:
    return e.kind, e.proxy, e.group, e.backend


def _view(kind: str, ref: BackendRef, value: str) -> model.OverrideView:
    return model.OverrideView(kind, ref[0], ref[1], None, value)


def _drain_text(d: DrainOverride, now: float | None) -> str:
    if d.state is not model.DrainState.DRAINING:
        return d.state.value
    text = "draining"
    if d.deadline is not None and now is not None:
        text += f", timeout in {max(0.0, d.deadline - now):.0f} s"
    return text + (", then its flows are cut" if d.cut else "")


def _set(mapping: Mapping[K, V], key: K, value: V | None) -> dict[K, V]:
    """`mapping` with `key` set to `value`, or without it for None."""
    out = {k: v for k, v in mapping.items() if k != key}
    if value is not None:
        out[key] = value
    return out


class Intent(Protocol):
    """Where runtime overrides live and change (the engine): a change is applied at once."""

    @property
    def overrides(self) -> Overrides: ...

    def change(self, overrides: Overrides, cause: str) -> None:
        """Make `overrides` the runtime overrides and the maps match; cause: for weight events."""
