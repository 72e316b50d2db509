# SPDX-License-Identifier: Apache-2.0
"""The BPF programs on single packets (BPF_PROG_TEST_RUN): verdicts, every rewritten byte, checksums.

Packets are built with scapy; checksums of outputs are recomputed from scratch by scapy (delete the
field, rebuild) and compared with what the program wrote.
"""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from lbtui.control.selection import weighted_table
from lbtui.dataplane import structs
from lbtui.dataplane.loader import DataplaneSpec, Loaded
from lbtui.dataplane.maps import Maps
from lbtui.dataplane.port import RateLimits, ServiceEntry
from lbtui.dataplane.progrun import TC_ACT_OK, XDP_DROP, XDP_PASS, run_program
from tests.fuzz.packets.wire import fix_checksums
from tests.support.bpfrun import assert_checksums_valid
from tests.support.maps import conntrack_entries, evict, remove_conntrack, write_table

VIP = "10.0.0.1"
CLIENT = "10.0.0.2"
BACKENDS = {0: ("10.0.2.11", 8080), 1: ("10.0.2.12", 8080), 2: ("10.0.2.13", 8081)}
TABLE = 13


@pytest.fixture(scope="module")
def dp():
    loaded = Loaded(DataplaneSpec(table_size=TABLE, conntrack_entries=4096, max_groups=4))
    maps = Maps(loaded)
    for bid, (ip, port) in BACKENDS.items():
        maps.set_backend(bid, ip, port, active=True)
    maps.set_service(
        ServiceEntry(VIP, 80, "tcp", 0, 0, "weighted-random", events_closed=True, events_new=True)
    )
    maps.set_service(
        ServiceEntry(VIP, 53, "udp", 1, 0, "weighted-random", events_closed=True, events_new=True)
    )
    maps.set_service(ServiceEntry(VIP, 81, "tcp", 2, 2, "maglev"))
    write_table(maps, 0, weighted_table({0: 3, 1: 2, 2: 1}, TABLE))
    write_table(maps, 2, weighted_table({0: 1, 1: 1, 2: 1}, TABLE))
    # group 1: only backend 2, for clients from 192.168.0.0/16 of service 0
    write_table(maps, 1, [2] * TABLE)
    maps.set_route(0, "192.168.0.0/16", 1)
    yield loaded, maps
    loaded.close()


@pytest.fixture(autouse=True)
def empty_conntrack(dp):
    _, maps = dp
    remove_conntrack(maps)


def xdp(dp, pkt) -> tuple[int, bytes]:
    loaded, _ = dp
    r = run_program(loaded.xdp_fn.fd, bytes(pkt))
    return r.retval, r.data


def tc(dp, pkt) -> tuple[int, bytes]:
    loaded, _ = dp
    r = run_program(loaded.tc_fn.fd, bytes(pkt))
    return r.retval, r.data


def syn(src=CLIENT, sport=40000, dport=80, **ip_kw):
    return (
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src=src, dst=VIP, **ip_kw)
        / TCP(sport=sport, dport=dport, flags="S", seq=1000)
    )


def diff_offsets(a: bytes, b: bytes) -> set[int]:
    assert len(a) == len(b)
    return {i for i in range(len(a)) if a[i] != b[i]}


def backend_of(frame: bytes) -> tuple[str, int]:
    p = Ether(frame)
    l4 = p[TCP] if TCP in p else p[UDP]
    return p[IP].dst, l4.dport


# ---- XDP ingress ----------------------------------------------------------------------------------


def test_syn_to_vip_is_dnated_with_valid_checksums(dp):
    pkt = syn()
    verdict, out = xdp(dp, pkt)
    assert verdict == XDP_PASS
    assert backend_of(out) in BACKENDS.values()
    assert_checksums_valid(out)
    # only daddr (30..33), IP checksum (24,25), dport (36,37) and TCP checksum (50,51) may change
    assert diff_offsets(bytes(pkt), out) <= {24, 25, 30, 31, 32, 33, 36, 37, 50, 51}


def test_established_packets_keep_their_backend(dp):
    _, first = xdp(dp, syn(sport=41000))
    chosen = backend_of(first)
    for i in range(50):
        p = (
            Ether()
            / IP(src=CLIENT, dst=VIP)
            / TCP(sport=41000, dport=80, flags="A", seq=1001 + i)
            / Raw(b"x" * i)
        )
        verdict, out = xdp(dp, p)
        assert verdict == XDP_PASS
        assert backend_of(out) == chosen
        assert_checksums_valid(out)


