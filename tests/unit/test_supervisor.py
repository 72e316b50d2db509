# SPDX-License-Identifier: Apache-2.0
import asyncio
import random
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from lbtui.config import CircuitBreakerConfig, HealthConfig
from lbtui.control.circuit import HALF_OPEN_FACTOR
from lbtui.control.health import MIN_RAMP, CheckResult
from lbtui.control.supervisor import (
    MAX_TRANSITIONS,
    BackendKey,
    BackendSupervisor,
    Factors,
    Supervised,
    SynTimeoutCounter,
)
from lbtui.model import Circuit, Health, Level

A = BackendKey("web", "10.0.2.11:8080")
B = BackendKey("web", "10.0.2.12:8080")
# Fake-clock tests drive the trackers directly; the real check tasks must never get to run.
HEALTH = HealthConfig(type="tcp", interval_ms=3_600_000, timeout_ms=1000, rise=2, fall=3)
CIRCUIT = CircuitBreakerConfig(
    error_rate=0.5, min_requests=10, window_s=10.0, open_s=30.0, half_open_successes=3
)
OK = CheckResult(True, 0.002, "connected")
REFUSED = CheckResult(False, 0.001, "connection refused")


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[BackendKey, Factors]] = []
        self.events: list[tuple[str, str, Level, str | None, str | None]] = []
        self.latencies: list[tuple[BackendKey, float]] = []

    def on_change(self, key: BackendKey, factors: Factors) -> None:
        self.changes.append((key, factors))

    def on_event(self, kind: str, message: str, level: Level, proxy: str | None, backend: str | None) -> None:
        self.events.append((kind, message, level, proxy, backend))

    def on_latency(self, key: BackendKey, seconds: float) -> None:
        self.latencies.append((key, seconds))

    def messages(self, kind: str) -> list[str]:
        return [e[1] for e in self.events if e[0] == kind]


def spec(
    key: BackendKey,
    health: HealthConfig | None = HEALTH,
    circuit: CircuitBreakerConfig | None = CIRCUIT,
) -> Supervised:
    ip, port = key.address.rsplit(":", 1)
    return Supervised(key=key, ip=ip, port=int(port), health=health, circuit=circuit)


def make(clock: FakeClock) -> tuple[BackendSupervisor, Recorder]:
    rec = Recorder()
    sup = BackendSupervisor(
        rec.on_change,
        rec.on_event,
        on_health_latency=rec.on_latency,
        clock=clock,
        wall=lambda: 1_700_000_000.0 + clock.t,
        rng=random.Random(1),
    )
    return sup, rec


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


# ---- health -------------------------------------------------------------------------------------


def test_fall_reports_health_zero_and_an_event() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        sup, rec = make(clock)
        sup.configure([spec(A), spec(B)])
        assert sup.factors(A) == Factors(1.0, Health.UNKNOWN, 1.0, Circuit.CLOSED)

        sup._record_health(A, REFUSED)
        sup._record_health(A, REFUSED)
        assert rec.changes == [] and rec.events == []  # fall is 3

        sup._record_health(A, REFUSED)
        assert len(rec.changes) == 1
        key, factors = rec.changes[0]
        assert key == A
        assert factors.health == 0.0 and factors.health_state is Health.DOWN
        assert factors.reason == "health down: connection refused"
        assert rec.events == [
            (
                "health",
                "10.0.2.11:8080 is DOWN: connection refused (3 failures in a row)",
                Level.WARNING,
                "web",
                "10.0.2.11:8080",
            )
        ]
        assert sup.factors(B).health == 1.0  # the other backend is untouched
        assert rec.latencies[0] == (A, 0.001)
        assert sup.factors(A).health_check_ms == 1.0
        await sup.close()

    run(scenario)


def test_rise_after_down_ramps_up_over_ticks() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        sup, rec = make(clock)
        sup.configure([spec(A, health=replace(HEALTH, slow_start_s=30.0))])
        for _ in range(3):
            sup._record_health(A, REFUSED)
        rec.changes.clear()

        sup._record_health(A, OK)
        assert rec.changes == []  # rise is 2
        sup._record_health(A, OK)
        assert rec.messages("health")[-1] == "10.0.2.11:8080 is UP again after 2 checks; slow start 30 s"
        assert rec.changes[-1][1].health_state is Health.UP
        assert rec.changes[-1][1].health == MIN_RAMP

        sup.tick()  # no time passed: nothing new to say
        assert len(rec.changes) == 1

        for _ in range(140):  # 35 s in ticks of 250 ms
            clock.t += 0.25
            sup.tick()
        ramp = [f.health for _, f in rec.changes]
        assert ramp == sorted(ramp) and len(set(ramp)) == len(ramp)
        assert len(ramp) > 5  # reported step by step, not only at the end
        assert all(b - a >= 0.05 or b == 1.0 for a, b in zip(ramp, ramp[1:], strict=False))
        assert ramp[-1] == 1.0
        assert sup.factors(A).reason == ""
        await sup.close()

    run(scenario)


