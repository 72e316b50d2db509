# SPDX-License-Identifier: Apache-2.0
"""IPv6 in the configuration: VIPs, "[addr]:port" backends, IPv6 source routes, one family per proxy,
malformed forms refused with the key path (issue 13)."""

from __future__ import annotations

import pytest

from lbtui.config import ConfigError, Endpoint, config_to_toml, parse_config

PROXY6 = """
[[proxy]]
name = "web6"
interfaces = ["eth0"]
vip = "FD00:10:0::1"
port = 80

[[proxy.backend]]
address = "[fd00:20::11]:8080"
weight = 2

[[proxy.backend]]
address = "[FD00:20:0:0::12]:8080"

[[proxy.backend]]
host = "api.internal"
port = 8080

[[proxy.source_route]]
cidr = "fd00:30::/48"
backends = [{ address = "[fd00:20::31]:8080" }]
"""

PROXY4 = """
[[proxy]]
name = "web"
interfaces = ["eth0"]
vip = "10.0.0.1"
port = 80

[[proxy.backend]]
address = "10.0.2.11:8080"
"""


def issues(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    return {issue.key_path: issue.message for issue in caught.value.issues}


def test_an_ipv6_proxy_is_read_in_canonical_form_and_round_trips() -> None:
    config = parse_config(PROXY6)
    web6 = config.proxies[0]
    assert web6.vip == "fd00:10::1"
    assert web6.backends[0].address == Endpoint("fd00:20::11", 8080)
    assert web6.backends[1].address == Endpoint("fd00:20::12", 8080)
    assert [b.key for b in web6.backends] == ["[fd00:20::11]:8080", "[fd00:20::12]:8080", "api.internal:8080"]
    assert str(web6.vip_endpoint) == "[fd00:10::1]:80"
    assert web6.source_routes[0].cidr == "fd00:30::/48"
    assert web6.rate_limit is None
    text = config_to_toml(config)
    assert '"[fd00:20::11]:8080"' in text
    assert parse_config(text) == config


def test_two_proxies_may_share_a_port_on_different_families() -> None:
    config = parse_config(PROXY4 + PROXY6.replace('"web6"', '"web6"'))
    assert [(p.vip, p.port, p.protocol) for p in config.proxies] == [
        ("10.0.0.1", 80, "tcp"),
        ("fd00:10::1", 80, "tcp"),
    ]


def test_the_same_ipv6_listener_twice_is_refused_in_bracketed_form() -> None:
    found = issues(PROXY6 + PROXY6.replace('"web6"', '"other"').replace("FD00:10:0::1", "fd00:10::1"))
    assert found["proxy[1]"] == "[fd00:10::1]:80/tcp is also served by proxy[0]"


def test_duplicate_ipv6_backends_are_found_in_any_spelling() -> None:
    text = PROXY6 + '\n[[proxy.backend]]\naddress = "[fd00:20:0::11]:8080"\n'
    assert "duplicate backend [fd00:20::11]:8080" in issues(text)["proxy[0].backend[3]"]


@pytest.mark.parametrize(
    ("old", "new", "key_path", "fragment"),
    [
        (
            '"[fd00:20::11]:8080"',
            '"10.0.2.11:8080"',
            "proxy[0].backend[0].address",
            "IPv4 backend for the IPv6 VIP",
        ),
        (
            '"fd00:30::/48"',
            '"10.30.0.0/16"',
            "proxy[0].source_route[0].cidr",
            "IPv4 network for the IPv6 VIP",
        ),
        (
            '"[fd00:20::31]:8080"',
            '"10.0.3.1:8080"',
            "proxy[0].source_route[0].backends[0].address",
            "IPv4 backend for the IPv6 VIP",
        ),
    ],
)
def test_a_family_mismatch_names_its_key_path_and_the_vip(
    old: str, new: str, key_path: str, fragment: str
) -> None:
    found = issues(PROXY6.replace(old, new))
    assert fragment in found[key_path]
    assert 'proxy[0].vip = "fd00:10::1"' in found[key_path]
    assert list(found) == [key_path]


def test_an_ipv6_backend_of_an_ipv4_proxy_is_a_mismatch() -> None:
    found = issues(PROXY4.replace('"10.0.2.11:8080"', '"[fd00:20::11]:8080"'))
    assert "IPv6 backend for the IPv4 VIP" in found["proxy[0].backend[0].address"]


@pytest.mark.parametrize(
    ("old", "new", "key_path", "fragment"),
    [
        ('"FD00:10:0::1"', '"fe80::1%eth0"', "proxy[0].vip", "zone ids (%eth0)"),
        ('"FD00:10:0::1"', '"::ffff:10.0.0.1"', "proxy[0].vip", "write the IPv4 address 10.0.0.1"),
        ('"FD00:10:0::1"', '"fe80::1"', "proxy[0].vip", "link-local"),
        ('"FD00:10:0::1"', '"ff02::1"', "proxy[0].vip", "multicast"),
        ('"FD00:10:0::1"', '"::"', "proxy[0].vip", "unicast"),
        ('"[fd00:20::11]:8080"', '"fd00:20::11:8080"', "proxy[0].backend[0].address", '"[fd00:20::11]:8080"'),
        ('"[fd00:20::11]:8080"', '"fd00:20::11"', "proxy[0].backend[0].address", "brackets"),
        ('"[fd00:20::11]:8080"', '"[fd00:20::11]"', "proxy[0].backend[0].address", "port is missing"),
        ('"[fd00:20::11]:8080"', '"[fd00:20::11:8080"', "proxy[0].backend[0].address", '"]" is missing'),
        ('"[fd00:20::11]:8080"', '"[fd00:20::11]:0"', "proxy[0].backend[0].address", "port from 1 to 65535"),
        ('"[fd00:20::11]:8080"', '"[fe80::1%eth0]:80"', "proxy[0].backend[0].address", "zone ids"),
        ('"[fd00:20::11]:8080"', '"[::ffff:10.0.2.11]:80"', "proxy[0].backend[0].address", "IPv4-mapped"),
        ('"[fd00:20::11]:8080"', '"[10.0.2.11]:80"', "proxy[0].backend[0].address", "IPv6 addresses only"),
        ('"fd00:30::/48"', '"fd00:30::/129"', "proxy[0].source_route[0].cidr", "0 to 128, got '129'"),
        ('"fd00:30::/48"', '"fd00:30::1/48"', "proxy[0].source_route[0].cidr", "host bits set"),
        ('"fd00:30::/48"', '"fe80::%eth0/64"', "proxy[0].source_route[0].cidr", "zone ids"),
        ('"fd00:30::/48"', '"::ffff:0:0/96"', "proxy[0].source_route[0].cidr", "IPv4-mapped"),
    ],
)
def test_malformed_ipv6_forms_are_refused_clearly(old: str, new: str, key_path: str, fragment: str) -> None:
    text = PROXY6.replace(old, new)
    assert text != PROXY6
    found = issues(text)
    assert fragment in found[key_path], found


def test_the_ipv6_source_prefix_of_per_source_limits() -> None:
    config = parse_config(PROXY6 + "\n[proxy.rate_limit]\nper_source = { rate = 10 }\n")
    assert config.proxies[0].rate_limit is not None
    assert config.proxies[0].rate_limit.ipv6_source_prefix == 64
    config = parse_config(PROXY6 + "\n[proxy.rate_limit]\nipv6_source_prefix = 56\n")
    assert config.proxies[0].rate_limit is not None and config.proxies[0].rate_limit.ipv6_source_prefix == 56
    for bad in (0, 129):
        found = issues(PROXY6 + f"\n[proxy.rate_limit]\nipv6_source_prefix = {bad}\n")
        assert "prefix length from 1 to 128" in found["proxy[0].rate_limit.ipv6_source_prefix"]


def test_the_config_fuzzer_generates_valid_ipv6_proxies_and_family_mismatches() -> None:
    """The schema strategy gives each proxy one family (and, under chaos, the other one somewhere)."""
    from hypothesis import HealthCheck, Phase, given, settings

    from tests.fuzz import configs as fuzzing

    seen: set[str] = set()

    @settings(
        max_examples=300, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )
    @given(fuzzing.config_strategies()["document"])
    def collect(text: str) -> None:
        check = fuzzing.check_config_text(text)
        assert check.problems == (), check.problems
        if check.outcome == "valid":
            config = parse_config(text)
            seen.update("valid6" for p in config.proxies if ":" in p.vip)
            seen.update("valid4" for p in config.proxies if ":" not in p.vip)
        seen.update("mismatch" for i in check.issues if "VIP" in i.message and "family" in i.message)

    collect()
    assert {"valid4", "valid6", "mismatch"} <= seen
