# SPDX-License-Identifier: Apache-2.0
"""The IPv6 programs are loaded with the first IPv6 service, not before (docs/datapath.md#ipv6):
an IPv4-only instance passes IPv6 frames to the kernel as not its own, and the service that needs
them loads them before it exists."""

from __future__ import annotations

from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from lbtui.dataplane.port import ServiceEntry
from lbtui.dataplane.progrun import XDP_PASS, run_program
from tests.support.bpfrun import BACKENDS, MAC_CLIENT, MAC_LB, TABLE, Programs
from tests.support.maps import write_table

VIP6 = "fd00:17::1"
CLIENT6 = "fd00:17::2"
BACKEND6 = "fd00:17:b::11"


def syn6() -> bytes:
    ip = IPv6(src=CLIENT6, dst=VIP6)
    return bytes(Ether(src=MAC_CLIENT, dst=MAC_LB) / ip / TCP(sport=40000, dport=80, flags="S"))


def test_ipv6_programs_load_with_the_first_ipv6_service():
    p = Programs()
    try:
        assert not p.loaded.ipv6_loaded  # IPv4 services only
        before = p.global_counters()["xdp_not_ours"]
        r = run_program(p.loaded.xdp_fn.fd, syn6())
        assert r.retval == XDP_PASS and r.data == syn6()  # untouched, for the kernel
        assert p.global_counters()["xdp_not_ours"] == before + 1

        bid = max(BACKENDS) + 1
        p.maps.set_backend(bid, BACKEND6, 8080, active=True)
        p.maps.set_service(ServiceEntry(VIP6, 80, "tcp", 7, 7, "weighted-random"))
        assert p.loaded.ipv6_loaded
        write_table(p.maps, 7, [bid] * TABLE)
        r = run_program(p.loaded.xdp_fn.fd, syn6())
        out = Ether(r.data)
        assert r.retval == XDP_PASS and (out[IPv6].dst, out[TCP].dport) == (BACKEND6, 8080)
    finally:
        p.loaded.close()