def test_first_rise_from_unknown_has_no_ramp_and_says_up() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        sup, rec = make(clock)
        sup.configure([spec(A, health=replace(HEALTH, slow_start_s=30.0))])
        sup._record_health(A, OK)
        sup._record_health(A, OK)
        assert rec.messages("health") == ["10.0.2.11:8080 is UP: connected (2 checks in a row)"]
        assert sup.factors(A).health == 1.0 and sup.factors(A).health_state is Health.UP
        # UNKNOWN -> UP is a state change the engine hears about, with full weight.
        assert [f.health for _, f in rec.changes] == [1.0]
        await sup.close()

    run(scenario)


def test_backend_without_health_or_circuit_config_is_neutral() -> None:
    clock = FakeClock()
    sup, rec = make(clock)
    sup.configure([spec(A, health=None, circuit=None)])  # no checks: no running loop needed
    assert sup.factors(A) == Factors(1.0, Health.UNKNOWN, 1.0, None)
    sup.observe_counters(A, 0, 0)
    sup.observe_counters(A, 0, 1000)
    sup.tick()
    assert rec.changes == [] and rec.events == []
    result = sup.circuit_command(A, "force_open")
    assert not result.ok and "no circuit breaker" in result.message
    # Not supervised at all: neutral too (the engine may ask before configure()).
    assert sup.factors(B) == Factors(1.0, Health.UNKNOWN, 1.0, None)


# ---- circuit ------------------------------------------------------------------------------------


def test_circuit_opens_half_opens_and_closes() -> None:
    clock = FakeClock()
    sup, rec = make(clock)
    sup.configure([spec(A, health=None)])
    sup.observe_counters(A, 500, 200)  # baseline only
    assert sup.factors(A).circuit_state is Circuit.CLOSED

    sup.observe_counters(A, 504, 206)  # 4 ok + 6 failed = 10 requests, 60 % failures
    f = sup.factors(A)
    assert f.circuit == 0.0 and f.circuit_state is Circuit.OPEN
    assert f.reason.startswith("circuit open: error rate 0.60")
    assert rec.changes[-1] == (A, f)
    assert rec.events[-1][0] == "circuit" and rec.events[-1][2] is Level.WARNING
    assert "closed -> open" in rec.events[-1][1]

    clock.t += 29
    sup.tick()
    assert sup.factors(A).circuit_state is Circuit.OPEN
    clock.t += 1
    sup.tick()
    f = sup.factors(A)
    assert f.circuit_state is Circuit.HALF_OPEN and f.circuit == HALF_OPEN_FACTOR
    assert rec.changes[-1] == (A, f)

    sup.observe_counters(A, 506, 206)
    assert sup.factors(A).circuit_state is Circuit.HALF_OPEN
    sup.observe_counters(A, 507, 206)  # third success
    assert sup.factors(A) == Factors(1.0, Health.UNKNOWN, 1.0, Circuit.CLOSED)
    assert rec.changes[-1][1].circuit == 1.0

    log = sup.transitions()
    assert [(t.old, t.new) for t in log] == [
        (Circuit.CLOSED, Circuit.OPEN),
        (Circuit.OPEN, Circuit.HALF_OPEN),
        (Circuit.HALF_OPEN, Circuit.CLOSED),
    ]
    assert log[0].ts == 1_700_000_000.0 + 1000.0  # unix time from `wall`
    assert (log[0].proxy, log[0].backend) == ("web", "10.0.2.11:8080")
    assert log[2].reason == "3 successes while half-open"
    assert len(rec.messages("circuit")) == 3


def test_half_open_failure_reopens() -> None:
    clock = FakeClock()
    sup, _ = make(clock)
    sup.configure([spec(A, health=None)])
    sup.observe_counters(A, 0, 0)
    sup.observe_counters(A, 0, 10)
    clock.t += 30
    sup.tick()
    assert sup.factors(A).circuit_state is Circuit.HALF_OPEN
    sup.observe_counters(A, 1, 11)
    assert sup.factors(A).circuit_state is Circuit.OPEN


