# SPDX-License-Identifier: Apache-2.0
"""The XDP fast path (bpf/lb_fastpath.h) on single packets: redirect with new MACs and TTL - 1 when the
kernel's tables know the way, XDP_PASS with the DNATed packet and a counted reason when they don't.

bpf_fib_lookup in BPF_PROG_TEST_RUN looks at the routes and neighbours of the network namespace of
the thread that runs the program, with the ingress interface given in the run's context (xdp_md
ingress_ifindex). So the packets run from a thread that entered a namespace of this test's own:

    ns lbfp16: fpin 10.0.0.1/24 (ingress, the VIP's network; forwarding on)
               fpout 10.0.2.1/24 mtu 1400, managed: 10.0.2.11 has a permanent neighbour, 10.0.2.12 none
               fpun 10.0.3.1/24, not managed: 10.0.3.13 has a permanent neighbour
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lbtui.control.selection import weighted_table
from lbtui.dataplane.fastpath import NextHopWatch, rtnetlink_socket
from lbtui.dataplane.progrun import XDP_PASS, XDP_REDIRECT, RunResult, run_program
from tests.support.bpfrun import MAC_CLIENT, MAC_LB, TABLE, VIP, Programs, assert_checksums_valid
from tests.support.maps import write_table

NS = "lbfp16"
CLIENT = "10.0.0.2"
CLIENT_NO_NEIGH = "10.0.0.3"
NEIGH_MAC = "02:00:00:16:02:11"
UNMANAGED_MAC = "02:00:00:16:03:13"
CLONE_NEWNET = 0x40000000
# backend id -> address; service port -> the one backend its table holds
FP_BACKENDS = {0: ("10.0.2.11", 8080), 1: ("10.0.2.12", 8080), 2: ("10.0.3.13", 8080)}
TO_NEIGH, TO_NO_NEIGH, TO_UNMANAGED, UDP_TO_NEIGH = 80, 81, 82, 53


def _ip(*args: str) -> str:
    return subprocess.run(["ip", "-n", NS, *args], check=True, capture_output=True, text=True).stdout


def _links() -> dict[str, dict[str, object]]:
    return {link["ifname"]: link for link in json.loads(_ip("-j", "link", "show"))}


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, dict[str, object]]]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for name, addr in (("fpin", "10.0.0.1/24"), ("fpout", "10.0.2.1/24"), ("fpun", "10.0.3.1/24")):
            _ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
            _ip("addr", "add", addr, "dev", name)
            _ip("link", "set", name, "up")
            _ip("link", "set", name + "p", "up")
        _ip("link", "set", "fpout", "mtu", "1400")
        _ip("neigh", "replace", "10.0.2.11", "lladdr", NEIGH_MAC, "dev", "fpout", "nud", "permanent")
        _ip("neigh", "replace", "10.0.3.13", "lladdr", UNMANAGED_MAC, "dev", "fpun", "nud", "permanent")
        _ip("neigh", "replace", CLIENT, "lladdr", MAC_CLIENT, "dev", "fpin", "nud", "permanent")
        subprocess.run(
            ["ip", "netns", "exec", NS, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"], check=True
        )
        yield _links()
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


@pytest.fixture(scope="module")
def progs(lab: dict[str, dict[str, object]]) -> Iterator[Programs]:
    p = Programs(fast_path=True)
    for bid, (ip, port) in FP_BACKENDS.items():
        p.maps.set_backend(bid, ip, port, active=True)
    for sid, (port, proto) in enumerate(
        ((TO_NEIGH, "tcp"), (TO_NO_NEIGH, "tcp"), (TO_UNMANAGED, "tcp"), (UDP_TO_NEIGH, "udp"))
    ):
        p.set_service(port, proto, sid, "weighted-random")
        write_table(p.maps, sid, weighted_table({(0, 1, 2, 0)[sid]: 1}, TABLE))
    p.maps.set_fast_path_interfaces([int(str(lab["fpout"]["ifindex"])), int(str(lab["fpin"]["ifindex"]))])
    yield p
    p.close()


@pytest.fixture(autouse=True)
def empty_conntrack(progs: Programs) -> None:
    progs.clear()
    progs.loaded.table("lb_fp_nexthops").clear()


def run_in_lab(
    progs: Programs, lab: dict[str, dict[str, object]], frame: bytes, reply: bool = False
) -> RunResult:
    """Run lbtui_xdp on `frame` as if it arrived on fpin (`reply`: lbtui_xdp_reply as if on fpout),
    from a thread inside the lab namespace."""
    fd = progs.loaded.xdp_reply_fn.fd if reply else progs.loaded.xdp_fn.fd
    ifindex = int(str(lab["fpout" if reply else "fpin"]["ifindex"]))
    out: list[RunResult | BaseException] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        ns_fd = os.open(f"/run/netns/{NS}", os.O_RDONLY)
        try:
            if libc.setns(ns_fd, CLONE_NEWNET) != 0:  # this thread only; it ends right after
                raise OSError(ctypes.get_errno(), "setns")
            out.append(run_program(fd, frame, ingress_ifindex=ifindex))
        except BaseException as exc:  # handed to the test's thread
            out.append(exc)
        finally:
            os.close(ns_fd)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def to_vip(dport: int, ttl: int = 64, payload: bytes = b"", options: list | None = None, udp: bool = False):
    l4 = UDP(sport=40000, dport=dport) if udp else TCP(sport=40000, dport=dport, flags="S", seq=1000)
    ip = IP(src=CLIENT, dst=VIP, ttl=ttl, options=options or [])
    return bytes(Ether(src=MAC_CLIENT, dst=MAC_LB) / ip / l4 / Raw(payload))


def counting(progs: Programs, run) -> tuple[RunResult, dict[str, int]]:
    """The run's result and how each fast_path_* counter moved."""
    before = progs.global_counters()
    r = run()
    after = progs.global_counters()
    moved = {k: after[k] - before[k] for k in after if k.startswith("fast_path_") and after[k] != before[k]}
    return r, moved


