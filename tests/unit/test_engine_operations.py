# SPDX-License-Identifier: Apache-2.0
"""HAProxy-style runtime operations on the real Engine over the in-memory dataplane: maintenance,
forced health, circuit holds, relative weights, backends added to a route or removed with their
flows cut, the overrides list and clearing it, and overrides dropped with an event."""

from __future__ import annotations

from collections import Counter

import pytest

from lbtui import model
from lbtui.control.selection import slot_counts
from lbtui.dataplane import structs
from tests.support.engine import TWO_PROXIES, ManualClock, Probes, messages, running, settle

pytestmark = pytest.mark.anyio

WEB1, WEB2, WEB3, ROUTED = "10.0.2.11:8080", "10.0.2.12:8080", "10.0.2.13:8080", "10.0.3.10:8080"
ROUTE = "192.168.0.0/16"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def shares(e, proxy: str = "web", label: str = "default") -> dict[str, int]:
    table = e.dataplane.read_table(e.group_id(proxy, label))
    backends = e.dataplane.read_backends()
    return {f"{backends[b].ip}:{backends[b].port}": n for b, n in slot_counts(table).items()}


def view(e, address: str, proxy: str = "web") -> model.BackendView:
    e.publish()
    b = e.snapshot().backend(proxy, address)
    assert b is not None
    return b


async def ok(e, cmd: model.Command) -> str:
    r = await e.execute(cmd)
    assert r.ok, r
    return r.message


async def test_maintenance_takes_no_new_flows_pauses_checks_and_is_not_a_drain():
    probes = Probes()
    async with running(TWO_PROXIES, probes=probes) as (e, dp):
        await settle(lambda: view(e, WEB1).health is model.Health.UP, "WEB1 up")
        held = [dp.connect(f"192.0.2.1:{3000 + i}", "10.0.0.1:80") for i in range(60)]
        on_web1 = [f for f in held if f and f.backend_address == WEB1]
        msg = await ok(e, model.Maintenance("web", WEB1))
        assert msg == f"{WEB1} in maintenance: no new connections, health checks paused, 0 flows continue"
        b = view(e, WEB1)
        assert b.maintenance and b.drain is model.DrainState.ACTIVE and b.effective_weight == 0
        assert b.last_change == "maintenance"
        assert WEB1 not in shares(e)
        # health checks paused: none of WEB1 while the others go on; its last state stays
        checks = Counter(probes.checks)
        await settle(lambda: Counter(probes.checks)[WEB2] >= checks[WEB2] + 3, "checks of WEB2")
        assert Counter(probes.checks)[WEB1] == checks[WEB1]
        assert view(e, WEB1).health is model.Health.UP
        # its established flows go on; new ones go elsewhere
        for f in on_web1:
            dp.transfer(f, bytes_in=10, bytes_out=10)
        assert all(
            f.backend_address != WEB1
            for f in (dp.connect(f"192.0.2.2:{i}", "10.0.0.1:80") for i in range(100))
        )
        # a drain is refused (it is already out); `ready` brings it back and the checks resume
        r = await e.execute(model.Drain("web", WEB1))
        assert r == model.CommandResult(
            False, f"{WEB1} is in maintenance (it takes no new connections); `ready` ends it"
        )
        assert (
            await ok(e, model.Ready("web", WEB1)) == f"{WEB1} ready: back in rotation, health checks running"
        )
        assert WEB1 in shares(e) and not view(e, WEB1).maintenance
        await settle(lambda: Counter(probes.checks)[WEB1] > checks[WEB1], "WEB1 checked again")
        assert messages(e, "maintenance") == [msg, f"{WEB1} ready: back in rotation, health checks running"]


async def test_maintenance_replaces_a_drain_and_never_joins_a_panic():
    probes = Probes(down={WEB2: "refused", WEB3: "refused"})
    async with running(TWO_PROXIES, probes=probes) as (e, _dp):
        await ok(e, model.Drain("web", WEB1))
        await ok(e, model.Maintenance("web", WEB1))
        assert ("web", WEB1) not in e.overrides.drains and view(e, WEB1).drain is model.DrainState.ACTIVE
        await settle(
            lambda: view(e, WEB3).health is model.Health.DOWN and view(e, WEB2).health is model.Health.DOWN,
            "down",
        )
        e.publish()
        assert e.snapshot().service("web").panic  # WEB2 and WEB3 down, WEB1 in maintenance
        assert WEB1 not in shares(e) and set(shares(e)) == {WEB2, WEB3}
        assert await ok(e, model.Ready("web", WEB1))
        assert not e.snapshot().service("web").panic and set(shares(e)) == {WEB1}


