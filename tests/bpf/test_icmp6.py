# SPDX-License-Identifier: Apache-2.0
"""ICMPv6 errors about NATed IPv6 flows and fragmented IPv6 replies on real packets
(BPF_PROG_TEST_RUN), translated like the IPv4 ones (tests/bpf/test_icmp.py): Packet Too Big,
destination unreachable and time exceeded, toward the backend at XDP and toward the client at TC.
The ICMPv6 checksum (it covers the outer addresses through the pseudo header) is verified by scapy,
the quote compared byte for byte with the packet as its sender built it; errors about flows we do not
track, neighbour discovery and echo pass untouched (docs/datapath.md#icmpv6-errors).

Frames enter through lbtui_xdp / lbtui_tc and reach the IPv6 programs by their tail calls.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrFragment,
    defragment6,
    fragment6,
    in6_chksum,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from lbtui.control.selection import weighted_table
from lbtui.dataplane.loader import DataplaneSpec, Loaded
from lbtui.dataplane.maps import Maps
from lbtui.dataplane.port import ServiceEntry
from lbtui.dataplane.progrun import TC_ACT_OK, XDP_PASS, run_program
from tests.support.bpfrun import assert_checksums_valid
from tests.support.maps import write_table

VIP = "fd00:7a::1"
CLIENT = "fd00:7c::2"
BACKENDS = {0: ("fd00:7b::11", 8080), 1: ("fd00:7b::12", 8080), 2: ("fd00:7b::13", 8081)}
ROUTER = "fd00:79::1"  # a router on the client side
LB_HOST = "fd00:7b::1"  # the load balancer's own address toward the backends
MIN_MTU = 1280
QUOTE = MIN_MTU - 40 - 8  # an ICMPv6 error quotes as much as fits in the minimum MTU
CLIENT_ISN, BACKEND_ISN = 1000, 5000
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
TABLE = 13
ERRORS = {
    "packet-too-big": lambda: ICMPv6PacketTooBig(mtu=MIN_MTU),
    "no-route": lambda: ICMPv6DestUnreach(code=0),
    "address-unreachable": lambda: ICMPv6DestUnreach(code=3),
    "port-unreachable": lambda: ICMPv6DestUnreach(code=4),
    "hop-limit-exceeded": lambda: ICMPv6TimeExceeded(code=0),
    "reassembly-time-exceeded": lambda: ICMPv6TimeExceeded(code=1),
}


class Dataplane:
    """lb.c loaded (not attached) with VIP:80/tcp and VIP:53/udp over the three backends."""

    def __init__(self) -> None:
        self.loaded = Loaded(DataplaneSpec(table_size=TABLE, conntrack_entries=4096, max_groups=4))
        self.maps = Maps(self.loaded)
        for bid, (ip, port) in BACKENDS.items():
            self.maps.set_backend(bid, ip, port, active=True)
        for sid, (port, proto) in enumerate(((80, "tcp"), (53, "udp"))):
            self.maps.set_service(ServiceEntry(VIP, port, proto, sid, sid, "weighted-random"))
            write_table(self.maps, sid, weighted_table({0: 1, 1: 1, 2: 1}, TABLE))

    def xdp(self, pkt: Packet | bytes) -> tuple[int, bytes]:
        r = run_program(self.loaded.xdp_fn.fd, bytes(pkt))
        return r.retval, r.data

    def tc(self, pkt: Packet | bytes) -> tuple[int, bytes]:
        r = run_program(self.loaded.tc_fn.fd, bytes(pkt))
        return r.retval, r.data

    def counters(self) -> dict[str, int]:
        return self.maps.global_counters()


@pytest.fixture(scope="module")
def module_dp() -> Iterator[Dataplane]:
    dp = Dataplane()
    yield dp
    dp.loaded.close()


@pytest.fixture
def dp(module_dp: Dataplane) -> Dataplane:
    for name in ("lb_ct6_established", "lb_ct6_transient", "lb_frags6"):
        module_dp.loaded.table(name).clear()
    return module_dp


def backend_of(frame: bytes) -> tuple[str, int]:
    p = Ether(frame)
    l4 = p[TCP] if TCP in p else p[UDP]
    return p[IPv6].dst, l4.dport


def tcp_flow(dp: Dataplane, sport: int = 40000) -> tuple[str, int]:
    """A TCP handshake through the data path (SYN at XDP, SYN-ACK at TC): the flow's backend."""
    syn = Ether(**MACS) / IPv6(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags="S", seq=CLIENT_ISN)
    backend = backend_of(dp.xdp(syn)[1])
    synack = TCP(sport=backend[1], dport=sport, flags="SA", seq=BACKEND_ISN, ack=CLIENT_ISN + 1)
    assert dp.tc(Ether(**MACS) / IPv6(src=backend[0], dst=CLIENT) / synack)[0] == TC_ACT_OK
    ack = TCP(sport=sport, dport=80, flags="A", seq=CLIENT_ISN + 1, ack=BACKEND_ISN + 1)
    assert backend_of(dp.xdp(Ether(**MACS) / IPv6(src=CLIENT, dst=VIP) / ack)[1]) == backend
    return backend