def test_force_open_holds_until_reset() -> None:
    clock = FakeClock()
    sup, rec = make(clock)
    sup.configure([spec(A, health=None)])

    result = sup.circuit_command(A, "force_open")
    assert result.ok
    assert sup.factors(A).circuit_state is Circuit.OPEN
    assert rec.changes[-1][1].circuit == 0.0
    assert sup.transitions()[-1].reason == "forced open by operator"

    clock.t += 3600
    sup.tick()
    assert sup.factors(A).circuit_state is Circuit.OPEN  # forced: no half-open probing

    result = sup.circuit_command(A, "reset")
    assert result.ok and "closed" in result.message
    assert sup.factors(A).circuit_state is Circuit.CLOSED
    assert rec.changes[-1][1].circuit == 1.0

    assert sup.circuit_command(A, "reset").message.endswith("already closed")
    sup.circuit_command(A, "force_open")
    assert sup.circuit_command(A, "force_close").ok
    assert sup.factors(A).circuit_state is Circuit.CLOSED

    bad = sup.circuit_command(A, "explode")
    assert not bad.ok and "unknown circuit action" in bad.message
    missing = sup.circuit_command(BackendKey("web", "10.9.9.9:1"), "reset")
    assert not missing.ok


def test_counters_going_backwards_reset_the_baseline() -> None:
    clock = FakeClock()
    sup, _ = make(clock)
    sup.configure([spec(A, health=None)])
    sup.observe_counters(A, 100, 0)
    sup.observe_counters(A, 0, 0)  # counters reset: new baseline, nothing recorded
    sup.observe_counters(A, 0, 9)  # 9 failures < min_requests
    assert sup.factors(A).circuit_state is Circuit.CLOSED
    sup.observe_counters(A, 0, 10)  # the 10th failure since the reset
    assert sup.factors(A).circuit_state is Circuit.OPEN


def test_transition_log_is_bounded() -> None:
    clock = FakeClock()
    sup, _ = make(clock)
    sup.configure([spec(A, health=None)])
    for _ in range(MAX_TRANSITIONS):
        sup.circuit_command(A, "force_open")
        sup.circuit_command(A, "reset")
    log = sup.transitions()
    assert len(log) == MAX_TRANSITIONS
    assert log[-1].new is Circuit.CLOSED


# ---- reconfiguration ----------------------------------------------------------------------------


def test_reconfigure_keeps_state_of_unchanged_backends() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        sup, rec = make(clock)
        sup.configure([spec(A), spec(B)])
        for _ in range(3):
            sup._record_health(A, REFUSED)
        sup.observe_counters(A, 0, 0)
        sup.observe_counters(A, 0, 10)
        assert sup.factors(A).health_state is Health.DOWN
        assert sup.factors(A).circuit_state is Circuit.OPEN
        rec.changes.clear()

        # Same configuration again (new but equal objects), plus a new backend.
        c = BackendKey("web", "10.0.2.13:8080")
        sup.configure([spec(A), spec(B), spec(c)])
        assert sup.factors(A).health_state is Health.DOWN
        assert sup.factors(A).circuit_state is Circuit.OPEN
        assert sup.factors(c) == Factors(1.0, Health.UNKNOWN, 1.0, Circuit.CLOSED)
        assert rec.changes == []

        # A changed health interval keeps the tracker (same address): still down.
        sup.configure([spec(A, health=replace(HEALTH, interval_ms=3_000_000)), spec(B), spec(c)])
        assert sup.factors(A).health_state is Health.DOWN
        assert rec.changes == []

        # The counter baseline stayed: one more failure in half-open reopens from the old totals.
        clock.t += 30
        sup.tick()
        sup.observe_counters(A, 0, 11)
        assert sup.factors(A).circuit_state is Circuit.OPEN

        # A changed circuit policy starts a fresh breaker: closed, and the engine hears about it.
        sup.configure([spec(A, circuit=replace(CIRCUIT, min_requests=50)), spec(B)])
        assert sup.factors(A).circuit_state is Circuit.CLOSED
        assert rec.changes[-1][0] == A and rec.changes[-1][1].circuit == 1.0

        # Health config removed: the backend counts as up again.
        sup.configure([spec(A, health=None, circuit=replace(CIRCUIT, min_requests=50)), spec(B)])
        assert sup.factors(A).health_state is Health.UNKNOWN
        assert rec.changes[-1][1].health == 1.0

        # Removed backends are forgotten.
        sup.configure([spec(B)])
        assert sup.keys() == [B]
        sup.observe_counters(A, 0, 1000)  # ignored, no error
        await sup.close()

    run(scenario)


