"""TOML configuration: parsing, strict validation and the frozen value types the engine runs on.

The format is DESIGN.md section 5 plus a few extension keys. Validation never stops at the first
problem: every issue is collected with the file, the key path (`proxy[0].backend[1].weight`) and
what was expected, and all of them are raised together as one `ConfigError`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

INT_MAX = 2**31 - 1  # every integer ends up in a u32/s32 somewhere; keep them representable
MAX_SECONDS = 365 * 24 * 3600.0  # sanity cap for durations (keeps ns conversions far from u64 overflow)

PROTOCOLS = ("tcp", "udp")
ALGORITHMS = ("weighted-random", "least-connections", "maglev", "source-hash")
HEALTH_TYPES = ("tcp", "http")
XDP_MODES = ("auto", "native", "generic")
ACCESS_LOG_FORMATS = ("json", "clf")
TABLE_SIZE_MIN = 7
TABLE_SIZE_MAX = 65537
MAX_CONNECTIONS_MIN = 1024
MAX_CONNECTIONS_MAX = 16777216

FILE_LEVEL = ""  # key path of issues about the file as a whole (unreadable, not UTF-8, bad TOML)


# --------------------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    key_path: str
    message: str

    def __str__(self) -> str:
        if self.key_path:
            return f"{self.file}: {self.key_path}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """Every problem found in one config file; str() gives one line per issue."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        if isinstance(issues, str):
            raise TypeError(
                "ConfigError takes ConfigIssue values; use ConfigError.one(file, key_path, message)"
            )
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__(self.issues)  # args = (issues,) keeps the exception picklable

    @classmethod
    def one(cls, file: str, key_path: str, message: str) -> ConfigError:
        """A ConfigError with a single issue (e.g. for problems found after parsing, such as on reload)."""
        return cls([ConfigIssue(file, key_path, message)])

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


# --------------------------------------------------------------------------------------- value types


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class BackendConfig:
    weight: int
    address: Endpoint | None = None  # static backend
    host: str | None = None  # DNS backend (host + port)
    port: int | None = None
    dns_refresh_s: float = 30.0

    @property
    def key(self) -> str:
        """How the backend is written in the config and named in commands: "ip:port" or "host:port"."""
        if self.address is not None:
            return str(self.address)
        return f"{self.host}:{self.port}"

    @property
    def is_dns(self) -> bool:
        return self.host is not None


@dataclass(frozen=True)
class SourceRouteConfig:
    cidr: str  # normalised, e.g. "192.168.0.0/16"
    backends: tuple[BackendConfig, ...]


@dataclass(frozen=True)
class HealthConfig:
    type: str  # "tcp" | "http"
    path: str = "/"
    http_host: str | None = None
    interval_ms: int = 2000
    timeout_ms: int = 1000
    rise: int = 2
    fall: int = 3
    expected_status: tuple[int, ...] = (200,)
    port: int | None = None  # check this port instead of the service port
    slow_start_s: float = 0.0


@dataclass(frozen=True)
class CircuitBreakerConfig:
    error_rate: float = 0.5
    min_requests: int = 20
    window_s: float = 10.0
    open_s: float = 30.0
    half_open_successes: int = 3
    syn_timeout_ms: int = 3000


@dataclass(frozen=True)
class TokenBucket:
    rate: int  # new connections per second
    burst: int


@dataclass(frozen=True)
class RateLimitConfig:
    per_source: TokenBucket | None = None
    per_backend: TokenBucket | None = None


@dataclass(frozen=True)
class ProxyConfig:
    name: str
    interfaces: tuple[str, ...]
    vip: str
    port: int
    protocol: str
    algorithm: str
    backends: tuple[BackendConfig, ...]
    source_routes: tuple[SourceRouteConfig, ...] = ()
    health: HealthConfig | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    rate_limit: RateLimitConfig | None = None
    least_connections_interval_ms: int = 500

    @property
    def vip_endpoint(self) -> Endpoint:
        return Endpoint(self.vip, self.port)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    listen: str = "127.0.0.1:9100"
    path: str = "/metrics"


@dataclass(frozen=True)
class DnsConfig:
    nameservers: tuple[str, ...] = ()  # empty: the system resolver


@dataclass(frozen=True)
class AccessLogConfig:
    format: str = "json"
    stdout: bool = False
    file: str | None = None
    max_bytes: int = 10485760
    max_files: int = 5
    log_new: bool = False


@dataclass(frozen=True)
class ConsoleConfig:
    refresh_s: float = 1.0


