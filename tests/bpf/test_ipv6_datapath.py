# SPDX-License-Identifier: Apache-2.0
"""The IPv6 data path on single packets (BPF_PROG_TEST_RUN): extension headers, DNAT at XDP and SNAT
at TC egress with L4 checksums recomputed from scratch, conntrack with IPv6 tuples, every algorithm,
source routes, per-prefix rate limits, events; and what must pass untouched (fragments, neighbour
discovery, headers we cannot walk past).

Frames enter through lbtui_xdp / lbtui_tc, as on the wire: IPv6 reaches lbtui_xdp6 / lbtui_tc6 by
their tail calls.
"""

from __future__ import annotations

import ctypes
import socket
import time

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from lbtui.control.selection import weighted_table
from lbtui.dataplane import structs
from lbtui.dataplane.loader import DataplaneSpec, Loaded
from lbtui.dataplane.maps import Maps
from lbtui.dataplane.port import RateLimits, ServiceEntry
from lbtui.dataplane.progrun import TC_ACT_OK, XDP_DROP, XDP_PASS, run_program
from lbtui.dataplane.records import decode_event
from tests.support.bpfrun import assert_checksums_valid
from tests.support.maps import write_table

VIP = "fd00:6a::1"
CLIENT = "fd00:6c::2"
BACKENDS = {0: ("fd00:6b::11", 8080), 1: ("fd00:6b::12", 8080), 2: ("fd00:6b::13", 8081)}
ROUTED = "fd00:6d::/64"  # clients here go to group 3: backend 2 only
TABLE = 13
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


@pytest.fixture(scope="module")
def dp():
    loaded = Loaded(DataplaneSpec(table_size=TABLE, conntrack_entries=4096, max_groups=8))
    maps = Maps(loaded)
    for bid, (ip, port) in BACKENDS.items():
        maps.set_backend(bid, ip, port, active=True)
    service = {"events_closed": True, "events_new": True}
    maps.set_service(ServiceEntry(VIP, 80, "tcp", 0, 0, "weighted-random", **service))
    maps.set_service(ServiceEntry(VIP, 53, "udp", 1, 0, "weighted-random", **service))
    maps.set_service(ServiceEntry(VIP, 54, "udp", 5, 3, "weighted-random"))
    maps.set_service(ServiceEntry(VIP, 81, "tcp", 2, 1, "maglev"))
    maps.set_service(ServiceEntry(VIP, 82, "tcp", 3, 1, "source-hash"))
    limits = RateLimits(src_rate=1, src_burst=2)
    maps.set_service(ServiceEntry(VIP, 83, "tcp", 4, 1, "weighted-random", limits=limits))
    write_table(maps, 0, weighted_table({0: 3, 1: 2, 2: 1}, TABLE))
    write_table(maps, 1, weighted_table({0: 1, 1: 1, 2: 1}, TABLE))
    write_table(maps, 3, [2] * TABLE)
    maps.set_route(0, ROUTED, 3)
    yield loaded, maps
    loaded.close()


@pytest.fixture(autouse=True)
def empty_conntrack(dp):
    loaded, _ = dp
    for name in ("lb_ct6_established", "lb_ct6_transient"):
        loaded.table(name).clear()


def xdp(dp, pkt: Packet | bytes) -> tuple[int, bytes]:
    r = run_program(dp[0].xdp_fn.fd, bytes(pkt))
    return r.retval, r.data


def tc(dp, pkt: Packet | bytes) -> tuple[int, bytes]:
    r = run_program(dp[0].tc_fn.fd, bytes(pkt))
    return r.retval, r.data


def to_vip(flags="S", *, src=CLIENT, sport=40000, dport=80, seq=1000, ack=0, ext=(), payload=b""):
    ip: Packet = IPv6(src=src, dst=VIP)
    for header in ext:
        ip = ip / header
    return Ether(**MACS) / ip / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack) / Raw(payload)


def from_backend(backend, flags="SA", *, dst=CLIENT, dport=40000, seq=5000, ack=1001):
    ip = IPv6(src=backend[0], dst=dst)
    return Ether(**MACS) / ip / TCP(sport=backend[1], dport=dport, flags=flags, seq=seq, ack=ack)


def backend_of(frame: bytes) -> tuple[str, int]:
    p = Ether(frame)
    l4 = p[TCP] if TCP in p else p[UDP]
    return p[IPv6].dst, l4.dport


def counters(dp) -> dict[str, int]:
    return dp[1].global_counters()


