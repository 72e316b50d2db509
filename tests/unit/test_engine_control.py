# SPDX-License-Identifier: Apache-2.0
"""The control loops on the real Engine over the in-memory dataplane: least-connections, health
checks and slow start, panic, circuit breakers driven by the data path's counters, and TCP SYNs left
unanswered. Time is a ManualClock; health checks answer from `Probes`."""

from __future__ import annotations

import pytest

from lbtui import model
from lbtui.control.selection import slot_counts
from tests.support.engine import ManualClock, Probes, messages, running, settle

pytestmark = pytest.mark.anyio

A1, A2 = "10.0.2.11:8080", "10.0.2.12:8080"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def proxy(
    name: str, port: int, extra: str = "", backends: tuple[tuple[str, int], ...] = ((A1, 1), (A2, 1))
) -> str:
    lines = [
        "[[proxy]]",
        f'name = "{name}"',
        'interfaces = ["lb0"]',
        'vip = "10.0.0.1"',
        f"port = {port}",
        extra.strip(),
    ]
    for address, weight in backends:
        lines += ["[[proxy.backend]]", f'address = "{address}"', f"weight = {weight}"]
    return "\n".join(lines) + "\n"


def slots(e, name: str) -> dict[str, int]:
    table = e.dataplane.read_table(e.group_id(name))
    backends = e.dataplane.read_backends()
    return {f"{backends[b].ip}:{backends[b].port}": n for b, n in slot_counts(table).items()}


def snapshot(e) -> model.Snapshot:
    e.publish()
    return e.snapshot()


def backend(e, name: str, address: str) -> model.BackendView:
    b = snapshot(e).backend(name, address)
    assert b is not None
    return b


# ---- least-connections --------------------------------------------------------------------------


async def test_least_connections_weights_follow_the_live_flows_of_every_proxy():
    lc = 'algorithm = "least-connections"\nleast_connections_interval_ms = 500'
    text = proxy("a", 80, lc) + proxy("b", 81, lc) + proxy("c", 82, lc)
    clock = ManualClock()
    async with running(text, clock=clock) as (e, dp):
        for name in ("a", "b", "c"):
            dp.add_counters(e.backend_id(name, A1), established=9)  # 9 live flows on A1, none on A2
        for _ in range(3):
            clock.advance(1.0)
            e.tick()
        for name in ("a", "b", "c"):  # 1/(1+9) against 1/(1+0): A2 gets ten times A1's slots
            assert slots(e, name) == {A1: 9, A2: 88}, name
            assert backend(e, name, A1).effective_weight == 1
        # flows end: the weights even out again (the data path counts closes and expiries alike)
        for name in ("a", "b", "c"):
            dp.add_counters(e.backend_id(name, A1), ended=9)
        clock.advance(1.0)
        e.tick()
        assert all(slots(e, n) == {A1: 49, A2: 48} for n in ("a", "b", "c"))
        # least-connections updates are not events: only the start's
        assert all(m.endswith("(ok; configuration)") for m in messages(e, "weight"))


async def test_least_connections_waits_for_its_interval():
    text = proxy("a", 80, 'algorithm = "least-connections"\nleast_connections_interval_ms = 2000')
    clock = ManualClock()
    async with running(text, clock=clock) as (e, dp):
        e.tick()
        dp.add_counters(e.backend_id("a", A1), established=4)
        clock.advance(1.0)
        e.tick()
        assert slots(e, "a") == {A1: 49, A2: 48}  # not yet
        clock.advance(1.0)
        e.tick()
        assert slots(e, "a")[A1] < 25


# ---- health, slow start, panic ------------------------------------------------------------------

HEALTH = """
[proxy.health]
type = "tcp"
interval_ms = 10
timeout_ms = 10
rise = 1
fall = 1
slow_start_s = 10
"""


async def test_health_down_then_slow_start_back_to_full_weight():
    probes, clock = Probes(down={A1: "connection refused"}), ManualClock()
    text = proxy("web", 80, HEALTH, ((A1, 4), (A2, 4)))
    async with running(text, clock=clock, probes=probes) as (e, _dp):
        await settle(lambda: backend(e, "web", A1).health is model.Health.DOWN, "A1 down")
        assert backend(e, "web", A1).effective_weight == 0 and slots(e, "web") == {A2: 97}
        assert f"{A1} is DOWN: connection refused (1 failures in a row)" in messages(e, "health")
        assert backend(e, "web", A1).last_change == "health down"
        del probes.down[A1]
        await settle(lambda: backend(e, "web", A1).health is model.Health.UP, "A1 up")
        assert f"{A1} is UP again after 1 checks; slow start 10 s" in messages(e, "health")
        assert backend(e, "web", A1).effective_weight == 1  # the ramp starts at its floor
        clock.advance(5)
        e.tick()
        assert (
            backend(e, "web", A1).effective_weight == 2
            and backend(e, "web", A1).last_change == "slow start 50%"
        )
        clock.advance(5)
        e.tick()
        assert backend(e, "web", A1).effective_weight == 4 and slots(e, "web") == {A1: 49, A2: 48}


