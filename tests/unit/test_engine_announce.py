# SPDX-License-Identifier: Apache-2.0
"""VIP announcement decisions on the real Engine over the in-memory dataplane, the routes recorded by
MemoryVipRoutes: announced while running with enough usable backends, withdrawn on a clean stop,
when too few backends are usable, on the operator's command; the snapshot says why."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from lbtui import model
from lbtui.dataplane.announce import MemoryVipRoutes
from tests.support.engine import BASE_SETTINGS, ManualClock, Probes, make_engine, messages, settle

pytestmark = pytest.mark.anyio

A1, A2 = "10.0.2.11:8080", "10.0.2.12:8080"

CONFIG = (
    BASE_SETTINGS
    + """
[settings.announce]
enabled = true
table = 4242
min_usable_backends = {min_usable}
announce_delay_s = {delay}
withdraw_grace_s = {grace}

[[proxy]]
name = "web"
interfaces = ["lb0"]
vip = "10.100.0.1"
port = 80

[proxy.health]
type = "tcp"
interval_ms = 20
timeout_ms = 10
rise = 1
fall = 1

[[proxy.backend]]
address = "10.0.2.11:8080"

[[proxy.backend]]
address = "10.0.2.12:8080"

[[proxy]]
name = "api"
interfaces = ["lb0"]
vip = "10.100.0.2"
port = 443