def conntrack(dp) -> list[tuple[str, str, int, int]]:
    """(saddr, daddr, sport, dport) of every IPv6 conntrack entry."""
    out = []
    for name in ("lb_ct6_established", "lb_ct6_transient"):
        for k, _ in dp[0].table(name).items():
            out.append(
                (
                    structs.words_to_ip6(k.saddr.w),
                    structs.words_to_ip6(k.daddr.w),
                    structs.be16_to_port(k.sport),
                    structs.be16_to_port(k.dport),
                )
            )
    return sorted(out)


# ---- XDP: DNAT ------------------------------------------------------------------------------------


def test_syn_is_dnated_with_a_valid_checksum(dp):
    verdict, out = xdp(dp, to_vip())
    assert verdict == XDP_PASS
    assert backend_of(out) in BACKENDS.values()
    assert Ether(out)[IPv6].src == CLIENT
    assert_checksums_valid(out)


def test_handshake_reply_is_snated_and_the_flow_tracked(dp):
    _, out = xdp(dp, to_vip())
    backend = backend_of(out)
    verdict, reply = tc(dp, from_backend(backend))
    assert verdict == TC_ACT_OK
    p = Ether(reply)
    assert (p[IPv6].src, p[TCP].sport, p[IPv6].dst) == (VIP, 80, CLIENT)
    assert_checksums_valid(reply)
    # the client's ACK and data stay on the backend; the flow is established
    for seq, flags, data in ((1001, "A", b""), (1001, "PA", b"GET / HTTP/1.1\r\n\r\n")):
        verdict, out = xdp(dp, to_vip(flags, seq=seq, ack=5001, payload=data))
        assert verdict == XDP_PASS and backend_of(out) == backend
        assert_checksums_valid(out)
    assert conntrack(dp) == sorted([(CLIENT, VIP, 40000, 80), (backend[0], CLIENT, backend[1], 40000)])
    assert len(dp[0].table("lb_ct6_established")) == 2


def test_udp_both_ways_with_mandatory_checksums(dp):
    pkt = Ether(**MACS) / IPv6(src=CLIENT, dst=VIP) / UDP(sport=5353, dport=53) / Raw(b"q" * 20)
    verdict, out = xdp(dp, pkt)
    assert verdict == XDP_PASS
    backend = backend_of(out)
    assert_checksums_valid(out)
    reply = Ether(**MACS) / IPv6(src=backend[0], dst=CLIENT) / UDP(sport=backend[1], dport=5353) / Raw(b"a")
    verdict, back = tc(dp, reply)
    p = Ether(back)
    assert (p[IPv6].src, p[UDP].sport) == (VIP, 53)
    assert_checksums_valid(back)


def test_udp_checksum_that_sums_to_zero_is_sent_as_ffff(dp):
    """A datagram whose rewritten checksum computes to 0 must leave with 0xffff: in IPv6 a UDP
    checksum of 0 means "none", which the receiver drops. Port 54 goes to backend 2 only."""
    backend = BACKENDS[2]
    probe = IPv6(src=CLIENT, dst=backend[0]) / UDP(sport=5354, dport=backend[1]) / Raw(b"\0\0zzzzzzzz")
    word = IPv6(bytes(probe))[UDP].chksum  # ~sum: adding it as a payload word makes the sum 0xffff
    payload = word.to_bytes(2, "big") + b"zzzzzzzz"
    pkt = Ether(**MACS) / IPv6(src=CLIENT, dst=VIP) / UDP(sport=5354, dport=54) / Raw(payload)
    verdict, out = xdp(dp, pkt)
    assert verdict == XDP_PASS and backend_of(out) == backend
    assert Ether(out)[UDP].chksum == 0xFFFF
    assert_checksums_valid(out)


def test_udp_without_checksum_passes_untouched_as_malformed(dp):
    pkt = Ether(**MACS) / IPv6(src=CLIENT, dst=VIP) / UDP(sport=5355, dport=53, chksum=0) / Raw(b"q")
    before = counters(dp)["xdp_malformed"]
    verdict, out = xdp(dp, pkt)
    assert (verdict, out) == (XDP_PASS, bytes(pkt))
    assert counters(dp)["xdp_malformed"] == before + 1


# ---- extension headers, fragments, what is not ours ------------------------------------------------


def test_extension_headers_are_walked(dp):
    ext = (IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(addresses=[]), IPv6ExtHdrDestOpt())
    verdict, out = xdp(dp, to_vip(ext=ext))
    assert verdict == XDP_PASS
    assert backend_of(out) in BACKENDS.values()
    assert_checksums_valid(out)


def test_upper_layer_beyond_the_walk_passes_untouched_and_is_counted(dp):
    pkt = to_vip(ext=[IPv6ExtHdrDestOpt() for _ in range(5)])
    before = counters(dp)["xdp_v6_no_l4"]
    verdict, out = xdp(dp, pkt)
    assert (verdict, out) == (XDP_PASS, bytes(pkt))
    assert counters(dp)["xdp_v6_no_l4"] == before + 1


