# SPDX-License-Identifier: Apache-2.0
"""Typed access to lbtui's BPF maps through BCC: Python values in, Python values out.

The control plane speaks in addresses, ids and frozen dataclasses (lbtui.dataplane.port); this
module turns them into the map layouts of structs.py (via the tables BCC generated) and back. Batch
syscalls are used for the big maps (selection slots, conntrack) where the kernel supports them.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from bcc.libbcc import lib

from lbtui.dataplane import structs
from lbtui.dataplane.loader import Loaded
from lbtui.dataplane.port import (
    CT_TABLES_OF,
    ESTABLISHED,
    ESTABLISHED6,
    TRANSIENT,
    TRANSIENT6,
    BackendCounts,
    LatencyCounts,
    PinnedBackend,
    PinnedRoute,
    PinnedService,
    RawFlowEvent,
    ServiceEntry,
)
from lbtui.dataplane.progrun import run_program
from lbtui.dataplane.records import CT_DTYPES, backend_counts, ct_family, decode_event
from lbtui.model import Counters

log = logging.getLogger(__name__)
_next_hop_lock = threading.Lock()  # Maps.forget_next_hops: the engine and the next-hop watch

CT_TABLES = {
    ESTABLISHED: "lb_ct_established",
    TRANSIENT: "lb_ct_transient",
    ESTABLISHED6: "lb_ct6_established",
    TRANSIENT6: "lb_ct6_transient",
}
_CT_STRUCTS = {4: (structs.CtKey, structs.CtEntry), 6: (structs.Ct6Key, structs.Ct6Entry)}
READ_CHUNK = 65536  # conntrack entries per batch read (6.8 MB of buffers per table)


class _BatchReader:
    """BPF_MAP_LOOKUP_BATCH of a conntrack table, a bounded number of entries at a time."""

    def __init__(self, fd: int, chunk: int, family: int = 4):
        self.fd = fd
        self.chunk = chunk
        key, entry = _CT_STRUCTS[family]
        self.keys = (key * chunk)()
        self.values = (entry * chunk)()
        self.key_dtype, self.entry_dtype, _ = CT_DTYPES[family]

    def read(self, cursor: int | None, limit: int) -> tuple[np.ndarray, np.ndarray, int | None]:
        """Up to `limit` (at most `chunk`) entries from bucket `cursor` (None: the start); views of
        the reader's buffers (valid until the next read) and the cursor after them (None: the end)."""
        limit = min(limit, self.chunk)
        token = ctypes.c_uint32(cursor or 0)
        count = ctypes.c_uint32(limit)
        res = lib.bpf_lookup_batch(
            self.fd,
            None if cursor is None else ctypes.byref(token),
            ctypes.byref(token),
            ctypes.byref(self.keys),
            ctypes.byref(self.values),
            ctypes.byref(count),
        )
        err = ctypes.get_errno()
        n = min(count.value, limit)
        following: int | None = token.value
        if res != 0:
            if err != errno.ENOENT:
                raise OSError(err, f"BPF_MAP_LOOKUP_BATCH on conntrack: {os.strerror(err)}")
            following = None  # the table was read to its end
        keys = np.frombuffer(memoryview(self.keys), dtype=self.key_dtype, count=n)
        values = np.frombuffer(memoryview(self.values), dtype=self.entry_dtype, count=n)
        return keys, values, following

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The whole table, chunk by chunk (each chunk valid until the next)."""
        cursor: int | None = None
        while True:
            keys, values, cursor = self.read(cursor, self.chunk)
            if len(keys):
                yield keys, values
            if cursor is None:
                return


class Maps:
    def __init__(self, loaded: Loaded):
        self._loaded = loaded
        self.spec = loaded.spec
        self._services = loaded.table("lb_services")
        self._services6 = loaded.table("lb_services6")
        self._routes = loaded.table("lb_routes")
        self._routes6 = loaded.table("lb_routes6")
        self._backends = loaded.table("lb_backends")
        self._select = loaded.table("lb_select")
        self._backend_stats = loaded.table("lb_backend_stats")
        self._service_stats = loaded.table("lb_service_stats")
        self._global = loaded.table("lb_global_stats")
        self._ct_readers: dict[str, _BatchReader] = {}

    # ---- services and routes --------------------------------------------------------------------

    def _service_table(self, vip: str) -> Any:
        return self._services6 if ipaddress.ip_address(vip).version == 6 else self._services

    def _service_key(self, vip: str, port: int, protocol: str) -> Any:
        table = self._service_table(vip)
        k = table.Key()
        if table is self._services6:
            k.vip.w[:] = structs.ip6_to_words(vip)
        else:
            k.vip = structs.ip_to_be32(vip)
        k.port = structs.port_to_be16(port)
        k.proto = structs.PROTO_NUMBERS[protocol]
        return k

    def set_service(self, entry: ServiceEntry) -> None:
        if ipaddress.ip_address(entry.vip).version == 6:
            self._loaded.load_ipv6()  # before the service exists: its frames must find the programs
        v = self._services.Leaf()
        v.id = entry.service_id
        v.default_group = entry.default_group
        v.algorithm = structs.ALGORITHM_CODES[entry.algorithm]
        v.flags = (
            (structs.SVC_F_EV_NEW if entry.events_new else 0)
            | (structs.SVC_F_EV_CLOSED if entry.events_closed else 0)
            | (structs.SVC_F_IPIP if entry.ipip_source else 0)
        )
        v.ipip_src = structs.ip_to_be32(entry.ipip_source) if entry.ipip_source else 0
        lim = entry.limits
        v.src_rate, v.src_burst, v.be_rate, v.be_burst, v.src_prefix6 = (
            lim.src_rate,
            lim.src_burst,
            lim.be_rate,
            lim.be_burst,
            lim.src_prefix6,
        )
        self._service_table(entry.vip)[self._service_key(entry.vip, entry.port, entry.protocol)] = v

    def delete_service(self, vip: str, port: int, protocol: str) -> None:
        try:
            del self._service_table(vip)[self._service_key(vip, port, protocol)]
        except KeyError:
            pass

    def _route_table_key(self, service_id: int, cidr: str) -> tuple[Any, Any]:
        net = ipaddress.ip_network(cidr)
        table = self._routes6 if net.version == 6 else self._routes
        k = table.Key()
        k.prefixlen = 32 + net.prefixlen
        k.service_id = service_id
        if net.version == 6:
            k.saddr.w[:] = structs.ip6_to_words(str(net.network_address))
        else:
            k.saddr = structs.ip_to_be32(str(net.network_address))
        return table, k

    def set_route(self, service_id: int, cidr: str, group: int) -> None:
        table, k = self._route_table_key(service_id, cidr)
        table[k] = table.Leaf(group)

    def delete_route(self, service_id: int, cidr: str) -> None:
        table, k = self._route_table_key(service_id, cidr)
        try:
            del table[k]
        except KeyError:
            pass

    # ---- backends and selection tables ----------------------------------------------------------

    def set_backend(
        self, backend_id: int, ip: str, port: int, active: bool, accepts_new: bool = True
    ) -> None:
        v = self._backends.Leaf()
        if ipaddress.ip_address(ip).version == 6:
            v.ip6.w[:] = structs.ip6_to_words(ip)
        else:
            v.ip = structs.ip_to_be32(ip)
        v.port = structs.port_to_be16(port)
        v.flags = (structs.BE_F_ACTIVE if active else 0) | (0 if accepts_new else structs.BE_F_NO_NEW)
        self._backends[self._backends.Key(backend_id)] = v

    def set_fast_path_interfaces(self, macs: Mapping[int, str], xdp_out: Iterable[int] | None = None) -> None:
        """The interfaces the fast path may use (lb_fp_ifaces): exactly those of `macs`, ifindex ->
        the interface's MAC ("02:00:5e:00:53:01"), the only destination a frame arriving there may
        have to be forwarded fast (bpf/lb_nexthop.h); XDP may redirect frames into those of `xdp_out`
        (None: into all of them), replies into all."""
        xdp_ok = set(macs) if xdp_out is None else set(xdp_out)
        table = self._loaded.table("lb_fp_ifaces")
        for key in list(table.keys()):
            if key.value not in macs:
                del table[key]
        for ifindex, mac in macs.items():
            leaf = table.Leaf()
            leaf.mac[:] = structs.mac_to_bytes(mac)
            leaf.xdp_out = int(ifindex in xdp_ok)
            table[table.Key(ifindex)] = leaf
        # a remembered next hop may leave through an interface just removed, or hold an old MAC
        self.forget_next_hops()

    def forget_next_hops(self) -> None:
        """Make the fast path ask bpf_fib_lookup again for every remembered next hop: bump lb_fp_gen
        (bpf/lb_fastpath.h). Nothing to do when compiled without the fast path."""
        try:
            table = self._loaded.table("lb_fp_gen")
        except KeyError:
            return
        key = table.Key(0)
        with _next_hop_lock:  # two bumps at once must make two values, not one
            table[key] = table.Leaf((table[key].value + 1) & 0xFFFFFFFF)

    def next_hop_generation(self) -> int:
        table = self._loaded.table("lb_fp_gen")
        return int(table[table.Key(0)].value)

    def fast_path_interfaces(self) -> dict[int, str]:
        """lb_fp_ifaces: ifindex -> MAC (as set_fast_path_interfaces takes them)."""
        return {k.value: bytes(v.mac).hex(":") for k, v in self._loaded.table("lb_fp_ifaces").items()}

    def clear_backend_stats(self, backend_id: int) -> None:
        self._backend_stats.clearitem(self._backend_stats.Key(backend_id))
        latency = self._loaded.table("lb_latency")
        latency.clearitem(latency.Key(backend_id))

    def latency(self, backend_ids: Iterable[int]) -> dict[int, LatencyCounts]:
        """Per backend: the data path's handshake and duration histograms, summed over CPUs."""
        table = self._loaded.table("lb_latency")
        out = {}
        for bid in backend_ids:
            hs = [0] * structs.HIST_BUCKETS
            du = [0] * structs.HIST_BUCKETS
            hs_sum = du_sum = 0
            for cpu in table.getvalue(table.Key(bid)):
                for i in range(structs.HIST_BUCKETS):
                    hs[i] += cpu.handshake[i]
                    du[i] += cpu.duration[i]
                hs_sum += cpu.handshake_sum_us
                du_sum += cpu.duration_sum_us
            out[bid] = LatencyCounts(tuple(hs), hs_sum, tuple(du), du_sum)
        return out

    def write_slots(self, group: int, slots: np.ndarray, backend_ids: np.ndarray) -> None:
        """Set slot -> backend id in one group's table: one batch syscall, no Python loop."""
        if len(slots) == 0:
            return
        keys = np.ascontiguousarray(slots + group * self.spec.table_size, dtype=np.uint32)
        values = np.ascontiguousarray(backend_ids, dtype=np.uint32)
        count = ctypes.c_uint32(len(keys))
        r = lib.bpf_update_batch(
            self._select.map_fd,
            ctypes.c_void_p(keys.ctypes.data),
            ctypes.c_void_p(values.ctypes.data),
            ctypes.byref(count),
        )
        if r != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"writing selection slots: {os.strerror(err)}")

    def read_services(self) -> list[PinnedService]:
        """Every service in the map."""
        return [
            PinnedService(
                structs.words_to_ip6(k.vip.w) if table is self._services6 else structs.be32_to_ip(k.vip),
                structs.be16_to_port(k.port),
                structs.PROTO_NAMES.get(k.proto, "?"),
                v.id,
                v.default_group,
            )
            for table in (self._services, self._services6)
            for k, v in table.items()
        ]

    def read_routes(self) -> list[PinnedRoute]:
        """Every source route in the map."""
        out = []
        for k, v in self._routes.items():
            prefix = k.prefixlen - 32
            out.append(PinnedRoute(k.service_id, f"{structs.be32_to_ip(k.saddr)}/{prefix}", v.value))
        for k, v in self._routes6.items():
            prefix = k.prefixlen - 32
            out.append(PinnedRoute(k.service_id, f"{structs.words_to_ip6(k.saddr.w)}/{prefix}", v.value))
        return out

    def read_backends(self) -> dict[int, PinnedBackend]:
        """backend id -> address and active flag, for every slot that was ever written."""
        out = {}
        for k, v in self._backends.items():
            if v.ip or v.port:
                v6 = any(v.ip6.w)
                out[k.value] = PinnedBackend(
                    structs.words_to_ip6(v.ip6.w) if v6 else structs.be32_to_ip(v.ip),
                    structs.be16_to_port(v.port),
                    bool(v.flags & structs.BE_F_ACTIVE),
                )
        return out

    def read_table(self, group: int) -> list[int]:
        base = group * self.spec.table_size
        return [self._select[self._select.Key(base + i)].value for i in range(self.spec.table_size)]

    # ---- counters -------------------------------------------------------------------------------

    def backend_counters(self, backend_ids: Iterable[int]) -> dict[int, BackendCounts]:
        """backend id -> counters summed over CPUs, and live flows (established - ended)."""
        out: dict[int, BackendCounts] = {}
        fields = structs.BACKEND_STATS_FIELDS
        for bid in backend_ids:
            tot = dict.fromkeys(fields, 0)
            for cpu in self._backend_stats.getvalue(self._backend_stats.Key(bid)):
                for name in fields:
                    tot[name] += getattr(cpu, name)
            out[bid] = backend_counts(tot)
        return out

    def service_counters(self, service_id: int) -> tuple[Counters, dict[str, int]]:
        per_cpu = self._service_stats.getvalue(self._service_stats.Key(service_id))
        tot = [0] * 5
        drops = [0] * len(structs.DROP_REASONS)
        for cpu in per_cpu:
            for i, name in enumerate(("packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows")):
                tot[i] += getattr(cpu, name)
            for i in range(len(drops)):
                drops[i] += cpu.drops[i]
        return (
            Counters(
                packets_in=tot[0], bytes_in=tot[1], packets_out=tot[2], bytes_out=tot[3], new_flows=tot[4]
            ),
            dict(zip(structs.DROP_REASONS, drops, strict=True)),
        )

    def global_counters(self) -> dict[str, int]:
        out = {}
        for i, name in enumerate(structs.GLOBAL_COUNTERS):
            out[name] = int(sum(v for v in self._global.getvalue(self._global.Key(i))))
        return out

    def sweep_rate_buckets(self, idle_ns: int, now_ns: int) -> int:
        """Forget per-source buckets idle for idle_ns (a returning source starts with a full bucket)."""
        forgotten = 0
        for name in ("lb_rl_source", "lb_rl6_source"):
            table = self._loaded.table(name)
            stale = [k for k, v in table.items_lookup_batch() if now_ns - v.last_ns > idle_ns]
            for k in stale:
                try:
                    del table[k]
                except KeyError:
                    pass
            forgotten += len(stale)
        return forgotten

    # ---- conntrack ------------------------------------------------------------------------------

    def _reader(self, table: str) -> _BatchReader:
        reader = self._ct_readers.get(table)
        if reader is None:
            fd = self._loaded.table(CT_TABLES[table]).map_fd
            family = 6 if table in CT_TABLES_OF[6] else 4
            reader = self._ct_readers[table] = _BatchReader(fd, READ_CHUNK, family)
        return reader

    def conntrack_count(self) -> int:
        return sum(len(k) for table in CT_TABLES for k, _ in self._reader(table).chunks())

    def conntrack_arrays(self, family: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Every entry of one family's two tables (established first), fresh arrays."""
        tables = CT_TABLES_OF[family]
        parts = [(k.copy(), v.copy()) for table in tables for k, v in self._reader(table).chunks()]
        if not parts:
            key_dtype, entry_dtype, _ = CT_DTYPES[family]
            return np.zeros(0, dtype=key_dtype), np.zeros(0, dtype=entry_dtype)
        return np.concatenate([k for k, _ in parts]), np.concatenate([v for _, v in parts])

    def conntrack_chunks(self, table: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One conntrack table (a name of port.CT_TABLES_OF), read with batch syscalls in chunks of
        READ_CHUNK entries; each chunk's arrays are reused for the next one."""
        return self._reader(table).chunks()

    def conntrack_slice(
        self, cursor: int, limit: int, table: str = ESTABLISHED
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """About `limit` entries of an established table from `cursor` (0: its start), and the cursor
        to go on from (0: the pass reached the end). Views of buffers the next read reuses."""
        keys, values, following = self._reader(table).read(cursor or None, limit)
        return keys, values, following or 0

    def reap_conntrack(self, keys: np.ndarray, created_ns: np.ndarray) -> int:
        """Remove the flows of these conntrack keys (a CtKey record array), each only while it is still
        the flow created at its created_ns: a tuple a new flow has reused since it was read stays.
        Both entries of a flow go. Returns how many flows were removed."""
        out = self.expire_conntrack(keys, created_ns, np.zeros(len(keys), dtype=np.uint64))
        return int(np.count_nonzero(out["created_ns"] == structs.CT_REAPING))

    def expire_conntrack(
        self, keys: np.ndarray, created_ns: np.ndarray, idle_before_ns: np.ndarray
    ) -> np.ndarray:
        """Remove the flows of these keys that are still the flow created at created_ns and whose
        entries saw no packet since idle_before_ns (0: unconditionally). Returns the lb_reap_rec
        records as lbtui_reap left them: created_ns 0 for each flow removed, with its last packet
        time in idle_before_ns and the other entry's packets and bytes.

        The compare-and-delete runs in the kernel (lbtui_reap, see LB_CT_REAPING in lb.h and
        docs/datapath.md#conntrack), because a delete by key from here cannot tell the old flow
        from a new one on the same tuple, nor see a packet that arrives after the read.
        """
        family = ct_family(keys)
        key_dtype, _, rec_dtype = CT_DTYPES[family]
        recs = np.zeros(len(keys), dtype=rec_dtype)
        recs["key"] = np.ascontiguousarray(keys, dtype=key_dtype)
        recs["created_ns"] = created_ns
        recs["idle_before_ns"] = idle_before_ns
        fd = (self._loaded.reap6_fn if family == 6 else self._loaded.reap_fn).fd
        batch = structs.REAP6_BATCH if family == 6 else structs.REAP_BATCH
        for start in range(0, len(recs), batch):
            chunk = recs[start : start + batch]
            out = run_program(fd, chunk.tobytes())
            recs[start : start + len(chunk)] = np.frombuffer(out.data, dtype=rec_dtype, count=len(chunk))
        return recs

    # ---- events ---------------------------------------------------------------------------------

    def open_events(self, callback: Callable[[list[RawFlowEvent]], None]) -> None:
        """Call callback(list of RawFlowEvent) once per poll_events() that found events.

        Events are handed over in batches: per-event hand-offs between threads cost more than the
        decoding itself under connection-heavy load.
        """
        batch: list[RawFlowEvent] = []

        def on_event(_ctx: Any, data: Any, size: int) -> int:
            if size >= ctypes.sizeof(structs.Event6):
                batch.append(decode_event(ctypes.cast(data, ctypes.POINTER(structs.Event6)).contents))
            else:
                batch.append(decode_event(ctypes.cast(data, ctypes.POINTER(structs.Event)).contents))
            return 0  # BCC's wrapper turns the return value into the C callback's int

        self._events_batch = batch
        self._events_callback = callback
        self._loaded.table("lb_events").open_ring_buffer(on_event)

    def poll_events(self) -> int:
        """Drain the ring buffer (non-blocking) and hand what was there over as one batch; how many."""
        self._loaded.bpf.ring_buffer_consume()
        if not self._events_batch:
            return 0
        events = list(self._events_batch)
        self._events_batch.clear()
        self._events_callback(events)
        return len(events)
