# SPDX-License-Identifier: Apache-2.0
"""The configuration's keys, each declared once: the frozen dataclasses the engine runs on, with every
config key's kind, range or choices, TOML name and one-line doc in its `Annotated` metadata and its
default as the field's default (kinds: keys.py, string formats: formats.py). configs/full.toml shows
every key with an example; README.md's Configuration section describes the format.
"""

import json
from dataclasses import dataclass, field
from typing import Annotated

from lbtui.addresses import format_endpoint
from lbtui.config.formats import (
    CIDR,
    DNS_NAME,
    ENDPOINT,
    FILE_PATH,
    GROUP,
    HTTP_HOST,
    IFNAME,
    IP_ADDRESS,
    LISTEN,
    NAMESERVER,
    PROXY_NAME,
    SOCKET_PATH,
    SYSLOG,
    URL_PATH,
    Endpoint,
)
from lbtui.config.keys import (
    Checked,
    Choice,
    Flag,
    Int,
    Items,
    NotWith,
    Number,
    Table,
    Tables,
    Text,
    Unique,
)

PROTOCOLS = ("tcp", "udp")
ALGORITHMS = ("weighted-random", "least-connections", "maglev", "source-hash")
HEALTH_TYPES = ("tcp", "http")
XDP_MODES = ("auto", "native", "generic")
FAST_PATH_MODES = ("auto", "off")
FORWARDING_MODES = ("nat", "ipip")
ACCESS_LOG_FORMATS = ("json", "clf")
SYSLOG_FACILITIES = ("daemon", "user", *(f"local{n}" for n in range(8)))
TABLE_SIZE_MIN = 7
TABLE_SIZE_MAX = 65537
MAX_CONNECTIONS_MIN = 1024
MAX_CONNECTIONS_MAX = 16777216
MAX_RECORDS_MAX = 1024  # DNS records per name: a quarter of the data path's backend ids
HISTORY_S_MIN = 300  # the console's shortest chart span
HISTORY_S_MAX = 86400

PORT = "a port from 1 to 65535"
HTTP_ONLY = NotWith("type", "tcp", '{key} is only valid with type = "http", not with type = "tcp"')
HOST_ONLY = NotWith("address", None, "{key} is only used with host, not with address")


@dataclass(frozen=True)
class BackendConfig:
    """[[proxy.backend]], and the backends of a source route: a static address or a DNS name."""

    weight: Annotated[int, Int("positive integer, any size up to 2147483647 (no sum rule)")] = 1
    address: Annotated[
        Endpoint | None, Text('static backend: "ip:port", or "[ip]:port" for IPv6', ENDPOINT)
    ] = None
    host: Annotated[
        str | None,
        Text("DNS name instead of address: every A (AAAA for an IPv6 VIP) record is a backend", DNS_NAME),
    ] = None
    port: Annotated[
        int | None, Int("port of a host backend", high=65535, expect=PORT, not_with=HOST_ONLY)
    ] = None
    dns_refresh_s: Annotated[
        float, Number("re-resolve a host this often (with jitter)", not_with=HOST_ONLY)
    ] = 30.0

    @property
    def key(self) -> str:
        """How the backend is written in the config and named in commands: "ip:port" or "host:port"."""
        if self.address is not None:
            return str(self.address)
        return f"{self.host}:{self.port}"

    @property
    def is_dns(self) -> bool:
        return self.host is not None


def _backend_key(table: Checked) -> str | None:
    """A backend's "ip:port" or "host:port" once known, even when other keys of it are wrong."""
    values, raw = table.values, table.raw
    if "address" in values and "host" not in raw:
        return str(values["address"])
    if "host" in values and "port" in values and "address" not in raw:
        return f"{values['host']}:{values['port']}"
    return None


def _backend_group(doc: str, toml: str = "") -> Tables:
    """A group of backends (the default one, a source route's): at least one, each named once."""
    duplicate = Unique(_backend_key, lambda key, first: f"duplicate backend {key} (already at {first})")
    return Tables(
        doc, cls=BackendConfig, toml=toml, required=True, empty="at least one backend", unique=(duplicate,)
    )