@dataclass(frozen=True)
class Settings:
    max_connections: int = 262144
    tcp_timeout_s: float = 300.0
    tcp_closing_timeout_s: float = 10.0
    udp_timeout_s: float = 60.0
    drain_timeout_s: float = 30.0
    control_socket: str = "/run/lbtui/lbtui.sock"
    table_size: int = 65537
    xdp_mode: str = "auto"
    sweep_interval_s: float = 2.0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)


@dataclass(frozen=True)
class Config:
    settings: Settings
    proxies: tuple[ProxyConfig, ...]
    # Where it was read from; not part of equality, so a reload of an unchanged file compares equal.
    path: str | None = field(default=None, compare=False)

    def proxy(self, name: str) -> ProxyConfig | None:
        for proxy in self.proxies:
            if proxy.name == name:
                return proxy
        return None


# ------------------------------------------------------------------------------------- entry points


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError (only) for every kind of problem."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([ConfigIssue(file, FILE_LEVEL, f"cannot read config file: {reason}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not valid UTF-8 (byte {exc.start}: {exc.reason})"
        raise ConfigError([ConfigIssue(file, FILE_LEVEL, message)]) from None
    return parse_config(text, file)


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse and validate TOML text. Raises ConfigError (only), listing every issue found."""
    try:
        document = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, and int() digit limits on absurd literals
        raise ConfigError([ConfigIssue(path, FILE_LEVEL, f"invalid TOML: {exc}")]) from None
    except RecursionError:
        raise ConfigError([ConfigIssue(path, FILE_LEVEL, "invalid TOML: nested too deeply")]) from None
    validator = _Validator(path)
    config = validator.document(document)
    if validator.issues:
        raise ConfigError(validator.issues)
    return Config(settings=config.settings, proxies=config.proxies, path=path)


# ------------------------------------------------------------------------------------------ helpers

_MISSING: Any = object()
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PROXY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PORT_TEXT = re.compile(r"[0-9]{1,5}")
_DNS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_HAS_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def _join(path: str, key: str) -> str:
    shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{shown}" if path else shown


def _describe(value: Any) -> str:
    """A short, TOML-like rendering of what the user gave, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 60 else shown[:57] + '..."'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an empty array" if not value else "an array"
    return f"a {type(value).__name__} value"  # TOML dates and times


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_prime(number: int) -> bool:
    if number < 2:
        return False
    divisor = 2
    while divisor * divisor <= number:
        if number % divisor == 0:
            return False
        divisor += 1
    return True


def _int_expectation(low: int, high: int) -> str:
    if high < INT_MAX:
        return f"an integer from {low} to {high}"
    if low == 1:
        return "a positive integer"
    if low == 0:
        return "a non-negative integer"
    return f"an integer >= {low}"


def _ipv4_problem(text: str) -> str | None:
    """Why `text` is not a usable unicast IPv4 address, or None if it is one."""
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return "expected an IPv4 address"
    if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        return "expected a unicast IPv4 address (not 0.0.0.0, multicast or broadcast)"
    return None


def _dns_name_problem(text: str) -> str | None:
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return "expected a DNS name of 1 to 253 characters"
    if not all(_DNS_LABEL.fullmatch(label) for label in name.split(".")):
        return "expected a DNS name (labels of letters, digits and '-', at most 63 characters each)"
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return None
    return 'expected a DNS name, not an IP address (write address = "ip:port" instead)'


def _ifname_problem(text: str) -> str | None:
    # The kernel's dev_valid_name(): 1..15 bytes, not "." or "..", no '/', ':' or whitespace.
    if not text or len(text.encode()) > 15:
        return "expected a Linux interface name of 1 to 15 characters"
    if text in (".", "..") or any(ch in text for ch in "/:") or any(ch.isspace() for ch in text):
        return "expected a Linux interface name (no '/', ':' or whitespace)"
    if not text.isprintable():
        return "expected a Linux interface name (no control characters)"
    return None


def _listen_problem(text: str) -> str | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        return 'expected "host:port"'
    if not _PORT_TEXT.fullmatch(port) or not 1 <= int(port) <= 65535:
        return 'expected "host:port" with a port from 1 to 65535'
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return 'expected "host:port" with a valid [IPv6] address'
        return None
    try:
        ipaddress.IPv4Address(host)
        return None
    except ValueError:
        pass
    if _dns_name_problem(host) is not None:
        return 'expected "host:port" with an IPv4 address, [IPv6] address or host name'
    return None


def _parse_endpoint(text: str) -> tuple[Endpoint | None, str | None]:
    ip_text, sep, port_text = text.rpartition(":")
    if not sep:
        return None, 'expected "ip:port" (IPv4 address and port), the port is missing'
    if _ipv4_problem(ip_text) is not None:
        return None, 'expected "ip:port" with a unicast IPv4 address'
    if not _PORT_TEXT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        return None, 'expected "ip:port" with a port from 1 to 65535'
    return Endpoint(str(ipaddress.IPv4Address(ip_text)), int(port_text)), None


