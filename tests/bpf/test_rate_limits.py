# SPDX-License-Identifier: Apache-2.0
"""Rate limits on real packets (BPF_PROG_TEST_RUN): a full per-source table fails closed (new sources
share an overflow bucket), and a refill cannot overflow for any rate (docs/datapath.md#maps)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import numpy as np
import pytest
from bcc.libbcc import lib

from lbtui.dataplane import structs
from lbtui.dataplane.port import RateLimits
from lbtui.dataplane.progrun import XDP_DROP, XDP_PASS
from tests.support.bpfrun import Programs, monotonic_ns, to_vip


@pytest.fixture(scope="module")
def progs() -> Iterator[Programs]:
    progs = Programs(conntrack_entries=8192)
    yield progs
    progs.close()


def fill_source_table(progs: Programs, service_id: int) -> int:
    """Fill lb_rl_source to its capacity with buckets of other clients; how many."""
    table = progs.loaded.table("lb_rl_source")
    capacity = int(table.max_entries)
    keys = np.zeros(capacity, dtype=np.dtype(structs.RateKey))
    keys["service_id"] = service_id
    keys["saddr"] = np.arange(1, capacity + 1, dtype=np.uint32).byteswap()  # 0.0.0.1 ... in wire order
    values = np.zeros(capacity, dtype=np.dtype(structs.Bucket))
    values["last_ns"] = monotonic_ns()
    count = ctypes.c_uint32(capacity)
    rc = lib.bpf_update_batch(
        table.map_fd,
        ctypes.c_void_p(keys.ctypes.data),
        ctypes.c_void_p(values.ctypes.data),
        ctypes.byref(count),
    )
    assert rc == 0 and count.value == capacity
    return capacity


def test_a_full_source_table_fails_closed(progs: Programs) -> None:
    progs.set_service(82, "tcp", 3, "weighted-random", limits=RateLimits(src_rate=1, src_burst=2))
    fill_source_table(progs, 3)
    verdicts = [
        progs.xdp(to_vip("S", src=f"10.60.{i // 250}.{1 + i % 250}", sport=50000 + i, dport=82))[0]
        for i in range(40)
    ]
    # 40 new sources share one source's allowance while the table is full
    assert verdicts.count(XDP_PASS) <= 3, f"{verdicts.count(XDP_PASS)} of 40 new sources admitted"
    assert verdicts.count(XDP_DROP) >= 37
    assert progs.drops(3)["rate_limit_overflow"] >= 37


def test_a_refill_cannot_overflow(progs: Programs) -> None:
    """The highest rate a u32 holds, a bucket empty for 5 s: a full refill, not a wrapped product."""
    rate, burst = 2**32 - 1, 2**32 - 1
    progs.set_service(84, "tcp", 4, "weighted-random", limits=RateLimits(be_rate=rate, be_burst=burst))
    from lbtui.control.selection import weighted_table
    from tests.support.maps import write_table

    write_table(progs.maps, 4, weighted_table({1: 1}, 13))
    table = progs.loaded.table("lb_rl_backend")
    bucket = table[table.Key(1)]
    bucket.tokens = 0
    bucket.last_ns = monotonic_ns() - 5_000_000_000
    table[table.Key(1)] = bucket
    assert progs.xdp(to_vip("S", src="10.61.0.1", sport=51000, dport=84))[0] == XDP_PASS
    tokens = table[table.Key(1)].tokens
    full = burst * 1_000_000_000
    assert tokens == full - 1_000_000_000, f"{tokens} tokens after a full refill (expected {full - 10**9})"
