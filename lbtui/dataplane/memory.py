# SPDX-License-Identifier: Apache-2.0
"""An in-memory dataplane with the kernel's semantics, for tests of the engine and the console.

`MemoryDataplane` implements `port.Dataplane` on plain dicts and numpy arrays: services, routes,
backends, zero-initialised selection tables (BPF arrays start at 0), per-backend and per-service
counters, latency histograms, the two conntrack tables (established: refuses inserts when full;
transient: LRU eviction at its capacity) with lbtui_reap's compare-and-delete, per-source rate
buckets, and a ring buffer of flow events. `MemoryPins` stands in for
bpffs: a dataplane closed with keep=True leaves its maps there, and the next one with the same
pin_dir adopts them, as a restarted instance adopts its pinned maps.

Traffic is made by the test, through `connect` and the flow methods of memory_traffic.Traffic: a new flow
picks its backend from the selection table the engine wrote (by source hash, 5-tuple hash or a
seeded random slot), conntrack entries, counters (live flows among them), histograms and events
follow as lb.c makes them.
Rate limits are stored but not enforced. Never the only proof that a data-path feature works.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence

import numpy as np

from lbtui.dataplane import structs
from lbtui.dataplane.memory_state import CtTable, MapState
from lbtui.dataplane.memory_traffic import MemoryFlow, Traffic
from lbtui.dataplane.port import (
    CT_TABLES_OF,
    ESTABLISHED,
    ESTABLISHED6,
    BackendCounts,
    Dataplane,
    DataplaneError,
    DataplaneSpec,
    EventCallback,
    LatencyCounts,
    PinnedBackend,
    PinnedRoute,
    PinnedService,
    RawFlowEvent,
    ServiceEntry,
)
from lbtui.dataplane.records import backend_counts
from lbtui.model import Counters, NextHopWatchCounts

__all__ = ["MemoryDataplane", "MemoryFlow", "MemoryPins"]

CHUNK = 65536  # entries per conntrack chunk, as the kernel dataplane reads them


class MemoryPins:
    """bpffs for memory dataplanes: map state left pinned, by pin directory."""

    def __init__(self) -> None:
        self.states: dict[str, MapState] = {}


class MemoryDataplane(Traffic):
    def __init__(
        self,
        spec: DataplaneSpec | None = None,
        *,
        pins: MemoryPins | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        available_interfaces: Collection[str] | None = None,
        seed: int = 0,
    ):
        """available_interfaces: the interfaces that exist (None: any); attaching to another fails."""
        self._spec = spec or DataplaneSpec()
        self._pins = pins
        self._available = None if available_interfaces is None else set(available_interfaces)
        self._attached: list[str] = []
        self._callback: EventCallback | None = None
        self._pending: list[RawFlowEvent] = []
        self._adopted = False
        self.closed = False
        self.lock = threading.RLock()  # map calls come from the engine's loop and its sweep thread
        super().__init__(MapState(self._spec), clock_ns, seed)

    # ---- life cycle -----------------------------------------------------------------------------

    @property
    def spec(self) -> DataplaneSpec:
        return self._spec

    def load(self) -> None:
        pin_dir = self._spec.pin_dir
        pinned = self._pins.states.get(pin_dir) if self._pins is not None and pin_dir else None
        if pinned is not None:
            if pinned.spec != self._spec:
                raise DataplaneError(f"maps pinned in {pin_dir} do not fit this configuration's sizes")
            self.state, self._adopted = pinned, True
            self._attached = list(pinned.interfaces)
        elif self._pins is not None and pin_dir:
            self._pins.states[pin_dir] = self.state

    @property
    def adopted(self) -> bool:
        return self._adopted

    @property
    def interfaces(self) -> tuple[str, ...]:
        return tuple(self._attached)

    def set_interfaces(self, wanted: Sequence[str]) -> None:
        missing = [i for i in wanted if self._available is not None and i not in self._available]
        if missing:
            raise DataplaneError(f"no interface named {missing[0]!r} in this network namespace")
        self._attached = [i for i in self._attached if i in wanted]
        self._attached += [i for i in wanted if i not in self._attached]

    def start_event_reader(self, callback: EventCallback) -> None:
        self._callback = callback

    def close(self, keep: bool = False) -> None:
        with self.lock:
            self.closed = True
            self.poll_events()
            self._callback = None
            if keep:
                self.state.interfaces = tuple(self._attached)
            elif self._pins is not None and self._spec.pin_dir:
                if self._pins.states.get(self._spec.pin_dir) is self.state:
                    del self._pins.states[self._spec.pin_dir]
            self._attached = []

    # ---- events ---------------------------------------------------------------------------------

    def emit(self, event: RawFlowEvent) -> None:
        """Queue a flow event as the programs would (tests may inject their own)."""
        with self.lock:
            self._pending.append(event)

    def poll_events(self) -> int:
        """Hand queued events to the reader's callback, on this thread, as one batch; how many."""
        with self.lock:
            batch, self._pending = self._pending, []
            callback = self._callback
        if batch and callback is not None:
            callback(batch)
        return len(batch)

    # ---- maps -----------------------------------------------------------------------------------

    def ipv4_address(self, ifname: str) -> str | None:
        if self._available is not None and ifname not in self._available:
            raise DataplaneError(f"no interface named {ifname!r} in this network namespace")
        return "192.0.2.1"  # TEST-NET-1: every in-memory interface has this address

    def set_service(self, entry: ServiceEntry) -> None:
        with self.lock:
            self.state.services[(entry.vip, entry.port, entry.protocol)] = entry

    def delete_service(self, vip: str, port: int, protocol: str) -> None:
        with self.lock:
            self.state.services.pop((vip, port, protocol), None)

    def set_route(self, service_id: int, cidr: str, group: int) -> None:
        with self.lock:
            self.state.routes[(service_id, cidr)] = group

    def delete_route(self, service_id: int, cidr: str) -> None:
        with self.lock:
            self.state.routes.pop((service_id, cidr), None)

    def set_backend(
        self, backend_id: int, ip: str, port: int, active: bool, accepts_new: bool = True
    ) -> None:
        if not 0 <= backend_id < self._spec.max_backends:
            raise DataplaneError(f"backend id {backend_id} out of range")
        with self.lock:
            self.state.backends[backend_id] = PinnedBackend(ip, port, active)
            if accepts_new:
                self.state.no_new.discard(backend_id)
            else:
                self.state.no_new.add(backend_id)

    def clear_backend_stats(self, backend_id: int) -> None:
        with self.lock:
            self.state.backend_stats.pop(backend_id, None)
            self.state.latency.pop(backend_id, None)

    def write_slots(self, group: int, slots: np.ndarray, backend_ids: np.ndarray) -> None:
        with self.lock:
            self.state.table(group)[np.asarray(slots, dtype=np.int64)] = np.asarray(backend_ids, np.uint32)

    def read_services(self) -> list[PinnedService]:
        with self.lock:
            return [
                PinnedService(e.vip, e.port, e.protocol, e.service_id, e.default_group)
                for e in self.state.services.values()
            ]

    def read_routes(self) -> list[PinnedRoute]:
        with self.lock:
            return [PinnedRoute(sid, cidr, g) for (sid, cidr), g in self.state.routes.items()]

    def read_backends(self) -> dict[int, PinnedBackend]:
        with self.lock:
            return dict(self.state.backends)

    def read_table(self, group: int) -> list[int]:
        with self.lock:
            return [int(x) for x in self.state.table(group).tolist()]

    def backend_counters(self, backend_ids: Iterable[int]) -> dict[int, BackendCounts]:
        with self.lock:
            return {bid: backend_counts(self.state.backend_stat(bid)) for bid in backend_ids}

    def service_counters(self, service_id: int) -> tuple[Counters, dict[str, int]]:
        with self.lock:
            stats = self.state.service_stat(service_id)
            return Counters(**stats), dict(self.state.service_drops(service_id))

    def latency(self, backend_ids: Iterable[int]) -> dict[int, LatencyCounts]:
        with self.lock:
            out = {}
            for bid in backend_ids:
                h = self.state.histograms(bid)
                out[bid] = LatencyCounts(
                    tuple(h.handshake), h.handshake_sum_us, tuple(h.duration), h.duration_sum_us
                )
            return out

    def global_counters(self) -> dict[str, int]:
        with self.lock:
            return {name: self.state.global_stats.get(name, 0) for name in structs.GLOBAL_COUNTERS}

    def next_hop_watch(self) -> NextHopWatchCounts:
        return NextHopWatchCounts()  # no kernel to watch

    def conntrack_arrays(self, family: int = 4) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            parts = [t.arrays() for t in self.state.ct_tables(family)]
        return np.concatenate([k for k, _ in parts]), np.concatenate([v for _, v in parts])

    def conntrack_count(self) -> int:
        with self.lock:
            return sum(len(t) for family in (4, 6) for t in self.state.ct_tables(family))

    def _ct_table(self, name: str) -> CtTable:
        family = 6 if name in CT_TABLES_OF[6] else 4
        established, transient = self.state.ct_tables(family)
        return established if name in (ESTABLISHED, ESTABLISHED6) else transient

    def conntrack_chunks(self, table: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with self.lock:
            keys, values = self._ct_table(table).arrays()
        for start in range(0, len(keys), CHUNK):
            yield keys[start : start + CHUNK], values[start : start + CHUNK]

    def conntrack_slice(
        self, cursor: int, limit: int, table: str = ESTABLISHED
    ) -> tuple[np.ndarray, np.ndarray, int]:
        with self.lock:
            t = self._ct_table(table)
            end = min(t.n, cursor + limit)
            keys, values = t.keys[cursor:end].copy(), t.values[cursor:end].copy()
            return keys, values, 0 if end >= t.n else end

    def reap_conntrack(self, keys: np.ndarray, created_ns: np.ndarray) -> int:
        out = self.expire_conntrack(keys, created_ns, np.zeros(len(keys), dtype=np.uint64))
        return int(np.count_nonzero(out["created_ns"] == 0))

    def expire_conntrack(
        self, keys: np.ndarray, created_ns: np.ndarray, idle_before_ns: np.ndarray
    ) -> np.ndarray:
        with self.lock:
            return self.state.expire(keys, created_ns, idle_before_ns)

    def sweep_rate_buckets(self, idle_ns: int, now_ns: int) -> int:
        with self.lock:
            buckets = self.state.rate_buckets
            stale = [k for k, last in buckets.items() if now_ns - last > idle_ns]
            for k in stale:
                del buckets[k]
            return len(stale)


def _implements_the_port(dp: MemoryDataplane) -> Dataplane:
    return dp  # mypy checks here that MemoryDataplane has every method of the port
