# SPDX-License-Identifier: Apache-2.0
"""The fast path's next-hop caches (bpf/lb_nexthop.h, docs/datapath.md#next-hop-cache), tested once
for both directions and both families: tests/bpf/test_fast_path.py (IPv4) and test_fast_path6.py
(IPv6) import these test functions and give them a `way` fixture, parametrised over "forward"
(lbtui_xdp, lb_fp_nexthops) and "reply" (lbtui_tc_reply, lb_fp_reply_nexthops), built on their labs.

Each way sends UDP datagrams of one flow through its program, from the first (looked up and
remembered) on; its next hop is a neighbour with a permanent entry whose MAC the tests change.
The forward way's destination-MAC check (fp_ingress_ok) is tested here too, on an `ingress` fixture
of each family: datagrams of the forward flow addressed to any MAC.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from scapy.layers.l2 import Ether

from lbtui.dataplane.nexthop_watch import NextHopWatch, rtnetlink_socket
from lbtui.dataplane.progrun import TC_ACT_REDIRECT, XDP_PASS, XDP_REDIRECT, RunResult
from lbtui.dataplane.structs import mac_to_bytes
from tests.support.bpfrun import Programs, assert_checksums_valid, counting

CLONE_NEWNET = 0x40000000

__all__ = [  # what a test module imports with *: the tests and the fixture they use besides `way`
    "restore_mac",
    "test_a_new_mac_of_the_ingress_interface_replaces_the_remembered_one",
    "test_an_ingress_interface_outside_lb_fp_ifaces_falls_back_as_unmanaged",
    "test_frames_not_addressed_to_the_ingress_interface_are_never_forwarded_fast",
    "test_a_cached_next_hop_gives_the_bytes_a_lookup_gives",
    "test_a_cached_next_hop_still_sends_oversized_packets_to_the_kernel",
    "test_a_changed_neighbour_is_used_once_the_generation_moves",
    "test_an_expired_next_hop_is_looked_up_again",
    "test_an_interface_taken_out_of_lb_fp_ifaces_is_not_used_from_the_cache",
    "test_the_next_hop_watch_forgets_on_a_neighbour_change",
    "test_the_next_hop_watch_keeps_next_hops_over_a_neighbour_state_within_nud_valid",
    "test_the_next_hop_watch_forgets_on_route_address_and_forwarding_changes",
]


# direction -> its cache, the program's verdict for a redirect, the counter of a redirect
DIRECTIONS = {
    "forward": ("lb_fp_nexthops", XDP_REDIRECT, "fast_path_forwarded"),
    "reply": ("lb_fp_reply_nexthops", TC_ACT_REDIRECT, "fast_path_reply_forwarded"),
}


@dataclass(frozen=True)
class Way:
    """One direction of one family's fast path in a test lab."""

    direction: str  # "forward" or "reply"
    ns: str  # the lab's network namespace
    family: str  # "-4" or "-6" for ip(8)
    send: Callable[[int], RunResult]  # one datagram of the flow, `size` bytes of IP
    small: int  # a size that fits
    egress: str  # the interface the flow leaves through
    egress_ifindex: int
    mtu: int  # the egress interface's MTU
    next_hop: str  # the address of the next hop (a permanent neighbour on egress)
    mac: str  # its MAC

    @property
    def table(self) -> str:
        return DIRECTIONS[self.direction][0] + ("6" if self.family == "-6" else "")

    @property
    def redirect(self) -> int:
        return int(DIRECTIONS[self.direction][1])

    @property
    def counter(self) -> str:
        return str(DIRECTIONS[self.direction][2])

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.ns, self.family, *args], check=True, capture_output=True)

    def set_mac(self, mac: str) -> None:
        self.ip("neigh", "replace", self.next_hop, "lladdr", mac, "dev", self.egress, "nud", "permanent")


def entries(progs: Programs, way: Way) -> list[Any]:
    return list(progs.loaded.table(way.table).values())


@pytest.fixture
def restore_mac(way: Way) -> Iterator[None]:
    yield
    way.set_mac(way.mac)


