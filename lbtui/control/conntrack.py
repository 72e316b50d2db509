"""The conntrack sweep as a pure function: which flows expired, who is active, the bounded view.

The engine reads every conntrack entry in one batch and hands them here; nothing in this module
touches a map. Expiry follows DESIGN.md section 3's timeouts, measured from the later of the two
directions' last packet.
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lbtui import model
from lbtui.dataplane.maps import FlowEntry
from lbtui.dataplane.structs import CT_F_CLOSED, CT_F_RST, CT_F_SYNACK, DIR_FORWARD

FlowId = tuple[str, int, str, int, str]


@dataclass(frozen=True)
class Timeouts:
    tcp_s: float
    tcp_closing_s: float
    udp_s: float
    syn_s: float = 30.0  # a TCP flow whose SYN was never answered


@dataclass
class SweepResult:
    expired_keys: list[Any] = field(default_factory=list)  # raw map keys to delete
    expired_flows: list[tuple[FlowEntry, FlowEntry | None]] = field(default_factory=list)  # not closed before
    active: collections.Counter[int] = field(default_factory=collections.Counter)  # backend id -> flows
    unanswered: list[tuple[Hashable, int, float]] = field(default_factory=list)  # (flow, backend id, age s)
    top: list[model.FlowView] = field(default_factory=list)
    tcp: int = 0
    udp: int = 0
    closing: int = 0
    entries: int = 0


def flow_state(f: FlowEntry) -> str:
    if f.protocol == "udp":
        return "udp"
    if f.flags & (CT_F_CLOSED | CT_F_RST):
        return "closing"
    return "established" if f.flags & CT_F_SYNACK else "syn_sent"


def sweep(
    entries: Iterable[tuple[Any, FlowEntry]],
    now_ns: int,
    timeouts: Timeouts,
    top_n: int,
    proxy_of: dict[int, str],
) -> SweepResult:
    res = SweepResult()
    forward: dict[FlowId, tuple[Any, FlowEntry]] = {}
    reverse: dict[FlowId, tuple[Any, FlowEntry]] = {}
    for raw_key, e in entries:
        res.entries += 1
        flow_id = (e.client[0], e.client[1], e.vip[0], e.vip[1], e.protocol)
        (forward if e.direction == DIR_FORWARD else reverse)[flow_id] = (raw_key, e)
    heap: list[tuple[int, int, model.FlowView]] = []
    for n, (flow_id, (raw_key, f)) in enumerate(forward.items()):
        rev = reverse.get(flow_id)
        r = rev[1] if rev else None
        last = max(f.last_seen_ns, r.last_seen_ns if r else 0)
        idle_s = (now_ns - last) / 1e9
        state = flow_state(f)
        timeout = {
            "udp": timeouts.udp_s,
            "closing": timeouts.tcp_closing_s,
            "syn_sent": timeouts.syn_s,
            "established": timeouts.tcp_s,
        }[state]
        if idle_s > timeout:
            res.expired_keys.append(raw_key)
            if rev:
                res.expired_keys.append(rev[0])
            if not f.flags & CT_F_CLOSED:
                res.expired_flows.append((f, r))
            continue
        if state == "udp":
            res.udp += 1
        else:
            res.tcp += 1
        if state == "closing":
            res.closing += 1
        else:
            res.active[f.backend_id] += 1
        if state == "syn_sent":
            res.unanswered.append((flow_id, f.backend_id, (now_ns - f.created_ns) / 1e9))
        total = f.bytes + (r.bytes if r else 0)
        if len(heap) < top_n or total > heap[0][0]:
            view = model.FlowView(
                protocol=f.protocol,
                client=f"{f.client[0]}:{f.client[1]}",
                vip=f"{f.vip[0]}:{f.vip[1]}",
                backend=f"{f.backend[0]}:{f.backend[1]}",
                proxy=proxy_of.get(f.service_id, "?"),
                state=state,
                age_s=(now_ns - f.created_ns) / 1e9,
                idle_s=idle_s,
                packets_in=f.packets,
                bytes_in=f.bytes,
                packets_out=r.packets if r else 0,
                bytes_out=r.bytes if r else 0,
            )
            if len(heap) < top_n:
                heapq.heappush(heap, (total, n, view))
            else:
                heapq.heapreplace(heap, (total, n, view))
    # reverse entries whose forward entry is gone (LRU eviction) and that went idle
    for flow_id, (raw_key, r_entry) in reverse.items():
        if flow_id not in forward and (now_ns - r_entry.last_seen_ns) / 1e9 > timeouts.tcp_closing_s:
            res.expired_keys.append(raw_key)
    res.top = [v for _, _, v in sorted(heap, key=lambda t: (-t[0], t[1]))]
    return res
