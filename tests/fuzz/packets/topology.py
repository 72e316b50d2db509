# SPDX-License-Identifier: Apache-2.0
"""The fuzz topology: one VIP, four services (every selection algorithm), four backends, a source route.

The harness writes exactly this into the maps (harness.setup_maps) and the oracle predicts from it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from lbtui.control.selection import maglev_table, weighted_table
from tests.fuzz.packets.wire import TCP, UDP, addr

VIP = "10.0.0.1"
VIP_B = addr(VIP)
TABLE_SIZE = 13
# Two entries per flow, at most one new flow per frame, and the harness empties conntrack every
# `sync_every` frames: the map only evicts (LRU) when the harness says so, as long as
# 2 * sync_every plus the kernel's per-CPU free lists stay below this (harness.check_sizes).
CONNTRACK_ENTRIES = 65536
WEIGHTED_RANDOM, SOURCE_HASH, MAGLEV = "weighted-random", "source-hash", "maglev"

Endpoint = tuple[bytes, int]  # address, port (host order)

# backend id -> (address, port)
BACKENDS: dict[int, tuple[str, int]] = {
    0: ("10.0.2.11", 8080),
    1: ("10.0.2.12", 8080),
    2: ("10.0.2.13", 8081),
    3: ("10.0.3.10", 8080),
}
BACKEND_BY_ENDPOINT: dict[Endpoint, int] = {(addr(ip), port): bid for bid, (ip, port) in BACKENDS.items()}


def endpoint_of(backend_id: int) -> Endpoint:
    ip, port = BACKENDS[backend_id]
    return addr(ip), port


@dataclass(frozen=True)
class FuzzService:
    port: int
    proto: int
    service_id: int
    group: int
    algorithm: str


SERVICES = (
    FuzzService(80, TCP, 0, 0, WEIGHTED_RANDOM),
    FuzzService(53, UDP, 1, 0, WEIGHTED_RANDOM),
    FuzzService(81, TCP, 2, 2, MAGLEV),
    FuzzService(5353, UDP, 3, 3, SOURCE_HASH),
)
SERVICE_BY_KEY = {(VIP_B, s.port, s.proto): s for s in SERVICES}
ROUTE_SERVICE, ROUTE_CIDR, ROUTE_GROUP = 0, "192.168.0.0/16", 1  # clients of 192.168/16 on tcp/80
_ROUTE_NET = ipaddress.IPv4Network(ROUTE_CIDR)


def _group_tables() -> dict[int, list[int]]:
    def names(ids: Sequence[int]) -> dict[int, tuple[str, int]]:
        return {bid: (f"{BACKENDS[bid][0]}:{BACKENDS[bid][1]}", 1) for bid in ids}

    return {
        0: weighted_table({0: 3, 1: 2, 2: 1}, TABLE_SIZE),
        1: weighted_table({3: 1}, TABLE_SIZE),
        2: maglev_table(names([0, 1, 2]), TABLE_SIZE),
        3: weighted_table({0: 1, 2: 1}, TABLE_SIZE),
    }


GROUP_TABLES = _group_tables()


def group_of(svc: FuzzService, saddr: bytes) -> int:
    """The selection table a new flow of `svc` from `saddr` uses (the source route, else the default)."""
    if svc.service_id == ROUTE_SERVICE and ipaddress.IPv4Address(saddr) in _ROUTE_NET:
        return ROUTE_GROUP
    return svc.group
