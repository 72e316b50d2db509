# SPDX-License-Identifier: Apache-2.0
"""The flow view: every live flow of conntrack as compact columns, and any query over it, bounded.

A front end asks for a view (the console's conntrack pane, `lbtui ctl flows`); the engine then
reads the conntrack tables of both families in chunks and hands them to a `FlowTableBuilder`, which
keeps only what a view needs: per flow the forward entry's fields and the reverse entry's counters,
joined by the flow's identity (created_ns and the client tuple, which both entries carry). Addresses
become one u64 code per column whatever the family (an IPv4 address's number, or V6_CODES plus the
index of an IPv6 address in the table's sorted list), so filters and sorts treat both alike. A
million flows come to about 90 MB of columns, never the raw entries. `query` filters and sorts all
of them and returns a bounded view; nothing in this module touches a map.
"""

from __future__ import annotations

import ipaddress
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


ADDRESS_COLUMNS = ("client_ip", "vip", "backend_ip")
V6_CODES = 1 << 32  # address codes from here on name IPv6 addresses (FlowTable.v6_addresses)
_JOIN_COLUMNS = ("client_port", "vip_port")  # with the client address and created_ns: one flow


def _v4_codes(column: np.ndarray) -> np.ndarray:
    """IPv4 addresses (wire-order u32) as their numeric value: codes below V6_CODES."""
    return column.byteswap().astype(np.uint64)


def _v6_numbers(column: np.ndarray) -> np.ndarray:
    """struct lb_addr6 fields as (n, 2) numbers: each address's high and low 64 bits, so that rows
    sort as the addresses do."""
    raw = np.ascontiguousarray(column["w"]).view(">u8").reshape(-1, 2)
    return raw.astype(np.uint64)


class _FamilyParts:
    """One family's chunks: the forward entries' columns and the reverse entries' join fields and
    counters."""

    def __init__(self, family: int):
        self.family = family
        self.fwd: list[dict[str, np.ndarray]] = []
        self.rev: list[dict[str, np.ndarray]] = []

    def address(self, column: np.ndarray) -> np.ndarray:
        return _v4_codes(column) if self.family == 4 else _v6_numbers(column)

    def add(self, vals: np.ndarray) -> None:
        fwd = vals["dir"] == DIR_FORWARD
        f, r = vals[fwd], vals[~fwd]
        cols = {name: f[name].copy() for name in FORWARD_COLUMNS if name not in ADDRESS_COLUMNS}
        cols.update({name: self.address(f[name]) for name in ADDRESS_COLUMNS})
        self.fwd.append(cols)
        rev = {name: r[name].copy() for name in ("created_ns", *_JOIN_COLUMNS, "packets", "bytes")}
        rev["last_seen_ns"] = r["last_seen_ns"].copy()
        rev["client_ip"] = self.address(r["client_ip"])
        self.rev.append(rev)

    def joined(self) -> dict[str, np.ndarray] | None:
        """The forward columns with the reverse entries' counters (packets_out, bytes_out) and the
        later of the two last-seen times; None without a forward entry."""
        if not self.fwd:
            return None
        cols = {name: np.concatenate([c[name] for c in self.fwd]) for name in self.fwd[0]}
        rev = {name: np.concatenate([c[name] for c in self.rev]) for name in self.rev[0]}
        self.fwd, self.rev = [], []
        rev_of = _join(cols["created_ns"], _join_keys(cols), rev["created_ns"], _join_keys(rev))
        has_rev = rev_of >= 0
        pick = np.maximum(rev_of, 0)

        def from_rev(name: str) -> np.ndarray:
            if not len(rev[name]):
                return np.zeros(len(has_rev), np.uint64)
            return np.where(has_rev, rev[name][pick], 0).astype(np.uint64)

        cols["packets_out"], cols["bytes_out"] = from_rev("packets"), from_rev("bytes")
        cols["last_seen_ns"] = np.maximum(cols["last_seen_ns"], from_rev("last_seen_ns"))
        return cols


