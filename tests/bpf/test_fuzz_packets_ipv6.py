# SPDX-License-Identifier: Apache-2.0
"""The packet fuzzer's IPv6 half (tests/fuzz/packets/frames6.py) through BPF_PROG_TEST_RUN (root): a
sample of 20,000 IPv6 frames with a fresh seed each session (LBTUI_FUZZ_SEED=N fixes it), truncation
at every offset of IPv6 requests and replies, extension header chains in every order, ICMPv6 errors
about tracked flows translated both ways and fragmented replies (lb_icmp6.h). The soak
of a million and more: `bench/fuzz_packets.py --families ipv6`."""

from __future__ import annotations

import itertools
import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.layers.l2 import Ether

from tests.fuzz.packets.frames import Frame, FrameGenerator
from tests.fuzz.packets.frames6 import TC6_FAMILIES, XDP6_FAMILIES
from tests.fuzz.packets.harness import Dataplane, FuzzStats, PacketFuzzer, pinned_to_one_cpu, summary_table
from tests.fuzz.packets.oracle import DNAT, FRAGMENT_SNAT, ICMP_TRANSLATED, MIDSTREAM, SNAT, TC_MISS
from tests.fuzz.packets.parse import FRAGMENT, MALFORMED, NOT_OURS, REFUSED, TC_PASS, V6_NO_L4
from tests.fuzz.packets.topology import BACKEND_BY_ENDPOINT, VIP6_B
from tests.fuzz.packets.wire import (
    DSTOPTS,
    FRAGMENT6,
    HOPOPTS,
    ICMP6,
    ROUTING,
    TPID_8021Q,
    UDP,
    addr,
    ipv6_header,
    udp_datagram,
)
from tests.fuzz.samples import syn6_frame, udp6_frame

SAMPLE_SEED = int(os.environ.get("LBTUI_FUZZ_SEED") or random.SystemRandom().randrange(1, 2**31))
SAMPLE_FRAMES, SAMPLE_SYNC = 20_000, 500


@pytest.fixture(scope="module")
def dataplane() -> Iterator[Dataplane]:
    dp = Dataplane()
    yield dp
    dp.close()


def _report(stats: FuzzStats) -> str:
    return "\n\n".join(str(f) for f in stats.failures) + "\n\n" + summary_table(stats)


def test_fuzz_sample_ipv6(dataplane: Dataplane, tmp_path: Path) -> None:
    seed = SAMPLE_SEED + 2
    print(f"IPv6 packet fuzz sample: seed {seed} (LBTUI_FUZZ_SEED={SAMPLE_SEED})")
    with pinned_to_one_cpu():
        fuzzer = PacketFuzzer(dataplane, seed, sync_every=SAMPLE_SYNC, case_dir=tmp_path, families="ipv6")
        stats = fuzzer.run(SAMPLE_FRAMES)
    how = (
        f"seed {seed}: rerun with LBTUI_FUZZ_SEED={SAMPLE_SEED} pytest {__file__} -k sample, or "
        f"bench/fuzz_packets.py --families ipv6 --seed {seed} --frames {SAMPLE_FRAMES} "
        f"--sync-every {SAMPLE_SYNC}"
    )
    cases = [f"bench/fuzz_packets.py --replay {f.case}" for f in stats.failures[:3] if f.case]
    assert stats.failure_count == 0, "\n".join([how, *cases, _report(stats)])
    assert stats.frames == SAMPLE_FRAMES
    outcomes = {outcome for _, outcome in stats.outcomes}
    want = {DNAT, SNAT, MALFORMED, FRAGMENT, MIDSTREAM, NOT_OURS, TC_MISS, TC_PASS, V6_NO_L4, REFUSED}
    want |= {ICMP_TRANSLATED, FRAGMENT_SNAT}
    assert outcomes >= want, how
    assert {family for family, _ in stats.outcomes} == set(XDP6_FAMILIES) | set(TC6_FAMILIES), how


