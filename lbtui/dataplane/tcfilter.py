# SPDX-License-Identifier: Apache-2.0
"""BPF programs as TC clsact filters (direct action): attach, list, detach, by interface name.

Attaching goes through pyroute2. Listing reads `tc -j filter show`, because pyroute2 0.9 does not
decode the program id of a bpf filter (TCA_BPF_ID), and the id is what lets a later run find the
program and its maps (dataplane/bpfobj.py). A filter is identified by its parent (ingress or
egress hook), preference and handle, which the caller fixes.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from lbtui.dataplane.port import DataplaneError

INGRESS = "ingress"
EGRESS = "egress"
_PARENTS = {INGRESS: 0xFFFFFFF2, EGRESS: 0xFFFFFFF3}
_EEXIST, _ENOENT, _EINVAL = 17, 2, 22


@dataclass(frozen=True)
class BpfFilter:
    name: str
    prog_id: int
    pref: int


def _index(ipr: object, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)  # type: ignore[attr-defined]
    if not found:
        raise DataplaneError(f"no interface named {ifname!r} in this network namespace")
    return int(found[0])


def attach(ifname: str, hook: str, prog_fd: int, prog_name: str, pref: int, handle: int = 1) -> bool:
    """Put the program at (hook, pref, handle) on `ifname`, atomically replacing what is there.

    Returns True if this call created the interface's clsact qdisc (its owner removes it later)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        created = False
        try:
            ipr.tc("add", "clsact", idx)
            created = True
        except NetlinkError as exc:
            if exc.code != _EEXIST:  # a clsact is there already (ours or someone's): share it
                raise DataplaneError(f"cannot add a clsact qdisc on {ifname}: {exc}") from exc
        try:
            ipr.tc(
                "replace-filter",
                "bpf",
                idx,
                handle,
                fd=prog_fd,
                name=prog_name,
                parent=_PARENTS[hook],
                classid=1,
                direct_action=True,
                prio=pref,
            )
        except NetlinkError as exc:
            raise DataplaneError(f"cannot attach {prog_name} at TC {hook} of {ifname}: {exc}") from exc
    return created


def filters(ifname: str, hook: str) -> list[BpfFilter]:
    """The BPF filters at `hook` of `ifname` (empty when the interface or its clsact is absent)."""
    r = subprocess.run(
        ["tc", "-j", "filter", "show", "dev", ifname, hook], capture_output=True, text=True, timeout=10
    )
    if r.returncode != 0:
        return []
    found = []
    for entry in json.loads(r.stdout or "[]"):
        prog = entry.get("options", {}).get("prog")
        if entry.get("kind") == "bpf" and prog:
            found.append(
                BpfFilter(name=str(prog.get("name", "")), prog_id=int(prog["id"]), pref=entry["pref"])
            )
    return found


def detach(ifname: str, hook: str, pref: int, handle: int = 1, delete_clsact: bool = False) -> None:
    """Remove the filter at (hook, pref, handle); with delete_clsact, also the qdisc once no filter
    of any hook is left on it. Missing filters and interfaces are fine (already gone)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return
        idx = found[0]
        try:
            ipr.tc("del-filter", "bpf", idx, handle, parent=_PARENTS[hook], prio=pref)
        except NetlinkError as exc:
            if exc.code not in (_ENOENT, _EINVAL):
                raise DataplaneError(f"cannot remove the TC {hook} filter of {ifname}: {exc}") from exc
    if delete_clsact and not filters(ifname, INGRESS) and not filters(ifname, EGRESS):
        with IPRoute() as ipr:
            try:
                ipr.tc("del", "clsact", _index(ipr, ifname))
            except (NetlinkError, DataplaneError):
                pass  # already gone
