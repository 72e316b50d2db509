# SPDX-License-Identifier: Apache-2.0
"""DSR over IPIP with lbtui on three load-balancer hosts behind ECMP (issue 17, must-show 1;
docs/scale-out.md): every host encapsulates (bpf/lb_encap.h), the backends decapsulate
(`lbtui backend-setup`) and answer clients directly, health checks go through the tunnel, and a host
that dies (lbtui killed with SIGKILL, its router link down) loses no held connection and resets none:
ECMP moves its flows to the other hosts, whose Maglev pick sends every flow to the backend it had.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from lbtui.bird import BirdControl
from lbtui.control_client import SocketEngineHandle
from lbtui.engine import PIN_ROOT, instance_name
from lbtui.scaleout_lab import ScaleOutSpec
from tests.support.labtools import global_counter, wait_until
from tests.support.scaleout import ScaleOutClientLab
from tests.support.scaleout_lbtui import LbtuiHosts

pytestmark = pytest.mark.requires("bird")

PREFIX = "sxd"
HELD = 200
STEADY_INTERVAL_S = 0.01
ASK_EVERY_S = 1.0  # each held connection asks again this often
MAX_CLIENT_S = 240.0  # the clients' own bound, should the test die before telling them to stop


@pytest.fixture(scope="module")
def hosts():
    lab = ScaleOutClientLab(ScaleOutSpec(prefix=PREFIX, hosts=3, backends=3))
    lab.up()
    hosts = LbtuiHosts(lab, forwarding="ipip")
    hosts.remove_pins()
    try:
        # the servers listen on every address: the VIP (on lo, what clients and health checks reach)
        lab.start_backends(http_port=80, bind="0.0.0.0")
        router = BirdControl(lab.bird_socket(lab.ns_router))
        assert wait_until(lambda: sum(s.established for s in router.bgp_sessions()) == 3, timeout=20)
        for i in lab.host_ids:
            hosts.start(i)
        assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab), timeout=30)
        yield hosts
    finally:
        hosts.stop_all()
        lab.down()


def all_hosts(lab) -> set[str]:
    return {lab.host_ip(i) for i in lab.host_ids}


def counters(hosts: LbtuiHosts, i: int) -> dict[str, int]:
    """The data path's global counters of host i that these tests read (from its pinned maps)."""
    pins = os.path.join(PIN_ROOT, instance_name(hosts.socket(i)))
    return {name: global_counter(name, pins) for name in ("ipip_encap", "ipip_probes", "tc_snat")}


def backend_health(hosts: LbtuiHosts, i: int) -> dict[str, str]:
    handle = SocketEngineHandle(hosts.socket(i))
    try:
        service = handle.snapshot().service("web")
    finally:
        handle.close()
    return {b.address: b.health.value for b in service.all_backends()} if service else {}


def test_connections_go_through_every_host_to_every_backend_and_replies_bypass_the_hosts(hosts):
    lab = hosts.lab
    before = {i: counters(hosts, i) for i in lab.host_ids}
    result = lab.http_requests(150, new_conn=True)
    assert result.pop("errors") == 0
    assert set(result) == {"b1", "b2", "b3"}, result
    for i in lab.host_ids:
        after = counters(hosts, i)
        assert after["ipip_encap"] > before[i]["ipip_encap"], f"host {i} encapsulated nothing"
        assert after["tc_snat"] == before[i]["tc_snat"], "a reply passed a load-balancer host"
    decapsulated = sum(lab.backend_status(j)["program"]["counters"]["decap_ipip"] for j in lab.backend_ids)
    assert decapsulated >= 150 * 3  # SYN, ACK, request, FIN, ... of each connection


def test_health_checks_reach_each_backend_on_the_vip_through_the_tunnel(hosts):
    lab = hosts.lab
    for i in lab.host_ids:
        assert wait_until(lambda i=i: set(backend_health(hosts, i).values()) == {"up"}, timeout=10)
    probes = counters(hosts, 1)["ipip_probes"]
    time.sleep(0.5)
    assert counters(hosts, 1)["ipip_probes"] > probes, "health checks are not sent through the tunnel"
    # a backend that answers on its own address but not on the VIP is down for a DSR load balancer
    lab.run(lab.ns_backend(2), "ip", "addr", "del", f"{lab.vip}/32", "dev", "lo")
    try:
        for i in lab.host_ids:
            assert wait_until(
                lambda i=i: backend_health(hosts, i)[lab.backend_ip(2) + ":80"] == "down", timeout=10
            )
    finally:
        lab.run(lab.ns_backend(2), "ip", "addr", "add", f"{lab.vip}/32", "dev", "lo")
    for i in lab.host_ids:
        assert wait_until(lambda i=i: set(backend_health(hosts, i).values()) == {"up"}, timeout=10)


def test_a_dead_host_loses_no_connection_and_resets_none(hosts, capsys):
    lab = hosts.lab
    stop = os.path.join(lab.workdir, "ipip-clients.stop")
    resets_before = lab.client_tcp_resets()
    held = lab.client(
        "hold", "--host", lab.vip, "--port", "80", "--count", str(HELD), "--seconds", str(MAX_CLIENT_S),
        "--every", str(ASK_EVERY_S), "--until", stop, "--timeout", "10",
    )  # fmt: skip
    steady = None
    try:
        (opened,) = lab.client_lines(held, 1, timeout=60)
        assert opened["errors"] == 0 and sum(opened["backends"].values()) == HELD, opened
        steady = lab.client(
            "steady", "--url", f"http://{lab.vip}/", "--interval", str(STEADY_INTERVAL_S),
            "--seconds", str(MAX_CLIENT_S), "--until", stop, "--timeout", "5",
        )  # fmt: skip
        time.sleep(3)

        # host 1 dies: lbtui killed, then its link to the router goes down
        hosts.stop(1, signal.SIGKILL)
        lab.set_host_link(1, False)
        assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab) - {lab.host_ip(1)}, timeout=10)
        time.sleep(5)

        # host 1 comes back: lbtui first (it adopts its pinned data path), then the link
        hosts.start(1)
        lab.set_host_link(1, True)
        assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab), timeout=30)
        encapsulated = counters(hosts, 1)["ipip_encap"]
        assert wait_until(lambda: counters(hosts, 1)["ipip_encap"] > encapsulated, timeout=10), (
            "host 1 is back in the route but gets nothing"
        )
    finally:
        open(stop, "w").close()
    (done,) = lab.client_lines(held, 1, timeout=60)
    (steady_result,) = lab.client_lines(steady, 1, timeout=30)
    held.wait(10)
    steady.wait(10)
    resets = {k: v - resets_before[k] for k, v in lab.client_tcp_resets().items()}
    with capsys.disabled():
        print(f"\nDSR host death: held {done}, steady {steady_result}, client resets {resets}")
    assert done["errors"] == 0 and sum(done["backends"].values()) == HELD, done
    assert done["asked"] > HELD * 10, "the held connections were not asked while the host died"
    assert resets == {"TcpEstabResets": 0, "TcpAttemptFails": 0}
    assert steady_result["errors"] == 0, steady_result
    assert steady_result["longest_gap_s"] < 3.0, steady_result
