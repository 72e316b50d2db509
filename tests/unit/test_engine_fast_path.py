# SPDX-License-Identifier: Apache-2.0
"""The data path's fast-path counters reach the engine's snapshots (and so the metrics page) only
while settings.fast_path is on."""

from __future__ import annotations

import pytest

from lbtui.dataplane.structs import FAST_PATH_FALLBACKS
from tests.support.engine import BASE_SETTINGS, running

pytestmark = pytest.mark.anyio

PROXY = """
[[proxy]]
name = "web"
vip = "10.0.0.1"
port = 80
interfaces = ["eth0"]

[[proxy.backend]]
address = "10.0.2.11:8080"
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_snapshot_carries_the_fast_path_counters() -> None:
    async with running(PROXY) as (engine, dp):
        dp.state.global_stats.update(fast_path_forwarded=40, fast_path_reply_forwarded=30, fast_path_ttl=2)
        engine.publish()
        fast = engine.snapshot().fast_path
        assert fast is not None
        assert fast.forwarded == {"forward": 40, "reply": 30}
        assert fast.fallbacks == {reason: 2 if reason == "ttl" else 0 for reason in FAST_PATH_FALLBACKS}


async def test_no_fast_path_in_the_snapshot_when_it_is_off() -> None:
    settings = BASE_SETTINGS.replace("[settings]\n", '[settings]\nfast_path = "off"\n', 1)
    async with running(settings + PROXY) as (engine, dp):
        dp.state.global_stats.update(fast_path_forwarded=40)
        engine.publish()
        assert engine.snapshot().fast_path is None
