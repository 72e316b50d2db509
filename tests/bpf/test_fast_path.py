# SPDX-License-Identifier: Apache-2.0
"""The fast path on single packets: lbtui_xdp (bpf/lb_fastpath.h) redirects DNATed packets with new MACs
and TTL - 1 when the kernel's tables know the way, else XDP_PASS with the DNATed packet and a counted
reason; lbtui_tc_reply (bpf/lb_fastpath_reply.h) does the same for replies at TC ingress, SNAT
included, and leaves what it is not sure about untouched to lbtui_tc.

bpf_fib_lookup in BPF_PROG_TEST_RUN looks at the routes and neighbours of the network namespace of
the thread that runs the program, with the ingress interface given in the run's context (xdp_md
ingress_ifindex; __sk_buff ifindex). So the packets run from a thread that entered a namespace of this
test's own (a test run's skb is CHECKSUM_NONE: the e2e tests cover CHECKSUM_PARTIAL and GSO skbs):

    ns lbfp16: fpin 10.0.0.1/24 (ingress, the VIP's network; forwarding on)
               fpout 10.0.2.1/24 mtu 1400, managed: 10.0.2.11 has a permanent neighbour, 10.0.2.12 none
               fpun 10.0.3.1/24, not managed: 10.0.3.13 has a permanent neighbour
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lbtui.control.selection import weighted_table
from lbtui.dataplane.progrun import (
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    TC_ACT_UNSPEC,
    XDP_PASS,
    XDP_REDIRECT,
    RunResult,
    run_program,
    skb_context,
)
from tests.bpf.nexthop_cache import *  # noqa: F403 (the shared cache tests, collected here with `way`)
from tests.bpf.nexthop_cache import Ingress, Way
from tests.support.bpfrun import MAC_CLIENT, MAC_LB, TABLE, VIP, Programs, assert_checksums_valid, counting
from tests.support.maps import write_table

NS = f"lbfp16-{os.getpid()}"  # of this run: other worktrees run these tests at the same time
CLIENT = "10.0.0.2"
CLIENT_NO_NEIGH = "10.0.0.3"
NEIGH_MAC = "02:00:00:16:02:11"
UNMANAGED_MAC = "02:00:00:16:03:13"
CLONE_NEWNET = 0x40000000
# backend id -> address; service port -> the one backend its table holds
FP_BACKENDS = {0: ("10.0.2.11", 8080), 1: ("10.0.2.12", 8080), 2: ("10.0.3.13", 8080)}
TO_NEIGH, TO_NO_NEIGH, TO_UNMANAGED, UDP_TO_NEIGH = 80, 81, 82, 53
FPOUT_MAC = "02:00:00:16:02:01"
LB_FP_REPLY_MARK = 0x4C42FA57  # bpf/lb_fastpath_reply.h


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
        _ip("link", "set", "fpout", "address", FPOUT_MAC)
        _ip("link", "set", "fpin", "address", MAC_LB)  # the client frames' destination
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
    p.maps.set_fast_path_interfaces({ifindex(lab, n): str(lab[n]["address"]) for n in ("fpout", "fpin")})
    yield p
    p.close()


@pytest.fixture(autouse=True)
def empty_conntrack(progs: Programs) -> None:
    progs.clear()
    progs.clear_next_hops()


def in_lab(work: Callable[[], RunResult]) -> RunResult:
    """work() from a thread inside the lab namespace (bpf_fib_lookup looks there)."""
    out: list[RunResult | BaseException] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            ns_fd = os.open(f"/run/netns/{NS}", os.O_RDONLY)
        except OSError as exc:
            out.append(exc)
            return
        try:
            if libc.setns(ns_fd, CLONE_NEWNET) != 0:  # this thread only; it ends right after
                raise OSError(ctypes.get_errno(), "setns")
            out.append(work())
        except BaseException as exc:  # handed to the test's thread
            out.append(exc)
        finally:
            os.close(ns_fd)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def ifindex(lab: dict[str, dict[str, object]], name: str) -> int:
    return int(str(lab[name]["ifindex"]))


def run_in_lab(progs: Programs, lab: dict[str, dict[str, object]], frame: bytes) -> RunResult:
    """Run lbtui_xdp on `frame` as if it arrived on fpin."""
    return in_lab(lambda: run_program(progs.loaded.xdp_fn.fd, frame, ingress_ifindex=ifindex(lab, "fpin")))


def run_reply(
    progs: Programs, lab: dict[str, dict[str, object]], frame: bytes, gso_size: int = 0
) -> RunResult:
    """Run lbtui_tc_reply on `frame` as if it arrived on fpout (TC ingress)."""
    ctx = skb_context(ifindex(lab, "fpout"), gso_size=gso_size, gso_segs=2 if gso_size else 0)
    return in_lab(lambda: run_program(progs.loaded.tc_reply_fn.fd, frame, ctx=ctx))


def to_vip(dport: int, ttl: int = 64, payload: bytes = b"", options: list | None = None, udp: bool = False):
    l4 = UDP(sport=40000, dport=dport) if udp else TCP(sport=40000, dport=dport, flags="S", seq=1000)
    ip = IP(src=CLIENT, dst=VIP, ttl=ttl, options=options or [])
    return bytes(Ether(src=MAC_CLIENT, dst=MAC_LB) / ip / l4 / Raw(payload))


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


def backend_reply(
    client: str, sport: int = 40000, flags: str = "SA", ttl: int = 64, payload: bytes = b"", options=None
) -> bytes:
    """A backend's reply as it reaches fpout (addressed to fpout's MAC: the host routes it)."""
    return bytes(
        Ether(src=NEIGH_MAC, dst=FPOUT_MAC)
        / IP(src="10.0.2.11", dst=client, ttl=ttl, options=options or [])
        / TCP(sport=8080, dport=sport, flags=flags, seq=5000, ack=1001)
        / Raw(payload)
    )


def mark_of(r: RunResult) -> int:
    return int(struct.unpack_from("=I", r.ctx, 8)[0])


def test_reply_is_snated_at_tc_ingress_and_redirected_to_the_client(progs, lab):
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    before = progs.backend_stats(0)["packets_out"]
    r, moved = counting(progs, lambda: run_reply(progs, lab, backend_reply(CLIENT)))
    assert r.retval == TC_ACT_REDIRECT
    assert moved == {"fast_path_reply_forwarded": 1}
    out = Ether(r.data)
    assert (out.src, out.dst) == (lab["fpin"]["address"], MAC_CLIENT)
    assert (out[IP].src, out[TCP].sport, out[IP].dst, out[TCP].dport) == (VIP, TO_NEIGH, CLIENT, 40000)
    assert out[IP].ttl == 63
    assert_checksums_valid(r.data)
    assert progs.backend_stats(0)["packets_out"] == before + 1  # the flow saw its reply once
    assert mark_of(r) == LB_FP_REPLY_MARK

    # on its way out of fpin the redirected reply meets lbtui_tc: let through as it is, its mark
    # cleared, nothing counted again
    tc_before = progs.global_counters()
    again = run_program(progs.loaded.tc_fn.fd, r.data, ctx=skb_context(0, mark=LB_FP_REPLY_MARK))
    assert (again.retval, again.data, mark_of(again)) == (TC_ACT_OK, r.data, 0)
    assert progs.global_counters() == tc_before
    assert progs.backend_stats(0)["packets_out"] == before + 1


def test_a_reply_with_a_mark_of_its_own_keeps_it(progs, lab):
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    ctx = skb_context(ifindex(lab, "fpout"), mark=7)
    r = in_lab(lambda: run_program(progs.loaded.tc_reply_fn.fd, backend_reply(CLIENT), ctx=ctx))
    assert (r.retval, mark_of(r)) == (TC_ACT_REDIRECT, 7)
    # lbtui_tc on the way out: no reverse entry matches VIP -> client, so it passes untouched
    again = run_program(progs.loaded.tc_fn.fd, r.data, ctx=skb_context(0, mark=7))
    assert (again.retval, again.data) == (TC_ACT_OK, r.data)


def test_udp_replies_keep_a_zero_checksum_zero(progs, lab):
    query = to_vip(UDP_TO_NEIGH, udp=True, payload=b"q")
    for checksum in (None, 0):
        progs.clear()
        assert run_in_lab(progs, lab, query).retval == XDP_REDIRECT
        udp = UDP(sport=8080, dport=40000) if checksum is None else UDP(sport=8080, dport=40000, chksum=0)
        reply = bytes(
            Ether(src=NEIGH_MAC, dst=FPOUT_MAC) / IP(src="10.0.2.11", dst=CLIENT) / udp / Raw(b"a" * 30)
        )
        r = run_reply(progs, lab, reply)
        assert r.retval == TC_ACT_REDIRECT
        out = Ether(r.data)
        assert (out[IP].src, out[UDP].sport) == (VIP, UDP_TO_NEIGH)
        if checksum == 0:
            assert out[UDP].chksum == 0
        assert_checksums_valid(r.data)


def assert_reply_left_to_tc(progs: Programs, r: RunResult, reply: bytes, packets_out_before: int) -> None:
    """Untouched, nothing counted for the flow yet; lbtui_tc then SNATs it as without the fast path."""
    assert (r.retval, r.data, mark_of(r)) == (TC_ACT_OK, reply, 0)
    assert progs.backend_stats(0)["packets_out"] == packets_out_before
    _, snat = progs.tc(reply)
    assert Ether(snat)[IP].src == VIP
    assert progs.backend_stats(0)["packets_out"] == packets_out_before + 1


def test_reply_without_a_client_neighbour_is_left_to_tc_untouched(progs, lab):
    syn = bytes(
        Ether(src=MAC_CLIENT, dst=MAC_LB)
        / IP(src=CLIENT_NO_NEIGH, dst=VIP)
        / TCP(sport=40000, dport=TO_NEIGH, flags="S", seq=1000)
    )
    assert run_in_lab(progs, lab, syn).retval == XDP_REDIRECT
    before = progs.backend_stats(0)["packets_out"]
    reply = backend_reply(CLIENT_NO_NEIGH)
    r, moved = counting(progs, lambda: run_reply(progs, lab, reply))
    assert moved == {"fast_path_no_neigh": 1}
    assert_reply_left_to_tc(progs, r, reply, before)


@pytest.mark.parametrize(
    ("reason", "reply"),
    [
        ("fast_path_ttl", backend_reply(CLIENT, ttl=1)),
        ("fast_path_ip_options", backend_reply(CLIENT, options=[IPOption_NOP()] * 4)),
        ("fast_path_frag_needed", backend_reply(CLIENT, payload=b"x" * 1500)),  # 1540 > fpin's 1500
    ],
)
def test_replies_the_fast_path_is_not_sure_about_are_left_to_tc(progs, lab, reason, reply):
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    before = progs.backend_stats(0)["packets_out"]
    r, moved = counting(progs, lambda: run_reply(progs, lab, reply))
    assert moved == {reason: 1}
    assert_reply_left_to_tc(progs, r, reply, before)


def test_gso_replies_are_checked_by_their_segments(progs, lab):
    """A GSO skb's length is the sum of its segments: the MTU applies to each (gso_size + headers)."""
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    reply = backend_reply(CLIENT, flags="A", payload=b"x" * 2900)
    r, moved = counting(progs, lambda: run_reply(progs, lab, reply, gso_size=1448))
    assert (r.retval, moved) == (TC_ACT_REDIRECT, {"fast_path_reply_forwarded": 1})  # 1488 fit 1500
    assert_checksums_valid(r.data)
    before = progs.backend_stats(0)["packets_out"]
    r, moved = counting(progs, lambda: run_reply(progs, lab, reply, gso_size=1472))
    assert moved == {"fast_path_frag_needed": 1}  # 20 + 20 + 1472 = 1512 > 1500
    assert_reply_left_to_tc(progs, r, reply, before)


