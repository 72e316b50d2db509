# SPDX-License-Identifier: Apache-2.0
"""Single packets through a private copy of the BPF programs (BPF_PROG_TEST_RUN), for tests/bpf/.

`Programs` loads lb.c with a small topology (a VIP, three backends, one selection table per service)
and runs frames through the XDP ingress and TC egress programs; the helpers build the frames of a TCP
handshake and its replies with scapy, and read conntrack, counters and drop reasons back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from lbtui.control.selection import weighted_table
from lbtui.dataplane import structs
from lbtui.dataplane.loader import DataplaneSpec, Loaded
from lbtui.dataplane.maps import Maps
from lbtui.dataplane.port import FlowEntry, ServiceEntry
from lbtui.dataplane.progrun import RunResult, run_program
from tests.support.maps import conntrack_entries, remove_conntrack, write_table

VIP = "10.0.0.1"
CLIENT = "10.0.0.2"
BACKENDS = {0: ("10.0.2.11", 8080), 1: ("10.0.2.12", 8080), 2: ("10.0.2.13", 8081)}
TABLE = 13
CLIENT_ISN = 1000
BACKEND_ISN = 5000
MAC_CLIENT, MAC_LB = "02:00:00:00:00:01", "02:00:00:00:00:02"


def spec(**sizes: Any) -> DataplaneSpec:
    """A DataplaneSpec with the sizes this version of DataplaneSpec knows (others are left out)."""
    known = {f.name for f in dataclasses.fields(DataplaneSpec)}
    return DataplaneSpec(**{k: v for k, v in sizes.items() if k in known})


class Programs:
    """lb.c loaded (not attached) with services on VIP:80/tcp (weighted random over the three
    backends), VIP:53/udp (the same) and VIP:81/tcp (Maglev), each its own group."""

    def __init__(self, **sizes: Any) -> None:
        sizes.setdefault("table_size", TABLE)
        sizes.setdefault("max_groups", 8)
        self.loaded = Loaded(spec(**sizes))
        self.maps = Maps(self.loaded)
        for bid, (ip, port) in BACKENDS.items():
            self.maps.set_backend(bid, ip, port, active=True)
        self.set_service(80, "tcp", 0, "weighted-random")
        self.set_service(53, "udp", 1, "weighted-random")
        self.set_service(81, "tcp", 2, "maglev")

    def set_service(self, port: int, protocol: str, sid: int, algorithm: str, **kw: Any) -> None:
        self.maps.set_service(
            ServiceEntry(VIP, port, protocol, sid, sid, algorithm, events_closed=True, events_new=True, **kw)
        )
        write_table(self.maps, sid, weighted_table({0: 1, 1: 1, 2: 1}, TABLE))

    def close(self) -> None:
        self.loaded.close()

    def xdp(self, pkt: Packet | bytes) -> tuple[int, bytes]:
        r = run_program(self.loaded.xdp_fn.fd, bytes(pkt))
        return r.retval, r.data

    def tc(self, pkt: Packet | bytes) -> tuple[int, bytes]:
        r = run_program(self.loaded.tc_fn.fd, bytes(pkt))
        return r.retval, r.data

    # ---- maps -----------------------------------------------------------------------------------

    def entries(self) -> list[FlowEntry]:
        return conntrack_entries(self.maps)

    def clear(self) -> None:
        remove_conntrack(self.maps)

    def clear_next_hops(self) -> None:
        """Empty both next-hop caches of the fast path (bpf/lb_nexthop.h)."""
        for name in ("lb_fp_nexthops", "lb_fp_nexthops6", "lb_fp_reply_nexthops", "lb_fp_reply_nexthops6"):
            self.loaded.table(name).clear()

    def ct_tables(self) -> list[Any]:
        """The BCC tables of conntrack (one before the established/transient split, two after)."""
        names = ("lb_ct_established", "lb_ct_transient", "lb_conntrack")
        tables = []
        for name in names:
            try:
                tables.append(self.loaded.table(name))
            except KeyError:
                continue
        return tables

    def evict(self, saddr: str, daddr: str, sport: int, dport: int, protocol: str = "tcp") -> None:
        """Delete one conntrack entry by key, as an LRU eviction does."""
        found = False
        for table in self.ct_tables():
            k = table.Key()
            k.saddr, k.daddr = structs.ip_to_be32(saddr), structs.ip_to_be32(daddr)
            k.sport, k.dport = structs.port_to_be16(sport), structs.port_to_be16(dport)
            k.proto = structs.PROTO_NUMBERS[protocol]
            try:
                del table[k]
                found = True
            except KeyError:
                continue
        assert found, f"no conntrack entry {saddr}:{sport} > {daddr}:{dport}"

    def backend_stats(self, bid: int) -> dict[str, int]:
        table = self.loaded.table("lb_backend_stats")
        out: dict[str, int] = {}
        for cpu in table.getvalue(table.Key(bid)):
            for name, _ in cpu._fields_:
                out[name] = out.get(name, 0) + getattr(cpu, name)
        return out

    def drops(self, sid: int) -> dict[str, int]:
        return self.maps.service_counters(sid)[1]

    def global_counters(self) -> dict[str, int]:
        return self.maps.global_counters()


def backend_id_of(endpoint: tuple[str, int]) -> int:
    return next(b for b, addr in BACKENDS.items() if addr == endpoint)


def backend_of(frame: bytes) -> tuple[str, int]:
    p = Ether(frame)
    l4 = p[TCP] if TCP in p else p[UDP]
    return p[IP].dst, l4.dport


def source_of(frame: bytes) -> tuple[str, int]:
    p = Ether(frame)
    l4 = p[TCP] if TCP in p else p[UDP]
    return p[IP].src, l4.sport


def to_vip(
    flags: str,
    *,
    sport: int = 40000,
    dport: int = 80,
    seq: int = CLIENT_ISN,
    ack: int = 0,
    src: str = CLIENT,
    payload: bytes = b"",
    window: int = 65535,
    options: Iterable[tuple[str, Any]] | None = None,
) -> Packet:
    """A TCP segment from the client to the VIP."""
    if options is None:
        options = [("WScale", 7)] if "S" in flags else []
    tcp = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window, options=list(options))
    return Ether(src=MAC_CLIENT, dst=MAC_LB) / IP(src=src, dst=VIP) / tcp / Raw(payload)


def from_backend(
    backend: tuple[str, int],
    flags: str,
    *,
    dport: int = 40000,
    seq: int = BACKEND_ISN,
    ack: int = CLIENT_ISN + 1,
    dst: str = CLIENT,
    payload: bytes = b"",
    window: int = 65535,
    options: Iterable[tuple[str, Any]] | None = None,
) -> Packet:
    """A TCP segment from a backend to the client, as the TC egress program sees it (before SNAT)."""
    if options is None:
        options = [("WScale", 7)] if "S" in flags else []
    tcp = TCP(
        sport=backend[1], dport=dport, flags=flags, seq=seq, ack=ack, window=window, options=list(options)
    )
    return Ether(src=MAC_LB, dst=MAC_CLIENT) / IP(src=backend[0], dst=dst) / tcp / Raw(payload)


def handshake(progs: Programs, sport: int = 40000, dport: int = 80, src: str = CLIENT) -> tuple[str, int]:
    """SYN, SYN-ACK, the client's ACK; the backend the flow got."""
    verdict, out = progs.xdp(to_vip("S", sport=sport, dport=dport, src=src))
    assert verdict == 2, "the SYN was not passed"
    backend = backend_of(out)
    progs.tc(from_backend(backend, "SA", dport=sport, dst=src))
    verdict, _ = progs.xdp(
        to_vip("A", sport=sport, dport=dport, seq=CLIENT_ISN + 1, ack=BACKEND_ISN + 1, src=src)
    )
    assert verdict == 2
    return backend