def test_known_neighbour_is_redirected_with_new_macs_and_ttl(progs, lab):
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(TO_NEIGH)))
    assert r.retval == XDP_REDIRECT
    assert moved == {"fast_path_forwarded": 1}
    out = Ether(r.data)
    assert out.dst == NEIGH_MAC
    assert out.src == lab["fpout"]["address"]
    assert (out[IP].dst, out[TCP].dport, out[IP].ttl) == ("10.0.2.11", 8080, 63)
    assert_checksums_valid(r.data)


def test_udp_is_redirected_too(progs, lab):
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(UDP_TO_NEIGH, udp=True, payload=b"q")))
    assert r.retval == XDP_REDIRECT
    assert moved == {"fast_path_forwarded": 1}
    assert Ether(r.data)[UDP].dport == 8080
    assert_checksums_valid(r.data)


def assert_passed_dnated(r: RunResult, backend: str, ttl: int = 64) -> None:
    """Today's path: XDP_PASS, DNAT done, MACs and TTL as they came (the kernel forwards it)."""
    assert r.retval == XDP_PASS
    out = Ether(r.data)
    assert (out.src, out.dst) == (MAC_CLIENT, MAC_LB)
    assert (out[IP].dst, out[IP].ttl) == (backend, ttl)
    assert_checksums_valid(r.data)


def test_no_neighbour_yet_falls_back(progs, lab):
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(TO_NO_NEIGH)))
    assert moved == {"fast_path_no_neigh": 1}
    assert_passed_dnated(r, "10.0.2.12")


def test_unmanaged_egress_falls_back(progs, lab):
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(TO_UNMANAGED)))
    assert moved == {"fast_path_unmanaged": 1}
    assert_passed_dnated(r, "10.0.3.13")


def test_larger_than_egress_mtu_falls_back(progs, lab):
    frame = to_vip(UDP_TO_NEIGH, udp=True, payload=b"x" * 1400)  # 1428 bytes of IP > mtu 1400
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, frame))
    assert moved == {"fast_path_frag_needed": 1}
    assert_passed_dnated(r, "10.0.2.11")
    fits = to_vip(UDP_TO_NEIGH, udp=True, payload=b"x" * 1372)  # exactly 1400
    assert run_in_lab(progs, lab, fits).retval == XDP_REDIRECT


