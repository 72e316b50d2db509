# SPDX-License-Identifier: Apache-2.0
"""Maglev through the real XDP program (BPF_PROG_TEST_RUN): the table Python builds is the one the
data path indexes, and removing one of ten backends moves few of the other backends' flows.

10,000 SYNs with random source addresses and ports (fixed seed) run through the program twice: once
with ten backends, and once after the table was rebuilt without one of them (only the changed slots
written, as the engine does) and conntrack was emptied, so every flow is picked again.
"""

from __future__ import annotations

import random
import socket
import struct
from collections import Counter

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from lbtui.control.selection import diff_slots, jhash_3words, maglev_table
from lbtui.dataplane import structs
from lbtui.dataplane.loader import DataplaneSpec, Loaded
from lbtui.dataplane.maps import Maps
from lbtui.dataplane.port import ServiceEntry
from lbtui.dataplane.progrun import XDP_PASS, run_program
from tests.fuzz.packets.wire import fix_checksums
from tests.support.maps import remove_conntrack, write_table

VIP = "10.0.0.1"
PORT = 80
TABLE = 65537  # prime and >> 10 backends, the default table size
FLOWS = 10_000
SERVICE_ID = 0
GROUP = 0
BACKENDS = {bid: (f"10.0.2.{11 + bid}", 8080) for bid in range(10)}
REMOVED = 4

# frame offsets (Ethernet + 20-byte IPv4 + TCP)
SADDR, DADDR, SPORT, DPORT = slice(26, 30), slice(30, 34), slice(34, 36), slice(36, 38)


def names(bids) -> dict[int, tuple[str, int]]:
    return {bid: (f"{BACKENDS[bid][0]}:{BACKENDS[bid][1]}", 1) for bid in bids}


@pytest.fixture(scope="module")
def dp():
    loaded = Loaded(DataplaneSpec(table_size=TABLE, conntrack_entries=4 * FLOWS, max_groups=2))
    maps = Maps(loaded)
    for bid, (ip, port) in BACKENDS.items():
        maps.set_backend(bid, ip, port, active=True)
    maps.set_service(ServiceEntry(VIP, PORT, "tcp", SERVICE_ID, GROUP, "maglev"))
    yield loaded, maps
    loaded.close()


def flows() -> list[tuple[str, int]]:
    """FLOWS distinct random (client address, client port) pairs; the same on every call."""
    rng = random.Random(20240611)
    out: dict[tuple[str, int], None] = {}
    while len(out) < FLOWS:
        ip = socket.inet_ntoa(struct.pack("!I", rng.randrange(0x0B000000, 0xDF000000)))
        out[(ip, rng.randrange(1024, 65536))] = None
    return list(out)


def syn_frames(pairs: list[tuple[str, int]]) -> list[bytes]:
    """One SYN per flow: a scapy template with the source address and port patched in, and the
    checksums computed again (the program drops a SYN whose checksum does not verify)."""
    template = bytearray(
        bytes(Ether() / IP(src="0.0.0.0", dst=VIP) / TCP(sport=1, dport=PORT, flags="S", seq=1000))
    )
    frames = []
    for ip, port in pairs:
        template[SADDR] = socket.inet_aton(ip)
        template[SPORT] = struct.pack("!H", port)
        fix_checksums(template, 14)
        frames.append(bytes(template))
    return frames


def run_all(dp, frames: list[bytes]) -> list[int]:
    """The backend id each SYN was sent to (read from the rewritten destination)."""
    loaded, maps = dp
    remove_conntrack(maps)
    by_address = {
        (socket.inet_aton(ip), struct.pack("!H", port)): bid for bid, (ip, port) in BACKENDS.items()
    }
    picks = []
    for frame in frames:
        r = run_program(loaded.xdp_fn.fd, frame)
        assert r.retval == XDP_PASS
        picks.append(by_address[(r.data[DADDR], r.data[DPORT])])
    return picks


def predicted(table: list[int], pairs: list[tuple[str, int]]) -> list[int]:
    """What lb.c computes: jhash_3words over the wire bytes read as little-endian words."""
    vip = structs.ip_to_be32(VIP)
    dport = structs.port_to_be16(PORT)
    return [
        table[jhash_3words(structs.ip_to_be32(ip), vip, (structs.port_to_be16(port) << 16) | dport) % TABLE]
        for ip, port in pairs
    ]


def test_removing_one_of_ten_backends_moves_few_other_flows(dp):
    _, maps = dp
    pairs = flows()
    frames = syn_frames(pairs)

    full = maglev_table(names(BACKENDS), TABLE)
    write_table(maps, GROUP, full)
    before = run_all(dp, frames)
    assert before == predicted(full, pairs), "the data path indexes the Python table with the same hash"
    spread = Counter(before)
    assert set(spread) == set(BACKENDS)
    assert all(700 <= n <= 1300 for n in spread.values()), spread  # about 1,000 each

    smaller = maglev_table(names(b for b in BACKENDS if b != REMOVED), TABLE)
    changes = diff_slots(full, smaller)
    assert 0 < len(changes) < len(full) // 5
    slots, ids = zip(*changes, strict=True)
    maps.write_slots(GROUP, np.asarray(slots), np.asarray(ids))
    maps.set_backend(REMOVED, *BACKENDS[REMOVED], active=False)
    try:
        after = run_all(dp, frames)
    finally:
        maps.set_backend(REMOVED, *BACKENDS[REMOVED], active=True)
    assert after == predicted(smaller, pairs)
    assert REMOVED not in after

    stayed_on_others = [(b, a) for b, a in zip(before, after, strict=True) if b != REMOVED]
    moved = sum(1 for b, a in stayed_on_others if b != a)
    assert moved <= 0.15 * len(stayed_on_others), f"{moved} of {len(stayed_on_others)} flows moved"
    # the removed backend's flows spread over all the others
    orphans = Counter(a for b, a in zip(before, after, strict=True) if b == REMOVED)
    assert set(orphans) == set(BACKENDS) - {REMOVED}, orphans


def test_maglev_table_does_not_depend_on_ids_or_order():
    """Two control planes that number the same backends differently build the same table."""
    size = 4099
    a = maglev_table(names(BACKENDS), size)
    shuffled = list(BACKENDS)
    random.Random(7).shuffle(shuffled)
    renumbered = {100 + i: names([bid])[bid] for i, bid in enumerate(shuffled)}
    b = maglev_table(renumbered, size)
    to_name_a = {bid: n for bid, (n, _) in names(BACKENDS).items()}
    to_name_b = {bid: n for bid, (n, _) in renumbered.items()}
    assert [to_name_a[x] for x in a] == [to_name_b[x] for x in b]
