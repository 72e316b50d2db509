# SPDX-License-Identifier: Apache-2.0
"""Ids of services, groups and backends: allocation, and adoption of an earlier run's pinned ids.

The data path indexes its maps by these ids, so they must stay stable while a flow may still use
them: a restarted instance adopts the ids its predecessor pinned (conntrack entries carry backend and
service ids), and a removed backend's id is reused last (its counters are not inherited soon).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from lbtui.addresses import format_endpoint
from lbtui.control import selection
from lbtui.dataplane.port import Dataplane, DataplaneSpec

DEFAULT_GROUP = "default"
ServiceKey = tuple[str, int, str]  # (vip, port, protocol)


class IdPool:
    """Ids 0..limit-1 handed out lowest-new first; freed ids are reused, most recent first."""

    def __init__(self, limit: int, what: str):
        self.limit = limit
        self.what = what
        self.next = 0
        self.free: list[int] = []

    def take(self) -> int:
        if self.free:
            return self.free.pop()
        if self.next >= self.limit:
            raise RuntimeError(f"too many {self.what} (the data path holds {self.limit})")
        self.next += 1
        return self.next - 1

    def give_back(self, ident: int) -> None:
        self.free.append(ident)

    def continue_above(self, used: set[int]) -> None:
        """After adoption: new ids above every adopted one, the gaps free."""
        self.next = max(used, default=-1) + 1
        self.free = [i for i in range(self.next) if i not in used]


class BackendIdPool:
    """Backend ids: fresh ones first, then the oldest freed (a new backend must not inherit the
    counters of one removed a moment ago; the data path zeroes them, but scrapes may lag)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.next = 0
        self.free: collections.deque[int] = collections.deque()

    def take(self) -> int:
        if self.next < self.limit:
            self.next += 1
            return self.next - 1
        if self.free:
            return self.free.popleft()
        raise RuntimeError(f"too many backends (the data path holds {self.limit})")

    def give_back(self, ident: int) -> None:
        self.free.append(ident)

    def continue_above(self, used: set[int], written: set[int]) -> None:
        self.next = max(written, default=-1) + 1
        self.free.extend(b for b in range(self.next) if b not in used)


@dataclass
class Pinned:
    """Ids and tables found in the maps of an earlier run, until the configuration claims them."""

    services: dict[ServiceKey, int] = field(default_factory=dict)
    groups: dict[tuple[int, str], int] = field(default_factory=dict)  # (service id, label) -> group
    backends: dict[tuple[int, str], int] = field(default_factory=dict)  # (group, "ip:port") -> id
    tables: dict[int, np.ndarray] = field(default_factory=dict)
    backend_count: int = 0
    flows: int = 0


class Ids:
    def __init__(self, spec: DataplaneSpec):
        self.services = IdPool(spec.max_services, "proxies")
        self.groups = IdPool(spec.max_groups, "groups")
        self.backends = BackendIdPool(spec.max_backends)
        self.pinned = Pinned()

    def adopt(self, dp: Dataplane) -> Pinned:
        """Read the ids and tables an earlier run left in the pinned maps, to take them over."""
        pinned = self.pinned
        services = dp.read_services()
        for s in services:
            pinned.services[(s.vip, s.port, s.protocol)] = s.service_id
            pinned.groups[(s.service_id, DEFAULT_GROUP)] = s.default_group
        for r in dp.read_routes():
            pinned.groups[(r.service_id, r.cidr)] = r.group
        backends = dp.read_backends()
        for gid in set(pinned.groups.values()):
            table = dp.read_table(gid)
            pinned.tables[gid] = np.asarray(table, dtype=np.int64)
            for bid in set(table) - {selection.EMPTY}:
                if bid in backends:
                    pinned.backends[(gid, format_endpoint(backends[bid].ip, backends[bid].port))] = bid
        self.services.continue_above({s.service_id for s in services})
        self.groups.continue_above(set(pinned.groups.values()))
        self.backends.continue_above(set(pinned.backends.values()), set(backends))
        pinned.backend_count = len(backends)
        pinned.flows = dp.conntrack_count() // 2
        return pinned

    def service(self, key: ServiceKey) -> int:
        sid = self.pinned.services.pop(key, None)
        return self.services.take() if sid is None else sid

    def group(self, service_id: int, label: str) -> tuple[int, np.ndarray | None]:
        """A group id and, when adopted, the table the data path holds for it."""
        gid = self.pinned.groups.pop((service_id, label), None)
        if gid is None:
            return self.groups.take(), None
        return gid, self.pinned.tables.pop(gid, None)

    def backend(self, group: int, address: str) -> tuple[int, bool]:
        """A backend id, and whether it was adopted (it keeps its counters)."""
        bid = self.pinned.backends.pop((group, address), None)
        return (self.backends.take(), False) if bid is None else (bid, True)

    def release_unclaimed(self, dp: Dataplane, live_backends: set[int]) -> None:
        """Pinned state the configuration no longer has: delete it (flows already tracked go on)."""
        pinned = self.pinned
        for (vip, port, proto), sid in pinned.services.items():
            dp.delete_service(vip, port, proto)
            self.services.give_back(sid)
        size = dp.spec.table_size
        for (sid, label), gid in pinned.groups.items():
            if label != DEFAULT_GROUP:
                dp.delete_route(sid, label)
            dp.write_slots(gid, np.arange(size), np.full(size, selection.EMPTY, dtype=np.int64))
            self.groups.give_back(gid)
        for bid, be in dp.read_backends().items():
            if be.active and bid not in live_backends:
                dp.set_backend(bid, be.ip, be.port, active=False)
        self.pinned = Pinned()
