# SPDX-License-Identifier: Apache-2.0
"""The XDP fast path over IPv6 with real traffic (settings.fast_path = "auto", bpf/lb_fastpath6.h;
issue 16).

The lab runs over IPv6 (Lab.config_toml(family=6): VIP6, backends fd00:20::1x behind the bridge
``lq6br0`` of the LB namespace). DNATed packets from the client are redirected to the bridge from
XDP (generic mode, as the lab runs); that needs the bridge in lb_fp_ifaces, found from the route to
the IPv6 backends. Checked: HTTP and UDP are served, most client packets go the fast way, the first
packets to a backend whose neighbour entry is gone take the kernel's path and are delivered, a
datagram larger than the backend side's MTU falls back and the kernel's Packet Too Big reaches the
client (about the VIP), and no namespace counts a checksum error. Replies take the TC way (no IPv6
reply fast path yet).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lbtui.addresses import IPV6
from lbtui.engine import PIN_ROOT
from lbtui.lab import VIP6
from tests.support.labtools import global_counter, running_lb, served

pytestmark = pytest.mark.root

P = "lq6"
PIN_DIR = f"{PIN_ROOT}/{P}"
URL = f"http://[{VIP6}]/"
CSUM_ERRORS = ("TcpInCsumErrors", "Udp6InCsumErrors", "Icmp6InCsumErrors")

# a connected UDP socket with IPV6_PMTUDISC_DO sends a datagram larger than the path, then reads the
# path MTU it learnt from the Packet Too Big that came back (kept per destination: the VIP)
PMTU_PROBE = """
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, 23, 2)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
s.connect((sys.argv[1], 5353))
for _ in range(20):
    try:
        s.send(b"x" * 1450)
    except OSError:
        pass  # EMSGSIZE once the smaller path MTU is known
    time.sleep(0.1)
print(s.getsockopt(socket.IPPROTO_IPV6, 24))  # IPV6_MTU
"""


def counters() -> dict[str, int]:
    names = (
        "fast_path_forwarded",
        "fast_path_reply_forwarded",
        "fast_path_no_neigh",
        "fast_path_frag_needed",
        "fast_path_unmanaged",
        "fast_path_ip_options",
        "fast_path_fib_other",
    )
    return {n: global_counter(n, PIN_DIR) for n in names}


def test_ipv6_fast_path_serves_falls_back_and_keeps_checksums(tmp_path: Path) -> None:
    with running_lb(P, tmp_path, settings='fast_path = "auto"\n', family=IPV6) as (lab, _):
        # the client checks the checksums of what it gets itself (veth would trust them otherwise)
        lab.run(lab.ns_client, "ethtool", "-K", f"{P}c0", "rx", "off")
        csum_before = lab.nstat_csum_errors(CSUM_ERRORS)
        # nothing has talked to the backends from the LB yet: no neighbour entries
        lab.run(lab.ns_lb, "ip", "-6", "neigh", "flush", "dev", f"{P}br0")
        before = counters()
        got = lab.http_requests(30, url=URL)
        assert got["errors"] == 0 and len(served(got)) == 3, got
        udp = lab.udp_requests(30, host=VIP6)
        assert udp["errors"] == 0 and len(served(udp)) == 3, udp
        moved = {k: v - before[k] for k, v in counters().items()}
        assert moved["fast_path_no_neigh"] >= 1, moved  # the first packets went the kernel's way
        assert moved["fast_path_forwarded"] > 30 * 3, moved  # SYN, ACK, request, FINs, datagrams
        assert moved["fast_path_unmanaged"] == 0, moved  # the bridge is in lb_fp_ifaces
        assert moved["fast_path_ip_options"] == moved["fast_path_fib_other"] == 0, moved
        assert moved["fast_path_reply_forwarded"] == 0, moved  # IPv6 replies: TC

        # a keep-alive connection after the neighbours are known: its packets all go fast
        before = counters()
        got = lab.http_requests(50, new_conn=False, url=URL)
        assert got["errors"] == 0 and sum(served(got).values()) == 50, got
        moved = {k: v - before[k] for k, v in counters().items()}
        assert moved["fast_path_forwarded"] >= 50, moved
        assert moved["fast_path_no_neigh"] == 0, moved

        # the backend side narrower than the client side: a big datagram falls back and the
        # kernel's Packet Too Big (made to be about the VIP by the TC program) tells the client
        lab.run(lab.ns_lb, "ip", "link", "set", f"{P}br0", "mtu", "1400")
        before = counters()
        r = lab.run(lab.ns_client, *lab.python_cmd("-c", PMTU_PROBE, VIP6), timeout=30)
        assert int(r.stdout.strip()) == 1400, r.stdout
        moved = {k: v - before[k] for k, v in counters().items()}
        assert moved["fast_path_frag_needed"] >= 1, moved

        csum_after = lab.nstat_csum_errors(CSUM_ERRORS)
        assert csum_after == csum_before, (csum_before, csum_after)
