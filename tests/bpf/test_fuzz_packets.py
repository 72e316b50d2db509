# SPDX-License-Identifier: Apache-2.0
"""Packet fuzzing of the data path (tests/fuzz/packets/) through BPF_PROG_TEST_RUN (root): a sample of
2 x 10,000 frames with a fresh seed each session (LBTUI_FUZZ_SEED=N fixes it), truncation sweeps, and
the recorded regression cases (tests/fuzz/cases/), which stay fixed. bench/fuzz_packets.py soaks."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.packets.cases import FrameEvent, load_case
from tests.fuzz.packets.conntrack import DIR_FORWARD, DIR_REVERSE
from tests.fuzz.packets.frames import FAMILIES, Frame
from tests.fuzz.packets.harness import (
    Dataplane,
    FuzzStats,
    PacketFuzzer,
    flow_key,
    pinned_to_one_cpu,
    summary_table,
)
from tests.fuzz.packets.oracle import DNAT, DROPPED, FINDING_SHARED_AFTER_EVICTION, MIDSTREAM, SNAT, TC_MISS
from tests.fuzz.packets.parse import FRAGMENT, MALFORMED, NOT_OURS, REFUSED, TC_PASS
from tests.fuzz.packets.replay import describe_case, replay
from tests.fuzz.packets.tcp import CT_F_RST
from tests.fuzz.packets.topology import BACKEND_BY_ENDPOINT, VIP_B
from tests.fuzz.packets.wire import TCP, TPID_8021Q, Built
from tests.fuzz.samples import CLIENT, syn_frame, udp_frame

CASES = sorted((Path(__file__).parents[1] / "fuzz" / "cases").glob("*.json"))


@pytest.fixture(scope="module")
def dataplane() -> Iterator[Dataplane]:
    dp = Dataplane()
    yield dp
    dp.close()


def _report(stats: FuzzStats) -> str:
    return "\n\n".join(str(f) for f in stats.failures) + "\n\n" + summary_table(stats)


# A fresh seed per test session, so the suite explores new frames every time; LBTUI_FUZZ_SEED=N fixes it.
SAMPLE_SEED = int(os.environ.get("LBTUI_FUZZ_SEED") or random.SystemRandom().randrange(1, 2**31))
SAMPLE_FRAMES, SAMPLE_SYNC = 10_000, 500


@pytest.mark.parametrize("offset", [0, 1])
def test_fuzz_sample(dataplane: Dataplane, offset: int, tmp_path: Path) -> None:
    seed = SAMPLE_SEED + offset
    print(f"packet fuzz sample: seed {seed} (LBTUI_FUZZ_SEED={SAMPLE_SEED})")
    with pinned_to_one_cpu():
        stats = PacketFuzzer(dataplane, seed, sync_every=SAMPLE_SYNC, case_dir=tmp_path).run(SAMPLE_FRAMES)
    how = (
        f"seed {seed}: rerun with LBTUI_FUZZ_SEED={SAMPLE_SEED} pytest {__file__} -k fuzz_sample, or "
        f"bench/fuzz_packets.py --seed {seed} --frames {SAMPLE_FRAMES} --sync-every {SAMPLE_SYNC}"
    )
    cases = [f"bench/fuzz_packets.py --replay {f.case}" for f in stats.failures[:3] if f.case]
    assert stats.failure_count == 0, "\n".join([how, *cases, _report(stats)])
    assert stats.frames == SAMPLE_FRAMES
    outcomes = {outcome for _, outcome in stats.outcomes}
    assert outcomes >= {DNAT, SNAT, MALFORMED, FRAGMENT, MIDSTREAM, NOT_OURS, TC_MISS}, how
    assert {family for family, _ in stats.outcomes} == set(FAMILIES), how


def _sweep(fuzzer: PacketFuzzer, family: str, frame: bytes, hook: str = "xdp") -> list[str]:
    """Every prefix of `frame` through the program: the oracle's verdict and the explicit rule."""
    outcomes = []
    for cut in range(len(frame) + 1):
        fuzzer.sync()  # every prefix meets an empty conntrack
        result = fuzzer.check_frame(Frame(family, hook, frame[:cut]))
        assert result.problems == (), (cut, result.problems)
        outcomes.append(result.outcome)
    return outcomes