[[proxy.backend]]
address = "10.0.2.21:443"
"""
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def engine_with_routes(min_usable: int = 1, delay: float = 0.0, grace: float = 0.0, **kwargs: object):
    routes = MemoryVipRoutes()
    factory_calls: list[tuple[int, int]] = []

    def factory(table: int, proto: int) -> MemoryVipRoutes:
        factory_calls.append((table, proto))
        routes.table, routes.proto = table, proto
        return routes

    engine, _dp = make_engine(
        CONFIG.format(min_usable=min_usable, delay=delay, grace=grace), announce_routes=factory, **kwargs
    )
    return engine, routes, factory_calls


def health(engine, address: str) -> model.Health:
    return engine.topology.proxies["web"].groups["default"].members[address].factors.health_state


def vip(engine, address: str) -> model.VipAnnouncement:
    found = engine.snapshot().announce.vip(address)
    assert found is not None
    return found


async def test_announced_at_start_and_withdrawn_on_a_clean_stop():
    engine, routes, calls = engine_with_routes()
    assert routes.routes == set()
    await engine.start()
    assert calls == [(4242, 241)]
    assert routes.routes == {"10.100.0.1", "10.100.0.2"}
    view = engine.snapshot().announce
    assert view.enabled and view.table == 4242
    assert vip(engine, "10.100.0.1") == model.VipAnnouncement(
        "10.100.0.1", ("web",), True, "web: 2 of 2 backends usable", 2, False, view.vips[0].since
    )
    await engine.stop()
    assert routes.routes == set()
    assert sorted(routes.log[-2:]) == [("withdraw", "10.100.0.1"), ("withdraw", "10.100.0.2")]
    assert "withdrew 10.100.0.1: load balancer stopping" in messages(engine, "announce")


async def test_a_clean_stop_withdraws_then_serves_for_the_grace_before_detaching():
    engine, routes, _ = engine_with_routes(grace=0.3)
    dp = engine.dataplane
    await engine.start()
    stop = asyncio.create_task(engine.stop())
    await asyncio.sleep(0.1)
    assert routes.routes == set()  # withdrawn at once: the routers stop sending new flows here
    assert dp.interfaces == ("lb0",) and not stop.done()  # still serving the flows in flight
    await stop
    assert dp.interfaces == ()
    assert "stopping: 10.100.0.1, 10.100.0.2 withdrawn, serving 0.3 s more" in messages(engine, "announce")


async def test_a_second_stop_during_the_grace_waits_for_the_first():
    # `lbtui ctl stop` starts a stop on the engine's loop; the headless loop sees the engine no longer
    # running and closes the runner, which stops again: that stop must not detach during the grace
    engine, routes, _ = engine_with_routes(grace=0.3)
    dp = engine.dataplane
    await engine.start()
    first = asyncio.create_task(engine.stop())
    await asyncio.sleep(0.05)
    second = asyncio.create_task(engine.stop())
    await asyncio.sleep(0.1)
    assert routes.routes == set() and dp.interfaces == ("lb0",)
    assert not second.done()
    await second
    assert first.done() and dp.interfaces == ()


async def test_no_grace_when_nothing_was_withdrawn():
    engine, routes, _ = engine_with_routes(min_usable=3, grace=5.0)  # too few backends: not announced
    await engine.start()
    assert routes.routes == set()
    await asyncio.wait_for(engine.stop(), 1.0)


async def test_withdraw_on_stop_false_leaves_the_routes_for_the_next_run():
    engine, routes, _ = engine_with_routes()
    settings = engine.config.settings
    announce = replace(settings.announce, withdraw_on_stop=False)
    engine.config = replace(engine.config, settings=replace(settings, announce=announce))
    await engine.start()
    await engine.stop()
    assert routes.routes == {"10.100.0.1", "10.100.0.2"}
    # the next run finds them, keeps them while it may announce, and logs no second announcement
    engine2, _dp = make_engine(
        CONFIG.format(min_usable=1, delay=0, grace=0), announce_routes=lambda t, p: routes
    )
    await engine2.start()
    assert routes.log.count(("announce", "10.100.0.1")) == 1
    assert vip(engine2, "10.100.0.1").announced
    await engine2.stop()
    assert routes.routes == set()


async def test_withdrawn_when_too_few_backends_are_usable_and_announced_again():
    probes = Probes()
    engine, routes, _ = engine_with_routes(min_usable=2, probes=probes)
    await engine.start()
    try:
        assert "10.100.0.1" in routes.routes
        probes.down[A1] = "connection refused"
        await settle(lambda: health(engine, A1) is model.Health.DOWN, "A1 down")
        engine.publish()  # no tick needed: the health change itself decides
        assert "10.100.0.1" not in routes.routes
        assert vip(engine, "10.100.0.2").reason == "1 of 1 backends usable (needs 2)"  # never announced
        state = vip(engine, "10.100.0.1")
        assert not state.announced and state.usable_backends == 1
        assert state.reason == "1 of 2 backends usable (needs 2)"
        assert "withdrew 10.100.0.1: 1 of 2 backends usable (needs 2)" in messages(engine, "announce")
        del probes.down[A1]
        await settle(lambda: health(engine, A1) is model.Health.UP, "A1 up")
        assert "10.100.0.1" in routes.routes
    finally:
        await engine.stop()


async def test_a_drained_backend_is_not_usable():
    engine, routes, _ = engine_with_routes(min_usable=2)
    await engine.start()
    try:
        await engine.execute(model.Drain("web", A2))
        assert "10.100.0.1" not in routes.routes  # the command's own publish decides at once
        await engine.execute(model.Undrain("web", A2))
        assert "10.100.0.1" in routes.routes
    finally:
        await engine.stop()


async def test_a_backend_in_maintenance_or_forced_down_is_not_usable():
    engine, routes, _ = engine_with_routes(min_usable=2)
    await engine.start()
    try:
        await engine.execute(model.Maintenance("web", A2))  # no new connections: as a drain
        assert "10.100.0.1" not in routes.routes
        assert vip(engine, "10.100.0.1").reason == "1 of 2 backends usable (needs 2)"
        await engine.execute(model.Ready("web", A2))
        assert "10.100.0.1" in routes.routes
        await engine.execute(model.ForceHealth("web", A1, "down"))
        assert "10.100.0.1" not in routes.routes
        await engine.execute(model.ForceHealth("web", A1, "auto"))
        await settle(lambda: "10.100.0.1" in routes.routes, "announced again")
    finally:
        await engine.stop()


async def test_operator_withdraws_and_announces_one_proxy_or_all():
    engine, routes, _ = engine_with_routes()
    await engine.start()
    try:
        result = await engine.execute(model.Announce("withdraw", "web"))
        assert result == model.CommandResult(
            True, "10.100.0.1 withdrawn by the operator: out of BGP rotation until `announce`"
        )
        assert routes.routes == {"10.100.0.2"}
        state = vip(engine, "10.100.0.1")
        assert state.held and state.reason == "withdrawn by the operator"
        engine.tick()  # a tick does not undo it
        assert routes.routes == {"10.100.0.2"}
        await engine.execute(model.Announce("withdraw"))
        assert routes.routes == set()
        result = await engine.execute(model.Announce("announce"))
        assert result.ok and routes.routes == {"10.100.0.1", "10.100.0.2"}
        assert not vip(engine, "10.100.0.1").held
    finally:
        await engine.stop()


async def test_announce_commands_refused():
    engine, routes, _ = engine_with_routes()
    await engine.start()
    try:
        assert await engine.execute(model.Announce("drop")) == model.CommandResult(
            False, "action must be one of withdraw, announce, got 'drop'"
        )
        result = await engine.execute(model.Announce("withdraw", "nope"))
        assert not result.ok and result.message.startswith("no proxy named 'nope'")
        assert routes.routes == {"10.100.0.1", "10.100.0.2"}
        assert messages(engine, "command")[-1].startswith("Announce refused: no proxy named 'nope'")
    finally:
        await engine.stop()


async def test_disabled_announces_nothing_and_refuses_the_command():
    from tests.support.engine import running

    text = CONFIG.format(min_usable=1, delay=0, grace=0).replace("enabled = true", "enabled = false")

    def no_routes(table: int, proto: int) -> MemoryVipRoutes:
        raise AssertionError("no routes when announcement is off")

    async with running(text.replace(BASE_SETTINGS, ""), announce_routes=no_routes) as (engine, _dp):
        assert engine.snapshot().announce == model.AnnounceView()
        result = await engine.execute(model.Announce("withdraw"))
        assert result == model.CommandResult(
            False, "VIP announcement is off (settings.announce.enabled = false)"
        )


async def test_announce_delay():
    clock = ManualClock()
    engine, routes, _ = engine_with_routes(delay=5.0, clock=clock)
    await engine.start()
    try:
        assert routes.routes == set()
        assert vip(engine, "10.100.0.1").reason == "web: 2 of 2 backends usable; announcing after 5 s"
        clock.advance(4.9)
        engine.tick()
        assert routes.routes == set()
        clock.advance(0.2)
        engine.tick()
        assert routes.routes == {"10.100.0.1", "10.100.0.2"}
    finally:
        await engine.stop()


async def test_a_refused_route_change_is_retried_and_shown():
    engine, routes, _ = engine_with_routes()
    routes.fail = "Operation not permitted"
    await engine.start()
    try:
        state = vip(engine, "10.100.0.1")
        assert not state.announced and state.error == "Operation not permitted"
        assert "10.100.0.1: Operation not permitted" in messages(engine, "announce")
        routes.fail = None
        engine.tick()
        engine.publish()
        assert routes.routes == {"10.100.0.1", "10.100.0.2"}
        assert vip(engine, "10.100.0.1").error is None
    finally:
        await engine.stop()


async def test_bird_sessions_in_the_snapshot(tmp_path):
    engine, _routes, _ = engine_with_routes()
    await engine.start()
    try:
        await engine.scale_out.announcer.read_bird()  # no BIRD at the default socket in a unit test
        engine.publish()
        view = engine.snapshot().announce
        assert view.bgp == () and view.bird_error
    finally:
        await engine.stop()