def test_a_cached_next_hop_gives_the_bytes_a_lookup_gives(progs, way):
    first = way.send(way.small)  # looked up, remembered
    assert first.retval == way.redirect
    assert [e.ifindex for e in entries(progs, way)] == [way.egress_ifindex]
    cached, moved = counting(progs, lambda: way.send(way.small))
    assert cached.retval == way.redirect and moved == {way.counter: 1}
    progs.clear_next_hops()
    looked_up = way.send(way.small)
    assert looked_up.retval == way.redirect
    assert cached.data == looked_up.data == first.data
    assert Ether(cached.data).dst == way.mac
    assert_checksums_valid(cached.data)


def test_a_changed_neighbour_is_used_once_the_generation_moves(progs, way, restore_mac):
    assert way.send(way.small).retval == way.redirect
    way.set_mac("02:00:00:16:99:98")
    # the remembered MAC until the entry is stale (what NextHopWatch prevents: test below)
    assert Ether(way.send(way.small).data).dst == way.mac
    gen = progs.maps.next_hop_generation()
    progs.maps.forget_next_hops()
    assert progs.maps.next_hop_generation() == gen + 1
    r = way.send(way.small)
    assert r.retval == way.redirect and Ether(r.data).dst == "02:00:00:16:99:98"


def test_an_expired_next_hop_is_looked_up_again(progs, way, restore_mac):
    assert way.send(way.small).retval == way.redirect
    way.set_mac("02:00:00:16:99:97")
    table = progs.loaded.table(way.table)
    for key, value in table.items():
        value.expires_ns = 1  # as if LB_FP_NH_TTL_NS had passed
        table[key] = value
    r = way.send(way.small)
    assert r.retval == way.redirect and Ether(r.data).dst == "02:00:00:16:99:97"
    assert all(v.expires_ns > 1 for v in table.values())  # remembered again, fresh


def test_a_cached_next_hop_still_sends_oversized_packets_to_the_kernel(progs, way):
    assert way.send(way.small).retval == way.redirect  # remembered, `small` known to fit
    r, moved = counting(progs, lambda: way.send(way.mtu + 1))
    assert moved == {"fast_path_frag_needed": 1}
    assert r.retval != way.redirect
    assert len(entries(progs, way)) == 1  # only that packet was too large: the way is still known
    assert way.send(way.mtu).retval == way.redirect  # asked, fits
    assert [e.len_ok for e in entries(progs, way)] == [way.mtu]
    way.ip("link", "set", way.egress, "mtu", str(way.mtu - 100))
    try:
        progs.maps.forget_next_hops()  # what NextHopWatch does on the link change
        r, moved = counting(progs, lambda: way.send(way.mtu))
        assert moved == {"fast_path_frag_needed": 1}
        assert r.retval != way.redirect
    finally:
        way.ip("link", "set", way.egress, "mtu", str(way.mtu))


def test_an_interface_taken_out_of_lb_fp_ifaces_is_not_used_from_the_cache(progs, way):
    assert way.send(way.small).retval == way.redirect
    managed = progs.maps.fast_path_interfaces()
    progs.maps.set_fast_path_interfaces({i: mac for i, mac in managed.items() if i != way.egress_ifindex})
    try:
        r, moved = counting(progs, lambda: way.send(way.small))
        assert moved == {"fast_path_unmanaged": 1}
        assert r.retval != way.redirect
        assert entries(progs, way) == []  # forgotten
    finally:
        progs.maps.set_fast_path_interfaces(managed)


def watch_socket(ns: str) -> socket.socket:
    """An rtnetlink socket of the namespace `ns` (NextHopWatch listens where its socket was made):
    made from a thread that entered it."""
    made: list[socket.socket] = []

    def make() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        ns_fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            assert libc.setns(ns_fd, CLONE_NEWNET) == 0  # this thread only; it ends right after
            made.append(rtnetlink_socket())
        finally:
            os.close(ns_fd)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    return made[0]


def wait_for_new_generation(progs: Programs, gen: int) -> bool:
    deadline = time.monotonic() + 5
    while progs.maps.next_hop_generation() == gen and time.monotonic() < deadline:
        time.sleep(0.02)
    return progs.maps.next_hop_generation() != gen


