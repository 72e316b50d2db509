# SPDX-License-Identifier: Apache-2.0
import array
import hashlib
import os
import random
import subprocess
import sys

import pytest

from lbtui.control.selection import (
    EMPTY,
    apportion,
    diff_slots,
    jhash_3words,
    maglev_table,
    slot_counts,
    weighted_table,
)

BIG = 65537


def moved_slots_expected(old: list[int], new: list[int]) -> int:
    """Slots that must move: the sum of the positive slot-count differences."""
    before, after = slot_counts(old), slot_counts(new)
    return sum(max(0, n - before.get(b, 0)) for b, n in after.items())


# ---- jhash --------------------------------------------------------------------------------------


def test_jhash_matches_kernel_vectors():
    # Values produced by the kernel's include/linux/jhash.h macros compiled with gcc.
    assert jhash_3words(0, 0, 0) == 0x1B68E557
    assert jhash_3words(1, 2, 3) == 0xA46158F5
    assert jhash_3words(0x0A000001, 0x0A000002, (12345 << 16) | 80, 6) == 0x339CC7F2
    assert jhash_3words(0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0xFFFFFFFF) == 0x6637DCA6


def test_jhash_stays_u32():
    rng = random.Random(1)
    for _ in range(1000):
        h = jhash_3words(rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32))
        assert 0 <= h <= 0xFFFFFFFF


# ---- weighted tables ----------------------------------------------------------------------------


def test_proportions_3_2_1_exact_to_one_slot():
    table = weighted_table({1: 3, 2: 2, 3: 1}, BIG)
    assert len(table) == BIG
    counts = slot_counts(table)
    assert sum(counts.values()) == BIG
    for backend, weight in {1: 3, 2: 2, 3: 1}.items():
        assert abs(counts[backend] - BIG * weight / 6) <= 1


def test_apportion_largest_remainder_is_exact():
    assert apportion({1: 1, 2: 1, 3: 1}, 13) == {1: 5, 2: 4, 3: 4}
    assert apportion({1: 3, 2: 2, 3: 1}, 12) == {1: 6, 2: 4, 3: 2}
    assert apportion({1: 0, 2: 5}, 13) == {2: 13}


def test_every_positive_backend_gets_a_slot_when_size_allows():
    counts = slot_counts(weighted_table({1: 1_000_000, 2: 1, 3: 1}, 13))
    assert counts[2] == 1 and counts[3] == 1 and counts[1] == 11


def test_more_backends_than_slots():
    table = weighted_table({b: 1 for b in range(20)}, 13)
    assert len(table) == 13 and EMPTY not in table
    assert len(set(table)) == 13


def test_slots_are_interleaved_not_in_blocks():
    table = weighted_table({1: 1, 2: 1}, 13)
    runs = [1]
    for prev, cur in zip(table, table[1:], strict=False):
        runs.append(runs[-1] + 1 if cur == prev else 1)
    assert max(runs) <= 2


def test_all_zero_weights_give_empty_table():
    assert weighted_table({1: 0, 2: 0}, 13) == [EMPTY] * 13
    assert weighted_table({}, 13) == [EMPTY] * 13
    previous = weighted_table({1: 1, 2: 1}, 13)
    assert weighted_table({1: 0, 2: 0}, 13, previous) == [EMPTY] * 13


def test_deterministic():
    weights = {7: 5, 3: 2, 11: 9}
    assert weighted_table(weights, BIG) == weighted_table(dict(reversed(weights.items())), BIG)
    previous = weighted_table(weights, BIG)
    changed = {7: 5, 3: 4, 11: 9}
    assert weighted_table(changed, BIG, previous) == weighted_table(changed, BIG, list(previous))


def test_changing_one_weight_moves_only_the_difference():
    old = weighted_table({1: 3, 2: 2, 3: 1}, BIG)
    new = weighted_table({1: 3, 2: 3, 3: 1}, BIG, old)
    # Counts are exactly those of a fresh build (apportionment does not depend on history).
    assert slot_counts(new) == apportion({1: 3, 2: 3, 3: 1}, BIG)
    gained = slot_counts(new)[2] - slot_counts(old)[2]
    assert gained > 0
    moved = diff_slots(old, new)
    assert len(moved) == gained
    assert all(backend == 2 for _, backend in moved)


def test_minimal_change_with_random_weight_changes():
    rng = random.Random(42)
    weights = {b: rng.randint(1, 100) for b in range(8)}
    table = weighted_table(weights, 1009)
    for _ in range(30):
        weights[rng.randrange(8)] = rng.randint(0, 100)
        new = weighted_table(weights, 1009, table)
        assert slot_counts(new) == apportion(weights, 1009)
        assert len(diff_slots(table, new)) == moved_slots_expected(table, new)
        table = new


def test_backend_removed_only_its_slots_move():
    old = weighted_table({1: 1, 2: 1, 3: 1, 4: 1}, BIG)
    new = weighted_table({1: 1, 2: 1, 3: 1}, BIG, old)
    changed = diff_slots(old, new)
    assert len(changed) == old.count(4)
    assert all(old[slot] == 4 for slot, _ in changed)
    assert 4 not in new
    assert slot_counts(new) == apportion({1: 1, 2: 1, 3: 1}, BIG)


