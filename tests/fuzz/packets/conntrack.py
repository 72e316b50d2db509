# SPDX-License-Identifier: Apache-2.0
"""The oracle's mirror of conntrack: which entries lb.c keeps in which table, and the rules that add,
change, move and remove them (bpf/lb.h, bpf/lb_ct.h).

Two tables: ESTABLISHED (flows whose client completed the handshake, or whose backend answered;
never evicts) and TRANSIENT (embryonic and closed flows; the harness evicts from it as an LRU would).
Every flow has its two entries in the same table: the forward entry (client -> VIP, looked up by XDP)
and the reverse entry (backend -> client, looked up by TC). The mirror predicts every field of every
entry that does not depend on the clock (flags, sequence tracking and counters included), and the
per-backend counters the moves drive, and is compared with the real tables entry by entry.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.fuzz.packets.parse import View
from tests.fuzz.packets.tcp import CT_F_CLOSED, CT_F_EST, CT_F_SYN
from tests.fuzz.packets.topology import Endpoint
from tests.fuzz.packets.wire import TCP, hexdump
from tests.fuzz.packets.wire import endpoint_text as wire_endpoint_text

DIR_FORWARD, DIR_REVERSE = 0, 1
ESTABLISHED, TRANSIENT = "established", "transient"
TABLES = (ESTABLISHED, TRANSIENT)

CtKey = tuple[bytes, bytes, int, int, int]  # saddr, daddr, sport, dport, proto (ports in host order)


@dataclass
class CtEntry:
    """The mirror's copy of one lb_ct_entry (the fields the oracle can predict)."""

    client_ip: bytes
    vip: bytes
    backend_ip: bytes
    client_port: int
    vip_port: int
    backend_port: int
    proto: int
    dir: int
    backend_id: int
    service_id: int
    flags: int = 0
    packets: int = 0
    octets: int = 0  # lb_ct_entry.bytes
    seq_first: int = 0
    seq_next: int = 0
    window: int = 0
    wscale: int = 0
    win_shift: int = 0
    # which flow wrote the entry: lb.c's created_ns, unique per flow and copied into its other
    # entry (also when one is re-created); lb.c compares it before removing or moving an entry
    flow: int = 0
    last_frame: bytes = b""  # the last input frame that changed this entry (for reports)

    def reverse_key(self) -> CtKey:
        return (self.backend_ip, self.client_ip, self.backend_port, self.client_port, self.proto)

    def forward_key(self) -> CtKey:
        return (self.client_ip, self.vip, self.client_port, self.vip_port, self.proto)

    def backend(self) -> Endpoint:
        return (self.backend_ip, self.backend_port)

    def copy(self, **changes: Any) -> CtEntry:
        values = dict(self.__dict__)
        values.update(changes)
        return CtEntry(**values)

    def mirrored(self, direction: int) -> CtEntry:
        """lb_ct.h ct_mirror: the other entry of the flow, made from this one."""
        return self.copy(
            dir=direction,
            packets=0,
            octets=0,
            seq_first=0,
            seq_next=0,
            window=0,
            wscale=0,
            win_shift=0,
            flags=self.flags & CT_F_SYN,
        )


@dataclass(frozen=True)
class RealEntry:
    """One entry of a real table, in the mirror's terms (harness.Dataplane reads them)."""

    table: str
    key: CtKey
    dir: int
    client: Endpoint
    vip: Endpoint
    backend: Endpoint
    backend_id: int
    service_id: int
    flags: int
    packets: int
    octets: int
    seq: tuple[int, int, int, int, int]  # seq_first, seq_next, window, wscale, win_shift


