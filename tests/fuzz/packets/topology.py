# SPDX-License-Identifier: Apache-2.0
"""The fuzz topology, once per family: a VIP, four services (every selection algorithm), four backends
and a source route for IPv4, the same again for IPv6 (a proxy's VIP and backends are one family).

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
VIP6 = "fd00:fa::1"
VIP6_B = addr(VIP6)
VIPS = (VIP_B, VIP6_B)
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
    4: ("fd00:fb::11", 8080),
    5: ("fd00:fb::12", 8080),
    6: ("fd00:fb::13", 8081),
    7: ("fd00:fb:3::10", 8080),
}
V6_BACKEND = 4  # IPv6 backend ids are the IPv4 ones + 4, IPv6 groups the IPv4 ones + 4
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
    vip: bytes = VIP_B

    @property
    def vip_text(self) -> str:
        return VIP if self.vip == VIP_B else VIP6


SERVICES = (
    FuzzService(80, TCP, 0, 0, WEIGHTED_RANDOM),
    FuzzService(53, UDP, 1, 0, WEIGHTED_RANDOM),
    FuzzService(81, TCP, 2, 2, MAGLEV),
    FuzzService(5353, UDP, 3, 3, SOURCE_HASH),
    FuzzService(80, TCP, 4, 4, WEIGHTED_RANDOM, VIP6_B),
    FuzzService(53, UDP, 5, 4, WEIGHTED_RANDOM, VIP6_B),
    FuzzService(81, TCP, 6, 6, MAGLEV, VIP6_B),
    FuzzService(5353, UDP, 7, 7, SOURCE_HASH, VIP6_B),
)
SERVICE_BY_KEY = {(s.vip, s.port, s.proto): s for s in SERVICES}
ROUTE_SERVICE, ROUTE_CIDR, ROUTE_GROUP = 0, "192.168.0.0/16", 1  # clients of 192.168/16 on tcp/80
ROUTE6_SERVICE, ROUTE6_CIDR, ROUTE6_GROUP = 4, "fd00:fc::/32", 5  # clients of fd00:fc::/32 on [VIP6]:80
ROUTES = ((ROUTE_SERVICE, ROUTE_CIDR, ROUTE_GROUP), (ROUTE6_SERVICE, ROUTE6_CIDR, ROUTE6_GROUP))
_ROUTE_NETS = {service: (ipaddress.ip_network(cidr), group) for service, cidr, group in ROUTES}
MAX_GROUPS = 8


def _group_tables() -> dict[int, list[int]]:
    def names(ids: Sequence[int]) -> dict[int, tuple[str, int]]:
        return {bid: (f"{BACKENDS[bid][0]}:{BACKENDS[bid][1]}", 1) for bid in ids}

    v4 = {
        0: weighted_table({0: 3, 1: 2, 2: 1}, TABLE_SIZE),
        1: weighted_table({3: 1}, TABLE_SIZE),
        2: maglev_table(names([0, 1, 2]), TABLE_SIZE),
        3: weighted_table({0: 1, 2: 1}, TABLE_SIZE),
    }
    v6 = {
        group + V6_BACKEND: (
            maglev_table(names([4, 5, 6]), TABLE_SIZE) if group == 2 else [bid + V6_BACKEND for bid in table]
        )
        for group, table in v4.items()
    }
    return {**v4, **v6}


GROUP_TABLES = _group_tables()


def group_of(svc: FuzzService, saddr: bytes) -> int:
    """The selection table a new flow of `svc` from `saddr` uses (the source route, else the default)."""
    route = _ROUTE_NETS.get(svc.service_id)
    if route is not None and ipaddress.ip_address(saddr) in route[0]:
        return route[1]
    return svc.group
