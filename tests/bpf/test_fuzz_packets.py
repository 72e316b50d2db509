# SPDX-License-Identifier: Apache-2.0
"""Packet fuzzing of the data path (tests/fuzz/packets.py): 20,000 frames and
truncation sweeps through BPF_PROG_TEST_RUN (root). bench/fuzz_packets.py runs the same with 1e6."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fuzz import packets as fz
from tests.fuzz.samples import CLIENT, syn_frame, udp_frame


@pytest.fixture(scope="module")
def dataplane() -> Iterator[tuple[Any, Any]]:
    loaded, maps = fz.open_dataplane()
    yield loaded, maps
    loaded.close()


def _report(stats: fz.FuzzStats) -> str:
    return "\n\n".join(str(f) for f in stats.failures) + "\n\n" + fz.summary_table(stats)


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