def test_conntrack_holds_both_directions(dp):
    _, maps = dp
    _, out = xdp(dp, syn(sport=41500))
    bip, bport = backend_of(out)
    entries = conntrack_entries(maps)
    fwd = [e for e in entries if e.direction == structs.DIR_FORWARD]
    rev = [e for e in entries if e.direction == structs.DIR_REVERSE]
    assert len(fwd) == 1 and len(rev) == 1
    assert fwd[0].key.saddr == CLIENT and fwd[0].key.sport == 41500 and fwd[0].key.daddr == VIP
    assert rev[0].key.saddr == bip and rev[0].key.sport == bport and rev[0].key.daddr == CLIENT
    assert fwd[0].backend == (bip, bport) and rev[0].vip == (VIP, 80)


def test_new_flows_follow_weights(dp):
    seen: dict[tuple[str, int], int] = {}
    for sport in range(20000, 20600):
        _, out = xdp(dp, syn(sport=sport))
        seen[backend_of(out)] = seen.get(backend_of(out), 0) + 1
    # 3:2:1 over 13 slots is 7:4:2 slots; 600 random picks land near 323/185/92
    assert seen[BACKENDS[0]] > seen[BACKENDS[1]] > seen[BACKENDS[2]] > 30


def test_source_route_selects_its_group(dp):
    for sport in range(30000, 30050):
        _, out = xdp(dp, syn(src="192.168.7.9", sport=sport))
        assert backend_of(out) == BACKENDS[2]


def test_udp_with_checksum(dp):
    pkt = Ether() / IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=53) / Raw(b"query")
    verdict, out = xdp(dp, pkt)
    assert verdict == XDP_PASS
    assert backend_of(out) in BACKENDS.values()
    assert Ether(out)[UDP].chksum != 0
    assert_checksums_valid(out)


def test_udp_zero_checksum_stays_zero(dp):
    pkt = Ether() / IP(src=CLIENT, dst=VIP) / UDP(sport=5001, dport=53, chksum=0) / Raw(b"query")
    verdict, out = xdp(dp, pkt)
    assert verdict == XDP_PASS
    assert backend_of(out) in BACKENDS.values()
    assert Ether(out)[UDP].chksum == 0
    assert_checksums_valid(out)


def test_ip_options_are_honoured(dp):
    pkt = syn(sport=42000, options=[b"\x94\x04\x00\x00", b"\x01\x01\x01\x00"])  # router alert + NOPs
    assert Ether(bytes(pkt))[IP].ihl == 7
    verdict, out = xdp(dp, pkt)
    assert verdict == XDP_PASS
    assert backend_of(out) in BACKENDS.values()
    assert_checksums_valid(out)
    assert bytes(pkt)[14 + 20 : 14 + 28] == out[14 + 20 : 14 + 28], "options untouched"


def test_vlan_tagged(dp):
    pkt = Ether() / Dot1Q(vlan=42) / IP(src=CLIENT, dst=VIP) / TCP(sport=42100, dport=80, flags="S")
    verdict, out = xdp(dp, pkt)
    assert verdict == XDP_PASS
    p = Ether(out)
    assert p[Dot1Q].vlan == 42
    assert (p[IP].dst, p[TCP].dport) in BACKENDS.values()
    assert_checksums_valid(out)


@pytest.mark.parametrize(
    "name", ["fragment_first", "fragment_later", "non_vip", "other_port", "arp", "icmp", "tcp_midstream"]
)
def test_untouched_packets(dp, name):
    base = Ether() / IP(src=CLIENT, dst=VIP, id=7) / UDP(sport=5002, dport=53) / Raw(b"y" * 64)
    pkts = {
        "fragment_first": fragment(base[IP], fragsize=32)[0],
        "fragment_later": fragment(base[IP], fragsize=32)[1],
        "non_vip": Ether() / IP(src=CLIENT, dst="10.0.0.99") / TCP(sport=1, dport=80, flags="S"),
        "other_port": Ether() / IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=22, flags="S"),
        "arp": Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=VIP, psrc=CLIENT),
        "icmp": Ether() / IP(src=CLIENT, dst=VIP) / ICMP(),
        "tcp_midstream": Ether() / IP(src=CLIENT, dst=VIP) / TCP(sport=43000, dport=80, flags="A"),
    }
    pkt = pkts[name]
    if not isinstance(pkt, Ether):
        pkt = Ether() / pkt
    verdict, out = xdp(dp, pkt)
    assert verdict == XDP_PASS
    assert out == bytes(pkt)


