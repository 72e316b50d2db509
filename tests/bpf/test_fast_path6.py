# SPDX-License-Identifier: Apache-2.0
"""The XDP fast path for IPv6 (bpf/lb_fastpath6.h) on single packets: redirect with new MACs and hop
limit - 1 when the kernel's tables know the way, XDP_PASS with the DNATed packet and a counted reason
when they don't (the counters IPv4 uses, tests/bpf/test_fast_path.py).

The packets run from a thread inside a namespace of this test's own (tests/support/netnsrun.py):

    ns lbfp6: fpin fd00:16:a::1/64 (ingress; IPv6 forwarding on)
              fpout fd00:16:b::1/64 mtu 1400, managed: fd00:16:b::11 has a permanent neighbour, ::12 none
              fpun fd00:16:c::1/64, not managed: fd00:16:c::13 has a permanent neighbour
              fd00:16:d::/64 multipath via fd00:16:b::21 and ::22 (both on fpout, permanent neighbours)
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections.abc import Iterator

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from lbtui.control.selection import weighted_table
from lbtui.dataplane.port import ServiceEntry
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
from tests.support.bpfrun import MAC_CLIENT, MAC_LB, TABLE, Programs, assert_checksums_valid, counting
from tests.support.maps import write_table
from tests.support.netnsrun import run_in_netns

NS = f"lbfp6-{os.getpid()}"  # of this run: other worktrees run these tests at the same time
VIP6 = "fd00:16:f::1"
CLIENT = "fd00:16:a::2"
NEIGH_MAC = "02:00:00:16:06:11"
UNMANAGED_MAC = "02:00:00:16:06:13"
ECMP_MACS = {"fd00:16:b::21": "02:00:00:16:06:21", "fd00:16:b::22": "02:00:00:16:06:22"}
# backend id -> address; service port -> the one backend its table holds
FP_BACKENDS = {
    3: ("fd00:16:b::11", 8080),
    4: ("fd00:16:b::12", 8080),
    5: ("fd00:16:c::13", 8080),
    6: ("fd00:16:d::14", 8080),
}
TO_NEIGH, TO_NO_NEIGH, TO_UNMANAGED, UDP_TO_NEIGH, TO_ECMP = 80, 81, 82, 53, 83
SERVICES = {  # service id (= its group): port, protocol, backend
    3: (TO_NEIGH, "tcp", 3),
    4: (TO_NO_NEIGH, "tcp", 4),
    5: (TO_UNMANAGED, "tcp", 5),
    6: (UDP_TO_NEIGH, "udp", 3),
    7: (TO_ECMP, "tcp", 6),
}


def _ip(*args: str) -> str:
    return subprocess.run(["ip", "-n", NS, *args], check=True, capture_output=True, text=True).stdout


def _sysctl(setting: str) -> None:
    subprocess.run(["ip", "netns", "exec", NS, "sysctl", "-qw", setting], check=True)


def _links() -> dict[str, dict[str, object]]:
    return {link["ifname"]: link for link in json.loads(_ip("-j", "link", "show"))}


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, dict[str, object]]]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for name, addr in (("fpin", "fd00:16:a::1"), ("fpout", "fd00:16:b::1"), ("fpun", "fd00:16:c::1")):
            _ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
            _ip("link", "set", name, "mtu", "1400" if name == "fpout" else "1500")
            if name == "fpin":
                _ip("link", "set", name, "address", MAC_LB)  # the client frames' destination
            _ip("addr", "add", f"{addr}/64", "dev", name, "nodad")
            _ip("link", "set", name, "up")
            _ip("link", "set", name + "p", "up")
        for addr, mac, dev in (
            ("fd00:16:b::11", NEIGH_MAC, "fpout"),
            ("fd00:16:c::13", UNMANAGED_MAC, "fpun"),
            (CLIENT, MAC_CLIENT, "fpin"),
            *((hop, mac, "fpout") for hop, mac in ECMP_MACS.items()),
        ):
            _ip("-6", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent")
        hops = [w for hop in ECMP_MACS for w in ("nexthop", "via", hop, "dev", "fpout")]
        _ip("-6", "route", "add", "fd00:16:d::/64", *hops)
        _sysctl("net.ipv6.conf.all.forwarding=1")
        yield _links()
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


@pytest.fixture(scope="module")
def progs(lab: dict[str, dict[str, object]]) -> Iterator[Programs]:
    p = Programs(fast_path=True)
    for bid, (ip, port) in FP_BACKENDS.items():
        p.maps.set_backend(bid, ip, port, active=True)
    for sid, (port, proto, bid) in SERVICES.items():
        p.maps.set_service(ServiceEntry(VIP6, port, proto, sid, sid, "weighted-random"))
        write_table(p.maps, sid, weighted_table({bid: 1}, TABLE))
    p.maps.set_fast_path_interfaces({_ifindex(lab, n): str(lab[n]["address"]) for n in ("fpout", "fpin")})
    yield p
    p.close()


@pytest.fixture(autouse=True)
def empty_conntrack(progs: Programs) -> None:
    for name in ("lb_ct6_established", "lb_ct6_transient"):
        progs.loaded.table(name).clear()
    progs.clear_next_hops()


def _ifindex(lab: dict[str, dict[str, object]], name: str) -> int:
    return int(str(lab[name]["ifindex"]))


def run_in_lab(progs: Programs, lab: dict[str, dict[str, object]], frame: bytes) -> RunResult:
    """lbtui_xdp on `frame` as if it arrived on fpin (IPv6 reaches lbtui_xdp6 by its tail call)."""
    return run_in_netns(NS, progs.loaded.xdp_fn.fd, frame, _ifindex(lab, "fpin"))


def to_vip(
    dport: int,
    hlim: int = 64,
    payload: bytes = b"",
    udp: bool = False,
    ext: bool = False,
    fl: int = 0x12345,
    src: str = CLIENT,
) -> bytes:
    l4 = UDP(sport=40000, dport=dport) if udp else TCP(sport=40000, dport=dport, flags="S", seq=1000)
    ip = IPv6(src=src, dst=VIP6, hlim=hlim, fl=fl)
    if ext:
        ip = ip / IPv6ExtHdrDestOpt()
    return bytes(Ether(src=MAC_CLIENT, dst=MAC_LB) / ip / l4 / Raw(payload))


def test_known_neighbour_is_redirected_with_new_macs_and_hop_limit(progs, lab):
    frame = to_vip(TO_NEIGH, payload=b"hello")
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, frame))
    assert r.retval == XDP_REDIRECT
    assert moved == {"fast_path_forwarded": 1}
    out = Ether(r.data)
    assert (out.dst, out.src) == (NEIGH_MAC, lab["fpout"]["address"])
    assert (out[IPv6].dst, out[TCP].dport, out[IPv6].hlim) == ("fd00:16:b::11", 8080, 63)
    assert (out[IPv6].src, out[IPv6].fl, out[IPv6].plen) == (CLIENT, 0x12345, Ether(frame)[IPv6].plen)
    assert bytes(out[Raw]) == b"hello"
    assert len(r.data) == len(frame)
    assert_checksums_valid(r.data)


def test_udp_is_redirected_too(progs, lab):
    frame = to_vip(UDP_TO_NEIGH, udp=True, payload=b"q")
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, frame))
    assert r.retval == XDP_REDIRECT
    assert moved == {"fast_path_forwarded": 1}
    assert (Ether(r.data)[UDP].dport, Ether(r.data)[IPv6].hlim) == (8080, 63)
    assert_checksums_valid(r.data)


def assert_passed_dnated(r: RunResult, backend: str, hlim: int = 64) -> None:
    """Today's path: XDP_PASS, DNAT done, MACs and hop limit as they came (the kernel forwards it)."""
    assert r.retval == XDP_PASS
    out = Ether(r.data)
    assert (out.src, out.dst) == (MAC_CLIENT, MAC_LB)
    assert (out[IPv6].dst, out[IPv6].hlim) == (backend, hlim)
    assert_checksums_valid(r.data)