def udp_query(dp: Dataplane, sport: int, payload: bytes = b"q") -> tuple[tuple[str, int], bytes]:
    """A client's datagram to VIP:53 through XDP: its backend, and the frame as DNATed."""
    query = Ether(**MACS) / IPv6(src=CLIENT, dst=VIP) / UDP(sport=sport, dport=53) / Raw(payload)
    out = dp.xdp(query)[1]
    return backend_of(out), out


def icmp6_error(src: str, dst: str, error: Packet, quoted: bytes) -> Ether:
    return Ether(**MACS) / IPv6(src=src, dst=dst) / error / Raw(quoted)


def assert_icmp6_checksum(frame: bytes) -> IPv6:
    """The ICMPv6 checksum, pseudo header included, verifies (scapy sums it); returns the IPv6 layer."""
    ip6 = Ether(frame)[IPv6]
    message = bytes(ip6.payload)
    assert ip6.nh == 58
    assert in6_chksum(58, ip6.payload, message) == 0, "ICMPv6 checksum"
    return ip6


def quote_of(frame: bytes) -> bytes:
    return bytes(Ether(frame)[IPv6].payload)[8:]


# ---- XDP: errors toward the backend ------------------------------------------------------------


def test_packet_too_big_from_the_client_side_reaches_the_backend(dp: Dataplane) -> None:
    """A router on a narrow client-side link answers a full-size reply (VIP:80 -> client) with
    Packet Too Big to the VIP: the backend must get it, about its own packet, or path-MTU discovery
    never converges and large responses stall."""
    backend = tcp_flow(dp)
    seg = TCP(sport=80, dport=40000, flags="PA", seq=BACKEND_ISN + 1, ack=CLIENT_ISN + 1) / Raw(b"r" * 1400)
    reply = IPv6(src=VIP, dst=CLIENT) / seg
    before = dp.counters()["xdp_icmp_translated"]
    verdict, out = dp.xdp(icmp6_error(ROUTER, VIP, ICMPv6PacketTooBig(mtu=MIN_MTU), bytes(reply)[:QUOTE]))
    assert verdict == XDP_PASS
    outer = assert_icmp6_checksum(out)
    assert (outer.src, outer.dst) == (ROUTER, backend[0])
    assert outer[ICMPv6PacketTooBig].mtu == MIN_MTU
    # the quote is the backend's own packet, as it sent it: source address and port, TCP checksum
    seg = TCP(sport=backend[1], dport=40000, flags="PA", seq=BACKEND_ISN + 1, ack=CLIENT_ISN + 1)
    original = IPv6(src=backend[0], dst=CLIENT) / seg / Raw(b"r" * 1400)
    assert quote_of(out) == bytes(original)[:QUOTE]
    assert dp.counters()["xdp_icmp_translated"] == before + 1


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_errors_about_udp_replies_from_the_client_side(dp: Dataplane, kind: str) -> None:
    backend, _ = udp_query(dp, 5000)
    reply = IPv6(src=VIP, dst=CLIENT) / UDP(sport=53, dport=5000) / Raw(b"answer" * 10)
    verdict, out = dp.xdp(icmp6_error(CLIENT, VIP, ERRORS[kind](), bytes(reply)))
    assert verdict == XDP_PASS
    outer = assert_icmp6_checksum(out)
    assert (outer.src, outer.dst) == (CLIENT, backend[0])
    original = IPv6(src=backend[0], dst=CLIENT) / UDP(sport=backend[1], dport=5000) / Raw(b"answer" * 10)
    assert quote_of(out) == bytes(original)
    assert_checksums_valid(bytes(Ether(**MACS) / original))


