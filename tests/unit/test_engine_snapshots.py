# SPDX-License-Identifier: Apache-2.0
"""Snapshots of the real Engine over the in-memory dataplane: counters, rates, latency, conntrack,
the flow view and flow queries, flow events (ring buffer and idle sweep) and the event log."""

from __future__ import annotations

import asyncio
import json

import pytest

from lbtui import model
from lbtui.dataplane import structs
from lbtui.dataplane.port import RawFlowEvent
from lbtui.engine.flows import MAX_PENDING_EVENTS
from tests.support.engine import ManualClock, messages, running

pytestmark = pytest.mark.anyio

WEB = """
[[proxy]]
name = "web"
interfaces = ["lb0"]
vip = "10.0.0.1"
port = 80
[[proxy.backend]]
address = "10.0.2.11:8080"
weight = 1
[[proxy.source_route]]
cidr = "192.168.0.0/16"
backends = [{ address = "10.0.3.10:8080", weight = 1 }]
[[proxy]]
name = "dns"
interfaces = ["lb0"]
vip = "10.0.0.1"
port = 53
protocol = "udp"
[[proxy.backend]]
address = "10.0.4.10:53"
weight = 1
"""
B1, ROUTED = "10.0.2.11:8080", "10.0.3.10:8080"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def published(e) -> model.Snapshot:
    e.tick()
    e.publish()
    return e.snapshot()


async def test_counters_rates_and_totals():
    clock = ManualClock()
    async with running(WEB, clock=clock) as (e, dp):
        e.tick()
        flows = [dp.connect(f"192.0.2.1:{1000 + i}", "10.0.0.1:80") for i in range(10)]
        for f in flows:
            dp.answer(f)
            dp.transfer(f, bytes_in=100, bytes_out=2000)
        dp.connect("192.168.1.1:2000", "10.0.0.1:80")
        dp.connect("192.0.2.2:3000", "10.0.0.1:53", protocol="udp", size=80)
        clock.advance(2.0)
        snap = published(e)
        b = snap.backend("web", B1)
        assert b.counters == model.Counters(
            packets_in=20, bytes_in=10 * 160, packets_out=10, bytes_out=20_000, new_flows=10, handshakes=10
        )
        assert b.new_flows_per_s == 5.0 and b.bytes_out_per_s == 10_000.0  # over the 2 s since the last tick
        assert snap.backend("web", ROUTED).counters.new_flows == 1  # routed by its source address
        assert snap.service("web").counters.new_flows == 11
        assert snap.totals.new_flows == 12 and snap.totals.bytes_in == 10 * 160 + 60 + 80


async def test_latency_histograms_from_the_data_path_and_the_idle_sweep():
    clock = ManualClock()
    async with running(WEB, clock=clock) as (e, dp):
        for i in range(4):
            f = dp.connect(f"192.0.2.1:{1000 + i}", "10.0.0.1:80")
            clock.advance(0.002)  # 2 ms handshakes
            dp.answer(f)
            clock.advance(0.5)
            dp.finish(f)  # a FIN close: timed in the data path
        idle = dp.connect("192.0.2.9:999", "10.0.0.1:80")
        dp.answer(idle)
        clock.advance(301)  # past tcp_timeout_s: the sweep closes it
        await e.sweep()
        snap = published(e)
        lat = next(v for v in snap.latency if v.backend == B1)
        assert lat.handshake is not None and lat.handshake.count == 5
        assert 1.0 <= snap.backend("web", B1).handshake_p50_ms <= 4.1
        assert lat.duration is not None and lat.duration.count == 5  # 4 FIN closes + 1 idle close
        assert snap.conntrack.swept_total >= 2 and snap.conntrack.flows == 0