def test_no_neighbour_yet_falls_back(progs, lab):
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(TO_NO_NEIGH)))
    assert moved == {"fast_path_no_neigh": 1}
    assert_passed_dnated(r, "fd00:16:b::12")


def test_unmanaged_egress_falls_back(progs, lab):
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(TO_UNMANAGED)))
    assert moved == {"fast_path_unmanaged": 1}
    assert_passed_dnated(r, "fd00:16:c::13")


def test_larger_than_egress_mtu_falls_back_for_packet_too_big(progs, lab):
    frame = to_vip(UDP_TO_NEIGH, udp=True, payload=b"x" * 1353)  # 40 + 8 + 1353 = 1401 > mtu 1400
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, frame))
    assert moved == {"fast_path_frag_needed": 1}
    assert_passed_dnated(r, "fd00:16:b::11")
    fits = to_vip(UDP_TO_NEIGH, udp=True, payload=b"x" * 1352)  # exactly 1400
    assert run_in_lab(progs, lab, fits).retval == XDP_REDIRECT


def test_expiring_hop_limit_falls_back(progs, lab):
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(TO_NEIGH, hlim=1)))
    assert moved == {"fast_path_ttl": 1}
    assert_passed_dnated(r, "fd00:16:b::11", hlim=1)
    r = run_in_lab(progs, lab, to_vip(TO_NEIGH, hlim=2))
    assert (r.retval, Ether(r.data)[IPv6].hlim) == (XDP_REDIRECT, 1)


