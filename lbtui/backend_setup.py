# SPDX-License-Identifier: Apache-2.0
"""`lbtui backend-setup`: make this host a DSR backend for VIPs that reach it encapsulated in IPIP.

    lbtui backend-setup --vip VIP [--vip VIP ...] [--interface IF]   set up (again: declarative)
    lbtui backend-setup --undo                                        put everything back
    lbtui backend-setup --status [--json]                             what is in place, counters

Setting up (docs/scale-out.md, "Backends"):
  1. ARP: arp_ignore=1, arp_announce=2 on the interface and "all" (the VIPs are on every backend
     and every load balancer: only the load balancers may answer ARP for them); rp_filter loose on
     the interface when it was strict (a decapsulated packet comes from a client that is routed
     elsewhere). A setting that is already at least as strict is left alone.
  2. each VIP on the loopback device as /32 (/128), so the stack accepts packets for it and replies
     come from it (straight to the client: direct server return);
  3. bpf/decap.c at TC ingress of the interface: it strips the outer header of IPIP (and
     IPv6-in-IPv4) packets addressed to this host whose inner destination is a VIP.
What this run changed, and the values it replaced, go to a state file under /run/lbtui/ (one per
network namespace), so `--undo` restores exactly that, and a second setup changes nothing twice.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lbtui import exitcodes

if TYPE_CHECKING:
    from lbtui.dataplane.decap import DecapState

STATE_DIR = Path("/run/lbtui")
STATE_VERSION = 1


class SetupError(Exception):
    """The request cannot be carried out as asked (bad VIP, missing interface, IPv6 disabled)."""


@dataclass(frozen=True)
class BackendState:
    """What backend-setup changed in one network namespace; --undo reverts exactly this."""

    netns_cookie: int
    interface: str
    vips: tuple[str, ...] = ()
    added_addresses: tuple[str, ...] = ()  # on lo, put there by us (not there before)
    sysctls: tuple[tuple[str, str], ...] = ()  # (key, value before our first change)
    clsact_created: bool = False

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["sysctls"] = dict(self.sysctls)
        return json.dumps({"version": STATE_VERSION, **d}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BackendState:
        d = json.loads(text)
        if d.pop("version", None) != STATE_VERSION:
            raise SetupError("unknown state file version")
        return cls(
            netns_cookie=int(d["netns_cookie"]),
            interface=str(d["interface"]),
            vips=tuple(d.get("vips", ())),
            added_addresses=tuple(d.get("added_addresses", ())),
            sysctls=tuple(sorted(dict(d.get("sysctls", {})).items())),
            clsact_created=bool(d.get("clsact_created", False)),
        )


def parse_vips(values: Sequence[str]) -> tuple[str, ...]:
    """Normalised, de-duplicated VIPs in the order given; SetupError for anything not a unicast host."""
    out: list[str] = []
    for v in values:
        try:
            ip = ipaddress.ip_address(v.strip())
        except ValueError:
            raise SetupError(f"--vip {v!r}: not an IPv4 or IPv6 address") from None
        if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_link_local:
            raise SetupError(
                f"--vip {v}: a VIP must be a unicast address (not loopback/multicast/link-local)"
            )
        if str(ip) not in out:
            out.append(str(ip))
    return tuple(out)


def sysctl_plan(ifname: str, read: Callable[[str], str]) -> dict[str, str]:
    """The sysctls to change for DSR on `ifname` (key -> new value); empty when all are in place.

    The kernel uses max(all, interface) for arp_ignore, arp_announce and rp_filter, so a value is
    raised only where it is below what DSR needs, and rp_filter is made loose (2) on the interface
    only when the effective value is strict (1)."""
    plan: dict[str, str] = {}
    for name, least in (("arp_ignore", 1), ("arp_announce", 2)):
        for scope in ("all", ifname):
            key = f"net/ipv4/conf/{scope}/{name}"
            if int(read(key)) < least:
                plan[key] = str(least)
    strict = max(int(read("net/ipv4/conf/all/rp_filter")), int(read(f"net/ipv4/conf/{ifname}/rp_filter")))
    if strict == 1:
        plan[f"net/ipv4/conf/{ifname}/rp_filter"] = "2"
    return plan


class BackendSetup:
    """Set up, undo and report, in the caller's network namespace, with state kept in `state_path`."""

    def __init__(self, state_path: Path | None = None, out: Callable[[str], None] = print) -> None:
        from lbtui.dataplane import hostnet

        self.net = hostnet
        self.cookie = hostnet.netns_cookie()
        self.state_path = state_path or STATE_DIR / f"backend-setup-netns{self.cookie}.json"
        self.out = out

    # ------------------------------------------------------------ state file

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One backend-setup at a time per state directory (a lock on the directory: no lock file)."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self) -> BackendState | None:
        try:
            state = BackendState.from_json(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, SetupError) as exc:
            raise SetupError(
                f"state file {self.state_path} is unreadable ({exc}): remove it by hand"
            ) from exc
        if state.netns_cookie != self.cookie:
            raise SetupError(f"state file {self.state_path} belongs to another network namespace")
        return state

    def save(self, state: BackendState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        os.replace(tmp, self.state_path)

    # ------------------------------------------------------------ setup

    def setup(self, vips: Sequence[str], interface: str | None) -> BackendState:
        from lbtui.dataplane import decap

        state = self.load()
        ifname = interface or (state.interface if state else None) or self.net.default_route_interface()
        if not ifname:
            raise SetupError("no --interface given and no IPv4 default route to take it from")
        if not self.net.interface_exists(ifname):
            raise SetupError(f"--interface {ifname}: no such interface in this network namespace")
        local = self.net.interface_addresses(ifname, 4)
        if not local:
            raise SetupError(f"{ifname} has no IPv4 address: load balancers could not address packets to it")
        if any(ipaddress.ip_address(v).version == 6 for v in vips):
            for scope in (self.net.LOOPBACK, ifname):
                if self.net.read_sysctl(f"net/ipv6/conf/{scope}/disable_ipv6") != "0":
                    raise SetupError(
                        f"IPv6 VIPs need IPv6 on {scope}: net.ipv6.conf.{scope}.disable_ipv6 is 1"
                    )
        if state is not None and state.interface != ifname:
            self.out(f"moving from {state.interface} to {ifname}: undoing {state.interface} first")
            self._undo(state)
            state = None
        state = state or BackendState(netns_cookie=self.cookie, interface=ifname)
        # ARP settings before any VIP is on lo, so the interface never answers ARP for one
        originals = dict(state.sysctls)
        for key, value in sysctl_plan(ifname, self.net.read_sysctl).items():
            originals.setdefault(key, self.net.read_sysctl(key))
            state = dataclasses.replace(state, sysctls=tuple(sorted(originals.items())))
            self.save(state)
            self.net.write_sysctl(key, value)
        state = self._set_addresses(state, vips)
        previous = decap.read_state(ifname)
        prog = decap.DecapProgram(vips, local)
        try:
            if previous is not None:
                prog.seed_counters(previous.counters)
            created = prog.attach(ifname)
        finally:
            prog.close()
        state = dataclasses.replace(state, clsact_created=state.clsact_created or created)
        self.save(state)
        return state

    def _set_addresses(self, state: BackendState, vips: Sequence[str]) -> BackendState:
        wanted = [self.net.host_prefix(v) for v in vips]
        added = list(state.added_addresses)
        for prefix in [p for p in added if p not in wanted]:  # VIPs dropped from the request
            self.net.set_loopback_address(prefix, present=False)
            added.remove(prefix)
        for prefix in wanted:
            if self.net.set_loopback_address(prefix, present=True) and prefix not in added:
                added.append(prefix)
        state = dataclasses.replace(state, vips=tuple(vips), added_addresses=tuple(added))
        self.save(state)
        return state

    # ------------------------------------------------------------ undo

    def undo(self, interface: str | None) -> BackendState | None:
        """Revert what the state file records; without one, detach a decapsulator left on the
        interface. Returns the state that was undone (None: there was none)."""
        from lbtui.dataplane import decap

        state = self.load()
        if state is not None:
            self._undo(state)
            self.state_path.unlink(missing_ok=True)
            return state
        ifname = interface or self.net.default_route_interface()
        if ifname and decap.attached_id(ifname) is not None:
            decap.detach(ifname, delete_clsact=False)
            self.out(
                f"no state file ({self.state_path}): detached the decapsulation program from {ifname} only"
            )
        return None

    def _undo(self, state: BackendState) -> None:
        from lbtui.dataplane import decap
        from lbtui.dataplane.port import DataplaneError

        decap.detach(state.interface, delete_clsact=state.clsact_created)
        for prefix in state.added_addresses:
            self.net.set_loopback_address(prefix, present=False)
        for key, value in state.sysctls:  # after the VIPs are gone, as setup set them before
            try:
                self.net.write_sysctl(key, value)
            except DataplaneError as exc:  # an interface gone since: restore the others
                self.out(f"warning: {exc}")

    # ------------------------------------------------------------ status

    def status(self, interface: str | None) -> BackendStatus:
        from lbtui.dataplane import decap

        state = self.load()
        ifname = interface or (state.interface if state else None) or self.net.default_route_interface()
        prog = decap.read_state(ifname) if ifname and self.net.interface_exists(ifname) else None
        return BackendStatus(
            state_file=str(self.state_path) if state else None,
            interface=ifname,
            vips=state.vips if state else (),
            loopback=tuple(sorted(self.net.loopback_addresses())),
            sysctls={k: self.net.read_sysctl(k) for k in (sysctl_keys(ifname) if ifname else [])},
            program=prog,
        )


@dataclass(frozen=True)
class BackendStatus:
    state_file: str | None
    interface: str | None
    vips: tuple[str, ...]
    loopback: tuple[str, ...]
    sysctls: Mapping[str, str]
    program: DecapState | None

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        out = [
            f"interface   {self.interface or '-'}",
            f"state file  {self.state_file or '- (not set up)'}",
            f"VIPs        {', '.join(self.vips) or '-'}",
            f"on lo       {', '.join(self.loopback)}",
        ]
        out += [f"{key.replace('/', '.'):<34} {value}" for key, value in self.sysctls.items()]
        if self.program is None:
            return [*out, "program     - (no decapsulation program attached)"]
        out.append(
            f"program     id {self.program.prog_id} at TC ingress, local {', '.join(self.program.local)}"
        )
        return out + [f"  {name:<16} {value}" for name, value in self.program.counters.items()]


def sysctl_keys(ifname: str) -> list[str]:
    keys = [f"net/ipv4/conf/{s}/{n}" for n in ("arp_ignore", "arp_announce") for s in ("all", ifname)]
    return keys + [f"net/ipv4/conf/{s}/rp_filter" for s in ("all", ifname)]


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtui backend-setup",
        description=(
            "Make this host a direct-server-return backend: VIPs on lo, ARP and rp_filter settings, and "
            "a TC program that removes the IPIP header load balancers add. Run as root on the backend."
        ),
    )
    p.add_argument("--vip", action="append", default=[], metavar="VIP", help="a VIP (repeat for more)")
    p.add_argument(
        "--interface", metavar="IF", help="the interface packets arrive on (default: the default route's)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--undo", action="store_true", help="remove everything an earlier setup did")
    mode.add_argument("--status", action="store_true", help="show what is in place and the counters")
    p.add_argument("--json", action="store_true", help="--status as JSON")
    p.add_argument("--state-file", metavar="PATH", help="default: /run/lbtui/backend-setup-netns<id>.json")
    return p


