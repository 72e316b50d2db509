# SPDX-License-Identifier: Apache-2.0
"""What the maps of a MemoryDataplane hold: one `MapState` per (possibly pinned) data path.

The conntrack tables (two per address family) keep lb.h's record layout in numpy arrays (the
engine reads them as it reads the kernel's), each with its map's behaviour at capacity: the
established table (a hash) refuses an insert when full, the transient one (an LRU hash) evicts the
entries used least recently. `expire` is lbtui_reap's compare-and-delete (bpf/lb_ct.h ct_reap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lbtui.dataplane import structs
from lbtui.dataplane.port import DataplaneError, DataplaneSpec, PinnedBackend, ServiceEntry
from lbtui.dataplane.records import CT_DTYPES, ct_family

SERVICE_STATS_FIELDS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows")


def key_bytes(keys: np.ndarray) -> np.ndarray:
    """CtKey (or Ct6Key) records as opaque byte strings (comparable, usable with np.isin)."""
    keys = np.ascontiguousarray(keys)
    return keys.view(f"V{keys.dtype.itemsize}")


class CtTable:
    """One conntrack table: forward and reverse entries, at most `capacity` of them."""

    def __init__(self, capacity: int, lru: bool, family: int = 4):
        self.capacity = capacity
        self.lru = lru
        key_dtype, entry_dtype, _ = CT_DTYPES[family]
        self.keys = np.zeros(min(capacity, 1024), dtype=key_dtype)
        self.values = np.zeros(len(self.keys), dtype=entry_dtype)
        self.n = 0
        self.evicted = 0  # entries pushed out by the LRU at capacity

    def __len__(self) -> int:
        return self.n

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.keys[: self.n].copy(), self.values[: self.n].copy()

    def index(self, key: np.ndarray) -> int | None:
        """Row of one key (a 1-element CtKey array), or None."""
        found = np.flatnonzero(key_bytes(self.keys[: self.n]) == key_bytes(key)[0])
        return int(found[0]) if len(found) else None

    def insert(self, keys: np.ndarray, values: np.ndarray) -> bool:
        """Insert or replace entries (keys distinct); an LRU evicts the least recently used to make
        room, a plain hash refuses (False, nothing inserted) when the new keys do not fit."""
        present = np.isin(key_bytes(keys), key_bytes(self.keys[: self.n]))
        new = int(np.count_nonzero(~present))
        overflow = self.n + new - self.capacity
        if overflow > 0 and not self.lru:
            return False
        for i in np.flatnonzero(present):
            row = self.index(keys[i : i + 1])
            assert row is not None
            self.values[row] = values[i]
        keys, values = keys[~present], values[~present]
        if len(keys) > self.capacity:
            raise DataplaneError(f"more new entries than conntrack holds ({self.capacity})")
        if overflow > 0:
            lru = np.argpartition(self.values["last_seen_ns"][: self.n], overflow - 1)[:overflow]
            keep = np.ones(self.n, dtype=bool)
            keep[lru] = False
            self.remove(~keep)
            self.evicted += overflow
        need = self.n + len(keys)
        if need > len(self.keys):
            size = min(self.capacity, max(need, 2 * len(self.keys)))
            self.keys = np.resize(self.keys, size)
            self.values = np.resize(self.values, size)
        self.keys[self.n : need] = keys
        self.values[self.n : need] = values
        self.n = need
        return True

    def remove(self, gone: np.ndarray) -> None:
        """Remove the rows where `gone` (a mask over the rows) is true."""
        keep = ~gone
        kept = int(keep.sum())
        self.keys[:kept] = self.keys[: self.n][keep]
        self.values[:kept] = self.values[: self.n][keep]
        self.n = kept


@dataclass
class Histograms:
    """lb_latency of one backend: log2 buckets (structs.HIST_BOUNDS_MS) and sums."""

    handshake: list[int] = field(default_factory=lambda: [0] * structs.HIST_BUCKETS)
    handshake_sum_us: int = 0
    duration: list[int] = field(default_factory=lambda: [0] * structs.HIST_BUCKETS)
    duration_sum_us: int = 0

    def add(self, us: int, duration: bool) -> None:
        if duration:
            self.duration[structs.hist_bucket(us)] += 1
            self.duration_sum_us += us
        else:
            self.handshake[structs.hist_bucket(us)] += 1
            self.handshake_sum_us += us


@dataclass
class MapState:
    """The contents of every map of one data path."""

    spec: DataplaneSpec
    services: dict[tuple[str, int, str], ServiceEntry] = field(default_factory=dict)
    routes: dict[tuple[int, str], int] = field(default_factory=dict)
    backends: dict[int, PinnedBackend] = field(default_factory=dict)
    tables: dict[int, np.ndarray] = field(default_factory=dict)
    backend_stats: dict[int, dict[str, int]] = field(default_factory=dict)
    service_stats: dict[int, dict[str, int]] = field(default_factory=dict)
    drops: dict[int, dict[str, int]] = field(default_factory=dict)
    latency: dict[int, Histograms] = field(default_factory=dict)
    rate_buckets: dict[tuple[int, str], int] = field(default_factory=dict)  # -> last refill ns
    no_new: set[int] = field(default_factory=set)  # backend ids with LB_BE_F_NO_NEW
    global_stats: dict[str, int] = field(default_factory=dict)  # structs.GLOBAL_COUNTERS that moved
    established: CtTable = field(init=False)
    transient: CtTable = field(init=False)
    established6: CtTable = field(init=False)  # the IPv6 twins, sized apart (DataplaneSpec)
    transient6: CtTable = field(init=False)
    interfaces: tuple[str, ...] = ()  # left attached by a close(keep=True)

    def __post_init__(self) -> None:
        self.established = CtTable(self.spec.conntrack_entries, lru=False)
        self.transient = CtTable(self.spec.transient_entries, lru=True)
        self.established6 = CtTable(self.spec.conntrack6_entries, lru=False, family=6)
        self.transient6 = CtTable(self.spec.transient6_entries, lru=True, family=6)

    def ct_tables(self, family: int = 4) -> tuple[CtTable, CtTable]:
        """One family's tables, established first, as the data path looks them up."""
        return (self.established6, self.transient6) if family == 6 else (self.established, self.transient)

    def find(self, key: np.ndarray) -> tuple[CtTable, int] | None:
        """The table and row of one key (its family's tables), established table first."""
        for table in self.ct_tables(ct_family(key)):
            row = table.index(key)
            if row is not None:
                return table, row
        return None

    def expire(self, keys: np.ndarray, created_ns: np.ndarray, idle_before_ns: np.ndarray) -> np.ndarray:
        """bpf/lb_ct.h ct_reap for each record: remove the flow of the key (both entries) while it is
        the flow created at created_ns and, with a cutoff, neither entry saw a packet since; an
        established flow that had not closed counts as ended for its backend."""
        key_dtype, _, rec_dtype = CT_DTYPES[ct_family(keys)]
        out = np.zeros(len(keys), dtype=rec_dtype)
        out["key"] = np.ascontiguousarray(keys, dtype=key_dtype)
        out["created_ns"] = created_ns
        out["idle_before_ns"] = idle_before_ns
        for i in range(len(out)):
            self._reap_one(out[i : i + 1])
        return out

    def _reap_one(self, rec: np.ndarray) -> None:
        want = int(rec["created_ns"][0])
        if want == structs.CT_REAPING:
            return
        key = rec["key"]
        found = None
        for table in self.ct_tables(ct_family(key)):
            row = table.index(key)
            if row is not None and int(table.values["created_ns"][row]) == want:
                found = (table, row)
                break
        if found is None:
            return
        table, row = found
        e = table.values[row]
        partner = _partner_key(e, table.keys.dtype)
        prow = table.index(partner)
        if prow is not None:
            p = table.values[prow]
            if int(p["created_ns"]) != want or int(p["dir"]) == int(e["dir"]):
                prow = None
        last = int(e["last_seen_ns"])
        if prow is not None:
            last = max(last, int(table.values["last_seen_ns"][prow]))
        cutoff = int(rec["idle_before_ns"][0])
        if cutoff and last >= cutoff:
            return
        fwd_row = row if int(e["dir"]) == structs.DIR_FORWARD else prow
        if fwd_row is not None:
            flags = int(table.values["flags"][fwd_row])
            if not flags & structs.CT_F_CLOSED:
                table.values["flags"][fwd_row] = flags | structs.CT_F_CLOSED
                if flags & structs.CT_F_EST:
                    self.backend_stat(int(table.values["backend_id"][fwd_row]))["ended"] += 1
        rec["packets"] = int(table.values["packets"][prow]) if prow is not None else 0
        rec["bytes"] = int(table.values["bytes"][prow]) if prow is not None else 0
        gone = np.zeros(table.n, dtype=bool)
        gone[row] = True
        if prow is not None:
            gone[prow] = True
        table.remove(gone)
        rec["created_ns"] = 0
        rec["idle_before_ns"] = last

    def table(self, group: int) -> np.ndarray:
        if not 0 <= group < self.spec.max_groups:
            raise DataplaneError(f"group {group} out of range (the data path holds {self.spec.max_groups})")
        if group not in self.tables:
            self.tables[group] = np.zeros(self.spec.table_size, dtype=np.uint32)
        return self.tables[group]

    def backend_stat(self, backend_id: int) -> dict[str, int]:
        return self.backend_stats.setdefault(backend_id, dict.fromkeys(structs.BACKEND_STATS_FIELDS, 0))

    def service_stat(self, service_id: int) -> dict[str, int]:
        return self.service_stats.setdefault(service_id, dict.fromkeys(SERVICE_STATS_FIELDS, 0))

    def service_drops(self, service_id: int) -> dict[str, int]:
        return self.drops.setdefault(service_id, dict.fromkeys(structs.DROP_REASONS, 0))

    def histograms(self, backend_id: int) -> Histograms:
        return self.latency.setdefault(backend_id, Histograms())


def _partner_key(e: np.void, key_dtype: np.dtype) -> np.ndarray:
    """The key of an entry's other direction (a 1-element array of its table's key layout)."""
    k = np.zeros(1, dtype=key_dtype)
    if int(e["dir"]) == structs.DIR_FORWARD:
        k["saddr"], k["daddr"] = e["backend_ip"], e["client_ip"]
        k["sport"], k["dport"] = e["backend_port"], e["client_port"]
    else:
        k["saddr"], k["daddr"] = e["client_ip"], e["vip"]
        k["sport"], k["dport"] = e["client_port"], e["vip_port"]
    k["proto"] = e["proto"]
    return k