def test_extension_headers_fall_back(progs, lab):
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(TO_NEIGH, ext=True)))
    assert moved == {"fast_path_ip_options": 1}
    assert_passed_dnated(r, "fd00:16:b::11")


def test_vlan_tagged_frames_fall_back(progs, lab):
    pkt = Ether(to_vip(TO_NEIGH))
    tagged = bytes(Ether(src=MAC_CLIENT, dst=MAC_LB) / Dot1Q(vlan=16) / pkt[IPv6])
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, tagged))
    assert r.retval == XDP_PASS
    assert moved == {"fast_path_vlan": 1}
    assert Ether(r.data)[IPv6].dst == "fd00:16:b::11"


def test_forwarding_off_on_the_ingress_interface_falls_back(progs, lab):
    _sysctl("net.ipv6.conf.fpin.forwarding=0")
    try:
        r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(TO_NEIGH)))
    finally:
        _sysctl("net.ipv6.conf.fpin.forwarding=1")
    assert moved == {"fast_path_fib_other": 1}
    assert_passed_dnated(r, "fd00:16:b::11")


def test_no_route_information_outside_the_lab_falls_back(progs):
    """Run without an ingress interface (the loopback of this namespace): whatever the fib says
    that is not SUCCESS with a managed egress, the packet takes today's path."""
    r = run_program(progs.loaded.xdp_fn.fd, to_vip(TO_NEIGH))
    assert r.retval == XDP_PASS
    assert Ether(r.data)[IPv6].dst == "fd00:16:b::11"


def test_established_packets_take_the_fast_path_too(progs, lab):
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT
    ack = (
        Ether(src=MAC_CLIENT, dst=MAC_LB)
        / IPv6(src=CLIENT, dst=VIP6)
        / TCP(sport=40000, dport=TO_NEIGH, flags="A", seq=1001, ack=5001)
    )
    r = run_in_lab(progs, lab, bytes(ack))
    assert r.retval == XDP_REDIRECT
    assert Ether(r.data).dst == NEIGH_MAC
    assert_checksums_valid(r.data)


@pytest.mark.parametrize("source", ["ff02::1", "fe80::1", "::1"])
def test_sources_the_kernel_never_forwards_fall_back_with_the_next_hop_remembered(progs, lab, source):
    """bpf_fib_lookup answers NOT_FWDED for a multicast, link-local or loopback source; the forward
    cache, keyed per backend without the client's address, must not answer for it instead."""
    assert run_in_lab(progs, lab, to_vip(TO_NEIGH)).retval == XDP_REDIRECT  # the backend's way remembered
    r, moved = counting(progs, lambda: run_in_lab(progs, lab, to_vip(TO_NEIGH, src=source)))
    assert moved == {"fast_path_fib_other": 1}
    assert_passed_dnated(r, "fd00:16:b::11")


def test_multipath_routes_spread_by_flow_label_as_the_kernel_does(progs, lab):
    """The kernel hashes IPv6 multipath routes on addresses, flow label and protocol (policy 0):
    with the flow label in the lookup (flowinfo), one client's flows spread over both next hops when
    each is looked up; the forward cache then keeps the first answer for every flow to that backend
    (keyed per backend and traffic class, as for IPv4: docs/datapath.md#next-hop-cache)."""
    used = set()
    for fl in range(32):
        progs.clear_next_hops()
        r = run_in_lab(progs, lab, to_vip(TO_ECMP, fl=fl))
        assert r.retval == XDP_REDIRECT
        used.add(Ether(r.data).dst)
    assert used == set(ECMP_MACS.values())
    remembered = Ether(r.data).dst
    for fl in range(32):
        other_client = to_vip(TO_ECMP, fl=fl, src=f"fd00:16:a::{fl + 100:x}")
        assert Ether(run_in_lab(progs, lab, other_client).data).dst == remembered


