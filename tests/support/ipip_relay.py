# SPDX-License-Identifier: Apache-2.0
"""A userspace stand-in for lbtui's IPIP forwarding, until bpf/lb.c encapsulates (docs/scale-out.md).

Run inside a load-balancer host namespace of the scale-out lab:

    python -m tests.support.ipip_relay --iface IF --vip VIP --backend ADDR [--backend ADDR ...]
                                       --log FILE --ready-file FILE

Every IPv4 packet to the VIP that arrives on IF (an AF_PACKET socket) goes on to a backend inside an
outer IPv4 header: a raw IPPROTO_IPIP socket, so the kernel writes the outer header (source: this
host's address) and routes it back out toward the router, as lbtui will. The inner packet is sent
byte for byte. The backend is picked by a hash of the 5-tuple, the same on every host, so a flow
that ECMP moves to another host keeps its backend. Each flow's first packet appends a line
``src sport dst dport proto backend`` to --log; packets *from* the VIP seen on IF (there should be
none: replies go straight to the client) are counted in ``FILE.replies``.

The host's own kernel must not act on the VIP's packets: the lab gives it a blackhole route.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import socket
import struct
import sys
import zlib
from collections.abc import Sequence

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
IPPROTO_IPIP = 4


def flow_of(packet: bytes) -> tuple[str, int, str, int, int] | None:
    """(src, sport, dst, dport, proto) of an IPv4 packet; ports 0 for other protocols and fragments."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    proto = packet[9]
    src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
    sport = dport = 0
    frag = struct.unpack("!H", packet[6:8])[0] & 0x1FFF
    if proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP) and not frag and len(packet) >= ihl + 4:
        sport, dport = struct.unpack("!HH", packet[ihl : ihl + 4])
    return src, sport, dst, dport, proto


def pick(flow: tuple[str, int, str, int, int], backends: Sequence[str]) -> str:
    return backends[zlib.crc32(repr(flow).encode()) % len(backends)]


def relay(iface: str, vip: str, backends: Sequence[str], log_path: str, ready_path: str) -> None:
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    rx.bind((iface, ETH_P_IP))
    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # it is never read
    seen: set[tuple[str, int, str, int, int]] = set()
    replies = 0
    with open(log_path, "a", buffering=1) as log, open(ready_path, "w") as ready:
        ready.write("ready\n")
        ready.close()
        while True:
            try:
                packet, addr = rx.recvfrom(65535)
            except OSError as exc:  # the interface went down: the socket resumes when it is up again
                if exc.errno != errno.ENETDOWN:
                    raise
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            flow = flow_of(packet)
            if flow is None:
                continue
            if flow[0] == vip:
                replies += 1
                with open(log_path + ".replies", "w") as f:
                    f.write(f"{replies}\n")
                continue
            if flow[2] != vip:
                continue
            backend = pick(flow, backends)
            if flow not in seen:
                seen.add(flow)
                log.write(" ".join(map(str, (*flow, backend))) + "\n")
            with contextlib.suppress(OSError):  # no route while the link is down: the packet is lost
                tx.sendto(packet, (backend, 0))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.ipip_relay")
    p.add_argument("--iface", required=True)
    p.add_argument("--vip", required=True)
    p.add_argument("--backend", action="append", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--ready-file", required=True)
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    relay(a.iface, a.vip, a.backend, a.log, a.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
