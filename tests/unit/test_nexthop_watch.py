# SPDX-License-Identifier: Apache-2.0
"""Which rtnetlink messages make the next-hop watch forget the fast path's next hops
(lbtui/dataplane/nexthop_watch.py), with messages encoded by pyroute2 and fed through a socket pair;
tests/bpf/nexthop_cache.py does it with the kernel's own messages."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import NUD_FAILED, NUD_INCOMPLETE, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from lbtui.dataplane.nexthop_watch import (
    AF_BRIDGE,
    NUD_DELAY,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_PROBE,
    NUD_REACHABLE,
    NUD_STALE,
    RTM_DELNEIGH,
    RTM_NEWNEIGH,
    KnownNeighbours,
    NextHopWatch,
)
from lbtui.model import NextHopWatchCounts

MAC, OTHER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


def neigh(
    dst: str | None = "10.1.2.3",
    mac: str | None = MAC,
    state: int = NUD_REACHABLE,
    *,
    kind: int = RTM_NEWNEIGH,
    family: int = socket.AF_INET,
    ifindex: int = 4,
) -> bytes:
    msg = ndmsg()
    msg["header"]["type"] = kind
    msg["family"], msg["ifindex"], msg["state"] = family, ifindex, state
    msg["attrs"] = [(name, value) for name, value in (("NDA_DST", dst), ("NDA_LLADDR", mac)) if value]
    msg.encode()
    return bytes(msg.data)


def other(kind: str) -> bytes:
    msg: Any
    if kind == "link":
        msg = ifinfmsg()
        msg["header"]["type"] = RTM_NEWLINK
        msg["index"] = 4
        msg["attrs"] = [("IFLA_IFNAME", "eth9"), ("IFLA_MTU", 1400)]
    elif kind == "address":
        msg = ifaddrmsg()
        msg["header"]["type"] = RTM_NEWADDR
        msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, 24, 4
        msg["attrs"] = [("IFA_ADDRESS", "10.1.2.1")]
    else:
        msg = rtmsg()
        msg["header"]["type"] = RTM_NEWROUTE
        msg["family"], msg["dst_len"] = socket.AF_INET, 24
        msg["attrs"] = [("RTA_DST", "10.9.0.0"), ("RTA_OIF", 4)]
    msg.encode()
    return bytes(msg.data)


class Feed:
    """A watch on one end of a datagram socket pair; `send` writes datagrams and waits until the watch
    has read them, `forgets` is how often it called forget."""

    def __init__(self) -> None:
        self.theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        self.forgets = 0
        self.links = 0  # calls of links_changed
        self.watch = NextHopWatch(self._forget, ours, links_changed=self._links_changed)

    def _forget(self) -> None:
        self.forgets += 1

    def _links_changed(self) -> None:
        self.links += 1

    def send(self, *datagrams: bytes) -> NextHopWatchCounts:
        before = self.watch.counts.batches
        for d in datagrams:
            self.theirs.send(d)
        deadline = time.monotonic() + 5
        while self.watch.counts.batches == before and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.02)  # a batch that straddled two reads
        return self.watch.counts

    def forgets_after(self, *datagrams: bytes) -> int:
        before = self.forgets
        self.send(*datagrams)
        return self.forgets - before


@pytest.fixture
def feed() -> Iterator[Feed]:
    f = Feed()
    yield f
    f.watch.close()
    f.theirs.close()


def test_a_first_sighting_forgets_and_a_repeat_in_a_valid_state_does_not(feed: Feed) -> None:
    assert feed.forgets_after(neigh(state=NUD_REACHABLE)) == 1
    # the NUD timers' walk, same lladdr: bpf_fib_lookup answers the same in every one of these states
    for state in (NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_REACHABLE, NUD_PERMANENT, NUD_NOARP):
        assert feed.forgets_after(neigh(state=state)) == 0, state
    counts = feed.watch.counts
    assert (counts.messages, counts.skipped, counts.forgets) == (7, 6, 1)


@pytest.mark.parametrize(
    "change",
    [
        neigh(mac=OTHER_MAC),  # a new lladdr
        neigh(mac=None, state=NUD_FAILED),  # out of NUD_VALID: the lookup answers NO_NEIGH
        neigh(mac=None, state=NUD_INCOMPLETE),
        neigh(kind=RTM_DELNEIGH),
    ],
    ids=["lladdr", "failed", "incomplete", "deleted"],
)
def test_what_can_change_an_answer_forgets(feed: Feed, change: bytes) -> None:
    assert feed.forgets_after(neigh()) == 1
    assert feed.forgets_after(change) == 1
    assert feed.forgets_after(neigh()) == 1  # seen again: a first sighting (or the old lladdr back)


def test_neighbours_are_told_apart_by_family_interface_and_address(feed: Feed) -> None:
    assert feed.forgets_after(neigh()) == 1
    assert feed.forgets_after(neigh(ifindex=5)) == 1
    assert feed.forgets_after(neigh(dst="10.1.2.4")) == 1
    assert feed.forgets_after(neigh(dst="fd00::3", family=socket.AF_INET6)) == 1
    assert feed.forgets_after(neigh(), neigh(ifindex=5), neigh(dst="fd00::3", family=socket.AF_INET6)) == 0


@pytest.mark.parametrize("kind", ["link", "address", "route"])
def test_links_addresses_and_routes_always_forget(feed: Feed, kind: str) -> None:
    assert feed.forgets_after(other(kind)) == 1
    assert feed.forgets_after(other(kind)) == 1


def test_one_forget_per_batch_and_every_message_is_followed(feed: Feed) -> None:
    """A batch whose first message changes an answer still records the neighbours after it. (One
    datagram of several messages, as the kernel sends them: datagrams sent one by one may be read as
    one batch or several, however fast the watch's thread is.)"""
    assert feed.forgets_after(other("route") + neigh(dst="10.1.2.7") + neigh(dst="10.1.2.8")) == 1
    assert feed.forgets_after(neigh(dst="10.1.2.7", state=NUD_STALE) + neigh(dst="10.1.2.8")) == 0


def test_bridge_fdb_entries_change_no_answer(feed: Feed) -> None:
    """A bridge forwards a redirected frame by its FDB; no bpf_fib_lookup answer comes from it."""
    assert feed.forgets_after(neigh(dst=None, family=AF_BRIDGE), neigh(dst=None, family=AF_BRIDGE)) == 0


def test_what_is_not_understood_forgets(feed: Feed) -> None:
    whole = neigh()
    assert feed.forgets_after(whole) == 1
    assert feed.forgets_after(whole[:-8]) == 1  # a message cut short
    assert feed.forgets_after(whole + b"\x00" * 12) == 1  # a tail that is no message
    assert feed.forgets_after(neigh(dst=None)) == 1  # a neighbour without an address
    assert feed.watch.counts.lost == 2


class LosingSocket:
    """A socket whose receive buffer overflowed once (ENOBUFS), with a repeat of a known neighbour queued."""

    def __init__(self) -> None:
        self.queue: list[bytes | OSError] = []

    def recvmsg(self, size: int) -> tuple[bytes, list[Any], int, Any]:
        if not self.queue:
            raise BlockingIOError
        item = self.queue.pop(0)
        if isinstance(item, OSError):
            raise item
        return item, [], 0, None


def test_lost_messages_forget_and_empty_the_neighbour_table() -> None:
    sock = LosingSocket()
    watch = NextHopWatch(lambda: None, _idle_socket())
    watch.close()  # its reading half only, called on this thread
    watch._sock = sock  # type: ignore[assignment]
    sock.queue = [neigh()]
    assert watch._read_batch() is True
    sock.queue = [neigh()]
    assert watch._read_batch() is False
    sock.queue = [OSError(errno.ENOBUFS, "No buffer space available")]
    assert watch._read_batch() is True
    sock.queue = [neigh()]
    assert watch._read_batch() is True  # the lost messages may have changed it: known no more
    assert watch.counts.lost == 1


def _idle_socket() -> socket.socket:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.close()
    a.setblocking(False)
    return a


def test_the_neighbour_table_is_bounded_oldest_first() -> None:
    from lbtui.dataplane.nexthop_watch import Neighbour

    known = KnownNeighbours(limit=3)

    def seen(i: int) -> bool:
        return known.changes_answers(Neighbour(socket.AF_INET, 4, f"10.0.0.{i}", MAC, NUD_REACHABLE, False))

    assert all(seen(i) for i in range(3))
    assert not seen(0)  # a repeat: 0 becomes the newest
    assert seen(3)  # evicts 1, the oldest
    assert (len(known), known.evicted) == (3, 1)
    assert not seen(0) and not seen(2) and not seen(3)
    assert seen(1)  # forgotten: a first sighting again


def test_close_reports_the_counts(feed: Feed, caplog: pytest.LogCaptureFixture) -> None:
    feed.send(neigh())
    feed.send(neigh(state=NUD_STALE))
    with caplog.at_level("INFO", logger="lbtui.dataplane.nexthop_watch"):
        feed.watch.close()
    assert "2 messages in 2 batches, 1 changed nothing; 1 forgets" in caplog.text


def test_a_link_message_has_the_interfaces_read_again_before_the_forget(feed: Feed) -> None:
    """A link message may carry a new MAC of an interface lb_fp_ifaces holds: links_changed runs (the
    data path rewrites lb_fp_ifaces), once per batch; other messages do not call it."""
    assert feed.forgets_after(other("route"), neigh()) >= 1
    assert feed.links == 0
    assert feed.forgets_after(other("link") + other("link")) == 1
    assert feed.links == 1
