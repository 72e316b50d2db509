# SPDX-License-Identifier: Apache-2.0
"""Health checks and circuit breakers of every backend, in one place (docs/architecture.md#who-gets-traffic).

`BackendSupervisor` runs the health checks (control.health.HealthChecker) and one circuit breaker
(control.circuit.CircuitBreaker) per backend, turns their transitions into engine events and tells
the engine, through `on_change`, when a backend's health or circuit factor changed enough to
recompute its effective weight. It never touches the data path: the engine feeds it counter totals
(`observe_counters`) and calls `tick()` every 250 ms.

What operators decided comes with each backend's `Supervised` value: health checks paused
(maintenance: the last state is kept until they resume), health forced up or down (the checks go on,
their results are shown, but the forced state decides), a circuit held open or closed.

`SynTimeoutCounter` turns "TCP flows still waiting for a SYN-ACK" into per-backend failure counts
(each flow counted once), which the engine adds to the failure totals it feeds the breakers.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace

from lbtui import model
from lbtui.config import CircuitBreakerConfig, HealthConfig
from lbtui.control.circuit import CircuitBreaker, Transition
from lbtui.control.health import CheckFn, CheckResult, HealthChecker, Target, Tunnel, run_check

log = logging.getLogger(__name__)

MAX_TRANSITIONS = 500  # circuit transitions kept for the console's log
REPORT_STEP = 0.05  # a factor must move at least this much (or reach 0 or 1) to be reported again

OnChange = Callable[["BackendKey", "Factors"], None]
OnEvent = Callable[[str, str, model.Level, "str | None", "str | None"], None]
OnHealthLatency = Callable[["BackendKey", float], None]


@dataclass(frozen=True)
class BackendKey:
    proxy: str
    address: str  # "ip:port"


@dataclass(frozen=True)
class Supervised:
    """One backend as the engine wants it supervised."""

    key: BackendKey
    ip: str
    port: int
    health: HealthConfig | None
    circuit: CircuitBreakerConfig | None
    paused: bool = False  # health checks paused (maintenance): the last health state stays
    forced_health: model.Health | None = None  # UP or DOWN, whatever the checks say
    circuit_hold: model.Circuit | None = None  # OPEN or CLOSED, whatever traffic does
    tunnel: Tunnel | None = None  # a DSR backend: health checks through the tunnel


@dataclass(frozen=True)
class Factors:
    health: float  # 1 up or unknown, 0 down, 0..1 slow-start ramp
    health_state: model.Health
    circuit: float  # 1 closed, 0 open, small while half-open
    circuit_state: model.Circuit | None  # None: no circuit breaker configured
    health_check_ms: float | None = None  # latency of the last check
    reason: str = ""  # why a factor is below 1, e.g. "health down: connection refused"
    health_forced: bool = False
    circuit_held: bool = False


NEUTRAL = Factors(health=1.0, health_state=model.Health.UNKNOWN, circuit=1.0, circuit_state=None)


@dataclass
class _Entry:
    """Mutable state of one supervised backend (never leaves this module)."""

    spec: Supervised
    breaker: CircuitBreaker | None
    baseline: tuple[int, int] | None = None  # (handshakes, failures) totals at the last observation
    health_detail: str = ""  # detail of the last check
    health_check_ms: float | None = None
    circuit_reason: str = ""  # reason of the last circuit transition
    hold: model.Circuit | None = None  # the circuit hold applied to the breaker
    # What on_change last said; a new backend starts at what the engine assumes without a report.
    reported: Factors = NEUTRAL


def _health_key(key: BackendKey) -> str:
    return f"{key.proxy}|{key.address}"


def _significant(old: Factors, new: Factors) -> bool:
    """Whether `new` is worth an on_change after `old` was reported."""
    if (old.health_state, old.circuit_state, old.health_forced, old.circuit_held) != (
        new.health_state,
        new.circuit_state,
        new.health_forced,
        new.circuit_held,
    ):
        return True
    for before, after in ((old.health, new.health), (old.circuit, new.circuit)):
        if before == after:
            continue
        # The end points always count: a finished ramp must reach full weight even if the last step
        # was small, and 0 must never be mistaken for "a little".
        if abs(after - before) >= REPORT_STEP or after in (0.0, 1.0):
            return True
    return False


class BackendSupervisor:
    """Health and circuit state of all backends. Everything runs on the engine's asyncio loop."""

    def __init__(
        self,
        on_change: OnChange,
        on_event: OnEvent,
        on_health_latency: OnHealthLatency | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        check: CheckFn = run_check,
    ) -> None:
        self._on_change = on_change
        self._on_event = on_event
        self._on_health_latency = on_health_latency
        self._clock = clock
        self._wall = wall
        self._entries: dict[BackendKey, _Entry] = {}
        self._by_health_key: dict[str, BackendKey] = {}
        self._transitions: collections.deque[model.CircuitTransition] = collections.deque(
            maxlen=MAX_TRANSITIONS
        )
        self._checker = HealthChecker(self._on_health_result, clock=clock, rng=rng, check=check)

    # ---- configuration --------------------------------------------------------------------------

    def configure(self, backends: Sequence[Supervised]) -> None:
        """Supervise exactly these backends. Call on the running loop when health checks are set.

        A backend that stays keeps its health tracker (same address) and its circuit breaker and
        counter baseline (equal circuit config). New backends start neutral without an on_change
        (the engine reads factors()); a kept backend whose factors changed gets one.
        """
        wanted = {b.key: b for b in backends}  # the same backend in several groups is one entry
        for key in [k for k in self._entries if k not in wanted]:
            del self._entries[key]
        for key, spec in wanted.items():
            entry = self._entries.get(key)
            if entry is None:
                breaker = self._new_breaker(spec.circuit)
                circuit_state = None if breaker is None else breaker.state
                reported = replace(NEUTRAL, circuit_state=circuit_state)
                entry = self._entries[key] = _Entry(spec=spec, breaker=breaker, reported=reported)
            elif entry.spec.circuit != spec.circuit:
                # CircuitBreaker has no reconfigure: a changed policy starts closed with a new window.
                entry.breaker = self._new_breaker(spec.circuit)
                entry.circuit_reason = ""
                entry.hold = None  # a new breaker holds nothing yet
            if entry.spec.health != spec.health:
                entry.health_detail = ""
                entry.health_check_ms = None
            entry.spec = spec
            if entry.hold != spec.circuit_hold:
                self._handle_circuit(key, entry, self._hold(entry, spec.circuit_hold))

        targets = {
            _health_key(key): Target(e.spec.ip, e.spec.port, e.spec.health, e.spec.tunnel)
            for key, e in self._entries.items()
            if e.spec.health is not None
        }
        self._by_health_key = {
            _health_key(key): key for key, e in self._entries.items() if e.spec.health is not None
        }
        paused = {_health_key(key) for key, e in self._entries.items() if e.spec.paused}
        self._checker.set_targets(targets, paused)

        for key, entry in self._entries.items():
            self._report(key, entry)

    def _new_breaker(self, cfg: CircuitBreakerConfig | None) -> CircuitBreaker | None:
        return None if cfg is None else CircuitBreaker(cfg, clock=self._clock)

    async def close(self) -> None:
        """Stop every health check."""
        await self._checker.close()
        self._entries.clear()
        self._by_health_key.clear()

    # ---- read side ------------------------------------------------------------------------------

    def keys(self) -> list[BackendKey]:
        return list(self._entries)

    def factors(self, key: BackendKey) -> Factors:
        """Current factors; a backend that is not supervised (yet) gets neutral factors."""
        entry = self._entries.get(key)
        if entry is None:
            return NEUTRAL
        return self._factors(key, entry)

    def transitions(self) -> tuple[model.CircuitTransition, ...]:
        """The last MAX_TRANSITIONS circuit transitions, oldest first (unix timestamps)."""
        return tuple(self._transitions)

    def _factors(self, key: BackendKey, entry: _Entry) -> Factors:
        health, health_state = 1.0, model.Health.UNKNOWN
        tracker = self._checker.tracker(_health_key(key)) if entry.spec.health is not None else None
        if tracker is not None:
            health, health_state = tracker.factor, tracker.health
        forced = entry.spec.forced_health
        circuit, circuit_state = 1.0, None
        if entry.breaker is not None:
            circuit, circuit_state = entry.breaker.factor, entry.breaker.state

        reasons = []
        if forced is not None:
            note = f"health forced {forced.value}"
            if tracker is not None and health_state is not forced:
                note += f" (checks say {health_state.value})"
            reasons.append(note)
            health, health_state = (1.0 if forced is model.Health.UP else 0.0), forced
        elif health_state is model.Health.DOWN:
            reasons.append(f"health down: {entry.health_detail}" if entry.health_detail else "health down")
        elif health < 1.0:
            reasons.append(f"slow start {round(health * 100)}%")
        if circuit_state is model.Circuit.OPEN:
            reasons.append(f"circuit open: {entry.circuit_reason}")
        elif circuit_state is model.Circuit.HALF_OPEN:
            reasons.append(f"circuit half-open: {entry.circuit_reason}")
        return Factors(
            health=health,
            health_state=health_state,
            circuit=circuit,
            circuit_state=circuit_state,
            health_check_ms=entry.health_check_ms,
            reason=", ".join(reasons),
            health_forced=forced is not None,
            circuit_held=entry.hold is not None and entry.breaker is not None,
        )

    # ---- inputs ---------------------------------------------------------------------------------

    def observe_counters(self, key: BackendKey, handshakes_total: int, failures_total: int) -> None:
        """Monotonic data-path totals; the deltas since the last call feed the circuit breaker.

        The first call only sets the baseline. A total that went down (map entry recreated, counters
        reset) sets a new baseline and records nothing for this round.
        """
        entry = self._entries.get(key)
        if entry is None:
            return
        totals = (handshakes_total, failures_total)
        previous, entry.baseline = entry.baseline, totals
        if previous is None or entry.breaker is None:
            return
        successes = handshakes_total - previous[0]
        failures = failures_total - previous[1]
        if successes < 0 or failures < 0:
            log.debug("counters of %s went backwards %s -> %s: new baseline", key, previous, totals)
            return
        if successes or failures:
            self._handle_circuit(key, entry, entry.breaker.record(successes, failures))

    def tick(self) -> None:
        """Time-driven changes: circuits leaving OPEN, slow-start ramps progressing."""
        for key, entry in list(self._entries.items()):
            if entry.breaker is not None:
                self._handle_circuit(key, entry, entry.breaker.tick())
            self._report(key, entry)

    def circuit_command(self, key: BackendKey, action: str) -> model.CommandResult:
        """Operator action on one breaker: "force_open" | "force_close" | "reset"."""
        entry = self._entries.get(key)
        if entry is None:
            return model.CommandResult(False, f"no backend {key.address} in proxy {key.proxy}")
        breaker = entry.breaker
        if breaker is None:
            return model.CommandResult(False, f"{key.address} has no circuit breaker configured")
        holds = {"force_open": model.Circuit.OPEN, "force_close": model.Circuit.CLOSED, "reset": None}
        if action not in holds:
            wanted = ", ".join(holds)
            return model.CommandResult(False, f"unknown circuit action {action!r} (expected {wanted})")
        entry.spec = replace(entry.spec, circuit_hold=holds[action])
        transitions = self._hold(entry, holds[action])
        if action == "reset":
            transitions += breaker.reset()
        self._handle_circuit(key, entry, transitions)
        self._report(key, entry)
        return circuit_result(key.address, action, breaker.state, bool(transitions))

    def reset_circuit(self, key: BackendKey) -> list[Transition]:
        """Back to automatic, starting closed (after its hold, if any, was released)."""
        entry = self._entries.get(key)
        if entry is None or entry.breaker is None:
            return []
        transitions = entry.breaker.reset()
        self._handle_circuit(key, entry, transitions)
        return transitions

    def has_breaker(self, key: BackendKey) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.breaker is not None

    def _hold(self, entry: _Entry, hold: model.Circuit | None) -> list[Transition]:
        """Apply a circuit hold (or release one) to the entry's breaker."""
        entry.hold = hold
        breaker = entry.breaker
        if breaker is None:
            return []
        if hold is model.Circuit.OPEN:
            return breaker.force_open()
        if hold is model.Circuit.CLOSED:
            return breaker.force_close()
        return breaker.release()

    # ---- health ---------------------------------------------------------------------------------

    def _on_health_result(
        self, health_key: str, result: CheckResult, change: tuple[model.Health, model.Health] | None
    ) -> None:
        """HealthChecker's callback, after the tracker has seen the result."""
        key = self._by_health_key.get(health_key)
        entry = self._entries.get(key) if key is not None else None
        if key is None or entry is None:
            return  # removed while its check was running
        entry.health_detail = result.detail
        entry.health_check_ms = result.latency_s * 1000
        if self._on_health_latency is not None:
            self._call(self._on_health_latency, key, result.latency_s)
        if change is not None:
            self._health_event(key, result, *change)
            self._report(key, entry)

    def _record_health(self, key: BackendKey, result: CheckResult) -> None:
        """Feed one check result as if the checker had made it (tests; no network)."""
        tracker = self._checker.tracker(_health_key(key))
        if tracker is None:
            raise KeyError(f"{key} has no health check")
        self._on_health_result(_health_key(key), result, tracker.observe(result.ok))

    def _health_event(
        self, key: BackendKey, result: CheckResult, old: model.Health, new: model.Health
    ) -> None:
        tracker = self._checker.tracker(_health_key(key))
        if tracker is None:
            return
        address = key.address
        if new is model.Health.DOWN:
            failures = tracker.consecutive_failures
            message = f"{address} is DOWN: {result.detail} ({failures} failures in a row)"
            self._event("health", message, model.Level.WARNING, key)
            return
        checks = tracker.consecutive_successes
        if tracker.in_slow_start:
            message = f"{address} is UP again after {checks} checks; slow start {tracker.slow_start_s:g} s"
        elif old is model.Health.DOWN:
            message = f"{address} is UP again after {checks} checks"
        else:
            message = f"{address} is UP: {result.detail} ({checks} checks in a row)"
        self._event("health", message, model.Level.INFO, key)

    # ---- circuit --------------------------------------------------------------------------------

    def _handle_circuit(self, key: BackendKey, entry: _Entry, transitions: list[Transition]) -> None:
        if not transitions:
            return
        for t in transitions:
            entry.circuit_reason = t.reason
            self._transitions.append(
                model.CircuitTransition(
                    ts=self._wall(),
                    proxy=key.proxy,
                    backend=key.address,
                    old=t.old,
                    new=t.new,
                    reason=t.reason,
                )
            )
            level = model.Level.WARNING if t.new is model.Circuit.OPEN else model.Level.INFO
            message = f"{key.address} circuit {t.old.value} -> {t.new.value}: {t.reason}"
            self._event("circuit", message, level, key)
        self._report(key, entry)

    # ---- output ---------------------------------------------------------------------------------

    def _report(self, key: BackendKey, entry: _Entry) -> None:
        """on_change when the factors moved enough since the last report."""
        factors = self._factors(key, entry)
        if _significant(entry.reported, factors):
            entry.reported = factors
            self._call(self._on_change, key, factors)

    def _event(self, kind: str, message: str, level: model.Level, key: BackendKey) -> None:
        self._call(self._on_event, kind, message, level, key.proxy, key.address)

    @staticmethod
    def _call(callback: Callable[..., None], *args: object) -> None:
        # A failing consumer must not stop the other backends' updates.
        try:
            callback(*args)
        except Exception:
            log.exception("supervisor callback %r failed", callback)