def test_reply_toward_an_unmanaged_interface_is_left_to_tc(progs, lab):
    client = "10.0.3.13"  # routed through fpun, which lbtui does not manage
    syn = bytes(
        Ether(src=MAC_CLIENT, dst=MAC_LB)
        / IP(src=client, dst=VIP)
        / TCP(sport=40000, dport=TO_NEIGH, flags="S")
    )
    assert run_in_lab(progs, lab, syn).retval == XDP_REDIRECT
    before = progs.backend_stats(0)["packets_out"]
    reply = backend_reply(client)
    r, moved = counting(progs, lambda: run_reply(progs, lab, reply))
    assert moved == {"fast_path_unmanaged": 1}
    assert_reply_left_to_tc(progs, r, reply, before)


def test_reply_when_forwarding_is_off_on_the_backend_side_is_left_to_tc(progs, lab):
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    before = progs.backend_stats(0)["packets_out"]
    reply = backend_reply(CLIENT)
    sysctl = ["ip", "netns", "exec", NS, "sysctl", "-qw"]
    subprocess.run([*sysctl, "net.ipv4.conf.fpout.forwarding=0"], check=True)
    try:
        r, moved = counting(progs, lambda: run_reply(progs, lab, reply))
    finally:
        subprocess.run([*sysctl, "net.ipv4.conf.fpout.forwarding=1"], check=True)
    assert moved == {"fast_path_fib_other": 1}
    assert_reply_left_to_tc(progs, r, reply, before)


