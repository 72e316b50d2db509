# SPDX-License-Identifier: Apache-2.0
"""The foundation end to end over IPv6 (lab prefix "lf6"): `lbtui -c CFG --no-ui` in the LB namespace
with an IPv6 VIP and IPv6 backends; real HTTP and UDP backends answer with their own names.

600 new connections spread by weight (chi-square), a keep-alive connection stays on one backend, a
source route keeps the second client's /64 in its group, UDP queries are echoed, and no namespace
counts a checksum error (TcpInCsumErrors covers TCP over IPv6; Udp6InCsumErrors)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lbtui.addresses import IPV6
from lbtui.control_client import SocketEngineHandle
from lbtui.lab import VIP6
from lbtui.model import FlowQuery
from tests.e2e.test_foundation import chi_square_p_df2
from tests.support.lab import ClientLab
from tests.support.labtools import running_lb, wait_until

pytestmark = [pytest.mark.root, pytest.mark.beside]  # beside: tests/conftest.py

URL = f"http://[{VIP6}]/"

# the second client's /64 goes to b3 only
ROUTE6 = """
[[proxy.source_route]]
cidr = "fd00:11::/64"
backends = [{ address = "[fd00:20::13]:8080", weight = 1 }]
"""


@pytest.fixture(scope="module")
def lb(tmp_path_factory) -> Iterator[tuple[ClientLab, SocketEngineHandle]]:
    """The lab's "web" (weights 3, 2, 1, the source route) and "udp" proxies over IPv6
    (Lab.config_toml(family=6)), lbtui running headless on them."""
    tmp = tmp_path_factory.mktemp("e2e6")
    settings = "max_connections = 16384\n"
    with running_lb(
        "lf6", tmp, weights=(3, 2, 1), extra=ROUTE6, settings=settings, second_client=True, family=IPV6
    ) as (lab, handle):
        yield lab, handle


@pytest.fixture(scope="module")
def lab(lb) -> ClientLab:
    return lb[0]


def test_weights_3_2_1_over_600_new_ipv6_connections(lab, lb):
    got = lab.http_requests(600, new_conn=True, url=URL)
    assert got.get("errors", 0) == 0, got
    observed = [got.get("b1", 0), got.get("b2", 0), got.get("b3", 0)]
    assert sum(observed) == 600
    p = chi_square_p_df2(observed, [300.0, 200.0, 100.0])
    assert p > 1e-6, (observed, p)


def test_a_keepalive_ipv6_connection_stays_on_one_backend(lab, lb):
    got = lab.http_requests(1000, new_conn=False, url=URL)
    assert got.get("errors", 0) == 0, got
    served = {k: v for k, v in got.items() if k != "errors" and v}
    assert len(served) == 1 and sum(served.values()) == 1000, got


def test_an_ipv6_source_route_keeps_the_second_client_in_its_group(lab, lb):
    got = lab.http_requests(100, new_conn=True, client=2, url=URL)
    assert got.get("b3") == 100 and not got.get("errors"), got
    first = lab.http_requests(60, new_conn=True, client=1, url=URL)
    assert {"b1", "b2", "b3"} <= {k for k, v in first.items() if v and k != "errors"}, first


def test_udp_over_ipv6_is_echoed(lab, lb):
    got = lab.udp_requests(90, host=VIP6)
    assert got.get("errors", 0) == 0, got
    assert sum(v for k, v in got.items() if k != "errors") == 90
    assert {"b1", "b2", "b3"} <= {k for k, v in got.items() if v and k != "errors"}, got


def test_no_checksum_errors_anywhere_over_ipv6(lab, lb):
    keys = ("TcpInCsumErrors", "Udp6InCsumErrors")
    errors = lab.nstat_csum_errors(keys)
    assert all(v == dict.fromkeys(keys, 0) for v in errors.values()), errors


def test_the_flow_view_lists_ipv6_flows_and_finds_them_by_bracketed_address(lab, lb):
    _, handle = lb
    held = lab.hold(30, seconds=10.0, host=VIP6, port=80)
    opened = held.opened()
    assert opened.get("errors", 0) == 0, opened
    b1 = f"[{lab.backend_ip6(1)}]:8080"
    want = opened["backends"].get("b1", 0)
    query = FlowQuery(text=f"{b1} established")

    def answered() -> bool:
        snap = handle.snapshot(query)
        return snap.flow_query == query and snap.flows_matched >= want

    assert wait_until(answered, timeout=15)
    snap = handle.snapshot(query)
    assert snap.flows_matched == want
    assert all(f.backend == b1 and f.vip == f"[{VIP6}]:80" for f in snap.flows)
    assert all(f.client.startswith("[fd00:") for f in snap.flows)
    done = held.done()
    assert done.get("errors", 0) == 0, done
