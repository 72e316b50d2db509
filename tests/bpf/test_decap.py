# SPDX-License-Identifier: Apache-2.0
"""The backend decapsulation program (bpf/decap.c) on single packets (BPF_PROG_TEST_RUN).

IPIP (and IPv6-in-IPv4) addressed to the backend with a VIP inside comes out as the inner packet,
byte for byte, behind the same Ethernet header; every other tunnel packet comes out untouched and
is counted by reason; other traffic is untouched and not counted.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from lbtui.dataplane.bpfobj import prog_id, program_maps
from lbtui.dataplane.decap import DECAP_COUNTERS, DecapProgram
from lbtui.dataplane.progrun import TC_ACT_OK, run_program

VIP = "10.100.0.1"
VIP6 = "fd00:100::1"
BACKEND = "10.2.0.11"
LB_HOST = "10.1.1.2"
CLIENT = "10.0.0.2"
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


@pytest.fixture(scope="module")
def prog():
    p = DecapProgram(vips=[VIP, VIP6], local=[BACKEND, "10.2.1.11"])
    yield p
    p.close()


def counters(prog) -> dict[str, int]:
    stats = prog.bpf["decap_stats"]
    return {name: sum(stats[stats.Key(i)]) for i, name in enumerate(DECAP_COUNTERS)}


def run(prog, frame) -> tuple[int, bytes, dict[str, int]]:
    """Verdict, output frame and the counters that moved."""
    before = counters(prog)
    r = run_program(prog.fn.fd, bytes(frame))
    after = counters(prog)
    return r.retval, r.data, {k: after[k] - before[k] for k in after if after[k] != before[k]}


def tcp_syn(dst=VIP):
    return IP(src=CLIENT, dst=dst, ttl=63) / TCP(sport=40000, dport=80, flags="S", seq=7)


def ipip(inner, outer_dst=BACKEND, **outer_kw):
    return ETH / IP(src=LB_HOST, dst=outer_dst, proto=4, **outer_kw) / inner


@pytest.mark.parametrize(
    "inner",
    [
        tcp_syn(),
        IP(src=CLIENT, dst=VIP) / TCP(sport=40001, dport=80, flags="PA") / Raw(b"x" * 1400),
        IP(src=CLIENT, dst=VIP, options=b"\x94\x04\x00\x00") / TCP(sport=40002, dport=80, flags="A"),
        # a wrong UDP checksum stays wrong: the inner packet is not this program's to judge
        IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=53, chksum=0x1234) / Raw(b"q"),
    ],
    ids=["syn", "payload-1400", "inner-options", "udp-bad-checksum"],
)
def test_ipip_to_a_vip_is_stripped_byte_exactly(prog, inner):
    verdict, out, moved = run(prog, ipip(inner))
    assert verdict == TC_ACT_OK
    assert out == bytes(ETH / inner)
    assert moved == {"decap_ipip": 1, "decap_bytes": len(bytes(inner))}


def test_ipv6_in_ipv4_to_a_vip_becomes_an_ipv6_frame(prog):
    inner = IPv6(src="fd00::2", dst=VIP6, hlim=63) / TCP(sport=40000, dport=80, flags="S")
    verdict, out, moved = run(prog, ETH / IP(src=LB_HOST, dst=BACKEND, proto=41) / inner)
    assert verdict == TC_ACT_OK
    assert out == bytes(Ether(src=ETH.src, dst=ETH.dst, type=0x86DD) / inner)
    assert moved == {"decap_ip6ip": 1, "decap_bytes": len(bytes(inner))}


def test_any_local_address_is_accepted(prog):
    verdict, out, moved = run(prog, ipip(tcp_syn(), outer_dst="10.2.1.11"))
    assert out == bytes(ETH / tcp_syn()) and moved["decap_ipip"] == 1


def test_ethernet_padding_stays_behind_the_inner_packet(prog):
    inner = IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=53)  # 28 bytes: the frame is padded
    frame = bytes(ipip(inner)).ljust(60, b"\0")
    verdict, out, moved = run(prog, frame)
    assert out == bytes(ETH / inner) + b"\0" * (60 - 14 - 20 - 28)
    assert moved["decap_ipip"] == 1


def _claims_more(packet: bytes) -> bytes:
    """An IPv4 packet whose total-length field says 80 bytes more than it has."""
    return packet[:2] + (len(packet) + 80).to_bytes(2, "big") + packet[4:]


def _outer_fragments():
    big = ipip(IP(src=CLIENT, dst=VIP) / TCP(sport=40003, dport=80, flags="PA") / Raw(b"y" * 200))
    return [ETH / f for f in fragment(big[IP], fragsize=64)]


PASSED = {
    "inner-not-a-vip": (ipip(tcp_syn(dst="10.100.0.2")), "pass_not_vip"),
    "ip6-inner-not-a-vip": (
        ETH / IP(src=LB_HOST, dst=BACKEND, proto=41) / IPv6(src="fd00::2", dst="fd00:100::2") / TCP(),
        "pass_not_vip",
    ),
    "to-another-host": (ipip(tcp_syn(), outer_dst="10.2.0.12"), "pass_not_local"),
    "outer-first-fragment": (_outer_fragments()[0], "pass_fragment"),
    "outer-later-fragment": (_outer_fragments()[1], "pass_fragment"),
    "outer-options": (ipip(tcp_syn(), options=b"\x94\x04\x00\x00"), "pass_malformed"),
    "inner-longer-than-outer": (ipip(Raw(_claims_more(bytes(tcp_syn())))), "pass_malformed"),
    "proto-41-with-ipv4-inside": (ETH / IP(src=LB_HOST, dst=BACKEND, proto=41) / tcp_syn(), "pass_malformed"),
    "proto-4-with-ipv6-inside": (
        ETH / IP(src=LB_HOST, dst=BACKEND, proto=4) / IPv6(dst=VIP6) / TCP(),
        "pass_malformed",
    ),
}


@pytest.mark.parametrize("name", sorted(PASSED))
def test_other_tunnel_packets_pass_untouched_and_counted(prog, name):
    frame, counter = PASSED[name]
    verdict, out, moved = run(prog, frame)
    assert verdict == TC_ACT_OK
    assert out == bytes(frame)
    assert moved == {counter: 1}


@pytest.mark.parametrize("cut", [14 + 20, 14 + 20 + 1, 14 + 20 + 19, 14 + 20 + 30])
def test_truncated_tunnel_packets_pass_untouched_and_counted(prog, cut):
    frame = bytes(ipip(tcp_syn()))[:cut]
    verdict, out, moved = run(prog, frame)
    assert verdict == TC_ACT_OK and out == frame
    assert moved == {"pass_malformed": 1}


@pytest.mark.parametrize(
    "frame",
    [
        ETH / tcp_syn(),
        ETH / ARP(pdst=VIP),
        ETH / IPv6(dst=VIP6) / TCP(),
        ETH / IP(src=LB_HOST, dst=BACKEND, proto=47) / Raw(b"\0" * 24),  # GRE: not ours
    ],
    ids=["plain-tcp", "arp", "ipv6", "gre"],
)
def test_other_traffic_passes_untouched_and_uncounted(prog, frame):
    verdict, out, moved = run(prog, frame)
    assert verdict == TC_ACT_OK and out == bytes(frame) and moved == {}


def test_maps_read_by_program_id_match(prog):
    run(prog, ipip(tcp_syn()))
    maps = program_maps(prog_id(prog.fn.fd))
    try:
        assert set(maps) == {"decap_vips4", "decap_vips6", "decap_local4", "decap_stats"}
        stats = maps["decap_stats"]
        by_id = {n: stats.percpu_u64_sum(i.to_bytes(4, "little")) for i, n in enumerate(DECAP_COUNTERS)}
        assert by_id == counters(prog) and by_id["decap_ipip"] >= 1
        assert len(list(maps["decap_vips4"].keys())) == 1 and len(list(maps["decap_local4"].keys())) == 2
    finally:
        for m in maps.values():
            m.close()


def test_seeded_counters_carry_over():
    p = DecapProgram(vips=[VIP], local=[BACKEND])
    try:
        p.seed_counters({"decap_ipip": 41, "pass_not_vip": 3})
        run(p, ipip(tcp_syn()))
        c = counters(p)
        assert c["decap_ipip"] == 42 and c["pass_not_vip"] == 3
    finally:
        p.close()
