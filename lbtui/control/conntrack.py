# SPDX-License-Identifier: Apache-2.0
"""The conntrack sweep (which flows expired, who is active) and the bounded flow view of any query.

The engine reads the whole conntrack map in one batch into numpy record arrays and hands them here;
nothing in this module touches a map. The work is vectorised so that a million entries take a
fraction of a second: entries are grouped by flow (the forward entry and its reverse entry carry the
same client and VIP fields), a flow's idle time runs from the later of its entries' last packets,
and expiry follows the timeouts of docs/datapath.md#conntrack. While front ends ask for flow queries, the live
flows are kept until the next sweep, so a console can filter and sort all of them and still receive
only a bounded view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from lbtui import model
from lbtui.dataplane.port import FlowEntry
from lbtui.dataplane.records import entry_from_record
from lbtui.dataplane.structs import (
    CT_F_CLOSED,
    CT_F_RST,
    CT_F_SYNACK,
    DIR_FORWARD,
    IPPROTO_UDP,
    PROTO_NAMES,
    be16_to_port,
    be32_to_ip,
)

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
    flows: FlowTable | None = None  # every live flow, for queries until the next sweep (keep_flows)
    top: list[model.FlowView] = field(default_factory=list)  # the default query's view
    matched: int = 0
    tcp: int = 0
    udp: int = 0
    closing: int = 0
    entries: int = 0

    @property
    def expired_count(self) -> int:
        return 0 if self.expired_keys is None else len(self.expired_keys)


def sweep(
    keys: np.ndarray,
    vals: np.ndarray,
    now_ns: int,
    timeouts: Timeouts,
    top_n: int,
    proxy_of: Mapping[int, str],
    track_unanswered: bool = True,
    keep_flows: bool = False,
) -> SweepResult:
    """keep_flows: also return every live flow (res.flows) for queries until the next sweep."""
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

    state = np.where(
        udp, STATE_UDP, np.where(closing, STATE_CLOSING, np.where(syn_sent, STATE_SYN, STATE_EST))
    )
    flows = FlowTable(
        now_ns=now_ns,
        proxy_of=dict(proxy_of),
        entries=vals,
        fwd=first[live],
        rev=rev[live],
        state=state[live].astype(np.uint8),
        idle_s=idle_s[live],
    )
    res.top, res.matched = query(flows, model.FlowQuery(), top_n)
    if keep_flows:
        # the reader reuses its buffers: keep a copy (one sequential copy; columns are gathered
        # from it only when a query needs them). Without a front end asking, this is skipped.
        flows.entries = vals.copy()
        res.flows = flows
    return res


# ---- the flow view: any query over every live flow, bounded ----------------------------------------

STATE_SYN, STATE_EST, STATE_CLOSING, STATE_UDP = range(4)
STATE_NAMES = ("syn_sent", "established", "closing", "udp")


@dataclass
class FlowTable:
    """Every live flow of one sweep: indexes into a copy of the conntrack entries it read.

    Columns (lb.h field names; `_in` from the forward entry, `_out` from the reverse one) are
    gathered on first use and kept: a sweep gathers only what its default view needs.
    """

    now_ns: int
    proxy_of: dict[int, str]
    entries: np.ndarray  # CtEntry records
    fwd: np.ndarray  # per flow: index of its forward entry
    rev: np.ndarray  # per flow: index of its reverse entry, or -1
    state: np.ndarray  # STATE_*
    idle_s: np.ndarray
    _columns: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _texts: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.fwd)

    def column(self, name: str) -> np.ndarray:
        col = self._columns.get(name)
        if col is None:
            if name in ("packets_out", "bytes_out"):
                values = self.entries[name.removesuffix("_out")][np.maximum(self.rev, 0)]
                col = np.where(self.rev >= 0, values, 0).astype(np.uint64)
            else:
                col = self.entries[name.removesuffix("_in")][self.fwd]
            self._columns[name] = col
        return col

    def _text_of(self, column: str) -> tuple[list[str], np.ndarray]:
        """The distinct values of an address or port column as text, and each row's index into them.

        Filters test these few strings instead of formatting every row: a million flows come from
        far fewer addresses, and there are at most 65,536 ports.
        """
        cached = self._texts.get(column)
        if cached is None:
            values, inverse = np.unique(self.column(column), return_inverse=True)
            fmt = be32_to_ip if column.endswith("ip") or column == "vip" else be16_to_port
            cached = self._texts[column] = ([str(fmt(int(v))) for v in values], inverse)
        return cached

    def _where(self, column: str, test: Callable[[str], bool]) -> np.ndarray:
        texts, inverse = self._text_of(column)
        ok = np.fromiter((test(t) for t in texts), dtype=bool, count=len(texts))
        return ok[inverse]

    def _address_matches(self, ip_column: str, port_column: str, term: str) -> np.ndarray:
        # "ip:port" has exactly one colon: a term with a colon must span it (the end of the
        # address, then the start of the port); one without lies within the address or the port
        if ":" in term:
            head, _, tail = term.partition(":")
            if ":" in tail:
                return np.zeros(len(self), dtype=bool)
            return self._where(ip_column, lambda t: t.endswith(head)) & self._where(
                port_column, lambda t: t.startswith(tail)
            )
        return self._where(ip_column, lambda t: term in t) | self._where(port_column, lambda t: term in t)

    def matches(self, term: str) -> np.ndarray:
        """Rows whose client, VIP or backend address, proxy, state or protocol contains `term`."""
        m = self._address_matches("client_ip", "client_port", term)
        m |= self._address_matches("vip", "vip_port", term)
        m |= self._address_matches("backend_ip", "backend_port", term)
        for code, name in enumerate(STATE_NAMES):
            if term in name:
                m |= self.state == code
        for proto, name in PROTO_NAMES.items():
            if term in name:
                m |= self.column("proto") == proto
        for sid, name in self.proxy_of.items():
            if term in name.lower():
                m |= self.column("service_id") == sid
        return m

    def view(self, i: int) -> model.FlowView:
        f = self.entries[self.fwd[i]]
        r = self.entries[self.rev[i]] if self.rev[i] >= 0 else None

        def addr(ip: str, port: str) -> str:
            return f"{be32_to_ip(int(f[ip]))}:{be16_to_port(int(f[port]))}"

        proto = int(f["proto"])
        return model.FlowView(
            protocol=PROTO_NAMES.get(proto, str(proto)),
            client=addr("client_ip", "client_port"),
            vip=addr("vip", "vip_port"),
            backend=addr("backend_ip", "backend_port"),
            proxy=self.proxy_of.get(int(f["service_id"]), "?"),
            state=STATE_NAMES[int(self.state[i])],
            age_s=(self.now_ns - int(f["created_ns"])) / 1e9,
            idle_s=float(self.idle_s[i]),
            packets_in=int(f["packets"]),
            bytes_in=int(f["bytes"]),
            packets_out=int(r["packets"]) if r is not None else 0,
            bytes_out=int(r["bytes"]) if r is not None else 0,
        )


def query(table: FlowTable, q: model.FlowQuery, top_n: int) -> tuple[list[model.FlowView], int]:
    """The first `top_n` flows matching `q` in its order, and how many match in all."""
    mask = np.ones(len(table), dtype=bool)
    for term in q.terms():
        mask &= table.matches(term)
    rows = np.flatnonzero(mask)
    matched = len(rows)
    if matched == 0 or top_n <= 0:
        return [], matched
    k = min(top_n, matched)
    total = (table.column("bytes_in")[rows] + table.column("bytes_out")[rows]).astype(np.int64)
    if q.sort == "backend":  # by address (numerically), then the biggest flows first
        port, ip = table.column("backend_port")[rows], table.column("backend_ip")[rows]
        order = np.lexsort((-total, port.byteswap(), ip.byteswap()))[:k]
    else:
        if q.sort == "age":
            key = -table.column("created_ns")[rows].astype(np.int64)  # oldest first
        elif q.sort == "idle":
            key = table.idle_s[rows]
        else:
            key = total
        part = np.argpartition(-key, k - 1)[:k]
        order = part[np.argsort(-key[part], kind="stable")]
    return [table.view(int(i)) for i in rows[order]], matched