def circuit_result(address: str, action: str, state: model.Circuit, moved: bool) -> model.CommandResult:
    """What an operator reads after a circuit action."""
    if action == "force_open":
        return model.CommandResult(True, f"circuit of {address} held open")
    if action == "force_close":
        return model.CommandResult(True, f"circuit of {address} held closed")
    if moved:
        return model.CommandResult(True, f"circuit of {address} {state.value}")
    return model.CommandResult(True, f"circuit of {address} already {state.value}")


class SynTimeoutCounter:
    """Counts TCP flows whose SYN stayed unanswered longer than their timeout, each flow once.

    Every unanswered flow of one sweep is passed in one call, each with its own timeout (proxies
    have their own syn_timeout_ms). Memory stays bounded by the flows of the latest call: an id
    that is not reported any more is forgotten (if the same id shows up again it is a new flow and
    may be counted again).
    """

    def __init__(self) -> None:
        self._counted: set[Hashable] = set()

    def observe(self, flows: Iterable[tuple[Hashable, BackendKey, float, float]]) -> dict[BackendKey, int]:
        """flows: (flow id, backend, age in seconds, timeout in seconds) of every TCP flow that has
        not seen a SYN-ACK."""
        counted: set[Hashable] = set()
        out: dict[BackendKey, int] = {}
        for flow_id, backend, age_s, timeout_s in flows:
            if age_s < timeout_s:
                continue
            if flow_id not in self._counted and flow_id not in counted:
                out[backend] = out.get(backend, 0) + 1
            counted.add(flow_id)
        self._counted = counted
        return out