@pytest.mark.parametrize("offset", [0, 8])
def test_fragments_pass_untouched(dp, offset):
    pkt = to_vip(ext=[IPv6ExtHdrFragment(offset=offset, m=1, id=7)])
    before = counters(dp)["xdp_fragment"]
    verdict, out = xdp(dp, pkt)
    assert (verdict, out) == (XDP_PASS, bytes(pkt))
    assert counters(dp)["xdp_fragment"] == before + 1


def test_neighbour_discovery_and_other_traffic_pass_untouched(dp):
    frames = [
        Ether(**MACS) / IPv6(src=CLIENT, dst="ff02::1:ff00:1") / ICMPv6ND_NS(tgt=VIP),
        Ether(**MACS) / IPv6(src=CLIENT, dst="fd00:6a::99") / TCP(dport=80, flags="S"),
        Ether(**MACS) / IPv6(src=CLIENT, dst=VIP) / TCP(dport=9999, flags="S"),
    ]
    for pkt in frames:
        verdict, out = xdp(dp, pkt)
        assert (verdict, out) == (XDP_PASS, bytes(pkt))


@pytest.mark.parametrize("cut", [14, 20, 53, 54, 60, 73])
def test_truncated_frames_pass_untouched(dp, cut):
    raw = bytes(to_vip())[:cut]
    verdict, out = xdp(dp, raw)
    assert (verdict, out) == (XDP_PASS, raw)


def test_vlan_tagged(dp):
    pkt = Ether(**MACS) / Dot1Q(vlan=7) / IPv6(src=CLIENT, dst=VIP) / TCP(sport=40001, dport=80, flags="S")
    verdict, out = xdp(dp, pkt)
    assert verdict == XDP_PASS
    assert backend_of(out) in BACKENDS.values()
    assert_checksums_valid(out)


def test_unknown_reply_passes_untouched(dp):
    pkt = from_backend(BACKENDS[0], dport=40999)
    verdict, out = tc(dp, pkt)
    assert (verdict, out) == (TC_ACT_OK, bytes(pkt))


# ---- algorithms, routes, limits, events ------------------------------------------------------------


def test_weighted_random_spreads_by_weight(dp):
    seen = {b: 0 for b in BACKENDS.values()}
    for sport in range(41000, 41600):
        _, out = xdp(dp, to_vip(sport=sport))
        seen[backend_of(out)] += 1
    # weights 3:2:1 over a 13-slot table: 6.5/13, 4.33/13, 2.17/13 of 600 expected
    a, b, c = (seen[BACKENDS[i]] for i in range(3))
    assert a > b > c > 0, seen


def test_maglev_and_source_hash_are_consistent(dp):
    _, first = xdp(dp, to_vip(sport=42000, dport=81))
    dp[0].table("lb_ct6_transient").clear()
    _, again = xdp(dp, to_vip(sport=42000, dport=81))
    assert backend_of(first) == backend_of(again)
    picks = set()
    for sport in range(42100, 42120):
        _, out = xdp(dp, to_vip(sport=sport, dport=82))
        picks.add(backend_of(out)[0])
    assert len(picks) == 1, "source-hash: one client address, one backend"


def test_source_route_selects_its_group(dp):
    for sport in range(43000, 43020):
        _, out = xdp(dp, to_vip(src="fd00:6d::77", sport=sport))
        assert backend_of(out) == BACKENDS[2]


def test_per_source_limit_counts_the_whole_64(dp):
    """burst 2 for one source prefix: two hosts of one /64 share it; another /64 has its own."""
    verdicts = [xdp(dp, to_vip(src=f"fd00:6c::{i + 10}", sport=44000, dport=83))[0] for i in range(3)]
    assert verdicts == [XDP_PASS, XDP_PASS, XDP_DROP]
    assert xdp(dp, to_vip(src="fd00:6c:0:1::10", sport=44000, dport=83))[0] == XDP_PASS
    assert dp[1].service_counters(4)[1]["rate_limit_source"] == 1


def test_new_flow_event_carries_ipv6_addresses(dp):
    events = []
    table = dp[0].table("lb_events")

    def on_event(_ctx, data, size):
        record = structs.Event6 if size >= ctypes.sizeof(structs.Event6) else structs.Event
        events.append(decode_event(ctypes.cast(data, ctypes.POINTER(record)).contents))
        return 0

    table.open_ring_buffer(on_event)
    dp[0].bpf.ring_buffer_consume()
    events.clear()
    _, out = xdp(dp, to_vip(sport=45000))
    dp[0].bpf.ring_buffer_consume()
    new = [e for e in events if e.type == structs.EV_NEW]
    assert len(new) == 1
    assert new[0].client == (CLIENT, 45000)
    assert new[0].vip == (VIP, 80)
    assert new[0].backend == backend_of(out)