def test_packet_too_big_about_the_first_fragment_of_a_udp_reply(dp: Dataplane) -> None:
    """A backend's large UDP reply leaves it in fragments; a narrow link answers the first (it holds
    the ports) with Packet Too Big, which must reach the backend like any other."""
    backend, _ = udp_query(dp, 5001)
    reply = IPv6(src=VIP, dst=CLIENT) / IPv6ExtHdrFragment(id=77) / UDP(sport=53, dport=5001)
    reply = reply / Raw(bytes(range(256)) * 12)
    first = fragment6(reply, 1500)[0]
    verdict, out = dp.xdp(icmp6_error(ROUTER, VIP, ICMPv6PacketTooBig(mtu=MIN_MTU), bytes(first)[:QUOTE]))
    assert verdict == XDP_PASS
    outer = assert_icmp6_checksum(out)
    assert outer.dst == backend[0]
    quoted = IPv6(quote_of(out))
    assert quoted.src == backend[0] and quoted[UDP].sport == backend[1]
    assert quoted[IPv6ExtHdrFragment].id == 77


def test_errors_about_flows_we_do_not_track_pass_untouched_and_are_counted(dp: Dataplane) -> None:
    backend, _ = udp_query(dp, 5002)
    frames = [
        # a reply of no flow (another client port)
        IPv6(src=VIP, dst=CLIENT) / UDP(sport=53, dport=5999) / Raw(b"x" * 20),
        IPv6(src=VIP, dst=CLIENT) / TCP(sport=80, dport=1) / Raw(b"s" * 50),
        # a quote whose source is not where the error went (a packet of the client's, not a reply)
        IPv6(src=CLIENT, dst=VIP) / UDP(sport=5002, dport=53) / Raw(b"q"),
        # a later fragment: no ports to find the flow by
        IPv6(src=VIP, dst=CLIENT) / IPv6ExtHdrFragment(id=78, offset=181, nh=17) / Raw(b"f" * 64),
    ]
    for quoted in frames:
        frame = icmp6_error(ROUTER, VIP, ICMPv6PacketTooBig(mtu=MIN_MTU), bytes(quoted))
        before = dp.counters()
        verdict, out = dp.xdp(frame)
        assert (verdict, out) == (XDP_PASS, bytes(frame))
        after = dp.counters()
        assert after["xdp_not_ours"] == before["xdp_not_ours"] + 1
        assert after["xdp_icmp_translated"] == before["xdp_icmp_translated"]
    assert backend in BACKENDS.values()


@pytest.mark.parametrize(
    "message",
    [
        ICMPv6ND_RS(),
        ICMPv6ND_RA(),
        ICMPv6ND_NS(tgt=VIP),
        ICMPv6ND_NA(tgt=VIP),
        ICMPv6ND_Redirect(tgt=CLIENT, dst=VIP),
        ICMPv6EchoRequest(id=1, seq=1, data=b"ping"),
        ICMPv6EchoReply(id=1, seq=1, data=b"ping"),
    ],
    ids=lambda m: m.__class__.__name__,
)
def test_neighbour_discovery_and_echo_pass_untouched(dp: Dataplane, message: Packet) -> None:
    udp_query(dp, 5003)
    frame = Ether(**MACS) / IPv6(src=CLIENT, dst=VIP, hlim=255) / message
    assert dp.xdp(frame) == (XDP_PASS, bytes(frame))
    assert dp.tc(frame) == (TC_ACT_OK, bytes(frame))


@pytest.mark.parametrize("cut", [62, 70, 100, 110, 117])
def test_truncated_errors_pass_untouched(dp: Dataplane, cut: int) -> None:
    udp_query(dp, 5004)
    reply = IPv6(src=VIP, dst=CLIENT) / UDP(sport=53, dport=5004) / Raw(b"a" * 40)
    frame = bytes(icmp6_error(ROUTER, VIP, ICMPv6PacketTooBig(mtu=MIN_MTU), bytes(reply)))[:cut]
    assert dp.xdp(frame) == (XDP_PASS, frame)