async def test_forced_health_decides_whatever_the_checks_say_until_auto():
    probes = Probes(down={WEB3: "connection refused"})
    async with running(TWO_PROXIES, probes=probes) as (e, _dp):
        await settle(lambda: view(e, WEB3).health is model.Health.DOWN, "WEB3 down")
        await settle(lambda: view(e, WEB1).health is model.Health.UP, "WEB1 up")
        assert (
            await ok(e, model.ForceHealth("web", WEB1, "down"))
            == f"{WEB1} health forced down until `health ... auto`"
        )
        b = view(e, WEB1)
        assert (b.health, b.health_forced, b.effective_weight) == (model.Health.DOWN, True, 0)
        assert WEB1 not in shares(e)
        await ok(e, model.ForceHealth("web", WEB3, "up"))  # its checks still fail: it gets traffic anyway
        assert view(e, WEB3).health is model.Health.UP and WEB3 in shares(e)
        await settle(lambda: len(probes.checks) > 20, "more checks")  # the checks go on meanwhile
        assert view(e, WEB3).health is model.Health.UP and view(e, WEB1).health is model.Health.DOWN
        assert (
            await ok(e, model.ForceHealth("web", WEB3, "auto")) == f"{WEB3} health follows its checks again"
        )
        assert view(e, WEB3).health is model.Health.DOWN and not view(e, WEB3).health_forced
        assert WEB3 not in shares(e)
        bad = await e.execute(model.ForceHealth("web", WEB1, "sideways"))
        assert bad == model.CommandResult(False, "unknown health state 'sideways' (expected up, down, auto)")


async def test_a_circuit_held_closed_stays_closed_whatever_fails():
    clock = ManualClock()
    async with running(TWO_PROXIES, clock=clock) as (e, dp):
        assert (
            await ok(e, model.CircuitCommand("web", WEB1, "force_close")) == f"circuit of {WEB1} held closed"
        )
        assert view(e, WEB1).circuit_held
        e.tick()
        dp.add_counters(e.backend_id("web", WEB1), handshakes=1, conn_failures=50)
        clock.advance(0.25)
        e.tick()
        assert view(e, WEB1).circuit is model.Circuit.CLOSED and WEB1 in shares(e)
        assert await ok(e, model.CircuitCommand("web", WEB1, "force_open")) == f"circuit of {WEB1} held open"
        clock.advance(3600)
        e.tick()
        assert view(e, WEB1).circuit is model.Circuit.OPEN and WEB1 not in shares(e)
        assert await ok(e, model.CircuitCommand("web", WEB1, "reset")) == f"circuit of {WEB1} closed"
        assert not view(e, WEB1).circuit_held and e.overrides.circuits == {}


async def test_relative_weights():
    async with running(TWO_PROXIES) as (e, _dp):
        assert await ok(e, model.AdjustWeight("web", WEB1, step=1)) == f"{WEB1} weight 3 -> 4"
        assert await ok(e, model.AdjustWeight("web", WEB1, step=-3)) == f"{WEB1} weight 4 -> 1"
        r = await e.execute(model.AdjustWeight("web", WEB1, step=-1))
        assert r == model.CommandResult(
            False,
            f"{WEB1} weight 1 -1 would be 0; a weight is at least 1 "
            "(drain or maintenance takes a backend out)",
        )
        assert await ok(e, model.AdjustWeight("web", WEB1, percent=50)) == f"{WEB1} weight 1 -> 2"  # 50% of 3
        assert (
            await ok(e, model.AdjustWeight("web", WEB3, percent=10)) == f"{WEB3} weight 1 -> 1"
        )  # at least 1
        assert await ok(e, model.AdjustWeight("web", WEB2, percent=250)) == f"{WEB2} weight 2 -> 5"
        assert view(e, WEB2).configured_weight == 5 and shares(e) == {WEB1: 24, WEB2: 61, WEB3: 12}
        for bad, why in (
            (
                model.AdjustWeight("web", WEB1),
                "give a step (+1, -1) or a percentage of the configured weight",
            ),
            (model.AdjustWeight("web", WEB1, step=1, percent=5), "give a step or a percentage, not both"),
            (model.AdjustWeight("web", WEB1, percent=0), "percentage must be above 0 and at most 100000"),
        ):
            assert await e.execute(bad) == model.CommandResult(False, why)


