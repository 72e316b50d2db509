# SPDX-License-Identifier: Apache-2.0
"""Conntrack rules on real packets (BPF_PROG_TEST_RUN): established flows survive floods, a lost forward
entry is rebuilt, phantom flows count nowhere, a SYN on a tuple whose backend is gone re-picks
(docs/datapath.md#conntrack)."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lbtui.control.selection import weighted_table
from lbtui.dataplane import structs
from lbtui.dataplane.progrun import TC_ACT_OK, XDP_DROP, XDP_PASS
from tests.fuzz.packets.wire import ETH_IP, ethernet, ipv4_header, tcp_segment
from tests.fuzz.packets.wire import TCP as TCP_PROTO
from tests.support.bpfrun import (
    BACKEND_ISN,
    BACKENDS,
    CLIENT,
    CLIENT_ISN,
    TABLE,
    VIP,
    Programs,
    backend_id_of,
    backend_of,
    from_backend,
    handshake,
    source_of,
    to_vip,
)
from tests.support.maps import write_table

VIP_WIRE = socket.inet_aton(VIP)

CT_ENTRIES = 4096  # two per established flow
TRANSIENT_ENTRIES = 1024  # two per embryonic or closing flow


@pytest.fixture(scope="module")
def module_progs() -> Iterator[Programs]:
    progs = Programs(conntrack_entries=CT_ENTRIES, transient_entries=TRANSIENT_ENTRIES)
    yield progs
    progs.close()


@pytest.fixture
def progs(module_progs: Programs) -> Programs:
    module_progs.clear()
    for sid in (0, 1, 2):
        write_table(module_progs.maps, sid, weighted_table({0: 1, 1: 1, 2: 1}, TABLE))
    for bid, (ip, port) in BACKENDS.items():
        module_progs.maps.set_backend(bid, ip, port, active=True)
    return module_progs


def ack(sport: int = 40000, seq: int = CLIENT_ISN + 1, dport: int = 80, payload: bytes = b"x"):  # noqa: ANN201
    return to_vip("PA", sport=sport, dport=dport, seq=seq, ack=BACKEND_ISN + 1, payload=payload)


def spoofed_syns(count: int, seed: int = 7) -> Iterator[bytes]:
    """SYNs from random addresses, built byte by byte (scapy is too slow for tens of thousands)."""
    rng = random.Random(seed)
    for _ in range(count):
        src = bytes((10, rng.randrange(64, 128), rng.randrange(256), rng.randrange(1, 255)))
        yield bytes(wire_frame(src, VIP_WIRE, rng.randrange(1024, 65536), 80, 0x02, rng.randrange(2**32), 0))


def flood(progs: Programs, count: int, seed: int = 7) -> None:
    """A spoofed SYN flood the backends answer: SYN through XDP, the SYN-ACK through TC."""
    for frame in spoofed_syns(count, seed):
        verdict, out = progs.xdp(frame)
        assert verdict == XDP_PASS
        backend = backend_of(out)
        syn = Ether(frame)
        reply = wire_frame(
            socket.inet_aton(backend[0]),
            socket.inet_aton(syn[IP].src),
            backend[1],
            syn[TCP].sport,
            0x12,
            BACKEND_ISN,
            syn[TCP].seq + 1,
        )
        progs.tc(bytes(reply))


def wire_frame(src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int, ack: int) -> bytearray:
    tcp = tcp_segment(src, dst, sport, dport, flags, b"", seq=seq, ack=ack)
    return bytearray(ethernet(ETH_IP)) + ipv4_header(src, dst, TCP_PROTO, len(tcp)) + tcp


def test_established_flow_survives_a_syn_flood(progs: Programs) -> None:
    backend = handshake(progs)
    flood(progs, 5 * CT_ENTRIES)
    verdict, out = progs.xdp(ack())
    assert verdict == XDP_PASS and backend_of(out) == backend, "the established flow lost its entry"
    verdict, out = progs.tc(from_backend(backend, "A", seq=BACKEND_ISN + 1, ack=CLIENT_ISN + 2))
    assert source_of(out) == (VIP, 80)


def test_udp_flow_with_replies_survives_a_flood(progs: Programs) -> None:
    query = Ether() / IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=53) / Raw(b"q")
    _, out = progs.xdp(query)
    backend = backend_of(out)
    reply = Ether() / IP(src=backend[0], dst=CLIENT) / UDP(sport=backend[1], dport=5000) / Raw(b"a")
    assert source_of(progs.tc(reply)[1]) == (VIP, 53)
    flood(progs, 5 * CT_ENTRIES, seed=8)
    assert backend_of(progs.xdp(query)[1]) == backend, "the UDP flow changed backend"


def test_lost_forward_entry_is_rebuilt_from_the_reverse_entry(progs: Programs) -> None:
    verdict, out = progs.xdp(to_vip("S", sport=41000))
    backend = backend_of(out)
    progs.evict(CLIENT, VIP, 41000, 80)  # the forward entry alone, as an LRU eviction does
    verdict, out = progs.tc(from_backend(backend, "SA", dport=41000))  # the SYN-ACK (or a retransmission)
    assert verdict == TC_ACT_OK and source_of(out) == (VIP, 80)
    verdict, out = progs.xdp(ack(sport=41000))
    assert verdict == XDP_PASS and backend_of(out) == backend, "the client's ACK was not tracked"


def test_a_syn_ack_alone_is_no_handshake(progs: Programs) -> None:
    """A spoofed SYN answered by the backend: no completed handshake, no active flow."""
    _, out = progs.xdp(to_vip("S", sport=42000, src="10.77.0.9"))
    backend = backend_of(out)
    bid = backend_id_of(backend)
    before = progs.backend_stats(bid)
    progs.tc(from_backend(backend, "SA", dport=42000, dst="10.77.0.9"))
    after = progs.backend_stats(bid)
    assert after["handshakes"] == before["handshakes"], "a SYN-ACK nobody acknowledged counted as a handshake"
    progs.xdp(to_vip("A", sport=42000, src="10.77.0.9", seq=CLIENT_ISN + 1, ack=BACKEND_ISN + 1))
    assert progs.backend_stats(bid)["handshakes"] == before["handshakes"] + 1


def test_the_client_ack_must_acknowledge_the_syn_ack(progs: Programs) -> None:
    _, out = progs.xdp(to_vip("S", sport=42100))
    backend = backend_of(out)
    bid = backend_id_of(backend)
    before = progs.backend_stats(bid)["handshakes"]
    progs.tc(from_backend(backend, "SA", dport=42100))
    progs.xdp(to_vip("A", sport=42100, seq=CLIENT_ISN + 1, ack=BACKEND_ISN + 77777))  # a guessed ACK
    assert progs.backend_stats(bid)["handshakes"] == before
    progs.xdp(to_vip("A", sport=42100, seq=CLIENT_ISN + 1, ack=BACKEND_ISN + 1))
    assert progs.backend_stats(bid)["handshakes"] == before + 1


def test_a_bare_ack_answered_by_rst_is_no_connection_failure(progs: Programs) -> None:
    """Maglev balances a TCP packet without an entry; the backend's RST to it is not a refused
    connection (no client started a handshake)."""
    _, out = progs.xdp(to_vip("A", sport=43000, dport=81, seq=123, ack=456))
    backend = backend_of(out)
    bid = backend_id_of(backend)
    before = progs.backend_stats(bid)["conn_failures"]
    progs.tc(from_backend(backend, "R", dport=43000, seq=456, ack=0))
    assert progs.backend_stats(bid)["conn_failures"] == before


def test_a_rst_answering_a_syn_is_a_connection_failure(progs: Programs) -> None:
    _, out = progs.xdp(to_vip("S", sport=43100))
    backend = backend_of(out)
    bid = backend_id_of(backend)
    before = progs.backend_stats(bid)["conn_failures"]
    progs.tc(from_backend(backend, "RA", dport=43100, seq=0, ack=CLIENT_ISN + 1))
    assert progs.backend_stats(bid)["conn_failures"] == before + 1


def test_a_syn_on_a_tuple_whose_backend_was_removed_repicks(progs: Programs) -> None:
    backend = handshake(progs, sport=44000)
    bid = backend_id_of(backend)
    others = [b for b in BACKENDS if b != bid]
    write_table(progs.maps, 0, weighted_table(dict.fromkeys(others, 1), TABLE))
    progs.maps.set_backend(bid, *backend, active=False)
    verdict, out = progs.xdp(to_vip("S", sport=44000, seq=900000))  # the client reuses its port
    assert verdict == XDP_PASS
    assert backend_of(out) in {BACKENDS[b] for b in others}, "the new connection went to a removed backend"
    fwd = [e for e in progs.entries() if e.direction == structs.DIR_FORWARD and e.client[1] == 44000]
    assert len(fwd) == 1 and fwd[0].backend != backend


def test_a_syn_on_an_established_flow_stays_on_its_backend(progs: Programs) -> None:
    backend = handshake(progs, sport=44100)
    write_table(progs.maps, 0, [b for b in BACKENDS if BACKENDS[b] != backend][:1] * TABLE)
    verdict, out = progs.xdp(to_vip("S", sport=44100, seq=777777))
    assert verdict == XDP_PASS and backend_of(out) == backend  # the backend answers with a challenge ACK


def test_malformed_syns_start_no_flow(progs: Programs) -> None:
    for flags in ("SR", "SF"):
        verdict, _ = progs.xdp(to_vip(flags, sport=45000))
        assert verdict == XDP_DROP, f"a {flags} segment was passed"
    assert not [e for e in progs.entries() if e.client[1] == 45000]
    drops = progs.drops(0)
    assert drops["tcp_flags"] >= 2