def _sweep(fuzzer: PacketFuzzer, frame: bytes, hook: str = "xdp") -> list[str]:
    """Every prefix of `frame` through the program, each against an empty conntrack."""
    outcomes = []
    for cut in range(len(frame) + 1):
        fuzzer.sync()
        result = fuzzer.check_frame(Frame("sweep6", hook, frame[:cut]))
        assert result.problems == (), (cut, result.problems)
        outcomes.append(result.outcome)
    return outcomes


def _chain(*kinds: int, units: int = 1) -> list[tuple[int, bytes]]:
    return [(kind, bytes(units * 8 - 2)) for kind in kinds]


@pytest.mark.parametrize("name", ["syn", "vlan_udp", "ext_chain_syn", "ext_chain_udp"])
def test_truncation_sweep_ipv6(dataplane: Dataplane, name: str) -> None:
    fuzzer = PacketFuzzer(dataplane, 0)
    frames = {
        "syn": syn6_frame(),
        "vlan_udp": udp6_frame(vlans=[(TPID_8021Q, 42)], udp_zero=False),
        "ext_chain_syn": syn6_frame(ext=_chain(HOPOPTS, ROUTING, DSTOPTS, DSTOPTS, units=2)),
        "ext_chain_udp": udp6_frame(ext=_chain(HOPOPTS, DSTOPTS), udp_zero=False),
    }
    frame = bytes(frames[name].data)
    outcomes = _sweep(fuzzer, frame)
    # shorter than Ethernet: refused by the kernel; every other proper prefix: passed untouched
    # (the payload length then runs past the frame's end)
    assert outcomes[:14] == [REFUSED] * 14
    assert set(outcomes[14:-1]) == {MALFORMED}, outcomes
    assert outcomes[-1] == DNAT
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)


@pytest.mark.parametrize("ext", [(), (HOPOPTS, ROUTING)], ids=["plain", "ext_chain"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_truncation_sweep_of_an_ipv6_reply(dataplane: Dataplane, proto: str, ext: tuple[int, ...]) -> None:
    fuzzer = PacketFuzzer(dataplane, 0)
    fuzzer.sync()
    request = syn6_frame() if proto == "tcp" else udp6_frame(udp_zero=False)
    assert fuzzer.check_frame(Frame("syn6", "xdp", bytes(request.data))).outcome == DNAT
    flow = fuzzer.oracle.flows[-1]
    built = fuzzer.generator.reply(flow, flags=0x12, payload=b"", ext=_chain(*ext), udp_zero=False)
    reply = bytes(built.data)
    outcomes = []
    for cut in range(len(reply) + 1):
        result = fuzzer.check_frame(Frame("reply6", "tc", reply[:cut]))
        assert result.problems == (), (cut, result.problems)
        outcomes.append(result.outcome)
    header = 20 if proto == "tcp" else 8
    # the test run wants the whole fixed header; then TC passes until the L4 header is whole (it reads
    # no length field), and SNATs from there on
    assert outcomes[:54] == [REFUSED] * 54
    assert set(outcomes[54 : built.l4 + header]) <= {TC_PASS}, outcomes
    assert set(outcomes[built.l4 + header :]) == {SNAT}, outcomes
    fuzzer.sync()
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)


def test_extension_headers_in_every_order_and_length(dataplane: Dataplane) -> None:
    """Up to four hop-by-hop, routing and destination options headers (8 to 48 bytes each) in every
    order: DNAT to a backend; five or more: passed untouched and counted xdp_v6_no_l4 (the sync
    compares the counter); a fragment header anywhere within reach: passed untouched, xdp_fragment."""
    fuzzer = PacketFuzzer(dataplane, 0)
    kinds = (HOPOPTS, ROUTING, DSTOPTS)
    seen: dict[str, int] = {}

    def outcome(ext: list[tuple[int, bytes]], proto: str = "tcp") -> str:
        built = syn6_frame(ext=ext) if proto == "tcp" else udp6_frame(ext=ext, udp_zero=False)
        result = fuzzer.check_frame(Frame("ext6", "xdp", bytes(built.data)))
        assert result.problems == (), (ext, result.problems)
        seen[result.outcome] = seen.get(result.outcome, 0) + 1
        return result.outcome

    for count in range(1, 5):
        for order in itertools.product(kinds, repeat=count):
            for units in (1, 6):
                fuzzer.sync()
                assert outcome(_chain(*order, units=units)) == DNAT, order
                assert fuzzer.oracle.flows[-1].vip == VIP6_B
                backend = fuzzer.oracle.flows[-1]
                assert (backend.backend_ip, backend.backend_port) in BACKEND_BY_ENDPOINT
    for count in (5, 6, 9):
        fuzzer.sync()
        assert outcome(_chain(*([ROUTING] * count))) == V6_NO_L4
        assert outcome(_chain(*([DSTOPTS] * count)), "udp") == V6_NO_L4
    for before in range(0, 5):
        for first in (True, False):
            fuzzer.sync()
            fragment = (FRAGMENT6, (0 if first else 185 << 3).to_bytes(2, "big") + bytes((0, 0, 0, 7)))
            assert outcome([*_chain(*([HOPOPTS] * before)), fragment]) == FRAGMENT
    fuzzer.sync()
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)
    assert seen[DNAT] == 2 * sum(3**n for n in range(1, 5))


