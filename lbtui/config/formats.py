# SPDX-License-Identifier: Apache-2.0
"""The string formats of config values: each checks a non-empty string and converts it.

A `Format` raises `Invalid` with the whole message; its `name` keys the config fuzzer's sample
strings (tests/fuzz/configs.py), so a new format needs samples there.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lbtui import addresses
from lbtui.config.errors import Invalid, describe

_PROXY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PORT_TEXT = re.compile(r"[0-9]{1,5}")
_DNS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_HAS_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes including the terminating NUL


@dataclass(frozen=True)
class Endpoint:
    ip: str  # canonical text (lbtui/addresses.py)
    port: int

    def __str__(self) -> str:
        return addresses.format_endpoint(self.ip, self.port)

    @property
    def family(self) -> int:
        return addresses.family(self.ip)


@dataclass(frozen=True)
class Format:
    name: str  # the fuzzer's samples are keyed by it
    expect: str  # what a missing required key of this format should be
    parse: Callable[[str], Any]  # the value, or raises Invalid
    write: Callable[[Any], str] = str  # back to the TOML string


def _ip_problem(text: str) -> str | None:
    """Why `text` is not a usable unicast IPv4 or IPv6 address, or None if it is one."""
    try:
        addresses.parse_ip(text, unicast=True)
    except addresses.AddressError as problem:
        return str(problem)
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
    return 'expected a DNS name, not an IP address (write address = "ip:port" or "[ipv6]:port" instead)'


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


def _endpoint_problem(text: str) -> str | None:
    try:
        addresses.parse_endpoint(text, unicast=True)
    except addresses.AddressError as problem:
        return str(problem)
    return None


def _checked(problem: Callable[[str], str | None], convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser from a problem finder: Invalid("<problem>, got <text>"), else the converted text."""

    def parse(text: str) -> Any:
        found = problem(text)
        if found is not None:
            raise Invalid(f"{found}, got {describe(text)}")
        return convert(text)

    return parse


def _same(text: str) -> str:
    return text


def _endpoint(text: str) -> Endpoint:
    return Endpoint(*addresses.parse_endpoint(text))


def _cidr(text: str) -> str:
    try:
        return addresses.parse_network(text)
    except addresses.AddressError as problem:
        raise Invalid(
            f'expected a network like "192.168.0.0/16" or "fd00:30::/48": {problem}, got {describe(text)}'
        ) from None


def _nameserver(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise Invalid(f"expected an IPv4 or IPv6 address, got {describe(text)}") from None


def _file_path(text: str) -> str:
    if "\x00" in text:
        raise Invalid("a file path must not contain NUL characters")
    return text


_GROUP_NAME = re.compile(r"[0-9]{1,9}|[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def _socket_path(text: str) -> str:
    if len(_file_path(text).encode()) > _SUN_PATH_MAX:
        raise Invalid(f"a unix socket path must be at most {_SUN_PATH_MAX} bytes long")
    return text


def _syslog_problem(text: str) -> str | None:
    expected = 'expected a socket path ("/dev/log"), "host:port" (UDP) or "tcp://host:port"'
    if text.startswith("/"):
        return None if len(text.encode()) <= _SUN_PATH_MAX and "\x00" not in text else expected
    return None if _listen_problem(text.removeprefix("udp://").removeprefix("tcp://")) is None else expected


PROXY_NAME = Format(
    "name",
    "a unique proxy name",
    _checked(lambda t: None if _PROXY_NAME.fullmatch(t) else "expected 1 to 64 of A-Z a-z 0-9 _ . -", _same),
)
IP_ADDRESS = Format("ip", "an IPv4 or IPv6 address", _checked(_ip_problem, addresses.parse_ip))
ENDPOINT = Format("endpoint", 'an "ip:port" or "[ipv6]:port"', _checked(_endpoint_problem, _endpoint))
DNS_NAME = Format("host", "a DNS name", _checked(_dns_name_problem, lambda t: t.lower().rstrip(".")))
HTTP_HOST = Format(
    "httphost",
    "a host name",
    _checked(
        lambda t: "expected a host name without spaces" if _HAS_CONTROL_OR_SPACE.search(t) else None, _same
    ),
)
IFNAME = Format("ifname", "an interface name", _checked(_ifname_problem, _same))
CIDR = Format("cidr", 'a network like "192.168.0.0/16" or "fd00:30::/48"', _cidr)
LISTEN = Format("listen", '"host:port"', _checked(_listen_problem, _same))
URL_PATH = Format(
    "urlpath",
    'a path starting with "/"',
    _checked(
        lambda t: (
            None
            if t.startswith("/") and not _HAS_CONTROL_OR_SPACE.search(t)
            else 'expected a path starting with "/" and no spaces'
        ),
        _same,
    ),
)
FILE_PATH = Format("file", "a file path", _file_path)
SOCKET_PATH = Format("socket", "a unix socket path", _socket_path)
GROUP = Format(
    "group",
    "a group name or number",
    _checked(
        lambda t: None if _GROUP_NAME.fullmatch(t) else "expected a group name (like lbtui-ro) or a number",
        _same,
    ),
)
NAMESERVER = Format("nameserver", "an IPv4 or IPv6 address", _nameserver)
SYSLOG = Format("syslog", 'a socket path, "host:port" or "tcp://host:port"', _checked(_syslog_problem, _same))
