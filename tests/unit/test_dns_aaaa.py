# SPDX-License-Identifier: Apache-2.0
"""DNS backends of IPv6 proxies: AAAA records, filtered like A records (tests/e2e/test_dns_aaaa.py asks a
real dnsmasq)."""

from __future__ import annotations

import asyncio

import dns.resolver
import pytest

from lbtui.config import parse_config
from lbtui.control.dns import (
    DnsBackendResolver,
    Resolution,
    describe_error,
    record_type,
)
from lbtui.control.dns_screen import screen_answers
from lbtui.engine.supervision import dns_names
from tests.unit.test_dns import FakeDns, make_resolver


def test_record_type_follows_the_vip_family() -> None:
    assert record_type("10.0.0.1") == "A"
    assert record_type("fd00:10::1") == "AAAA"


def test_aaaa_answers_are_screened_and_sorted_numerically() -> None:
    answers = [
        "fd00::10",
        "fd00::9",
        "FD00:0::9",  # the same address, another spelling
        "2001:db8::1",
        "::",  # unspecified
        "::1",  # loopback
        "ff02::1",  # multicast
        "fe80::1",  # link-local: needs a zone
        "fe80::1%eth0",
        "::ffff:10.0.0.1",  # IPv4-mapped: an IPv6 proxy's backends are IPv6
        "10.0.0.1",  # an A record where AAAA was asked
        "garbage",
        None,
    ]
    screened = screen_answers(answers, 64, rdtype="AAAA")
    assert screened.addresses == ("2001:db8::1", "fd00::9", "fd00::10")
    assert "::ffff:a00:1 (IPv4-mapped)" in screened.rejected
    assert screen_answers(["fd00::1", "10.0.0.1"], 64).addresses == ("10.0.0.1",)  # A stays IPv4 only


def test_errors_name_the_record_type() -> None:
    assert describe_error(dns.resolver.NoAnswer(), 2.0, "AAAA") == "no AAAA records"


def test_an_aaaa_name_is_asked_for_aaaa_and_keeps_only_ipv6() -> None:
    async def main() -> None:
        fake = FakeDns()
        fake.answers["api"] = ("fd00::2", "10.0.0.1", "fd00::1", "::1")
        resolver, _ = make_resolver(fake)
        result = await resolver.resolve_now("web6", "api", rdtype="AAAA")
        assert result == Resolution("api", ("fd00::1", "fd00::2"))
        assert fake.types == ["AAAA"]
        fake.answers["api"] = ("10.0.0.1", "::1")
        assert await resolver.resolve_now("web6", "api") is None  # keeps its type
        (status,) = resolver.status()
        assert status.last_error == "no usable IPv6 address in the answer"
        assert status.addresses == ("fd00::1", "fd00::2")  # the last good set stays
        await resolver.close()

    asyncio.run(main())


def test_set_names_gives_each_name_its_type_and_a_type_change_starts_over() -> None:
    async def main() -> None:
        fake = FakeDns()
        fake.answers["api"] = ("fd00::1", "10.0.0.1")
        changes: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = []
        resolver, _ = make_resolver(fake, changes)
        resolver.set_names({("web", "api"): 0.01, ("web6", "api"): 0.01}, {("web6", "api"): "AAAA"})
        await fake.wait_calls(4)
        assert resolver.addresses("web", "api") == ("10.0.0.1",)
        assert resolver.addresses("web6", "api") == ("fd00::1",)
        assert {"A", "AAAA"} <= set(fake.types)
        # the proxy became IPv4: its name starts over as A (the IPv6 addresses are of no use to it)
        resolver.set_names({("web6", "api"): 30.0}, {("web6", "api"): "A"})
        assert resolver.addresses("web6", "api") == ()
        assert await resolver.resolve_now("web6", "api") == Resolution("api", ("10.0.0.1",))
        with pytest.raises(ValueError):
            resolver.set_names({("web6", "api"): 30.0}, {("web6", "api"): "MX"})
        await resolver.close()

    asyncio.run(main())


def test_the_engine_asks_aaaa_for_the_names_of_ipv6_proxies() -> None:
    config = parse_config(
        """
[[proxy]]
name = "web"
interfaces = ["eth0"]
vip = "10.0.0.1"
port = 80
backend = [{ host = "api.internal", port = 8080 }]

[[proxy]]
name = "web6"
interfaces = ["eth0"]
vip = "fd00:10::1"
port = 80
backend = [{ host = "api.internal", port = 8080, dns_refresh_s = 5 }]
source_route = [{ cidr = "fd00:30::/48", backends = [{ host = "near.internal", port = 8080 }] }]
"""
    )
    assert dns_names(config) == {
        ("web", "api.internal"): (30.0, "A"),
        ("web6", "api.internal"): (5.0, "AAAA"),
        ("web6", "near.internal"): (30.0, "AAAA"),
    }


def test_a_resolver_without_types_stays_ipv4() -> None:
    async def main() -> None:
        fake = FakeDns()
        fake.answers["api"] = ("10.0.0.1",)
        resolver = DnsBackendResolver(resolve_fn=fake)
        assert await resolver.resolve_now("web", "api") == Resolution("api", ("10.0.0.1",))
        assert fake.types == ["A"]
        await resolver.close()

    asyncio.run(main())