def test_vlan_tagged_replies_pass_untouched(progs, lab):
    from scapy.layers.l2 import Dot1Q

    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    inner = Ether(backend_reply(CLIENT))
    tagged = bytes(Ether(src=NEIGH_MAC, dst=FPOUT_MAC) / Dot1Q(vlan=16) / inner[IP])
    r, moved = counting(progs, lambda: run_reply(progs, lab, tagged))
    assert (r.retval, r.data, moved) == (TC_ACT_UNSPEC, tagged, {})  # skb->protocol 802.1Q: not looked at


def test_replies_to_another_host_are_not_routed(progs, lab):
    """A frame the host only overhears (not addressed to its MAC) is not the host's to forward."""
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    reply = bytes(Ether(src=NEIGH_MAC, dst="02:00:00:00:00:99") / Ether(backend_reply(CLIENT))[IP])
    r, moved = counting(progs, lambda: run_reply(progs, lab, reply))
    assert (r.retval, r.data, moved) == (TC_ACT_UNSPEC, reply, {})


def test_packets_that_are_no_reply_pass_untouched(progs, lab):
    """...and go on to the hook's next filter (TC_ACT_UNSPEC): another instance's reply program on a
    shared backend-facing interface, or anyone's; TC_ACT_OK would end the chain here."""
    stray = backend_reply(CLIENT, sport=41234)  # no flow on that port
    r, moved = counting(progs, lambda: run_reply(progs, lab, stray))
    assert (r.retval, r.data, moved) == (TC_ACT_UNSPEC, stray, {})