@dataclass(frozen=True)
class SourceRouteConfig:
    """[[proxy.source_route]]: clients from this network use these backends instead of the default group."""

    cidr: Annotated[
        str, Text("network of the VIP's family without host bits; longest prefix wins", CIDR, required=True)
    ]
    backends: Annotated[tuple[BackendConfig, ...], _backend_group("this network's backends")]


@dataclass(frozen=True)
class HealthConfig:
    """[proxy.health]: optional; absent = always healthy."""

    type: Annotated[str, Choice('"tcp" (connect) | "http" (GET)', HEALTH_TYPES, required=True)]
    path: Annotated[str, Text('http only; must start with "/"', URL_PATH, not_with=HTTP_ONLY)] = "/"
    http_host: Annotated[
        str | None,
        Text("http only; Host header; default: the backend address", HTTP_HOST, not_with=HTTP_ONLY),
    ] = None
    interval_ms: Annotated[int, Int("time between checks")] = 2000
    timeout_ms: Annotated[
        int, Int("a check slower than this fails; at most interval_ms (default: 1000 or less)", derived=True)
    ] = 1000
    rise: Annotated[int, Int("consecutive successes to come up")] = 2
    fall: Annotated[int, Int("consecutive failures to go down")] = 3
    expected_status: Annotated[
        tuple[int, ...],
        Items(
            "http only; status codes that count as healthy",
            item=Int("", low=100, high=599, expect="an HTTP status code from 100 to 599"),
            empty="at least one status code",
            not_with=HTTP_ONLY,
        ),
    ] = (200,)
    port: Annotated[
        int | None, Int("check this port instead of the backend's service port", high=65535, expect=PORT)
    ] = None
    slow_start_s: Annotated[
        float, Number("ramp a recovered backend's weight up over this many seconds (0 = off)", positive=False)
    ] = 0.0


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """[proxy.circuit_breaker]: optional; fed by real traffic."""

    error_rate: Annotated[
        float, Number("open when more than this fraction of new connections fail", high=1.0)
    ] = 0.5
    min_requests: Annotated[int, Int("... with at least this many connections in the window")] = 20
    window_s: Annotated[float, Number("sliding window length")] = 10.0
    open_s: Annotated[float, Number("stay open this long, then half-open")] = 30.0
    half_open_successes: Annotated[int, Int("successes in half-open needed to close again")] = 3
    syn_timeout_ms: Annotated[int, Int("a SYN unanswered for this long counts as a failure")] = 3000


@dataclass(frozen=True)
class TokenBucket:
    """per_source / per_backend of [proxy.rate_limit]."""

    rate: Annotated[int, Int("new connections per second", required=True)]
    burst: Annotated[
        int, Int("bucket size; default: rate (one second's worth); may be smaller", derived=True)
    ]


@dataclass(frozen=True)
class RateLimitConfig:
    """[proxy.rate_limit]: optional; new connections per second (established flows are never limited)."""

    per_source: Annotated[TokenBucket | None, Table("per client address", cls=TokenBucket)] = None
    per_backend: Annotated[TokenBucket | None, Table("per backend", cls=TokenBucket)] = None
    ipv6_source_prefix: Annotated[
        int,
        Int(
            "IPv6 VIPs only: per_source counts clients by this prefix (one host owns a /64)",
            high=128,
            expect="a prefix length from 1 to 128",
        ),
    ] = 64


def _listener(table: Checked) -> tuple[str, int, str] | None:
    values = table.values
    if "vip" not in values or "port" not in values:
        return None
    return values["vip"], values["port"], values.get("protocol", ProxyConfig.protocol)


UNIQUE_PROXIES = (
    Unique(
        lambda table: table.values.get("name"),
        lambda name, first: f"duplicate proxy name {json.dumps(name)} (also used by {first})",
        at="name",
    ),
    Unique(
        _listener,
        lambda listener, first: (
            f"{format_endpoint(listener[0], listener[1])}/{listener[2]} is also served by {first}"
        ),
    ),
)


