# SPDX-License-Identifier: Apache-2.0
"""ICMP errors about NATed flows and fragmented UDP replies on real packets (BPF_PROG_TEST_RUN): both
translated like IPVS and Katran do, every checksum recomputed from scratch and compared
(docs/datapath.md#icmp-errors)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, defragment, fragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lbtui.dataplane.progrun import TC_ACT_OK, XDP_PASS
from tests.support.bpfrun import (
    BACKEND_ISN,
    CLIENT,
    CLIENT_ISN,
    VIP,
    Programs,
    backend_of,
    handshake,
    source_of,
)

ROUTER = "10.0.9.1"  # a router on the client side
LB_HOST = "10.0.2.1"  # the load balancer's own address toward the backends
QUOTE = 548  # bytes of the offending packet a Linux router quotes (576 - 20 - 8)


@pytest.fixture(scope="module")
def module_progs() -> Iterator[Programs]:
    progs = Programs(conntrack_entries=4096)
    yield progs
    progs.close()


@pytest.fixture
def progs(module_progs: Programs) -> Programs:
    module_progs.clear()
    return module_progs


def icmp_error(
    src: str, dst: str, quoted: bytes, icmp_type: int = 3, code: int = 4, mtu: int = 1280
) -> Ether:
    icmp = ICMP(type=icmp_type, code=code, nexthopmtu=mtu if (icmp_type, code) == (3, 4) else 0)
    return Ether() / IP(src=src, dst=dst, id=99) / icmp / Raw(quoted)


def checksum_ok(data: bytes) -> bool:
    from tests.fuzz.packets.wire import ones_sum

    return ones_sum(data) % 0xFFFF == 0


def assert_icmp_checksums(frame: bytes, quoted_len: int) -> tuple[IP, bytes]:
    """Outer IP header and ICMP checksums verify; returns the outer IP layer and the quoted bytes."""
    outer = Ether(frame)[IP]
    raw = bytes(Ether(frame)[IP])
    assert checksum_ok(raw[:20]), "outer IP checksum"
    assert checksum_ok(raw[20:]), "ICMP checksum"
    quoted = raw[28 : 28 + quoted_len]
    assert checksum_ok(quoted[:20]), "quoted IP header checksum"
    return outer, quoted


def test_frag_needed_from_the_client_side_reaches_the_backend(progs: Programs) -> None:
    backend = handshake(progs)
    reply = (
        IP(src=VIP, dst=CLIENT, id=5)
        / TCP(sport=80, dport=40000, flags="PA", seq=BACKEND_ISN + 1, ack=CLIENT_ISN + 1)
        / Raw(b"r" * 1400)
    )
    quoted = bytes(reply)[:QUOTE]
    verdict, out = progs.xdp(icmp_error(ROUTER, VIP, quoted))
    assert verdict == XDP_PASS
    outer, inner = assert_icmp_checksums(out, QUOTE)
    assert outer.src == ROUTER and outer.dst == backend[0]
    assert outer[ICMP].nexthopmtu == 1280
    # the quoted packet is the backend's own, as it sent it: source address and port, checksums
    original = (
        IP(src=backend[0], dst=CLIENT, id=5)
        / TCP(sport=backend[1], dport=40000, flags="PA", seq=BACKEND_ISN + 1, ack=CLIENT_ISN + 1)
        / Raw(b"r" * 1400)
    )
    assert inner == bytes(original)[:QUOTE]
    assert progs.global_counters()["xdp_icmp_translated"] == 1


@pytest.mark.parametrize(("icmp_type", "code"), [(3, 3), (3, 1), (11, 0)])
def test_errors_about_udp_replies_from_the_client_side(progs: Programs, icmp_type: int, code: int) -> None:
    query = Ether() / IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=53) / Raw(b"q")
    backend = backend_of(progs.xdp(query)[1])
    reply = IP(src=VIP, dst=CLIENT, id=6) / UDP(sport=53, dport=5000) / Raw(b"answer" * 10)
    verdict, out = progs.xdp(icmp_error(CLIENT, VIP, bytes(reply), icmp_type, code))
    assert verdict == XDP_PASS
    outer, inner = assert_icmp_checksums(out, len(bytes(reply)))
    assert outer.dst == backend[0]
    expected = IP(src=backend[0], dst=CLIENT, id=6) / UDP(sport=backend[1], dport=5000) / Raw(b"answer" * 10)
    assert inner == bytes(expected)


def test_errors_about_unknown_flows_pass_untouched(progs: Programs) -> None:
    stranger = IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=1) / Raw(b"s" * 50)
    frame = icmp_error(ROUTER, VIP, bytes(stranger))
    verdict, out = progs.xdp(frame)
    assert verdict == XDP_PASS and out == bytes(frame)


def test_errors_from_the_backend_side_carry_the_vip(progs: Programs) -> None:
    """A port unreachable from the backend about a client's datagram leaves with the VIP inside and
    as its source: the client never sees the backend's address."""
    query = Ether() / IP(src=CLIENT, dst=VIP) / UDP(sport=5001, dport=53) / Raw(b"q" * 30)
    dnat = progs.xdp(query)[1]
    backend = backend_of(dnat)
    quoted = bytes(Ether(dnat)[IP])
    for sender in (backend[0], LB_HOST):
        verdict, out = progs.tc(icmp_error(sender, CLIENT, quoted, 3, 3))
        assert verdict == TC_ACT_OK
        outer, inner = assert_icmp_checksums(out, len(quoted))
        assert outer.src == VIP and outer.dst == CLIENT
        assert inner == bytes(Ether(bytes(query))[IP]), "the quoted datagram is the one the client sent"
    assert progs.global_counters()["tc_icmp_translated"] == 2