def test_the_next_hop_watch_forgets_on_a_neighbour_change(progs, way, restore_mac):
    watch = NextHopWatch(progs.maps.forget_next_hops, watch_socket(way.ns))
    try:
        assert way.send(way.small).retval == way.redirect  # remembered
        gen = progs.maps.next_hop_generation()
        way.set_mac("02:00:00:16:99:96")
        assert wait_for_new_generation(progs, gen)
        assert Ether(way.send(way.small).data).dst == "02:00:00:16:99:96"
    finally:
        watch.close()


@pytest.mark.parametrize("change", ["route", "address", "forwarding"])
def test_the_next_hop_watch_forgets_on_route_address_and_forwarding_changes(progs, way, change):
    """Routes and addresses of the way's family, and the forwarding switch (netconf), change what
    bpf_fib_lookup answers: each bumps the generation."""
    watch = NextHopWatch(progs.maps.forget_next_hops, watch_socket(way.ns))
    v6 = way.family == "-6"
    prefix, addr = ("fd00:16:99::/64", "fd00:16:98::1/64") if v6 else ("10.99.99.0/24", "10.99.98.1/24")
    sysctl = f"net.ipv{6 if v6 else 4}.conf.{way.egress}.forwarding"
    try:
        gen = progs.maps.next_hop_generation()
        if change == "route":
            way.ip("route", "add", prefix, "via", way.next_hop, "dev", way.egress)
        elif change == "address":
            way.ip("addr", "add", addr, "dev", way.egress, *(["nodad"] if v6 else []))
        else:
            subprocess.run(["ip", "netns", "exec", way.ns, "sysctl", "-qw", f"{sysctl}=0"], check=True)
        assert wait_for_new_generation(progs, gen)
    finally:
        watch.close()
        if change == "route":
            way.ip("route", "del", prefix)
        elif change == "address":
            way.ip("addr", "del", addr, "dev", way.egress)
        else:
            subprocess.run(["ip", "netns", "exec", way.ns, "sysctl", "-qw", f"{sysctl}=1"], check=True)


def wait_for_messages(watch: NextHopWatch, seen: int) -> bool:
    """Until the watch has read more than `seen` messages (each command's own: nothing else changes
    the lab's neighbours during a test run)."""
    deadline = time.monotonic() + 5
    while watch.counts.messages <= seen and time.monotonic() < deadline:
        time.sleep(0.02)
    return watch.counts.messages > seen


def test_the_next_hop_watch_keeps_next_hops_over_a_neighbour_state_within_nud_valid(progs, way, restore_mac):
    """A known neighbour moved to another state in NUD_VALID with the same lladdr (what the NUD timers
    do all day) leaves the generation alone; a new lladdr and a deletion move it."""
    watch = NextHopWatch(progs.maps.forget_next_hops, watch_socket(way.ns))
    try:
        assert way.send(way.small).retval == way.redirect  # remembered
        gen = progs.maps.next_hop_generation()
        way.ip("neigh", "change", way.next_hop, "lladdr", way.mac, "dev", way.egress, "nud", "reachable")
        assert wait_for_new_generation(progs, gen)  # the watch's first sighting of it
        gen, seen = progs.maps.next_hop_generation(), watch.counts
        way.ip("neigh", "change", way.next_hop, "lladdr", way.mac, "dev", way.egress, "nud", "stale")
        assert wait_for_messages(watch, seen.messages)
        assert watch.counts.skipped == seen.skipped + 1
        assert progs.maps.next_hop_generation() == gen
        r, moved = counting(progs, lambda: way.send(way.small))
        assert r.retval == way.redirect and Ether(r.data).dst == way.mac and moved == {way.counter: 1}

        way.ip(
            "neigh", "change", way.next_hop, "lladdr", "02:00:00:16:99:95", "dev", way.egress, "nud", "stale"
        )
        assert wait_for_new_generation(progs, gen)
        assert Ether(way.send(way.small).data).dst == "02:00:00:16:99:95"

        gen = progs.maps.next_hop_generation()
        way.ip("neigh", "del", way.next_hop, "dev", way.egress)
        assert wait_for_new_generation(progs, gen)
        r, moved = counting(progs, lambda: way.send(way.small))
        assert r.retval != way.redirect and moved == {"fast_path_no_neigh": 1}
    finally:
        watch.close()


