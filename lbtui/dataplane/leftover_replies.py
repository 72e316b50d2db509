# SPDX-License-Identifier: Apache-2.0
"""The fast path's reply programs that a run which died left attached, found at load and removed once
the new run has attached what it wants (docs/datapath.md#attachments).

`lbtui_tc_reply` sits at TC ingress of the backend-facing interfaces (fastpath.ReplyPrograms), which
the configuration does not name, so `loader.remove_stale` (the configured interfaces) never sees it.
A run killed with the fast path on (kill -9, the OOM killer) leaves it there; the next start of the
instance adopts the pinned maps it uses, so it would go on SNATing and redirecting replies through
them even when the new run has `settings.fast_path = "off"` or the interface is no longer
backend-facing.

A reply program is this instance's when it uses one of the maps of this run's programs: adopted
pinned maps keep their ids. Where this run wants a reply program it replaces that one in place, at
its preference (fastpath.ReplyPrograms' `adopt`); the others are removed with a warning. An lbtui
reply program of another instance (several share a backend-facing interface, each at a preference
of its own), or of an earlier run whose pins are gone (its maps are not ours), is left where it is;
the log says how to remove it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lbtui.dataplane import bpfobj, tcfilter
from lbtui.dataplane.loader import TC_REPLY_PROG
from lbtui.dataplane.netlink import off_loop
from lbtui.dataplane.port import DataplaneError

log = logging.getLogger(__name__)

_INGRESS_PARENT = 0xFFFFFFF2


@dataclass(frozen=True)
class ReplyFilter:
    ifname: str
    prog_id: int
    pref: int


def _bpf_name(flt: Any) -> str | None:
    opts = flt.get_attr("TCA_OPTIONS")
    name = opts.get_attr("TCA_BPF_NAME") if opts is not None else None
    return str(name) if name else None


@off_loop
def reply_filters() -> list[ReplyFilter]:
    """Every lbtui_tc_reply at TC ingress (any preference) of an interface of this network namespace.
    Netlink finds the interfaces that have one (one dump per interface); `tc` gives its program id."""
    from pyroute2 import IPRoute

    names = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            try:
                found = list(ipr.get_filters(link["index"], parent=_INGRESS_PARENT))
            except Exception:  # no clsact: nothing there
                continue
            if any(_bpf_name(f) == TC_REPLY_PROG for f in found):
                names.append(str(link.get_attr("IFLA_IFNAME")))
    return [
        ReplyFilter(name, f.prog_id, f.pref)
        for name in names
        for f in tcfilter.filters(name, tcfilter.INGRESS)
        if f.name == TC_REPLY_PROG
    ]


def map_ids_of(prog_fds: Iterable[int]) -> set[int]:
    """The ids of every map the programs (loaded in this process, by fd) use."""
    return {m for fd in prog_fds for m in bpfobj.program_map_ids(bpfobj.prog_id(fd))}


class LeftoverReplies:
    """This instance's reply programs an earlier run left attached."""

    def __init__(self, ours: list[ReplyFilter]) -> None:
        self.ours = ours

    @classmethod
    def find(cls, our_map_ids: set[int]) -> LeftoverReplies:
        ours = []
        for flt in reply_filters():
            try:
                maps = set(bpfobj.program_map_ids(flt.prog_id))
            except OSError:  # detached meanwhile
                continue
            if maps & our_map_ids:
                ours.append(flt)
                continue
            log.info(
                "fast path: the lbtui reply program at TC ingress of %s (preference %#x, program id %d) "
                "is another instance's, or an earlier run's whose pinned maps are gone; left alone "
                "(if no running instance uses %s: `tc filter del dev %s ingress pref %d`)",
                flt.ifname,
                flt.pref,
                flt.prog_id,
                flt.ifname,
                flt.ifname,
                flt.pref,
            )
        return cls(ours)

    def adoptable(self) -> dict[str, tuple[int, int]]:
        """ifname -> (preference, program id) of the filter to replace in place (fastpath.ReplyPrograms)."""
        return {f.ifname: (f.pref, f.prog_id) for f in self.ours}

    @off_loop
    def remove(self, why: str) -> None:
        """Detach every left reply program that is still the program found at load (those this run
        replaced in place are not)."""
        for flt in sorted(self.ours, key=lambda f: (f.ifname, f.pref)):
            current = tcfilter.filters(flt.ifname, tcfilter.INGRESS)
            if not any(f.pref == flt.pref and f.prog_id == flt.prog_id for f in current):
                continue  # gone or replaced since
            try:
                tcfilter.detach(flt.ifname, tcfilter.INGRESS, flt.pref, delete_clsact=True)
            except DataplaneError as exc:
                log.warning("fast path: removing an earlier run's reply program from %s: %s", flt.ifname, exc)
                continue
            log.warning(
                "fast path: removed the reply program an earlier run left on TC ingress of %s (%s)",
                flt.ifname,
                why,
            )
        self.ours = []
