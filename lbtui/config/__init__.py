# SPDX-License-Identifier: Apache-2.0
"""TOML configuration: parsing, strict validation and the frozen value types the engine runs on.

The format is documented by configs/full.toml (every key, with an example) and README.md's
Configuration section. Validation never stops at the first problem: every issue is collected with
the file, the key path (`proxy[0].backend[1].weight`) and what was expected, and all of them are
raised together as one `ConfigError`.

Every key is declared once, on the field of its frozen dataclass in schema.py: its kind, range or
choices and one-line doc in the `Annotated` metadata (kinds: keys.py), its default as the field's
default. Validation (validate.py), unknown-key detection, the TOML writer (write.py) and the config
fuzzer's schema (tests/fuzz/configs.py) all derive from that declaration. Adding a key is one line
there plus its line in configs/full.toml (a test checks that full.toml shows every key), e.g.:

    @dataclass(frozen=True)
    class Settings:
        ...
        state_file: Annotated[str | None, Text("runtime overrides survive restarts here", FILE_PATH)] = None

A rule that involves several keys of a table (either address or host; timeout_ms <= interval_ms)
is a function of that table's class in validate.py's RULES; uniqueness across an array of tables
(proxy names, backends) is declared with `Unique` on the array's key.
"""

from lbtui.config.errors import FILE_LEVEL, ConfigError, ConfigIssue, join_key
from lbtui.config.formats import Endpoint
from lbtui.config.keys import INT_MAX, MAX_SECONDS
from lbtui.config.load import MAX_CONFIG_BYTES, load_config, load_regular_config, parse_config
from lbtui.config.schema import (
    ACCESS_LOG_FORMATS,
    ALGORITHMS,
    FAST_PATH_MODES,
    FORWARDING_MODES,
    HEALTH_TYPES,
    MAX_CONNECTIONS_MAX,
    MAX_CONNECTIONS_MIN,
    PROTOCOLS,
    TABLE_SIZE_MAX,
    TABLE_SIZE_MIN,
    XDP_MODES,
    AccessLogConfig,
    AnnounceConfig,
    BackendConfig,
    CircuitBreakerConfig,
    Config,
    ConsoleConfig,
    DnsConfig,
    HealthConfig,
    MetricsConfig,
    ProxyConfig,
    RateLimitConfig,
    Settings,
    SourceRouteConfig,
    TokenBucket,
)
from lbtui.config.write import config_to_toml

__all__ = [
    "ACCESS_LOG_FORMATS",
    "ALGORITHMS",
    "FORWARDING_MODES",
    "FILE_LEVEL",
    "HEALTH_TYPES",
    "INT_MAX",
    "MAX_CONFIG_BYTES",
    "MAX_CONNECTIONS_MAX",
    "MAX_CONNECTIONS_MIN",
    "MAX_SECONDS",
    "PROTOCOLS",
    "TABLE_SIZE_MAX",
    "TABLE_SIZE_MIN",
    "FAST_PATH_MODES",
    "XDP_MODES",
    "AccessLogConfig",
    "AnnounceConfig",
    "BackendConfig",
    "CircuitBreakerConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ConsoleConfig",
    "DnsConfig",
    "Endpoint",
    "HealthConfig",
    "MetricsConfig",
    "ProxyConfig",
    "RateLimitConfig",
    "Settings",
    "SourceRouteConfig",
    "TokenBucket",
    "config_to_toml",
    "join_key",
    "load_config",
    "load_regular_config",
    "parse_config",
]