@dataclass(frozen=True)
class ProxyConfig:
    """[[proxy]]: one virtual service, VIP:port/protocol on some interfaces, and its backends."""

    name: Annotated[str, Text("unique; letters, digits, _ . - (at most 64)", PROXY_NAME, required=True)]
    interfaces: Annotated[
        tuple[str, ...],
        Items(
            "client-facing interfaces (at least one)",
            item=Text("", IFNAME),
            required=True,
            expect='an array of interface names, e.g. ["eth0"]',
            empty='at least one interface name, e.g. ["eth0"]',
            duplicate=lambda name: f"duplicate interface {json.dumps(name)}",
        ),
    ]
    vip: Annotated[
        str, Text("the virtual IPv4 or IPv6 address clients connect to", IP_ADDRESS, required=True)
    ]
    port: Annotated[int, Int("the VIP's port", high=65535, expect=PORT, required=True)]
    backends: Annotated[tuple[BackendConfig, ...], _backend_group("the default backend group", "backend")]
    protocol: Annotated[str, Choice('"tcp" or "udp"', PROTOCOLS)] = "tcp"
    algorithm: Annotated[str, Choice("how a new flow picks its backend", ALGORITHMS)] = "weighted-random"
    source_routes: Annotated[
        tuple[SourceRouteConfig, ...],
        Tables(
            "clients from these networks use other backends",
            cls=SourceRouteConfig,
            toml="source_route",
            unique=(
                Unique(
                    lambda table: table.values.get("cidr"),
                    lambda cidr, first: f"duplicate route {cidr} (already at {first})",
                    at="cidr",
                ),
            ),
        ),
    ] = ()
    health: Annotated[HealthConfig | None, Table("active health checks", cls=HealthConfig)] = None
    circuit_breaker: Annotated[
        CircuitBreakerConfig | None, Table("circuit breaker per backend", cls=CircuitBreakerConfig)
    ] = None
    rate_limit: Annotated[
        RateLimitConfig | None, Table("new-connection rate limits", cls=RateLimitConfig)
    ] = None
    least_connections_interval_ms: Annotated[
        int, Int("how often least-connections re-weights from live counts")
    ] = 500
    forwarding: Annotated[
        str, Choice('"nat" (replies through the LB) | "ipip" (DSR: docs/scale-out.md)', FORWARDING_MODES)
    ] = "nat"
    ipip_source: Annotated[
        str | None,
        Text(
            'forwarding = "ipip" only: outer IPv4 source, an address of this host; '
            "default: the first IPv4 address of the proxy's first interface",
            IP_ADDRESS,
        ),
    ] = None

    @property
    def vip_endpoint(self) -> Endpoint:
        return Endpoint(self.vip, self.port)


@dataclass(frozen=True)
class MetricsConfig:
    """[settings.metrics]: the Prometheus exporter."""

    enabled: Annotated[bool, Flag("serve metrics")] = True
    listen: Annotated[str, Text('"host:port"; an IPv4 address, [IPv6] address or host name', LISTEN)] = (
        "127.0.0.1:17100"  # outside 9100-9999, which Prometheus' port allocations give to exporters
    )
    path: Annotated[str, Text("the HTTP path of the metrics", URL_PATH)] = "/metrics"


@dataclass(frozen=True)
class DnsConfig:
    """[settings.dns]: the resolver of DNS (host) backends."""

    nameservers: Annotated[
        tuple[str, ...],
        Items("IPv4 or IPv6 addresses; empty: the system resolver", item=Text("", NAMESERVER)),
    ] = ()
    max_records: Annotated[
        int,
        Int(
            "usable A records used per name (the first in numeric order); more are ignored, with a warning",
            low=1,
            high=MAX_RECORDS_MAX,
        ),
    ] = 64


