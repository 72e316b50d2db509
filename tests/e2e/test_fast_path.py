# SPDX-License-Identifier: Apache-2.0
"""The XDP fast path with real traffic (settings.fast_path = "auto", bpf/lb_fastpath.h; issue 16).

The lab's backends sit behind the bridge ``lfpbr0`` of the LB namespace; DNATed packets from the
client are redirected to it from XDP (generic mode, as the lab runs). Checked: requests are served,
most packets go the fast way, the first packets to a backend whose neighbour entry is not there yet
take the kernel's path and are delivered, a datagram larger than the backend side's MTU falls back
and the kernel's "fragmentation needed" reaches the client (about the VIP), no checksum errors.
"""

from __future__ import annotations

from pathlib import Path

from lbtui.engine import PIN_ROOT
from tests.support.labtools import global_counter, running_lb, served

P = "lfp"
PIN_DIR = f"{PIN_ROOT}/{P}"

# a connected UDP socket with DF sends a datagram larger than the path, then reads the path MTU it
# learnt from the ICMP error that came back (the kernel keeps it per destination: the VIP)
PMTU_PROBE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
s.connect((sys.argv[1], 5353))
for _ in range(20):
    try:
        s.send(b"x" * 1450)
    except OSError:
        pass  # EMSGSIZE once the smaller path MTU is known
    time.sleep(0.1)
print(s.getsockopt(socket.IPPROTO_IP, 14))  # IP_MTU
"""


def counters() -> dict[str, int]:
    names = (
        "fast_path_forwarded",
        "fast_path_reply_forwarded",
        "fast_path_no_neigh",
        "fast_path_frag_needed",
        "fast_path_unmanaged",
    )
    return {n: global_counter(n, PIN_DIR) for n in names}


def test_fast_path_serves_falls_back_and_keeps_checksums(tmp_path: Path) -> None:
    with running_lb(P, tmp_path, settings='fast_path = "auto"\n') as (lab, _):
        # the reply fast path updates checksums as complete ones (a NIC's): backends send complete
        # checksums, and the client checks them itself (veth would trust them otherwise)
        for i in lab.backend_ids:
            lab.run(lab.ns_backend(i), "ethtool", "-K", f"{P}b{i}", "tx", "off")
        lab.run(lab.ns_client, "ethtool", "-K", f"{P}c0", "rx", "off")
        csum_before = lab.nstat_csum_errors()
        # nothing has talked to the backends from the LB yet: no neighbour entries
        lab.run(lab.ns_lb, "ip", "neigh", "flush", "dev", f"{P}br0")
        before = counters()
        got = lab.http_requests(30)
        assert got["errors"] == 0 and len(served(got)) == 3, got
        udp = lab.udp_requests(30)
        assert udp["errors"] == 0, udp
        moved = {k: v - before[k] for k, v in counters().items()}
        assert moved["fast_path_no_neigh"] >= 1, moved  # the first packets went the kernel's way
        assert moved["fast_path_forwarded"] > 30 * 3, moved  # SYN, ACK, request, FINs... fast
        assert moved["fast_path_reply_forwarded"] > 30 * 3, moved  # SYN-ACK, response, FIN... fast
        assert moved["fast_path_unmanaged"] == 0, moved

        # the backend side narrower than the client side: a big datagram with DF falls back and the
        # kernel's ICMP (translated to be about the VIP by the TC program) tells the client
        lab.run(lab.ns_lb, "ip", "link", "set", f"{P}br0", "mtu", "1400")
        before = counters()
        r = lab.run(lab.ns_client, *lab.python_cmd("-c", PMTU_PROBE, lab.vip), timeout=30)
        assert int(r.stdout.strip()) == 1400, r.stdout
        moved = {k: v - before[k] for k, v in counters().items()}
        assert moved["fast_path_frag_needed"] >= 1, moved

        csum_after = lab.nstat_csum_errors()
        assert csum_after == csum_before, (csum_before, csum_after)


def test_fast_path_off_leaves_forwarding_to_the_kernel(tmp_path: Path) -> None:
    with running_lb(P, tmp_path, settings='fast_path = "off"\n') as (lab, _):
        got = lab.http_requests(10)
        assert got["errors"] == 0 and len(served(got)) == 3, got
        assert counters() == dict.fromkeys(counters(), 0)
        assert "lbtui_xdp_reply" not in lab.run(lab.ns_lb, "ip", "-d", "link", "show", f"{P}br0").stdout
