# SPDX-License-Identifier: Apache-2.0
"""The flow view: every live flow of conntrack as compact columns, and any query over it, bounded.

A front end asks for a view (the console's conntrack pane, `lbtui ctl flows`); the engine then
reads both conntrack tables in chunks and hands them to a `FlowTableBuilder`, which keeps only what
a view needs: per flow the forward entry's fields and the reverse entry's counters, joined by the
flow's identity (created_ns and the client tuple, which both entries carry). A million flows come
to about 80 MB of columns, never the raw entries. `query` filters and sorts all of them and returns
a bounded view; nothing in this module touches a map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from lbtui import model
from lbtui.addresses import format_endpoint, host_text
from lbtui.dataplane.structs import (
    CT_F_CLOSED,
    CT_F_EST,
    CT_F_RST,
    CT_F_SYNACK,
    DIR_FORWARD,
    IPPROTO_UDP,
    PROTO_NAMES,
    be16_to_port,
    be32_to_ip,
)

STATE_SYN, STATE_EST, STATE_CLOSING, STATE_UDP, STATE_SYN_RECV = range(5)
STATE_NAMES = ("syn_sent", "established", "closing", "udp", "syn_recv")
FORWARD_COLUMNS = (
    "client_ip",
    "client_port",
    "vip",
    "vip_port",
    "backend_ip",
    "backend_port",
    "proto",
    "service_id",
    "created_ns",
    "flags",
    "last_seen_ns",
    "packets",
    "bytes",
)


def _join_key(vals: np.ndarray) -> np.ndarray:
    """(client address:port and VIP port) of each entry; with created_ns it names one flow."""
    return (
        (vals["client_ip"].astype(np.uint64) << np.uint64(32))
        | (vals["client_port"].astype(np.uint64) << np.uint64(16))
        | vals["vip_port"].astype(np.uint64)
    )


class FlowTableBuilder:
    """Accumulates conntrack chunks (they may be reused buffers: what is needed is copied)."""

    def __init__(self) -> None:
        self._fwd: list[dict[str, np.ndarray]] = []
        self._rev: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, vals: np.ndarray) -> None:
        fwd = vals["dir"] == DIR_FORWARD
        f = vals[fwd]
        self._fwd.append({name: f[name].copy() for name in FORWARD_COLUMNS})
        r = vals[~fwd]
        self._rev.append(
            (
                r["created_ns"].copy(),
                _join_key(r),
                r["packets"].copy(),
                r["bytes"].copy(),
                r["last_seen_ns"].copy(),
            )
        )

    def build(self, now_ns: int, proxy_of: Mapping[int, str]) -> FlowTable:
        cols = {
            name: np.concatenate([c[name] for c in self._fwd]) if self._fwd else np.zeros(0, np.uint64)
            for name in FORWARD_COLUMNS
        }
        n = len(cols["created_ns"])
        rev = [
            np.concatenate([r[i] for r in self._rev]) if self._rev else np.zeros(0, np.uint64)
            for i in range(5)
        ]
        rev_of = _join(cols["created_ns"], _join_key_of(cols), rev[0], rev[1])
        has_rev = rev_of >= 0
        pick = np.maximum(rev_of, 0)
        packets_out = np.where(has_rev, rev[2][pick] if len(rev[2]) else 0, 0).astype(np.uint64)
        bytes_out = np.where(has_rev, rev[3][pick] if len(rev[3]) else 0, 0).astype(np.uint64)
        last = cols.pop("last_seen_ns")
        if len(rev[4]):
            last = np.maximum(last, np.where(has_rev, rev[4][pick], 0))
        flags = cols.pop("flags")
        cols["packets_in"] = cols.pop("packets")
        cols["bytes_in"] = cols.pop("bytes")
        cols["packets_out"], cols["bytes_out"] = packets_out, bytes_out
        self._fwd, self._rev = [], []
        idle = (np.int64(now_ns) - last.astype(np.int64)) / 1e9 if n else np.zeros(0)
        return FlowTable(now_ns, dict(proxy_of), cols, states(flags, cols["proto"]), idle)


def _join_key_of(cols: dict[str, np.ndarray]) -> np.ndarray:
    return (
        (cols["client_ip"].astype(np.uint64) << np.uint64(32))
        | (cols["client_port"].astype(np.uint64) << np.uint64(16))
        | cols["vip_port"].astype(np.uint64)
    )


def _join(f_created: np.ndarray, f_key: np.ndarray, r_created: np.ndarray, r_key: np.ndarray) -> np.ndarray:
    """For each forward entry, the index of its flow's reverse entry (-1: none)."""
    nf = len(f_created)
    out = np.full(nf, -1, dtype=np.int64)
    if nf == 0 or len(r_created) == 0:
        return out
    created = np.concatenate([f_created, r_created])
    key = np.concatenate([f_key, r_key])
    side = np.concatenate([np.zeros(nf, np.uint8), np.ones(len(r_created), np.uint8)])
    order = np.lexsort((side, key, created))
    c, k, s = created[order], key[order], side[order]
    pair = (c[:-1] == c[1:]) & (k[:-1] == k[1:]) & (s[:-1] == 0) & (s[1:] == 1)
    out[order[:-1][pair]] = order[1:][pair] - nf
    return out