def _icmp6_checksum_verifies(frame: bytes) -> bool:
    """scapy's sum of the ICMPv6 message with its pseudo header (independent of the oracle's)."""
    ip6 = Ether(frame)[IPv6]
    return ip6.nh == ICMP6 and in6_chksum(ICMP6, ip6.payload, bytes(ip6.payload)) == 0


def test_icmpv6_errors_about_tracked_flows_are_translated_both_ways(dataplane: Dataplane) -> None:
    """Packet Too Big, destination unreachable, time exceeded (and parameter problem, which stays)
    about tracked TCP and UDP flows, with quotes of every length, of first and later fragments and
    broken ones: toward the backend at XDP (quoting the flow's reply), toward the client at TC
    (quoting the client's packet to the backend). The oracle checks every byte of each output; the
    sync compares xdp_icmp_translated, tc_icmp_translated and xdp_not_ours."""
    fuzzer = PacketFuzzer(dataplane, 0)
    fuzzer.sync()
    for request in (syn6_frame(), udp6_frame(udp_zero=False)):
        assert fuzzer.check_frame(Frame("req6", "xdp", bytes(request.data))).outcome == DNAT
    flows = fuzzer.oracle.flows[-2:]
    six = FrameGenerator(5, scapy_pool=0, families="ipv6").six
    seen: Counter[tuple[str, str]] = Counter()
    for i in range(400):
        flow = flows[i % 2]
        for hook, frame in (
            ("xdp", six.icmp_error_about(flow)),
            ("tc", six.icmp_error_from_backend_side(flow)),
        ):
            result = fuzzer.check_frame(Frame("icmp6", hook, bytes(frame)))
            assert result.problems == (), result.problems
            seen[(hook, result.outcome)] += 1
    fuzzer.sync()
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)
    assert seen[("xdp", ICMP_TRANSLATED)] > 200 and seen[("tc", ICMP_TRANSLATED)] > 200, seen
    assert seen[("xdp", NOT_OURS)] > 20 and seen[("tc", "tc_icmp")] > 20, seen


