# SPDX-License-Identifier: Apache-2.0
"""Validation: walks a parsed TOML document along the declarations (schema.py), collecting every issue.

Each table is checked key by key (unknown keys, missing required ones, each value by its kind), then by
the rules of its class below: what involves several keys of one table. A table with an issue is not
built, but its valid values stay visible (`Checked.values`), so the rules of its table and of arrays
above it still run and report their own issues: one bad key never hides another problem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lbtui import addresses
from lbtui.config.errors import ConfigIssue, describe, join_key
from lbtui.config.keys import INVALID, NO_DEFAULT, Checked, Table, declared_keys, key_of
from lbtui.config.schema import (
    AnnounceConfig,
    BackendConfig,
    Config,
    HealthConfig,
    ProxyConfig,
    ReadOnlyConfig,
    Settings,
    SourceRouteConfig,
    TokenBucket,
)


class Validator:
    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[ConfigIssue] = []
        # settings.table_size once [settings] is checked; every backend group must fit it
        self.table_size: int = Settings.table_size

    def error(self, key_path: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, key_path, message))

    def document(self, document: dict[str, Any]) -> Config | None:
        checked = self.table(Config, document, "")
        return None if checked is None else checked.value

    def table(self, cls: type, value: Any, path: str) -> Checked | None:
        """Check one table against the declaration of `cls`; None if it is not a table at all."""
        if not isinstance(value, dict):
            self.error(path, f"expected a table, got {describe(value)}")
            return None
        issues_before = len(self.issues)
        declared = declared_keys(cls)
        allowed = [d.name for d in declared]
        for name in value:
            if name not in allowed:
                self.error(join_key(path, name), f"unknown key {name!r} (allowed: {', '.join(allowed)})")
        checked = Checked(path, value)
        for d in declared:
            key_path = join_key(path, d.name)
            if d.name not in value:
                if d.key.required:
                    self.error(key_path, d.key.missing_message())
                elif d.default is NO_DEFAULT and isinstance(d.key, Table):
                    checked.values[d.field] = d.key.check({}, key_path, self)  # a table of defaults
                continue
            refusal = d.key.not_with.refusal(value, d.name) if d.key.not_with is not None else None
            if refusal is not None:
                self.error(key_path, refusal)
            converted = d.key.check(value[d.name], key_path, self)  # refused or not: report what is wrong
            if converted is not INVALID and refusal is None:
                checked.values[d.field] = converted
        rule = RULES.get(cls)
        if rule is not None:
            rule(checked, self)
        if len(self.issues) == issues_before:
            checked.value = cls(**checked.values)
        return checked


# ---- rules: what involves more than one key -----------------------------------------------------


def _settings(table: Checked, walk: Validator) -> None:
    walk.table_size = table.values.get("table_size", Settings.table_size)
    read_only = table.values.get("read_only")
    control = table.values.get("control_socket", Settings.control_socket)
    if isinstance(read_only, ReadOnlyConfig) and read_only.socket is not None:
        if read_only.socket == control:
            walk.error(f"{table.at('read_only')}.socket", "must differ from settings.control_socket")


def _read_only(table: Checked, walk: Validator) -> None:
    # a read-only socket open to nobody but root would be pointless; one open to all, a leak
    if ("socket" in table.raw) != ("group" in table.raw):
        given, missing = ("socket", "group") if "socket" in table.raw else ("group", "socket")
        walk.error(table.at(given), f"needs {missing} too: the read-only socket takes both")


def _group_fits(table: Checked, walk: Validator, toml_key: str) -> None:
    # Every selection algorithm spreads a group over table_size slots.
    backends = table.values.get("backends", ())
    if len(backends) > walk.table_size:
        walk.error(
            table.at(toml_key), f"{len(backends)} backends do not fit settings.table_size = {walk.table_size}"
        )


def _proxy(table: Checked, walk: Validator) -> None:
    _group_fits(table, walk, "backend")
    _one_family(table, walk)
    if table.values.get("forwarding") == "ipip":
        _ipip_family(table, walk)
        _dsr_ports(table, walk)
    elif "ipip_source" in table.raw:
        walk.error(table.at("ipip_source"), 'is only used with forwarding = "ipip"')


def _one_family(table: Checked, walk: Validator) -> None:
    """A proxy's VIP, static backends and source routes are one address family (the data path
    rewrites addresses in place; it does not translate between IPv4 and IPv6)."""
    vip = table.values.get("vip")
    if vip is None:
        return
    want = addresses.family(vip)
    vip_shown = f"{table.at('vip')} = {describe(vip)}"

    def check(path: str, value: Any, what: str, parse: Callable[[str], str]) -> None:
        try:
            found = addresses.family(parse(value)) if isinstance(value, str) else want
        except ValueError:
            return  # reported by the key's own check
        if found != want:
            walk.error(
                path,
                f"{addresses.FAMILY_NAMES[found]} {what} for the {addresses.FAMILY_NAMES[want]} VIP "
                f"({vip_shown}): a proxy's VIP, backends and source routes are one address family",
            )

    def endpoint_ip(text: str) -> str:
        return addresses.parse_endpoint(text)[0]

    def network_ip(text: str) -> str:
        return addresses.parse_network(text).partition("/")[0]

    for path, backend in _raw_backends(table):
        check(join_key(path, "address"), backend.get("address"), "backend", endpoint_ip)
    routes = table.raw.get("source_route")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, dict):
            path = f"{table.at('source_route')}[{index}]"
            check(join_key(path, "cidr"), route.get("cidr"), "network", network_ip)


def _raw_backends(table: Checked) -> list[tuple[str, dict[str, Any]]]:
    """A proxy's raw backend tables (static ones, then each source route's) with their paths. Read
    from the raw tables: the checked arrays leave out refused entries, so their indexes shift."""
    groups = [(table.at("backend"), table.raw.get("backend"))]
    routes = table.raw.get("source_route")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, dict):
            groups.append(
                (join_key(f"{table.at('source_route')}[{index}]", "backends"), route.get("backends"))
            )
    return [
        (f"{path}[{index}]", backend)
        for path, backends in groups
        for index, backend in enumerate(backends if isinstance(backends, list) else [])
        if isinstance(backend, dict)
    ]


def _ipip_family(table: Checked, walk: Validator) -> None:
    # The data path encapsulates IPv4 in IPv4 only (bpf/lb_encap.h): no IPv6-in-IPv6 (ip6ip6) yet.
    for key in ("vip", "ipip_source"):
        value = table.values.get(key)
        if isinstance(value, str) and addresses.family(value) != 4:
            walk.error(
                table.at(key),
                f'forwarding = "ipip" is IPv4 only (IPv4 in IPv4), got the IPv6 address {value}; '
                'use forwarding = "nat" for IPv6 proxies',
            )


def _dsr_ports(table: Checked, walk: Validator) -> None:
    # In DSR the client's packet reaches the backend unchanged: the backend listens on the VIP's port.
    port = table.values.get("port")
    if port is None:
        return
    for path, backend in _raw_backends(table):
        backend_port = _raw_port(backend)
        if backend_port is not None and backend_port != port:
            walk.error(
                path,
                f'forwarding = "ipip" needs every backend on the VIP\'s port {port} '
                f"(direct server return does not rewrite it), got port {backend_port}",
            )


def _raw_port(backend: dict[str, Any]) -> int | None:
    """The port of a raw [[proxy.backend]] table; None when it is not valid (reported elsewhere)."""
    if isinstance(backend.get("address"), str):
        try:
            return addresses.parse_endpoint(backend["address"])[1]
        except ValueError:
            return None
    port = backend.get("port")
    return port if isinstance(port, int) and not isinstance(port, bool) else None


def _announce(table: Checked, walk: Validator) -> None:
    if table.values.get("table") in (253, 254, 255):
        walk.error(
            table.at("table"),
            f"table {table.values['table']} is the kernel's local/main/default table: use one of lbtui's own",
        )


def _source_route(table: Checked, walk: Validator) -> None:
    _group_fits(table, walk, "backends")


def _backend(table: Checked, walk: Validator) -> None:
    has_address, has_host = "address" in table.raw, "host" in table.raw
    if has_address and has_host:
        walk.error(table.path, "give either address or host + port, not both")
    elif not has_address and not has_host:
        walk.error(table.path, 'missing address: give address = "ip:port" or host + port')
    elif has_host and "port" not in table.raw:
        walk.error(table.at("port"), key_of(BackendConfig, "port").key.missing_message())


def _health(table: Checked, walk: Validator) -> None:
    values = table.values
    interval_ms = values.get("interval_ms", HealthConfig.interval_ms)
    if "timeout_ms" not in table.raw:
        # Without an explicit timeout, a short interval shortens the default timeout with it.
        values["timeout_ms"] = min(HealthConfig.timeout_ms, interval_ms)
    elif values.get("timeout_ms", 0) > interval_ms:
        walk.error(
            table.at("timeout_ms"),
            f"must not be larger than interval_ms ({interval_ms}), got {values['timeout_ms']}",
        )


def _token_bucket(table: Checked, walk: Validator) -> None:
    # burst defaults to one second's worth; it may be smaller than rate (strict smoothing).
    if "burst" not in table.raw and "rate" in table.values:
        table.values["burst"] = table.values["rate"]


RULES: dict[type, Callable[[Checked, Validator], None]] = {
    Settings: _settings,
    AnnounceConfig: _announce,
    ReadOnlyConfig: _read_only,
    ProxyConfig: _proxy,
    SourceRouteConfig: _source_route,
    BackendConfig: _backend,
    HealthConfig: _health,
    TokenBucket: _token_bucket,
}
