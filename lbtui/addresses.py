# SPDX-License-Identifier: Apache-2.0
"""IP addresses and endpoints as lbtui writes and reads them, in one place.

An endpoint is written "ip:port" for IPv4 and "[ip]:port" for IPv6 (the bracketed form of RFC 3986
and of every URL), everywhere: the configuration, `lbtui ctl`, the console, the control protocol,
metrics labels, access logs and events. Addresses are kept in their canonical text (lower case,
compressed IPv6), so the same address always compares and prints the same.

What is refused and why: a zone id ("fe80::1%eth0") names an interface of this host, which a load
balancer's VIP or backend cannot carry; an IPv4-mapped IPv6 address ("::ffff:10.0.0.1") is an IPv4
address in disguise, to be written as IPv4; an IPv6 address without brackets before a port is
ambiguous ("fd00::1:80" is itself an address).
"""

from __future__ import annotations

import ipaddress

IPV4 = 4
IPV6 = 6
FAMILY_NAMES = {IPV4: "IPv4", IPV6: "IPv6"}
# The longest endpoint text: console columns that show endpoints are at most this wide.
ENDPOINT_MAX_WIDTH = len("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
IP_MAX_WIDTH = len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")

_ENDPOINT_FORMS = '"ip:port" (IPv4) or "[ip]:port" (IPv6)'


class AddressError(ValueError):
    """The text is not an address (or endpoint) lbtui accepts; the message says why."""


def family(ip: str) -> int:
    """IPV4 or IPV6 of an address text (any valid form); ValueError if it is not an address."""
    return ipaddress.ip_address(ip).version


def family_name(ip: str) -> str:
    """ "IPv4" or "IPv6"."""
    return FAMILY_NAMES[family(ip)]


def parse_ip(text: str, unicast: bool = False) -> str:
    """The canonical text of an IPv4 or IPv6 address; AddressError with the reason otherwise.

    unicast: also refuse what can never be a VIP or a backend (unspecified, multicast, the IPv4
    broadcast address, IPv6 link-local, which needs a zone)."""
    if "%" in text:
        zone = text[text.index("%") :]
        raise AddressError(f"zone ids ({zone}) are not supported: give an address without one")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise AddressError("expected an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise AddressError(
            f"{text} is an IPv4-mapped IPv6 address: write the IPv4 address {address.ipv4_mapped}"
        )
    if unicast:
        problem = _not_unicast(address)
        if problem:
            raise AddressError(problem)
    return str(address)


def _not_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if address.version == IPV4:
        if address.is_unspecified or address.is_multicast or int(address) == 2**32 - 1:
            return "expected a unicast IPv4 address (not 0.0.0.0, multicast or broadcast)"
        return None
    if address.is_unspecified or address.is_multicast:
        return "expected a unicast IPv6 address (not :: or multicast)"
    if address.is_link_local:
        return "expected a global or unique-local IPv6 address (link-local needs a zone)"
    return None


def parse_network(text: str) -> str:
    """The canonical text of an IPv4 or IPv6 network "address/prefix" without host bits (an address
    alone is the network of that one address); AddressError with the reason otherwise."""
    address, sep, prefix = text.partition("/")
    if "%" in address or ":" in address and "." in address:
        parse_ip(address)  # zone ids and IPv4-mapped addresses, with their own reasons
    limit = 128 if ":" in address else 32
    if sep and (not (prefix.isascii() and prefix.isdigit() and len(prefix) <= 3) or int(prefix) > limit):
        raise AddressError(f"the prefix length must be 0 to {limit}, got {prefix!r}")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise AddressError(
            "host bits set" if "host bits set" in str(exc) else "not a valid network"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        raise AddressError("an IPv4-mapped IPv6 network: write the IPv4 network instead")
    return str(network)


def host_text(ip: str) -> str:
    """The address as it stands before ":port": IPv6 in brackets."""
    return f"[{ip}]" if ":" in ip else ip


def format_endpoint(ip: str, port: int) -> str:
    """ "10.0.0.1:80" or "[fd00::1]:80"."""
    return f"{host_text(ip)}:{port}"


def split_endpoint(text: str) -> tuple[str, str]:
    """(address text, port text) of "ip:port" or "[ip]:port", without judging either part;
    AddressError when the shape is wrong (missing port, missing or misplaced brackets)."""
    if text.startswith("["):
        inside, sep, rest = text[1:].partition("]")
        if not sep:
            raise AddressError(f'expected {_ENDPOINT_FORMS}: the closing "]" is missing')
        if not rest.startswith(":") or len(rest) == 1:
            raise AddressError(f"expected {_ENDPOINT_FORMS}: the port is missing")
        if ":" not in inside:
            raise AddressError(
                f'expected {_ENDPOINT_FORMS}: brackets are for IPv6 addresses only, "[{inside}]"'
            )
        return inside, rest[1:]
    host, sep, port = text.rpartition(":")
    if not sep:
        raise AddressError(f"expected {_ENDPOINT_FORMS}: the port is missing")
    if ":" in host or "]" in text:
        raise AddressError(f"expected {_ENDPOINT_FORMS}: an IPv6 address needs brackets, {_bracketed(text)}")
    return host, port


def _bracketed(text: str) -> str:
    host, _, port = text.rpartition(":")
    if _is_ipv6(host) and port.isdigit():
        return f'e.g. "[{host}]:{port}"'
    return f'e.g. "[{text}]:PORT"' if _is_ipv6(text) else 'e.g. "[fd00::1]:80"'


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == IPV6
    except ValueError:
        return False


def parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 65535:
        raise AddressError(f"expected a port from 1 to 65535, got {text!r}")
    return int(text)


def parse_endpoint(text: str, unicast: bool = False) -> tuple[str, int]:
    """(canonical address, port) of "ip:port" or "[ip]:port"; AddressError with the reason."""
    ip_text, port_text = split_endpoint(text)
    return parse_ip(ip_text, unicast=unicast), parse_port(port_text)


def parse_address_or_endpoint(text: str) -> tuple[str, int | None]:
    """An address alone ("10.0.0.1", "fd00::1", "[fd00::1]") or an endpoint with its port, as
    (canonical address, port or None): what a filter of flows by address takes."""
    if text.startswith("[") and text.endswith("]"):
        return parse_ip(text[1:-1]), None
    if text.count(":") != 1 and not text.startswith("["):
        return parse_ip(text), None  # IPv4 without a port, or IPv6 without brackets
    return parse_endpoint(text)


def same_family(a: str, b: str) -> bool:
    return family(a) == family(b)


def search_term(term: str) -> str:
    """A filter term as it is matched against shown text (lower case), with an address or endpoint
    in any spelling made canonical, so "[FD00:0::1]:80" finds what is shown as "[fd00::1]:80".
    A bracketed address keeps its brackets: "[fd00::1]" matches that address, not fd00::10."""
    lowered = term.lower()
    try:
        if lowered.startswith("[") and lowered.endswith("]"):
            return f"[{parse_ip(lowered[1:-1])}]"
        if lowered.startswith("["):
            return format_endpoint(*parse_endpoint(lowered))
        if lowered.count(":") >= 2:
            return parse_ip(lowered)
    except AddressError:
        pass
    return lowered


def search_terms(text: str) -> tuple[str, ...]:
    """The whitespace-separated terms of a filter, each as `search_term` makes it."""
    return tuple(search_term(term) for term in text.split())
