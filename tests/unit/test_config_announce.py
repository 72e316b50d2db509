# SPDX-License-Identifier: Apache-2.0
"""[settings.announce] and per-proxy `forwarding`: defaults, ranges, "ipip" (IPv4, its source), DSR ports."""

from __future__ import annotations

import pytest

from lbtui.config import AnnounceConfig, ConfigError, parse_config

PROXY = """
[[proxy]]
name = "web"
interfaces = ["eth0"]
vip = "10.0.0.1"
port = 80
{extra}

[[proxy.backend]]
address = "10.0.2.11:{port}"
"""


def _issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    return [f"{i.key_path}: {i.message}" for i in caught.value.issues]


def test_defaults_when_absent() -> None:
    config = parse_config(PROXY.format(extra="", port=8080), "t.toml")
    assert config.settings.announce == AnnounceConfig()
    assert config.settings.announce.enabled is False
    assert config.proxies[0].forwarding == "nat"


def test_announce_section_is_read() -> None:
    text = """
[settings.announce]
enabled = true
table = 100
protocol = 200
bird_socket = "/run/bird/other.ctl"
withdraw_on_stop = false
min_usable_backends = 2
announce_delay_s = 1.5
withdraw_grace_s = 0.5
""" + PROXY.format(extra="", port=8080)
    announce = parse_config(text, "t.toml").settings.announce
    assert announce == AnnounceConfig(True, 100, 200, "/run/bird/other.ctl", False, 2, 1.5, 0.5)


@pytest.mark.parametrize(
    ("line", "issue"),
    [
        ("table = 254", "settings.announce.table: table 254 is the kernel's local/main/default table"),
        ("table = 0", "settings.announce.table: expected a routing table number from 1 to 4294967295"),
        ("table = 4294967296", "settings.announce.table: expected a routing table number"),
        ("protocol = 4", "settings.announce.protocol: expected an integer from 5 to 255, got 4"),
        ("min_usable_backends = 0", "settings.announce.min_usable_backends: expected a positive integer"),
        ("announce_delay_s = -1", "settings.announce.announce_delay_s: expected a number >= 0"),
        ("withdraw_grace_s = 11", "settings.announce.withdraw_grace_s: expected a number >= 0 and <= 10"),
        ('bird_socket = ""', "settings.announce.bird_socket: expected a non-empty string"),
        ("enabled = 1", "settings.announce.enabled: expected true or false, got 1"),
        ("bgp = true", "settings.announce.bgp: unknown key 'bgp'"),
    ],
)
def test_announce_values_are_checked(line: str, issue: str) -> None:
    issues = _issues(f"[settings.announce]\n{line}\n" + PROXY.format(extra="", port=8080))
    assert any(i.startswith(issue) for i in issues), issues


def test_table_up_to_u32_is_accepted() -> None:
    text = "[settings.announce]\ntable = 4294967295\n" + PROXY.format(extra="", port=8080)
    assert parse_config(text, "t.toml").settings.announce.table == 2**32 - 1


def test_ipip_is_accepted_with_an_optional_source() -> None:
    proxy = parse_config(PROXY.format(extra='forwarding = "ipip"', port=80), "t.toml").proxies[0]
    assert (proxy.forwarding, proxy.ipip_source) == ("ipip", None)
    text = PROXY.format(extra='forwarding = "ipip"\nipip_source = "10.1.1.2"', port=80)
    assert parse_config(text, "t.toml").proxies[0].ipip_source == "10.1.1.2"


def test_ipip_source_only_with_ipip() -> None:
    issues = _issues(PROXY.format(extra='ipip_source = "10.1.1.2"', port=80))
    assert issues == ['proxy[0].ipip_source: is only used with forwarding = "ipip"']


def test_ipip_is_ipv4_only() -> None:
    text = PROXY.format(extra='forwarding = "ipip"', port=80).replace("10.0.0.1", "fd00::1")
    text = text.replace('"10.0.2.11:80"', '"[fd00::11]:80"')
    assert _issues(text) == [
        'proxy[0].vip: forwarding = "ipip" is IPv4 only (IPv4 in IPv4), got the IPv6 address fd00::1; '
        'use forwarding = "nat" for IPv6 proxies'
    ]
    issues = _issues(PROXY.format(extra='forwarding = "ipip"\nipip_source = "fd00::2"', port=80))
    assert issues == [
        'proxy[0].ipip_source: forwarding = "ipip" is IPv4 only (IPv4 in IPv4), got the IPv6 address '
        'fd00::2; use forwarding = "nat" for IPv6 proxies'
    ]


def test_ipip_backends_must_use_the_vip_port() -> None:
    text = (
        PROXY.format(extra='forwarding = "ipip"', port=8080)
        + """
[[proxy.backend]]
host = "backend.example"
port = 80

[[proxy.source_route]]
cidr = "10.9.0.0/16"
backends = [{ address = "10.0.3.1:81" }]
"""
    )
    issues = _issues(text)
    assert (
        'proxy[0].backend[0]: forwarding = "ipip" needs every backend on the VIP\'s port 80 '
        "(direct server return does not rewrite it), got port 8080" in issues
    )
    assert any(
        i.startswith("proxy[0].source_route[0].backends[0]: ") and i.endswith("got port 81") for i in issues
    )
    assert not any(i.startswith("proxy[0].backend[1]") for i in issues)


def test_unknown_forwarding_mode() -> None:
    issues = _issues(PROXY.format(extra='forwarding = "dsr"', port=80))
    assert issues == ['proxy[0].forwarding: expected one of "nat" | "ipip", got "dsr"']
