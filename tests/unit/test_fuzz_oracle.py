# SPDX-License-Identifier: Apache-2.0
"""The packet fuzzer's own parts, without BPF: its checksum code against scapy, its parser against
lb.c's rules, the oracle accepting exactly the correct rewrites, its conntrack mirror's rules, and the
case files (tests/fuzz/packets/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.fuzz.packets.cases import Case, EvictEvent, FrameEvent, failure_kind, load_case, save_case
from tests.fuzz.packets.conntrack import DIR_FORWARD, TRANSIENT, ConntrackMirror, CtEntry
from tests.fuzz.packets.frames import XDP_FAMILIES, FrameGenerator
from tests.fuzz.packets.oracle import PICK_DROPPED, Oracle
from tests.fuzz.packets.parse import FRAGMENT, MALFORMED, NOT_OURS, REFUSED, View, parse_xdp
from tests.fuzz.packets.rewrite import XDP_DROP, XDP_PASS, checksums_verify
from tests.fuzz.packets.tcp import CT_F_CLOSED, CT_F_RST
from tests.fuzz.packets.topology import BACKENDS
from tests.fuzz.packets.wire import TCP, addr, fix_checksums
from tests.fuzz.samples import CLIENT, dnat_of, syn_frame, udp_frame


def test_checksums_agree_with_scapy() -> None:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    gen = FrameGenerator(11, scapy_pool=0)
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
        view = parse_xdp(frame)
        assert isinstance(view, View)
        assert checksums_verify(frame, view) == (True, True)


def test_parser_mirrors_lb_c() -> None:
    good = bytes(syn_frame().data)
    assert isinstance(parse_xdp(good), View)
    assert parse_xdp(good[:13]) == REFUSED
    assert parse_xdp(good[:-1]) == MALFORMED  # tot_len beyond the frame
    assert isinstance(parse_xdp(good + b"\0" * 6), View)  # Ethernet padding is fine
    assert parse_xdp(bytes(syn_frame(frag=0x2000).data)) == FRAGMENT
    assert parse_xdp(bytes(syn_frame(frag=5).data)) == FRAGMENT
    assert isinstance(parse_xdp(bytes(syn_frame(frag=0x4000).data)), View)  # DF only
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x44
    assert parse_xdp(bytes(bad_ihl)) == MALFORMED
    bad_doff = bytearray(good)
    bad_doff[14 + 20 + 12] = 0x40
    assert parse_xdp(bytes(bad_doff)) == MALFORMED
    udp = udp_frame(udp_zero=False)
    long_udp = bytearray(udp.data)
    long_udp[udp.l4 + 5] += 1  # UDP length one more than the IP payload
    assert parse_xdp(bytes(long_udp)) == MALFORMED
    short_udp = bytearray(udp.data)
    short_udp[udp.l4 + 5] -= 1  # shorter than the IP payload: legal
    assert isinstance(parse_xdp(bytes(short_udp)), View)
    assert parse_xdp(bytes(syn_frame(vlans=[(0x8100, 5), (0x8100, 6)]).data)) == NOT_OURS


def test_oracle_accepts_a_correct_dnat_and_rejects_every_kind_of_wrong_one() -> None:
    built = syn_frame()
    frame = bytes(built.data)
    good = dnat_of(built, BACKENDS[0])
    assert Oracle().check_xdp(frame, XDP_PASS, good).problems == ()

    def problems(out: bytes, verdict: int = XDP_PASS) -> tuple[str, ...]:
        return Oracle().check_xdp(frame, verdict, out).problems

    assert problems(good, XDP_DROP)
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
    out[built.l3 + 16 : built.l3 + 20] = addr("10.0.2.12")
    out[built.l4 + 2 : built.l4 + 4] = (8080).to_bytes(2, "big")
    fix_checksums(out, built.l3)  # leaves a zero UDP checksum alone
    assert Oracle().check_xdp(bytes(built.data), XDP_PASS, bytes(out)).problems == ()
    out[built.l4 + 6 : built.l4 + 8] = b"\x12\x34"
    assert Oracle().check_xdp(bytes(built.data), XDP_PASS, bytes(out)).problems


def test_generator_is_deterministic_and_covers_every_family() -> None:
    a, b = FrameGenerator(5), FrameGenerator(5)
    frames = [a.next([]) for _ in range(3000)]
    assert frames == [b.next([]) for _ in range(3000)]
    assert {f.family for f in frames} >= set(XDP_FAMILIES) - {"tcp_followup", "udp_followup"}


def test_case_files_round_trip(tmp_path: Path) -> None:
    events = (
        FrameEvent("xdp", "tcp_syn", bytes(syn_frame().data), pick=1),
        EvictEvent((addr("10.0.2.11"), CLIENT, 8080, 40000, TCP)),
        FrameEvent("tc", "tc_reply", b"\x01\x02", failed=True),
        FrameEvent("xdp", "udp_vip", bytes(udp_frame().data), pick=PICK_DROPPED),
    )
    case = Case(events, {"seed": 7}, "[-] conntrack-sync:\n  x", "x")
    path = save_case(case, tmp_path / "c.json")
    assert load_case(path) == case
    assert json.loads(path.read_text())["events"][1] == {"evict": "10.0.2.11:8080 > 172.16.5.6:40000/tcp"}


def test_failure_kind_keeps_the_words_and_drops_the_numbers() -> None:
    assert failure_kind("global counter xdp_ct_restored: expected 26, map has 25") == failure_kind(
        "global counter xdp_ct_restored: expected 1, map has 0\nmore"
    )
    a = "DNAT: rewritten to 10.0.2.11:8080, expected one of ['10.0.2.12:8080']"
    assert failure_kind(a) == "DNAT: rewritten to #.#.#.#:#, expected one of ['#.#.#.#:#']"
    assert failure_kind(a) != failure_kind("SNAT: bytes outside address/port/checksums changed: [22]")


def _entry(vip_port: int, backend: str, **kw: Any) -> CtEntry:
    return CtEntry(
        CLIENT, addr("10.0.0.1"), addr(backend), 40000, vip_port, 8080, TCP, DIR_FORWARD, 0, 0, **kw
    )


def test_mirror_removes_a_closed_flows_reverse_entry_only_while_it_is_still_that_flows() -> None:
    mirror = ConntrackMirror()
    a = _entry(80, "10.0.2.11", flags=CT_F_RST | CT_F_CLOSED)
    mirror.create(a)
    assert mirror.reverse_removed_with(a, TRANSIENT) == a.reverse_key()
    mirror.evict(a.reverse_key())
    b = _entry(81, "10.0.2.11")  # same client port, same backend: takes A's reverse key
    mirror.create(b)
    assert mirror.reverse_removed_with(a, TRANSIENT) is None
    mirror.end(a, TRANSIENT)
    assert mirror.get(a.forward_key()) is None
    kept = mirror.get(b.reverse_key())
    assert kept is not None and kept.vip_port == 81
    restored = _entry(82, "10.0.2.12")
    mirror.create(restored)
    mirror.evict(restored.reverse_key())
    assert mirror.restore_reverse(restored, TRANSIENT)  # a restored reverse entry is still its flow's
    assert mirror.reverse_removed_with(restored, TRANSIENT) == restored.reverse_key()
