# SPDX-License-Identifier: Apache-2.0
"""The operator's `announce withdraw` is a runtime override (README.md#runtime-state): kept in the
state file, so a restart does not announce the VIP again; `announce` clears it, and so does clearing
the proxy's overrides. Real Engine over the in-memory dataplane, routes recorded by MemoryVipRoutes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lbtui import model
from lbtui.dataplane.announce import MemoryVipRoutes
from lbtui.engine import Engine
from tests.support.engine import make_engine, messages
from tests.unit.test_engine_announce import CONFIG

pytestmark = pytest.mark.anyio

WEB_VIP, API_VIP = "10.100.0.1", "10.100.0.2"

# a third proxy on web's VIP (another port): one route, so one hold for both
SHARED = """
[[proxy]]
name = "web-tls"
interfaces = ["lb0"]
vip = "10.100.0.1"
port = 443

[[proxy.backend]]
address = "10.0.2.31:443"
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config_text(state_file: str, extra: str = "") -> str:
    text = CONFIG.format(min_usable=1, delay=0, grace=0) + extra
    return text.replace("[settings]\n", f'[settings]\nstate_file = "{state_file}"\n', 1)


async def started(text: str, tmp_path: Path) -> tuple[Engine, MemoryVipRoutes]:
    routes = MemoryVipRoutes()
    engine, _dp = make_engine(text, path=str(tmp_path / "lb.toml"), announce_routes=lambda t, p: routes)
    await engine.start()
    return engine, routes


def held(engine) -> dict[str, bool]:
    engine.publish()
    return {v.vip: v.held for v in engine.snapshot().announce.vips}


async def test_the_operators_withdraw_survives_a_restart_and_announce_clears_it(tmp_path):
    path = str(tmp_path / "lb.state")
    text = config_text(path)
    first, routes = await started(text, tmp_path)
    assert (await first.execute(model.Announce("withdraw", "web"))).ok
    assert routes.routes == {API_VIP}
    await first.stop()

    second, routes = await started(text, tmp_path)
    try:
        assert routes.routes == {API_VIP}  # never announced again: the hold came back first
        assert held(second) == {WEB_VIP: True, API_VIP: False}
        listed = [(o.kind, o.proxy, o.backend) for o in second.snapshot().overrides]
        assert listed == [("withdrawn", "web", None)]
        assert ("announce", WEB_VIP) not in routes.log
        assert (await second.execute(model.Announce("announce", "web"))).ok
        assert routes.routes == {WEB_VIP, API_VIP}
    finally:
        await second.stop()

    third, routes = await started(text, tmp_path)
    try:
        assert routes.routes == {WEB_VIP, API_VIP}
        assert held(third) == {WEB_VIP: False, API_VIP: False}
        assert not third.snapshot().overrides
    finally:
        await third.stop()


async def test_withdraw_of_every_vip_survives_a_restart(tmp_path):
    path = str(tmp_path / "lb.state")
    first, _routes = await started(config_text(path), tmp_path)
    assert (await first.execute(model.Announce("withdraw"))).ok
    await first.stop()
    saved = json.load(open(path))
    assert sorted(saved["withdrawn"]) == ["api", "web"]
    second, routes = await started(config_text(path), tmp_path)
    try:
        assert routes.routes == set() and routes.log == []
        assert messages(second, "state") == [f"restored 2 runtime overrides from {path}"]
    finally:
        await second.stop()


async def test_the_hold_is_per_vip_whichever_proxy_on_it_is_named(tmp_path):
    path = str(tmp_path / "lb.state")
    engine, routes = await started(config_text(path, SHARED), tmp_path)
    try:
        assert (await engine.execute(model.Announce("withdraw", "web-tls"))).ok
        assert routes.routes == {API_VIP}
        kinds = sorted((o.kind, o.proxy) for o in engine.snapshot().overrides)
        assert kinds == [("withdrawn", "web"), ("withdrawn", "web-tls")]
        assert (await engine.execute(model.Announce("announce", "web"))).ok  # the same VIP
        assert routes.routes == {WEB_VIP, API_VIP} and not engine.snapshot().overrides
    finally:
        await engine.stop()


async def test_clearing_a_proxys_overrides_announces_its_vip_again(tmp_path):
    engine, routes = await started(config_text(str(tmp_path / "lb.state")), tmp_path)
    try:
        await engine.execute(model.Announce("withdraw", "web"))
        result = await engine.execute(model.ClearOverrides("web"))
        assert result.ok and "VIP withdrawal of web" in result.message
        assert routes.routes == {WEB_VIP, API_VIP}
    finally:
        await engine.stop()


async def test_the_hold_of_a_proxy_the_file_dropped_is_dropped_with_an_event(tmp_path):
    path = str(tmp_path / "lb.state")
    first, _routes = await started(config_text(path, SHARED), tmp_path)
    await first.execute(model.Announce("withdraw", "web"))
    await first.stop()
    without_web_tls = config_text(path)  # web-tls is gone; web's hold stays
    second, routes = await started(without_web_tls, tmp_path)
    try:
        assert routes.routes == {API_VIP}
        assert messages(second, "override") == [
            "VIP withdrawal of web-tls dropped: proxy web-tls is no longer in the configuration"
        ]
    finally:
        await second.stop()