def test_addresses_round_trip():
    for ip in (VIP, "::1", "2001:db8::ffff:1"):
        assert structs.words_to_ip6(structs.ip6_to_words(ip)) == socket.inet_ntop(
            socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip)
        )


def test_idle_ipv6_rate_buckets_are_swept(dp):
    xdp(dp, to_vip(src="fd00:6c:0:2::1", sport=44100, dport=83))
    assert len(dp[0].table("lb_rl6_source")) >= 1
    dp[1].sweep_rate_buckets(idle_ns=0, now_ns=time.monotonic_ns() + 10**9)
    assert len(dp[0].table("lb_rl6_source")) == 0


def test_reap6_removes_both_entries_of_the_flow_it_names(dp):
    """lbtui_reap6 removes an IPv6 flow only while it is the flow created at created_ns."""
    _, out = xdp(dp, to_vip(sport=46000))
    table = dp[0].table("lb_ct6_transient")
    key, entry = next((k, v) for k, v in table.items() if v.dir == structs.DIR_FORWARD)
    recs = (structs.Reap6Rec * 2)()
    for rec, created in ((recs[0], entry.created_ns + 1), (recs[1], entry.created_ns)):
        rec.key = structs.Ct6Key.from_buffer_copy(bytes(key))
        rec.created_ns = created  # recs[0]: another flow's creation time, so the flow stays
    result = run_program(dp[0].reap6_fn.fd, bytes(recs[0]))
    assert ctypes.sizeof(structs.Reap6Rec) == 72 and len(table) == 2
    result = run_program(dp[0].reap6_fn.fd, bytes(recs[1]))
    done = structs.Reap6Rec.from_buffer_copy(result.data)
    assert done.created_ns == structs.CT_REAPING and len(table) == 0
    assert backend_of(out) in BACKENDS.values()


# ---- the engine's reads of the IPv6 tables (maps.py) -----------------------------------------------


def test_the_engine_reads_and_reaps_ipv6_flows_through_maps(dp):
    """Maps reads lb_ct6_* with their own layouts (conntrack_arrays(6), chunks, the established slice,
    the count of all four tables), and expire_conntrack with Ct6Key records runs lbtui_reap6: an
    established flow and an unanswered SYN are removed, both entries each, and nothing IPv4 is read."""
    from lbtui.control import conntrack as ct
    from lbtui.dataplane.port import ESTABLISHED6, TRANSIENT6
    from lbtui.dataplane.records import CT6_ENTRY_DTYPE, CT6_KEY_DTYPE, flow_entries

    maps = dp[1]
    _, out = xdp(dp, to_vip(sport=47000))
    backend = backend_of(out)
    tc(dp, from_backend(backend, dport=47000))
    xdp(dp, to_vip("A", sport=47000, seq=1001, ack=5001))  # established
    xdp(dp, to_vip(sport=47001))  # a SYN left unanswered: transient
    keys, vals = maps.conntrack_arrays(6)
    assert keys.dtype == CT6_KEY_DTYPE and vals.dtype == CT6_ENTRY_DTYPE and len(vals) == 4
    assert {(f.client, f.direction) for f in flow_entries(keys, vals)} == {
        ((CLIENT, port), d) for port in (47000, 47001) for d in (structs.DIR_FORWARD, structs.DIR_REVERSE)
    }
    assert len(maps.conntrack_arrays(4)[1]) == 0 and maps.conntrack_count() == 4
    skeys, svals, cursor = maps.conntrack_slice(0, 100, ESTABLISHED6)
    assert len(svals) == 2 and cursor == 0 and len(next(maps.conntrack_chunks(TRANSIENT6))[1]) == 2
    t = ct.Timeouts(tcp_s=0.0, tcp_closing_s=0.0, udp_s=0.0, syn_s=0.0)
    now = time.monotonic_ns() + 10**9
    scan = ct.scan_transient(*[a.copy() for a in next(maps.conntrack_chunks(TRANSIENT6))], now, t)
    done = maps.expire_conntrack(scan.expiry.keys, scan.expiry.created, scan.expiry.idle_before)
    assert len(done) == 1 and len(dp[0].table("lb_ct6_transient")) == 0
    skeys, svals = skeys.copy(), svals.copy()
    candidates = ct.established_candidates(skeys, svals, now, t)
    assert maps.reap_conntrack(candidates.keys[:1], candidates.created[:1]) == 1
    assert len(dp[0].table("lb_ct6_established")) == 0 and maps.conntrack_count() == 0
