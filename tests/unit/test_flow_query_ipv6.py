# SPDX-License-Identifier: Apache-2.0
"""The engine's conntrack filter over IPv6 endpoints ("[ip]:port") agrees with the console's rule.

The conntrack arrays hold IPv4 until the IPv6 data path exists, so the addresses are shown as IPv6
here: every IPv4 address a.b.c.d reads as fd00:64::a.b.c.d's compressed form (an order-keeping map),
and the vectorised matcher must still agree with the per-flow rule on every flow, for every term.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from lbtui import model
from lbtui.control import flowtable
from lbtui.dataplane import structs
from tests.unit.test_flow_query import NOW, PROXIES, conntrack_arrays, oracle

BASE = 0xFD000064 << 96


def as_ipv6(value: int) -> str:
    return str(ipaddress.IPv6Address(BASE | int(ipaddress.IPv4Address(structs.be32_to_ip(value)))))


@pytest.fixture(scope="module")
def table() -> Iterator[flowtable.FlowTable]:
    patch = pytest.MonkeyPatch()
    patch.setattr(flowtable, "be32_to_ip", as_ipv6)
    _keys, vals = conntrack_arrays()
    builder = flowtable.FlowTableBuilder()
    builder.add(vals)
    yield builder.build(NOW, PROXIES)
    patch.undo()


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
