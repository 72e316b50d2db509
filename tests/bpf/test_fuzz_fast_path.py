# SPDX-License-Identifier: Apache-2.0
"""Packet fuzzing with the XDP fast path compiled in (tests/fuzz/packets/fastpath.py, fastpath6.py):
a sample of 10,000 IPv4 and IPv6 frames with a fresh seed each session (LBTUI_FUZZ_SEED=N fixes it)
in the fuzzer's namespace of fixed routes and neighbours, and the oracle shown to reject redirects
that are wrong in one byte, both families, both ways. bench/fuzz_packets.py --fast-path soaks."""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.packets import fastpath
from tests.fuzz.packets.frames import FAST_PATH_FAMILIES, FAST_PATH_TC_FAMILIES, NOT_OURS_MACS, Frame
from tests.fuzz.packets.frames6 import FAST_PATH6_FAMILIES, FAST_PATH6_TC_FAMILIES
from tests.fuzz.packets.harness import Dataplane, PacketFuzzer, pinned_to_one_cpu, summary_table
from tests.fuzz.packets.oracle import DNAT, REDIRECTED, REPLY_REDIRECTED, SNAT, Oracle
from tests.fuzz.packets.rewrite import TC_ACT_OK, XDP_PASS
from tests.fuzz.packets.wire import HOPOPTS
from tests.fuzz.samples import syn6_frame, syn_frame

SAMPLE_SEED = int(os.environ.get("LBTUI_FUZZ_SEED") or random.SystemRandom().randrange(1, 2**31))
SAMPLE_FRAMES, SAMPLE_SYNC = 10_000, 500
GROUP_80 = 0  # tcp/80's selection table (topology.py): backend 0 has a neighbour, backend 1 none
GROUP6_80 = 4  # [VIP6]:80's: backend 4 (fd00:fb::11) has a neighbour, backend 5 none (fastpath6.py)


@pytest.fixture(scope="module")
def dataplane() -> Iterator[Dataplane]:
    dp = Dataplane(fast_path=True)
    yield dp
    dp.close()


def test_fast_path_fuzz_sample(dataplane: Dataplane, tmp_path: Path) -> None:
    seed = SAMPLE_SEED + 2  # not one of test_fuzz_packets.py's seeds
    print(f"fast-path packet fuzz sample: seed {seed} (LBTUI_FUZZ_SEED={SAMPLE_SEED})")
    with pinned_to_one_cpu():
        fuzzer = PacketFuzzer(dataplane, seed, sync_every=SAMPLE_SYNC, case_dir=tmp_path)
        stats = fuzzer.run(SAMPLE_FRAMES)
    how = (
        f"seed {seed}: rerun with LBTUI_FUZZ_SEED={SAMPLE_SEED} pytest {__file__} -k sample, or "
        f"bench/fuzz_packets.py --fast-path --seed {seed} --frames {SAMPLE_FRAMES} --sync-every {SAMPLE_SYNC}"
    )
    cases = [f"bench/fuzz_packets.py --replay {f.case}" for f in stats.failures[:3] if f.case]
    report = "\n\n".join(str(f) for f in stats.failures) + "\n\n" + summary_table(stats)
    assert stats.failure_count == 0, "\n".join([how, *cases, report])
    assert {outcome for _, outcome in stats.outcomes} >= {DNAT, REDIRECTED, SNAT, REPLY_REDIRECTED}, how
    families = {*FAST_PATH_FAMILIES, *FAST_PATH_TC_FAMILIES, *FAST_PATH6_FAMILIES, *FAST_PATH6_TC_FAMILIES}
    assert {family for family, _ in stats.outcomes} >= families, how
    seen = stats.fast_path
    reply_reasons = (fastpath.NO_NEIGH, fastpath.TTL, fastpath.UNMANAGED_EGRESS, fastpath.FIB_OTHER)
    for v6 in ("", "v6 "):  # every decision of both families, forward; the common ones of replies
        assert all(seen[v6 + n] > 0 for n in fastpath.FAST_PATH_COUNTERS), (how, dict(seen))
        assert all(seen[f"{v6}reply {n}"] > 0 for n in reply_reasons), (how, dict(seen))
    assert seen[f"v6 reply {fastpath.IP_OPTIONS}"] > 0, (how, dict(seen))  # extension headers


def _run(
    dataplane: Dataplane, frame: bytes, backend_id: int, group: int = GROUP_80
) -> tuple[int | None, bytes]:
    """`frame` as a new flow's first packet, given `backend_id` of the selection table `group`."""
    dataplane.empty()
    with dataplane.force_pick(group, backend_id):
        return dataplane.run("xdp", frame)