@pytest.mark.parametrize(
    "name",
    ["syn", "vlan_udp", "ip_options_syn"],
)
def test_truncation_sweep(dataplane: Dataplane, name: str) -> None:
    fuzzer = PacketFuzzer(dataplane, 0)
    frames = {
        "syn": syn_frame(),
        "vlan_udp": udp_frame(vlans=[(TPID_8021Q, 42)], udp_zero=False),
        "ip_options_syn": syn_frame(ip_options=b"\x94\x04\x00\x00" + b"\x01" * 8),
    }
    frame = bytes(frames[name].data)
    outcomes = _sweep(fuzzer, name, frame)
    # shorter than Ethernet: refused by the kernel; every other proper prefix: passed untouched
    assert outcomes[:14] == [REFUSED] * 14
    assert all(o in (MALFORMED, NOT_OURS) for o in outcomes[14:-1]), outcomes
    assert outcomes[-1] == DNAT
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)


def test_truncation_sweep_of_a_reply(dataplane: Dataplane) -> None:
    fuzzer = PacketFuzzer(dataplane, 0)
    fuzzer.sync()
    request = syn_frame()
    assert fuzzer.check_frame(Frame("syn", "xdp", bytes(request.data))).outcome == DNAT
    flow = fuzzer.oracle.flows[-1]
    reply = bytes(fuzzer.generator.reply(flow, flags=0x12, payload=b"").data)
    for cut in range(len(reply) + 1):
        result = fuzzer.check_frame(Frame("reply", "tc", reply[:cut]))
        assert result.problems == (), (cut, result.problems)
        if 34 <= cut < 54:  # the TC program needs the whole TCP header (it reads no length field)
            assert result.outcome == TC_PASS
    assert result.outcome == SNAT
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)


def test_two_services_never_share_one_backend_tuple(dataplane: Dataplane) -> None:
    """The same client address:port to VIP:80 and VIP:81 must not both reach one backend ip:port.

    The backend would see one 4-tuple for two connections, and the single reverse entry (keyed by
    backend and client) can SNAT the replies to only one of the two VIP ports.
    """
    fuzzer = PacketFuzzer(dataplane, 0)
    gen = fuzzer.generator
    for sport in range(41000, 41060):
        fuzzer.sync()
        for port in (81, 80):
            frame = gen.l4_frame(CLIENT, VIP_B, TCP, sport, port, flags=0x02, payload=b"")
            fuzzer.check_frame(Frame("cross", "xdp", bytes(frame.data)))
        first, second = fuzzer.oracle.flows[-2:]
        assert (first.backend_ip, first.backend_port) != (second.backend_ip, second.backend_port), sport


def test_late_reply_of_an_old_flow_does_not_touch_the_new_flow(dataplane: Dataplane) -> None:
    """Flow 1 closes (FIN both ways), the client reuses its port, the new SYN lands on another backend;
    a late RST from flow 1's backend goes through flow 1's leftover reverse entry and marks the NEW
    flow reset (and counts a connect failure against the new backend, which the circuit breaker reads)."""
    fuzzer = PacketFuzzer(dataplane, 0)
    gen = fuzzer.generator

    def send(frame: Built, hook: str) -> None:
        result = fuzzer.check_frame(Frame("late", hook, bytes(frame.data)))
        assert result.problems == ()

    for sport in range(42000, 42100):
        fuzzer.sync()
        send(gen.l4_frame(CLIENT, VIP_B, TCP, sport, 80, flags=0x02, payload=b""), "xdp")
        old = fuzzer.oracle.flows[-1]
        send(gen.reply(old, flags=0x12, payload=b""), "tc")
        send(gen.followup(old, exact=True, flags=0x11, payload=b""), "xdp")
        send(gen.reply(old, exact=True, flags=0x11, payload=b""), "tc")
        send(gen.l4_frame(CLIENT, VIP_B, TCP, sport, 80, flags=0x02, payload=b""), "xdp")
        new = fuzzer.oracle.flows[-1]
        if (new.backend_ip, new.backend_port) != (old.backend_ip, old.backend_port):
            break
    else:
        pytest.fail("the weighted-random pick never changed backend")
    send(gen.reply(old, flags=0x04, payload=b""), "tc")  # the old backend's late RST
    assert fuzzer.oracle.conntrack_problems(dataplane.conntrack()) == []  # the mirror is right
    forward = next(e for e in dataplane.conntrack() if e.dir == DIR_FORWARD and e.key[2] == sport)
    assert forward.backend == (new.backend_ip, new.backend_port)
    assert not forward.flags & CT_F_RST, "the new flow was marked reset by the old flow's backend"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_recorded_case(dataplane: Dataplane, path: Path) -> None:
    """Each case shrunk from a failing fuzz run replays exactly (the recorded weighted-random draws
    are made again) and must now pass. `bench/fuzz_packets.py --replay CASE --verbose` lists one."""
    case = load_case(path)
    stats, _ = replay(dataplane, case)
    listing = "\n".join(describe_case(case))
    assert stats.failure_count == 0, _report(stats) + "\n\n" + listing
    assert stats.forced_picks == sum(isinstance(e, FrameEvent) and e.pick is not None for e in case.events)