class ConntrackMirror:
    """Both conntrack tables as lb.c must have left them, and the backend counters the flows moved."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[CtKey, CtEntry]] = {ESTABLISHED: {}, TRANSIENT: {}}
        self.backend_counts: Counter[tuple[int, str]] = Counter()  # (backend id, counter) -> delta
        self._flows = itertools.count(1)

    def get(self, key: CtKey) -> CtEntry | None:
        return self.lookup(key)[0]

    def lookup(self, key: CtKey) -> tuple[CtEntry | None, str]:
        """lb_ct.h ct_lookup: the established table first."""
        entry = self.tables[ESTABLISHED].get(key)
        if entry is not None:
            return entry, ESTABLISHED
        return self.tables[TRANSIENT].get(key), TRANSIENT

    def clear(self) -> None:
        for table in self.tables.values():
            table.clear()
        self.backend_counts.clear()

    def count(self, backend_id: int, name: str, n: int = 1) -> None:
        self.backend_counts[(backend_id, name)] += n

    def create(self, entry: CtEntry) -> CtEntry | None:
        """lb_pick.h new_flow: the forward entry into the transient table, and the reverse entry over
        whatever holds its key there. Returns the reverse entry of another flow that was overwritten."""
        entry.flow = next(self._flows)
        transient = self.tables[TRANSIENT]
        transient[entry.forward_key()] = entry
        rkey = entry.reverse_key()
        old = transient.get(rkey)
        transient[rkey] = entry.mirrored(DIR_REVERSE)
        if old is not None and old.dir == DIR_REVERSE and old.forward_key() != entry.forward_key():
            return old
        return None

    def restore_reverse(self, fwd: CtEntry, table: str) -> bool:
        """lbtui_xdp: a packet of a tracked flow re-creates its reverse entry when that key is free."""
        rkey = fwd.reverse_key()
        if rkey in self.tables[table]:
            return False
        self.tables[table][rkey] = fwd.mirrored(DIR_REVERSE)
        return True

    def rebuild_forward(self, rev: CtEntry) -> CtEntry:
        """lbtui_tc: a reply of a transient flow whose forward entry is gone re-creates it."""
        fwd = rev.mirrored(DIR_FORWARD)
        self.tables[TRANSIENT][rev.forward_key()] = fwd
        return fwd

    def mark_closed(self, fwd: CtEntry) -> int | None:
        """lb_ct.h ct_mark_closed: the flags before, or None if the flow was closed already."""
        old = fwd.flags
        if old & CT_F_CLOSED:
            return None
        fwd.flags |= CT_F_CLOSED
        if old & CT_F_EST:
            self.count(fwd.backend_id, "ended")
        return old

    def promote(self, fwd: CtEntry) -> int:
        """lb_ct.h ct_promote: 1 moved, 0 nothing to do."""
        if fwd.flags & (CT_F_EST | CT_F_CLOSED):
            return 0
        fwd.flags |= CT_F_EST
        transient, established = self.tables[TRANSIENT], self.tables[ESTABLISHED]
        fkey, rkey = fwd.forward_key(), fwd.reverse_key()
        rev = transient.get(rkey)
        own = rev is not None and rev.flow == fwd.flow and rev.dir == DIR_REVERSE
        established[fkey] = fwd
        established[rkey] = rev if own and rev is not None else fwd.mirrored(DIR_REVERSE)
        del transient[fkey]
        if own:
            del transient[rkey]
        self.count(fwd.backend_id, "established")
        return 1

    def demote(self, fwd: CtEntry) -> None:
        """lb_ct.h ct_demote: a flow that just closed goes back to the transient table."""
        transient, established = self.tables[TRANSIENT], self.tables[ESTABLISHED]
        fkey, rkey = fwd.forward_key(), fwd.reverse_key()
        rev = established.get(rkey)
        own = rev is not None and rev.flow == fwd.flow and rev.dir == DIR_REVERSE
        moved = rev if own and rev is not None else fwd.mirrored(DIR_REVERSE)
        transient[fkey] = fwd
        other = transient.get(rkey)
        if other is None or other.flow == fwd.flow:
            transient[rkey] = moved
        del established[fkey]
        if own:
            del established[rkey]

    def end(self, fwd: CtEntry, table: str) -> None:
        """lb_ct.h ct_end: a SYN takes the tuple over; the old flow's entries go (its reverse entry
        only if still its own: after an eviction another flow may own that key)."""
        self.mark_closed(fwd)
        removed = self.reverse_removed_with(fwd, table)
        if removed is not None:
            del self.tables[table][removed]
        del self.tables[table][fwd.forward_key()]

    def reverse_removed_with(self, fwd: CtEntry, table: str) -> CtKey | None:
        rkey = fwd.reverse_key()
        rev = self.tables[table].get(rkey)
        return rkey if rev is not None and rev.flow == fwd.flow else None

    def evict(self, key: CtKey) -> bool:
        """What an LRU eviction does to one transient entry: it is gone. False if there was none."""
        return self.tables[TRANSIENT].pop(key, None) is not None

    def reverse_taken(
        self, view: View, endpoint: Endpoint, ignoring: tuple[str, CtKey] | None = None
    ) -> bool:
        """lb_ct.h reverse_owned_by_other: the backend's reverse entry for this client port belongs
        to another live flow. `ignoring`: an entry the data path removes before it picks."""
        rkey = (endpoint[0], view.saddr, endpoint[1], view.sport, view.proto)
        old, where = self.lookup(rkey)
        if ignoring == (where, rkey):
            old = self.tables[TRANSIENT].get(rkey) if where == ESTABLISHED else None
        if old is None or old.dir != DIR_REVERSE:
            return False
        if old.forward_key() == (view.saddr, view.daddr, view.sport, view.dport, view.proto):
            return False  # our own flow's (left from an earlier use of this tuple)
        owner = self.get(old.forward_key())
        return owner is not None and owner.backend() == old.backend()

    def problems(self, real_entries: Sequence[RealEntry]) -> list[str]:
        """Compare the real tables with the mirror; [] when they agree."""
        problems = []
        for table in TABLES:
            real = {e.key: e for e in real_entries if e.table == table}
            mine = self.tables[table]
            for k in sorted(set(real) | set(mine)):
                want, got = mine.get(k), real.get(k)
                if want is None:
                    problems.append(f"{table} table has an unexpected entry {key_text(k)}: {got}")
                    continue
                if got is None:
                    problems.append(
                        f"{table} table lacks entry {key_text(k)}; last frame:\n{hexdump(want.last_frame)}"
                    )
                    continue
                expected = _fields(want)
                actual = (
                    got.dir,
                    endpoint_text(got.client),
                    endpoint_text(got.vip),
                    endpoint_text(got.backend),
                    got.backend_id,
                    got.service_id,
                    got.flags,
                    got.packets,
                    got.octets,
                    got.seq,
                )
                if expected != actual:
                    problems.append(
                        f"{table} entry {key_text(k)}: expected (dir, client, vip, backend, backend_id, "
                        f"service_id, flags, packets, bytes, seq) = {expected}, map has {actual}; last "
                        f"frame:\n{hexdump(want.last_frame)}"
                    )
        return problems


def _fields(e: CtEntry) -> tuple[Any, ...]:
    return (
        e.dir,
        endpoint_text((e.client_ip, e.client_port)),
        endpoint_text((e.vip, e.vip_port)),
        endpoint_text(e.backend()),
        e.backend_id,
        e.service_id,
        e.flags,
        e.packets,
        e.octets,
        (e.seq_first, e.seq_next, e.window, e.wscale, e.win_shift),
    )


def proto_text(proto: int) -> str:
    return "tcp" if proto == TCP else "udp"


def endpoint_text(endpoint: Endpoint) -> str:
    return wire_endpoint_text(*endpoint)


def key_text(k: CtKey) -> str:
    return f"{endpoint_text((k[0], k[2]))} > {endpoint_text((k[1], k[3]))}/{proto_text(k[4])}"


def flow_text(e: CtEntry) -> str:
    return (
        f"{endpoint_text((e.client_ip, e.client_port))} -> {endpoint_text((e.vip, e.vip_port))}"
        f"/{proto_text(e.proto)} (backend {endpoint_text(e.backend())})"
    )