def test_expiring_ttl_falls_back(progs, lab):
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(TO_NEIGH, ttl=1)))
    assert moved == {"fast_path_ttl": 1}
    assert_passed_dnated(r, "10.0.2.11", ttl=1)


def test_ip_options_fall_back(progs, lab):
    frame = to_vip(TO_NEIGH, options=[IPOption_NOP()] * 4)
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, frame))
    assert moved == {"fast_path_ip_options": 1}
    assert_passed_dnated(r, "10.0.2.11")


def test_vlan_tagged_frames_fall_back(progs, lab):
    from scapy.layers.l2 import Dot1Q

    pkt = Ether(to_vip(TO_NEIGH))
    tagged = bytes(Ether(src=MAC_CLIENT, dst=MAC_LB) / Dot1Q(vlan=16) / pkt[IP])
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, tagged))
    assert r.retval == XDP_PASS
    assert moved == {"fast_path_vlan": 1}


def test_no_route_information_outside_the_lab_falls_back(progs):
    """Run without an ingress interface (the loopback of this namespace): whatever the fib says
    that is not SUCCESS with a managed egress, the packet takes today's path."""
    r = run_program(progs.loaded.xdp_fn.fd, to_vip(TO_NEIGH))
    assert r.retval == XDP_PASS
    assert Ether(r.data)[IP].dst == "10.0.2.11"


def test_established_packets_take_the_fast_path_too(progs, lab):
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    ack = (
        Ether(src=MAC_CLIENT, dst=MAC_LB)
        / IP(src=CLIENT, dst=VIP)
        / TCP(sport=40000, dport=TO_NEIGH, flags="A", seq=1001, ack=5001)
    )
    r = run_in_lab(progs, lab, bytes(ack))
    assert r.retval == XDP_REDIRECT
    assert Ether(r.data).dst == NEIGH_MAC
    assert_checksums_valid(r.data)


def backend_reply(client: str, sport: int = 40000, flags: str = "SA", backend: str = "10.0.2.11") -> bytes:
    return bytes(
        Ether(src=NEIGH_MAC, dst="02:00:00:00:00:99")
        / IP(src=backend, dst=client)
        / TCP(sport=8080, dport=sport, flags=flags, seq=5000, ack=1001)
    )


def test_reply_is_snated_in_xdp_and_redirected_to_the_client(progs, lab):
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    before = progs.backend_stats(0)["packets_out"]
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, backend_reply(CLIENT), reply=True))
    assert r.retval == XDP_REDIRECT
    assert moved == {"fast_path_reply_forwarded": 1}
    out = Ether(r.data)
    assert (out.src, out.dst) == (lab["fpin"]["address"], MAC_CLIENT)
    assert (out[IP].src, out[TCP].sport, out[IP].dst, out[TCP].dport) == (VIP, TO_NEIGH, CLIENT, 40000)
    assert out[IP].ttl == 63
    assert_checksums_valid(r.data)
    assert progs.backend_stats(0)["packets_out"] == before + 1  # the flow saw its reply once


def test_reply_without_a_client_neighbour_is_left_to_tc_untouched(progs, lab):
    syn = bytes(
        Ether(src=MAC_CLIENT, dst=MAC_LB)
        / IP(src=CLIENT_NO_NEIGH, dst=VIP)
        / TCP(sport=40000, dport=TO_NEIGH, flags="S", seq=1000)
    )
    assert run_in_lab(progs, lab, syn).retval == XDP_REDIRECT
    before = progs.backend_stats(0)["packets_out"]
    reply = backend_reply(CLIENT_NO_NEIGH)
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, reply, reply=True))
    assert r.retval == XDP_PASS and r.data == reply
    assert moved == {"fast_path_no_neigh": 1}
    assert progs.backend_stats(0)["packets_out"] == before  # nothing counted yet: TC will
    verdict, snat = progs.tc(reply)
    assert Ether(snat)[IP].src == VIP
    assert progs.backend_stats(0)["packets_out"] == before + 1


