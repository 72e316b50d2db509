# SPDX-License-Identifier: Apache-2.0
"""The packet fuzzer's IPv6 parts without BPF: frames6's frames against scapy, the IPv6 parser
against lb_ipv6.h's rules, the oracle accepting exactly the correct IPv6 rewrites, and IPv6 keys in
case files (tests/fuzz/packets/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet6 import IPv6

from tests.fuzz.packets.cases import Case, EvictEvent, load_case, save_case
from tests.fuzz.packets.frames import FrameGenerator
from tests.fuzz.packets.frames6 import TC6_FAMILIES, XDP6_FAMILIES
from tests.fuzz.packets.icmp6 import csum_replace
from tests.fuzz.packets.oracle import DNAT, FRAGMENT_SNAT, ICMP_TRANSLATED, SNAT, Oracle
from tests.fuzz.packets.parse import (
    FRAGMENT,
    MALFORMED,
    NOT_OURS,
    TC_PASS,
    V6_NO_L4,
    Fragment,
    IcmpView,
    View,
    parse_tc,
    parse_xdp,
)
from tests.fuzz.packets.pick import addr_hash
from tests.fuzz.packets.rewrite import TC_ACT_OK, XDP_PASS, checksums_verify
from tests.fuzz.packets.topology import BACKENDS, VIP6_B
from tests.fuzz.packets.wire import (
    DSTOPTS,
    FRAGMENT6,
    HOPOPTS,
    ROUTING,
    TCP,
    UDP,
    addr,
    fix_checksums6,
    icmp6_fix,
    ipv6_header,
    udp_datagram,
)
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
    assert isinstance(parse_xdp(bytes(echo.data)), IcmpView)  # lb_icmp6.h reads it: not an error
    assert Oracle().plan_xdp(bytes(echo.data)).outcome == NOT_OURS
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


ROUTER6 = addr("fd00:f9::1")


def _udp_flow(oracle: Oracle) -> tuple[bytes, int]:
    """A UDP flow of CLIENT6:5000 to the VIP:53 in the oracle's mirror: its backend address:port."""
    built = udp6_frame(udp_zero=False)
    out = bytearray(built.data)
    backend = addr(BACKENDS[4][0])
    out[14 + 24 : 14 + 40] = backend
    out[built.l4 + 2 : built.l4 + 4] = (8080).to_bytes(2, "big")
    fix_checksums6(out, 14)
    assert oracle.check_xdp(bytes(built.data), XDP_PASS, bytes(out)).outcome == DNAT
    return backend, 8080


def _packet_too_big(outer: tuple[bytes, bytes], quoted: tuple[bytes, bytes, int, int]) -> bytes:
    src, dst, sport, dport = quoted
    l4 = udp_datagram(src, dst, sport, dport, b"answer")
    body = bytes((2, 0, 0, 0)) + (1280).to_bytes(4, "big") + bytes(ipv6_header(src, dst, UDP, len(l4))) + l4
    return bytes(FrameGenerator(0, scapy_pool=0).six.icmp(*outer, body).data)


def test_icmpv6_errors_and_reply_fragments_parse_as_lb_icmp6_h_reads_them() -> None:
    ptb = _packet_too_big((ROUTER6, VIP6_B), (VIP6_B, CLIENT6, 53, 5000))
    assert parse_xdp(ptb) == IcmpView(14, 40, len(ptb), v6=True)
    assert parse_tc(ptb) == IcmpView(14, 40, len(ptb), v6=True)
    gen = FrameGenerator(0, scapy_pool=0)
    first = (FRAGMENT6, (0 << 3 | 1).to_bytes(2, "big") + (77).to_bytes(4, "big"))
    view = parse_tc(bytes(gen.six.packet(VIP6_B, CLIENT6, UDP, bytes(8), ext=[first]).data))
    assert isinstance(view, View) and (view.l4, view.frag, view.ip_id) == (14 + 48, 1, 77)
    later = (FRAGMENT6, (9 << 3).to_bytes(2, "big") + (77).to_bytes(4, "big"))
    frame = bytes(gen.six.packet(VIP6_B, CLIENT6, UDP, bytes(8), ext=[later]).data)
    assert parse_tc(frame) == Fragment(14, VIP6_B, CLIENT6, 77, UDP, v6=True)
    assert parse_xdp(frame) == FRAGMENT
    icmp_behind = (FRAGMENT6, (9 << 3).to_bytes(2, "big") + (77).to_bytes(4, "big"))
    frame = bytes(gen.six.packet(VIP6_B, CLIENT6, 58, bytes(8), ext=[icmp_behind]).data)
    frame = frame[: 14 + 40 + 2] + bytes((58,)) + frame[14 + 40 + 3 :]
    assert parse_tc(frame) == TC_PASS  # a fragment of something else than TCP/UDP