async def test_conntrack_summary_flow_view_and_queries():
    clock = ManualClock()
    async with running(WEB, clock=clock) as (e, dp):
        big = dp.connect("192.0.2.50:5000", "10.0.0.1:80")
        dp.answer(big)
        dp.transfer(big, bytes_out=1_000_000)
        for i in range(5):
            dp.answer(dp.connect(f"192.0.2.{60 + i}:6000", "10.0.0.1:80"))
        closing = dp.connect("192.0.2.70:7000", "10.0.0.1:80")
        dp.finish(closing)
        dp.connect("192.0.2.80:8000", "10.0.0.1:53", protocol="udp")
        clock.advance(1)
        e.tick()  # the data path's live counts: 6 established flows
        await e.sweep()
        snap = published(e)
        # the UDP flow's backend has not answered: embryonic, like the closing flow not established
        assert snap.conntrack == model.ConntrackSummary(
            entries=16,
            flows=8,
            tcp=7,
            udp=1,
            closing=1,
            swept_total=0,
            embryonic=1,
            capacity=8192 + 2 * 65536,  # both families' established tables
        )
        assert snap.flows == ()  # nobody looked at flows: conntrack was not read whole
        query = model.FlowQuery(text="udp", sort="age")
        first = e.snapshot(query)
        assert first.flow_query == model.FlowQuery()  # no flows kept yet: the default view, said so
        await e.sweep()
        snap = published(e)
        assert snap.flows[0].client == "192.0.2.50:5000" and snap.flows[0].state == "established"
        assert snap.flows_matched == 8
        answer = e.snapshot(query)
        assert answer.flow_query == query and [f.client for f in answer.flows] == ["192.0.2.80:8000"]
        assert answer.flows_matched == 1
        with pytest.raises(ValueError, match="unknown sort 'size'"):
            e.snapshot(model.FlowQuery(sort="size"))


async def test_flow_events_reach_the_access_log(tmp_path):
    log = tmp_path / "access.json"
    text = (
        "[settings]\ntable_size = 97\n[settings.metrics]\nenabled = false\n"
        f'[settings.access_log]\nfile = "{log}"\nlog_new = true\n' + WEB
    )
    clock = ManualClock()
    async with running(text, clock=clock) as (e, dp):
        f = dp.connect("192.0.2.1:1234", "10.0.0.1:80")
        dp.answer(f)
        dp.transfer(f, bytes_in=300, bytes_out=4000)
        clock.advance(0.25)
        dp.finish(f)
        assert dp.poll_events() == 2  # the reader hands them over as one batch
        await asyncio.sleep(0.01)  # ... to the loop
        snap = published(e)
        assert len(snap.access_log_tail) == 2
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["new", "closed"]
    assert (lines[1]["client_ip"], lines[1]["client_port"], lines[1]["close_reason"]) == (
        "192.0.2.1",
        1234,
        "fin",
    )
    assert (lines[1]["bytes_in"], lines[1]["bytes_out"], lines[1]["duration_ms"]) == (360, 4000, 250.0)


async def test_a_flood_of_events_is_bounded_and_counted():
    async with running(WEB) as (e, _dp):
        raw = RawFlowEvent(
            structs.EV_CLOSED,
            1,
            0,
            0,
            ("192.0.2.1", 1),
            ("10.0.0.1", 80),
            ("10.0.2.11", 8080),
            "tcp",
            0,
            0,
            1,
            1,
            1,
            1,
            "fin",
        )
        seen: list[model.FlowEvent] = []
        e.flow_observers.append(seen.append)
        # the reader thread hands batches over faster than the loop runs
        e.flows.on_raw_events([raw] * (MAX_PENDING_EVENTS - 10))
        e.flows.on_raw_events([raw] * 100)
        assert e.flows.dropped == 90
        await asyncio.sleep(0.05)
        assert len(seen) == MAX_PENDING_EVENTS  # 10 of the second batch fitted
        assert published(e).events_dropped == 90


async def test_events_since_is_numbered_and_bounded():
    async with running(WEB) as (e, _dp):
        for w in range(2, 12):
            await e.execute(model.SetWeight("web", B1, w))
        all_events = e.events_since(0)
        assert [ev.seq for ev in all_events] == list(range(1, len(all_events) + 1))
        assert e.events_since(all_events[-3].seq) == all_events[-2:]
        assert len(e.events_since(0, limit=4)) == 4
        assert messages(e, "started") == ["load balancer running on lb0 with 2 proxies"]
