# SPDX-License-Identifier: Apache-2.0
"""Fingerprints of the selection tables, to compare load-balancer hosts (docs/scale-out.md).

Behind ECMP every host must send a flow to the same backend, so every host must build the same
Maglev table for the same backends. Backend ids differ between hosts (they depend on the order
backends were added in), so a table is digested as the backend *address* of each slot: the sorted
addresses, then each slot as the rank of its backend in that list (0 for an empty slot).
"""

from __future__ import annotations

import hashlib

import numpy as np

from lbtui import model
from lbtui.control.selection import EMPTY
from lbtui.engine.group import Group
from lbtui.engine.topology import Topology

DIGITS = 16


def group_fingerprint(group: Group) -> tuple[str, int]:
    """(fingerprint, backends with at least one slot) of a group's table as the data path holds it."""
    table = np.asarray(group.table, dtype=np.int64)
    ranked = sorted((m.address, m.id) for m in group.members.values())
    lookup = np.zeros(max((i for _, i in ranked), default=0) + 2, dtype=np.uint32)
    for rank, (_, member_id) in enumerate(ranked, start=1):
        lookup[member_id] = rank
    unknown = (table == EMPTY) | (table < 0) | (table >= len(lookup) - 1)
    slots = np.where(unknown, 0, lookup[np.where(unknown, len(lookup) - 1, table)]).astype("<u4")
    digest = hashlib.sha256()
    digest.update("\n".join(address for address, _ in ranked).encode())
    digest.update(b"\0")
    digest.update(slots.tobytes())
    return digest.hexdigest()[:DIGITS], int(np.unique(slots[slots > 0]).size)


def table_fingerprints(topology: Topology) -> tuple[model.TableFingerprint, ...]:
    out = []
    for name, proxy in topology.proxies.items():
        for label, group in proxy.groups.items():
            fingerprint, used = group_fingerprint(group)
            out.append(
                model.TableFingerprint(name, label, proxy.cfg.algorithm, len(group.table), used, fingerprint)
            )
    return tuple(out)
