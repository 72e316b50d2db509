# SPDX-License-Identifier: Apache-2.0
"""Replaying recorded cases, and shrinking one to the shortest event sequence that still fails.

A replay starts from an empty conntrack, runs the case's frames and evictions in order (making the
recorded weighted-random draws again: harness.PacketFuzzer._forced_pick) and ends with a sync. It
reproduces a case when its first failure is of the case's kind (cases.failure_kind).

`shrink` is delta debugging over the events (Zeller's ddmin): drop ever smaller chunks while the
failure stays, until no single event can go. The result is recorded from its own replay, so its
picks are the draws that replay made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from tests.fuzz.packets.cases import Case, Event, EvictEvent, FrameEvent, failure_kind
from tests.fuzz.packets.conntrack import endpoint_text, key_text, proto_text
from tests.fuzz.packets.harness import Dataplane, FuzzStats, PacketFuzzer
from tests.fuzz.packets.oracle import PICK_DROPPED
from tests.fuzz.packets.parse import parse_tc, parse_xdp
from tests.fuzz.packets.topology import BACKENDS
from tests.fuzz.packets.wire import TCP


def replay(
    dataplane: Dataplane, case: Case, *, stop_at_failure: bool = False
) -> tuple[FuzzStats, Case | None]:
    """Run a case once: (stats, the case recorded at its first failure or None)."""
    fuzzer = PacketFuzzer(
        dataplane,
        int(case.origin.get("seed", 0)),
        sync_every=max(1, case.frames),
        keep_failures=1000,
        scapy_pool=0,
    )
    stats = fuzzer.replay_events(case.events, stop_at_failure=stop_at_failure)
    return stats, fuzzer.first_case


def first_kind(stats: FuzzStats) -> str | None:
    return failure_kind(stats.failures[0].problems[0]) if stats.failures else None


def reproduces(dataplane: Dataplane, case: Case, events: Sequence[Event]) -> bool:
    stats, _ = replay(dataplane, case.with_events(tuple(events)), stop_at_failure=True)
    return first_kind(stats) == case.kind


def shrink(dataplane: Dataplane, case: Case, *, progress: Callable[[str], None] | None = None) -> Case:
    """The shortest event sequence (no event can be removed) that still fails like `case`."""
    say = progress or (lambda _text: None)
    events = list(case.events)
    if not reproduces(dataplane, case, events):
        raise ValueError(f"the case does not reproduce its failure ({case.kind})")
    # a frame failure ends its segment: nothing after the failing frame matters
    last_failed = max(
        (i for i, e in enumerate(events) if isinstance(e, FrameEvent) and e.failed), default=None
    )
    if last_failed is not None and reproduces(dataplane, case, events[: last_failed + 1]):
        events = events[: last_failed + 1]
    chunks = 2
    while len(events) >= 2:
        size = math.ceil(len(events) / chunks)
        for start in range(0, len(events), size):
            candidate = events[:start] + events[start + size :]
            if reproduces(dataplane, case, candidate):
                events = candidate
                chunks = max(chunks - 1, 2)
                say(f"{len(events)} events")
                break
        else:
            if chunks >= len(events):
                break
            chunks = min(len(events), chunks * 2)
    _, recorded = replay(dataplane, case.with_events(tuple(events)), stop_at_failure=True)
    assert recorded is not None and recorded.kind == case.kind
    origin = dict(case.origin, shrunk_from_events=len(case.events))
    return Case(recorded.events, origin, recorded.failure, recorded.kind)


def describe_case(case: Case) -> list[str]:
    """One line per event, as the programs parse each frame (for reading a case, not for checking)."""
    lines = []
    for i, event in enumerate(case.events):
        if isinstance(event, EvictEvent):
            lines.append(f"{i:4}  evict {key_text(event.key)}")
            continue
        view = (parse_xdp if event.hook == "xdp" else parse_tc)(event.data)
        if isinstance(view, str):
            what = view
        else:
            what = (
                f"{endpoint_text((view.saddr, view.sport))} > {endpoint_text((view.daddr, view.dport))}"
                f"/{proto_text(view.proto)}"
            )
            if view.proto == TCP:
                what += " " + "".join(c for bit, c in enumerate("FSRPAUEC") if view.tcp_flags >> bit & 1)
        if event.pick == PICK_DROPPED:
            what += "  (drawn: dropped)"
        elif event.pick is not None:
            what += f"  (drawn: backend {BACKENDS[event.pick][0]}:{BACKENDS[event.pick][1]})"
        lines.append(
            f"{i:4}  {event.hook:<3} {event.family:<16} {what}{'  <- failed' if event.failed else ''}"
        )
    return lines
