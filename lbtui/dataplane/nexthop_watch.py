# SPDX-License-Identifier: Apache-2.0
"""The next-hop watch: makes the fast path's next-hop caches (bpf/lb_nexthop.h) forget their answers
(`Maps.forget_next_hops` bumps lb_fp_gen) as soon as the kernel announces a change that may alter what
bpf_fib_lookup answers, and only then (docs/datapath.md#next-hop-cache).

Every link, address, route and forwarding-switch (netconf) message may change an answer, and so may
anything the watch does not understand or a lost message (ENOBUFS). Neighbour messages are the common
ones (each NUD timer step: REACHABLE -> STALE -> DELAY -> PROBE -> REACHABLE) and almost never do:
bpf_fib_lookup answers from a neighbour entry whose state is in NUD_VALID, with its lladdr
(`bpf_ipv4_fib_lookup`/`bpf_ipv6_fib_lookup` in the kernel's net/core/filter.c; NUD_VALID in
include/net/neighbour.h). A remembered answer can go wrong only when a neighbour's lladdr changes, it
leaves NUD_VALID or it is deleted; `KnownNeighbours` tells those apart from repeats.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lbtui.dataplane.netlink import SocketWatch
from lbtui.model import NextHopWatchCounts

log = logging.getLogger(__name__)

# rtnetlink multicast groups (linux/rtnetlink.h; bind takes bit group - 1): what can change
# bpf_fib_lookup's answer, for both families. Netconf carries the forwarding switches.
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4  # IPv4 and IPv6 neighbours (and the bridges' FDB: AF_BRIDGE)
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
RTMGRP_IPV4_NETCONF = 1 << (24 - 1)  # RTNLGRP_IPV4_NETCONF
RTMGRP_IPV6_NETCONF = 1 << (25 - 1)  # RTNLGRP_IPV6_NETCONF
NEXT_HOP_GROUPS = (
    RTMGRP_LINK
    | RTMGRP_NEIGH
    | RTMGRP_IPV4_IFADDR
    | RTMGRP_IPV4_ROUTE
    | RTMGRP_IPV6_IFADDR
    | RTMGRP_IPV6_ROUTE
    | RTMGRP_IPV4_NETCONF
    | RTMGRP_IPV6_NETCONF
)

RTM_NEWLINK, RTM_DELLINK = 16, 17  # linux/rtnetlink.h
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
# linux/neighbour.h: the states bpf_fib_lookup answers from (the kernel's NUD_VALID)
NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_NOARP, NUD_PERMANENT = 0x02, 0x04, 0x08, 0x10, 0x40, 0x80
NUD_VALID = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY
AF_BRIDGE = 7  # a bridge's FDB entry: the bridge forwards by it after the redirect, no lookup reads it

# A neighbour table is bounded by the kernel's gc_thresh3 (1,024 per family by default); a host that
# raised it on a hostile LAN could be sent more: the oldest are forgotten (and count as new again).
NEIGHBOUR_LIMIT = 16_384
RECV_BUFFER = 65_536  # one netlink datagram; the kernel sends each notification in one skb


def rtnetlink_socket(groups: int = NEXT_HOP_GROUPS) -> socket.socket:
    """A netlink socket of the current thread's network namespace that receives `groups`."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
    sock.bind((0, groups))
    return sock


@dataclass(frozen=True)
class Neighbour:
    """What one neighbour message says, as far as bpf_fib_lookup is concerned."""

    family: int
    ifindex: int
    destination: str | None
    lladdr: str | None
    state: int
    deleted: bool  # RTM_DELNEIGH


class KnownNeighbours:
    """The neighbours last seen in a state bpf_fib_lookup answers from, with their lladdr, oldest
    first. A message that repeats what is known changes no answer; anything else does."""

    def __init__(self, limit: int = NEIGHBOUR_LIMIT) -> None:
        self._limit = limit
        self._known: OrderedDict[tuple[int, int, str], str | None] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._known)

    def clear(self) -> None:
        """Messages were lost: nothing known is sure any more."""
        self._known.clear()

    def changes_answers(self, n: Neighbour) -> bool:
        if n.family == AF_BRIDGE:
            return False
        if n.destination is None:
            return True  # not an ARP/ND entry as we know them: the safe side
        key = (n.family, n.ifindex, n.destination)
        if n.deleted or not n.state & NUD_VALID:
            self._known.pop(key, None)
            return True
        if key in self._known and self._known[key] == n.lladdr:
            self._known.move_to_end(key)
            return False
        self._known[key] = n.lladdr
        self._known.move_to_end(key)
        if len(self._known) > self._limit:
            self._known.popitem(last=False)
            self.evicted += 1
        return True