def test_csum_replace_is_rfc_1624() -> None:
    data = bytes(range(40))
    check = ~sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, 40, 2)) % 0xFFFF & 0xFFFF
    new = bytes(range(100, 116))
    changed = new + data[16:]
    want = ~sum(int.from_bytes(changed[i : i + 2], "big") for i in range(0, 40, 2)) % 0xFFFF & 0xFFFF
    assert csum_replace(check, data[:16], new) % 0xFFFF == want % 0xFFFF


@pytest.mark.parametrize("to_backend", [True, False], ids=["xdp", "tc"])
def test_oracle_accepts_exactly_the_icmpv6_translation(to_backend: bool) -> None:
    """A Packet Too Big about a tracked UDP flow, translated from scratch (every checksum computed
    anew): the oracle accepts it; a wrong ICMPv6 checksum, an outer address left alone, a wrong
    quoted port or a stray byte are each refused."""
    oracle = Oracle()
    backend, bport = _udp_flow(oracle)
    if to_backend:
        data = _packet_too_big((ROUTER6, VIP6_B), (VIP6_B, CLIENT6, 53, 5000))
        good = _packet_too_big((ROUTER6, backend), (backend, CLIENT6, bport, 5000))
        check, ok = oracle.check_xdp, XDP_PASS
    else:
        data = _packet_too_big((backend, CLIENT6), (CLIENT6, backend, 5000, bport))
        good = _packet_too_big((VIP6_B, CLIENT6), (CLIENT6, VIP6_B, 5000, 53))
        check, ok = oracle.check_tc, TC_ACT_OK
    assert (check(data, ok, good).outcome, check(data, ok, good).problems) == (ICMP_TRANSLATED, ())
    ic = 14 + 40
    outer = 14 + (24 if to_backend else 8)
    quoted_port = ic + 8 + 40 + (0 if to_backend else 2)
    for name, at, value in (
        ("ICMPv6 checksum", ic + 2, None),
        ("outer address", outer + 15, data[outer + 15]),
        ("quoted port", quoted_port + 1, None),
        ("outside", 14 + 1, None),
    ):
        wrong = bytearray(good)
        wrong[at] = value if value is not None else wrong[at] ^ 0x40
        problems = check(data, ok, bytes(wrong)).problems
        assert any(name.split()[0] in p for p in problems), (name, problems)
    untouched = check(data, ok, data).problems
    assert untouched and "outer address" in " ".join(untouched)
    fixed = bytearray(good)
    fixed[ic + 2 : ic + 4] = b"\0\0"
    fixed[ic:] = icmp6_fix(bytes(good[14 + 8 : 14 + 24]), bytes(good[14 + 24 : 14 + 40]), bytes(fixed[ic:]))
    assert fixed == bytearray(good)  # the from-scratch frame's checksum is the right one


def test_oracle_remembers_an_ipv6_first_fragment_for_its_followers() -> None:
    oracle = Oracle()
    backend, bport = _udp_flow(oracle)
    gen = FrameGenerator(0, scapy_pool=0)
    first = (FRAGMENT6, (0 << 3 | 1).to_bytes(2, "big") + (5).to_bytes(4, "big"))
    reply = gen.l4_frame(backend, CLIENT6, UDP, bport, 5000, payload=b"a", ext=[first], udp_zero=False)
    data = bytes(reply.data)
    out = bytearray(data)
    out[14 + 8 : 14 + 24] = VIP6_B
    out[reply.l4 : reply.l4 + 2] = (53).to_bytes(2, "big")
    out[reply.l4 :] = udp_datagram(VIP6_B, CLIENT6, 53, 5000, b"a")  # checksum computed anew
    assert oracle.check_tc(data, TC_ACT_OK, bytes(out)).outcome == SNAT
    assert oracle.check_tc(data, TC_ACT_OK, bytes(out)).problems == ()
    later = (FRAGMENT6, (3 << 3).to_bytes(2, "big") + (5).to_bytes(4, "big"))
    frame = bytes(gen.six.packet(backend, CLIENT6, UDP, bytes(16), ext=[later]).data)
    moved = bytearray(frame)
    moved[14 + 8 : 14 + 24] = VIP6_B
    assert (
        oracle.check_tc(frame, TC_ACT_OK, bytes(moved)).outcome,
        oracle.check_tc(frame, TC_ACT_OK, bytes(moved)).problems,
    ) == (FRAGMENT_SNAT, ())
    assert oracle.check_tc(frame, TC_ACT_OK, frame).problems  # left with the backend's address