@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_a_translated_packet_too_big_verifies_with_scapy(dataplane: Dataplane, hook: str) -> None:
    """One Packet Too Big each way, whole UDP quote: the oracle accepts the output, and scapy's own
    checksum code finds the ICMPv6 checksum (pseudo header with the new outer address) right."""
    fuzzer = PacketFuzzer(dataplane, 0)
    fuzzer.sync()
    assert fuzzer.check_frame(Frame("udp6", "xdp", bytes(udp6_frame(udp_zero=False).data))).outcome == DNAT
    flow = fuzzer.oracle.flows[-1]
    six = FrameGenerator(0, scapy_pool=0).six
    if hook == "xdp":
        src, dst, ports = VIP6_B, flow.client_ip, (flow.vip_port, flow.client_port)
        outer = (addr("fd00:f9::1"), VIP6_B)
    else:
        src, dst, ports = flow.client_ip, flow.backend_ip, (flow.client_port, flow.backend_port)
        outer = (flow.backend_ip, flow.client_ip)
    l4 = udp_datagram(src, dst, *ports, b"a datagram too big for the path")
    quoted = bytes(ipv6_header(src, dst, UDP, len(l4)) + l4)
    body = bytes((2, 0, 0, 0)) + (1280).to_bytes(4, "big") + quoted
    frame = bytes(six.icmp(*outer, body).data)
    verdict, out = dataplane.run(hook, frame)
    check = fuzzer.oracle.check_xdp if hook == "xdp" else fuzzer.oracle.check_tc
    result = check(frame, verdict, out)
    assert (result.outcome, result.problems) == (ICMP_TRANSLATED, ())
    assert _icmp6_checksum_verifies(out)
    ip6 = Ether(out)[IPv6]
    if hook == "xdp":
        assert (addr(ip6.dst), addr(ip6.payload.payload.src)) == (flow.backend_ip, flow.backend_ip)
    else:
        assert (addr(ip6.src), addr(ip6.payload.payload.dst)) == (VIP6_B, VIP6_B)
    fuzzer.sync()
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)


def _fragment(first: bool, more: bool, ident: int, offset: int = 9) -> tuple[int, bytes]:
    return FRAGMENT6, ((0 if first else offset) << 3 | more).to_bytes(2, "big") + ident.to_bytes(4, "big")


def test_a_fragmented_ipv6_reply_leaves_from_the_vip(dataplane: Dataplane) -> None:
    """A backend's UDP reply too big for its path to the client, fragmented by the backend (IPv6
    routers never fragment): the first fragment carries the UDP header and is SNATed, the later ones
    carry only data and get the VIP as source by lb_frags6 (tc_fragments_snat). Fragments of another
    identification, and followers of a first fragment that said no more follow, pass untouched."""
    fuzzer = PacketFuzzer(dataplane, 0)
    fuzzer.sync()
    assert fuzzer.check_frame(Frame("udp6", "xdp", bytes(udp6_frame(udp_zero=False).data))).outcome == DNAT
    flow = fuzzer.oracle.flows[-1]
    six = fuzzer.generator.six

    def later(ident: int, more: bool, offset: int = 9) -> bytes:
        ext = [_fragment(False, more, ident, offset)]
        return bytes(six.packet(flow.backend_ip, flow.client_ip, UDP, bytes(72), ext=ext).data)

    def first(ident: int, more: bool) -> bytes:
        ext = [_fragment(True, more, ident)]
        return bytes(fuzzer.generator.reply(flow, payload=bytes(64), ext=ext, udp_zero=False).data)

    frames = [
        (first(0x1234, True), SNAT),
        (later(0x1234, True), FRAGMENT_SNAT),
        (later(0x1234, False, 18), FRAGMENT_SNAT),
        (later(0x1235, False), "tc_fragment"),  # another packet's
        (first(0x5678, False), SNAT),  # a whole datagram in one fragment: nothing to remember
        (later(0x5678, False), "tc_fragment"),
    ]
    sources = []
    for frame, want in frames:
        verdict, out = dataplane.run("tc", frame)
        result = fuzzer.oracle.check_tc(frame, verdict, out)
        assert (result.outcome, result.problems) == (want, ()), frame.hex()
        sources.append(out[14 + 8 : 14 + 24])
    assert sources[:3] == [VIP6_B] * 3
    assert sources[3] == flow.backend_ip and sources[5] == flow.backend_ip
    fuzzer.sync()  # tc_fragments_snat: 2
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)
