# SPDX-License-Identifier: Apache-2.0
"""What of a DNS answer may become a backend (docs/architecture.md#who-gets-traffic).

A DNS server is an input lbtui does not control: a wrong, stale or hostile answer must not steer
traffic where no backend can be. Each answer is screened: only addresses of the asked family are
kept (IPv4 for A records, IPv6 for AAAA; anything else, e.g. a malformed record, is refused), and
never addresses no backend can have (unspecified, loopback, link-local, multicast, broadcast, the
reserved 240.0.0.0/4, IPv4-mapped IPv6, an IPv6 zone id), one of
this load balancer's VIPs (a loop) or an address of this host (its own traffic would be NATed to
itself). What is left is capped at `max_records` per name, so a huge answer cannot exhaust the
data path's backend ids; the first ones in numeric order are used, so the choice is stable across
refreshes. Everything refused is said (`rejected`, `over_cap`), never silently dropped.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

BROADCAST = ipaddress.IPv4Address("255.255.255.255")
SHOWN_REJECTED = 8  # a message names this many refused records, then counts the rest
SHOWN_CHARS = 40  # of a record that is not an address (it is the server's text: shown short, quoted)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
RefuseFn = Callable[[Address], "str | None"]
FAMILIES: dict[str, tuple[type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address], str]] = {
    "A": (ipaddress.IPv4Address, "IPv4"),  # record type -> (address type, family named in messages)
    "AAAA": (ipaddress.IPv6Address, "IPv6"),
}


@dataclass(frozen=True)
class Screened:
    addresses: tuple[str, ...]  # usable, distinct, sorted numerically, at most max_records
    rejected: tuple[str, ...]  # "127.0.0.1 (loopback)": the answer's order, then the caller's reasons
    over_cap: int  # addresses beyond max_records, ignored (not checked against the caller's reasons)

    def problems(self, max_records: int) -> str:
        """The refused part in words (empty if nothing was refused)."""
        parts = []
        if self.rejected:
            shown = ", ".join(self.rejected[:SHOWN_REJECTED])
            more = len(self.rejected) - SHOWN_REJECTED
            parts.append(f"rejected {shown}" + (f" and {more} more" if more > 0 else ""))
        if self.over_cap:
            parts.append(
                f"{self.over_cap} usable addresses beyond the first {max_records} ignored "
                "(settings.dns.max_records)"
            )
        return "; ".join(parts)


def why_unusable(address: Address) -> str | None:
    """Why `address` can never be a backend, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return "IPv4-mapped"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address == BROADCAST:
        return "broadcast"
    if isinstance(address, ipaddress.IPv4Address) and address.is_reserved:
        return "reserved"  # (IPv6's "reserved" is mostly ::/8, whose useful parts are caught above)
    return None


def is_local_address(address: Address) -> bool:
    """Whether `address` is one of this host's (this network namespace's) addresses: only a local
    address can be bound (ip_nonlocal_bind aside), and binding asks the kernel, which knows."""
    af = socket.AF_INET6 if isinstance(address, ipaddress.IPv6Address) else socket.AF_INET
    with socket.socket(af, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(address), 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def screen_answers(
    answers: Iterable[object], max_records: int, refuse: RefuseFn | None = None, rdtype: str = "A"
) -> Screened:
    """The usable addresses among `answers` to an `rdtype` query (see the module's docstring);
    `refuse(address)` gives the caller's own reasons (a VIP, a local address). It is asked in numeric
    order only until max_records are accepted (each local check is a syscall; a huge answer costs no
    more than that)."""
    parse, family_name = FAMILIES[rdtype]
    candidates: set[Address] = set()
    rejected: dict[str, None] = {}
    for answer in answers:
        try:
            address = parse(answer) if isinstance(answer, str) and "%" not in answer else None
        except ValueError:
            address = None
        if address is None:
            rejected[f"{str(answer)[:SHOWN_CHARS]!r} (not an {family_name} address)"] = None
        elif (reason := why_unusable(address)) is not None:
            rejected[f"{address} ({reason})"] = None
        else:
            candidates.add(address)
    usable: list[Address] = []
    ordered = sorted(candidates)  # one family: comparable
    for checked, address in enumerate(ordered):
        if len(usable) == max_records:
            return _screened(usable, rejected, len(ordered) - checked)
        reason = refuse(address) if refuse is not None else None
        if reason is not None:
            rejected[f"{address} ({reason})"] = None
        else:
            usable.append(address)
    return _screened(usable, rejected, 0)


def _screened(usable: list[Address], rejected: dict[str, None], over_cap: int) -> Screened:
    return Screened(tuple(str(a) for a in usable), tuple(rejected), over_cap)