def _join_keys(cols: dict[str, np.ndarray]) -> list[np.ndarray]:
    client = cols["client_ip"]
    addr = [client] if client.ndim == 1 else [client[:, 0], client[:, 1]]
    return [*addr, *(cols[name] for name in _JOIN_COLUMNS)]


class FlowTableBuilder:
    """Accumulates conntrack chunks of either family (they may be reused buffers: what is needed is
    copied)."""

    def __init__(self) -> None:
        self._parts = {4: _FamilyParts(4), 6: _FamilyParts(6)}

    def add(self, vals: np.ndarray, family: int = 4) -> None:
        self._parts[family].add(vals)

    def build(self, now_ns: int, proxy_of: Mapping[int, str]) -> FlowTable:
        v4, v6 = self._parts[4].joined(), self._parts[6].joined()
        v6_addresses = np.zeros((0, 2), np.uint64)
        if v6 is not None:  # IPv6 addresses become codes from V6_CODES on, in address order
            every = np.concatenate([v6[name] for name in ADDRESS_COLUMNS])
            v6_addresses, inverse = np.unique(every, axis=0, return_inverse=True)
            codes = np.uint64(V6_CODES) + inverse.reshape(len(ADDRESS_COLUMNS), -1).astype(np.uint64)
            for i, name in enumerate(ADDRESS_COLUMNS):
                v6[name] = codes[i]
        parts = [p for p in (v4, v6) if p is not None]
        names = (*FORWARD_COLUMNS, "packets_out", "bytes_out")
        if parts:
            cols = {name: np.concatenate([p[name] for p in parts]) for name in names}
        else:
            cols = {name: np.zeros(0, np.uint64) for name in names}
        n = len(cols["created_ns"])
        last = cols.pop("last_seen_ns")
        flags = cols.pop("flags")
        cols["packets_in"] = cols.pop("packets")
        cols["bytes_in"] = cols.pop("bytes")
        idle = (np.int64(now_ns) - last.astype(np.int64)) / 1e9 if n else np.zeros(0)
        return FlowTable(now_ns, dict(proxy_of), cols, states(flags, cols["proto"]), idle, v6_addresses)


def _join(
    f_created: np.ndarray, f_keys: list[np.ndarray], r_created: np.ndarray, r_keys: list[np.ndarray]
) -> np.ndarray:
    """For each forward entry, the index of its flow's reverse entry (-1: none): the entry with the
    same created_ns and keys."""
    nf = len(f_created)
    out = np.full(nf, -1, dtype=np.int64)
    if nf == 0 or len(r_created) == 0:
        return out
    created = np.concatenate([f_created, r_created])
    keys = [np.concatenate([f, r]) for f, r in zip(f_keys, r_keys, strict=True)]
    side = np.concatenate([np.zeros(nf, np.uint8), np.ones(len(r_created), np.uint8)])
    order = np.lexsort((side, *reversed(keys), created))
    same = created[order][:-1] == created[order][1:]
    for key in keys:
        k = key[order]
        same &= k[:-1] == k[1:]
    s = side[order]
    pair = same & (s[:-1] == 0) & (s[1:] == 1)
    out[order[:-1][pair]] = order[1:][pair] - nf
    return out


def address_text(code: int, v6_addresses: np.ndarray) -> str:
    """The address a flow table's code names."""
    if code < V6_CODES:
        return str(ipaddress.IPv4Address(code))
    hi, lo = v6_addresses[code - V6_CODES]
    return str(ipaddress.IPv6Address((int(hi) << 64) | int(lo)))


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
    v6_addresses: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.uint64))  # by code
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
            if column in ADDRESS_COLUMNS:
                texts = [address_text(int(v), self.v6_addresses) for v in values]
            else:
                texts = [str(be16_to_port(int(v))) for v in values]
            cached = self._texts[column] = (texts, inverse)
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
            host = address_text(int(c[ip][i]), self.v6_addresses)
            return format_endpoint(host, be16_to_port(int(c[port][i])))

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
        order = np.lexsort((-total, port.byteswap(), ip))[:k]  # codes sort as the addresses
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