def test_packets_that_are_no_reply_pass_untouched(progs, lab):
    stray = backend_reply(CLIENT, sport=41234)  # no flow on that port
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, stray, reply=True))
    assert (r.retval, r.data, moved) == (XDP_PASS, stray, {})


# ---- the next-hop cache (lb_fp_nexthops, docs/datapath.md#next-hop-cache)


def ack_to_vip(dport: int = TO_NEIGH, payload: bytes = b"") -> bytes:
    return bytes(
        Ether(src=MAC_CLIENT, dst=MAC_LB)
        / IP(src=CLIENT, dst=VIP)
        / TCP(sport=40000, dport=dport, flags="A", seq=1001, ack=5001)
        / Raw(payload)
    )


def next_hops(progs: Programs) -> dict[tuple[int, str], Any]:
    table = progs.loaded.table("lb_fp_nexthops")
    return {(k.ifindex, ipv4(k.daddr)): v for k, v in table.items()}


def ipv4(be32: int) -> str:
    return socket.inet_ntoa(be32.to_bytes(4, "little"))


@pytest.fixture
def other_mac(lab: dict[str, dict[str, object]]) -> Iterator[str]:
    """10.0.2.11 answers from another MAC for the test's duration."""
    mac = "02:00:00:16:02:99"
    _ip("neigh", "replace", "10.0.2.11", "lladdr", mac, "dev", "fpout", "nud", "permanent")
    yield mac
    _ip("neigh", "replace", "10.0.2.11", "lladdr", NEIGH_MAC, "dev", "fpout", "nud", "permanent")


def test_a_cached_next_hop_gives_the_bytes_a_lookup_gives(progs, lab):
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT  # looked up, remembered
    key = (int(str(lab["fpin"]["ifindex"])), "10.0.2.11")
    assert set(next_hops(progs)) == {key}
    assert next_hops(progs)[key].ifindex == int(str(lab["fpout"]["ifindex"]))
    cached, moved = counting(progs, lambda: run_in_lab(progs, lab, ack_to_vip()))
    assert cached.retval == XDP_REDIRECT and moved == {"fast_path_forwarded": 1}
    progs.loaded.table("lb_fp_nexthops").clear()
    looked_up = run_in_lab(progs, lab, ack_to_vip())
    assert looked_up.retval == XDP_REDIRECT
    assert cached.data == looked_up.data
    assert_checksums_valid(cached.data)


def test_a_changed_neighbour_is_used_once_the_generation_moves(progs, lab, other_mac):
    progs.maps.forget_next_hops()
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    _ip("neigh", "replace", "10.0.2.11", "lladdr", "02:00:00:16:02:98", "dev", "fpout", "nud", "permanent")
    # the remembered MAC until the entry is stale (what NextHopWatch prevents: test below)
    assert Ether(run_in_lab(progs, lab, ack_to_vip()).data).dst == other_mac
    gen = progs.maps.next_hop_generation()
    progs.maps.forget_next_hops()
    assert progs.maps.next_hop_generation() == gen + 1
    r = run_in_lab(progs, lab, ack_to_vip())
    assert r.retval == XDP_REDIRECT and Ether(r.data).dst == "02:00:00:16:02:98"


def test_an_expired_next_hop_is_looked_up_again(progs, lab, other_mac):
    _ip("neigh", "replace", "10.0.2.11", "lladdr", NEIGH_MAC, "dev", "fpout", "nud", "permanent")
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    _ip("neigh", "replace", "10.0.2.11", "lladdr", other_mac, "dev", "fpout", "nud", "permanent")
    table = progs.loaded.table("lb_fp_nexthops")
    for key, value in table.items():
        value.expires_ns = 1  # as if LB_FP_NH_TTL_NS had passed
        table[key] = value
    r = run_in_lab(progs, lab, ack_to_vip())
    assert r.retval == XDP_REDIRECT and Ether(r.data).dst == other_mac
    assert all(v.expires_ns > 1 for v in table.values())  # remembered again, fresh