def neighbour_of(msg: Any) -> Neighbour | None:
    """The neighbour a decoded rtnetlink message (pyroute2's ndmsg) is about; None for any other."""
    mtype = msg["header"].get("type")
    if mtype not in (RTM_NEWNEIGH, RTM_DELNEIGH) or msg["header"].get("error") is not None:
        return None
    return Neighbour(
        family=int(msg["family"]),
        ifindex=int(msg["ifindex"]),
        destination=msg.get_attr("NDA_DST"),
        lladdr=msg.get_attr("NDA_LLADDR"),
        state=int(msg["state"]),
        deleted=mtype == RTM_DELNEIGH,
    )


class NextHopWatch(SocketWatch):
    """Calls `forget` (Maps.forget_next_hops) after a batch of rtnetlink messages about links,
    neighbours, IPv4 and IPv6 addresses, routes and forwarding switches that may change what
    bpf_fib_lookup answers, on a thread of its own: a changed MAC, route, MTU or a link gone reaches
    both directions' caches as soon as the kernel announces it, not after the caches' 1 s.
    A batch with a link message (or lost messages) first calls `links_changed`, if given: the
    interfaces' MACs that lb_fp_ifaces holds are read again (a changed MAC, docs/datapath.md#fast-path)."""

    def __init__(
        self,
        forget: Callable[[], None],
        sock: socket.socket | None = None,
        links_changed: Callable[[], None] | None = None,
    ) -> None:
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        self._forget = forget
        self._links_changed = links_changed
        self._link_seen = False
        self._marshal = MarshalRtnl()
        self._neighbours = KnownNeighbours()
        self._tally: Counter[str] = Counter()  # the counts but evicted, on the watch's thread
        super().__init__(sock or rtnetlink_socket(), "lbtui-next-hops")

    @property
    def counts(self) -> NextHopWatchCounts:
        t = self._tally
        return NextHopWatchCounts(
            t["batches"], t["messages"], t["skipped"], t["forgets"], t["lost"], self._neighbours.evicted
        )

    def batch(self) -> None:
        messages, skipped = self._tally["messages"], self._tally["skipped"]
        changed = self._read_batch()
        self._tally["batches"] += 1
        messages, skipped = self._tally["messages"] - messages, self._tally["skipped"] - skipped
        if not changed:
            log.debug("fast path: next-hop watch: %d messages, none changes an answer", messages)
            return
        self._tally["forgets"] += 1
        log.debug(
            "fast path: next-hop watch: %d messages (%d change nothing): forgetting next hops",
            messages,
            skipped,
        )
        link_seen, self._link_seen = self._link_seen, False
        if link_seen and self._links_changed is not None:
            self._links_changed()
        self._forget()

    def _read_batch(self) -> bool:
        """Read every datagram queued; True if any of them may change an answer."""
        changed = False
        while True:
            try:
                data, _, flags, _ = self._sock.recvmsg(RECV_BUFFER)
            except BlockingIOError:
                return changed
            except OSError as exc:  # ENOBUFS: messages lost, so forget anyway
                log.debug("fast path: next-hop watch: %s", exc)
                self._neighbours.clear()
                self._link_seen = True  # a lost one may have been about a link
                self._tally["lost"] += 1
                return True
            if not data:
                return changed
            if flags & socket.MSG_TRUNC:
                self._tally["lost"] += 1
                changed = True
                continue
            changed |= self._classify(data)

    def _classify(self, data: bytes) -> bool:
        """Whether any message of one datagram may change an answer (every message is looked at, so
        that the neighbour table follows them all)."""
        messages = list(self._marshal.parse(data))
        changed = sum(m["header"]["length"] for m in messages) < len(data)  # a part not decoded
        self._tally["lost"] += changed
        for msg in messages:
            self._tally["messages"] += 1
            self._link_seen |= msg["header"].get("type") in (RTM_NEWLINK, RTM_DELLINK)
            neighbour = neighbour_of(msg)
            if neighbour is None or self._neighbours.changes_answers(neighbour):
                changed = True
            else:
                self._tally["skipped"] += 1
        return changed

    def close(self) -> None:
        super().close()
        c = self.counts
        log.info(
            "fast path: next-hop watch: %d messages in %d batches, %d changed nothing; %d forgets "
            "(%d for lost messages); %d neighbours dropped from its table",
            c.messages,
            c.batches,
            c.skipped,
            c.forgets,
            c.lost,
            c.evicted,
        )