def states(flags: np.ndarray, proto: np.ndarray) -> np.ndarray:
    udp = proto == IPPROTO_UDP
    closing = ~udp & ((flags & np.uint64(CT_F_CLOSED | CT_F_RST)) != 0)
    est = (flags & np.uint64(CT_F_EST)) != 0
    synack = (flags & np.uint64(CT_F_SYNACK)) != 0
    return np.where(
        udp,
        STATE_UDP,
        np.where(
            closing, STATE_CLOSING, np.where(est, STATE_EST, np.where(synack, STATE_SYN_RECV, STATE_SYN))
        ),
    ).astype(np.uint8)


@dataclass
class FlowTable:
    """Every live flow of one read: columns named after lb.h's fields (`_in` from the forward entry,
    `_out` from the reverse one)."""

    now_ns: int
    proxy_of: dict[int, str]
    columns: dict[str, np.ndarray]
    state: np.ndarray  # STATE_*
    idle_s: np.ndarray
    _texts: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.state)

    def column(self, name: str) -> np.ndarray:
        return self.columns[name]

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
        # `term` is part of the endpoint text, "ip:port" or "[ip]:port" (format_endpoint): it lies
        # within the address as shown, within the port, or spans the colon before the port (the
        # last colon of the term, since a port has none): the end of the address, then the start
        # of the port
        found = self._where(ip_column, lambda t: term in host_text(t))
        if ":" in term:
            head, _, tail = term.rpartition(":")
            return found | (
                self._where(ip_column, lambda t: host_text(t).endswith(head))
                & self._where(port_column, lambda t: t.startswith(tail))
            )
        return found | self._where(port_column, lambda t: term in t)

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
        c = self.columns

        def addr(ip: str, port: str) -> str:
            return format_endpoint(be32_to_ip(int(c[ip][i])), be16_to_port(int(c[port][i])))

        proto = int(c["proto"][i])
        return model.FlowView(
            protocol=PROTO_NAMES.get(proto, str(proto)),
            client=addr("client_ip", "client_port"),
            vip=addr("vip", "vip_port"),
            backend=addr("backend_ip", "backend_port"),
            proxy=self.proxy_of.get(int(c["service_id"][i]), "?"),
            state=STATE_NAMES[int(self.state[i])],
            age_s=(self.now_ns - int(c["created_ns"][i])) / 1e9,
            idle_s=float(self.idle_s[i]),
            packets_in=int(c["packets_in"][i]),
            bytes_in=int(c["bytes_in"][i]),
            packets_out=int(c["packets_out"][i]),
            bytes_out=int(c["bytes_out"][i]),
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