# ---- replies: lbtui_tc_reply at TC ingress of the backend side, IPv6 by its tail call ---------------

CLIENT_NO_NEIGH = "fd00:16:a::3"
LB_FP_REPLY_MARK = 0x4C42FA57  # bpf/lb_fastpath_reply.h


def mark_of(r: RunResult) -> int:
    return int(struct.unpack_from("=I", r.ctx, 8)[0])


def run_reply(progs: Programs, lab: dict[str, dict[str, object]], frame: bytes, **skb: int) -> RunResult:
    """lbtui_tc_reply on `frame` as if it arrived on fpout (the backend side); IPv6 reaches
    lbtui_tc_reply6 by its tail call."""
    ctx = skb_context(_ifindex(lab, "fpout"), **skb)
    return run_in_netns(NS, progs.loaded.tc_reply_fn.fd, frame, ctx=ctx)


def backend_reply(
    lab: dict[str, dict[str, object]],
    client: str = CLIENT,
    sport: int = 40000,
    hlim: int = 64,
    ext: bool = False,
    udp_payload: bytes | None = None,
    tcp_payload: bytes = b"",
) -> bytes:
    """From backend fd00:16:b::11:8080 to `client`, addressed to fpout's MAC (the LB's)."""
    ip = IPv6(src="fd00:16:b::11", dst=client, hlim=hlim)
    if ext:
        ip = ip / IPv6ExtHdrDestOpt()
    if udp_payload is not None:
        l4 = UDP(sport=8080, dport=sport) / Raw(udp_payload)
    else:
        l4 = TCP(sport=8080, dport=sport, flags="SA", seq=5000, ack=1001) / Raw(tcp_payload)
    return bytes(Ether(src=NEIGH_MAC, dst=str(lab["fpout"]["address"])) / ip / l4)


def open_flow(progs: Programs, lab: dict[str, dict[str, object]], client: str = CLIENT, udp: bool = False):
    frame = to_vip(UDP_TO_NEIGH if udp else TO_NEIGH, udp=udp, src=client)
    assert run_in_lab(progs, lab, frame).retval == XDP_REDIRECT


def test_reply_is_snated_and_redirected_to_the_client(progs, lab):
    open_flow(progs, lab)
    before = progs.backend_stats(3)["packets_out"]
    r, moved = counting(progs, lambda: run_reply(progs, lab, backend_reply(lab)))
    assert r.retval == TC_ACT_REDIRECT
    assert moved == {"fast_path_reply_forwarded": 1}
    out = Ether(r.data)
    assert (out.src, out.dst) == (lab["fpin"]["address"], MAC_CLIENT)
    assert (out[IPv6].src, out[TCP].sport, out[IPv6].dst, out[TCP].dport) == (VIP6, TO_NEIGH, CLIENT, 40000)
    assert out[IPv6].hlim == 63
    assert_checksums_valid(r.data)
    assert progs.backend_stats(3)["packets_out"] == before + 1  # the flow saw its reply once
    assert mark_of(r) == LB_FP_REPLY_MARK

    # on its way out of fpin the redirected reply meets lbtui_tc (IPv6: before its tail call to
    # lbtui_tc6): let through as it is, its mark cleared, nothing counted again
    tc_before = progs.global_counters()
    again = run_program(progs.loaded.tc_fn.fd, r.data, ctx=skb_context(0, mark=LB_FP_REPLY_MARK))
    assert (again.retval, again.data, mark_of(again)) == (TC_ACT_OK, r.data, 0)
    assert progs.global_counters() == tc_before
    assert progs.backend_stats(3)["packets_out"] == before + 1


def test_udp_reply_is_redirected_with_a_valid_checksum(progs, lab):
    open_flow(progs, lab, udp=True)
    r = run_reply(progs, lab, backend_reply(lab, udp_payload=b"answer"))
    assert r.retval == TC_ACT_REDIRECT
    out = Ether(r.data)
    assert (out[IPv6].src, out[UDP].sport, bytes(out[Raw])) == (VIP6, UDP_TO_NEIGH, b"answer")
    assert_checksums_valid(r.data)


