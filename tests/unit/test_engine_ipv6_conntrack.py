# SPDX-License-Identifier: Apache-2.0
"""The engine reads the IPv6 conntrack tables (lb_ct6_*) as it reads the IPv4 ones: an IPv6 proxy
starts, its flows live in the IPv6 tables of the in-memory dataplane, the sweep expires them and
counts them, a drain cut removes them, and the transient scan tells IPv6 flows apart by their whole
addresses (docs/datapath.md#ipv6)."""

from __future__ import annotations

import numpy as np
import pytest

from lbtui import model
from lbtui.control import conntrack
from lbtui.dataplane import structs
from lbtui.dataplane.records import CT6_ENTRY_DTYPE, CT6_KEY_DTYPE, flow_entries
from tests.support.engine import TWO_PROXIES, ManualClock, messages, running

pytestmark = pytest.mark.anyio

PROXY6 = """
[[proxy]]
name = "web6"
interfaces = ["lb0"]
vip = "fd00:10::1"
port = 80

[[proxy.backend]]
address = "[fd00:20::11]:8080"
weight = 1

[[proxy.backend]]
address = "[fd00:20::12]:8080"
weight = 1

[[proxy]]
name = "dns6"
interfaces = ["lb0"]
vip = "fd00:10::1"
port = 53
protocol = "udp"

[[proxy.backend]]
address = "[fd00:20::21]:5353"
"""
VIP6 = "fd00:10::1:80"  # MemoryDataplane.connect splits "ip:port" at the last colon
B1 = "[fd00:20::11]:8080"
B1_FLOW = "fd00:20::11:8080"  # MemoryFlow.backend_address: "ip:port" as is


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def open_flows6(dp, n: int, answer: bool = True, first_port: int = 30000, vip: str = VIP6):
    flows = [
        dp.connect(f"fd00:99::7:{first_port + i}", vip, "udp" if vip.endswith(":53") else "tcp")
        for i in range(n)
    ]
    assert all(f is not None for f in flows)
    if answer:
        for f in flows:
            dp.answer(f)
    return flows


async def counted(e) -> model.ConntrackSummary:
    """The summary after a tick (the data path's live counts) and a sweep (the transient scans)."""
    e.tick()
    await e.sweep()
    e.publish()
    return e.snapshot().conntrack


async def test_an_ipv6_proxy_starts_and_its_flows_live_in_the_ipv6_tables():
    async with running(TWO_PROXIES + PROXY6) as (e, dp):
        assert e.running
        flows = open_flows6(dp, 6)
        assert {f.backend_address.rpartition(":")[0] for f in flows} <= {"fd00:20::11", "fd00:20::12"}
        keys, vals = dp.conntrack_arrays(6)
        assert keys.dtype == CT6_KEY_DTYPE and vals.dtype == CT6_ENTRY_DTYPE and len(vals) == 12
        assert len(dp.conntrack_arrays(4)[1]) == 0
        assert dp.conntrack_count() == 12
        clients = {f.client for f in flow_entries(keys, vals)}
        assert clients == {("fd00:99::7", 30000 + i) for i in range(6)}
        summary = await counted(e)
        assert (summary.flows, summary.tcp, summary.entries) == (6, 6, 12)


async def test_the_sweep_expires_idle_ipv6_flows_and_counts_the_embryonic_ones():
    clock = ManualClock()
    async with running(TWO_PROXIES + PROXY6, clock=clock) as (e, dp):
        open_flows6(dp, 3)  # established TCP
        open_flows6(dp, 2, answer=False, first_port=31000)  # SYNs not answered: transient
        open_flows6(dp, 2, first_port=32000, vip="fd00:10::1:53")  # UDP, answered
        summary = await counted(e)
        assert (summary.flows, summary.embryonic, summary.udp) == (7, 2, 2)
        clock.advance(31)  # past the handshake timeout (30 s)
        await e.sweep()
        assert len(dp.conntrack_arrays(6)[1]) == 2 * 3 + 2 * 2  # the unanswered SYNs are gone
        clock.advance(e.config.settings.udp_timeout_s - 30)
        await e.sweep()
        assert len(dp.conntrack_arrays(6)[1]) == 2 * 3  # the UDP flows too
        clock.advance(e.config.settings.tcp_timeout_s + 1)
        await e.sweep()
        assert len(dp.conntrack_arrays(6)[1]) == 0
        assert e.sweeper.swept_total == 2 * 7
        assert (await counted(e)).flows == 0


async def test_a_drain_cut_removes_the_ipv6_flows_of_its_backend():
    clock = ManualClock()
    async with running(TWO_PROXIES + PROXY6, clock=clock) as (e, dp):
        flows = open_flows6(dp, 30)
        mine = [f for f in flows if f.backend_address == B1_FLOW]
        assert 0 < len(mine) < len(flows)
        await e.sweep()
        assert (await e.execute(model.Drain("web6", B1, timeout_s=1, cut=True))).ok
        clock.advance(1.5)
        await e.sweep()
        assert (
            messages(e, "drain")[-1]
            == f"{B1} drain timeout: {len(mine)} flows cut (conntrack entries removed)"
        )
        _keys, vals = dp.conntrack_arrays(6)
        assert int((vals["backend_id"] == e.backend_id("web6", B1)).sum()) == 0
        assert len(vals) == 2 * (len(flows) - len(mine))


def test_the_transient_scan_tells_ipv6_flows_apart_by_their_whole_addresses():
    """Two clients whose addresses differ only in their first word (fd00:1::5, fd01:1::5) are two
    flows, and each flow's two entries are one flow."""
    vals = np.zeros(4, dtype=CT6_ENTRY_DTYPE)
    keys = np.zeros(4, dtype=CT6_KEY_DTYPE)
    for i, client in enumerate(("fd00:1::5", "fd01:1::5")):
        for d in (structs.DIR_FORWARD, structs.DIR_REVERSE):
            row = 2 * i + d
            vals["client_ip"][row]["w"] = structs.ip6_to_words(client)
            vals["vip"][row]["w"] = structs.ip6_to_words("fd00:10::1")
            vals["client_port"][row] = vals["vip_port"][row] = structs.port_to_be16(80)
            vals["proto"][row], vals["dir"][row] = structs.PROTO_NUMBERS["tcp"], d
            vals["flags"][row] = structs.CT_F_SYN | structs.CT_F_SYN_RETX
            vals["created_ns"][row] = vals["last_seen_ns"][row] = 10**9
    t = conntrack.Timeouts(tcp_s=300, tcp_closing_s=10, udp_s=30)
    scan = conntrack.scan_transient(keys, vals, 2 * 10**9, t)
    assert (scan.flows, scan.tcp, scan.embryonic, scan.entries) == (2, 2, 2, 4)
    assert len(scan.unanswered) == 2 and len({flow for flow, _, _ in scan.unanswered}) == 2
    late = conntrack.scan_transient(keys, vals, 10**9 + 31 * 10**9, t)  # past syn_s (30 s)
    assert len(late.expiry) == 2 and late.flows == 0
