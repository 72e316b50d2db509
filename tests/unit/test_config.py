# SPDX-License-Identifier: Apache-2.0
"""Config loading: the example files, strict validation with key paths, round trips, fuzzing."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from lbtui.config import (
    BackendConfig,
    Config,
    ConfigError,
    ConfigIssue,
    Endpoint,
    HealthConfig,
    Settings,
    TokenBucket,
    config_to_toml,
    load_config,
    parse_config,
)
from lbtui.config.keys import Table, Tables, declared_keys

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.toml"))

MINIMAL = """\
[[proxy]]
name = "web"
interfaces = ["eth0"]
vip = "10.0.0.1"
port = 80

[[proxy.backend]]
address = "10.0.2.11:8080"
weight = 3

[[proxy.backend]]
address = "10.0.2.12:8080"
weight = 2
"""

SECOND_PROXY = """
[[proxy]]
name = "web2"
interfaces = ["eth0"]
vip = "10.0.0.2"
port = 80

[[proxy.backend]]
address = "10.0.2.11:8080"
weight = 1
"""

# Pieces appended to MINIMAL (after the last backend, so a bare [proxy.x] table still belongs to proxy[0]).
HEALTH_HTTP = '\n[proxy.health]\ntype = "http"\npath = "/healthz"\n'
HEALTH_TCP = '\n[proxy.health]\ntype = "tcp"\n'
ROUTE = """
[[proxy.source_route]]
cidr = "192.168.0.0/16"
backends = [{ address = "10.0.3.10:8080", weight = 1 }]
"""


def with_settings(text: str) -> str:
    return f"[settings]\n{text}\n\n" + MINIMAL


def replace(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new, 1)


# --------------------------------------------------------------------------------------- good files


def test_example_configs_exist() -> None:
    names = {path.name for path in CONFIGS}
    assert {"minimal.toml", "full.toml", "demo.toml", "production.toml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_example_config_loads_and_round_trips(path: Path) -> None:
    config = load_config(path)
    assert config.path == str(path)
    assert config.proxies
    text = config_to_toml(config)
    again = parse_config(text, "roundtrip.toml")
    assert again == config
    assert config_to_toml(again) == text


def test_full_example_uses_every_key() -> None:
    config = load_config(REPO / "configs" / "full.toml")
    web = config.proxy("web")
    assert web is not None
    assert web.health == HealthConfig(
        type="http",
        path="/healthz",
        http_host="www.example.com",
        interval_ms=2000,
        timeout_ms=1000,
        rise=2,
        fall=3,
        expected_status=(200,),
        port=8081,
        slow_start_s=0.0,
    )
    assert web.circuit_breaker is not None and web.circuit_breaker.syn_timeout_ms == 3000
    assert web.rate_limit is not None
    assert web.rate_limit.per_source == TokenBucket(rate=100, burst=200)
    assert web.rate_limit.per_backend == TokenBucket(rate=5000, burst=10000)
    assert [backend.key for backend in web.backends] == ["10.0.2.11:8080", "api.internal:8080"]
    assert web.source_routes[0].cidr == "192.168.0.0/16"
    assert web.source_routes[0].backends[0].address == Endpoint("10.0.3.10", 8080)
    settings = config.settings
    assert settings.dns.nameservers == ("10.0.0.53",)
    assert settings.access_log.file == "/var/log/lbtui/access.log"
    assert settings.console.refresh_s == 1.0
    assert config.proxy("nope") is None


def test_full_toml_shows_every_declared_key_and_no_other() -> None:
    """configs/full.toml documents the format: every key of every table, and only declared keys."""
    shown: dict[type, set[str]] = {}

    def walk(cls: type, table: dict[str, Any]) -> None:
        declared = {d.name: d.key for d in declared_keys(cls)}
        shown.setdefault(cls, set()).update(table)
        for name, value in table.items():
            assert name in declared, f"full.toml shows {name!r}, which {cls.__name__} does not declare"
            kind = declared[name]
            if isinstance(kind, Table):
                walk(kind.cls, value)
            elif isinstance(kind, Tables):
                for item in value:
                    walk(kind.cls, item)

    def tables(cls: type) -> list[type]:
        nested = [d.key.cls for d in declared_keys(cls) if isinstance(d.key, Table | Tables)]
        return [cls, *(sub for table in nested for sub in tables(table))]

    walk(Config, tomllib.loads((REPO / "configs" / "full.toml").read_text()))
    for cls in tables(Config):
        declared = declared_keys(cls)
        assert all(d.key.doc for d in declared), f"{cls.__name__}: a key without a doc line"
        missing = {d.name for d in declared} - shown.get(cls, set())
        assert not missing, f"configs/full.toml does not show {sorted(missing)} of {cls.__name__}"


def test_demo_config_matches_the_lab() -> None:
    config = load_config(REPO / "configs" / "demo.toml")
    web, dns = config.proxy("web"), config.proxy("dns-echo")
    assert web is not None and dns is not None
    assert (web.vip, web.port, web.protocol, web.interfaces) == ("10.0.0.1", 80, "tcp", ("lbt0",))
    assert [(b.key, b.weight) for b in web.backends] == [
        ("10.0.2.11:8080", 3),
        ("10.0.2.12:8080", 2),
        ("10.0.2.13:8080", 1),
    ]
    assert (dns.vip, dns.port, dns.protocol) == ("10.0.0.1", 5353, "udp")
    assert [b.key for b in dns.backends] == ["10.0.2.11:5353", "10.0.2.12:5353", "10.0.2.13:5353"]
    assert web.health is not None and (web.health.type, web.health.path) == ("http", "/healthz")
    assert config.settings.metrics.enabled and config.settings.metrics.listen == "127.0.0.1:17100"


def test_minimal_gets_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.settings == Settings()
    (web,) = config.proxies
    assert (web.protocol, web.algorithm, web.least_connections_interval_ms) == ("tcp", "weighted-random", 500)
    assert web.health is None and web.circuit_breaker is None and web.rate_limit is None
    assert web.source_routes == ()
    assert web.backends[0] == BackendConfig(weight=3, address=Endpoint("10.0.2.11", 8080))
    assert str(web.backends[0].address) == "10.0.2.11:8080"


def test_values_are_normalised_and_typed() -> None:
    text = (
        with_settings("tcp_timeout_s = 300\nsweep_interval_s = 1")
        + '\n[[proxy.backend]]\nhost = "API.Internal."\nport = 9000\n'
        + '\n[[proxy.source_route]]\ncidr = "10.1.2.3"\nbackends = [{ address = "10.0.3.10:8080" }]\n'
    )
    config = parse_config(text)
    assert isinstance(config.settings.tcp_timeout_s, float) and config.settings.tcp_timeout_s == 300.0
    web = config.proxies[0]
    host_backend = web.backends[2]
    assert (host_backend.key, host_backend.weight, host_backend.dns_refresh_s) == (
        "api.internal:9000",
        1,
        30.0,
    )
    assert host_backend.is_dns and host_backend.address is None
    assert web.source_routes[0].cidr == "10.1.2.3/32"
    assert web.source_routes[0].backends[0].weight == 1


def test_large_weights_have_no_sum_rule() -> None:
    text = MINIMAL.replace("weight = 3", "weight = 2147483647").replace("weight = 2\n", "weight = 1000000\n")
    config = parse_config(text)
    assert [b.weight for b in config.proxies[0].backends] == [2147483647, 1000000]


def test_health_timeout_default_follows_short_interval() -> None:
    config = parse_config(MINIMAL + HEALTH_TCP + "interval_ms = 500\n")
    health = config.proxies[0].health
    assert health is not None and (health.interval_ms, health.timeout_ms) == (500, 500)


def test_rate_limit_burst_defaults_to_rate_and_may_be_smaller() -> None:
    text = (
        MINIMAL
        + "\n[proxy.rate_limit]\nper_source = { rate = 10 }\nper_backend = { rate = 100, burst = 5 }\n"
    )
    limit = parse_config(text).proxies[0].rate_limit
    assert limit is not None
    assert limit.per_source == TokenBucket(10, 10) and limit.per_backend == TokenBucket(100, 5)


def test_same_vip_and_port_with_other_protocol_is_fine() -> None:
    text = MINIMAL + SECOND_PROXY.replace('"10.0.0.2"', '"10.0.0.1"').replace(
        "port = 80", 'port = 80\nprotocol = "udp"'
    )
    assert len(parse_config(text).proxies) == 2


def test_config_equality_ignores_path() -> None:
    assert parse_config(MINIMAL, "a.toml") == parse_config(MINIMAL, "b.toml")
    assert parse_config(MINIMAL, "a.toml").path == "a.toml"


# ---------------------------------------------------------------------------------------- bad files

UTF8_BAD = b'[[proxy]]\nname = "w\xffeb"\n'

# (id, file content (None: no file, bytes: written as is), expected key path, message fragment)
BAD_CASES: list[tuple[str, str | bytes | None, str, str]] = [
    # types
    ("port-string", replace("port = 80", 'port = "80"'), "proxy[0].port", 'got "80"'),
    ("weight-true", replace("weight = 3", "weight = true"), "proxy[0].backend[0].weight", "got true"),
    ("weight-float", replace("weight = 3", "weight = 1.5"), "proxy[0].backend[0].weight", "integer"),
    ("vip-int", replace('vip = "10.0.0.1"', "vip = 10"), "proxy[0].vip", "string"),
    (
        "interfaces-string",
        replace('interfaces = ["eth0"]', 'interfaces = "eth0"'),
        "proxy[0].interfaces",
        "array",
    ),
    ("timeout-string", with_settings('tcp_timeout_s = "300"'), "settings.tcp_timeout_s", "number"),
    (
        "metrics-enabled-string",
        with_settings('[settings.metrics]\nenabled = "yes"'),
        "settings.metrics.enabled",
        "",
    ),
    ("settings-not-table", "settings = 5\n" + MINIMAL, "settings", "table"),
    (
        "proxy-is-table",
        MINIMAL.replace("[[proxy]]", "[proxy]", 1).split("[[proxy.backend]]")[0],
        "proxy",
        "[[proxy]]",
    ),
    ("address-int", replace('address = "10.0.2.11:8080"', "address = 1"), "proxy[0].backend[0].address", ""),
    # unknown keys at every level
    ("unknown-top", "colour = 1\n" + MINIMAL, "colour", "allowed: settings, proxy"),
    ("unknown-settings", with_settings("colour = 1"), "settings.colour", "allowed:"),
    ("unknown-metrics", with_settings("[settings.metrics]\ncolour = 1"), "settings.metrics.colour", "listen"),
    ("unknown-dns", with_settings("[settings.dns]\nservers = []"), "settings.dns.servers", "nameservers"),
    (
        "unknown-access-log",
        with_settings("[settings.access_log]\nlevel = 1"),
        "settings.access_log.level",
        "",
    ),
    ("unknown-console", with_settings("[settings.console]\nfps = 1"), "settings.console.fps", "refresh_s"),
    ("unknown-proxy", replace("port = 80", "port = 80\ncolour = 1"), "proxy[0].colour", "algorithm"),
    ("unknown-backend", replace("weight = 2", "weight = 2\ncolour = 1"), "proxy[0].backend[1].colour", ""),
    ("unknown-health", MINIMAL + HEALTH_TCP + "colour = 1\n", "proxy[0].health.colour", "interval_ms"),
    (
        "unknown-circuit",
        MINIMAL + "\n[proxy.circuit_breaker]\nrate = 1\n",
        "proxy[0].circuit_breaker.rate",
        "",
    ),
    ("unknown-rate-limit", MINIMAL + "\n[proxy.rate_limit]\nglobal = 1\n", "proxy[0].rate_limit.global", ""),
    (
        "unknown-bucket",
        MINIMAL + "\n[proxy.rate_limit]\nper_source = { rate = 1, size = 2 }\n",
        "proxy[0].rate_limit.per_source.size",
        "burst",
    ),
    ("unknown-route", MINIMAL + ROUTE + "colour = 1\n", "proxy[0].source_route[0].colour", "cidr"),
    (
        "unknown-route-backend",
        MINIMAL + ROUTE.replace("weight = 1 }", "weight = 1, x = 1 }"),
        "proxy[0].source_route[0].backends[0].x",
        "",
    ),
    ("quoted-unknown-key", '"a b" = 1\n' + MINIMAL, '"a b"', "unknown key"),
    # ports, weights, addresses
    ("port-0", replace("port = 80", "port = 0"), "proxy[0].port", "got 0"),
    ("port-70000", replace("port = 80", "port = 70000"), "proxy[0].port", "got 70000"),
    (
        "weight-0",
        replace("weight = 3", "weight = 0"),
        "proxy[0].backend[0].weight",
        "positive integer, got 0",
    ),
    ("weight-minus-1", replace("weight = 2", "weight = -1"), "proxy[0].backend[1].weight", "got -1"),
    (
        "weight-too-big",
        replace("weight = 3", "weight = 2147483648"),
        "proxy[0].backend[0].weight",
        "2147483647",
    ),
    ("vip-bad", replace('vip = "10.0.0.1"', 'vip = "10.0.0.256"'), "proxy[0].vip", "IPv4"),
    (
        "vip-ipv6-backends-ipv4",
        replace('vip = "10.0.0.1"', 'vip = "fd00::1"'),
        "proxy[0].backend[0].address",
        "IPv4 backend for the IPv6 VIP",
    ),
    ("vip-zero", replace('vip = "10.0.0.1"', 'vip = "0.0.0.0"'), "proxy[0].vip", "unicast"),
    ("vip-missing", replace('vip = "10.0.0.1"\n', ""), "proxy[0].vip", "missing"),
    ("address-no-port", replace('"10.0.2.12:8080"', '"10.0.2.12"'), "proxy[0].backend[1].address", "port"),
    ("address-bad-ip", replace('"10.0.2.12:8080"', '"10.0.2.x:8080"'), "proxy[0].backend[1].address", "IPv4"),
    ("address-port-0", replace('"10.0.2.12:8080"', '"10.0.2.12:0"'), "proxy[0].backend[1].address", "port"),
    ("address-ipv6", replace('"10.0.2.12:8080"', '"[fd00::1]:8080"'), "proxy[0].backend[1].address", "IPv4"),
    (
        "address-and-host",
        replace('address = "10.0.2.11:8080"', 'address = "10.0.2.11:8080"\nhost = "api.internal"'),
        "proxy[0].backend[0]",
        "not both",
    ),
    ("no-address", replace('address = "10.0.2.11:8080"\n', ""), "proxy[0].backend[0]", "address"),
    (
        "address-with-port",
        replace('address = "10.0.2.11:8080"', 'address = "10.0.2.11:8080"\nport = 8080'),
        "proxy[0].backend[0].port",
        "host",
    ),
    (
        "host-no-port",
        replace('address = "10.0.2.11:8080"', 'host = "api.internal"'),
        "proxy[0].backend[0].port",
        "",
    ),
    (
        "host-invalid",
        replace('address = "10.0.2.11:8080"', 'host = "bad host!"\nport = 80'),
        "proxy[0].backend[0].host",
        "DNS name",
    ),
    (
        "host-is-ip",
        replace('address = "10.0.2.11:8080"', 'host = "10.0.2.11"\nport = 80'),
        "proxy[0].backend[0].host",
        "address",
    ),
    (
        "dns-refresh-0",
        replace('address = "10.0.2.11:8080"', 'host = "api.internal"\nport = 80\ndns_refresh_s = 0'),
        "proxy[0].backend[0].dns_refresh_s",
        "> 0",
    ),
    (
        "duplicate-backend",
        replace('"10.0.2.12:8080"', '"10.0.2.11:8080"'),
        "proxy[0].backend[1]",
        "duplicate",
    ),
    (
        "empty-backend-list",
        MINIMAL.split("[[proxy.backend]]")[0] + "backend = []\n",
        "proxy[0].backend",
        "at least one",
    ),
    ("no-backends", MINIMAL.split("[[proxy.backend]]")[0], "proxy[0].backend", "missing"),
    # proxies
    ("duplicate-proxy", MINIMAL + SECOND_PROXY.replace('"web2"', '"web"'), "proxy[1].name", "duplicate"),
    (
        "same-listener",
        MINIMAL + SECOND_PROXY.replace('"10.0.0.2"', '"10.0.0.1"'),
        "proxy[1]",
        "10.0.0.1:80/tcp",
    ),
    ("bad-name", replace('name = "web"', 'name = "web server"'), "proxy[0].name", ""),
    ("name-too-long", replace('name = "web"', f'name = "{"x" * 65}"'), "proxy[0].name", ""),
    ("no-name", replace('name = "web"\n', ""), "proxy[0].name", "missing"),
    (
        "no-interfaces",
        replace('interfaces = ["eth0"]', "interfaces = []"),
        "proxy[0].interfaces",
        "at least one",
    ),
    ("long-ifname", replace('"eth0"', '"a-very-long-ifname"'), "proxy[0].interfaces[0]", "15"),
    ("ifname-slash", replace('"eth0"', '"eth0", "a/b"'), "proxy[0].interfaces[1]", ""),
    ("protocol", replace("port = 80", 'port = 80\nprotocol = "sctp"'), "proxy[0].protocol", '"udp"'),
    ("algorithm", replace("port = 80", 'port = 80\nalgorithm = "rr"'), "proxy[0].algorithm", "maglev"),
    (
        "lc-interval-0",
        replace("port = 80", "port = 80\nleast_connections_interval_ms = 0"),
        "proxy[0].least_connections_interval_ms",
        "",
    ),
    ("no-proxy", "[settings]\n", "proxy", "missing"),
    ("empty-proxy-list", "proxy = []\n", "proxy", "at least one"),
    # source routes
    ("cidr-bad", MINIMAL + ROUTE.replace("/16", "/33"), "proxy[0].source_route[0].cidr", "prefix length"),
    (
        "cidr-host-bits",
        MINIMAL + ROUTE.replace("192.168.0.0/16", "192.168.1.0/16"),
        "proxy[0].source_route[0].cidr",
        "host bits set",
    ),
    (
        "cidr-ipv6",
        MINIMAL + ROUTE.replace("192.168.0.0/16", "fd00::/8"),
        "proxy[0].source_route[0].cidr",
        "IPv6 network for the IPv4 VIP",
    ),
    ("route-duplicate", MINIMAL + ROUTE + ROUTE, "proxy[0].source_route[1].cidr", "duplicate"),
    (
        "route-no-backends",
        MINIMAL + ROUTE.replace('[{ address = "10.0.3.10:8080", weight = 1 }]', "[]"),
        "proxy[0].source_route[0].backends",
        "at least one",
    ),
    (
        "route-bad-weight",
        MINIMAL + ROUTE.replace("weight = 1", "weight = 0"),
        "proxy[0].source_route[0].backends[0].weight",
        "",
    ),
    (
        "route-duplicate-backend",
        MINIMAL + ROUTE.replace("}]", '}, { address = "10.0.3.10:8080" }]'),
        "proxy[0].source_route[0].backends[1]",
        "duplicate",
    ),
    # health
    ("health-no-type", MINIMAL + "\n[proxy.health]\ninterval_ms = 1000\n", "proxy[0].health.type", "missing"),
    ("health-bad-type", MINIMAL + '\n[proxy.health]\ntype = "icmp"\n', "proxy[0].health.type", '"http"'),
    ("health-tcp-path", MINIMAL + HEALTH_TCP + 'path = "/x"\n', "proxy[0].health.path", "http"),
    (
        "health-tcp-status",
        MINIMAL + HEALTH_TCP + "expected_status = [200]\n",
        "proxy[0].health.expected_status",
        "",
    ),
    ("health-tcp-host", MINIMAL + HEALTH_TCP + 'http_host = "a"\n', "proxy[0].health.http_host", ""),
    (
        "health-timeout-gt-interval",
        MINIMAL + HEALTH_HTTP + "interval_ms = 1000\ntimeout_ms = 1500\n",
        "proxy[0].health.timeout_ms",
        "interval_ms",
    ),
    ("health-interval-0", MINIMAL + HEALTH_TCP + "interval_ms = 0\n", "proxy[0].health.interval_ms", ""),
    ("health-rise-0", MINIMAL + HEALTH_TCP + "rise = 0\n", "proxy[0].health.rise", ""),
    ("health-fall-0", MINIMAL + HEALTH_TCP + "fall = 0\n", "proxy[0].health.fall", ""),
    (
        "health-status-600",
        MINIMAL + HEALTH_HTTP + "expected_status = [200, 600]\n",
        "proxy[0].health.expected_status[1]",
        "599",
    ),
    (
        "health-status-empty",
        MINIMAL + HEALTH_HTTP + "expected_status = []\n",
        "proxy[0].health.expected_status",
        "",
    ),
    (
        "health-path-no-slash",
        MINIMAL + '\n[proxy.health]\ntype = "http"\npath = "healthz"\n',
        "proxy[0].health.path",
        '"/"',
    ),
    ("health-port-0", MINIMAL + HEALTH_TCP + "port = 0\n", "proxy[0].health.port", ""),
    (
        "health-slow-start-negative",
        MINIMAL + HEALTH_TCP + "slow_start_s = -1\n",
        "proxy[0].health.slow_start_s",
        "",
    ),
    # circuit breaker, rate limits
    (
        "cb-error-rate-0",
        MINIMAL + "\n[proxy.circuit_breaker]\nerror_rate = 0\n",
        "proxy[0].circuit_breaker.error_rate",
        "",
    ),
    (
        "cb-error-rate-1.5",
        MINIMAL + "\n[proxy.circuit_breaker]\nerror_rate = 1.5\n",
        "proxy[0].circuit_breaker.error_rate",
        "",
    ),
    (
        "cb-min-requests-0",
        MINIMAL + "\n[proxy.circuit_breaker]\nmin_requests = 0\n",
        "proxy[0].circuit_breaker.min_requests",
        "",
    ),
    (
        "cb-window-0",
        MINIMAL + "\n[proxy.circuit_breaker]\nwindow_s = 0\n",
        "proxy[0].circuit_breaker.window_s",
        "",
    ),
    (
        "cb-open-nan",
        MINIMAL + "\n[proxy.circuit_breaker]\nopen_s = nan\n",
        "proxy[0].circuit_breaker.open_s",
        "",
    ),
    (
        "rl-rate-0",
        MINIMAL + "\n[proxy.rate_limit]\nper_source = { rate = 0, burst = 1 }\n",
        "proxy[0].rate_limit.per_source.rate",
        "",
    ),
    (
        "rl-burst-0",
        MINIMAL + "\n[proxy.rate_limit]\nper_backend = { rate = 5, burst = 0 }\n",
        "proxy[0].rate_limit.per_backend.burst",
        "",
    ),
    (
        "rl-no-rate",
        MINIMAL + "\n[proxy.rate_limit]\nper_backend = { burst = 5 }\n",
        "proxy[0].rate_limit.per_backend.rate",
        "missing",
    ),
    # settings
    ("table-size-not-prime", with_settings("table_size = 65536"), "settings.table_size", "prime"),
    ("table-size-too-big", with_settings("table_size = 65539"), "settings.table_size", "65537"),
    ("table-size-too-small", with_settings("table_size = 5"), "settings.table_size", ""),
    ("xdp-mode", with_settings('xdp_mode = "fast"'), "settings.xdp_mode", '"generic"'),
    ("max-connections-small", with_settings("max_connections = 100"), "settings.max_connections", "1024"),
    ("max-connections-big", with_settings("max_connections = 16777217"), "settings.max_connections", ""),
    ("tcp-timeout-0", with_settings("tcp_timeout_s = 0"), "settings.tcp_timeout_s", "> 0"),
    ("udp-timeout-negative", with_settings("udp_timeout_s = -1.5"), "settings.udp_timeout_s", ""),
    ("drain-timeout-inf", with_settings("drain_timeout_s = inf"), "settings.drain_timeout_s", ""),
    ("sweep-0", with_settings("sweep_interval_s = 0"), "settings.sweep_interval_s", ""),
    ("control-socket-empty", with_settings('control_socket = ""'), "settings.control_socket", ""),
    (
        "metrics-listen-no-port",
        with_settings('[settings.metrics]\nlisten = "127.0.0.1"'),
        "settings.metrics.listen",
        "host:port",
    ),
    (
        "metrics-listen-port-0",
        with_settings('[settings.metrics]\nlisten = "127.0.0.1:0"'),
        "settings.metrics.listen",
        "port",
    ),
    (
        "metrics-listen-port-name",
        with_settings('[settings.metrics]\nlisten = "127.0.0.1:http"'),
        "settings.metrics.listen",
        "",
    ),
    ("metrics-path", with_settings('[settings.metrics]\npath = "metrics"'), "settings.metrics.path", '"/"'),
    (
        "nameserver-bad",
        with_settings('[settings.dns]\nnameservers = ["10.0.0.53", "dns.google"]'),
        "settings.dns.nameservers[1]",
        "IPv4 or IPv6",
    ),
    (
        "nameservers-string",
        with_settings('[settings.dns]\nnameservers = "10.0.0.53"'),
        "settings.dns.nameservers",
        "array",
    ),
    (
        "log-format",
        with_settings('[settings.access_log]\nformat = "xml"'),
        "settings.access_log.format",
        '"clf"',
    ),
    (
        "log-max-files-0",
        with_settings("[settings.access_log]\nmax_files = 0"),
        "settings.access_log.max_files",
        "got 0",
    ),
    (
        "log-max-bytes-small",
        with_settings("[settings.access_log]\nmax_bytes = 100"),
        "settings.access_log.max_bytes",
        "",
    ),
    (
        "log-stdout-int",
        with_settings("[settings.access_log]\nstdout = 1"),
        "settings.access_log.stdout",
        "true or false",
    ),
    (
        "console-refresh-0",
        with_settings("[settings.console]\nrefresh_s = 0"),
        "settings.console.refresh_s",
        "",
    ),
    # whole-file problems
    ("toml-syntax", MINIMAL + "\nport = = 3\n", "", "invalid TOML"),
    ("toml-duplicate-key", replace("port = 80", "port = 80\nport = 81"), "", "invalid TOML"),
    ("missing-file", None, "", "cannot read config file"),
    ("not-utf8", UTF8_BAD, "", "UTF-8"),
]


@pytest.mark.parametrize(
    ("content", "key_path", "fragment"), [case[1:] for case in BAD_CASES], ids=[case[0] for case in BAD_CASES]
)
def test_bad_config_is_reported_with_key_path(
    tmp_path: Path, content: str | bytes | None, key_path: str, fragment: str
) -> None:
    path = tmp_path / "bad.toml"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    err = caught.value
    matching = [issue for issue in err.issues if issue.key_path == key_path]
    assert matching, f"no issue at {key_path!r} in:\n{err}"
    assert any(fragment in issue.message for issue in matching), str(err)
    text = str(err)
    prefix = f"{path}: {key_path}: " if key_path else f"{path}: "
    assert prefix in text
    assert all(line.startswith(f"{path}: ") for line in text.splitlines())
    assert len(text.splitlines()) == len(err.issues)


def test_bad_case_table_is_big_enough() -> None:
    assert len(BAD_CASES) >= 25
    assert len({case[0] for case in BAD_CASES}) == len(BAD_CASES)


def test_error_line_format() -> None:
    text = replace("weight = 2", "weight = -3")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "configs/x.toml")
    assert (
        str(caught.value) == "configs/x.toml: proxy[0].backend[1].weight: expected a positive integer, got -3"
    )
    assert caught.value.issues == (
        ConfigIssue("configs/x.toml", "proxy[0].backend[1].weight", "expected a positive integer, got -3"),
    )


def test_unknown_key_names_allowed_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(replace("weight = 3", "wieght = 3"))
    (issue,) = caught.value.issues
    assert issue.key_path == "proxy[0].backend[0].wieght"
    assert "'wieght'" in issue.message
    for allowed in ("address", "host", "port", "weight", "dns_refresh_s"):
        assert allowed in issue.message


def test_all_errors_are_reported_together() -> None:
    text = (
        '[settings]\ntable_size = 100\nxdp_mode = "fast"\n\n[settings.access_log]\nmax_files = 0\n\n'
        + MINIMAL.replace("port = 80", "port = 0")
        .replace("weight = 3", "weight = true")
        .replace('"10.0.2.12:8080"', '"10.0.2.12"')
        + ROUTE.replace("192.168.0.0/16", "192.168.1.0/16")
        + HEALTH_TCP
        + 'path = "/x"\n'
        + SECOND_PROXY.replace('"web2"', '"web"')
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "multi.toml")
    paths = {issue.key_path for issue in caught.value.issues}
    expected = {
        "settings.table_size",
        "settings.xdp_mode",
        "settings.access_log.max_files",
        "proxy[0].port",
        "proxy[0].backend[0].weight",
        "proxy[0].backend[1].address",
        "proxy[0].source_route[0].cidr",
        "proxy[0].health.path",
        "proxy[1].name",
    }
    assert expected <= paths
    assert len(str(caught.value).splitlines()) == len(caught.value.issues) >= len(expected)


def test_too_many_backends_for_table_size() -> None:
    backends = "".join(f'\n[[proxy.backend]]\naddress = "10.0.2.{i}:80"\n' for i in range(1, 9))
    text = "[settings]\ntable_size = 7\n\n" + MINIMAL.split("[[proxy.backend]]")[0]
    with pytest.raises(ConfigError) as caught:
        parse_config(text + backends)
    assert [issue.key_path for issue in caught.value.issues] == ["proxy[0].backend"]


@pytest.mark.parametrize("key", ["tcp_timeout_s", "max_connections", "table_size"])
@pytest.mark.parametrize("number", ["9" * 400, "-" + "9" * 400], ids=["huge", "minus-huge"])
def test_huge_integers_are_config_errors(key: str, number: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_settings(f"{key} = {number}"))
    assert [issue.key_path for issue in caught.value.issues] == [f"settings.{key}"]


def test_config_error_pickles_and_has_one_helper() -> None:
    import pickle

    err = ConfigError.one("a.toml", "proxy[0].port", "expected a port")
    again = pickle.loads(pickle.dumps(err))
    assert again.issues == err.issues and str(again) == "a.toml: proxy[0].port: expected a port"


def test_deeply_nested_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("a = " + "[" * 5000 + "]" * 5000)
    assert caught.value.issues[0].key_path == ""


def test_config_to_toml_escapes_strings() -> None:
    text = with_settings('control_socket = "/tmp/a \\"quoted\\" \\\\ dir\\t/é\\u007f.sock"')
    config = parse_config(text)
    assert parse_config(config_to_toml(config)) == config


# ------------------------------------------------------------------------------------------ fuzzing

SETTINGS_KEYS = [
    "max_connections",
    "tcp_timeout_s",
    "udp_timeout_s",
    "drain_timeout_s",
    "control_socket",
    "table_size",
    "xdp_mode",
    "metrics",
    "dns",
    "access_log",
    "console",
    "enabled",
    "listen",
    "path",
    "nameservers",
    "format",
    "stdout",
    "file",
    "max_bytes",
    "max_files",
    "log_new",
    "refresh_s",
]
PROXY_KEYS = [
    "name",
    "interfaces",
    "vip",
    "port",
    "protocol",
    "algorithm",
    "health",
    "circuit_breaker",
    "rate_limit",
    "backend",
    "source_route",
    "backends",
    "type",
    "path",
    "http_host",
    "interval_ms",
    "timeout_ms",
    "rise",
    "fall",
    "expected_status",
    "error_rate",
    "min_requests",
    "window_s",
    "open_s",
    "half_open_successes",
    "per_source",
    "per_backend",
    "rate",
    "burst",
    "cidr",
    "slow_start_s",
    "syn_timeout_ms",
]
BACKEND_KEYS = ["address", "host", "port", "weight", "dns_refresh_s"]
KNOWN_KEYS = ["settings", "proxy", *SETTINGS_KEYS, *PROXY_KEYS, *BACKEND_KEYS]
PLAUSIBLE: list[Any] = [
    *[
        "10.0.0.1",
        "10.0.2.11:8080",
        "api.internal",
        "192.168.0.0/16",
        "192.168.1.0/16",
        "eth0",
        "tcp",
        "udp",
        "http",
        "maglev",
        "json",
    ],
    *["/healthz", "127.0.0.1:9100", "auto", "::1"],
    "",
    *[0, 1, 2, 3, -1, 80, 65535, 65536, 65537, 2**31, 1.5, 0.0, True, False],
]

keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8))
scalars = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.integers(),
    st.sampled_from([2**63 - 1, -(2**63), 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=25,
)


def toml_document(document: dict[str, Any]) -> str:
    return tomli_w.dumps(document)  # the project's one TOML writer (config_to_toml uses it too)


def check_parse(text: str) -> None:
    """parse_config either returns a Config that round-trips, or raises ConfigError with usable issues."""
    try:
        config = parse_config(text, "fuzz.toml")
    except ConfigError as err:
        assert err.issues
        for issue in err.issues:
            assert issue.file == "fuzz.toml"
            assert issue.message
            assert issue.key_path or issue.message.startswith("invalid TOML"), issue
        assert len(str(err).splitlines()) >= len(err.issues)
        return
    assert isinstance(config, Config)
    assert parse_config(config_to_toml(config), "fuzz.toml") == config


FUZZ = hyp_settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

proxy_tables = st.dictionaries(st.sampled_from(PROXY_KEYS), values, max_size=8) | st.fixed_dictionaries(
    {
        "name": st.sampled_from(["web", "x y", ""]),
        "interfaces": st.sampled_from([["eth0"], [], ["eth0", "eth0"]]),
        "vip": st.sampled_from(["10.0.0.1", "1.2.3"]),
        "port": st.sampled_from([80, 0]),
        "backend": st.lists(st.dictionaries(st.sampled_from(BACKEND_KEYS), values, max_size=4), max_size=3),
    },
    optional={"health": values, "source_route": values, "rate_limit": values, "circuit_breaker": values},
)
documents = st.dictionaries(keys, values, max_size=4) | st.fixed_dictionaries(
    {"proxy": st.lists(proxy_tables, max_size=3)},
    optional={"settings": st.dictionaries(st.sampled_from(SETTINGS_KEYS), values, max_size=6)},
)


@FUZZ
@given(documents)
def test_fuzz_random_documents(document: dict[str, Any]) -> None:
    check_parse(toml_document(document))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _mutate(document: Any, path: tuple[Any, ...], action: str, new: Any, new_key: str) -> Any:
    if not path:
        return document
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = new
    elif action == "delete":
        del parent[last]
    elif action == "add-key" and isinstance(parent[last], dict):
        parent[last][new_key] = new
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(parent[last])
    return document


FULL_TOML = (REPO / "configs" / "full.toml").read_text()


@FUZZ
@given(st.data())
def test_fuzz_mutations_of_full_example(data: st.DataObject) -> None:
    document = tomllib.loads(FULL_TOML)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from(_paths(document)))
        action = data.draw(st.sampled_from(["replace", "delete", "add-key", "duplicate"]))
        _mutate(document, path, action, data.draw(values), data.draw(keys))
    check_parse(toml_document(document))


@FUZZ
@given(st.data())
def test_fuzz_text_mutations_of_full_example(data: st.DataObject) -> None:
    lines = FULL_TOML.splitlines()
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
        action = data.draw(st.sampled_from(["delete", "duplicate", "insert", "truncate"]))
        if action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        elif action == "insert":
            lines.insert(index, data.draw(st.text(max_size=30)))
        else:
            lines[index] = lines[index][: data.draw(st.integers(min_value=0, max_value=len(lines[index])))]
    check_parse("\n".join(lines))


# ---------------------------------------------------------------------------------------------- CLI


@pytest.mark.skipif(not (REPO / "lbtui" / "cli.py").exists(), reason="lbtui/cli.py not written yet")
def test_cli_check(tmp_path: Path) -> None:
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "lbtui", "--check", "--config-only", "-c", str(path)]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)

    good = check(REPO / "configs" / "minimal.toml")
    assert good.returncode == 0, good.stderr
    bad = {case[0]: case for case in BAD_CASES}
    # the CLI on a table of 30 bad files: exit 1 and the key path on stderr for each
    cases = [case_id for case_id, content, key_path, _ in BAD_CASES if isinstance(content, str) and key_path]
    chosen = ["port-0", "unknown-backend", "cidr-host-bits"] + cases[:27]
    for case_id in dict.fromkeys(chosen):
        _, content, key_path, _ = bad[case_id]
        assert isinstance(content, str)
        path = tmp_path / f"{case_id}.toml"
        path.write_text(content)
        result = check(path)
        assert result.returncode == 1, (case_id, result.stdout, result.stderr)
        assert f"{path}: {key_path}: " in result.stderr