def test_backend_added_takes_only_its_share():
    old = weighted_table({1: 1, 2: 1, 3: 1}, BIG)
    new = weighted_table({1: 1, 2: 1, 3: 1, 4: 1}, BIG, old)
    changed = diff_slots(old, new)
    assert len(changed) == new.count(4)
    assert all(backend == 4 for _, backend in changed)


def test_weight_zero_is_like_removal_and_back():
    old = weighted_table({1: 2, 2: 2}, 13)
    off = weighted_table({1: 2, 2: 0}, 13, old)
    assert off == [1] * 13
    back = weighted_table({1: 2, 2: 2}, 13, off)
    assert slot_counts(back) == slot_counts(old)


def test_previous_empty_or_wrong_size():
    filled = weighted_table({1: 1, 2: 1}, 13, [EMPTY] * 13)
    assert slot_counts(filled) == {1: 7, 2: 6}
    assert weighted_table({1: 1, 2: 1}, 13, [1] * 7) == weighted_table({1: 1, 2: 1}, 13)


def test_bad_size():
    with pytest.raises(ValueError):
        weighted_table({1: 1}, 0)


def test_diff_slots():
    assert diff_slots([1, 2, 3], [1, 3, 3]) == [(1, 3)]
    assert diff_slots([1, 2], [1, 2]) == []
    with pytest.raises(ValueError):
        diff_slots([1], [1, 2])


# ---- Maglev -------------------------------------------------------------------------------------


def ten_backends() -> dict[int, tuple[str, int]]:
    return {i: (f"10.0.2.{10 + i}:8080", 1) for i in range(10)}


def flow_slots(count: int, size: int) -> list[int]:
    rng = random.Random(2024)
    slots = []
    for _ in range(count):
        saddr, daddr = rng.getrandbits(32), 0x0A000001
        ports = (rng.getrandbits(16) << 16) | 80
        slots.append(jhash_3words(saddr, daddr, ports, 6) % size)
    return slots


def test_maglev_fills_every_slot_evenly():
    table = maglev_table(ten_backends(), BIG)
    assert EMPTY not in table
    counts = slot_counts(table)
    assert set(counts) == set(range(10))
    for n in counts.values():
        assert abs(n - BIG / 10) <= BIG / 10 * 0.02


def test_maglev_remove_one_of_ten_disrupts_little():
    size = BIG
    backends = ten_backends()
    old = maglev_table(backends, size)
    del backends[3]
    new = maglev_table(backends, size)
    assert 3 not in new

    kept_slots = [s for s in range(size) if old[s] != 3]
    remapped = sum(1 for s in kept_slots if new[s] != old[s])
    assert remapped / len(kept_slots) <= 0.15

    flows = [s for s in flow_slots(10_000, size) if old[s] != 3]
    moved = sum(1 for s in flows if new[s] != old[s])
    assert moved / len(flows) <= 0.15


def test_maglev_deterministic_byte_identical():
    first = array.array("I", maglev_table(ten_backends(), BIG)).tobytes()
    second = array.array("I", maglev_table(dict(reversed(ten_backends().items())), BIG)).tobytes()
    assert first == second


def test_maglev_same_across_processes():
    code = (
        "import hashlib, array\n"
        "from lbtui.control.selection import maglev_table\n"
        "t = maglev_table({i: (f'10.0.2.{10 + i}:8080', 1) for i in range(10)}, 4099)\n"
        "print(hashlib.sha256(array.array('I', t).tobytes()).hexdigest())\n"
    )
    local = hashlib.sha256(array.array("I", maglev_table(ten_backends(), 4099)).tobytes())
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == local.hexdigest()


def test_maglev_depends_on_names_not_ids():
    a = maglev_table({1: ("x:1", 1), 2: ("y:1", 1)}, 13)
    b = maglev_table({20: ("x:1", 1), 10: ("y:1", 1)}, 13)
    assert [{1: 20, 2: 10}[v] for v in a] == b


def test_maglev_weights_proportional():
    backends = {1: ("10.0.2.11:80", 3), 2: ("10.0.2.12:80", 2), 3: ("10.0.2.13:80", 1)}
    counts = slot_counts(maglev_table(backends, BIG))
    for backend, (_, weight) in backends.items():
        expected = BIG * weight / 6
        assert abs(counts[backend] - expected) <= expected * 0.05


def test_maglev_zero_weights():
    assert maglev_table({1: ("a:1", 0), 2: ("b:1", 0)}, 13) == [EMPTY] * 13
    assert maglev_table({}, 13) == [EMPTY] * 13
    assert set(maglev_table({1: ("a:1", 0), 2: ("b:1", 5)}, 13)) == {2}


def test_maglev_requires_prime_size():
    with pytest.raises(ValueError):
        maglev_table(ten_backends(), 65536)
