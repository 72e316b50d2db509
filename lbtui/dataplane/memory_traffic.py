# SPDX-License-Identifier: Apache-2.0
"""Traffic through a MemoryDataplane: what lb.c does to its maps when packets arrive.

A test opens flows (`connect`: the client's SYN or first datagram, a transient flow), answers them
(`answer`: the backend's SYN-ACK and the client's handshake ACK, or the first UDP reply: the flow
is established), refuses them, moves bytes and closes them; each step updates both conntrack
tables, counters, histograms and the event ring as the programs would (bpf/lb_ct.h). Counters and
histograms can also be advanced directly, and many established flows added at once.
"""

from __future__ import annotations

import random
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lbtui.dataplane import structs
from lbtui.dataplane.memory_state import CtTable, MapState
from lbtui.dataplane.port import RawFlowEvent, ServiceEntry
from lbtui.dataplane.records import CT_ENTRY_DTYPE, CT_KEY_DTYPE

EMPTY = structs.EMPTY_SLOT


@dataclass(frozen=True)
class MemoryFlow:
    """A flow the memory data path is tracking (its forward direction)."""

    client: tuple[str, int]
    vip: tuple[str, int]
    protocol: str
    backend: tuple[str, int]
    backend_id: int
    service_id: int

    @property
    def backend_address(self) -> str:
        return f"{self.backend[0]}:{self.backend[1]}"


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _key(saddr: str, daddr: str, sport: int, dport: int, protocol: str) -> np.ndarray:
    k = np.zeros(1, dtype=CT_KEY_DTYPE)
    k["saddr"], k["daddr"] = structs.ip_to_be32(saddr), structs.ip_to_be32(daddr)
    k["sport"], k["dport"] = structs.port_to_be16(sport), structs.port_to_be16(dport)
    k["proto"] = structs.PROTO_NUMBERS[protocol]
    return k


def _in_cidr(ip: str, cidr: str) -> bool:
    net, _, bits = cidr.partition("/")
    shift = 32 - int(bits)
    as_int = int.from_bytes(bytes(int(x) for x in ip.split(".")), "big")
    net_int = int.from_bytes(bytes(int(x) for x in net.split(".")), "big")
    return as_int >> shift == net_int >> shift if shift < 32 else True


