# SPDX-License-Identifier: Apache-2.0
"""The backend's decapsulation program (bpf/decap.c): compile, fill, attach at TC ingress, find again.

`lbtui backend-setup` loads a fresh program on every run, fills its tables with the VIPs and the
backend's own addresses, carries the counters of the program it replaces over, and swaps it in
atomically (`replace-filter`): no packet meets an interface without a decapsulator during a re-run.
The attached program is found later by the name of the filter at a fixed preference, and read
through its map ids (bpfobj.py).
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lbtui.dataplane import tcfilter
from lbtui.dataplane.bpfobj import program_maps
from lbtui.dataplane.loader import bpf_source_dir
from lbtui.dataplane.port import DataplaneError

log = logging.getLogger(__name__)

DECAP_PROG = "lbtui_decap"
DECAP_PREF = 0xC001  # our ingress filter's preference (lb.c's egress filter uses 0xC000)
MAX_VIPS = 1024
MAX_LOCAL = 64
# bpf/decap.c enum decap_counter, in order
DECAP_COUNTERS = (
    "decap_ipip",  # IPv4-in-IPv4 packets decapsulated
    "decap_ip6ip",  # IPv6-in-IPv4 packets decapsulated
    "decap_bytes",  # bytes of the inner packets handed to the stack
    "pass_not_local",  # outer destination not an address of this backend
    "pass_not_vip",  # inner destination not one of its VIPs
    "pass_fragment",  # outer header fragmented
    "pass_malformed",  # outer options, truncated, inconsistent lengths or versions
    "pass_failed",  # the kernel refused to remove the header
)
_MAP_VIPS4, _MAP_VIPS6, _MAP_LOCAL4, _MAP_STATS = "decap_vips4", "decap_vips6", "decap_local4", "decap_stats"


@dataclass(frozen=True)
class DecapState:
    """What the program attached to an interface holds: its id, its tables and its counters."""

    prog_id: int
    vips: tuple[str, ...]
    local: tuple[str, ...]
    counters: Mapping[str, int] = field(default_factory=dict)


class DecapProgram:
    """A freshly compiled decapsulator for one set of VIPs and local addresses, not attached yet."""

    def __init__(self, vips: Sequence[str], local: Sequence[str]) -> None:
        from bcc import BPF

        addrs = [ipaddress.ip_address(v) for v in vips]
        locals4 = [ipaddress.IPv4Address(a) for a in local]
        if len(addrs) > MAX_VIPS or len(locals4) > MAX_LOCAL:
            raise DataplaneError(f"at most {MAX_VIPS} VIPs and {MAX_LOCAL} local addresses")
        src = bpf_source_dir()
        cflags = [f"-I{src}", f"-DDECAP_MAX_VIPS={MAX_VIPS}", f"-DDECAP_MAX_LOCAL={MAX_LOCAL}"]
        try:
            self.bpf: Any = BPF(src_file=str(src / "decap.c"), cflags=cflags)
            self.fn = self.bpf.load_func(DECAP_PROG, BPF.SCHED_CLS)
        except Exception as exc:  # BCC raises bare Exception on compile/verifier failures
            raise DataplaneError(f"cannot load the decapsulation program: {exc}") from exc
        stats = self.bpf[_MAP_STATS]
        if len(stats) != len(DECAP_COUNTERS):
            raise DataplaneError(f"decap.c has {len(stats)} counters, decap.py names {len(DECAP_COUNTERS)}")
        for addr in addrs:
            table = self.bpf[_MAP_VIPS4 if addr.version == 4 else _MAP_VIPS6]
            table[table.Key.from_buffer_copy(addr.packed)] = table.Leaf(1)
        table = self.bpf[_MAP_LOCAL4]
        for a in locals4:
            table[table.Key.from_buffer_copy(a.packed)] = table.Leaf(1)

    def seed_counters(self, counters: Mapping[str, int]) -> None:
        """Start the counters from these values (those of the program this one replaces)."""
        stats = self.bpf[_MAP_STATS]
        for i, name in enumerate(DECAP_COUNTERS):
            per_cpu = stats.Leaf()
            per_cpu[0] = counters.get(name, 0)
            stats[stats.Key(i)] = per_cpu

    def attach(self, ifname: str) -> bool:
        """Swap this program in at TC ingress of `ifname`; True if the clsact qdisc was created."""
        return tcfilter.attach(ifname, tcfilter.INGRESS, self.fn.fd, DECAP_PROG, DECAP_PREF)

    def close(self) -> None:
        """Release this process's handles; an attached program stays, held by its filter."""
        self.bpf.cleanup()


def attached_id(ifname: str) -> int | None:
    """The id of the decapsulation program at TC ingress of `ifname`, None if there is none."""
    for f in tcfilter.filters(ifname, tcfilter.INGRESS):
        if f.name == DECAP_PROG and f.pref == DECAP_PREF:
            return f.prog_id
    return None


def read_state(ifname: str) -> DecapState | None:
    """Tables and counters of the program attached to `ifname` (None if none is)."""
    prog_id = attached_id(ifname)
    if prog_id is None:
        return None
    try:
        maps = program_maps(prog_id)
    except OSError as exc:  # detached between the listing and now
        log.debug("reading decap program %d: %s", prog_id, exc)
        return None
    try:
        vips4 = [str(ipaddress.IPv4Address(k)) for k in maps[_MAP_VIPS4].keys()]
        vips6 = [str(ipaddress.IPv6Address(k)) for k in maps[_MAP_VIPS6].keys()]
        local = [str(ipaddress.IPv4Address(k)) for k in maps[_MAP_LOCAL4].keys()]
        stats = maps[_MAP_STATS]
        counters = {name: stats.percpu_u64_sum(struct.pack("=I", i)) for i, name in enumerate(DECAP_COUNTERS)}
    except KeyError as exc:
        raise DataplaneError(
            f"program {prog_id} on {ifname} is not lbtui's decapsulator: no map {exc}"
        ) from exc
    finally:
        for m in maps.values():
            m.close()
    return DecapState(prog_id, tuple(sorted(vips4) + sorted(vips6)), tuple(sorted(local)), counters)


def detach(ifname: str, delete_clsact: bool) -> None:
    tcfilter.detach(ifname, tcfilter.INGRESS, DECAP_PREF, delete_clsact=delete_clsact)
