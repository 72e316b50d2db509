# SPDX-License-Identifier: Apache-2.0
"""Recorded fuzz cases: the frames and evictions of one run segment, as a JSON file to replay.

A segment is what the harness ran since conntrack was last emptied (every `sync_every` frames both
the map and the oracle's mirror start empty again), so it replays on its own: nothing before it can
matter. Each frame carries the backend the kernel drew for it when it started a weighted-random
flow (`pick`), the one outcome a seed does not determine, so that a replay can make the same draw.

    {"format": 1, "origin": {...how the run was started...}, "failure": "...", "kind": "...",
     "events": [{"hook": "xdp", "family": "tcp_syn", "frame": "0200...", "pick": 1},
                {"evict": "10.0.2.11:8080 > 10.1.171.52:19039/tcp"}, ...]}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fuzz.packets.conntrack import CtKey, key_text
from tests.fuzz.packets.wire import TCP, UDP, addr

FORMAT = 1


@dataclass(frozen=True)
class FrameEvent:
    hook: str  # "xdp" | "tc"
    family: str
    data: bytes
    pick: int | None = None  # weighted-random new flow: backend id drawn (oracle.PICK_DROPPED: dropped)
    failed: bool = False  # the oracle rejected the program's answer to this frame when it was recorded
    ingress: str = ""  # fast path: the lab interface the frame arrived on (fastpath.py), "" the default


@dataclass(frozen=True)
class EvictEvent:
    key: CtKey  # the conntrack entry the harness deleted, as an LRU eviction would


Event = FrameEvent | EvictEvent


@dataclass(frozen=True)
class Case:
    events: tuple[Event, ...]
    origin: dict[str, Any] = field(default_factory=dict)  # seed, options, frame range
    failure: str = ""  # the failure report when it was recorded
    kind: str = ""  # failure_kind() of that report: what a replay must reproduce

    def with_events(self, events: tuple[Event, ...]) -> Case:
        return Case(events, self.origin, self.failure, self.kind)

    @property
    def frames(self) -> int:
        return sum(isinstance(e, FrameEvent) for e in self.events)


def failure_kind(problem: str) -> str:
    """A failure's first line without its numbers and addresses: what stays the same when a case is
    shrunk ("global counter xdp_ct_restored: expected #, map has #")."""
    first = problem.strip().splitlines()[0] if problem.strip() else ""
    return re.sub(r"(0x)?[0-9a-f]*[0-9][0-9a-f]*", "#", first)


_KEY_RE = re.compile(r"^\[?([\d.]+|[0-9a-f:]+)\]?:(\d+) > \[?([\d.]+|[0-9a-f:]+)\]?:(\d+)/(tcp|udp)$")


def parse_key(text: str) -> CtKey:
    m = _KEY_RE.match(text)
    if not m:
        raise ValueError(f"not a conntrack key: {text!r}")
    proto = TCP if m.group(5) == "tcp" else UDP
    return (
        addr(m.group(1)),
        addr(m.group(3)),
        int(m.group(2)),
        int(m.group(4)),
        proto,
    )


def _event_json(e: Event) -> dict[str, Any]:
    if isinstance(e, EvictEvent):
        return {"evict": key_text(e.key)}
    out: dict[str, Any] = {"hook": e.hook, "family": e.family, "frame": e.data.hex()}
    if e.pick is not None:
        out["pick"] = e.pick
    if e.failed:
        out["failed"] = True
    if e.ingress:
        out["ingress"] = e.ingress
    return out


def _event_from(d: dict[str, Any]) -> Event:
    if "evict" in d:
        return EvictEvent(parse_key(d["evict"]))
    return FrameEvent(
        d["hook"],
        d["family"],
        bytes.fromhex(d["frame"]),
        d.get("pick"),
        d.get("failed", False),
        d.get("ingress", ""),
    )


def save_case(case: Case, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {"format": FORMAT, "origin": case.origin, "failure": case.failure, "kind": case.kind}
    # one event per line: readable, and diffs of regression cases stay small
    events = ",\n  ".join(json.dumps(_event_json(e)) for e in case.events)
    path.write_text(json.dumps(head, indent=1)[:-2] + ',\n "events": [\n  ' + events + "\n ]\n}\n")
    return path


def load_case(path: str | Path) -> Case:
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a packet fuzz case of format {FORMAT}")
    events = tuple(_event_from(d) for d in doc["events"])
    return Case(events, doc.get("origin", {}), doc.get("failure", ""), doc.get("kind", ""))