# ---- TC: errors toward the client ----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_errors_from_the_backend_side_carry_the_vip(dp: Dataplane, kind: str) -> None:
    """An error from the backend (or the load balancer's own host) about a client's datagram leaves
    with the VIP as its source and inside the quote: the client never sees the backend's address."""
    backend, dnat = udp_query(dp, 5005, b"q" * 30)
    quoted = bytes(Ether(dnat)[IPv6])
    before = dp.counters()["tc_icmp_translated"]
    for sender in (backend[0], LB_HOST):
        verdict, out = dp.tc(icmp6_error(sender, CLIENT, ERRORS[kind](), quoted))
        assert verdict == TC_ACT_OK
        outer = assert_icmp6_checksum(out)
        assert (outer.src, outer.dst) == (VIP, CLIENT)
        sent = IPv6(src=CLIENT, dst=VIP) / UDP(sport=5005, dport=53) / Raw(b"q" * 30)
        assert quote_of(out) == bytes(sent), "the quoted datagram is the one the client sent"
    assert dp.counters()["tc_icmp_translated"] == before + 2


def test_packet_too_big_from_the_backend_side_about_tcp(dp: Dataplane) -> None:
    backend = tcp_flow(dp, sport=40100)
    seg = TCP(sport=40100, dport=80, flags="PA", seq=CLIENT_ISN + 1, ack=BACKEND_ISN + 1) / Raw(b"d" * 1400)
    data = Ether(**MACS) / IPv6(src=CLIENT, dst=VIP) / seg
    dnat = dp.xdp(data)[1]
    assert backend_of(dnat) == backend
    quoted = bytes(Ether(dnat)[IPv6])[:QUOTE]
    verdict, out = dp.tc(icmp6_error(LB_HOST, CLIENT, ICMPv6PacketTooBig(mtu=1400), quoted))
    assert verdict == TC_ACT_OK
    outer = assert_icmp6_checksum(out)
    assert outer.src == VIP and outer[ICMPv6PacketTooBig].mtu == 1400
    assert quote_of(out) == bytes(data[IPv6])[:QUOTE]


def test_errors_toward_the_client_about_other_packets_pass_untouched(dp: Dataplane) -> None:
    backend, _ = udp_query(dp, 5006)
    for quoted in (
        IPv6(src=CLIENT, dst=backend[0]) / UDP(sport=5999, dport=backend[1]) / Raw(b"q"),  # no flow
        IPv6(src=CLIENT, dst="fd00:7d::1") / UDP(sport=5006, dport=53) / Raw(b"q"),  # not a backend
    ):
        frame = icmp6_error(LB_HOST, CLIENT, ICMPv6DestUnreach(code=4), bytes(quoted))
        assert dp.tc(frame) == (TC_ACT_OK, bytes(frame))


# ---- TC: fragmented replies ----------------------------------------------------------------------


def test_udp_reply_fragments_leave_with_the_vip(dp: Dataplane) -> None:
    """Only the source fragments in IPv6: a backend's 3,072-byte reply leaves it in three fragments.
    The first (it has the UDP header) is SNATed like a whole reply, the later ones by lb_frags6; the
    reassembled datagram comes from VIP:53 with a valid UDP checksum."""
    backend, _ = udp_query(dp, 5007, b"big?")
    payload = bytes(range(256)) * 12
    reply = IPv6(src=backend[0], dst=CLIENT) / IPv6ExtHdrFragment(id=0x4242)
    frags = fragment6(reply / UDP(sport=backend[1], dport=5007) / Raw(payload), 1500)
    assert len(frags) == 3
    before = dp.counters()
    out = []
    for frag in frags:
        verdict, data = dp.tc(Ether(**MACS) / frag)
        assert verdict == TC_ACT_OK
        out.append(Ether(data)[IPv6])
    assert {p.src for p in out} == {VIP}
    after = dp.counters()
    assert after["tc_snat"] == before["tc_snat"] + 1
    assert after["tc_fragments_snat"] == before["tc_fragments_snat"] + 2
    whole = IPv6(bytes(defragment6(out)))
    assert whole[UDP].sport == 53 and bytes(whole[UDP].payload) == payload
    check = whole[UDP].chksum
    del whole[UDP].chksum
    assert IPv6(bytes(whole))[UDP].chksum == check, "UDP checksum of the reassembled reply"


def test_fragments_of_other_traffic_pass_untouched(dp: Dataplane) -> None:
    backend, _ = udp_query(dp, 5008)
    stranger = IPv6(src=backend[0], dst=CLIENT) / IPv6ExtHdrFragment(id=9) / UDP(sport=backend[1], dport=5999)
    for frag in fragment6(stranger / Raw(b"z" * 3000), 1500):
        frame = Ether(**MACS) / frag
        assert dp.tc(frame) == (TC_ACT_OK, bytes(frame))
