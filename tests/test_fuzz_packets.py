"""Packet fuzzing of the data path (lbtui/fuzzing.py): the oracle itself, then 20,000 frames and
truncation sweeps through BPF_PROG_TEST_RUN (root). bench/fuzz_packets.py runs the same with 1e6."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from lbtui import fuzzing as fz

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for BPF")
CLIENT = fz.addr("172.16.5.6")


def syn_frame(**kw: Any) -> fz.Built:
    gen = fz.FrameGenerator(0, scapy_pool=0)
    return gen.l4_frame(CLIENT, fz.VIP_B, fz.TCP, 40000, 80, flags=0x02, payload=b"", **kw)


def udp_frame(**kw: Any) -> fz.Built:
    gen = fz.FrameGenerator(0, scapy_pool=0)
    return gen.l4_frame(CLIENT, fz.VIP_B, fz.UDP, 5000, 53, payload=b"query", **kw)


def dnat_of(built: fz.Built, backend: tuple[str, int]) -> bytes:
    """What a correct DNAT of `built` to `backend` looks like, with checksums computed from scratch."""
    out = bytearray(built.data)
    out[built.l3 + 16 : built.l3 + 20] = fz.addr(backend[0])
    out[built.l4 + 2 : built.l4 + 4] = backend[1].to_bytes(2, "big")
    fz.fix_checksums(out, built.l3)
    return bytes(out)


# ---- the oracle and the checksum code, without BPF ------------------------------------------------


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


@pytest.fixture(scope="module")
def dataplane() -> Iterator[tuple[Any, Any]]:
    loaded, maps = fz.open_dataplane()
    yield loaded, maps
    loaded.close()


def _report(stats: fz.FuzzStats) -> str:
    return "\n\n".join(str(f) for f in stats.failures) + "\n\n" + fz.summary_table(stats)


@needs_root
@pytest.mark.root
@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_10000_frames(dataplane, seed: int) -> None:
    loaded, maps = dataplane
    stats = fz.PacketFuzzer(loaded, maps, seed, sync_every=500).run(10_000)
    assert stats.failure_count == 0, _report(stats)
    assert stats.frames == 10_000
    outcomes = {outcome for _, outcome in stats.outcomes}
    assert outcomes >= {fz.DNAT, fz.SNAT, fz.MALFORMED, fz.FRAGMENT, fz.MIDSTREAM, fz.NOT_OURS, fz.TC_MISS}
    assert {family for family, _ in stats.outcomes} == set(fz.FAMILIES)


def _sweep(fuzzer: fz.PacketFuzzer, family: str, frame: bytes, hook: str = "xdp") -> list[str]:
    """Every prefix of `frame` through the program: the oracle's verdict and the explicit rule."""
    prog = fuzzer.loaded.xdp_fn.fd if hook == "xdp" else fuzzer.loaded.tc_fn.fd
    outcomes = []
    for cut in range(len(frame) + 1):
        fuzzer.sync()  # every prefix meets an empty conntrack
        result = fuzzer.check_frame(fz.Frame(family, hook, frame[:cut]), prog)
        assert result.problems == (), (cut, result.problems)
        outcomes.append(result.outcome)
    return outcomes


@needs_root
@pytest.mark.root
@pytest.mark.parametrize(
    "name",
    ["syn", "vlan_udp", "ip_options_syn"],
)
def test_truncation_sweep(dataplane, name: str) -> None:
    loaded, maps = dataplane
    fuzzer = fz.PacketFuzzer(loaded, maps, 0)
    frames = {
        "syn": syn_frame(),
        "vlan_udp": udp_frame(vlans=[(fz.TPID_8021Q, 42)], udp_zero=False),
        "ip_options_syn": syn_frame(ip_options=b"\x94\x04\x00\x00" + b"\x01" * 8),
    }
    frame = bytes(frames[name].data)
    outcomes = _sweep(fuzzer, name, frame)
    # shorter than Ethernet: refused by the kernel; every other proper prefix: passed untouched
    assert outcomes[:14] == [fz.REFUSED] * 14
    assert all(o in (fz.MALFORMED, fz.NOT_OURS) for o in outcomes[14:-1]), outcomes
    assert outcomes[-1] == fz.DNAT
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)