def _problems(dataplane: Dataplane, frame: bytes, verdict: int | None, out: bytes) -> tuple[str, ...]:
    """A fresh oracle's verdict on one new flow's frame."""
    return Oracle(dataplane.fast_path_rules).check_xdp(frame, verdict, out).problems


def test_the_oracle_rejects_a_redirect_wrong_in_one_field(dataplane: Dataplane) -> None:
    frame = bytes(syn_frame().data)
    verdict, out = _run(dataplane, frame, 0)
    assert verdict == fastpath.XDP_REDIRECT
    assert _problems(dataplane, frame, verdict, out) == ()
    ttl, check = 14 + 8, 14 + 10
    no_ttl = bytearray(out)  # the TTL left alone, with or without the checksum's TTL update
    no_ttl[ttl] += 1
    no_ttl_update = bytearray(out)  # TTL - 1 without its checksum update
    no_ttl_update[check : check + 2] = (int.from_bytes(out[check : check + 2], "big") - 0x0100).to_bytes(
        2, "big"
    )
    other_mac = bytearray(out)
    other_mac[5] ^= 1
    other_source_mac = bytearray(out)
    other_source_mac[6:12] = frame[6:12]
    for name, wrong in {
        "TTL not decremented": no_ttl,
        "checksum not updated for the TTL": no_ttl_update,
        "destination MAC": other_mac,
        "source MAC": other_source_mac,
    }.items():
        assert _problems(dataplane, frame, verdict, bytes(wrong)), name
    assert _problems(dataplane, frame, XDP_PASS, out), "XDP_PASS where a redirect was due"


def test_the_oracle_rejects_a_redirect_without_a_neighbour(dataplane: Dataplane) -> None:
    frame = bytes(syn_frame().data)
    verdict, out = _run(dataplane, frame, 1)  # 10.0.2.12: no neighbour entry
    assert verdict == XDP_PASS
    oracle = Oracle(dataplane.fast_path_rules)
    assert oracle.check_xdp(frame, verdict, out).problems == ()
    assert oracle.counters[fastpath.NO_NEIGH] == 1
    assert _problems(dataplane, frame, fastpath.XDP_REDIRECT, out)


def test_frames_arriving_where_forwarding_is_off_fall_back(dataplane: Dataplane) -> None:
    fuzzer = PacketFuzzer(dataplane, 0)
    frame = bytes(syn_frame().data)
    with dataplane.force_pick(GROUP_80, 0):
        result = fuzzer.check_frame(Frame("syn", "xdp", frame, fastpath.INGRESS_NO_FORWARDING))
    assert (result.outcome, result.problems) == (DNAT, ())
    assert fuzzer.oracle.counters[fastpath.FIB_OTHER] == 1
    fuzzer.sync()
    assert fuzzer.stats.failure_count == 0


@pytest.mark.parametrize("mac", NOT_OURS_MACS, ids=["another-host", "broadcast", "multicast4", "multicast6"])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_frames_to_another_mac_fall_back_as_predicted(dataplane: Dataplane, mac: bytes, v6: bool) -> None:
    """A new flow to a backend with a neighbour, in a frame not addressed to the ingress interface:
    XDP_PASS with the DNAT done, counted other_host; a redirect would be a failure."""
    frame = mac + bytes((syn6_frame() if v6 else syn_frame()).data)[6:]
    verdict, out = _run(dataplane, frame, 4 if v6 else 0, GROUP6_80 if v6 else GROUP_80)
    assert verdict == XDP_PASS
    oracle = Oracle(dataplane.fast_path_rules)
    assert oracle.check_xdp(frame, verdict, out).problems == ()
    assert oracle.counters[fastpath.OTHER_HOST] == 1
    assert _problems(dataplane, frame, fastpath.XDP_REDIRECT, out)


