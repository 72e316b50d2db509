"""The conntrack sweep: which flows expired, who is active, the bounded top-N view.

The engine reads the whole conntrack map in one batch into numpy record arrays and hands them here;
nothing in this module touches a map. The work is vectorised so that a million entries take a
fraction of a second: entries are grouped by flow (the forward entry and its reverse entry carry the
same client and VIP fields), a flow's idle time runs from the later of its entries' last packets,
and expiry follows DESIGN.md section 3's timeouts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lbtui import model
from lbtui.dataplane.maps import FlowEntry, entry_from_record
from lbtui.dataplane.structs import CT_F_CLOSED, CT_F_RST, CT_F_SYNACK, DIR_FORWARD, IPPROTO_UDP

FlowId = tuple[int, int]


@dataclass(frozen=True)
class Timeouts:
    tcp_s: float
    tcp_closing_s: float
    udp_s: float
    syn_s: float = 30.0  # a TCP flow whose SYN was never answered


@dataclass
class SweepResult:
    expired_keys: np.ndarray | None = None  # CtKey records to delete
    expired_created: np.ndarray | None = None  # their entries' created_ns (delete only if unchanged)
    expired_flows: list[tuple[FlowEntry, FlowEntry | None]] = field(default_factory=list)  # not closed before
    active: dict[int, int] = field(default_factory=dict)  # backend id -> live (not closing) flows
    unanswered: list[tuple[FlowId, int, float]] = field(default_factory=list)  # (flow, backend id, age s)
    top: list[model.FlowView] = field(default_factory=list)
    tcp: int = 0
    udp: int = 0
    closing: int = 0
    entries: int = 0

    @property
    def expired_count(self) -> int:
        return 0 if self.expired_keys is None else len(self.expired_keys)


def _state(proto: int, flags: int) -> str:
    if proto == IPPROTO_UDP:
        return "udp"
    if flags & (CT_F_CLOSED | CT_F_RST):
        return "closing"
    return "established" if flags & CT_F_SYNACK else "syn_sent"


def sweep(
    keys: np.ndarray,
    vals: np.ndarray,
    now_ns: int,
    timeouts: Timeouts,
    top_n: int,
    proxy_of: Mapping[int, str],
    track_unanswered: bool = True,
) -> SweepResult:
    res = SweepResult(entries=len(vals))
    n = len(vals)
    if n == 0:
        return res
    # flow identity, the same in both directions' entries
    id1 = (
        (vals["client_ip"].astype(np.uint64) << np.uint64(32))
        | (vals["client_port"].astype(np.uint64) << np.uint64(16))
        | vals["vip_port"].astype(np.uint64)
    )
    id2 = (vals["vip"].astype(np.uint64) << np.uint64(8)) | vals["proto"].astype(np.uint64)
    order = np.lexsort((vals["dir"], id2, id1))  # per flow: the forward entry (dir 0) first
    s1, s2 = id1[order], id2[order]
    starts_mask = np.ones(n, dtype=bool)
    starts_mask[1:] = (s1[1:] != s1[:-1]) | (s2[1:] != s2[:-1])
    starts = np.flatnonzero(starts_mask)
    group_of = np.cumsum(starts_mask) - 1
    sizes = np.diff(np.append(starts, n))
    first = order[starts]  # the forward entry when the flow has one
    has_fwd = vals["dir"][first] == DIR_FORWARD
    second = order[np.minimum(starts + 1, n - 1)]
    rev = np.where(has_fwd, np.where(sizes > 1, second, -1), first)  # a reverse entry per flow (or -1)

    last = np.maximum.reduceat(vals["last_seen_ns"][order], starts)
    idle_s = (np.int64(now_ns) - last.astype(np.int64)) / 1e9
    flags = vals["flags"][first]
    proto = vals["proto"][first]
    udp = proto == IPPROTO_UDP
    closing = ~udp & ((flags & np.uint64(CT_F_CLOSED | CT_F_RST)) != 0)
    syn_sent = ~udp & ~closing & ((flags & np.uint64(CT_F_SYNACK)) == 0)
    timeout = np.where(
        udp,
        timeouts.udp_s,
        np.where(closing, timeouts.tcp_closing_s, np.where(syn_sent, timeouts.syn_s, timeouts.tcp_s)),
    )
    # flows without a forward entry (LRU eviction) go once idle past the closing timeout
    timeout = np.where(has_fwd, timeout, timeouts.tcp_closing_s)
    expired = idle_s > timeout

    expired_entries = order[expired[group_of]]
    res.expired_keys = keys[expired_entries].copy()
    res.expired_created = vals["created_ns"][expired_entries].copy()
    lost = np.flatnonzero(expired & has_fwd & ((flags & np.uint64(CT_F_CLOSED)) == 0))
    for g in lost:
        f = entry_from_record(keys[first[g]], vals[first[g]])
        r = entry_from_record(keys[rev[g]], vals[rev[g]]) if rev[g] >= 0 else None
        res.expired_flows.append((f, r))

    live = has_fwd & ~expired
    res.udp = int(np.count_nonzero(live & udp))
    res.tcp = int(np.count_nonzero(live & ~udp))
    res.closing = int(np.count_nonzero(live & closing))
    counting = live & ~closing
    backend_ids = vals["backend_id"][first[counting]]
    if len(backend_ids):
        counts = np.bincount(backend_ids)
        res.active = {int(b): int(c) for b, c in enumerate(counts) if c}
    if track_unanswered:
        for g in np.flatnonzero(live & syn_sent):
            i = first[g]
            res.unanswered.append(
                (
                    (int(id1[i]), int(id2[i])),
                    int(vals["backend_id"][i]),
                    (now_ns - int(vals["created_ns"][i])) / 1e9,
                )
            )

    candidates = np.flatnonzero(live)
    if len(candidates) and top_n > 0:
        rev_bytes = np.where(rev[candidates] >= 0, vals["bytes"][np.maximum(rev[candidates], 0)], 0)
        total = vals["bytes"][first[candidates]] + rev_bytes
        k = min(top_n, len(candidates))
        pick = np.argpartition(-total.astype(np.int64), k - 1)[:k]
        pick = pick[np.argsort(-total[pick].astype(np.int64), kind="stable")]
        for p in pick:
            g = candidates[p]
            res.top.append(_view(keys, vals, first[g], rev[g], now_ns, float(idle_s[g]), proxy_of))
    return res


def _view(
    keys: np.ndarray,
    vals: np.ndarray,
    fi: Any,
    ri: Any,
    now_ns: int,
    idle_s: float,
    proxy_of: Mapping[int, str],
) -> model.FlowView:
    f = entry_from_record(keys[fi], vals[fi])
    r = entry_from_record(keys[ri], vals[ri]) if ri >= 0 else None
    return model.FlowView(
        protocol=f.protocol,
        client=f"{f.client[0]}:{f.client[1]}",
        vip=f"{f.vip[0]}:{f.vip[1]}",
        backend=f"{f.backend[0]}:{f.backend[1]}",
        proxy=proxy_of.get(f.service_id, "?"),
        state=_state(int(vals["proto"][fi]), f.flags),
        age_s=(now_ns - f.created_ns) / 1e9,
        idle_s=idle_s,
        packets_in=f.packets,
        bytes_in=f.bytes,
        packets_out=r.packets if r else 0,
        bytes_out=r.bytes if r else 0,
    )
