# SPDX-License-Identifier: Apache-2.0
"""VIP announcement, the kernel side: one host route per announced VIP in a routing table of its own.

BIRD's kernel protocol learns the routes of that table (`kernel table N; learn;`) the moment they
change (netlink notifications, no scan wait) and its BGP protocol exports them to the routers
(configs/bird/lb-host.conf). So announcing is adding a route and withdrawing is deleting it:
the state lives in the kernel, survives a BIRD restart (BIRD learns the table again when it comes
back) and can be inspected with `ip route show table N proto lbtui`. No ip rule points at the
table, so the routes never steer a packet on this host.

The routes are marked with their own protocol number (ROUTE_PROTO): `announced()` lists only ours
and `withdraw_all()` never touches a route an operator put in the table.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from lbtui.dataplane.netlink import off_loop
from lbtui.dataplane.port import DataplaneError

DEFAULT_TABLE = 4242
ROUTE_PROTO = 241  # name it: `echo "241 lbtui" > /etc/iproute2/rt_protos.d/lbtui.conf`
_EEXIST, _ESRCH, _ENOENT = 17, 3, 2


class VipRoutes:
    """announce(vip) / withdraw(vip) / announced(), in the caller's network namespace or in `netns`
    (a name under /run/netns: the labs read and drive every host of theirs from one process)."""

    def __init__(
        self, table: int = DEFAULT_TABLE, netns: str | None = None, proto: int = ROUTE_PROTO
    ) -> None:
        if not 1 <= table <= 0xFFFFFFFF or table in (253, 254, 255):
            raise ValueError(f"routing table {table}: use a table of its own (not local/main/default)")
        self.table = table
        self.netns = netns
        self.proto = proto

    def _ipr(self) -> Any:
        from pyroute2 import IPRoute

        return IPRoute(netns=self.netns) if self.netns else IPRoute()

    @staticmethod
    def _prefix(vip: str) -> tuple[int, str, int]:
        ip = ipaddress.ip_address(vip)
        return (socket.AF_INET if ip.version == 4 else socket.AF_INET6), str(ip), ip.max_prefixlen

    @off_loop
    def announce(self, vip: str) -> bool:
        """Add the VIP's route; False if it was announced already."""
        from pyroute2.netlink.exceptions import NetlinkError

        family, dst, plen = self._prefix(vip)
        with self._ipr() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            try:
                ipr.route(
                    "add", family=family, dst=dst, dst_len=plen, oif=lo, table=self.table, proto=self.proto
                )
            except NetlinkError as exc:
                if exc.code == _EEXIST:
                    return False
                raise DataplaneError(f"cannot announce {vip} (route in table {self.table}): {exc}") from exc
        return True

    @off_loop
    def withdraw(self, vip: str) -> bool:
        """Delete the VIP's route; False if it was not announced."""
        from pyroute2.netlink.exceptions import NetlinkError

        family, dst, plen = self._prefix(vip)
        with self._ipr() as ipr:
            try:
                ipr.route("del", family=family, dst=dst, dst_len=plen, table=self.table, proto=self.proto)
            except NetlinkError as exc:
                if exc.code in (_ESRCH, _ENOENT):
                    return False
                raise DataplaneError(f"cannot withdraw {vip} (route in table {self.table}): {exc}") from exc
        return True

    @off_loop
    def announced(self) -> set[str]:
        """The VIPs whose routes are in the table now."""
        out: set[str] = set()
        with self._ipr() as ipr:
            for family in (socket.AF_INET, socket.AF_INET6):
                for route in ipr.get_routes(family=family, table=self.table):
                    full = route["dst_len"] == (32 if family == socket.AF_INET else 128)
                    if route["proto"] == self.proto and full:
                        out.add(str(ipaddress.ip_address(route.get_attr("RTA_DST"))))
        return out

    def withdraw_all(self) -> set[str]:
        """Withdraw every VIP this table announces (a clean stop); returns them."""
        vips = self.announced()
        for vip in vips:
            self.withdraw(vip)
        return vips


class MemoryVipRoutes:
    """VipRoutes' behaviour without a kernel (tests, the demo without root): a set, and every change
    in `log` as ("announce" | "withdraw", vip)."""

    def __init__(self, table: int = DEFAULT_TABLE, proto: int = ROUTE_PROTO) -> None:
        self.table, self.proto = table, proto
        self.routes: set[str] = set()
        self.log: list[tuple[str, str]] = []
        self.fail: str | None = None  # set: every change raises DataplaneError with this message

    def announce(self, vip: str) -> bool:
        return self._change("announce", vip)

    def withdraw(self, vip: str) -> bool:
        return self._change("withdraw", vip)

    def announced(self) -> set[str]:
        return set(self.routes)

    def _change(self, action: str, vip: str) -> bool:
        if self.fail is not None:
            raise DataplaneError(self.fail)
        present = vip in self.routes
        if present == (action == "announce"):
            return False
        (self.routes.add if action == "announce" else self.routes.discard)(vip)
        self.log.append((action, vip))
        return True


class RouteReader:
    """The next hops a routing table holds for a host route, read over one netlink socket kept open
    (cheap enough to poll every millisecond: the labs time announcements at their router with it)."""

    def __init__(self, netns: str | None = None) -> None:
        from pyroute2 import IPRoute

        self._ipr: Any = IPRoute(netns=netns) if netns else IPRoute()

    def nexthops(self, vip: str, table: int = 254) -> set[str]:
        """Gateways of the route to exactly `vip`/32 (/128): several for an ECMP route, none if absent."""
        family, dst, plen = VipRoutes._prefix(vip)
        out: set[str] = set()
        # a dump filtered here: get_routes(dst=...) would be a lookup (`ip route get`), one hop only
        for route in self._ipr.get_routes(family=family, table=table):
            if route["dst_len"] != plen or route.get_attr("RTA_DST") != dst:
                continue
            gateway = route.get_attr("RTA_GATEWAY")
            if gateway:
                out.add(str(gateway))
            for hop in route.get_attr("RTA_MULTIPATH") or []:
                gw = hop.get_attr("RTA_GATEWAY")
                if gw:
                    out.add(str(gw))
        return out

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> RouteReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
