# SPDX-License-Identifier: Apache-2.0
"""The packet fuzzer's own parts, without BPF: its checksum code against scapy, its parser against
lb.c's rules, and the oracle accepting exactly the correct rewrites (tests/fuzz/packets.py)."""

from __future__ import annotations

from typing import Any

from tests.fuzz import packets as fz
from tests.fuzz.samples import dnat_of, syn_frame, udp_frame


def test_checksums_agree_with_scapy() -> None:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    gen = fz.FrameGenerator(11, scapy_pool=0)
    for i in range(300):
        kw: dict[str, Any] = {}
        if i % 3 == 0:
            kw["ip_options"] = gen.ip_options()
        if i % 4 == 0:
            kw["vlans"] = gen.vlans()
        built = gen.to_vip(**kw)
        frame = bytes(built.data)
        pkt = Ether(frame)
        fresh = pkt[IP].copy()
        del fresh.chksum
        l4 = fresh[TCP] if TCP in fresh else fresh[UDP]
        zero_udp = UDP in pkt and pkt[UDP].chksum == 0
        if not zero_udp:
            del l4.chksum
        rebuilt = IP(bytes(fresh))
        assert rebuilt.chksum == pkt[IP].chksum
        if not zero_udp:
            layer = TCP if TCP in pkt else UDP
            assert rebuilt[layer].chksum == pkt[layer].chksum
        view = fz.parse_xdp(frame)
        assert isinstance(view, fz.View)
        assert fz.checksums_verify(frame, view) == (True, True)


def test_parser_mirrors_lb_c() -> None:
    good = bytes(syn_frame().data)
    assert isinstance(fz.parse_xdp(good), fz.View)
    assert fz.parse_xdp(good[:13]) == fz.REFUSED
    assert fz.parse_xdp(good[:-1]) == fz.MALFORMED  # tot_len beyond the frame
    assert isinstance(fz.parse_xdp(good + b"\0" * 6), fz.View)  # Ethernet padding is fine
    assert fz.parse_xdp(bytes(syn_frame(frag=0x2000).data)) == fz.FRAGMENT
    assert fz.parse_xdp(bytes(syn_frame(frag=5).data)) == fz.FRAGMENT
    assert isinstance(fz.parse_xdp(bytes(syn_frame(frag=0x4000).data)), fz.View)  # DF only
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x44
    assert fz.parse_xdp(bytes(bad_ihl)) == fz.MALFORMED
    bad_doff = bytearray(good)
    bad_doff[14 + 20 + 12] = 0x40
    assert fz.parse_xdp(bytes(bad_doff)) == fz.MALFORMED
    udp = udp_frame(udp_zero=False)
    long_udp = bytearray(udp.data)
    long_udp[udp.l4 + 5] += 1  # UDP length one more than the IP payload
    assert fz.parse_xdp(bytes(long_udp)) == fz.MALFORMED
    short_udp = bytearray(udp.data)
    short_udp[udp.l4 + 5] -= 1  # shorter than the IP payload: legal
    assert isinstance(fz.parse_xdp(bytes(short_udp)), fz.View)
    assert fz.parse_xdp(bytes(syn_frame(vlans=[(0x8100, 5), (0x8100, 6)]).data)) == fz.NOT_OURS


def test_oracle_accepts_a_correct_dnat_and_rejects_every_kind_of_wrong_one() -> None:
    built = syn_frame()
    frame = bytes(built.data)
    good = dnat_of(built, fz.BACKENDS[0])
    assert fz.Oracle().check_xdp(frame, fz.XDP_PASS, good).problems == ()

    def problems(out: bytes, verdict: int = fz.XDP_PASS) -> tuple[str, ...]:
        return fz.Oracle().check_xdp(frame, verdict, out).problems

    assert problems(good, fz.XDP_DROP)
    assert problems(frame)  # not rewritten at all
    assert problems(dnat_of(built, ("10.0.3.10", 8080)))  # a backend of another group
    stray = bytearray(good)
    stray[14 + 8] ^= 1  # TTL
    assert any("outside" in p for p in problems(bytes(stray)))
    bad_ip = bytearray(good)
    bad_ip[14 + 10] ^= 1
    assert any("IP header checksum" in p for p in problems(bytes(bad_ip)))
    bad_l4 = bytearray(good)
    bad_l4[built.l4 + 17] ^= 1
    assert any("L4 checksum" in p for p in problems(bytes(bad_l4)))
    assert problems(good[:-1])


def test_oracle_udp_zero_checksum_rules() -> None:
    built = udp_frame(udp_zero=True)
    out = bytearray(built.data)
    out[built.l3 + 16 : built.l3 + 20] = fz.addr("10.0.2.12")
    out[built.l4 + 2 : built.l4 + 4] = (8080).to_bytes(2, "big")
    fz.fix_checksums(out, built.l3)  # leaves a zero UDP checksum alone
    assert fz.Oracle().check_xdp(bytes(built.data), fz.XDP_PASS, bytes(out)).problems == ()
    out[built.l4 + 6 : built.l4 + 8] = b"\x12\x34"
    assert fz.Oracle().check_xdp(bytes(built.data), fz.XDP_PASS, bytes(out)).problems


def test_generator_is_deterministic_and_covers_every_family() -> None:
    a, b = fz.FrameGenerator(5), fz.FrameGenerator(5)
    frames = [a.next([]) for _ in range(3000)]
    assert frames == [b.next([]) for _ in range(3000)]
    assert {f.family for f in frames} >= set(fz.XDP_FAMILIES) - {"tcp_followup", "udp_followup"}


# ---- against the programs ---------------------------------------------------------------------------
