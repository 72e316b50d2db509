# SPDX-License-Identifier: Apache-2.0
"""The oracle's mirror of lb_conntrack: which entries lb.c keeps, and the rules that add, change and
remove them (bpf/lb.h, bpf/lb.c).

Both directions of a flow live in one map: the forward entry (client -> VIP, looked up by XDP) and
the reverse entry (backend -> client, looked up by TC). The mirror predicts every entry's fields that
do not depend on the clock (flags and counters included), and is compared with the real map entry
by entry.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.fuzz.packets.parse import View
from tests.fuzz.packets.topology import Endpoint
from tests.fuzz.packets.wire import TCP, hexdump

CT_F_SYNACK, CT_F_FIN_IN, CT_F_FIN_OUT, CT_F_RST, CT_F_CLOSED, CT_F_FAILED = 1, 2, 4, 8, 0x10, 0x20
DIR_FORWARD, DIR_REVERSE = 0, 1

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
    # which flow wrote the entry: lb.c's created_ns, unique per flow and copied into its reverse
    # entry (also when one is restored); lb.c compares it before removing a reverse entry
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


@dataclass(frozen=True)
class RealEntry:
    """One entry of the real map, in the mirror's terms (harness.Dataplane reads them)."""

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


class ConntrackMirror:
    """lb_conntrack as lb.c must have left it."""

    def __init__(self) -> None:
        self.entries: dict[CtKey, CtEntry] = {}
        self._flows = itertools.count(1)

    def get(self, key: CtKey) -> CtEntry | None:
        return self.entries.get(key)

    def clear(self) -> None:
        self.entries.clear()

    def create(self, entry: CtEntry) -> CtEntry | None:
        """lb.c new_flow: insert the forward entry and write the reverse one over whatever holds its
        key. Returns the reverse entry of another flow that was overwritten, if any."""
        entry.flow = next(self._flows)
        self.entries[entry.forward_key()] = entry
        rkey = entry.reverse_key()
        old = self.entries.get(rkey)
        self.entries[rkey] = entry.copy(dir=DIR_REVERSE, packets=0, octets=0)
        if old is not None and old.dir == DIR_REVERSE and old.forward_key() != entry.forward_key():
            return old
        return None

    def restore_reverse(self, fwd: CtEntry) -> bool:
        """lb.c: a packet of a tracked flow re-creates its reverse entry when that key is free."""
        rkey = fwd.reverse_key()
        if rkey in self.entries:
            return False
        self.entries[rkey] = fwd.copy(dir=DIR_REVERSE, packets=0, octets=0, flags=0)
        return True

    def reverse_removed_with(self, fwd: CtEntry) -> CtKey | None:
        """The reverse entry lb.c removes together with a closed flow's forward entry (None: none).

        Only the flow's own: after an eviction another flow of the same client port may have taken
        the key (same backend, another VIP port), and that flow is still live.
        """
        rkey = fwd.reverse_key()
        rev = self.entries.get(rkey)
        return rkey if rev is not None and rev.flow == fwd.flow else None

    def end_closed(self, fwd: CtEntry) -> None:
        """lb.c: a SYN reusing a closed flow's tuple removes the old flow's entries."""
        removed = self.reverse_removed_with(fwd)
        if removed is not None:
            del self.entries[removed]
        del self.entries[fwd.forward_key()]

    def evict(self, key: CtKey) -> bool:
        """What an LRU eviction does to one entry: it is gone. False if there was none."""
        return self.entries.pop(key, None) is not None

    def reverse_taken(self, view: View, endpoint: Endpoint, ignoring: CtKey | None = None) -> bool:
        """lb.c reverse_owned_by_other: the backend's reverse entry for this client port belongs to
        another live flow (so giving the new flow this backend would clash). `ignoring`: a key the
        data path removes before it picks."""
        rkey = (endpoint[0], view.saddr, endpoint[1], view.sport, view.proto)
        old = None if rkey == ignoring else self.entries.get(rkey)
        if old is None or old.dir != DIR_REVERSE:
            return False
        if old.forward_key() == (view.saddr, view.daddr, view.sport, view.dport, view.proto):
            return False  # our own flow's (left from an earlier use of this tuple)
        owner = self.entries.get(old.forward_key())
        return owner is not None and owner.backend() == old.backend()

    def problems(self, real_entries: Sequence[RealEntry]) -> list[str]:
        """Compare the real map with the mirror; [] when they agree."""
        real = {e.key: e for e in real_entries}
        problems = []
        for k in sorted(set(real) | set(self.entries)):
            want, got = self.entries.get(k), real.get(k)
            if want is None:
                problems.append(f"conntrack has an unexpected entry {key_text(k)}: {got}")
                continue
            if got is None:
                problems.append(
                    f"conntrack lacks entry {key_text(k)}; last frame:\n{hexdump(want.last_frame)}"
                )
                continue
            expected = (
                want.dir,
                endpoint_text((want.client_ip, want.client_port)),
                endpoint_text((want.vip, want.vip_port)),
                endpoint_text(want.backend()),
                want.backend_id,
                want.service_id,
                want.flags,
                want.packets,
                want.octets,
            )
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
            )
            if expected != actual:
                problems.append(
                    f"conntrack entry {key_text(k)}: expected (dir, client, vip, backend, backend_id, "
                    f"service_id, flags, packets, bytes) = {expected}, map has {actual}; last frame:\n"
                    f"{hexdump(want.last_frame)}"
                )
        return problems


def track_tcp(fwd: CtEntry, tcp_flags: int, from_backend: bool) -> None:
    """lb.c track_tcp(): the flag bits of the forward entry."""
    add = 0
    if tcp_flags & 0x04:
        add |= CT_F_RST
    if tcp_flags & 0x01:
        add |= CT_F_FIN_OUT if from_backend else CT_F_FIN_IN
    if from_backend and tcp_flags & 0x12 == 0x12:
        add |= CT_F_SYNACK
    if not add:
        return
    old = fwd.flags
    now = old | add
    fwd.flags = now
    if from_backend and add & CT_F_RST and not old & CT_F_SYNACK and not old & CT_F_FAILED:
        fwd.flags |= CT_F_FAILED
    closed = now & CT_F_RST or now & (CT_F_FIN_IN | CT_F_FIN_OUT) == (CT_F_FIN_IN | CT_F_FIN_OUT)
    if closed and not old & CT_F_CLOSED:
        fwd.flags |= CT_F_CLOSED


def proto_text(proto: int) -> str:
    return "tcp" if proto == TCP else "udp"


def endpoint_text(endpoint: Endpoint) -> str:
    return f"{socket.inet_ntoa(endpoint[0])}:{endpoint[1]}"


def key_text(k: CtKey) -> str:
    return f"{endpoint_text((k[0], k[2]))} > {endpoint_text((k[1], k[3]))}/{proto_text(k[4])}"


def flow_text(e: CtEntry) -> str:
    return (
        f"{endpoint_text((e.client_ip, e.client_port))} -> {endpoint_text((e.vip, e.vip_port))}"
        f"/{proto_text(e.proto)} (backend {endpoint_text(e.backend())})"
    )