def test_the_oracle_rejects_a_reply_redirect_wrong_in_one_field(dataplane: Dataplane) -> None:
    """A reply to 172.16.5.6 (a route with a neighbour): SNATed and redirected by the reply program;
    the same output with one field wrong must fail."""
    fuzzer = PacketFuzzer(dataplane, 0)
    with dataplane.force_pick(GROUP_80, 0):
        assert fuzzer.check_frame(Frame("syn", "xdp", bytes(syn_frame().data))).outcome == REDIRECTED
    reply = bytes(fuzzer.generator.reply(fuzzer.oracle.flows[-1], flags=0x12, payload=b"").data)
    verdict, out, mark = dataplane.run_reply(reply)
    assert (verdict, mark) == (fastpath.TC_ACT_REDIRECT, fastpath.LB_FP_REPLY_MARK)

    def problems(v: int | None, frame: bytes) -> tuple[str, ...]:
        after = dataplane.run("tc", frame, mark=mark)  # lbtui_tc at the client's egress: passes it
        return copy.deepcopy(fuzzer.oracle).check_reply(reply, v, frame, *after).problems

    assert problems(verdict, out) == ()
    not_snated = bytearray(out)
    not_snated[34:36] = reply[34:36]  # the backend's port left as it was
    no_ttl = bytearray(out)
    no_ttl[14 + 8] += 1
    other_mac = bytearray(out)
    other_mac[0] ^= 2
    for name, wrong in {"source port": not_snated, "TTL": no_ttl, "MAC": other_mac}.items():
        assert problems(verdict, bytes(wrong)), name
    assert problems(TC_ACT_OK, reply), "passed where the way out was sure"


def test_the_oracle_rejects_an_ipv6_redirect_wrong_in_one_field(dataplane: Dataplane) -> None:
    frame = bytes(syn6_frame().data)
    verdict, out = _run(dataplane, frame, 4, GROUP6_80)  # fd00:fb::11: a permanent neighbour
    assert verdict == fastpath.XDP_REDIRECT
    assert _problems(dataplane, frame, verdict, out) == ()
    no_hop = bytearray(out)  # the hop limit left alone
    no_hop[14 + 7] += 1
    other_mac = bytearray(out)
    other_mac[5] ^= 1
    other_source_mac = bytearray(out)
    other_source_mac[6:12] = frame[6:12]
    for name, wrong in {
        "hop limit not decremented": no_hop,
        "destination MAC": other_mac,
        "source MAC": other_source_mac,
    }.items():
        assert _problems(dataplane, frame, verdict, bytes(wrong)), name
    assert _problems(dataplane, frame, XDP_PASS, out), "XDP_PASS where a redirect was due"


@pytest.mark.parametrize(
    ("backend_id", "ext", "reason"),
    [(5, (), fastpath.NO_NEIGH), (4, ((HOPOPTS, bytes(6)),), fastpath.IP_OPTIONS)],
    ids=["no-neighbour", "extension-header"],
)
def test_ipv6_fallbacks_are_predicted(dataplane: Dataplane, backend_id: int, ext: tuple, reason: str) -> None:
    frame = bytes(syn6_frame(ext=ext).data)
    verdict, out = _run(dataplane, frame, backend_id, GROUP6_80)
    assert verdict == XDP_PASS
    oracle = Oracle(dataplane.fast_path_rules)
    assert oracle.check_xdp(frame, verdict, out).problems == ()
    assert oracle.counters[reason] == 1
    assert _problems(dataplane, frame, fastpath.XDP_REDIRECT, out)


def test_the_oracle_rejects_an_ipv6_reply_redirect_wrong_in_one_field(dataplane: Dataplane) -> None:
    """A reply to fd00:fe::5:6 (a route with a neighbour): SNATed and redirected by lbtui_tc_reply6;
    the same output with one field wrong must fail."""
    fuzzer = PacketFuzzer(dataplane, 0)
    dataplane.empty()
    with dataplane.force_pick(GROUP6_80, 4):
        assert fuzzer.check_frame(Frame("v6_tcp_syn", "xdp", bytes(syn6_frame().data))).outcome == REDIRECTED
    reply = bytes(fuzzer.generator.reply(fuzzer.oracle.flows[-1], flags=0x12, payload=b"").data)
    verdict, out, mark = dataplane.run_reply(reply)
    assert (verdict, mark) == (fastpath.TC_ACT_REDIRECT, fastpath.LB_FP_REPLY_MARK)

    def problems(v: int | None, frame: bytes) -> tuple[str, ...]:
        after = dataplane.run("tc", frame, mark=mark)
        return copy.deepcopy(fuzzer.oracle).check_reply(reply, v, frame, *after).problems

    assert problems(verdict, out) == ()
    not_snated = bytearray(out)
    not_snated[54:56] = reply[54:56]  # the backend's port left as it was
    no_hop = bytearray(out)
    no_hop[14 + 7] += 1
    other_mac = bytearray(out)
    other_mac[0] ^= 2
    for name, wrong in {"source port": not_snated, "hop limit": no_hop, "MAC": other_mac}.items():
        assert problems(verdict, bytes(wrong)), name
    assert problems(TC_ACT_OK, reply), "passed where the way out was sure"