# ---------------------------------------------------------------------------------------- validator

_TOP_KEYS = ("settings", "proxy")
_SETTINGS_KEYS = (
    "max_connections",
    "tcp_timeout_s",
    "tcp_closing_timeout_s",
    "udp_timeout_s",
    "drain_timeout_s",
    "control_socket",
    "table_size",
    "xdp_mode",
    "sweep_interval_s",
    "metrics",
    "dns",
    "access_log",
    "console",
)
_METRICS_KEYS = ("enabled", "listen", "path")
_DNS_KEYS = ("nameservers",)
_ACCESS_LOG_KEYS = ("format", "stdout", "file", "max_bytes", "max_files", "log_new")
_CONSOLE_KEYS = ("refresh_s",)
_PROXY_KEYS = (
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
    "least_connections_interval_ms",
)
_HEALTH_KEYS = (
    "type",
    "path",
    "http_host",
    "interval_ms",
    "timeout_ms",
    "rise",
    "fall",
    "expected_status",
    "port",
    "slow_start_s",
)
_HTTP_ONLY_HEALTH_KEYS = ("path", "http_host", "expected_status")
_CIRCUIT_KEYS = ("error_rate", "min_requests", "window_s", "open_s", "half_open_successes", "syn_timeout_ms")
_RATE_LIMIT_KEYS = ("per_source", "per_backend")
_BUCKET_KEYS = ("rate", "burst")
_BACKEND_KEYS = ("address", "host", "port", "weight", "dns_refresh_s")
_ROUTE_KEYS = ("cidr", "backends")