# ---- the forward way's destination MAC (fp_ingress_ok)


@dataclass(frozen=True)
class Ingress:
    """Where the forward way's frames arrive: the test module's `ingress` fixture."""

    run: Callable[[bytes], RunResult]  # lbtui_xdp on a frame arriving there
    frame: bytes  # a datagram of the forward flow, addressed to the interface
    ifindex: int
    mac: str  # the interface's MAC (lb_fp_ifaces)
    table: str  # the family's forward cache

    def send(self, mac: str) -> RunResult:
        """The datagram addressed to `mac`."""
        return self.run(mac_to_bytes(mac) + self.frame[6:])


# destinations the kernel does not forward from (skb->pkt_type OTHERHOST, BROADCAST, MULTICAST)
NOT_OURS = {
    "another-host": "02:00:00:16:00:99",
    "broadcast": "ff:ff:ff:ff:ff:ff",
    "ipv4-multicast": "01:00:5e:00:00:01",
    "ipv6-multicast": "33:33:00:00:00:01",
}


def remembered(progs: Programs, ingress: Ingress) -> list[bytes]:
    return [bytes(v) for v in progs.loaded.table(ingress.table).values()]


@pytest.mark.parametrize("mac", list(NOT_OURS.values()), ids=list(NOT_OURS))
def test_frames_not_addressed_to_the_ingress_interface_are_never_forwarded_fast(progs, ingress, mac):
    """The kernel forwards only frames sent to the ingress interface's MAC: the fast path passes the
    others (DNATed, their MACs as they came), whether its cache knows the backend's way (hit) or not
    (miss), and remembers nothing from them."""
    r, moved = counting(progs, lambda: ingress.send(mac))  # nothing remembered yet
    assert (r.retval, moved) == (XDP_PASS, {"fast_path_other_host": 1})
    assert Ether(r.data).dst == mac
    assert remembered(progs, ingress) == []
    r, moved = counting(progs, lambda: ingress.send(ingress.mac))  # looked up, remembered
    assert (r.retval, moved) == (XDP_REDIRECT, {"fast_path_forwarded": 1})
    known = remembered(progs, ingress)
    assert [bytes(v.imac).hex(":") for v in progs.loaded.table(ingress.table).values()] == [ingress.mac]
    r, moved = counting(progs, lambda: ingress.send(mac))  # the way is remembered now
    assert (r.retval, moved) == (XDP_PASS, {"fast_path_other_host": 1})
    assert Ether(r.data).dst == mac
    assert remembered(progs, ingress) == known
    assert ingress.send(ingress.mac).retval == XDP_REDIRECT


def test_a_new_mac_of_the_ingress_interface_replaces_the_remembered_one(progs, ingress):
    """lb_fp_ifaces rewritten with another MAC (a link's new address): the generation moves, so the
    old MAC remembered with the way no longer lets frames through."""
    assert ingress.send(ingress.mac).retval == XDP_REDIRECT
    managed = progs.maps.fast_path_interfaces()
    new = "02:00:00:16:00:42"
    progs.maps.set_fast_path_interfaces({**managed, ingress.ifindex: new})
    try:
        r, moved = counting(progs, lambda: ingress.send(ingress.mac))
        assert (r.retval, moved) == (XDP_PASS, {"fast_path_other_host": 1})
        assert ingress.send(new).retval == XDP_REDIRECT
    finally:
        progs.maps.set_fast_path_interfaces(managed)


def test_an_ingress_interface_outside_lb_fp_ifaces_falls_back_as_unmanaged(progs, ingress):
    assert ingress.send(ingress.mac).retval == XDP_REDIRECT
    managed = progs.maps.fast_path_interfaces()
    progs.maps.set_fast_path_interfaces({i: mac for i, mac in managed.items() if i != ingress.ifindex})
    try:
        r, moved = counting(progs, lambda: ingress.send(ingress.mac))
        assert (r.retval, moved) == (XDP_PASS, {"fast_path_unmanaged": 1})
    finally:
        progs.maps.set_fast_path_interfaces(managed)
