# SPDX-License-Identifier: Apache-2.0
"""Compile, load, attach and detach lbtui's BPF programs (the only bcc and pyroute2 user).

XDP is attached through BCC (netlink), TC egress as a clsact direct-action filter through pyroute2.
Both attachments outlive the process (docs/datapath.md#attachments), so `detach` runs on every exit
path and `remove_stale` clears attachments a crashed earlier run left on our interfaces.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import functools
import json
import logging
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from lbtui.dataplane import structs
from lbtui.dataplane.bpffs import has_pinned_state, prepare_pin_dir
from lbtui.dataplane.port import DataplaneError, DataplaneSpec

log = logging.getLogger(__name__)

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_PROG = "lbtui_xdp"
TC_PROG = "lbtui_tc"
REAP_PROG = "lbtui_reap"  # run with BPF_PROG_TEST_RUN, never attached
TC_REPLY_PROG = "lbtui_tc_reply"  # the fast path's TC ingress program on backend-facing interfaces
TC_REPLY6_PROG, TC_REPLY6_ARRAY = "lbtui_tc_reply6", "lb_tc_reply6_prog"  # its IPv6 half, tail-called
REAP6_PROG = "lbtui_reap6"
XDP6_PROG, XDP6_ARRAY = "lbtui_xdp6", "lb_xdp6_prog"  # IPv6 frames: lbtui_xdp tail-calls it
TC6_PROG, TC6_ARRAY = "lbtui_tc6", "lb_tc6_prog"
TC_PARENT_EGRESS = "ffff:fff3"
TC_PRIO = 0xC000  # our egress filter's preference; a fixed value so we can find and remove it
TC_HANDLE = 1
T = TypeVar("T")


def _off_loop(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a pyroute2 call on a short-lived thread when this thread runs an asyncio loop.

    pyroute2 0.9's synchronous API drives an asyncio loop of its own in the calling thread, which
    fails inside a running loop (the engine's). Netlink calls are rare (attach/detach), so a thread
    each is fine.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(fn, *args, **kwargs).result()

    return wrapper


def bpf_source_dir() -> Path:
    """bpf/ in a checkout, or the lbtui.bpf package data when installed."""
    return Path(str(resources.files("lbtui.bpf")))


_LOCAL_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_.]+)"(?:\s*//.*)?\s*$')
TEMPLATE_MARK = "// lbtui: per-family template"


def bpf_source(name: str = "lb.c") -> str:
    """The program's source as one text: bpf/`name` with its local headers (#include "lb_*.h")
    inlined, each once (a header marked TEMPLATE_MARK at every #include: it is compiled once per
    address family, bpf/lb_fam.h), with #line markers so that compiler messages name the real file
    and line.

    BCC rewrites map calls (`table.lookup(&k)`) only in the file it compiles, not in headers it
    includes, so the split sources (docs/datapath.md) are joined before BCC sees them.
    """
    root = bpf_source_dir()
    seen: set[str] = set()

    def expand(file: str) -> list[str]:
        text = (root / file).read_text()
        if TEMPLATE_MARK not in text:
            seen.add(file)
        out = [f'#line 1 "{file}"']
        for number, line in enumerate(text.splitlines(), start=1):
            m = _LOCAL_INCLUDE.match(line)
            if m is None:
                out.append(line)
                continue
            if m.group(1) not in seen:
                out += expand(m.group(1))
            out.append(f'#line {number + 1} "{file}"')
        return out

    return "\n".join(expand(name)) + "\n"


def check_privileges() -> str | None:
    """None if we can load BPF programs here, else what is wrong and what to do."""
    if os.geteuid() != 0:
        return "lbtui must run as root (it loads BPF programs and changes interfaces); try sudo"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return (
            "the BCC Python module is not importable: install python3-bpfcc and run lbtui from a "
            "virtualenv made with /usr/bin/python3 -m venv --system-site-packages (scripts/setup does this)"
        )
    if (
        not Path("/sys/kernel/btf/vmlinux").exists()
        and not Path(f"/lib/modules/{os.uname().release}/build").exists()
    ):
        return "no kernel headers or BTF for the running kernel: run scripts/setup (it links headers)"
    return None


PINNED_PROGRAMS = ("prog_xdp", "prog_tc")


@dataclass(frozen=True)
class Ipv6Programs:
    """The IPv6 halves, tail-called by the IPv4 entry programs (Loaded.load_ipv6)."""

    xdp: Any
    tc: Any
    tc_reply: Any


class Loaded:
    """A compiled and loaded BPF object: program fds and maps, not attached anywhere yet.

    With spec.pin_dir, maps already pinned there by an earlier run of the same instance are reused
    (`adopted`): conntrack, tables and counters carry over.
    """

    def __init__(self, spec: DataplaneSpec):
        from bcc import BPF

        self.spec = spec
        if spec.pin_dir:
            prepare_pin_dir(spec.pin_dir)  # before adopting anything pinned there
        self.adopted = has_pinned_state(spec.pin_dir)
        self._ipv6: Ipv6Programs | None = None
        src = bpf_source_dir()
        try:
            self.bpf: Any = BPF(text=bpf_source(), cflags=[f"-I{src}", *spec.cflags()])
            self.xdp_fn = self.bpf.load_func(XDP_PROG, BPF.XDP)
            self.tc_fn = self.bpf.load_func(TC_PROG, BPF.SCHED_CLS)
            self.reap_fn = self.bpf.load_func(REAP_PROG, BPF.XDP)
            self.tc_reply_fn = self.bpf.load_func(TC_REPLY_PROG, BPF.SCHED_CLS)
            self.reap6_fn = self.bpf.load_func(REAP6_PROG, BPF.XDP)
        except Exception as exc:  # BCC raises bare Exception on compile/verifier failures
            hint = ""
            if self.adopted:
                hint = (
                    f" (maps pinned in {spec.pin_dir} by an earlier run may not fit this configuration's "
                    "sizes: stop that instance cleanly or remove the directory)"
                )
            raise DataplaneError(f"cannot load the BPF programs: {exc}{hint}") from exc
        structs.check_layouts(structs.map_types(self.bpf))

        if spec.pin_dir:
            self._pin_programs(spec.pin_dir)

    @property
    def ipv6_loaded(self) -> bool:
        return self._ipv6 is not None

    def load_ipv6(self) -> None:
        """Load the IPv6 programs into their tail-call slots, once: until then lbtui_xdp passes IPv6
        frames to the kernel (xdp_not_ours) and the TC programs let them through. The verifier takes
        ~2.6 s over them (lbtui_tc6 is near its limit), which an IPv4-only instance never pays; the
        first IPv6 service written (start or reload) loads them (docs/datapath.md#ipv6)."""
        if self._ipv6 is not None:
            return
        from bcc import BPF

        try:
            xdp6 = self.bpf.load_func(XDP6_PROG, BPF.XDP)
            tc6 = self.bpf.load_func(TC6_PROG, BPF.SCHED_CLS)
            tc_reply6 = self.bpf.load_func(TC_REPLY6_PROG, BPF.SCHED_CLS)
        except Exception as exc:  # BCC raises bare Exception on verifier failures
            raise DataplaneError(f"cannot load the IPv6 programs: {exc}") from exc
        for array, fn in ((XDP6_ARRAY, xdp6), (TC6_ARRAY, tc6), (TC_REPLY6_ARRAY, tc_reply6)):
            self.bpf[array][ctypes.c_int(0)] = ctypes.c_int(fn.fd)
        self._ipv6 = Ipv6Programs(xdp6, tc6, tc_reply6)

    @property
    def xdp6_fn(self) -> Any:
        self.load_ipv6()
        assert self._ipv6 is not None
        return self._ipv6.xdp

    @property
    def tc6_fn(self) -> Any:
        self.load_ipv6()
        assert self._ipv6 is not None
        return self._ipv6.tc

    @property
    def tc_reply6_fn(self) -> Any:
        self.load_ipv6()
        assert self._ipv6 is not None
        return self._ipv6.tc_reply

    def _pin_programs(self, pin_dir: str) -> None:
        from bcc.libbcc import lib

        for name, fn in zip(PINNED_PROGRAMS, (self.xdp_fn, self.tc_fn), strict=True):
            path = os.path.join(pin_dir, name)
            if os.path.exists(path):
                os.unlink(path)  # the earlier run's program; attaching replaces it
            if lib.bpf_obj_pin(fn.fd, path.encode()) != 0:
                log.warning("could not pin %s at %s", name, path)

    def table(self, name: str) -> Any:
        return self.bpf[name]

    def close(self) -> None:
        self.bpf.cleanup()


class Attachment:
    """XDP + TC egress on a set of interfaces of the current network namespace."""

    def __init__(self, loaded: Loaded, interfaces: Sequence[str], xdp_mode: str = "auto"):
        self.loaded = loaded
        self.interfaces = tuple(interfaces)
        self.xdp_mode = xdp_mode
        self._xdp_flags: dict[str, int] = {}
        self._tc: set[str] = set()
        self._created_clsact: set[str] = set()

    @property
    def native(self) -> bool:
        """Whether XDP runs in native (driver) mode on any of our interfaces."""
        return any(flags == XDP_FLAGS_DRV_MODE for flags in self._xdp_flags.values())

    def attach(self) -> None:
        try:
            for ifname in self.interfaces:
                if not self.loaded.adopted:
                    remove_stale(ifname)  # an adopting run replaces the old programs without a gap
                self._attach_xdp(ifname)
                self._attach_tc(ifname)
        except Exception:
            self.detach()
            raise

    def _attach_xdp(self, ifname: str) -> None:
        from bcc import BPF

        modes = xdp_mode_flags(self.xdp_mode, link_kind(ifname))
        last: Exception | None = None
        for flags in modes:
            try:
                BPF.attach_xdp(ifname, self.loaded.xdp_fn, flags)
                self._xdp_flags[ifname] = flags
                log.info(
                    "XDP attached to %s (%s mode)",
                    ifname,
                    "native" if flags == XDP_FLAGS_DRV_MODE else "generic",
                )
                return
            except Exception as exc:
                last = exc
        raise DataplaneError(f"cannot attach XDP to {ifname}: {last}")

    @_off_loop
    def _attach_tc(self, ifname: str) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        with IPRoute() as ipr:
            idx = _ifindex(ipr, ifname)
            try:
                ipr.tc("add", "clsact", idx)
                self._created_clsact.add(ifname)
            except NetlinkError as exc:
                if exc.code != 17:  # EEXIST: someone else's clsact, share it
                    raise DataplaneError(f"cannot add clsact qdisc on {ifname}: {exc}") from exc
            fn = self.loaded.tc_fn
            try:
                ipr.tc(
                    "replace-filter",
                    "bpf",
                    idx,
                    TC_HANDLE,
                    fd=fn.fd,
                    name=fn.name,
                    parent=TC_PARENT_EGRESS,
                    classid=1,
                    direct_action=True,
                    prio=TC_PRIO,
                )
            except NetlinkError as exc:
                raise DataplaneError(f"cannot attach the TC egress program on {ifname}: {exc}") from exc
        self._tc.add(ifname)
        log.info("TC egress attached to %s", ifname)

    def detach(self) -> None:
        """Remove what we attached; safe to call twice and on a half-attached state."""
        from bcc import BPF

        for ifname, flags in list(self._xdp_flags.items()):
            try:
                BPF.remove_xdp(ifname, flags)
            except Exception as exc:
                log.warning("removing XDP from %s: %s", ifname, exc)
            del self._xdp_flags[ifname]
        for ifname in list(self._tc):
            _remove_tc_filter(ifname, delete_clsact=ifname in self._created_clsact)
            self._tc.discard(ifname)
        self._created_clsact.clear()


def xdp_mode_flags(xdp_mode: str, kind: str | None) -> list[int]:
    """The XDP attach modes to try, in order, for settings.xdp_mode on a link of this kind.

    "auto" is generic on a veth: there native XDP only emulates a NIC's (the peer loses TSO, its MTU
    is capped, and a redirect from it needs a target veth whose peer runs XDP or GRO), and it measured
    no faster, with the fast path on too (docs/datapath.md#xdp-modes); elsewhere native, else generic
    (a driver without XDP support)."""
    if xdp_mode == "native":
        return [XDP_FLAGS_DRV_MODE]
    if xdp_mode == "generic" or kind == "veth":
        return [XDP_FLAGS_SKB_MODE]
    return [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE]


@_off_loop
def link_kind(ifname: str) -> str | None:
    """The link's kind as `ip -d link` names it ("veth", "bridge", "vlan"...); None for a physical
    NIC (it has none) or a missing link."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        info = ipr.get_links(found[0])[0].get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        return str(kind) if kind else None


def _ifindex(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise DataplaneError(f"no interface named {ifname!r} in this network namespace")
    return int(found[0])


@_off_loop
def _remove_tc_filter(ifname: str, delete_clsact: bool) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return
        idx = found[0]
        try:
            ipr.tc("del-filter", "bpf", idx, TC_HANDLE, parent=TC_PARENT_EGRESS, prio=TC_PRIO)
        except NetlinkError as exc:
            if exc.code not in (2, 22):  # ENOENT / EINVAL: already gone
                log.warning("removing TC filter from %s: %s", ifname, exc)
        if delete_clsact or not _egress_filters(ipr, idx) and not _ingress_filters(ipr, idx):
            try:
                ipr.tc("del", "clsact", idx)
            except NetlinkError:
                pass


def _egress_filters(ipr: Any, idx: int) -> list[Any]:
    try:
        return list(ipr.get_filters(idx, parent=0xFFFFFFF3))
    except Exception:
        return []


def _ingress_filters(ipr: Any, idx: int) -> list[Any]:
    try:
        return list(ipr.get_filters(idx, parent=0xFFFFFFF2))
    except Exception:
        return []


@_off_loop
def attached_programs(ifname: str) -> dict[str, str | None]:
    """Names of the XDP program and of our TC egress filter on an interface (None if absent)."""
    out = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", ifname], capture_output=True, text=True)
    xdp_name = None
    if out.returncode == 0:
        info = json.loads(out.stdout or "[]")
        if info:
            xdp_name = info[0].get("xdp", {}).get("prog", {}).get("name")
    tc_name = None
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if found:
            for flt in _egress_filters(ipr, found[0]):
                opts = flt.get_attr("TCA_OPTIONS")
                name = opts.get_attr("TCA_BPF_NAME") if opts is not None else None
                if name:
                    tc_name = name
    return {"xdp": xdp_name, "tc": tc_name}


def remove_stale(ifname: str) -> bool:
    """Detach lbtui programs left on an interface by a process that died. True if any was found."""
    from bcc import BPF

    progs = attached_programs(ifname)
    found = False
    if progs["xdp"] == XDP_PROG:
        log.warning("removing a stale lbtui XDP program from %s (left by an earlier run)", ifname)
        for flags in (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, 0):
            try:
                BPF.remove_xdp(ifname, flags)
            except Exception:
                continue
        found = True
    if progs["tc"] == TC_PROG:
        log.warning("removing a stale lbtui TC filter from %s (left by an earlier run)", ifname)
        _remove_tc_filter(ifname, delete_clsact=False)
        found = True
    return found
