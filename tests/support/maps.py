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
