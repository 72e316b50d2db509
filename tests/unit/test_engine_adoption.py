# SPDX-License-Identifier: Apache-2.0
"""Adoption on the real Engine over the in-memory dataplane: a second engine takes over the pinned
state the first left (--keep-dataplane), with the same ids and tables, its counters and its flows;
what the new configuration no longer has is released."""

from __future__ import annotations

import pytest

from lbtui import model
from lbtui.dataplane.memory import MemoryPins
from tests.support.engine import TWO_PROXIES, ManualClock, messages, running

pytestmark = pytest.mark.anyio

WEB1, WEB3 = "10.0.2.11:8080", "10.0.2.13:8080"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def ids(e) -> dict[str, object]:
    t = e.topology
    return {
        "services": {p.name: p.service_id for p in t.proxies.values()},
        "groups": {(p.name, label): g.id for p in t.proxies.values() for label, g in p.groups.items()},
        "backends": {(m.proxy, m.group, m.address): m.id for m in t.backends.values()},
        "tables": {
            (p.name, label): e.dataplane.read_table(g.id)
            for p in t.proxies.values()
            for label, g in p.groups.items()
        },
    }


async def test_a_restart_adopts_ids_tables_counters_and_flows():
    pins, clock = MemoryPins(), ManualClock()
    async with running(TWO_PROXIES, pins=pins, clock=clock, keep_dataplane=True) as (first, dp1):
        assert (await first.execute(model.SetWeight("web", WEB1, 5))).ok  # a table no fresh start makes
        flows = [dp1.connect(f"192.0.2.3:{9000 + i}", "10.0.0.1:80") for i in range(40)]
        for f in flows:
            dp1.answer(f)
        first.tick()
        first.publish()
        before = ids(first)
        counters = {b.address: b.counters for b in first.snapshot().service("web").backends}
        assert sum(c.new_flows for c in counters.values()) == 40
        path = first.config.path
        text = open(path).read()  # type: ignore[arg-type]
    assert messages(first, "stopped") == [
        "load balancer stopped; programs left attached and maps pinned (--keep-dataplane)"
    ]
    assert list(pins.states) == ["/run/lbtui/bpffs/unit"]

    async with running(text, pins=pins, clock=clock) as (second, dp2):
        assert dp2.adopted
        assert messages(second, "adopted") == [
            "took over the data path of an earlier run: 2 services, 6 backends, about 40 flows in conntrack"
        ]
        after = ids(second)
        assert after["services"] == before["services"]
        assert after["groups"] == before["groups"]
        assert after["backends"] == before["backends"]
        # the configured weight is back (the runtime weight was not persisted): only that group moved
        assert after["tables"][("dns", "default")] == before["tables"][("dns", "default")]
        assert after["tables"][("web", "192.168.0.0/16")] == before["tables"][("web", "192.168.0.0/16")]
        second.tick()
        second.publish()
        assert {b.address: b.counters for b in second.snapshot().service("web").backends} == counters
        assert dp2.conntrack_count() == 80
        for f in flows:
            dp2.transfer(f, bytes_in=10)  # the adopted flows go on
    assert pins.states == {}  # a clean stop unpins


async def test_what_the_new_configuration_lacks_is_released():
    pins = MemoryPins()
    async with running(TWO_PROXIES, pins=pins, keep_dataplane=True) as (first, _dp1):
        old_web3 = first.backend_id("web", WEB3)
        dns_service = first.topology.proxies["dns"].service_id
        text = open(first.config.path).read()  # type: ignore[arg-type]
    smaller = text.replace('[[proxy.backend]]\naddress = "10.0.2.13:8080"\nweight = 1\n', "")
    smaller = smaller[: smaller.index('[[proxy]]\nname = "dns"')]
    smaller += '[[proxy.backend]]\naddress = "10.0.2.99:8080"\nweight = 1\n'
    async with running(smaller, pins=pins) as (second, dp2):
        assert [s.name for s in second.snapshot().services] == ["web"]
        assert [s[:3] for s in dp2.read_services()] == [("10.0.0.1", 80, "tcp")]
        assert dp2.read_backends()[old_web3].active is False
        assert (
            second.backend_id("web", "10.0.2.99:8080")
            > max(b for b in dp2.read_backends() if b != old_web3) - 1
        )
        assert old_web3 not in set(dp2.read_table(second.group_id("web")))
        assert second.topology.proxies["web"].service_id != dns_service


async def test_without_keep_nothing_is_left_to_adopt():
    pins = MemoryPins()
    async with running(TWO_PROXIES, pins=pins) as (first, _dp):
        text = open(first.config.path).read()  # type: ignore[arg-type]
    assert pins.states == {}
    async with running(text, pins=pins) as (second, dp):
        assert not dp.adopted and not messages(second, "adopted")
