# SPDX-License-Identifier: Apache-2.0
"""What the maps of a MemoryDataplane hold: one `MapState` per (possibly pinned) data path.

The conntrack table keeps lb.h's record layout in numpy arrays (the engine's sweep reads them as it
reads the kernel's), with the LRU hash's behaviour at capacity: inserting into a full table evicts
the entries used least recently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lbtui.dataplane import structs
from lbtui.dataplane.port import DataplaneError, DataplaneSpec, PinnedBackend, ServiceEntry
from lbtui.dataplane.records import CT_ENTRY_DTYPE, CT_KEY_DTYPE

SERVICE_STATS_FIELDS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows")
_KEY_BYTES = CT_KEY_DTYPE.itemsize
_CHECKED = np.dtype([("key", f"V{_KEY_BYTES}"), ("created_ns", "<u8")])


def key_bytes(keys: np.ndarray) -> np.ndarray:
    """CtKey records as opaque byte strings (comparable, usable with np.isin)."""
    return np.ascontiguousarray(keys, dtype=CT_KEY_DTYPE).view(f"V{_KEY_BYTES}")


class Conntrack:
    """lb_conntrack: forward and reverse entries, at most `capacity` of them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.keys = np.zeros(min(capacity, 1024), dtype=CT_KEY_DTYPE)
        self.values = np.zeros(len(self.keys), dtype=CT_ENTRY_DTYPE)
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

    def insert(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Insert or replace entries (keys must be distinct), evicting the least recently used."""
        present = np.isin(key_bytes(keys), key_bytes(self.keys[: self.n]))
        for i in np.flatnonzero(present):
            row = self.index(keys[i : i + 1])
            assert row is not None
            self.values[row] = values[i]
        keys, values = keys[~present], values[~present]
        if len(keys) > self.capacity:
            raise DataplaneError(f"more new entries than conntrack holds ({self.capacity})")
        overflow = self.n + len(keys) - self.capacity
        if overflow > 0:
            lru = np.argpartition(self.values["last_seen_ns"][: self.n], overflow - 1)[:overflow]
            keep = np.ones(self.n, dtype=bool)
            keep[lru] = False
            self._compact(keep)
            self.evicted += overflow
        need = self.n + len(keys)
        if need > len(self.keys):
            size = min(self.capacity, max(need, 2 * len(self.keys)))
            self.keys = np.resize(self.keys, size)
            self.values = np.resize(self.values, size)
        self.keys[self.n : need] = keys
        self.values[self.n : need] = values
        self.n = need

    def reap(self, keys: np.ndarray, created_ns: np.ndarray) -> int:
        """Remove each key's entry only while it is still the flow created at created_ns."""
        if len(keys) == 0 or self.n == 0:
            return 0
        asked = np.zeros(len(keys), dtype=_CHECKED)
        asked["key"], asked["created_ns"] = key_bytes(keys), created_ns
        held = np.zeros(self.n, dtype=_CHECKED)
        held["key"], held["created_ns"] = key_bytes(self.keys[: self.n]), self.values["created_ns"][: self.n]
        gone = np.isin(held.view(f"V{_CHECKED.itemsize}"), asked.view(f"V{_CHECKED.itemsize}"))
        self._compact(~gone)
        return int(gone.sum())

    def _compact(self, keep: np.ndarray) -> None:
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
    conntrack: Conntrack = field(init=False)
    interfaces: tuple[str, ...] = ()  # left attached by a close(keep=True)

    def __post_init__(self) -> None:
        self.conntrack = Conntrack(self.spec.conntrack_entries)

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