@pytest.mark.parametrize("cut", [1, 13, 14, 20, 33, 34, 40, 53])
def test_truncated_frames_pass_untouched(dp, cut):
    pkt = bytes(syn(sport=44000))[:cut]
    verdict, out = xdp(dp, pkt) if cut >= 14 else (XDP_PASS, pkt)
    if cut < 14:
        # the kernel refuses test runs shorter than an Ethernet header; nothing to check
        return
    assert verdict == XDP_PASS
    assert out == pkt


def test_bad_ip_lengths_pass_untouched(dp):
    for kw in ({"ihl": 4}, {"len": 10}, {"len": 2000}, {"version": 6}):
        p = syn(sport=44100, **kw)
        verdict, out = xdp(dp, p)
        assert verdict == XDP_PASS
        assert out == bytes(p), kw


def test_maglev_picks_midstream_packets_consistently(dp):
    p1 = Ether() / IP(src=CLIENT, dst=VIP) / TCP(sport=45000, dport=81, flags="A")
    v1, out1 = xdp(dp, p1)
    assert v1 == XDP_PASS and backend_of(out1) in BACKENDS.values()
    assert_checksums_valid(out1)
    _, maps = dp
    remove_conntrack(maps)
    _, out2 = xdp(dp, p1)
    assert backend_of(out2) == backend_of(out1)  # same 5-tuple, same slot


def test_empty_table_drops_new_flows_and_counts(dp):
    _, maps = dp
    write_table(maps, 3, [structs.EMPTY_SLOT] * TABLE)
    maps.set_service(ServiceEntry(VIP, 82, "tcp", 3, 3, "weighted-random"))
    verdict, _ = xdp(dp, syn(sport=46000, dport=82))
    assert verdict == XDP_DROP
    _, drops = maps.service_counters(3)
    assert drops["no_backend"] >= 1


# ---- TC egress ------------------------------------------------------------------------------------


def reply_for(out_syn: bytes, flags="SA", payload=b"", udp=False, udp_chksum=None):
    p = Ether(out_syn)
    bip = p[IP].dst
    if udp:
        bport = p[UDP].dport
        l4 = UDP(sport=bport, dport=p[UDP].sport)
        if udp_chksum is not None:
            l4.chksum = udp_chksum
    else:
        bport = p[TCP].dport
        l4 = TCP(sport=bport, dport=p[TCP].sport, flags=flags, seq=5000, ack=1001)
    return Ether() / IP(src=bip, dst=p[IP].src) / l4 / Raw(payload)


def test_reply_is_snated_with_valid_checksums(dp):
    _, out = xdp(dp, syn(sport=47000))
    reply = reply_for(out)
    verdict, snat = tc(dp, reply)
    assert verdict == TC_ACT_OK
    p = Ether(snat)
    assert (p[IP].src, p[TCP].sport) == (VIP, 80)
    assert (p[IP].dst, p[TCP].dport) == (CLIENT, 47000)
    assert_checksums_valid(snat)
    assert diff_offsets(bytes(reply), snat) <= {24, 25, 26, 27, 28, 29, 34, 35, 50, 51}


def test_udp_reply_snat_with_and_without_checksum(dp):
    _, out = xdp(dp, Ether() / IP(src=CLIENT, dst=VIP) / UDP(sport=5003, dport=53) / Raw(b"q"))
    verdict, snat = tc(dp, reply_for(out, udp=True, payload=b"answer"))
    assert verdict == TC_ACT_OK
    p = Ether(snat)
    assert (p[IP].src, p[UDP].sport) == (VIP, 53)
    assert p[UDP].chksum != 0
    assert_checksums_valid(snat)
    verdict, snat0 = tc(dp, reply_for(out, udp=True, payload=b"answer", udp_chksum=0))
    assert Ether(snat0)[UDP].chksum == 0
    assert (Ether(snat0)[IP].src, Ether(snat0)[UDP].sport) == (VIP, 53)
    assert_checksums_valid(snat0)


def test_unknown_reply_passes_untouched(dp):
    p = Ether() / IP(src="10.0.2.11", dst=CLIENT) / TCP(sport=8080, dport=1234, flags="A")
    verdict, out = tc(dp, p)
    assert verdict == TC_ACT_OK
    assert out == bytes(p)