@needs_root
@pytest.mark.root
def test_truncation_sweep_of_a_reply(dataplane) -> None:
    loaded, maps = dataplane
    fuzzer = fz.PacketFuzzer(loaded, maps, 0)
    fuzzer.sync()
    request = syn_frame()
    assert (
        fuzzer.check_frame(fz.Frame("syn", "xdp", bytes(request.data)), loaded.xdp_fn.fd).outcome == fz.DNAT
    )
    flow = fuzzer.oracle.flows[-1]
    reply = bytes(fuzzer.generator.reply(flow, flags=0x12, payload=b"").data)
    for cut in range(len(reply) + 1):
        result = fuzzer.check_frame(fz.Frame("reply", "tc", reply[:cut]), loaded.tc_fn.fd)
        assert result.problems == (), (cut, result.problems)
        if 34 <= cut < 54:  # the TC program needs the whole TCP header (it reads no length field)
            assert result.outcome == fz.TC_PASS
    assert result.outcome == fz.SNAT
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)


@needs_root
@pytest.mark.root
def test_two_services_never_share_one_backend_tuple(dataplane) -> None:
    """The same client address:port to VIP:80 and VIP:81 must not both reach one backend ip:port.

    The backend would see one 4-tuple for two connections, and the single reverse entry (keyed by
    backend and client) can SNAT the replies to only one of the two VIP ports.
    """
    loaded, maps = dataplane
    fuzzer = fz.PacketFuzzer(loaded, maps, 0)
    gen = fuzzer.generator
    for sport in range(41000, 41060):
        fuzzer.sync()
        for port in (81, 80):
            frame = gen.l4_frame(CLIENT, fz.VIP_B, fz.TCP, sport, port, flags=0x02, payload=b"")
            fuzzer.check_frame(fz.Frame("cross", "xdp", bytes(frame.data)), loaded.xdp_fn.fd)
        first, second = fuzzer.oracle.flows[-2:]
        assert (first.backend_ip, first.backend_port) != (second.backend_ip, second.backend_port), sport


@needs_root
@pytest.mark.root
def test_late_reply_of_an_old_flow_does_not_touch_the_new_flow(dataplane) -> None:
    """Flow 1 closes (FIN both ways), the client reuses its port, the new SYN lands on another backend;
    a late RST from flow 1's backend goes through flow 1's leftover reverse entry and marks the NEW
    flow reset (and counts a connect failure against the new backend, which the circuit breaker reads)."""
    loaded, maps = dataplane
    fuzzer = fz.PacketFuzzer(loaded, maps, 0)
    gen = fuzzer.generator
    xdp, tc = loaded.xdp_fn.fd, loaded.tc_fn.fd

    def send(frame: fz.Built, hook: str) -> None:
        result = fuzzer.check_frame(fz.Frame("late", hook, bytes(frame.data)), xdp if hook == "xdp" else tc)
        assert result.problems == ()

    for sport in range(42000, 42100):
        fuzzer.sync()
        send(gen.l4_frame(CLIENT, fz.VIP_B, fz.TCP, sport, 80, flags=0x02, payload=b""), "xdp")
        old = fuzzer.oracle.flows[-1]
        send(gen.reply(old, flags=0x12, payload=b""), "tc")
        send(gen.followup(old, flags=0x11, payload=b""), "xdp")
        send(gen.reply(old, flags=0x11, payload=b""), "tc")
        send(gen.l4_frame(CLIENT, fz.VIP_B, fz.TCP, sport, 80, flags=0x02, payload=b""), "xdp")
        new = fuzzer.oracle.flows[-1]
        if (new.backend_ip, new.backend_port) != (old.backend_ip, old.backend_port):
            break
    else:
        pytest.fail("the weighted-random pick never changed backend")
    send(gen.reply(old, flags=0x04, payload=b""), "tc")  # the old backend's late RST
    assert fuzzer.oracle.conntrack_problems([e for _, e in maps.conntrack()]) == []  # the mirror is right
    forward = next(e for _, e in maps.conntrack() if e.direction == fz.DIR_FORWARD and e.key.sport == sport)
    assert forward.backend == (socket.inet_ntoa(new.backend_ip), new.backend_port)
    assert not forward.flags & fz.CT_F_RST, "the new flow was marked reset by the old flow's backend"
