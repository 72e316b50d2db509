# SPDX-License-Identifier: Apache-2.0
"""The conntrack view's queries: filter and sort over every live flow, then bounded.

The flow table is built from conntrack arrays in the map's own layout (the dtypes of structs.py),
in chunks as the engine reads them; the vectorised matcher is checked against the plain per-flow
rule of the console (flow_matches) on every flow, for many terms.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from lbtui import model
from lbtui.control import flowtable
from lbtui.dataplane import structs
from lbtui.dataplane.records import CT_ENTRY_DTYPE, CT_KEY_DTYPE
from lbtui.widgets.conntrack import SORTS, flow_matches

NOW = 10_000 * 10**9
PROXIES = {0: "web", 1: "dns"}
BACKENDS = [("10.0.2.11", 8080), ("10.0.2.12", 8080), ("10.0.2.9", 8081)]
N = 1500


def conntrack_arrays(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """n flows (forward and reverse entries): TCP to web from 10.100.0.x, every 10th UDP to dns."""
    keys = np.zeros(2 * n, dtype=CT_KEY_DTYPE)
    vals = np.zeros(2 * n, dtype=CT_ENTRY_DTYPE)
    rng = random.Random(7)
    for i in range(n):
        udp = i % 10 == 0
        client = (f"10.100.0.{i % 50}", 20000 + i)
        vip = ("10.0.0.1", 53 if udp else 80)
        backend = BACKENDS[i % 3]
        proto = structs.IPPROTO_UDP if udp else structs.IPPROTO_TCP
        flags = structs.CT_F_EST | (
            0 if udp else structs.CT_F_SYNACK | (structs.CT_F_CLOSED if i % 7 == 0 else 0)
        )
        if not udp and i % 11 == 0:
            flags = 0  # SYN not answered yet
        created = NOW - rng.randrange(1, 5) * 10**9  # one flow, one created_ns in both entries
        for d, (src, dst) in enumerate(((client, vip), (backend, client))):
            k, v = keys[2 * i + d], vals[2 * i + d]
            k["saddr"], k["daddr"] = structs.ip_to_be32(src[0]), structs.ip_to_be32(dst[0])
            k["sport"], k["dport"] = structs.port_to_be16(src[1]), structs.port_to_be16(dst[1])
            k["proto"] = proto
            v["client_ip"], v["client_port"] = structs.ip_to_be32(client[0]), structs.port_to_be16(client[1])
            v["vip"], v["vip_port"] = structs.ip_to_be32(vip[0]), structs.port_to_be16(vip[1])
            v["backend_ip"], v["backend_port"] = (
                structs.ip_to_be32(backend[0]),
                structs.port_to_be16(backend[1]),
            )
            v["proto"], v["dir"], v["service_id"], v["backend_id"] = proto, d, int(udp), i % 3
            v["flags"] = flags
            v["created_ns"] = created + i  # created_ns is unique per flow
            v["last_seen_ns"] = NOW - rng.randrange(0, 4) * 10**8
            v["packets"], v["bytes"] = rng.randrange(1, 100), rng.randrange(60, 10**6)
    return keys, vals


@pytest.fixture(scope="module")
def table() -> flowtable.FlowTable:
    _, vals = conntrack_arrays()
    builder = flowtable.FlowTableBuilder()
    order = np.random.default_rng(3).permutation(len(vals))  # the two entries of a flow in other chunks
    for start in range(0, len(vals), 700):
        builder.add(vals[order[start : start + 700]])
    table = builder.build(NOW, PROXIES)
    assert len(table) == N
    assert (table.column("bytes_out") > 0).all()  # every reverse entry found its flow
    return table


@pytest.fixture(scope="module")
def every_flow(table: flowtable.FlowTable) -> list[model.FlowView]:
    return [table.view(i) for i in range(len(table))]


def oracle(flows: list[model.FlowView], text: str, sort: str, top: int) -> list[model.FlowView]:
    key, reverse = SORTS[sort]
    return sorted((f for f in flows if flow_matches(f, text)), key=key, reverse=reverse)[:top]


TERMS = [
    "",
    "10.100.0.7:",  # exactly that client address
    "10.100.0.7",  # also 10.100.0.70.. (none) and any field containing it
    ":2001",  # client ports 2001x
    "0.7:2",
    "2.9:8081",
    "2.1",
    ":80",
    "8080",
    "web",
    "dns",
    "udp",
    "tcp",
    "closing",
    "syn",
    "established",
    "web closing",
    "10.100.0.3 established 8080",
    "10.0.0.1:53",
    "1:8",
    "nothing-matches",
    "::",
    "WEB",
]


@pytest.mark.parametrize("text", TERMS)
@pytest.mark.parametrize("sort", model.FLOW_SORTS)
def test_query_matches_the_per_flow_rule_on_every_flow(
    table: flowtable.FlowTable, every_flow: list[model.FlowView], text: str, sort: str
) -> None:
    view, matched = flowtable.query(table, model.FlowQuery(text=text, sort=sort), 200)
    want = oracle(every_flow, text, sort, 10**9)
    assert matched == len(want)
    assert len(view) == min(200, matched)
    assert set(view) <= set(want)
    # the view is the query's top: same sort keys as the oracle's first rows (ties may swap rows)
    key, _ = SORTS[sort]
    assert [key(f) for f in view] == [key(f) for f in want[: len(view)]]


def test_a_small_flow_outside_the_default_view_is_found_by_a_filter(table: flowtable.FlowTable) -> None:
    top, matched = flowtable.query(table, model.FlowQuery(), 200)
    assert matched == N and len(top) == 200
    total = table.column("bytes_in") + table.column("bytes_out")
    smallest = int(np.argmin(total))
    flow = table.view(smallest)
    assert flow not in top
    view, matched = flowtable.query(table, model.FlowQuery(text=f"{flow.client} {flow.vip}"), 200)
    assert view == [flow] and matched == 1


def test_queries_the_engine_refuses() -> None:
    assert (
        model.FlowQuery(sort="size").problem()
        == "unknown sort 'size' (expected one of bytes, age, idle, backend)"
    )
    assert "longer than" in (model.FlowQuery(text="x" * 201).problem() or "")
    assert model.FlowQuery(text="10.0.0.1 web", sort="age").problem() is None
