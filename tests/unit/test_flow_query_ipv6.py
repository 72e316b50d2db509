# SPDX-License-Identifier: Apache-2.0
"""The conntrack view over IPv6 flows, and over both families in one table.

The IPv6 table holds the flows of test_flow_query with every IPv4 address a.b.c.d written as
fd00:64::a.b.c.d (an order-keeping map) in lb_ct6_entry's layout; the vectorised matcher must agree
with the console's per-flow rule on every flow, for every term, alone and beside the IPv4 flows.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from lbtui import model
from lbtui.control import flowtable
from lbtui.dataplane import structs
from lbtui.dataplane.records import CT6_ENTRY_DTYPE
from tests.unit.test_flow_query import NOW, PROXIES, conntrack_arrays, oracle

BASE = 0xFD000064 << 96


def as_ipv6(value: int) -> str:
    return str(ipaddress.IPv6Address(BASE | int(ipaddress.IPv4Address(structs.be32_to_ip(value)))))


def ipv6_arrays() -> np.ndarray:
    """test_flow_query's entries in lb_ct6_entry's layout, their addresses mapped into fd00:64::/96."""
    _keys, vals = conntrack_arrays()
    out = np.zeros(len(vals), dtype=CT6_ENTRY_DTYPE)
    for name in CT6_ENTRY_DTYPE.names:
        if name in flowtable.ADDRESS_COLUMNS:
            out[name]["w"] = [structs.ip6_to_words(as_ipv6(int(v))) for v in vals[name]]
        else:
            out[name] = vals[name]
    return out


@pytest.fixture(scope="module")
def table() -> flowtable.FlowTable:
    vals = ipv6_arrays()
    builder = flowtable.FlowTableBuilder()
    order = np.random.default_rng(5).permutation(len(vals))  # a flow's two entries in other chunks
    for start in range(0, len(vals), 700):
        builder.add(vals[order[start : start + 700]], family=6)
    table = builder.build(NOW, PROXIES)
    assert (table.column("bytes_out") > 0).all()  # every reverse entry found its flow
    return table


@pytest.fixture(scope="module")
def mixed() -> flowtable.FlowTable:
    builder = flowtable.FlowTableBuilder()
    builder.add(conntrack_arrays()[1], family=4)
    builder.add(ipv6_arrays(), family=6)
    return builder.build(NOW, PROXIES)


TERMS = [
    "[fd00:64::a64:7]:20",  # that client, ports 20...
    "[fd00:64::a64:7]",  # that address only, any port
    "fd00:64::a64:7",  # a part of an address: also ...:a64:70.. if any
    "[FD00:64:0::A64:7]",  # another spelling of the same
    "::a00:20b]:8080",  # the end of a backend address, then its port
    "]:8080",
    "]:80",
    "a00:209]:8081",
    "[fd00:64::a00:1]:53",  # the VIP of dns
    "fd00:64::",
    "[",
    "]",
    ":",
    "::",
    "web [fd00:64::a64:3]",
    ":2001",
]


@pytest.mark.parametrize("text", TERMS)
def test_ipv6_terms_match_the_per_flow_rule_on_every_flow(table: flowtable.FlowTable, text: str) -> None:
    every_flow = [table.view(i) for i in range(len(table))]
    assert every_flow[0].client.startswith("[fd00:64::")
    for sort in model.FLOW_SORTS:
        view, matched = flowtable.query(table, model.FlowQuery(text=text, sort=sort), 10**6)
        want = oracle(every_flow, text, sort, 10**9)
        assert matched == len(want), (text, sort)
        assert set(view) == set(want)


def test_a_bracketed_address_finds_that_address_only(table: flowtable.FlowTable) -> None:
    view, matched = flowtable.query(table, model.FlowQuery(text="[fd00:64::a64:7]"), 10**6)
    assert matched > 0 and {f.client.rpartition(":")[0] for f in view} == {"[fd00:64::a64:7]"}


@pytest.mark.parametrize("text", ["", "10.100.0.7", "[fd00:64::a64:7]", "2.9:8081", "web", ":80"])
def test_both_families_in_one_table_match_the_per_flow_rule(mixed: flowtable.FlowTable, text: str) -> None:
    every_flow = [mixed.view(i) for i in range(len(mixed))]
    assert {f.client[0] for f in every_flow} == {"1", "["}  # 10.100.0.x and [fd00:64::...]
    for sort in model.FLOW_SORTS:
        view, matched = flowtable.query(mixed, model.FlowQuery(text=text, sort=sort), 10**6)
        want = oracle(every_flow, text, sort, 10**9)
        assert matched == len(want), (text, sort)
        assert set(view) == set(want)


def test_sorting_by_backend_puts_ipv4_addresses_first_then_ipv6_ones_in_order(
    mixed: flowtable.FlowTable,
) -> None:
    view, _ = flowtable.query(mixed, model.FlowQuery(sort="backend"), 10**6)
    backends = [ipaddress.ip_address(f.backend.rpartition(":")[0].strip("[]")) for f in view]
    keys = [(b.version, b) for b in backends]
    assert keys == sorted(keys)