def main(argv: Sequence[str]) -> int:
    parser = _parser()
    ns = parser.parse_args(argv)
    if not (ns.undo or ns.status) and not ns.vip:
        parser.error("at least one --vip is required (or --undo / --status)")
    if (ns.undo or ns.status) and ns.vip:
        parser.error("--vip goes with setup, not with --undo or --status")
    if os.geteuid() != 0:
        print(
            "lbtui backend-setup must run as root (it changes addresses, sysctls and loads BPF)",
            file=sys.stderr,
        )
        return exitcodes.HOST
    from lbtui.dataplane.port import DataplaneError

    try:
        vips = parse_vips(ns.vip)
        setup = BackendSetup(Path(ns.state_file) if ns.state_file else None)
        with setup.locked():
            if ns.status:
                status = setup.status(ns.interface)
                print(json.dumps(status.to_dict(), indent=2) if ns.json else "\n".join(status.lines()))
                return exitcodes.OK
            if ns.undo:
                undone = setup.undo(ns.interface)
                print(
                    f"backend-setup: undone on {undone.interface}"
                    if undone
                    else "backend-setup: nothing to undo"
                )
                return exitcodes.OK
            state = setup.setup(vips, ns.interface)
    except SetupError as exc:
        print(f"lbtui backend-setup: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    except DataplaneError as exc:
        print(f"lbtui backend-setup: {exc}", file=sys.stderr)
        return exitcodes.HOST
    print(
        f"backend-setup: {state.interface}: VIPs {', '.join(state.vips)} on lo, ARP/rp_filter for DSR, "
        f"decapsulation at TC ingress; undo with `lbtui backend-setup --undo` (state {setup.state_path})"
    )
    return exitcodes.OK
