# SPDX-License-Identifier: Apache-2.0
"""The fast path over IPv6 with real traffic (settings.fast_path = "auto", bpf/lb_fastpath6.h;
issue 16).

The lab runs over IPv6 (Lab.config_toml(family=6): VIP6, backends fd00:20::1x behind the bridge
``lq6br0`` of the LB namespace). DNATed packets from the client are redirected to the bridge from
XDP (generic mode, as the lab runs), which needs the bridge in lb_fp_ifaces (found from the route to
the IPv6 backends); the backends' replies are SNATed at TC ingress of the bridge (lbtui_tc_reply6)
and redirected to the client's interface. Backends keep their veths' offloads on, so their replies
are CHECKSUM_PARTIAL skbs, large downloads GSO skbs. Checked: HTTP and UDP are served, most packets
go the fast way both ways, the first packets to a backend whose neighbour entry is gone take the
kernel's path and are delivered, a datagram larger than the backend side's MTU falls back and the
kernel's Packet Too Big reaches the client (about the VIP), bulk transfers arrive intact with every
reply fast, and no namespace counts a checksum error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lbtui.addresses import IPV6
from lbtui.dataplane.structs import GLOBAL_COUNTERS
from lbtui.engine import PIN_ROOT
from lbtui.lab import VIP6
from tests.support.labtools import forget_backend_neighbours, global_counter, running_lb, served, wait_until

pytestmark = [pytest.mark.root, pytest.mark.beside]  # beside: tests/conftest.py

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


# the fallback reasons: every fast_path_* counter but the two that count packets gone fast
FALLBACKS = tuple(n for n in GLOBAL_COUNTERS if n.startswith("fast_path_") and not n.endswith("_forwarded"))
CONNS = 4
SIZE = 4 << 20
BULK_PORT = 9090  # the backends' bulk servers (tests.support.bulk), behind [VIP6]:8081
BULK_PROXY = f"""
[[proxy]]
name = "bulk"
interfaces = ["{P}l0"]
vip = "{VIP6}"
port = 8081
protocol = "tcp"
""" + "".join(f'\n[[proxy.backend]]\naddress = "[fd00:20::{11 + i}]:{BULK_PORT}"\n' for i in range(3))


def counters() -> dict[str, int]:
    names = ("fast_path_forwarded", "fast_path_reply_forwarded", "tc_snat", "tc_miss", *FALLBACKS)
    return {n: global_counter(n, PIN_DIR) for n in names}


def moved_since(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before[k] for k, v in counters().items()}


def test_ipv6_fast_path_serves_falls_back_and_keeps_checksums(tmp_path: Path) -> None:
    with running_lb(P, tmp_path, settings='fast_path = "auto"\n', family=IPV6) as (lab, _):
        # the client checks the checksums of what it gets itself (veth would trust them otherwise)
        lab.run(lab.ns_client, "ethtool", "-K", f"{P}c0", "rx", "off")
        csum_before = lab.nstat_csum_errors(CSUM_ERRORS)
        # no neighbour entries between the LB and the backends yet (the lab's pings made some)
        forget_backend_neighbours(lab)
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
        assert moved["fast_path_reply_forwarded"] > 30 * 3, moved  # SYN-ACK, response, FIN... fast

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


def test_offloaded_ipv6_replies_take_the_fast_path_intact(tmp_path: Path) -> None:
    """Backends with tx checksum offload and TSO on (CHECKSUM_PARTIAL and GSO replies): bulk downloads
    over several connections go fast both ways, every byte arrives, no checksum error anywhere. The
    LB's end of the client link has tx offload off, so the LB finishes every checksum in software and
    the client verifies it: a wrong pseudo-header update of the IPv6 SNAT would show here."""
    with running_lb(P, tmp_path, family=IPV6, tables=BULK_PROXY) as (lab, _):
        for i in lab.backend_ids:
            k = lab.run(lab.ns_backend(i), "ethtool", "-k", f"{P}b{i}").stdout
            assert "tx-checksumming: on" in k and "tcp-segmentation-offload: on" in k, k
            args = ("-m", "tests.support.bulk", "serve", "--name", f"b{i}", "--port", str(BULK_PORT))
            lab.popen(lab.ns_backend(i), *lab.python_cmd(*args, "--bind", "::"))
        lab.run(lab.ns_lb, "ethtool", "-K", f"{P}l0", "tx", "off")
        # ethtool flaps the link: the client reaches the LB again before any transfer
        ping = ["ping", "-6", "-c1", "-W1", VIP6]
        assert wait_until(lambda: lab.run(lab.ns_client, *ping, check=False).returncode == 0)
        for i in lab.backend_ids:
            ns = lab.ns_backend(i)
            assert wait_until(lambda ns=ns: f":{BULK_PORT}" in lab.run(ns, "ss", "-ltn").stdout)
        got = lab.http_requests(9, url=URL)  # every neighbour entry is there afterwards
        assert got["errors"] == 0, got

        before = counters()
        segs_before = lab.nstat_csum_errors(keys=("TcpInSegs",))[lab.ns_client]["TcpInSegs"]
        url = f"http://[{VIP6}]:8081/"
        args = ["client", "--url", url, "--conns", str(CONNS), "--bytes", str(SIZE)]
        r = lab.run(
            lab.ns_client, *lab.python_cmd("-m", "tests.support.bulk", *args), check=False, timeout=60
        )
        result = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
        moved = moved_since(before)
        segs = lab.nstat_csum_errors(keys=("TcpInSegs",))[lab.ns_client]["TcpInSegs"] - segs_before

        assert result.get("intact") == CONNS, (result, r.stderr)
        assert result["uploaded"] == result["downloaded"] == CONNS * SIZE
        assert all(moved[k] == 0 for k in FALLBACKS), moved
        # every reply was SNATed by the fast path, once: none by lbtui_tc6, none seen twice there
        assert moved["fast_path_reply_forwarded"] > 0, moved
        assert moved["tc_snat"] == moved["fast_path_reply_forwarded"], moved
        assert moved["tc_miss"] == 0, moved
        # fewer skbs went through the fast path than the client received segments: GSO skbs did
        assert segs > moved["fast_path_reply_forwarded"], (segs, moved)
        csum = lab.nstat_csum_errors(CSUM_ERRORS)
        assert all(v == 0 for counts in csum.values() for v in counts.values()), csum