async def test_every_backend_down_is_a_panic_and_traffic_is_spread():
    probes = Probes(down={A1: "timeout after 0.01s", A2: "connection refused"})
    text = proxy("web", 80, HEALTH, ((A1, 3), (A2, 1)))
    async with running(text, probes=probes) as (e, dp):
        await settle(lambda: snapshot(e).service("web").panic, "the panic")
        assert messages(e, "panic") == [
            "web/default: every backend is out of rotation; spreading traffic over all non-drained backends"
        ]
        assert slots(e, "web") == {A1: 73, A2: 24}
        assert dp.connect("192.0.2.1:1000", "10.0.0.1:80") is not None
        probes.down.clear()
        await settle(lambda: not snapshot(e).service("web").panic, "the end of the panic")
        assert messages(e, "panic")[-1] == "web/default: panic over, normal selection again"


# ---- circuit breakers ---------------------------------------------------------------------------

BREAKER = """
[proxy.circuit_breaker]
error_rate = 0.5
min_requests = 10
window_s = 10
open_s = 30
half_open_successes = 3
syn_timeout_ms = {syn}
"""


async def test_circuit_opens_on_failures_probes_half_open_and_closes():
    clock = ManualClock()
    text = proxy("web", 80, BREAKER.format(syn=3000), ((A1, 3), (A2, 3)))
    async with running(text, clock=clock) as (e, dp):
        bid = e.backend_id("web", A1)
        e.tick()  # the first reading is the baseline
        dp.add_counters(bid, handshakes=2, conn_failures=10)
        clock.advance(0.25)
        e.tick()
        assert backend(e, "web", A1).circuit is model.Circuit.OPEN
        assert messages(e, "circuit") == [
            f"{A1} circuit closed -> open: error rate 0.83 over 12 requests in 10s"
        ]
        assert slots(e, "web") == {A2: 97}
        clock.advance(30)
        e.tick()
        assert backend(e, "web", A1).circuit is model.Circuit.HALF_OPEN
        assert backend(e, "web", A1).effective_weight == 1  # a trickle of probe flows
        dp.add_counters(bid, handshakes=3)
        clock.advance(0.25)
        e.tick()
        assert backend(e, "web", A1).circuit is model.Circuit.CLOSED
        assert messages(e, "circuit")[1:] == [
            f"{A1} circuit open -> half_open: open for 30s, probing",
            f"{A1} circuit half_open -> closed: 3 successes while half-open",
        ]
        assert [(t.old, t.new) for t in snapshot(e).circuit_log] == [
            (model.Circuit.CLOSED, model.Circuit.OPEN),
            (model.Circuit.OPEN, model.Circuit.HALF_OPEN),
            (model.Circuit.HALF_OPEN, model.Circuit.CLOSED),
        ]


async def test_unanswered_syns_are_counted_once_each_whatever_the_proxies_timeouts():
    # two proxies whose breakers wait differently long for a SYN-ACK
    text = proxy("web", 80, BREAKER.format(syn=1000)) + proxy("api", 81, BREAKER.format(syn=2000))
    clock = ManualClock()
    async with running(text, clock=clock) as (e, dp):
        for port in (80, 81):
            for i in range(4):  # real clients: they send their SYN again while they wait
                f = dp.connect(f"192.0.2.5:{port * 100 + i}", f"10.0.0.1:{port}")
                assert f is not None
                dp.retransmit_syn(f)
        clock.advance(2.5)  # past both timeouts, not yet expired (syn flows expire after 30 s)
        for _ in range(4):
            await e.sweep()
            clock.advance(0.5)
        counted = sum(e.sweeper.syn_failures.values())
        assert counted == 8, f"8 unanswered SYNs counted {counted} times"


async def test_unanswered_syns_feed_the_breaker():
    text = proxy("web", 80, BREAKER.format(syn=1000), ((A1, 1),))
    clock = ManualClock()
    async with running(text, clock=clock) as (e, dp):
        e.tick()
        for i in range(12):
            f = dp.connect(f"192.0.2.6:{5000 + i}", "10.0.0.1:80")
            assert f is not None
            dp.retransmit_syn(f)
        clock.advance(1.5)
        await e.sweep()
        e.tick()
        assert backend(e, "web", A1).circuit is model.Circuit.OPEN
        assert messages(e, "circuit") == [
            f"{A1} circuit closed -> open: error rate 1.00 over 12 requests in 10s"
        ]


async def test_syns_nobody_waits_for_do_not_feed_the_breaker():
    # a spoofed flood: single SYNs that are never sent again, and bare ACKs that find no flow
    text = proxy("web", 80, BREAKER.format(syn=1000), ((A1, 1),))
    clock = ManualClock()
    async with running(text, clock=clock) as (e, dp):
        e.tick()
        for i in range(50):
            assert dp.connect(f"192.0.2.7:{5000 + i}", "10.0.0.1:80") is not None
        clock.advance(1.5)
        await e.sweep()
        e.tick()
        assert sum(e.sweeper.syn_failures.values()) == 0
        assert backend(e, "web", A1).circuit is not model.Circuit.OPEN and not messages(e, "circuit")
        assert backend(e, "web", A1).active_flows == 0  # embryonic flows are not active
