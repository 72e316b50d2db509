# SPDX-License-Identifier: Apache-2.0
"""Backend selection tables: the slot arrays the data path indexes to pick a backend.

A table is a list of `size` slots, each holding a backend id (or EMPTY when no backend may take
traffic). The data path turns a random number (weighted random), a hash of the client address
(source hash) or a hash of the 5-tuple (Maglev) into a slot index and uses `table[slot]`.

Two builders:
- `weighted_table`: slot counts proportional to the weights, and when the previous table is given,
  only the slots that must change hands move (so a weight change or a backend leaving disturbs as
  few existing source-hash mappings as possible).
- `maglev_table`: Maglev population (Eisenbud et al., NSDI 2016) with a weighted turn order, built
  only from stable backend names, so every LB host computes the same table.

`jhash_3words` is the Linux kernel's jhash_3words on u32 values; the BPF side uses the same function,
so Python can predict which slot a flow lands in.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Mapping, Sequence

import numpy as np

EMPTY = 0xFFFFFFFF  # slot value meaning "no backend" (every weight is 0)

_U32 = 0xFFFFFFFF
JHASH_INITVAL = 0xDEADBEEF


# ---- hashing shared with the data path ----------------------------------------------------------


def _rol32(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _U32


def jhash_3words(a: int, b: int, c: int, initval: int = 0) -> int:
    """The kernel's jhash_3words (include/linux/jhash.h) on u32 values.

    a, b and c start at JHASH_INITVAL + (3 << 2) + initval, get the words added and go through
    __jhash_final; the result is c. Test vectors (computed by this function, and checked against
    the kernel's C macros compiled with gcc):

    >>> hex(jhash_3words(0, 0, 0))
    '0x1b68e557'
    >>> hex(jhash_3words(1, 2, 3))
    '0xa46158f5'
    >>> hex(jhash_3words(0x0A000001, 0x0A000002, (12345 << 16) | 80, 6))
    '0x339cc7f2'
    """
    init = (JHASH_INITVAL + (3 << 2) + initval) & _U32
    a = (a + init) & _U32
    b = (b + init) & _U32
    c = (c + init) & _U32
    # __jhash_final
    c ^= b
    c = (c - _rol32(b, 14)) & _U32
    a ^= c
    a = (a - _rol32(c, 11)) & _U32
    b ^= a
    b = (b - _rol32(a, 25)) & _U32
    c ^= b
    c = (c - _rol32(b, 16)) & _U32
    a ^= c
    a = (a - _rol32(c, 4)) & _U32
    b ^= a
    b = (b - _rol32(a, 14)) & _U32
    c ^= b
    c = (c - _rol32(b, 24)) & _U32
    return c


# ---- helpers ------------------------------------------------------------------------------------


def slot_counts(table: Sequence[int]) -> dict[int, int]:
    """Number of slots per backend id (EMPTY slots are not counted)."""
    counts: dict[int, int] = {}
    for backend in table:
        if backend != EMPTY:
            counts[backend] = counts.get(backend, 0) + 1
    return counts


def diff_slots(old: Sequence[int], new: Sequence[int]) -> list[tuple[int, int]]:
    """(slot, new backend id) for every slot whose backend differs; what the writer must update."""
    if len(old) != len(new):
        raise ValueError(f"tables differ in size: {len(old)} != {len(new)}")
    a, b = np.asarray(old, dtype=np.int64), np.asarray(new, dtype=np.int64)
    changed = np.flatnonzero(a != b)
    return list(zip(changed.tolist(), b[changed].tolist(), strict=True))


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


# ---- weighted tables (weighted random, source hash) ---------------------------------------------


def apportion(weights: Mapping[int, int], size: int) -> dict[int, int]:
    """Slot count per backend: largest-remainder apportionment of `size` slots by weight.

    Only backends with weight > 0 appear. Ties in the remainder go to the larger weight, then to the
    smaller id (deterministic). When size allows, every backend gets at least one slot (taken from
    the backend with the most slots).
    """
    live = {bid: w for bid, w in weights.items() if w > 0}
    total = sum(live.values())
    if total == 0 or size <= 0:
        return {}
    counts = {bid: size * w // total for bid, w in live.items()}
    left = size - sum(counts.values())
    by_remainder = sorted(live, key=lambda bid: (-(size * live[bid] % total), -live[bid], bid))
    for bid in by_remainder[:left]:
        counts[bid] += 1
    if size >= len(live):
        starved = sorted((bid for bid, n in counts.items() if n == 0), key=lambda bid: (-live[bid], bid))
        for bid in starved:
            donor = max(counts, key=lambda d: (counts[d], -d))
            counts[donor] -= 1
            counts[bid] = 1
    return counts


def _interleave(counts: Mapping[int, int]) -> list[int]:
    """A sequence holding each id counts[id] times, spread evenly (k-th copy at (k + 1/2) / count).

    Ordered by position, then by id (numpy, so a 65537-slot table takes milliseconds).
    """
    live = [(bid, n) for bid, n in counts.items() if n > 0]
    if not live:
        return []
    ids = np.concatenate([np.full(n, bid, dtype=np.int64) for bid, n in live])
    pos = np.concatenate([(2 * np.arange(n, dtype=np.float64) + 1) / (2 * n) for _, n in live])
    return ids[np.lexsort((ids, pos))].tolist()


def _evenly_spaced(items: np.ndarray, pick: int) -> np.ndarray:
    """`pick` elements of `items` spread over its whole length (deterministic)."""
    n = len(items)
    return items[((2 * np.arange(pick, dtype=np.int64) + 1) * n) // (2 * pick)]


def weighted_table_array(
    weights: Mapping[int, int], size: int, previous: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """A table of `size` slots where each backend holds a share of slots proportional to its weight.

    With `previous` (a table of the same size), the change is minimal: a backend keeps all of its
    previous slots up to its new count; only the surplus slots of backends that shrank (and slots of
    backends that are gone, and EMPTY slots) are handed to the backends that grew. So the number of
    changed slots equals the sum of the positive count differences. Same input, same output.
    """
    if size <= 0:
        raise ValueError(f"table size must be positive, got {size}")
    counts = apportion(weights, size)
    if not counts:
        return np.full(size, EMPTY, dtype=np.int64)
    if previous is None or len(previous) != size:
        return np.asarray(_interleave(counts), dtype=np.int64)

    prev = np.asarray(previous, dtype=np.int64)
    order = np.argsort(prev, kind="stable")  # slots grouped by backend, in slot order within a group
    grouped = prev[order]
    free_parts = [order[~np.isin(grouped, np.fromiter(counts, dtype=np.int64))]]
    deficits: dict[int, int] = {}
    for backend, wanted in counts.items():
        lo, hi = np.searchsorted(grouped, backend, "left"), np.searchsorted(grouped, backend, "right")
        held = order[lo:hi]
        if len(held) > wanted:
            free_parts.append(_evenly_spaced(held, len(held) - wanted))
        elif len(held) < wanted:
            deficits[backend] = wanted - len(held)
    free = np.sort(np.concatenate(free_parts))
    receivers = np.asarray(_interleave(deficits), dtype=np.int64)
    # Surplus and deficit both sum to `size` minus the kept slots, so they pair up exactly.
    if len(free) != len(receivers):
        raise AssertionError("selection table bookkeeping: free slots and deficits differ")
    table = prev.copy()
    table[free] = receivers
    return table


def weighted_table(weights: Mapping[int, int], size: int, previous: Sequence[int] | None = None) -> list[int]:
    """weighted_table_array as a list of ints."""
    return [int(x) for x in weighted_table_array(weights, size, previous).tolist()]


# ---- Maglev -------------------------------------------------------------------------------------


def _name_hash(name: str, person: bytes) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "little")


def maglev_permutation_params(name: str, size: int) -> tuple[int, int]:
    """(offset, skip) of a backend's preference list: slot j of its list is (offset + j*skip) % size."""
    offset = _name_hash(name, b"lbtui-maglev-ofs") % size
    skip = _name_hash(name, b"lbtui-maglev-skp") % (size - 1) + 1
    return offset, skip


def maglev_table(backends: Mapping[int, tuple[str, int]], size: int) -> list[int]:
    """Maglev lookup table. `backends` maps backend id -> (stable name such as "ip:port", weight).

    Each backend walks its own permutation of the slots (from two hashes of its name) and takes the
    next free slot on each of its turns. A backend with weight w gets w turns for every turn of a
    weight-1 backend; turns are spread evenly (the k-th turn of a backend happens at time k / w,
    ties go in name order), so slot shares follow the weights. The order of turns and the
    permutations depend only on names and weights, never on ids or dict order, so every process and
    host builds the same table for the same backends. `size` must be prime (every skip then visits
    every slot); weight-0 backends are left out; no backend with weight > 0 -> all EMPTY.
    """
    if not is_prime(size):
        raise ValueError(f"maglev table size must be prime, got {size}")
    live = sorted((name, bid, w) for bid, (name, w) in backends.items() if w > 0)
    if not live:
        return [EMPTY] * size

    table = [EMPTY] * size
    params = [maglev_permutation_params(name, size) for name, _, _ in live]
    position = [offset for offset, _ in params]  # next candidate slot of each backend
    turns = [0] * len(live)
    # heap of (time of the backend's next turn, index in name order)
    queue = [(1 / w, i) for i, (_, _, w) in enumerate(live)]
    heapq.heapify(queue)
    filled = 0
    while filled < size:
        _, i = heapq.heappop(queue)
        skip = params[i][1]
        slot = position[i]
        while table[slot] != EMPTY:
            slot = (slot + skip) % size
        table[slot] = live[i][1]
        position[i] = (slot + skip) % size
        filled += 1
        turns[i] += 1
        heapq.heappush(queue, ((turns[i] + 1) / live[i][2], i))
    return table