@dataclass(frozen=True)
class AccessLogConfig:
    """[settings.access_log]: one line per finished connection."""

    format: Annotated[str, Choice('"json" or "clf"', ACCESS_LOG_FORMATS)] = "json"
    stdout: Annotated[bool, Flag("also write to standard output")] = False
    file: Annotated[str | None, Text("optional; rotated by size", FILE_PATH)] = None
    max_bytes: Annotated[int, Int("rotate when the file reaches this size", low=1024)] = 10485760
    max_files: Annotated[int, Int("rotated files kept")] = 5
    log_new: Annotated[bool, Flag("also log a line when a connection starts")] = False
    file_mode: Annotated[
        int,
        Int(
            "mode of the files it creates, whatever the umask", low=0, high=0o777, expect="a mode like 0o640"
        ),
    ] = 0o640
    syslog: Annotated[
        str | None,
        Text('also send each line to syslog: "/dev/log", "host:port" (UDP) or "tcp://host:port"', SYSLOG),
    ] = None
    syslog_facility: Annotated[str, Choice("the syslog facility", SYSLOG_FACILITIES)] = "local0"


@dataclass(frozen=True)
class ConsoleConfig:
    """[settings.console]"""

    refresh_s: Annotated[float, Number("how often the console redraws from a fresh snapshot")] = 1.0


@dataclass(frozen=True)
class AnnounceConfig:
    """[settings.announce]: announce each VIP through BIRD while this host can serve it (scale-out.md)."""

    enabled: Annotated[bool, Flag("announce the VIPs (a route per VIP in `table`, exported by BIRD)")] = False
    table: Annotated[
        int,
        Int(
            "kernel routing table lbtui writes and BIRD's kernel protocol learns",
            high=0xFFFFFFFF,
            expect="a routing table number from 1 to 4294967295 other than 253, 254, 255",
        ),
    ] = 4242
    protocol: Annotated[
        int, Int("route protocol number marking lbtui's routes in the table", low=5, high=255)
    ] = 241
    bird_socket: Annotated[str, Text("BIRD's control socket, read for the BGP sessions", SOCKET_PATH)] = (
        "/run/bird/bird.ctl"
    )
    withdraw_on_stop: Annotated[
        bool, Flag("a clean stop withdraws; false: the routes stay (--keep-dataplane hand-over)")
    ] = True
    min_usable_backends: Annotated[
        int, Int("withdraw a VIP when fewer backends of its proxies are usable")
    ] = 1
    announce_delay_s: Annotated[
        float, Number("announce only after the VIP could be announced for this long", positive=False)
    ] = 0.0
    withdraw_grace_s: Annotated[
        float,
        Number(
            "a clean stop withdraws, then keeps serving this long (routers move new flows) before detaching",
            positive=False,
            high=10.0,
        ),
    ] = 2.0


@dataclass(frozen=True)
class ReadOnlyConfig:
    """[settings.read_only]: a second control socket for monitoring users (README.md#access-levels)."""

    socket: Annotated[
        str | None,
        Text("serves status, flows, events and history; refuses commands; off when not set", SOCKET_PATH),
    ] = None
    group: Annotated[
        str | None, Text("members of this group (name or number) may connect; needed with socket", GROUP)
    ] = None