async def test_a_backend_added_to_a_route_and_one_removed_with_its_flows_cut():
    async with running(TWO_PROXIES) as (e, dp):
        new = "10.0.3.11:8080"
        assert (
            await ok(e, model.AddBackend("web", new, 1, group=ROUTE))
            == f"added {new} weight 1 to web (route {ROUTE})"
        )
        assert set(shares(e, label=ROUTE)) == {ROUTED, new} and new not in shares(e)
        r = await e.execute(model.AddBackend("web", new, 1, group="10.9.0.0/16"))
        assert r == model.CommandResult(False, f"web has no group 10.9.0.0/16 (have: default, {ROUTE})")
        flows = [dp.connect(f"192.0.2.3:{4000 + i}", "10.0.0.1:80") for i in range(90)]
        bid = e.backend_id("web", WEB2)
        mine = sum(1 for f in flows if f and f.backend_address == WEB2)
        assert mine > 10
        msg = await ok(e, model.RemoveBackend("web", WEB2, cut=True))
        assert msg == f"removed {WEB2} from web; {mine} flows cut (conntrack entries removed)"
        _keys, vals = dp.conntrack_arrays()
        assert int((vals["backend_id"] == bid).sum()) == 0  # both directions of every flow gone
        others = int((vals["dir"] == structs.DIR_FORWARD).sum())
        assert others == 90 - mine  # nobody else's flow was touched
        assert e.overrides.removed == frozenset({("web", "default", WEB2)})


async def test_overrides_are_listed_and_cleared():
    async with running(TWO_PROXIES) as (e, _dp):
        for cmd in (
            model.SetWeight("web", WEB1, 7),
            model.Drain("web", WEB2, timeout_s=30, cut=True),
            model.Maintenance("web", WEB3),
            model.ForceHealth("dns", "10.0.4.10:53", "down"),
            model.CircuitCommand("web", WEB1, "force_open"),
            model.AddBackend("web", "10.0.2.20:8080", 2),
            model.RemoveBackend("dns", "10.0.4.11:53"),
            model.SetRateLimit("dns", per_source_rate=10),
        ):
            await ok(e, cmd)
        e.publish()
        listed = [(o.kind, o.proxy, o.backend, o.group, o.value) for o in e.snapshot().overrides]
        assert listed == [
            ("weight", "web", WEB1, None, "7"),
            ("drain", "web", WEB2, None, "draining, timeout in 30 s, then its flows are cut"),
            ("maintenance", "web", WEB3, None, "no new connections, health checks paused"),
            ("health", "dns", "10.0.4.10:53", None, "forced down"),
            ("circuit", "web", WEB1, None, "held open"),
            ("added", "web", "10.0.2.20:8080", "default", "added with weight 2"),
            ("removed", "dns", "10.0.4.11:53", "default", "removed"),
            ("rate_limit", "dns", None, None, "per source 10/s burst 10, per backend off"),
        ]
        msg = await ok(e, model.ClearOverrides("web", WEB1))
        assert msg == (
            f"cleared 2 runtime overrides of web {WEB1}: runtime weight 7 of web {WEB1}; "
            f"circuit held open of web {WEB1}"
        )
        assert view(e, WEB1).configured_weight == 3 and view(e, WEB1).circuit is model.Circuit.CLOSED
        assert (await ok(e, model.ClearOverrides("dns"))).startswith("cleared 3 runtime overrides of dns: ")
        assert (
            view(e, "10.0.4.11:53", "dns") is not None
            and view(e, "10.0.4.10:53", "dns").health is not model.Health.DOWN
        )
        assert await ok(e, model.ClearOverrides()) == (
            "cleared 3 runtime overrides of the instance: drain of web 10.0.2.12:8080; maintenance of web "
            "10.0.2.13:8080; backend added at run time of web 10.0.2.20:8080"
        )
        assert e.overrides == type(e.overrides)() and e.snapshot().overrides == ()
        assert await ok(e, model.ClearOverrides()) == "no runtime overrides of the instance"
        refused = await e.execute(model.ClearOverrides(None, WEB1))
        assert refused == model.CommandResult(False, "a backend needs its proxy")


async def test_a_reload_that_drops_an_added_backend_says_so():
    async with running(TWO_PROXIES) as (e, _dp):
        await ok(e, model.AddBackend("web", "10.0.2.40:8080", 2))
        await ok(e, model.SetWeight("web", WEB2, 9))
        with open(e.config.path, "a") as f:  # a changed file: weight of WEB2 and one more dns backend
            f.write('\n[[proxy.backend]]\naddress = "10.0.4.12:53"\nweight = 1\n')
        text = open(e.config.path).read().replace("weight = 2", "weight = 4")
        open(e.config.path, "w").write(text)
        assert (await e.execute(model.Reload())).ok
        assert messages(e, "override") == [
            "runtime weight 9 of web 10.0.2.12:8080 dropped: the file changed its weight",
            "backend added at run time of web 10.0.2.40:8080 dropped: "
            "a reload of a changed file takes the file's backends",
        ]
        assert all(ev.level is model.Level.WARNING for ev in e.events_since(0) if ev.kind == "override")
