# SPDX-License-Identifier: Apache-2.0
"""The lab is dual stack: every link has an IPv6 address beside its IPv4 one, and the LB namespace
forwards both families (lab prefix "l6d")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lbtui.lab import VIP6, Lab, LabSpec, lab_namespaces

pytestmark = [pytest.mark.root, pytest.mark.beside]  # beside: tests/conftest.py


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(LabSpec(prefix="l6d", backends=2)) as lab:
        yield lab
    assert lab_namespaces("l6d") == []


def ping(lab: Lab, ns: str, address: str) -> bool:
    return lab.run(ns, "ping", "-c1", "-W2", "-q", address, check=False, timeout=10).returncode == 0


def test_the_lb_forwards_both_families(lab: Lab) -> None:
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        assert lab.run(lab.ns_lb, "sysctl", "-n", key).stdout.strip() == "1"


@pytest.mark.parametrize("client", [1, 2])
def test_every_client_reaches_the_lb_and_every_backend_over_ipv6(lab: Lab, client: int) -> None:
    ns = lab.client_ns(client)
    assert ping(lab, ns, VIP6 if client == 1 else "fd00:11::1")
    for i in lab.backend_ids:
        assert ping(lab, ns, lab.backend_ip6(i))  # routed through the LB namespace
        assert ping(lab, lab.ns_backend(i), lab.client_ips6[client - 1])  # and back


def test_ipv4_is_as_it_was(lab: Lab) -> None:
    for i in lab.backend_ids:
        assert ping(lab, lab.ns_client, lab.backend_ip(i))
    addresses = lab.run(lab.ns_client, "ip", "-4", "-o", "addr", "show", "dev", "l6dc0").stdout
    assert "10.0.0.2/24" in addresses
