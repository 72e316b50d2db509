# SPDX-License-Identifier: Apache-2.0
"""The packet fuzzer's IPv6 parts without BPF: frames6's frames against scapy, the IPv6 parser
against lb_ipv6.h's rules, the oracle accepting exactly the correct IPv6 rewrites, and IPv6 keys in
case files (tests/fuzz/packets/)."""

from __future__ import annotations

import json
from pathlib import Path

from scapy.layers.inet6 import IPv6

from tests.fuzz.packets.cases import Case, EvictEvent, load_case, save_case
from tests.fuzz.packets.frames import FrameGenerator
from tests.fuzz.packets.frames6 import TC6_FAMILIES, XDP6_FAMILIES
from tests.fuzz.packets.oracle import DNAT, Oracle
from tests.fuzz.packets.parse import FRAGMENT, MALFORMED, NOT_OURS, V6_NO_L4, View, parse_tc, parse_xdp
from tests.fuzz.packets.pick import addr_hash
from tests.fuzz.packets.rewrite import XDP_PASS, checksums_verify
from tests.fuzz.packets.topology import BACKENDS, VIP6_B
from tests.fuzz.packets.wire import DSTOPTS, FRAGMENT6, HOPOPTS, ROUTING, TCP, UDP, addr, fix_checksums6
from tests.fuzz.samples import CLIENT6, syn6_frame, udp6_frame

CHAIN = [(HOPOPTS, bytes(6)), (ROUTING, bytes(14)), (DSTOPTS, bytes(6))]


def test_ipv6_frames_agree_with_scapy() -> None:
    """Headers, extension chains and checksums as scapy reads them (its own checksum code)."""
    for built in (syn6_frame(), udp6_frame(udp_zero=False), syn6_frame(ext=CHAIN), udp6_frame(ext=CHAIN)):
        pkt = IPv6(bytes(built.data[14:]))
        l4 = pkt.getlayer("TCP") or pkt.getlayer("UDP")
        assert l4 is not None
        want = l4.chksum
        del l4.chksum
        assert IPv6(bytes(pkt)).getlayer(type(l4)).chksum == want
        assert pkt.src == "fd00:fe::5:6" and pkt.dst == "fd00:fa::1"
        view = parse_xdp(bytes(built.data))
        assert isinstance(view, View) and view.v6 and view.l4 == built.l4
        assert checksums_verify(bytes(built.data), view) == (True, True)


def test_ipv6_parser_mirrors_lb_ipv6_h() -> None:
    good = bytes(syn6_frame(ext=CHAIN).data)
    assert isinstance(parse_xdp(good), View)
    assert parse_xdp(good[:-1]) == MALFORMED  # payload length beyond the frame
    assert parse_xdp(good[: 14 + 40 + 1]) == MALFORMED
    assert isinstance(parse_xdp(good + bytes(6)), View)  # padding
    four = [(HOPOPTS, bytes(6))] * 4
    assert isinstance(parse_xdp(bytes(syn6_frame(ext=four).data)), View)
    assert parse_xdp(bytes(syn6_frame(ext=four + [(DSTOPTS, bytes(6))]).data)) == V6_NO_L4
    fragment = (FRAGMENT6, bytes(6))
    assert parse_xdp(bytes(syn6_frame(ext=[*four, fragment]).data)) == FRAGMENT
    assert parse_xdp(bytes(syn6_frame(ext=[fragment]).data)) == FRAGMENT
    assert parse_xdp(bytes(udp6_frame(udp_zero=True).data)) == MALFORMED  # mandatory UDP checksum
    echo = FrameGenerator(0, scapy_pool=0).six.icmp(CLIENT6, VIP6_B, bytes((128, 0, 0, 0, 0, 0, 0, 0)))
    assert parse_xdp(bytes(echo.data)) == NOT_OURS
    # TC reads no length field: a reply cut after its L4 header still parses
    cut = bytes(udp6_frame(ext=CHAIN, udp_zero=False).data)
    assert isinstance(parse_tc(cut[: 14 + 40 + 48 + 8]), View)


def test_oracle_accepts_exactly_the_correct_ipv6_dnat() -> None:
    built = udp6_frame(udp_zero=False)
    data = bytes(built.data)
    oracle = Oracle()
    out = bytearray(data)
    backend = addr(BACKENDS[4][0])  # the IPv6 VIP:53 table: backends 4, 5, 6
    out[14 + 24 : 14 + 40] = backend
    out[built.l4 + 2 : built.l4 + 4] = (8080).to_bytes(2, "big")
    fix_checksums6(out, 14)
    assert oracle.check_xdp(data, XDP_PASS, bytes(out)).problems == ()
    assert oracle.check_xdp(data, XDP_PASS, bytes(out)).outcome == DNAT  # the tracked flow's next one
    wrong = bytearray(out)
    wrong[built.l4 + 6] ^= 1
    assert any("residual" in p for p in Oracle().check_xdp(data, XDP_PASS, bytes(wrong)).problems)
    stray = bytearray(out)
    stray[14 + 1] ^= 1  # the traffic class
    assert any("outside" in p for p in Oracle().check_xdp(data, XDP_PASS, bytes(stray)).problems)


def test_the_ipv6_address_hash_folds_four_words() -> None:
    raw = bytes(range(16))
    words = [int.from_bytes(raw[i : i + 4], "little") for i in (0, 4, 8, 12)]
    assert addr_hash(raw) == words[0] ^ words[1] ^ words[2] ^ words[3]
    assert addr_hash(addr("10.0.0.1")) == int.from_bytes(addr("10.0.0.1"), "little")


def test_ipv6_generator_covers_every_family_and_only_ipv6() -> None:
    gen = FrameGenerator(3, scapy_pool=0, families="ipv6")
    frames = [gen.next([]) for _ in range(3000)]
    assert {f.family for f in frames} == set(XDP6_FAMILIES) | set(TC6_FAMILIES)


def test_case_files_keep_ipv6_keys(tmp_path: Path) -> None:
    key = (addr("fd00:fb::11"), CLIENT6, 8080, 40000, UDP)
    case = Case((EvictEvent(key), EvictEvent((CLIENT6, VIP6_B, 40000, 80, TCP))), {"seed": 1}, "x", "x")
    path = save_case(case, tmp_path / "c.json")
    assert load_case(path) == case
    assert json.loads(path.read_text())["events"][0] == {
        "evict": "[fd00:fb::11]:8080 > [fd00:fe::5:6]:40000/udp"
    }