def test_syn_on_a_closed_flow_leaves_the_reverse_entry_another_flow_took(dataplane: Dataplane) -> None:
    """The rule behind tests/fuzz/cases/seed7-ct-restored.json and seed21-dnat-clash.json.

    Flow A (client port -> VIP:80) is reset and its reverse entry evicted; flow B (same client port ->
    VIP:81) gets A's backend X and so takes the reverse key (X, client port). A SYN reusing A's tuple
    removes A's forward entry but not that reverse entry: it is B's (lb.c compares created_ns). The
    new flow must not get X (X already serves the client port for B), B's replies still go back as
    VIP:81, and B's next packet finds its reverse entry (nothing to restore).
    """
    fuzzer = PacketFuzzer(dataplane, 0)
    gen = fuzzer.generator
    sport = 43000

    def send(frame: Built, hook: str) -> str:
        result = fuzzer.check_frame(Frame("rule", hook, bytes(frame.data)))
        assert result.problems == (), result.problems
        return result.outcome

    def syn(port: int) -> Built:
        return gen.l4_frame(CLIENT, VIP_B, TCP, sport, port, flags=0x02, payload=b"")

    send(syn(81), "xdp")  # Maglev: B's backend follows from the tuple alone
    x = fuzzer.oracle.flows[-1]
    backend_x = BACKEND_BY_ENDPOINT[(x.backend_ip, x.backend_port)]
    fuzzer.sync()

    with dataplane.force_pick(0, backend_x):  # A (weighted random) gets X too
        send(syn(80), "xdp")
    a = fuzzer.oracle.flows[-1]
    send(gen.reply(a, flags=0x04, payload=b""), "tc")  # X resets A
    fuzzer.evict(flow_key(a, reverse=True))
    send(syn(81), "xdp")
    b = fuzzer.oracle.flows[-1]
    assert (b.backend_ip, b.backend_port) == (a.backend_ip, a.backend_port)
    restored_before = dataplane.global_counters()["xdp_ct_restored"]

    outcome = send(syn(80), "xdp")  # reuses A's closed tuple
    entries = {e.key: e for e in dataplane.conntrack()}
    reverse = entries[flow_key(b, reverse=True)]
    assert (reverse.dir, reverse.vip[1]) == (DIR_REVERSE, 81), "B's reverse entry was removed with A"
    if outcome != DROPPED:
        new = entries[flow_key(a, reverse=False)]
        assert new.backend != (x.backend_ip, x.backend_port), "the new flow got the backend B uses"
    send(gen.followup(b, flags=0x10, payload=b""), "xdp")
    assert dataplane.global_counters()["xdp_ct_restored"] == restored_before
    assert send(gen.reply(b, flags=0x10, payload=b""), "tc") == SNAT
    fuzzer.sync()
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)


def test_a_live_flow_whose_reverse_entry_was_evicted_can_lose_its_backend_tuple(dataplane: Dataplane) -> None:
    """A known limit, reported as a finding: lb.c keeps two flows of one client port off one backend
    address:port by looking at that backend's reverse entry; once the LRU evicted it, flow B (to the
    other VIP port) can get live flow A's backend. The backend then sees one 4-tuple for both, A's
    next packet cannot restore its reverse entry (B holds the key) and A's replies leave as VIP:81."""
    fuzzer = PacketFuzzer(dataplane, 0)
    gen = fuzzer.generator
    sport = 43100

    def send(frame: Built, hook: str) -> None:
        assert fuzzer.check_frame(Frame("limit", hook, bytes(frame.data))).problems == ()

    def syn(port: int) -> Built:
        return gen.l4_frame(CLIENT, VIP_B, TCP, sport, port, flags=0x02, payload=b"")

    send(syn(81), "xdp")
    x = fuzzer.oracle.flows[-1]
    fuzzer.sync()
    with dataplane.force_pick(0, BACKEND_BY_ENDPOINT[(x.backend_ip, x.backend_port)]):
        send(syn(80), "xdp")
    a = fuzzer.oracle.flows[-1]
    fuzzer.evict(flow_key(a, reverse=True))
    send(syn(81), "xdp")
    assert fuzzer.oracle.findings[FINDING_SHARED_AFTER_EVICTION] == 1
    send(gen.followup(a, flags=0x10, payload=b""), "xdp")
    reverse = {e.key: e for e in dataplane.conntrack()}[flow_key(a, reverse=True)]
    assert reverse.vip[1] == 81
    fuzzer.sync()
    assert fuzzer.stats.failure_count == 0, _report(fuzzer.stats)