class Traffic:
    """Mixed into MemoryDataplane: `state` holds the maps, `lock` guards them."""

    state: MapState
    lock: threading.RLock

    def __init__(self, state: MapState, clock_ns: Callable[[], int], seed: int) -> None:
        self.state = state
        self.clock_ns = clock_ns
        self._rng = random.Random(seed)

    def emit(self, event: RawFlowEvent) -> None:
        raise NotImplementedError

    # ---- flows ----------------------------------------------------------------------------------

    def connect(self, client: str, vip: str, protocol: str = "tcp", size: int = 60) -> MemoryFlow | None:
        """A new flow from client "ip:port" to vip "ip:port"; None if the data path dropped it."""
        (cip, cport), (vip_ip, vport) = _endpoint(client), _endpoint(vip)
        with self.lock:
            svc = self.state.services.get((vip_ip, vport, protocol))
            if svc is None:
                return None  # not a VIP:port of ours: the packet passes
            backend_id = self._pick(svc, cip, cport)
            backend = self.state.backends.get(backend_id) if backend_id != EMPTY else None
            if backend is None or not backend.active:
                self.state.service_drops(svc.service_id)["no_backend"] += 1
                return None
            now = self.clock_ns()
            fwd = np.zeros(1, dtype=CT_ENTRY_DTYPE)
            fwd["client_ip"], fwd["vip"] = structs.ip_to_be32(cip), structs.ip_to_be32(vip_ip)
            fwd["backend_ip"] = structs.ip_to_be32(backend.ip)
            fwd["client_port"], fwd["vip_port"] = structs.port_to_be16(cport), structs.port_to_be16(vport)
            fwd["backend_port"] = structs.port_to_be16(backend.port)
            fwd["proto"], fwd["dir"] = structs.PROTO_NUMBERS[protocol], structs.DIR_FORWARD
            fwd["backend_id"], fwd["service_id"] = backend_id, svc.service_id
            fwd["created_ns"] = fwd["last_seen_ns"] = now
            fwd["packets"], fwd["bytes"] = 1, size
            rev = fwd.copy()
            rev["dir"], rev["packets"], rev["bytes"] = structs.DIR_REVERSE, 0, 0
            keys = np.concatenate(
                [
                    _key(cip, vip_ip, cport, vport, protocol),
                    _key(backend.ip, cip, backend.port, cport, protocol),
                ]
            )
            if protocol == "tcp":
                fwd["flags"] = structs.CT_F_SYN  # a client's SYN opened it
                rev["flags"] = structs.CT_F_SYN
            self.state.transient.insert(keys, np.concatenate([fwd, rev]))
            for stats in (self.state.backend_stat(backend_id), self.state.service_stat(svc.service_id)):
                stats["new_flows"] += 1
                stats["packets_in"] += 1
                stats["bytes_in"] += size
            if svc.limits.src_rate:
                self.state.rate_buckets[(svc.service_id, cip)] = now
            flow = MemoryFlow(
                (cip, cport),
                (vip_ip, vport),
                protocol,
                (backend.ip, backend.port),
                backend_id,
                svc.service_id,
            )
            if svc.events_new:
                self._event(flow, structs.EV_NEW, None)
            return flow

    def answer(self, flow: MemoryFlow, complete: bool = True) -> None:
        """The backend answers: for TCP its SYN-ACK and (complete=True) the client's ACK that
        completes the handshake; for UDP its first reply. The flow is then established: a handshake
        (TCP, timed from the first packet to the SYN-ACK) and a live flow for its backend."""
        with self.lock:
            fwd = self._forward(flow)
            flags = int(fwd["flags"][0])
            now = self.clock_ns()
            if flow.protocol == "tcp" and not flags & structs.CT_F_SYNACK:
                fwd["flags"] |= structs.CT_F_SYNACK
                fwd["synack_ns"] = now
                self._store(flow, fwd)
            if (flow.protocol == "tcp" and not complete) or flags & (structs.CT_F_EST | structs.CT_F_CLOSED):
                return
            fwd = self._forward(flow)
            if flow.protocol == "tcp" and flags & structs.CT_F_SYN:
                self.state.backend_stat(flow.backend_id)["handshakes"] += 1
                synack = int(fwd["synack_ns"][0])
                self.state.histograms(flow.backend_id).add(
                    (synack - int(fwd["created_ns"][0])) // 1000, duration=False
                )
            self._promote(flow)

    def retransmit_syn(self, flow: MemoryFlow) -> None:
        """The client sends its SYN again: it waits for an answer (unanswered SYNs of such flows are
        connection failures for the circuit breaker)."""
        with self.lock:
            fwd = self._forward(flow)
            if not int(fwd["flags"][0]) & structs.CT_F_EST:
                fwd["flags"] |= structs.CT_F_SYN_RETX
                self._store(flow, fwd)

    def refuse(self, flow: MemoryFlow) -> None:
        """A reset from the backend before any SYN-ACK: a connection failure (and a close)."""
        with self.lock:
            fwd = self._forward(flow)
            flags = int(fwd["flags"][0])
            if flags & structs.CT_F_SYN and not flags & (structs.CT_F_SYNACK | structs.CT_F_FAILED):
                fwd["flags"] |= structs.CT_F_FAILED
                self.state.backend_stat(flow.backend_id)["conn_failures"] += 1
            self._store(flow, fwd)
            self._close(flow, structs.CT_F_RST)

    def finish(self, flow: MemoryFlow, reset: bool = False) -> None:
        """FIN from both sides (or a RST): the flow is closed and counted once."""
        if flow.protocol != "tcp":
            raise ValueError("only TCP flows close; UDP flows expire")
        with self.lock:
            self._close(flow, structs.CT_F_RST if reset else structs.CT_F_FIN_IN | structs.CT_F_FIN_OUT)

    def transfer(
        self,
        flow: MemoryFlow,
        bytes_in: int = 0,
        bytes_out: int = 0,
        packets_in: int = 1,
        packets_out: int = 1,
    ) -> None:
        """Packets both ways: conntrack, backend and service counters; both entries seen now."""
        with self.lock:
            now = self.clock_ns()
            for direction, packets, size in ((0, packets_in, bytes_in), (1, packets_out, bytes_out)):
                found = self._row(flow, direction)
                if found is None:
                    continue
                table, row = found
                entry = table.values[row]
                entry["packets"] += packets
                entry["bytes"] += size
                entry["last_seen_ns"] = now
            suffix = ("in", "out")
            for stats in (self.state.backend_stat(flow.backend_id), self.state.service_stat(flow.service_id)):
                for (packets, size), side in zip(
                    ((packets_in, bytes_in), (packets_out, bytes_out)), suffix, strict=True
                ):
                    stats[f"packets_{side}"] += packets
                    stats[f"bytes_{side}"] += size

    def add_established(
        self, count: int, vip: str, backend_ids: Sequence[int], protocol: str = "tcp", age_s: float = 10.0
    ) -> None:
        """`count` established flows from 10.100.0.0/16 at once (both entries each), spread over the
        backends in turn; of the counters only `established` moves (each is a live flow)."""
        vip_ip, vport = _endpoint(vip)
        with self.lock:
            svc = self.state.services[(vip_ip, vport, protocol)]
            now = self.clock_ns()
            idx = np.arange(count, dtype=np.uint64)
            client_ip = (np.uint64(0x0A640000) + idx // np.uint64(60000)).astype(np.uint32).byteswap()
            client_port = (np.uint16(1024) + (idx % np.uint64(60000)).astype(np.uint16)).byteswap()
            chosen = np.asarray(backend_ids, dtype=np.uint32)[
                (idx % np.uint64(len(backend_ids))).astype(np.int64)
            ]
            bip = np.array(
                [structs.ip_to_be32(self.state.backends[int(b)].ip) for b in chosen], dtype=np.uint32
            )
            bport = np.array(
                [structs.port_to_be16(self.state.backends[int(b)].port) for b in chosen], np.uint16
            )
            vals = np.zeros(count, dtype=CT_ENTRY_DTYPE)
            vals["client_ip"], vals["vip"], vals["backend_ip"] = client_ip, structs.ip_to_be32(vip_ip), bip
            vals["client_port"], vals["vip_port"], vals["backend_port"] = (
                client_port,
                structs.port_to_be16(vport),
                bport,
            )
            vals["proto"], vals["backend_id"], vals["service_id"] = (
                structs.PROTO_NUMBERS[protocol],
                chosen,
                svc.service_id,
            )
            vals["flags"] = structs.CT_F_EST | (
                structs.CT_F_SYNACK | structs.CT_F_SYN if protocol == "tcp" else 0
            )
            vals["created_ns"] = now - int(age_s * 1e9)
            vals["synack_ns"] = vals["created_ns"] + 1000
            vals["last_seen_ns"] = now
            vals["packets"], vals["bytes"] = (
                10 + idx % np.uint64(90),
                1000 + (idx * np.uint64(7919)) % np.uint64(100_000),
            )
            keys = np.zeros(count, dtype=CT_KEY_DTYPE)
            keys["saddr"], keys["daddr"], keys["sport"], keys["dport"] = (
                client_ip,
                vals["vip"],
                client_port,
                vals["vip_port"],
            )
            keys["proto"] = vals["proto"]
            rkeys = np.zeros(count, dtype=CT_KEY_DTYPE)
            rkeys["saddr"], rkeys["daddr"], rkeys["sport"], rkeys["dport"] = (
                bip,
                client_ip,
                bport,
                client_port,
            )
            rkeys["proto"] = vals["proto"]
            rvals = vals.copy()
            rvals["dir"] = structs.DIR_REVERSE
            rvals["flags"] &= structs.CT_F_SYN
            if not self.state.established.insert(
                np.concatenate([keys, rkeys]), np.concatenate([vals, rvals])
            ):
                raise ValueError(f"the established table has no room for {count} more flows")
            for bid, n in zip(*np.unique(chosen, return_counts=True), strict=True):
                self.state.backend_stat(int(bid))["established"] += int(n)

    # ---- counters and histograms ----------------------------------------------------------------

    def add_counters(self, backend_id: int, **deltas: int) -> None:
        """Advance a backend's counters (names of structs.BACKEND_STATS_FIELDS)."""
        with self.lock:
            stats = self.state.backend_stat(backend_id)
            for name, delta in deltas.items():
                if name not in stats:
                    raise KeyError(f"no backend counter {name!r}")
                stats[name] += delta

    def add_service_counters(
        self, service_id: int, drops: dict[str, int] | None = None, **deltas: int
    ) -> None:
        with self.lock:
            stats = self.state.service_stat(service_id)
            for name, delta in deltas.items():
                stats[name] += delta
            for reason, n in (drops or {}).items():
                self.state.service_drops(service_id)[reason] += n

    def add_latency(
        self, backend_id: int, handshake_us: Sequence[int] = (), duration_us: Sequence[int] = ()
    ) -> None:
        with self.lock:
            h = self.state.histograms(backend_id)
            for us in handshake_us:
                h.add(us, duration=False)
            for us in duration_us:
                h.add(us, duration=True)

    # ---- internals ------------------------------------------------------------------------------

    def _pick(self, svc: ServiceEntry, cip: str, cport: int) -> int:
        group = svc.default_group
        best = -1
        for (sid, cidr), routed in self.state.routes.items():
            bits = int(cidr.partition("/")[2])
            if sid == svc.service_id and bits > best and _in_cidr(cip, cidr):
                group, best = routed, bits
        size = self.state.spec.table_size
        if svc.algorithm == "source-hash":
            slot = zlib.crc32(f"{cip}|{svc.service_id}".encode()) % size
        elif svc.algorithm == "maglev":
            slot = zlib.crc32(f"{cip}|{cport}|{svc.vip}|{svc.port}".encode()) % size
        else:
            slot = self._rng.randrange(size)
        bid = int(self.state.table(group)[slot])
        return bid if bid < self.state.spec.max_backends else EMPTY

    def _key_of(self, flow: MemoryFlow, direction: int) -> np.ndarray:
        if direction == structs.DIR_FORWARD:
            return _key(flow.client[0], flow.vip[0], flow.client[1], flow.vip[1], flow.protocol)
        return _key(flow.backend[0], flow.client[0], flow.backend[1], flow.client[1], flow.protocol)

    def _row(self, flow: MemoryFlow, direction: int) -> tuple[CtTable, int] | None:
        return self.state.find(self._key_of(flow, direction))

    def _forward(self, flow: MemoryFlow) -> np.ndarray:
        found = self._row(flow, structs.DIR_FORWARD)
        if found is None:
            raise KeyError(f"no conntrack entry for {flow}")
        table, row = found
        return table.values[row : row + 1].copy()

    def _store(self, flow: MemoryFlow, fwd: np.ndarray) -> None:
        found = self._row(flow, structs.DIR_FORWARD)
        if found is not None:
            table, row = found
            table.values[row] = fwd[0]

    def _move(self, flow: MemoryFlow, src: CtTable, dst: CtTable) -> bool:
        """Both entries of a flow from one table to the other (ct_promote / ct_demote)."""
        keys = np.concatenate([self._key_of(flow, d) for d in (structs.DIR_FORWARD, structs.DIR_REVERSE)])
        rows = [src.index(keys[i : i + 1]) for i in range(2)]
        present = [r for r in rows if r is not None]
        if not present:
            return False
        if not dst.insert(keys[[i for i, r in enumerate(rows) if r is not None]], src.values[present].copy()):
            return False
        gone = np.zeros(src.n, dtype=bool)
        gone[present] = True
        src.remove(gone)
        return True

    def _promote(self, flow: MemoryFlow) -> None:
        fwd = self._forward(flow)
        fwd["flags"] |= structs.CT_F_EST
        self._store(flow, fwd)
        if self._move(flow, self.state.transient, self.state.established):
            self.state.backend_stat(flow.backend_id)["established"] += 1
        else:
            fwd["flags"] &= ~np.uint64(structs.CT_F_EST)
            self._store(flow, fwd)
            self.state.service_drops(flow.service_id)["conntrack_full"] += 1

    def _close(self, flow: MemoryFlow, flags: int) -> None:
        fwd = self._forward(flow)
        old = int(fwd["flags"][0])
        fwd["flags"] |= flags
        now_flags = old | flags
        closed = now_flags & structs.CT_F_RST or (
            now_flags & (structs.CT_F_FIN_IN | structs.CT_F_FIN_OUT)
            == structs.CT_F_FIN_IN | structs.CT_F_FIN_OUT
        )
        if not closed or old & structs.CT_F_CLOSED:
            self._store(flow, fwd)
            return
        fwd["flags"] |= structs.CT_F_CLOSED
        self._store(flow, fwd)
        now = self.clock_ns()
        if old & structs.CT_F_EST:
            stats = self.state.backend_stat(flow.backend_id)
            stats["closes"] += 1
            stats["ended"] += 1
            self.state.histograms(flow.backend_id).add(
                (now - int(fwd["created_ns"][0])) // 1000, duration=True
            )
        svc = self.state.services.get((flow.vip[0], flow.vip[1], flow.protocol))
        if svc is not None and svc.events_closed:
            self._event(flow, structs.EV_CLOSED, "rst" if now_flags & structs.CT_F_RST else "fin")
        if old & structs.CT_F_EST:
            self._move(flow, self.state.established, self.state.transient)

    def _event(self, flow: MemoryFlow, kind: int, reason: str | None) -> None:
        fwd = self._forward(flow)[0]
        found = self._row(flow, structs.DIR_REVERSE)
        rev = found[0].values[found[1]] if found is not None else None
        self.emit(
            RawFlowEvent(
                type=kind,
                ts_ns=self.clock_ns(),
                created_ns=int(fwd["created_ns"]),
                synack_ns=int(fwd["synack_ns"]),
                client=flow.client,
                vip=flow.vip,
                backend=flow.backend,
                protocol=flow.protocol,
                backend_id=flow.backend_id,
                service_id=flow.service_id,
                packets_in=int(fwd["packets"]),
                bytes_in=int(fwd["bytes"]),
                packets_out=int(rev["packets"]) if rev is not None else 0,
                bytes_out=int(rev["bytes"]) if rev is not None else 0,
                reason=reason,
            )
        )
