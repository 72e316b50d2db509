# SPDX-License-Identifier: Apache-2.0
"""Shorthands over the dataplane's one map API for tests and tools that fill or inspect maps by hand.

They work on anything with the `lbtui.dataplane.port.Dataplane` map methods (`maps.Maps`, the
kernel and the memory dataplanes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lbtui.dataplane.port import FlowEntry
from lbtui.dataplane.records import flow_entries


def write_table(maps: Any, group: int, table: Sequence[int]) -> None:
    """Write a whole selection table (slot i -> table[i])."""
    maps.write_slots(group, np.arange(len(table)), np.asarray(table, dtype=np.int64))


def conntrack_entries(maps: Any) -> list[FlowEntry]:
    """Every conntrack entry, decoded."""
    keys, values = maps.conntrack_arrays()
    return flow_entries(keys, values)


def remove_conntrack(maps: Any, which: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> int:
    """Remove the entries `which(keys, values)` selects (a boolean mask; None: all); how many.

    Removal goes through reap_conntrack (the engine's compare-and-delete), with each entry's own
    created_ns, so it removes exactly the entries that were read.
    """
    keys, values = maps.conntrack_arrays()
    mask = np.ones(len(keys), dtype=bool) if which is None else np.asarray(which(keys, values), dtype=bool)
    removed: int = maps.reap_conntrack(keys[mask].copy(), values["created_ns"][mask].copy())
    return removed


CT_TABLE_NAMES = ("lb_ct_established", "lb_ct_transient")


def evict(
    loaded: Any,
    which: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tables: tuple[str, ...] = CT_TABLE_NAMES,
) -> int:
    """Delete single conntrack entries by key, as an LRU eviction does (never the engine's way: it
    removes whole flows through lbtui_reap). `loaded` is a loader.Loaded; `which(keys, values)`
    selects entries of the tables named. Returns how many were deleted."""
    from lbtui.dataplane.records import CT_KEY_DTYPE

    deleted = 0
    for name in tables:
        table = loaded.table(name)
        keys = [table.Key.from_buffer_copy(k) for k in table.keys()]
        if not keys:
            continue
        raw = np.frombuffer(b"".join(bytes(k) for k in keys), dtype=CT_KEY_DTYPE)
        values = np.frombuffer(b"".join(bytes(table[k]) for k in keys), dtype=_entry_dtype())
        for i in np.flatnonzero(np.asarray(which(raw, values), dtype=bool)):
            try:
                del table[keys[int(i)]]
                deleted += 1
            except KeyError:
                continue
    return deleted


def _entry_dtype() -> np.dtype:
    from lbtui.dataplane.records import CT_ENTRY_DTYPE

    return CT_ENTRY_DTYPE