def test_frag_needed_from_the_backend_side_about_tcp(progs: Programs) -> None:
    backend = handshake(progs, sport=40100)
    data = (
        Ether()
        / IP(src=CLIENT, dst=VIP, flags="DF")
        / TCP(sport=40100, dport=80, flags="PA", seq=CLIENT_ISN + 1, ack=BACKEND_ISN + 1)
        / Raw(b"d" * 1400)
    )
    dnat = progs.xdp(data)[1]
    assert backend_of(dnat) == backend
    quoted = bytes(Ether(dnat)[IP])[:QUOTE]
    verdict, out = progs.tc(icmp_error(LB_HOST, CLIENT, quoted, 3, 4, 1400))
    assert verdict == TC_ACT_OK
    outer, inner = assert_icmp_checksums(out, QUOTE)
    assert outer.src == VIP
    assert inner == bytes(Ether(bytes(data))[IP])[:QUOTE]


def test_udp_reply_fragments_leave_with_the_vip(progs: Programs) -> None:
    query = Ether() / IP(src=CLIENT, dst=VIP) / UDP(sport=5002, dport=53) / Raw(b"big?")
    backend = backend_of(progs.xdp(query)[1])
    payload = bytes(range(256)) * 12  # 3,072 bytes: three fragments on a 1,500-byte link
    reply = IP(src=backend[0], dst=CLIENT, id=4242) / UDP(sport=backend[1], dport=5002) / Raw(payload)
    out = []
    for frag in fragment(reply, fragsize=1480):
        verdict, data = progs.tc(Ether() / frag)
        assert verdict == TC_ACT_OK
        out.append(Ether(data)[IP])
    assert len(out) == 3
    assert {p.src for p in out} == {VIP}
    for p in out:
        assert checksum_ok(bytes(p)[:20]), "fragment IP checksum"
    whole = defragment(out)[0]
    assert whole[UDP].sport == 53 and bytes(whole[UDP].payload) == payload
    check = whole[UDP].chksum
    del whole[UDP].chksum
    assert IP(bytes(whole))[UDP].chksum == check, "UDP checksum of the reassembled reply"
    assert source_of(bytes(Ether() / whole)) == (VIP, 53)