def test_reply_without_a_client_neighbour_is_left_to_tc_egress_untouched(progs, lab):
    open_flow(progs, lab, client=CLIENT_NO_NEIGH)
    before = progs.backend_stats(3)["packets_out"]
    reply = backend_reply(lab, client=CLIENT_NO_NEIGH)
    r, moved = counting(progs, lambda: run_reply(progs, lab, reply))
    assert (r.retval, r.data) == (TC_ACT_OK, reply)
    assert moved == {"fast_path_no_neigh": 1}
    assert progs.backend_stats(3)["packets_out"] == before  # nothing counted yet: TC egress will
    _, snat = progs.tc(reply)
    assert Ether(snat)[IPv6].src == VIP6
    assert progs.backend_stats(3)["packets_out"] == before + 1


def test_reply_fallbacks_are_counted_and_leave_it_untouched(progs, lab):
    open_flow(progs, lab)
    cases = {
        "fast_path_ttl": backend_reply(lab, hlim=1),
        "fast_path_ip_options": backend_reply(lab, ext=True),
    }
    for counter, reply in cases.items():
        r, moved = counting(progs, lambda reply=reply: run_reply(progs, lab, reply))
        assert (r.retval, r.data, moved) == (TC_ACT_OK, reply, {counter: 1}), counter


def test_reply_larger_than_the_client_side_mtu_falls_back(progs, lab):
    open_flow(progs, lab, udp=True)
    big = backend_reply(lab, udp_payload=b"x" * 1453)  # 40 + 8 + 1453 = 1501 > fpin's 1500
    r, moved = counting(progs, lambda: run_reply(progs, lab, big))
    assert (r.retval, moved) == (TC_ACT_OK, {"fast_path_frag_needed": 1})
    assert run_reply(progs, lab, backend_reply(lab, udp_payload=b"x" * 1452)).retval == TC_ACT_REDIRECT


def test_a_gso_reply_is_checked_by_its_segments_size(progs, lab):
    """A GSO skb leaves as segments of gso_size payload bytes after its headers: those must fit the
    egress MTU (1500), not the whole skb, and a segment that does not fit falls back."""
    open_flow(progs, lab)
    reply = backend_reply(lab, tcp_payload=b"x" * 2000)  # 40 + 20 + 2000 bytes of IPv6
    r, moved = counting(progs, lambda: run_reply(progs, lab, reply, gso_size=1440, gso_segs=2))
    assert (r.retval, moved) == (TC_ACT_REDIRECT, {"fast_path_reply_forwarded": 1})  # 1500-byte segments
    r, moved = counting(progs, lambda: run_reply(progs, lab, reply, gso_size=1441, gso_segs=2))
    assert (r.retval, r.data, moved) == (TC_ACT_OK, reply, {"fast_path_frag_needed": 1})


def test_packets_that_are_no_reply_pass_untouched(progs, lab):
    stray = backend_reply(lab, sport=41234)  # no flow on that port
    r, moved = counting(progs, lambda: run_reply(progs, lab, stray))
    assert (r.retval, r.data, moved) == (TC_ACT_UNSPEC, stray, {})  # the hook's next filter decides


# ---- the next-hop caches (tests/bpf/nexthop_cache.py, both directions) -----------------------------


@pytest.fixture
def ingress(progs: Programs, lab: dict[str, dict[str, object]]) -> Ingress:
    """The forward way's datagrams on fpin (its MAC: MAC_LB), to any destination MAC."""
    frame = to_vip(UDP_TO_NEIGH, udp=True, payload=b"q")
    return Ingress(
        lambda f: run_in_lab(progs, lab, f), frame, _ifindex(lab, "fpin"), MAC_LB, "lb_fp_nexthops6"
    )


@pytest.fixture(params=["forward", "reply"])
def way(request: pytest.FixtureRequest, progs: Programs, lab: dict[str, dict[str, object]]) -> Way:
    """UDP datagrams of one flow: to VIP6:53 on fpin toward fd00:16:b::11 (fpout, mtu 1400), or its
    replies on fpout toward the client (fpin, mtu 1500)."""
    if request.param == "forward":

        def send(size: int) -> RunResult:
            return run_in_lab(progs, lab, to_vip(UDP_TO_NEIGH, udp=True, payload=b"x" * (size - 48)))

        return Way(
            "forward", NS, "-6", send, 49, "fpout", _ifindex(lab, "fpout"), 1400, "fd00:16:b::11", NEIGH_MAC
        )
    open_flow(progs, lab, udp=True)

    def reply(size: int) -> RunResult:
        return run_reply(progs, lab, backend_reply(lab, udp_payload=b"a" * (size - 48)))

    return Way("reply", NS, "-6", reply, 78, "fpin", _ifindex(lab, "fpin"), 1500, CLIENT, MAC_CLIENT)
