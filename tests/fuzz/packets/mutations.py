# SPDX-License-Identifier: Apache-2.0
"""Broken and foreign frames: header mutations of a built frame, and a pool of scapy-built frames.

Every function takes the generator's random.Random, so a seed still determines every byte.
"""

from __future__ import annotations

import random

from tests.fuzz.packets.topology import VIP
from tests.fuzz.packets.wire import Built, fix_checksums, put16, u16


def maybe_fix(rng: random.Random, built: Built) -> bytearray:
    """Half of the mutated frames get checksums that fit their new header fields."""
    if rng.random() < 0.5:
        fix_checksums(built.data, built.l3)
    return built.data


def flip(rng: random.Random, built: Built) -> bytearray:
    end = min(len(built.data), built.l4 + 20)
    for _ in range(rng.randrange(1, 5)):
        built.data[rng.randrange(0, end)] ^= rng.randrange(1, 256)
    return maybe_fix(rng, built)


def bad_ihl(rng: random.Random, built: Built) -> bytearray:
    ip_len = u16(built.data, built.l3 + 2)
    current = built.data[built.l3] & 15
    choice = rng.choice((rng.randrange(0, 5), rng.randrange(current, 16), ip_len // 4 + 1, 15))
    built.data[built.l3] = 0x40 | (choice & 15)
    return maybe_fix(rng, built)


def bad_tot_len(rng: random.Random, built: Built) -> bytearray:
    ip_len = u16(built.data, built.l3 + 2)
    ihl_len = (built.data[built.l3] & 15) * 4
    avail = len(built.data) - built.l3
    value = rng.choice(
        (
            0,
            rng.randrange(0, ihl_len + 1),
            rng.randrange(ihl_len, ihl_len + 28),
            ip_len - 1,
            ip_len + 1,
            avail + rng.randrange(1, 100),
            rng.randrange(65536),
        )
    )
    put16(built.data, built.l3 + 2, max(0, min(value, 65535)))
    return maybe_fix(rng, built)


def bad_doff(rng: random.Random, built: Built) -> bytearray:
    doff = rng.choice((0, 1, 4, rng.randrange(5, 16), 15))
    built.data[built.l4 + 12] = (doff << 4) | (built.data[built.l4 + 12] & 15)
    return maybe_fix(rng, built)


def bad_udp_len(rng: random.Random, built: Built) -> bytearray:
    ulen = u16(built.data, built.l4 + 4)
    value = rng.choice((0, 7, 8, ulen - 1, ulen + 1, ulen + rng.randrange(1, 100), rng.randrange(65536)))
    put16(built.data, built.l4 + 4, max(0, min(value, 65535)))
    return maybe_fix(rng, built)


def build_scapy_pool(seed: int, count: int) -> list[bytes]:
    """Frames built by scapy, as templates for the `scapy` family (fragments, options, ICMP, v6)."""
    from scapy.layers.inet import ICMP as SICMP
    from scapy.layers.inet import IP, IPerror, TCPerror, fragment
    from scapy.layers.inet import TCP as STCP
    from scapy.layers.inet import UDP as SUDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.packet import Raw

    rng = random.Random(seed)
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    pool: list[bytes] = []
    for i in range(count):
        client = f"172.20.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        sport = rng.randrange(1024, 65536)
        kind = i % 8
        if kind == 0:
            pkt = eth / IP(src=client, dst=VIP, id=i) / STCP(sport=sport, dport=80, flags="S", seq=i)
        elif kind == 1:
            opts = [b"\x94\x04\x00\x00", b"\x01" * rng.choice((4, 8, 12))]
            pkt = eth / IP(src=client, dst=VIP, id=i, options=opts) / STCP(sport=sport, dport=80, flags="S")
        elif kind == 2:
            whole = (
                IP(src=client, dst=VIP, id=i)
                / SUDP(sport=sport, dport=53)
                / Raw(b"q" * rng.randrange(40, 200))
            )
            parts = fragment(whole, fragsize=32)
            pkt = eth / parts[rng.randrange(len(parts))]
        elif kind == 3:
            quoted = IPerror(src=VIP, dst=client) / TCPerror(sport=80, dport=sport, flags="SA")
            pkt = eth / IP(src="10.0.9.1", dst=VIP, id=i) / SICMP(type=3, code=4, nexthopmtu=1400) / quoted
        elif kind == 4:
            pkt = eth / IPv6(src="2001:db8::2", dst="2001:db8::1") / STCP(sport=sport, dport=80, flags="S")
        elif kind == 5:
            pkt = Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(
                hwsrc="02:00:00:00:00:01", psrc=client, pdst=VIP
            )
        elif kind == 6:
            pkt = (
                eth
                / Dot1Q(vlan=rng.randrange(4096))
                / IP(src=client, dst=VIP, id=i)
                / SUDP(sport=sport, dport=53)
                / Raw(b"dns")
            )
        else:
            pkt = eth / IP(src=client, dst=VIP, id=i) / SICMP(type=8, id=i, seq=1) / Raw(b"ping")
        pool.append(bytes(pkt))
    return pool