def assert_checksums_valid(frame: bytes) -> None:
    """Recompute IP and L4 checksums from scratch and compare with the frame's (IPv6: the L4
    checksum only, and a UDP checksum must be there: 0 is not allowed)."""
    pkt = Ether(frame)
    if IPv6 in pkt:
        _assert_checksums_valid6(pkt)
        return
    ip = pkt[IP]
    fresh = ip.copy()
    del fresh.chksum
    l4 = fresh[TCP] if TCP in fresh else fresh[UDP]
    if not (UDP in fresh and pkt[UDP].chksum == 0):
        del l4.chksum
    rebuilt = IP(bytes(fresh))
    assert rebuilt.chksum == ip.chksum, "IP checksum"
    if TCP in pkt:
        assert rebuilt[TCP].chksum == pkt[TCP].chksum, "TCP checksum"
    elif pkt[UDP].chksum != 0:
        assert rebuilt[UDP].chksum == pkt[UDP].chksum, "UDP checksum"


def _assert_checksums_valid6(pkt: Packet) -> None:
    fresh = pkt[IPv6].copy()
    l4 = fresh[TCP] if TCP in fresh else fresh[UDP]
    del l4.chksum
    rebuilt = IPv6(bytes(fresh))
    if TCP in pkt:
        assert rebuilt[TCP].chksum == pkt[TCP].chksum, "TCP checksum"
    else:
        assert pkt[UDP].chksum != 0, "IPv6 UDP checksum 0"
        assert rebuilt[UDP].chksum == pkt[UDP].chksum, "UDP checksum"


def monotonic_ns() -> int:
    """The clock bpf_ktime_get_ns reads (CLOCK_MONOTONIC)."""
    return time.monotonic_ns()


def counting(progs: Programs, run: Callable[[], RunResult]) -> tuple[RunResult, dict[str, int]]:
    """The run's result and how each fast_path_* counter moved."""
    before = progs.global_counters()
    r = run()
    after = progs.global_counters()
    moved = {k: after[k] - before[k] for k in after if k.startswith("fast_path_") and after[k] != before[k]}
    return r, moved