# ---- SYN timeouts -------------------------------------------------------------------------------


def test_syn_timeout_counter_counts_each_flow_once() -> None:
    counter = SynTimeoutCounter()

    def observe(*flows: tuple[str, BackendKey, float]) -> dict[BackendKey, int]:
        return counter.observe((flow, backend, age, 3.0) for flow, backend, age in flows)

    assert observe(("f1", A, 1.0), ("f2", A, 0.5)) == {}
    assert observe(("f1", A, 3.0), ("f2", A, 2.5), ("f3", B, 4.0)) == {A: 1, B: 1}
    assert observe(("f1", A, 3.25), ("f2", A, 3.0), ("f3", B, 4.25)) == {A: 1}
    assert observe(("f1", A, 9.0), ("f2", A, 9.0), ("f3", B, 9.0)) == {}
    # f1 disappeared (answered or expired): forgotten, so memory follows the latest call only.
    assert observe(("f2", A, 9.5)) == {}
    assert counter._counted == {"f2"}
    # The same id seen again later is a new flow.
    assert observe(("f1", A, 3.5)) == {A: 1}


def test_syn_timeout_counter_with_a_timeout_per_flow() -> None:
    counter = SynTimeoutCounter()
    flows = [("f1", A, 2.0, 1.0), ("f2", B, 2.0, 3.0)]
    assert counter.observe(flows) == {A: 1}
    assert counter.observe([("f1", A, 2.5, 1.0), ("f2", B, 3.5, 3.0)]) == {B: 1}
    assert counter.observe([("f1", A, 3.0, 1.0), ("f2", B, 4.0, 3.0)]) == {}


# ---- real sockets -------------------------------------------------------------------------------


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def test_real_tcp_checks_detect_down_and_up() -> None:
    async def scenario() -> None:
        server_a = await asyncio.start_server(_handle, "127.0.0.1", 0)
        server_b = await asyncio.start_server(_handle, "127.0.0.1", 0)
        port_a = server_a.sockets[0].getsockname()[1]
        port_b = server_b.sockets[0].getsockname()[1]
        key_a = BackendKey("web", f"127.0.0.1:{port_a}")
        key_b = BackendKey("web", f"127.0.0.1:{port_b}")
        health = HealthConfig(type="tcp", interval_ms=200, timeout_ms=500, rise=2, fall=2)
        rec = Recorder()
        sup = BackendSupervisor(rec.on_change, rec.on_event, on_health_latency=rec.on_latency)
        try:
            sup.configure(
                [
                    Supervised(key_a, "127.0.0.1", port_a, health, None),
                    Supervised(key_b, "127.0.0.1", port_b, health, None),
                ]
            )
            both_up = await _wait_for(
                lambda: all(sup.factors(k).health_state is Health.UP for k in (key_a, key_b)), 5.0
            )
            assert both_up

            server_a.close()
            await server_a.wait_closed()
            # Bound: interval x fall + timeout = 0.9 s; generous for a loaded machine.
            assert await _wait_for(lambda: sup.factors(key_a).health_state is Health.DOWN, 5.0)
            assert (key_a, sup.factors(key_a)) in rec.changes
            assert sup.factors(key_a).health == 0.0
            down = [m for m in rec.messages("health") if "is DOWN" in m]
            assert down and down[0].startswith(f"127.0.0.1:{port_a} is DOWN: ")

            server_a = await asyncio.start_server(_handle, "127.0.0.1", port_a)
            assert await _wait_for(lambda: sup.factors(key_a).health_state is Health.UP, 5.0)
            assert sup.factors(key_a).health == 1.0
            assert any(m == f"127.0.0.1:{port_a} is UP again after 2 checks" for m in rec.messages("health"))

            assert sup.factors(key_b).health_state is Health.UP
            assert all(f.health_state is not Health.DOWN for k, f in rec.changes if k == key_b)
            assert any(k == key_b for k, _ in rec.latencies)
        finally:
            await sup.close()
            for server in (server_a, server_b):
                server.close()
                await server.wait_closed()

    run(scenario)
