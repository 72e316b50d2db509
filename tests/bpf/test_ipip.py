# SPDX-License-Identifier: Apache-2.0
"""DSR over IPIP through the real XDP program (BPF_PROG_TEST_RUN, docs/datapath.md#dsr-over-ipip):
the outer header's fields and checksum, the inner packet byte for byte, conntrack from client
packets alone, a mid-stream packet without an entry picked by Maglev, a VLAN tag kept, NAT
services as they were, and a health probe of a DSR backend encapsulated at TC egress.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from lbtui.dataplane import structs
from lbtui.dataplane.progrun import XDP_PASS, run_program
from tests.support.bpfrun import (
    BACKENDS,
    CLIENT,
    CLIENT_ISN,
    MAC_CLIENT,
    MAC_LB,
    VIP,
    Programs,
    assert_checksums_valid,
    backend_of,
    from_backend,
    to_vip,
)

LB_SOURCE = "10.0.9.2"  # the load-balancer host's own address: the outer source
DSR_MAGLEV, DSR_RANDOM = 90, 91  # VIP ports of the two DSR services
TC_ACT_OK = 0


@pytest.fixture(scope="module")
def progs():
    p = Programs()
    p.set_service(DSR_MAGLEV, "tcp", 3, "maglev", ipip_source=LB_SOURCE)
    p.set_service(DSR_RANDOM, "udp", 4, "weighted-random", ipip_source=LB_SOURCE)
    yield p
    p.close()


@pytest.fixture(autouse=True)
def empty_conntrack(progs):
    progs.clear()
    yield


def outer_and_inner(frame: bytes) -> tuple[IP, bytes]:
    eth = Ether(frame)
    assert eth.type == 0x0800
    outer = eth[IP]
    return outer, bytes(frame[14 + 20 :])


def assert_encapsulated(progs: Programs, sent: bytes, out: bytes) -> IP:
    """`out` is `sent` inside an outer IPv4 header from LB_SOURCE to one of the backends."""
    outer, inner = outer_and_inner(out)
    sent_ip = bytes(Ether(sent)[IP])
    assert inner == sent_ip, "the inner packet must be the client's, byte for byte"
    assert Ether(out).src == MAC_CLIENT and Ether(out).dst == MAC_LB, "link-layer header moved as it was"
    assert (outer.version, outer.ihl, outer.proto, outer.ttl) == (4, 5, 4, 64)
    assert outer.src == LB_SOURCE
    assert outer.dst in {ip for ip, _ in BACKENDS.values()}
    assert outer.len == len(sent_ip) + 20
    inner_ip = IP(sent_ip)
    assert (outer.tos, outer.id, outer.flags.DF) == (inner_ip.tos, inner_ip.id, inner_ip.flags.DF)
    assert outer.frag == 0
    fresh = IP(bytes(outer))
    del fresh.chksum
    assert IP(bytes(fresh)).chksum == outer.chksum, "outer IP checksum"
    assert_checksums_valid(bytes(Ether() / IP(inner)))  # the inner checksums untouched (still right)
    return outer


def test_syn_goes_to_its_backend_inside_ipip(progs):
    before = progs.global_counters()["ipip_encap"]
    syn = bytes(to_vip("S", dport=DSR_MAGLEV))
    verdict, out = progs.xdp(syn)
    assert verdict == XDP_PASS
    outer = assert_encapsulated(progs, syn, out)
    assert progs.global_counters()["ipip_encap"] == before + 1
    [fwd] = [e for e in progs.entries() if e.direction == structs.DIR_FORWARD]
    assert fwd.client == (CLIENT, 40000) and fwd.vip == (VIP, DSR_MAGLEV)
    assert fwd.backend[0] == outer.dst, "conntrack holds the backend the packet went to"


def test_tos_df_and_id_are_copied(progs):
    pkt = Ether(src=MAC_CLIENT, dst=MAC_LB) / IP(src=CLIENT, dst=VIP, tos=0xB9, id=4321, flags="DF")
    pkt = pkt / TCP(sport=40001, dport=DSR_MAGLEV, flags="S", seq=CLIENT_ISN)
    sent = bytes(pkt)
    _, out = progs.xdp(sent)
    assert_encapsulated(progs, sent, out)
    no_df = Ether(sent)
    no_df[IP].flags = 0
    del no_df[IP].chksum
    sent = bytes(no_df)
    _, out = progs.xdp(sent)
    outer = assert_encapsulated(progs, sent, out)
    assert not outer.flags.DF


def test_flow_is_tracked_and_established_from_client_packets_alone(progs):
    syn = bytes(to_vip("S", dport=DSR_MAGLEV))
    _, out = progs.xdp(syn)
    backend = Ether(out)[IP].dst
    # no SYN-ACK passes a DSR load balancer: the client's ACK establishes the flow
    ack = bytes(to_vip("A", dport=DSR_MAGLEV, seq=CLIENT_ISN + 1, ack=777))
    verdict, out = progs.xdp(ack)
    assert verdict == XDP_PASS
    assert Ether(out)[IP].dst == backend
    get = b"GET / HTTP/1.1\r\n\r\n"
    data = bytes(to_vip("PA", dport=DSR_MAGLEV, seq=CLIENT_ISN + 1, ack=777, payload=get))
    verdict, out = progs.xdp(data)
    assert_encapsulated(progs, data, out)
    assert Ether(out)[IP].dst == backend
    [fwd] = [e for e in progs.entries() if e.direction == structs.DIR_FORWARD]
    assert fwd.flags & 0x80, "established (LB_CT_F_EST)"
    assert fwd.packets == 3


def test_backends_direct_replies_are_left_alone_by_tc(progs):
    _, out = progs.xdp(bytes(to_vip("S", dport=DSR_MAGLEV)))
    # the backend answers from the VIP (should such a reply ever pass this host): not ours to rewrite
    reply = bytes(from_backend((VIP, DSR_MAGLEV), "SA"))
    verdict, after = progs.tc(reply)
    assert verdict == TC_ACT_OK and after == reply


def test_midstream_packet_without_entry_gets_the_maglev_pick(progs):
    # the pick of a SYN on a tuple ...
    picks = {}
    for sport in range(41000, 41040):
        _, out = progs.xdp(bytes(to_vip("S", sport=sport, dport=DSR_MAGLEV)))
        picks[sport] = Ether(out)[IP].dst
    assert len(set(picks.values())) > 1
    progs.clear()
    # ... is where a mid-stream segment of that tuple goes when this host has no entry (ECMP moved it)
    for sport, backend in picks.items():
        seg = bytes(to_vip("PA", sport=sport, dport=DSR_MAGLEV, seq=CLIENT_ISN + 100, ack=9, payload=b"x"))
        verdict, out = progs.xdp(seg)
        assert verdict == XDP_PASS
        assert_encapsulated(progs, seg, out)
        assert Ether(out)[IP].dst == backend, f"port {sport}"
    assert len([e for e in progs.entries() if e.direction == structs.DIR_FORWARD]) == len(picks)


def test_udp_datagram_inside_ipip(progs):
    pkt = Ether(src=MAC_CLIENT, dst=MAC_LB) / IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=DSR_RANDOM)
    sent = bytes(pkt / Raw(b"q" * 30))
    verdict, out = progs.xdp(sent)
    assert verdict == XDP_PASS
    assert_encapsulated(progs, sent, out)


def test_vlan_tag_is_kept_in_front_of_the_outer_header(progs):
    seg = TCP(sport=40002, dport=DSR_MAGLEV, flags="S", seq=CLIENT_ISN)
    sent = bytes(Ether(src=MAC_CLIENT, dst=MAC_LB) / Dot1Q(vlan=42) / IP(src=CLIENT, dst=VIP) / seg)
    verdict, out = progs.xdp(sent)
    assert verdict == XDP_PASS
    assert out[:18] == sent[:18], "Ethernet header and VLAN tag"
    outer = IP(out[18:38])
    assert outer.proto == 4 and outer.src == LB_SOURCE
    assert out[38:] == sent[18:]


def test_nat_services_are_unchanged(progs):
    before = progs.global_counters()["ipip_encap"]
    syn = bytes(to_vip("S", dport=81))  # the Maglev NAT service
    verdict, out = progs.xdp(syn)
    assert verdict == XDP_PASS
    assert len(out) == len(syn)
    ip, port = backend_of(out)
    assert (ip, port) in BACKENDS.values()
    assert Ether(out)[IP].proto == 6
    assert_checksums_valid(out)
    assert progs.global_counters()["ipip_encap"] == before


def probe_ctx(mark: int, backend: str) -> bytes:
    """A struct __sk_buff prefix for BPF_PROG_TEST_RUN: mark (offset 8) and priority (offset 32)."""
    ctx = bytearray(36)
    struct.pack_into("=I", ctx, 8, mark)
    struct.pack_into("=I", ctx, 32, int(ipaddress.IPv4Address(backend)))
    return bytes(ctx)


def test_health_probe_goes_to_its_backend_inside_ipip_at_tc(progs):
    backend = BACKENDS[1][0]
    syn = Ether(src=MAC_LB, dst=MAC_CLIENT) / IP(src=LB_SOURCE, dst=VIP, flags="DF", id=7)
    syn = bytes(syn / TCP(sport=33000, dport=DSR_MAGLEV, flags="S", seq=5))
    before = progs.global_counters()["ipip_probes"]
    r = run_program(progs.loaded.tc_fn.fd, syn, ctx=probe_ctx(structs.PROBE_MARK, backend))
    assert r.retval == TC_ACT_OK
    outer, inner = outer_and_inner(r.data)
    assert inner == syn[14:], "the probe itself, byte for byte"
    assert (outer.proto, outer.src, outer.dst, outer.len) == (4, LB_SOURCE, backend, len(syn) - 14 + 20)
    assert outer.flags.DF and outer.id == 7
    fresh = IP(bytes(outer))
    del fresh.chksum
    assert IP(bytes(fresh)).chksum == outer.chksum
    assert progs.global_counters()["ipip_probes"] == before + 1
    # another mark (or none): an ordinary packet of this host, left alone
    r = run_program(progs.loaded.tc_fn.fd, syn, ctx=probe_ctx(structs.PROBE_MARK + 1, backend))
    assert r.retval == TC_ACT_OK and r.data == syn


def test_the_clients_fin_ends_a_dsr_flow_and_its_last_packets_still_go_through(progs):
    _, out = progs.xdp(bytes(to_vip("S", sport=40003, dport=DSR_MAGLEV)))
    backend = Ether(out)[IP].dst
    progs.xdp(bytes(to_vip("A", sport=40003, dport=DSR_MAGLEV, seq=CLIENT_ISN + 1, ack=9)))
    [fwd] = [e for e in progs.entries() if e.direction == structs.DIR_FORWARD]
    assert fwd.flags & 0x80 and not fwd.flags & 0x10, "established, open"
    # the backend's FIN never passes here: the client's FIN closes the flow (no 300 s idle wait)
    progs.xdp(bytes(to_vip("FA", sport=40003, dport=DSR_MAGLEV, seq=CLIENT_ISN + 1, ack=9)))
    [fwd] = [e for e in progs.entries() if e.direction == structs.DIR_FORWARD]
    assert fwd.flags & 0x10, "closed (LB_CT_F_CLOSED)"
    last_ack = bytes(to_vip("A", sport=40003, dport=DSR_MAGLEV, seq=CLIENT_ISN + 2, ack=10))
    verdict, out = progs.xdp(last_ack)
    assert verdict == XDP_PASS and Ether(out)[IP].dst == backend
    assert_encapsulated(progs, last_ack, out)