# ---- the next-hop caches (tests/bpf/nexthop_cache.py, both directions)


@pytest.fixture
def ingress(progs: Programs, lab: dict[str, dict[str, object]]) -> Ingress:
    """The forward way's datagrams on fpin (its MAC: MAC_LB), to any destination MAC."""
    frame = to_vip(UDP_TO_NEIGH, udp=True, payload=b"q")
    return Ingress(lambda f: run_in_lab(progs, lab, f), frame, ifindex(lab, "fpin"), MAC_LB, "lb_fp_nexthops")


@pytest.fixture(params=["forward", "reply"])
def way(request: pytest.FixtureRequest, progs: Programs, lab: dict[str, dict[str, object]]) -> Way:
    """UDP datagrams of one flow: to VIP:53 on fpin toward 10.0.2.11 (fpout, mtu 1400), or its
    replies on fpout toward the client (fpin, mtu 1500)."""
    if request.param == "forward":

        def send(size: int) -> RunResult:
            return run_in_lab(progs, lab, to_vip(UDP_TO_NEIGH, udp=True, payload=b"x" * (size - 28)))

        return Way(
            "forward", NS, "-4", send, 29, "fpout", ifindex(lab, "fpout"), 1400, "10.0.2.11", NEIGH_MAC
        )
    assert run_in_lab(progs, lab, to_vip(UDP_TO_NEIGH, udp=True, payload=b"q")).retval == XDP_REDIRECT

    def reply(size: int) -> RunResult:
        udp = UDP(sport=8080, dport=40000) / Raw(b"a" * (size - 28))
        return run_reply(
            progs, lab, bytes(Ether(src=NEIGH_MAC, dst=FPOUT_MAC) / IP(src="10.0.2.11", dst=CLIENT) / udp)
        )

    return Way("reply", NS, "-4", reply, 58, "fpin", ifindex(lab, "fpin"), 1500, CLIENT, MAC_CLIENT)


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


def test_new_flows_to_a_known_backend_use_its_remembered_next_hop(progs, lab, other_mac):
    """Keyed per backend (not per client): another client's SYN takes the remembered answer."""
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    assert set(next_hops(progs)) == {(ifindex(lab, "fpin"), "10.0.2.11")}
    _ip("neigh", "replace", "10.0.2.11", "lladdr", "02:00:00:16:02:96", "dev", "fpout", "nud", "permanent")
    other = bytes(
        Ether(src=MAC_CLIENT, dst=MAC_LB)
        / IP(src="10.0.0.77", dst=VIP)
        / TCP(sport=40077, dport=TO_NEIGH, flags="S", seq=1000)
    )
    r = run_in_lab(progs, lab, other)
    assert r.retval == XDP_REDIRECT and Ether(r.data).dst == other_mac  # no lookup: remembered
    assert len(next_hops(progs)) == 1
