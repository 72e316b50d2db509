# SPDX-License-Identifier: Apache-2.0
"""The scale-out lab: VIP routes a load-balancer host announces through BIRD reach the router as
one ECMP route, the router spreads flows over the hosts by an L4 hash, and a host that withdraws,
dies, hangs or loses its link leaves the route and comes back.

The hosts forward with the IPIP relay stand-in (tests/support/ipip_relay.py) until lbtui's data path
encapsulates; backends decapsulate with `lbtui backend-setup` and answer the client directly.
How fast each change reaches the router is measured by bench/scaleout_bgp.py (docs/scale-out.md).
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from lbtui.bird import BirdControl
from lbtui.scaleout_lab import VIP, ScaleOutSpec
from tests.support.labtools import served, wait_until
from tests.support.scaleout import ScaleOutClientLab

pytestmark = pytest.mark.requires("bird")

PREFIX = "sxo"


@pytest.fixture(scope="module")
def lab():
    lab = ScaleOutClientLab(ScaleOutSpec(prefix=PREFIX, hosts=3, backends=3))
    lab.up()
    try:
        lab.start_backends(http_port=80, udp_port=5353, bind=VIP)
        for i in lab.host_ids:
            lab.start_relay(i)
        router = BirdControl(lab.bird_socket(lab.ns_router))
        assert wait_until(lambda: sum(s.established for s in router.bgp_sessions()) == 3, timeout=20)
        yield lab
    finally:
        lab.down()


def all_hosts(lab) -> set[str]:
    return {lab.host_ip(i) for i in lab.host_ids}


@pytest.fixture
def announced(lab):
    """Every host announces the VIP, and does again after the test (whatever the test did)."""
    for i in lab.host_ids:
        lab.host_routes(i).announce(VIP)
    assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab), timeout=20)
    yield
    for i in lab.host_ids:
        lab.host_routes(i).announce(VIP)
    assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab), timeout=30)


def flows_by_host(lab) -> dict[int, set[tuple[str, ...]]]:
    return {i: {tuple(f[:5]) for f in lab.relayed_flows(i)} for i in lab.host_ids}


def new_flows(lab, connections: int) -> dict[int, int]:
    """Open `connections` connections to the VIP; how many new flows each host carried."""
    before = flows_by_host(lab)
    assert lab.http_requests(connections, new_conn=True)["errors"] == 0
    after = flows_by_host(lab)
    fresh = {i: after[i] - before[i] for i in lab.host_ids}
    # every flow went through exactly one host
    assert sum(len(f) for f in fresh.values()) == len(set().union(*fresh.values())) == connections
    return {i: len(fresh[i]) for i in lab.host_ids}


def test_bgp_sessions_are_read_from_bird(lab):
    for i in lab.host_ids:
        (uplink,) = BirdControl(lab.bird_socket(lab.ns_host(i))).bgp_sessions()
        assert uplink.established and uplink.neighbor == lab.host_gateway(i) and uplink.neighbor_as == 65000
    router = BirdControl(lab.bird_socket(lab.ns_router)).bgp_sessions()
    assert {s.neighbor for s in router if s.established} == all_hosts(lab)


def test_announcements_reach_the_router_as_one_ecmp_route(lab):
    for i in lab.host_ids:
        lab.host_routes(i).withdraw(VIP)
    assert wait_until(lambda: lab.router_nexthops() == set(), timeout=10)
    for i in lab.host_ids:
        assert lab.host_routes(i).announce(VIP) is True
        assert lab.host_routes(i).announce(VIP) is False  # already announced
        assert lab.host_routes(i).announced() == {VIP}
        assert wait_until(lambda i=i: lab.host_ip(i) in lab.router_nexthops(), timeout=10)
    assert lab.router_nexthops() == all_hosts(lab)


def test_ecmp_spreads_flows_over_every_host_and_replies_skip_them(lab, announced):
    spread = new_flows(lab, 90)
    assert all(n > 0 for n in spread.values()), spread
    assert all(lab.replies_seen_by_relay(i) == 0 for i in lab.host_ids)
    # every backend got flows too (the relays' shared 5-tuple hash)
    peers = Counter(j for j in lab.backend_ids for _ in lab.recorded_peers(j))
    assert set(peers) == set(lab.backend_ids)


def test_a_withdrawn_host_gets_no_new_flows(lab, announced):
    assert lab.host_routes(2).withdraw(VIP) is True
    assert lab.host_routes(2).withdraw(VIP) is False
    assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab) - {lab.host_ip(2)}, timeout=10)
    spread = new_flows(lab, 30)
    assert spread[2] == 0 and spread[1] > 0 and spread[3] > 0


def test_withdraw_all_is_a_clean_stop(lab, announced):
    assert lab.host_routes(3).withdraw_all() == {VIP}
    assert lab.host_routes(3).announced() == set()
    assert wait_until(lambda: lab.host_ip(3) not in lab.router_nexthops(), timeout=10)


EVENTS = {
    # name: (host, what happens, how it comes back)
    "bird-killed": (1, lambda lab, i: lab.signal_bird(lab.ns_host(i), signal.SIGKILL), "restart"),
    "bird-stopped": (2, lambda lab, i: lab.signal_bird(lab.ns_host(i), signal.SIGTERM), "restart"),
    "host-hung": (3, lambda lab, i: lab.signal_bird(lab.ns_host(i), signal.SIGSTOP), "continue"),
    "link-down": (1, lambda lab, i: lab.set_host_link(i, up=False), "link-up"),
}


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_a_dead_host_leaves_the_route_and_comes_back(lab, announced, event):
    i, happen, recovery = EVENTS[event]
    happen(lab, i)
    assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab) - {lab.host_ip(i)}, timeout=10)
    spread = new_flows(lab, 20)
    assert spread[i] == 0
    if recovery == "restart":
        lab.start_bird_host(i)  # BIRD learns the VIP route lbtui left in the table and announces it
    elif recovery == "continue":
        lab.signal_bird(lab.ns_host(i), signal.SIGCONT)
    else:
        lab.set_host_link(i, up=True)
    assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab), timeout=30)
    assert served(lab.http_requests(10)) and lab.http_requests(10)["errors"] == 0