class _Validator:
    """Walks the parsed TOML document, building values and collecting every issue on the way.

    Getters return the default (or None) for a missing or invalid value after recording an issue, so
    validation can carry on; the half-built result is thrown away whenever an issue was recorded.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[ConfigIssue] = []

    def error(self, key_path: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, key_path, message))

    # -- generic getters ------------------------------------------------------------------------

    def table(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(path, f"expected a table, got {_describe(value)}")
            return None
        for key in value:
            if key not in allowed:
                self.error(_join(path, key), f"unknown key {key!r} (allowed: {', '.join(allowed)})")
        return value

    def raw(self, table: dict[str, Any], key: str, path: str, required: bool, expect: str = "") -> Any:
        value = table.get(key, _MISSING)
        if value is _MISSING and required:
            self.error(_join(path, key), f"missing required key{': expected ' + expect if expect else ''}")
        return value

    def integer(
        self,
        table: dict[str, Any],
        key: str,
        path: str,
        default: int,
        *,
        low: int = 1,
        high: int = INT_MAX,
        required: bool = False,
        expect: str | None = None,
    ) -> int:
        value = self.raw(table, key, path, required, expect or _int_expectation(low, high))
        if value is _MISSING:
            return default
        return self.check_int(value, _join(path, key), default, low=low, high=high, expect=expect)

    def check_int(
        self, value: Any, path: str, default: int, *, low: int, high: int, expect: str | None = None
    ) -> int:
        expectation = expect or _int_expectation(low, high)
        if not _is_int(value):
            self.error(path, f"expected {expectation}, got {_describe(value)}")
            return default
        if value < low:
            self.error(path, f"expected {expectation}, got {_describe(value)}")
            return default
        if value > high:
            if expect is None and high == INT_MAX:
                expectation += f" no larger than {high}"
            self.error(path, f"expected {expectation}, got {_describe(value)}")
            return default
        return int(value)

    def port(self, table: dict[str, Any], key: str, path: str, *, required: bool) -> int | None:
        if key not in table:
            self.raw(table, key, path, required, "a port from 1 to 65535")
            return None
        return self.check_int(
            table[key], _join(path, key), 0, low=1, high=65535, expect="a port from 1 to 65535"
        )

    def number(
        self,
        table: dict[str, Any],
        key: str,
        path: str,
        default: float,
        *,
        positive: bool = True,
        high: float = MAX_SECONDS,
    ) -> float:
        """A float; integers are accepted. positive=True: > 0, else >= 0."""
        value = self.raw(table, key, path, False)
        if value is _MISSING:
            return default
        key_path = _join(path, key)
        expectation = "a number > 0" if positive else "a number >= 0"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key_path, f"expected {expectation}, got {_describe(value)}")
            return default
        # Compare huge integers before float(): float(10**400) raises OverflowError.
        number = (
            float(value)
            if isinstance(value, float) or abs(value) <= 2**53
            else (math.inf if value > 0 else -math.inf)
        )
        if math.isnan(number) or number < 0 or (positive and number == 0):
            self.error(key_path, f"expected {expectation}, got {_describe(value)}")
            return default
        if number > high:
            limit = int(high) if high.is_integer() else high
            self.error(key_path, f"expected {expectation} and <= {limit}, got {_describe(value)}")
            return default
        return number

    def boolean(self, table: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = self.raw(table, key, path, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.error(_join(path, key), f"expected true or false, got {_describe(value)}")
            return default
        return value

    def string(
        self, table: dict[str, Any], key: str, path: str, *, required: bool = False, expect: str = "a string"
    ) -> str | None:
        """A non-empty string, or None if missing/invalid."""
        value = self.raw(table, key, path, required, expect)
        if value is _MISSING:
            return None
        return self.check_string(value, _join(path, key))

    def check_string(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            self.error(path, f"expected a string, got {_describe(value)}")
            return None
        if not value:
            self.error(path, "expected a non-empty string")
            return None
        return value

    def choice(
        self, table: dict[str, Any], key: str, path: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = self.raw(table, key, path, False)
        if value is _MISSING:
            return default
        if value not in choices or not isinstance(value, str):
            allowed = " | ".join(json.dumps(choice) for choice in choices)
            self.error(_join(path, key), f"expected one of {allowed}, got {_describe(value)}")
            return default
        return value

    def array(self, value: Any, path: str) -> list[Any] | None:
        if not isinstance(value, list):
            self.error(path, f"expected an array, got {_describe(value)}")
            return None
        return value

    def items(self, value: Any, path: str, check: Callable[[Any, str], T | None]) -> list[tuple[str, T]]:
        """Check each element of an array; returns (key path, value) of the valid ones."""
        elements = self.array(value, path)
        result: list[tuple[str, T]] = []
        for index, element in enumerate(elements or []):
            item_path = f"{path}[{index}]"
            checked = check(element, item_path)
            if checked is not None:
                result.append((item_path, checked))
        return result

    # -- document -------------------------------------------------------------------------------

    def document(self, document: dict[str, Any]) -> Config:
        self.table(document, "", _TOP_KEYS)
        settings = self.settings(document.get("settings", {}), "settings")
        proxies = self.proxies(document.get("proxy", _MISSING), "proxy", settings.table_size)
        return Config(settings=settings, proxies=proxies)

    def proxies(self, value: Any, path: str, table_size: int) -> tuple[ProxyConfig, ...]:
        if value is _MISSING:
            self.error(path, "missing required key: add at least one [[proxy]] table")
            return ()
        if not isinstance(value, list):
            self.error(path, f"expected an array of tables ([[proxy]]), got {_describe(value)}")
            return ()
        if not value:
            self.error(path, "expected at least one [[proxy]] table, got an empty array")
            return ()
        checked = [
            (f"{path}[{i}]", self.proxy(raw, f"{path}[{i}]", table_size)) for i, raw in enumerate(value)
        ]
        proxies = [(item_path, proxy) for item_path, proxy in checked if proxy is not None]
        names: dict[str, str] = {}
        listeners: dict[tuple[str, int, str], str] = {}
        for item_path, proxy in proxies:
            if proxy.name:
                if proxy.name in names:
                    self.error(
                        f"{item_path}.name",
                        f"duplicate proxy name {json.dumps(proxy.name)} (also used by {names[proxy.name]})",
                    )
                names.setdefault(proxy.name, item_path)
            if proxy.vip and proxy.port:
                listener = (proxy.vip, proxy.port, proxy.protocol)
                if listener in listeners:
                    self.error(
                        item_path,
                        f"{proxy.vip}:{proxy.port}/{proxy.protocol} is also served by {listeners[listener]}",
                    )
                listeners.setdefault(listener, item_path)
        return tuple(proxy for _, proxy in proxies)

    # -- settings -------------------------------------------------------------------------------

    def settings(self, value: Any, path: str) -> Settings:
        table = self.table(value, path, _SETTINGS_KEYS)
        if table is None:
            return Settings()
        defaults = Settings()
        table_size = self.integer(
            table, "table_size", path, defaults.table_size, low=TABLE_SIZE_MIN, high=TABLE_SIZE_MAX
        )
        if not _is_prime(table_size):
            self.error(_join(path, "table_size"), f"expected a prime number, got {table_size}")
            table_size = defaults.table_size
        control_socket = self.file_path(table, "control_socket", path)
        if control_socket is not None and len(control_socket.encode()) > 107:
            # sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
            self.error(_join(path, "control_socket"), "a unix socket path must be at most 107 bytes long")
            control_socket = None
        return Settings(
            max_connections=self.integer(
                table,
                "max_connections",
                path,
                defaults.max_connections,
                low=MAX_CONNECTIONS_MIN,
                high=MAX_CONNECTIONS_MAX,
            ),
            tcp_timeout_s=self.number(table, "tcp_timeout_s", path, defaults.tcp_timeout_s),
            tcp_closing_timeout_s=self.number(
                table, "tcp_closing_timeout_s", path, defaults.tcp_closing_timeout_s
            ),
            udp_timeout_s=self.number(table, "udp_timeout_s", path, defaults.udp_timeout_s),
            drain_timeout_s=self.number(table, "drain_timeout_s", path, defaults.drain_timeout_s),
            control_socket=control_socket or defaults.control_socket,
            table_size=table_size,
            xdp_mode=self.choice(table, "xdp_mode", path, XDP_MODES, defaults.xdp_mode),
            sweep_interval_s=self.number(table, "sweep_interval_s", path, defaults.sweep_interval_s),
            metrics=self.metrics(table.get("metrics", {}), _join(path, "metrics")),
            dns=self.dns(table.get("dns", {}), _join(path, "dns")),
            access_log=self.access_log(table.get("access_log", {}), _join(path, "access_log")),
            console=self.console(table.get("console", {}), _join(path, "console")),
        )

    def metrics(self, value: Any, path: str) -> MetricsConfig:
        table = self.table(value, path, _METRICS_KEYS)
        defaults = MetricsConfig()
        if table is None:
            return defaults
        listen = self.string(table, "listen", path)
        if listen is not None:
            problem = _listen_problem(listen)
            if problem is not None:
                self.error(_join(path, "listen"), f"{problem}, got {_describe(listen)}")
                listen = None
        return MetricsConfig(
            enabled=self.boolean(table, "enabled", path, defaults.enabled),
            listen=listen or defaults.listen,
            path=self.url_path(table, "path", path) or defaults.path,
        )

    def url_path(self, table: dict[str, Any], key: str, path: str) -> str | None:
        text = self.string(table, key, path)
        if text is None:
            return None
        if not text.startswith("/") or _HAS_CONTROL_OR_SPACE.search(text):
            self.error(
                _join(path, key), f'expected a path starting with "/" and no spaces, got {_describe(text)}'
            )
            return None
        return text

    def file_path(self, table: dict[str, Any], key: str, path: str) -> str | None:
        text = self.string(table, key, path)
        if text is not None and "\x00" in text:
            self.error(_join(path, key), "a file path must not contain NUL characters")
            return None
        return text

    def dns(self, value: Any, path: str) -> DnsConfig:
        table = self.table(value, path, _DNS_KEYS)
        if table is None or "nameservers" not in table:
            return DnsConfig()
        servers = self.items(table["nameservers"], _join(path, "nameservers"), self.nameserver)
        return DnsConfig(nameservers=tuple(server for _, server in servers))

    def nameserver(self, value: Any, path: str) -> str | None:
        text = self.check_string(value, path)
        if text is None:
            return None
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            self.error(path, f"expected an IPv4 or IPv6 address, got {_describe(text)}")
            return None

    def access_log(self, value: Any, path: str) -> AccessLogConfig:
        table = self.table(value, path, _ACCESS_LOG_KEYS)
        defaults = AccessLogConfig()
        if table is None:
            return defaults
        return AccessLogConfig(
            format=self.choice(table, "format", path, ACCESS_LOG_FORMATS, defaults.format),
            stdout=self.boolean(table, "stdout", path, defaults.stdout),
            file=self.file_path(table, "file", path),
            max_bytes=self.integer(table, "max_bytes", path, defaults.max_bytes, low=1024),
            max_files=self.integer(table, "max_files", path, defaults.max_files, low=1),
            log_new=self.boolean(table, "log_new", path, defaults.log_new),
        )

    def console(self, value: Any, path: str) -> ConsoleConfig:
        table = self.table(value, path, _CONSOLE_KEYS)
        if table is None:
            return ConsoleConfig()
        return ConsoleConfig(refresh_s=self.number(table, "refresh_s", path, ConsoleConfig().refresh_s))

    # -- proxies --------------------------------------------------------------------------------

    def proxy(self, value: Any, path: str, table_size: int) -> ProxyConfig | None:
        table = self.table(value, path, _PROXY_KEYS)
        if table is None:
            return None
        name = self.string(table, "name", path, required=True, expect="a unique proxy name")
        if name is not None and not _PROXY_NAME.fullmatch(name):
            self.error(_join(path, "name"), f"expected 1 to 64 of A-Z a-z 0-9 _ . -, got {_describe(name)}")
            name = None
        vip = self.string(table, "vip", path, required=True, expect="an IPv4 address")
        if vip is not None:
            problem = _ipv4_problem(vip)
            if problem is not None:
                self.error(_join(path, "vip"), f"{problem}, got {_describe(vip)}")
                vip = None
            else:
                vip = str(ipaddress.IPv4Address(vip))
        interfaces = self.interfaces(table, path)
        port = self.port(table, "port", path, required=True)
        protocol = self.choice(table, "protocol", path, PROTOCOLS, "tcp")
        algorithm = self.choice(table, "algorithm", path, ALGORITHMS, "weighted-random")
        interval_ms = self.integer(table, "least_connections_interval_ms", path, 500)
        health = self.health(table["health"], _join(path, "health")) if "health" in table else None
        circuit_breaker = (
            self.circuit_breaker(table["circuit_breaker"], _join(path, "circuit_breaker"))
            if "circuit_breaker" in table
            else None
        )
        rate_limit = (
            self.rate_limit(table["rate_limit"], _join(path, "rate_limit")) if "rate_limit" in table else None
        )
        return ProxyConfig(
            name=name or "",
            interfaces=interfaces,
            vip=vip or "",
            port=port or 0,
            protocol=protocol,
            algorithm=algorithm,
            backends=self.backend_group(table, "backend", path, table_size, required=True),
            source_routes=self.source_routes(table, path, table_size),
            health=health,
            circuit_breaker=circuit_breaker,
            rate_limit=rate_limit,
            least_connections_interval_ms=interval_ms,
        )

    def source_routes(
        self, table: dict[str, Any], path: str, table_size: int
    ) -> tuple[SourceRouteConfig, ...]:
        if "source_route" not in table:
            return ()
        routes = self.items(
            table["source_route"],
            _join(path, "source_route"),
            lambda raw, route_path: self.source_route(raw, route_path, table_size),
        )
        first_path: dict[str, str] = {}
        result: list[SourceRouteConfig] = []
        for route_path, route in routes:
            if route.cidr in first_path:
                self.error(
                    f"{route_path}.cidr",
                    f"duplicate route {route.cidr} (already at {first_path[route.cidr]})",
                )
                continue
            first_path[route.cidr] = route_path
            result.append(route)
        return tuple(result)

    def interfaces(self, table: dict[str, Any], path: str) -> tuple[str, ...]:
        value = self.raw(
            table, "interfaces", path, required=True, expect='an array of interface names, e.g. ["eth0"]'
        )
        if value is _MISSING:
            return ()
        key_path = _join(path, "interfaces")
        names = self.items(value, key_path, self.interface)
        if isinstance(value, list) and not value:
            self.error(key_path, 'expected at least one interface name, e.g. ["eth0"], got an empty array')
        result: list[str] = []
        for item_path, name in names:
            if name in result:
                self.error(item_path, f"duplicate interface {json.dumps(name)}")
            else:
                result.append(name)
        return tuple(result)

    def interface(self, value: Any, path: str) -> str | None:
        text = self.check_string(value, path)
        if text is None:
            return None
        problem = _ifname_problem(text)
        if problem is not None:
            self.error(path, f"{problem}, got {_describe(text)}")
            return None
        return text

    def backend_group(
        self, table: dict[str, Any], key: str, path: str, table_size: int, *, required: bool
    ) -> tuple[BackendConfig, ...]:
        value = self.raw(table, key, path, required, "at least one backend")
        if value is _MISSING:
            return ()
        key_path = _join(path, key)
        if isinstance(value, list) and not value:
            self.error(key_path, "expected at least one backend, got an empty array")
            return ()
        backends = self.items(value, key_path, self.backend)
        first_path: dict[str, str] = {}
        result: list[BackendConfig] = []
        for item_path, backend in backends:
            if backend.key in first_path:
                self.error(
                    item_path, f"duplicate backend {backend.key} (already at {first_path[backend.key]})"
                )
                continue
            first_path[backend.key] = item_path
            result.append(backend)
        if len(result) > table_size:
            # Every selection algorithm spreads a group over table_size slots.
            self.error(key_path, f"{len(result)} backends do not fit settings.table_size = {table_size}")
        return tuple(result)

    def backend(self, value: Any, path: str) -> BackendConfig | None:
        table = self.table(value, path, _BACKEND_KEYS)
        if table is None:
            return None
        issues_before = len(self.issues)
        weight = self.integer(table, "weight", path, 1)
        has_address, has_host = "address" in table, "host" in table
        if has_address and has_host:
            self.error(path, "give either address or host + port, not both")
        elif not has_address and not has_host:
            self.error(path, 'missing address: give address = "ip:port" or host + port')

        address: Endpoint | None = None
        host: str | None = None
        port: int | None = None
        if has_address:
            text = self.string(table, "address", path)
            if text is not None:
                address, problem = _parse_endpoint(text)
                if problem is not None:
                    self.error(_join(path, "address"), f"{problem}, got {_describe(text)}")
            for host_only in ("port", "dns_refresh_s"):
                if host_only in table:
                    self.error(
                        _join(path, host_only), f"{host_only} is only used with host, not with address"
                    )
        if has_host and not has_address:
            host = self.string(table, "host", path)
            if host is not None:
                problem = _dns_name_problem(host)
                if problem is not None:
                    self.error(_join(path, "host"), f"{problem}, got {_describe(host)}")
                host = host.lower().rstrip(".")
            port = self.port(table, "port", path, required=True)
        dns_refresh_s = self.number(table, "dns_refresh_s", path, 30.0)
        if len(self.issues) != issues_before:
            return None
        return BackendConfig(
            weight=weight, address=address, host=host, port=port, dns_refresh_s=dns_refresh_s
        )

    def source_route(self, value: Any, path: str, table_size: int) -> SourceRouteConfig | None:
        table = self.table(value, path, _ROUTE_KEYS)
        if table is None:
            return None
        cidr: str | None = None
        text = self.string(table, "cidr", path, required=True, expect='an IPv4 network like "192.168.0.0/16"')
        if text is not None:
            try:
                cidr = str(ipaddress.IPv4Network(text, strict=True))
            except ValueError as exc:
                reason = "host bits set" if "host bits set" in str(exc) else "not a valid IPv4 network"
                self.error(
                    _join(path, "cidr"),
                    f'expected an IPv4 network like "192.168.0.0/16": {reason}, got {_describe(text)}',
                )
        backends = self.backend_group(table, "backends", path, table_size, required=True)
        if cidr is None:
            return None
        return SourceRouteConfig(cidr=cidr, backends=backends)

    def health(self, value: Any, path: str) -> HealthConfig | None:
        table = self.table(value, path, _HEALTH_KEYS)
        if table is None:
            return None
        check_type = self.raw(table, "type", path, required=True, expect='"tcp" or "http"')
        kind = self.choice(table, "type", path, HEALTH_TYPES, "") if check_type is not _MISSING else ""
        if kind == "tcp":
            for key in _HTTP_ONLY_HEALTH_KEYS:
                if key in table:
                    self.error(
                        _join(path, key), f'{key} is only valid with type = "http", not with type = "tcp"'
                    )
        defaults = HealthConfig(type=kind)
        http_host = self.string(table, "http_host", path)
        if http_host is not None and _HAS_CONTROL_OR_SPACE.search(http_host):
            self.error(
                _join(path, "http_host"), f"expected a host name without spaces, got {_describe(http_host)}"
            )
        interval_ms = self.integer(table, "interval_ms", path, defaults.interval_ms)
        # Without an explicit timeout, a short interval shortens the default timeout with it.
        timeout_ms = self.integer(table, "timeout_ms", path, min(defaults.timeout_ms, interval_ms))
        if timeout_ms > interval_ms:
            self.error(
                _join(path, "timeout_ms"),
                f"must not be larger than interval_ms ({interval_ms}), got {timeout_ms}",
            )
        expected_status = defaults.expected_status
        if "expected_status" in table:
            key_path = _join(path, "expected_status")
            codes = self.items(
                table["expected_status"],
                key_path,
                lambda raw, item_path: (
                    self.check_int(
                        raw, item_path, 0, low=100, high=599, expect="an HTTP status code from 100 to 599"
                    )
                    or None
                ),
            )
            if isinstance(table["expected_status"], list) and not table["expected_status"]:
                self.error(key_path, "expected at least one status code, got an empty array")
            expected_status = tuple(code for _, code in codes)
        return HealthConfig(
            type=kind,
            path=self.url_path(table, "path", path) or defaults.path,
            http_host=http_host,
            interval_ms=interval_ms,
            timeout_ms=timeout_ms,
            rise=self.integer(table, "rise", path, defaults.rise),
            fall=self.integer(table, "fall", path, defaults.fall),
            expected_status=expected_status,
            port=self.port(table, "port", path, required=False),
            slow_start_s=self.number(table, "slow_start_s", path, defaults.slow_start_s, positive=False),
        )

    def circuit_breaker(self, value: Any, path: str) -> CircuitBreakerConfig | None:
        table = self.table(value, path, _CIRCUIT_KEYS)
        if table is None:
            return None
        defaults = CircuitBreakerConfig()
        error_rate = self.number(table, "error_rate", path, defaults.error_rate, high=1.0)
        return CircuitBreakerConfig(
            error_rate=error_rate,
            min_requests=self.integer(table, "min_requests", path, defaults.min_requests),
            window_s=self.number(table, "window_s", path, defaults.window_s),
            open_s=self.number(table, "open_s", path, defaults.open_s),
            half_open_successes=self.integer(
                table, "half_open_successes", path, defaults.half_open_successes
            ),
            syn_timeout_ms=self.integer(table, "syn_timeout_ms", path, defaults.syn_timeout_ms),
        )

    def rate_limit(self, value: Any, path: str) -> RateLimitConfig | None:
        table = self.table(value, path, _RATE_LIMIT_KEYS)
        if table is None:
            return None
        buckets = {
            key: self.token_bucket(table[key], _join(path, key)) if key in table else None
            for key in _RATE_LIMIT_KEYS
        }
        return RateLimitConfig(per_source=buckets["per_source"], per_backend=buckets["per_backend"])

    def token_bucket(self, value: Any, path: str) -> TokenBucket | None:
        table = self.table(value, path, _BUCKET_KEYS)
        if table is None:
            return None
        rate = self.integer(table, "rate", path, 1, required=True)
        # burst defaults to one second's worth; it may be smaller than rate (strict smoothing).
        burst = self.integer(table, "burst", path, rate)
        return TokenBucket(rate=rate, burst=burst)


# ------------------------------------------------------------------------------------- TOML writer


def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _backend_lines(backend: BackendConfig) -> list[str]:
    if backend.address is not None:
        return [f"address = {_toml_string(str(backend.address))}", f"weight = {backend.weight}"]
    return [
        f"host = {_toml_string(backend.host or '')}",
        f"port = {backend.port}",
        f"weight = {backend.weight}",
        f"dns_refresh_s = {backend.dns_refresh_s!r}",
    ]


def config_to_toml(cfg: Config) -> str:
    """Write a Config as TOML that parse_config reads back to an equal Config (every value explicit)."""
    s = cfg.settings
    lines = ["[settings]"]
    for key in _SETTINGS_KEYS[:9]:
        lines.append(f"{key} = {_toml_value(getattr(s, key))}")
    lines += ["", "[settings.metrics]"]
    lines += [f"{key} = {_toml_value(getattr(s.metrics, key))}" for key in _METRICS_KEYS]
    lines += ["", "[settings.dns]", f"nameservers = {_toml_value(s.dns.nameservers)}"]
    lines += ["", "[settings.access_log]"]
    for key in _ACCESS_LOG_KEYS:
        value = getattr(s.access_log, key)
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    lines += ["", "[settings.console]", f"refresh_s = {s.console.refresh_s!r}"]

    for proxy in cfg.proxies:
        lines += ["", "[[proxy]]"]
        for key in (
            "name",
            "interfaces",
            "vip",
            "port",
            "protocol",
            "algorithm",
            "least_connections_interval_ms",
        ):
            lines.append(f"{key} = {_toml_value(getattr(proxy, key))}")
        if proxy.health is not None:
            health = proxy.health
            lines += ["", "[proxy.health]"]
            keys = [key for key in _HEALTH_KEYS if health.type == "http" or key not in _HTTP_ONLY_HEALTH_KEYS]
            for key in keys:
                value = getattr(health, key)
                if value is not None:
                    lines.append(f"{key} = {_toml_value(value)}")
        if proxy.circuit_breaker is not None:
            lines += ["", "[proxy.circuit_breaker]"]
            lines += [f"{key} = {_toml_value(getattr(proxy.circuit_breaker, key))}" for key in _CIRCUIT_KEYS]
        if proxy.rate_limit is not None:
            lines += ["", "[proxy.rate_limit]"]
            for key in _RATE_LIMIT_KEYS:
                bucket = getattr(proxy.rate_limit, key)
                if bucket is not None:
                    lines.append(f"{key} = {{ rate = {bucket.rate}, burst = {bucket.burst} }}")
        for backend in proxy.backends:
            lines += ["", "[[proxy.backend]]", *_backend_lines(backend)]
        for route in proxy.source_routes:
            lines += ["", "[[proxy.source_route]]", f"cidr = {_toml_string(route.cidr)}"]
            for backend in route.backends:
                lines += ["", "[[proxy.source_route.backends]]", *_backend_lines(backend)]
    return "\n".join(lines) + "\n"