def test_a_cached_next_hop_still_sends_oversized_packets_to_the_kernel(progs, lab):
    small = to_vip(UDP_TO_NEIGH, udp=True, payload=b"q")
    assert run_in_lab(progs, lab, small).retval == XDP_REDIRECT  # remembered, 29 bytes known to fit
    big = to_vip(UDP_TO_NEIGH, udp=True, payload=b"x" * 1400)  # 1428 > mtu 1400
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, big))
    assert moved == {"fast_path_frag_needed": 1}
    assert_passed_dnated(r, "10.0.2.11")
    assert len(next_hops(progs)) == 1  # only that packet was too large: the way is still known
    fits = to_vip(UDP_TO_NEIGH, udp=True, payload=b"x" * 1372)  # exactly 1400: asked, fits
    assert run_in_lab(progs, lab, fits).retval == XDP_REDIRECT
    assert next(iter(next_hops(progs).values())).len_ok == 1400
    _ip("link", "set", "fpout", "mtu", "1300")
    try:
        progs.maps.forget_next_hops()  # what NextHopWatch does on the link change
        r, moved = counting(progs, lambda: run_in_lab(progs, lab, fits))
        assert moved == {"fast_path_frag_needed": 1}
        assert_passed_dnated(r, "10.0.2.11")
    finally:
        _ip("link", "set", "fpout", "mtu", "1400")


def test_an_interface_taken_out_of_lb_fp_ifaces_is_not_used_from_the_cache(progs, lab):
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    managed = progs.maps.fast_path_interfaces()
    progs.maps.set_fast_path_interfaces(managed - {int(str(lab["fpout"]["ifindex"]))})
    try:
        r, moved = counting(progs, lambda: run_in_lab(progs, lab, ack_to_vip()))
        assert moved == {"fast_path_unmanaged": 1}
        assert r.retval == XDP_PASS
        assert next_hops(progs) == {}  # forgotten
    finally:
        progs.maps.set_fast_path_interfaces(managed)


def test_the_next_hop_watch_forgets_on_a_neighbour_change(progs, lab, other_mac):
    """NextHopWatch listens in the namespace its socket was made in: made from a thread in the lab."""
    made: list[socket.socket] = []

    def make() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        ns_fd = os.open(f"/run/netns/{NS}", os.O_RDONLY)
        try:
            assert libc.setns(ns_fd, CLONE_NEWNET) == 0  # this thread only; it ends right after
            made.append(rtnetlink_socket())
        finally:
            os.close(ns_fd)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    watch = NextHopWatch(progs.maps.forget_next_hops, made[0])
    try:
        assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT  # remembered
        gen = progs.maps.next_hop_generation()
        new_mac = "02:00:00:16:02:97"
        _ip("neigh", "replace", "10.0.2.11", "lladdr", new_mac, "dev", "fpout", "nud", "permanent")
        deadline = time.monotonic() + 5
        while progs.maps.next_hop_generation() == gen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert progs.maps.next_hop_generation() != gen
        r = run_in_lab(progs, lab, ack_to_vip())
        assert Ether(r.data).dst == new_mac
    finally:
        watch.close()


def test_new_flows_to_a_known_backend_use_its_remembered_next_hop(progs, lab, other_mac):
    """Keyed per backend (not per client): another client's SYN takes the remembered answer."""
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    _ip("neigh", "replace", "10.0.2.11", "lladdr", "02:00:00:16:02:96", "dev", "fpout", "nud", "permanent")
    other = bytes(
        Ether(src=MAC_CLIENT, dst=MAC_LB)
        / IP(src="10.0.0.77", dst=VIP)
        / TCP(sport=40077, dport=TO_NEIGH, flags="S", seq=1000)
    )
    r = run_in_lab(progs, lab, other)
    assert r.retval == XDP_REDIRECT and Ether(r.data).dst == other_mac  # no lookup: remembered
    assert len(next_hops(progs)) == 1
