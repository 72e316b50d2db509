# SPDX-License-Identifier: Apache-2.0
"""Conntrack expiry: which flows have been idle past their timeout (docs/datapath.md#conntrack).

The engine reads conntrack and hands the record arrays here; nothing in this module touches a map.
Two tables, two ways:

- the transient table (embryonic and closing flows, bounded by `embryonic_connections`) is read
  whole at each sweep: `scan_transient` groups its entries by flow, finds the flows idle past their
  timeout, the SYNs a real client sent that stayed unanswered (circuit breaker input) and counts;
- the established table (up to a million flows) is read a slice per sweep, a whole pass taking
  about `conntrack_pass_s`: `established_candidates` picks, entry by entry, those idle past their
  flow's timeout by their own last packet.

Either way the decision is only a proposal: the data path's lbtui_reap removes a flow only if
neither of its entries saw a packet since the cutoff (and it is still the flow that was read), so
a flow that came back to life in the meantime, or whose other entry is busy, stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lbtui.dataplane.structs import (
    CT_F_CLOSED,
    CT_F_EST,
    CT_F_RST,
    CT_F_SYN,
    CT_F_SYN_RETX,
    CT_F_SYNACK,
    DIR_FORWARD,
    IPPROTO_UDP,
)

FlowId = tuple[int, int]


@dataclass(frozen=True)
class Timeouts:
    tcp_s: float
    tcp_closing_s: float
    udp_s: float
    syn_s: float = 30.0  # a TCP flow whose handshake never completed

    @property
    def longest_s(self) -> float:
        return max(self.tcp_s, self.tcp_closing_s, self.udp_s, self.syn_s)


@dataclass
class Expiry:
    """Flows to propose to lbtui_reap: one key per flow, the flow's created_ns, and the cutoff
    (remove only if idle since then); `rows` index the entries the proposal came from."""

    keys: np.ndarray
    created: np.ndarray
    idle_before: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class TransientScan:
    expiry: Expiry
    unanswered: list[tuple[FlowId, int, float]] = field(default_factory=list)  # (flow, backend id, age s)
    entries: int = 0
    flows: int = 0  # with a forward entry
    tcp: int = 0
    udp: int = 0
    closing: int = 0
    embryonic: int = 0  # TCP handshakes not completed, UDP flows not answered


def flow_ids(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A flow's identity, the same in both of its entries (each carries the whole flow)."""
    id1 = (
        (vals["client_ip"].astype(np.uint64) << np.uint64(32))
        | (vals["client_port"].astype(np.uint64) << np.uint64(16))
        | vals["vip_port"].astype(np.uint64)
    )
    id2 = (vals["vip"].astype(np.uint64) << np.uint64(8)) | vals["proto"].astype(np.uint64)
    return id1, id2


def _timeouts_of(flags: np.ndarray, udp: np.ndarray, t: Timeouts) -> np.ndarray:
    """Per flow (its forward entry's flags), the idle timeout in seconds."""
    closing = ~udp & ((flags & np.uint64(CT_F_CLOSED | CT_F_RST)) != 0)
    handshake = ~udp & ~closing & ((flags & np.uint64(CT_F_EST)) == 0)
    return np.where(udp, t.udp_s, np.where(closing, t.tcp_closing_s, np.where(handshake, t.syn_s, t.tcp_s)))


def scan_transient(
    keys: np.ndarray, vals: np.ndarray, now_ns: int, t: Timeouts, track_unanswered: bool = True
) -> TransientScan:
    """The whole transient table: flows idle past their timeout (both entries' last packets count),
    unanswered SYNs, counts."""
    n = len(vals)
    empty = Expiry(keys[:0].copy(), np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64))
    res = TransientScan(expiry=empty, entries=n)
    if n == 0:
        return res
    id1, id2 = flow_ids(vals)
    order = np.lexsort((vals["dir"], id2, id1))  # per flow: the forward entry (dir 0) first
    s1, s2 = id1[order], id2[order]
    starts_mask = np.ones(n, dtype=bool)
    starts_mask[1:] = (s1[1:] != s1[:-1]) | (s2[1:] != s2[:-1])
    starts = np.flatnonzero(starts_mask)
    first = order[starts]  # the forward entry when the flow has one
    has_fwd = vals["dir"][first] == DIR_FORWARD
    last = np.maximum.reduceat(vals["last_seen_ns"][order], starts)
    flags = vals["flags"][first]
    udp = vals["proto"][first] == IPPROTO_UDP
    timeout = np.where(has_fwd, _timeouts_of(flags, udp, t), t.tcp_closing_s)  # leftovers go soon
    cutoff = np.int64(now_ns) - (timeout * 1e9).astype(np.int64)
    expired = last.astype(np.int64) < cutoff
    res.expiry = Expiry(
        keys[first[expired]].copy(),
        vals["created_ns"][first[expired]].copy(),
        np.maximum(cutoff[expired], 1).astype(np.uint64),
        first[expired],
    )
    live = has_fwd & ~expired
    closing = ~udp & ((flags & np.uint64(CT_F_CLOSED | CT_F_RST)) != 0)
    res.flows = int(np.count_nonzero(live))
    res.udp = int(np.count_nonzero(live & udp))
    res.tcp = res.flows - res.udp
    res.closing = int(np.count_nonzero(live & closing))
    res.embryonic = int(np.count_nonzero(live & ~closing & ((flags & np.uint64(CT_F_EST)) == 0)))
    if track_unanswered:
        # only handshakes a client really started and waits for (it sent its SYN again)
        want = np.uint64(CT_F_SYN | CT_F_SYN_RETX)
        waiting = live & ~udp & ~closing & ((flags & want) == want) & ((flags & np.uint64(CT_F_SYNACK)) == 0)
        for g in np.flatnonzero(waiting):
            i = first[g]
            res.unanswered.append(
                (
                    (int(id1[i]), int(id2[i])),
                    int(vals["backend_id"][i]),
                    (now_ns - int(vals["created_ns"][i])) / 1e9,
                )
            )
    return res


def established_candidates(keys: np.ndarray, vals: np.ndarray, now_ns: int, t: Timeouts) -> Expiry:
    """A slice of the established table: the entries idle past their flow's timeout by their own
    last packet (a forward entry by its flow's class; a reverse entry, which does not know its
    flow's state, by the longest timeout). The data path checks the other entry before removing."""
    if len(vals) == 0:
        return Expiry(keys[:0].copy(), np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64))
    fwd = vals["dir"] == DIR_FORWARD
    udp = vals["proto"] == IPPROTO_UDP
    timeout = np.where(fwd, _timeouts_of(vals["flags"], udp, t), t.longest_s)
    cutoff = np.int64(now_ns) - (timeout * 1e9).astype(np.int64)
    rows = np.flatnonzero(vals["last_seen_ns"].astype(np.int64) < cutoff)
    return Expiry(
        keys[rows].copy(),
        vals["created_ns"][rows].copy(),
        np.maximum(cutoff[rows], 1).astype(np.uint64),
        rows,
    )


def slice_size(entries: int, interval_s: float, pass_s: float, smallest: int, largest: int) -> int:
    """Entries to read per sweep so that a pass over `entries` takes about pass_s."""
    want = int(np.ceil(entries * interval_s / max(pass_s, interval_s)))
    return max(smallest, min(largest, want))