def test_handshake_and_close_tracking(dp):
    _, maps = dp
    _, out = xdp(dp, syn(sport=48000))
    bip, bport = backend_of(out)
    bid = next(b for b, addr in BACKENDS.items() if addr == (bip, bport))
    before = maps.backend_counters([bid])[bid]
    tc(dp, reply_for(out, flags="SA"))
    xdp(dp, Ether() / IP(src=CLIENT, dst=VIP) / TCP(sport=48000, dport=80, flags="A", seq=1001, ack=5001))
    established = maps.backend_counters([bid])[bid]
    assert established.counters.handshakes == before.counters.handshakes + 1
    assert established.live_flows == before.live_flows + 1
    xdp(dp, Ether() / IP(src=CLIENT, dst=VIP) / TCP(sport=48000, dport=80, flags="FA", seq=1001, ack=5001))
    tc(dp, reply_for(out, flags="FA"))
    after = maps.backend_counters([bid])[bid]
    assert after.live_flows == before.live_flows
    fwd = next(e for e in conntrack_entries(maps) if e.direction == structs.DIR_FORWARD)
    assert fwd.flags & structs.CT_F_CLOSED and fwd.synack_ns > 0


def test_rst_answering_syn_counts_a_failure(dp):
    _, maps = dp
    _, out = xdp(dp, syn(sport=48500))
    bip, bport = backend_of(out)
    bid = next(b for b, addr in BACKENDS.items() if addr == (bip, bport))
    before = maps.backend_counters([bid])[bid].counters
    tc(dp, reply_for(out, flags="RA"))
    after = maps.backend_counters([bid])[bid].counters
    assert after.conn_failures == before.conn_failures + 1


def test_evicted_reverse_entry_is_restored(dp):
    _, maps = dp
    _, out = xdp(dp, syn(sport=49000))
    loaded, _ = dp
    assert evict(loaded, lambda _keys, vals: vals["dir"] == structs.DIR_REVERSE) == 1
    xdp(dp, Ether() / IP(src=CLIENT, dst=VIP) / TCP(sport=49000, dport=80, flags="A"))
    verdict, snat = tc(dp, reply_for(out, flags="A"))
    assert (Ether(snat)[IP].src, Ether(snat)[TCP].sport) == (VIP, 80)


def close_flow(dp, sport: int) -> bytes:
    """A whole TCP flow through XDP and TC: SYN, SYN-ACK, FIN both ways; returns the DNATed SYN."""
    _, out = xdp(dp, syn(sport=sport))
    tc(dp, reply_for(out, flags="SA"))
    xdp(dp, Ether() / IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags="FA"))
    tc(dp, reply_for(out, flags="FA"))
    return out


def entries_of(maps, sport: int):
    """(CtKey records, created_ns) of one client port's conntrack entries, as the sweep reads them."""
    keys, vals = maps.conntrack_arrays()
    mine = vals["client_port"] == structs.port_to_be16(sport)
    return keys[mine].copy(), vals["created_ns"][mine].copy()


def test_sweep_removal_spares_a_new_flow_on_the_same_tuple(dp):
    # the sweep read a closed flow as expired; before its delete, the client reused the port
    _, maps = dp
    close_flow(dp, 48800)
    old_keys, old_created = entries_of(maps, 48800)
    assert len(old_keys) == 2
    verdict, new_syn = xdp(dp, syn(sport=48800))
    assert verdict == XDP_PASS
    assert maps.reap_conntrack(old_keys, old_created) == 0
    keys, created = entries_of(maps, 48800)
    assert len(keys) == 2 and not set(created) & set(old_created)
    verdict, ack = xdp(dp, Ether() / IP(src=CLIENT, dst=VIP) / TCP(sport=48800, dport=80, flags="A"))
    assert verdict == XDP_PASS and backend_of(ack) == backend_of(new_syn)  # still tracked, not mid-stream
    # once the new flow's entries are what the sweep read, they go (both entries of the one flow)
    assert maps.reap_conntrack(keys, created) == 1
    assert len(entries_of(maps, 48800)[0]) == 0