@dataclass(frozen=True)
class Settings:
    """[settings]: optional; everything has a default."""

    max_connections: Annotated[
        int,
        Int(
            "established flows tracked at once; beyond it new connections are refused",
            low=MAX_CONNECTIONS_MIN,
            high=MAX_CONNECTIONS_MAX,
        ),
    ] = 262144
    embryonic_connections: Annotated[
        int,
        Int(
            "half-open and closing flows tracked apart; a SYN flood evicts only these",
            low=MAX_CONNECTIONS_MIN,
            high=MAX_CONNECTIONS_MAX,
        ),
    ] = 65536
    ipv6_max_connections: Annotated[
        int,
        Int(
            "established IPv6 flows tracked at once (a table of their own, beside max_connections')",
            low=MAX_CONNECTIONS_MIN,
            high=MAX_CONNECTIONS_MAX,
        ),
    ] = 65536
    ipv6_embryonic_connections: Annotated[
        int,
        Int(
            "half-open and closing IPv6 flows tracked apart",
            low=MAX_CONNECTIONS_MIN,
            high=MAX_CONNECTIONS_MAX,
        ),
    ] = 16384
    tcp_timeout_s: Annotated[float, Number("an idle established TCP flow is forgotten after this")] = 300.0
    tcp_closing_timeout_s: Annotated[float, Number("idle timeout once FIN or RST has been seen")] = 10.0
    udp_timeout_s: Annotated[float, Number("an idle UDP flow is forgotten after this")] = 60.0
    drain_timeout_s: Annotated[float, Number("a draining backend's remaining flows are cut after this")] = (
        30.0
    )
    control_socket: Annotated[str, Text("unix socket of `lbtui ctl` and `lbtui attach`", SOCKET_PATH)] = (
        "/run/lbtui/lbtui.sock"
    )
    table_size: Annotated[
        int, Int("slots per selection table; a prime", low=TABLE_SIZE_MIN, high=TABLE_SIZE_MAX, prime=True)
    ] = 65537
    xdp_mode: Annotated[
        str, Choice("auto: generic on veth, else native falling back to generic", XDP_MODES)
    ] = "auto"
    fast_path: Annotated[
        str,
        Choice(
            "auto: DNATed IPv4 packets leave from XDP straight through the backend's interface, and "
            "replies from TC ingress through the client's, when the kernel's route, neighbour and MTU "
            "allow (bypassing netfilter, conntrack and tc on the way); off: through the kernel's forwarding",
            FAST_PATH_MODES,
        ),
    ] = "auto"
    sweep_interval_s: Annotated[float, Number("how often expired conntrack entries are swept")] = 2.0
    conntrack_pass_s: Annotated[
        float,
        Number(
            "one pass of the idle sweep over the established flows takes about this long (an idle "
            "flow goes between its timeout and its timeout + this)"
        ),
    ] = 300.0
    state_file: Annotated[
        str | None,
        Text(
            "runtime overrides are kept here across restarts; default /var/lib/lbtui/<instance>.state",
            FILE_PATH,
        ),
    ] = None
    watch_config: Annotated[
        bool, Flag("reload when the configuration file changes (SIGHUP and `lbtui ctl reload` always do)")
    ] = False
    history_s: Annotated[
        int,
        Int(
            "seconds of per-second history kept for the console's charts (memory: README.md)",
            low=HISTORY_S_MIN,
            high=HISTORY_S_MAX,
        ),
    ] = 3600
    manage_sysctls: Annotated[
        bool, Flag("turn net.ipv4.ip_forward on at start (NAT mode forwards every balanced packet)")
    ] = False
    metrics: Annotated[MetricsConfig, Table("Prometheus exporter", cls=MetricsConfig)] = field(
        default_factory=MetricsConfig
    )
    dns: Annotated[DnsConfig, Table("resolver of DNS backends", cls=DnsConfig)] = field(
        default_factory=DnsConfig
    )
    access_log: Annotated[AccessLogConfig, Table("access log", cls=AccessLogConfig)] = field(
        default_factory=AccessLogConfig
    )
    console: Annotated[ConsoleConfig, Table("the console", cls=ConsoleConfig)] = field(
        default_factory=ConsoleConfig
    )
    announce: Annotated[AnnounceConfig, Table("VIP announcement through BIRD", cls=AnnounceConfig)] = field(
        default_factory=AnnounceConfig
    )
    read_only: Annotated[ReadOnlyConfig, Table("the read-only control socket", cls=ReadOnlyConfig)] = field(
        default_factory=ReadOnlyConfig
    )


@dataclass(frozen=True)
class Config:
    """The whole file: [settings] and one or more [[proxy]] tables."""

    settings: Annotated[Settings, Table("global settings", cls=Settings)]
    proxies: Annotated[
        tuple[ProxyConfig, ...],
        Tables(
            "the virtual services",
            cls=ProxyConfig,
            toml="proxy",
            required=True,
            array="an array of tables ([[proxy]])",
            empty="at least one [[proxy]] table",
            missing="add at least one [[proxy]] table",
            unique=UNIQUE_PROXIES,
        ),
    ]
    # Where it was read from; not a key, and not part of equality (a reload of an unchanged file is equal).
    path: str | None = field(default=None, compare=False)

    def proxy(self, name: str) -> ProxyConfig | None:
        for proxy in self.proxies:
            if proxy.name == name:
                return proxy
        return None
