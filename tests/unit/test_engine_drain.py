# SPDX-License-Identifier: Apache-2.0
"""Drains on the real Engine over the in-memory dataplane: no new flows for the backend, the end of
the drain when its flows are gone or at its timeout, and `--cut`."""

from __future__ import annotations

import pytest

from lbtui import model
from tests.support.engine import TWO_PROXIES, ManualClock, messages, running

pytestmark = pytest.mark.anyio

WEB1, WEB2, ROUTED = "10.0.2.11:8080", "10.0.2.12:8080", "10.0.3.10:8080"
VIP = "10.0.0.1:80"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def open_flows(dp, n: int, client: str = "192.0.2.7", first_port: int = 30000):
    flows = [dp.connect(f"{client}:{first_port + i}", VIP) for i in range(n)]
    for f in flows:
        dp.answer(f)
    return flows


def drain_state(e, address: str = WEB1) -> model.DrainState:
    b = e.snapshot().backend("web", address)
    assert b is not None
    return b.drain


async def test_drain_stops_new_flows_and_ends_when_the_flows_are_gone():
    async with running(TWO_PROXIES) as (e, dp):
        on_web1 = [f for f in open_flows(dp, 60) if f.backend_address == WEB1]
        assert on_web1
        await e.sweep()
        r = await e.execute(model.Drain("web", WEB1, timeout_s=30))
        assert r == model.CommandResult(
            True, f"{WEB1} draining (timeout 30 s): no new connections, {len(on_web1)} flows continue"
        )
        assert drain_state(e) is model.DrainState.DRAINING
        assert e.snapshot().backend("web", WEB1).effective_weight == 0
        assert not [f for f in open_flows(dp, 100, first_port=40000) if f.backend_address == WEB1]
        await e.sweep()
        assert drain_state(e) is model.DrainState.DRAINING  # its flows still run
        for f in on_web1:
            dp.finish(f)
        await e.sweep()
        e.publish()
        assert drain_state(e) is model.DrainState.DRAINED
        assert messages(e, "drain")[-1] == f"{WEB1} drained: 0 flows left"
        r = await e.execute(model.Undrain("web", WEB1))
        assert r == model.CommandResult(True, f"{WEB1} back in rotation")
        assert drain_state(e) is model.DrainState.ACTIVE
        assert e.snapshot().backend("web", WEB1).effective_weight == 3


async def test_drain_timeout_leaves_the_flows_alone():
    clock = ManualClock()
    async with running(TWO_PROXIES, clock=clock) as (e, dp):
        flows = open_flows(dp, 40)
        mine = [f for f in flows if f.backend_address == WEB1]
        await e.sweep()
        assert (await e.execute(model.Drain("web", WEB1, timeout_s=5))).ok
        clock.advance(4.9)
        await e.sweep()
        assert drain_state(e) is model.DrainState.DRAINING
        clock.advance(0.2)
        await e.sweep()
        e.publish()
        assert drain_state(e) is model.DrainState.DRAINED
        timeout = [ev for ev in e.events_since(0) if ev.kind == "drain"][-1]
        assert timeout.message == f"{WEB1} drain timeout: {len(mine)} flows still open"
        assert timeout.level is model.Level.WARNING
        assert e.snapshot().backend("web", WEB1).active_flows == len(mine)  # not cut


async def test_drain_timeout_with_cut_removes_the_remaining_flows():
    clock = ManualClock()
    async with running(TWO_PROXIES, clock=clock) as (e, dp):
        flows = open_flows(dp, 40)
        mine = [f for f in flows if f.backend_address == WEB1]
        others = len(flows) - len(mine)
        await e.sweep()
        assert (await e.execute(model.Drain("web", WEB1, timeout_s=1, cut=True))).ok
        clock.advance(1.5)
        await e.sweep()
        assert (
            messages(e, "drain")[-1]
            == f"{WEB1} drain timeout: {len(mine)} flows cut (conntrack entries removed)"
        )
        _keys, vals = dp.conntrack_arrays()
        assert int((vals["backend_id"] == e.backend_id("web", WEB1)).sum()) == 0
        assert len(vals) == 2 * others  # the other backends' flows are untouched


async def test_the_only_backend_of_a_group_refuses_new_connections_while_drained():
    async with running(TWO_PROXIES) as (e, dp):
        r = await e.execute(model.Drain("web", ROUTED))
        assert r.message == (
            f"{ROUTED} draining (timeout 30 s): no new connections, 0 flows continue; "
            "it is the only backend of its group, so new connections are refused"
        )
        assert (
            messages(e, "weight")[-1]
            == "web/192.168.0.0/16: no backend can take new connections; they are refused"
        )
        assert dp.connect("192.168.1.1:5000", VIP) is None
        assert dp.state.service_drops(e.topology.proxies["web"].service_id)["no_backend"] == 1


async def test_drain_again_and_undrain_an_active_backend_are_accepted():
    clock = ManualClock()
    async with running(TWO_PROXIES, clock=clock) as (e, _dp):
        assert (await e.execute(model.Drain("web", WEB2, timeout_s=10))).ok
        clock.advance(8)
        again = await e.execute(model.Drain("web", WEB2, timeout_s=10))
        assert again.ok  # a new deadline, 10 s from now
        assert e.overrides.drains[("web", WEB2)].deadline == clock.monotonic() + 10
        assert (await e.execute(model.Undrain("web", WEB2))).ok
        assert (await e.execute(model.Undrain("web", WEB2))) == model.CommandResult(
            True, f"{WEB2} back in rotation"
        )


async def test_drain_timeout_comes_from_the_settings_and_must_be_a_number():
    async with running(
        "[settings]\ndrain_timeout_s = 7\n[settings.metrics]\nenabled = false\n" + TWO_PROXIES
    ) as (e, _dp):
        assert (await e.execute(model.Drain("web", WEB1))).message.startswith(
            f"{WEB1} draining (timeout 7 s)"
        )
        for bad in (-1, True, "5"):
            r = await e.execute(model.Drain("web", WEB2, timeout_s=bad))  # type: ignore[arg-type]
            assert r == model.CommandResult(
                False, f"drain timeout must be a number of seconds >= 0, got {bad!r}"
            )
        assert drain_state(e, WEB2) is model.DrainState.ACTIVE


async def test_a_drained_backend_stays_drained_across_a_reload():
    async with running(TWO_PROXIES) as (e, _dp):
        assert (await e.execute(model.Drain("web", WEB1))).ok
        with open(e.config.path, "a") as f:  # type: ignore[arg-type]
            f.write('\n[[proxy.backend]]\naddress = "10.0.4.12:53"\nweight = 1\n')
        assert (await e.reload()).ok
        assert drain_state(e) is model.DrainState.DRAINING