def test_syn_meeting_an_entry_being_removed_is_dropped_and_counted(dp):
    loaded, maps = dp
    close_flow(dp, 48900)
    ct = loaded.table("lb_ct_transient")  # a flow that never completed its handshake
    keys, vals = maps.conntrack_arrays()
    for key, e in zip(keys, conntrack_entries(maps), strict=True):
        if e.direction == structs.DIR_FORWARD and e.client[1] == 48900:
            k = ct.Key.from_buffer_copy(key.tobytes())
            raw = ct[k]
            raw.created_ns = structs.CT_REAPING  # the sweep claimed it and is about to delete it
            ct[k] = raw
    _, before = maps.service_counters(0)
    verdict, _ = xdp(dp, syn(sport=48900))
    assert verdict == XDP_DROP  # the client retransmits once the entry is gone
    _, after = maps.service_counters(0)
    assert after["conntrack_busy"] == before["conntrack_busy"] + 1
    assert len(entries_of(maps, 48900)[0]) == 2  # nothing of the old flow touched by the SYN


def test_per_source_rate_limit_counts_new_connections_only(dp):
    loaded, maps = dp
    maps.set_service(
        ServiceEntry(VIP, 83, "tcp", 4, 0, "weighted-random", limits=RateLimits(src_rate=1, src_burst=5))
    )
    verdicts = [xdp(dp, syn(src="10.0.5.1", sport=50000 + i, dport=83))[0] for i in range(20)]
    assert verdicts.count(XDP_PASS) == 5 and verdicts.count(XDP_DROP) == 15
    # another source has its own bucket
    assert xdp(dp, syn(src="10.0.5.2", sport=50000, dport=83))[0] == XDP_PASS
    # established flows of the limited source are never limited
    for i in range(20):
        p = Ether() / IP(src="10.0.5.1", dst=VIP) / TCP(sport=50000, dport=83, flags="A", seq=i)
        assert xdp(dp, p)[0] == XDP_PASS
    _, drops = maps.service_counters(4)
    assert drops["rate_limit_source"] == 15


def test_per_backend_rate_limit(dp):
    loaded, maps = dp
    write_table(maps, 3, [1] * TABLE)
    maps.set_service(
        ServiceEntry(VIP, 84, "tcp", 5, 3, "weighted-random", limits=RateLimits(be_rate=1, be_burst=3))
    )
    verdicts = [xdp(dp, syn(src=f"10.0.6.{i}", sport=51000, dport=84))[0] for i in range(10)]
    assert verdicts.count(XDP_PASS) == 3
    _, drops = maps.service_counters(5)
    assert drops["rate_limit_backend"] == 7


def test_per_source_bucket_shared_by_two_cpus():
    """One source's SYNs on both CPUs at once: the limit must not double (or refill on races)."""
    import multiprocessing

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 CPUs")
    n = 20_000  # SYNs per CPU, one source address, distinct source ports
    loaded = Loaded(DataplaneSpec(table_size=TABLE, conntrack_entries=4 * n, max_groups=1))
    try:
        maps = Maps(loaded)
        maps.set_backend(0, "10.0.2.11", 8080, active=True)
        write_table(maps, 0, weighted_table({0: 1}, TABLE))
        maps.set_service(
            ServiceEntry(VIP, 80, "tcp", 0, 0, "weighted-random", limits=RateLimits(src_rate=1, src_burst=5))
        )
        template = bytearray(bytes(Ether() / IP(src="10.0.9.9", dst=VIP) / TCP(sport=1, dport=80, flags="S")))
        ctx = multiprocessing.get_context("fork")
        barrier, results = ctx.Barrier(2), ctx.Queue()

        def run_on(cpu: int) -> None:  # a process per CPU, so both test runs really overlap
            os.sched_setaffinity(0, {cpu})
            frames = []
            for i in range(n):
                template[34:36] = (1024 + cpu * n + i).to_bytes(2, "big")
                fix_checksums(template, 14)  # a SYN whose checksum fails is dropped before the limit
                frames.append(bytes(template))
            barrier.wait()
            results.put(sum(run_program(loaded.xdp_fn.fd, f).retval == XDP_PASS for f in frames))

        procs = [ctx.Process(target=run_on, args=(cpu,)) for cpu in (0, 1)]
        for p in procs:
            p.start()
        admitted = results.get(timeout=120) + results.get(timeout=120)
        for p in procs:
            p.join()
        assert 5 <= admitted <= 8, f"{admitted} of {2 * n} SYNs admitted by a 1/s, burst 5 bucket"
    finally:
        loaded.close()
