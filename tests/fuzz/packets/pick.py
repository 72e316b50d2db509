# SPDX-License-Identifier: Apache-2.0
"""Which backends a new flow may get: lb.c new_flow's selection, as the set of allowed outcomes.

Source hash and Maglev start at one slot (a hash of the client address, or of the 5-tuple);
weighted random starts anywhere (bpf_get_prandom_u32, the one input a seed does not determine), so
its outcome is the set over every start. From the start, lb.c walks up to LB_PICK_TRIES slots past
backends that already serve the client's address:port for another flow (`taken`); when all of them
do, the flow is dropped (DROP_CONFLICT).
"""

from __future__ import annotations

from collections.abc import Callable

from lbtui.control.selection import jhash_3words
from tests.fuzz.packets.parse import View
from tests.fuzz.packets.topology import (
    GROUP_TABLES,
    MAGLEV,
    SOURCE_HASH,
    TABLE_SIZE,
    Endpoint,
    FuzzService,
    endpoint_of,
    group_of,
)

PICK_TRIES = 4  # lb.h LB_PICK_TRIES
DROP_CONFLICT = "drop_conflict"


def addr_hash(raw: bytes) -> int:
    """lb_fam.h LB_ADDR_HASH: an IPv4 address as the u32 in memory; IPv6: the XOR of its four words
    (lb.h lb_addr6_fold)."""
    out = 0
    for i in range(0, len(raw), 4):
        out ^= int.from_bytes(raw[i : i + 4], "little")
    return out


def start_slots(svc: FuzzService, view: View) -> list[int]:
    """The slots lb.c may start the walk at."""
    le = int.from_bytes
    if svc.algorithm == MAGLEV:
        sport, dport = view.sport.to_bytes(2, "big"), view.dport.to_bytes(2, "big")
        words = (le(sport, "little") << 16) | le(dport, "little")
        return [jhash_3words(addr_hash(view.saddr), addr_hash(view.daddr), words) % TABLE_SIZE]
    if svc.algorithm == SOURCE_HASH:
        return [jhash_3words(addr_hash(view.saddr), svc.service_id, 0) % TABLE_SIZE]
    return list(range(TABLE_SIZE))


def pick_outcomes(svc: FuzzService, view: View, taken: Callable[[Endpoint], bool]) -> set[Endpoint | str]:
    """Every backend (or DROP_CONFLICT) the pick can end with."""
    table = GROUP_TABLES[group_of(svc, view.saddr)]
    outcomes: set[Endpoint | str] = set()
    for start in start_slots(svc, view):
        for i in range(PICK_TRIES):
            endpoint = endpoint_of(table[(start + i) % TABLE_SIZE])
            if not taken(endpoint):
                outcomes.add(endpoint)
                break
        else:
            outcomes.add(DROP_CONFLICT)
    return outcomes
