# SPDX-License-Identifier: Apache-2.0
"""BPF programs as TC clsact filters (direct action): attach, list, detach, by interface name.

Attaching goes through pyroute2. Listing reads `tc -j filter show`, because pyroute2 0.9 does not
decode the program id of a bpf filter (TCA_BPF_ID), and the id is what lets a later run find the
program and its maps (dataplane/bpfobj.py). A filter is identified by its parent (ingress or
egress hook), preference and handle, which the caller fixes or, with `attach_free`, has picked
among the free ones.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


def _clsact(ipr: Any, idx: int, ifname: str) -> bool:
    """Add the interface's clsact qdisc; True if this call created it (its owner removes it later)."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.tc("add", "clsact", idx)
        return True
    except NetlinkError as exc:
        if exc.code != _EEXIST:  # a clsact is there already (ours or someone's): share it
            raise DataplaneError(f"cannot add a clsact qdisc on {ifname}: {exc}") from exc
        return False


def _bpf_filter(
    ipr: Any, command: str, idx: int, hook: str, prog_fd: int, prog_name: str, pref: int, handle: int
) -> None:
    ipr.tc(
        command,
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


def attach(ifname: str, hook: str, prog_fd: int, prog_name: str, pref: int, handle: int = 1) -> bool:
    """Put the program at (hook, pref, handle) on `ifname`, atomically replacing what is there.

    Returns True if this call created the interface's clsact qdisc (its owner removes it later)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        created = _clsact(ipr, idx, ifname)
        try:
            _bpf_filter(ipr, "replace-filter", idx, hook, prog_fd, prog_name, pref, handle)
        except NetlinkError as exc:
            raise DataplaneError(f"cannot attach {prog_name} at TC {hook} of {ifname}: {exc}") from exc
    return created


def attach_free(
    ifname: str, hook: str, prog_fd: int, prog_name: str, prefs: Sequence[int], handle: int = 1
) -> int:
    """Put the program at the first preference of `prefs` that no filter of `hook` uses, and return it.
    Each is created exclusively (NLM_F_EXCL): a preference another process took meanwhile fails with
    EEXIST (or EINVAL: another kind of filter), and the next one is tried, so two instances attaching
    at once never share one."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    used = used_prefs(ifname, hook)
    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        _clsact(ipr, idx, ifname)
        for pref in prefs:
            if pref in used:
                continue
            try:
                _bpf_filter(ipr, "add-filter", idx, hook, prog_fd, prog_name, pref, handle)
            except NetlinkError as exc:
                if exc.code in (_EEXIST, _EINVAL):
                    continue
                raise DataplaneError(f"cannot attach {prog_name} at TC {hook} of {ifname}: {exc}") from exc
            return pref
    raise DataplaneError(
        f"cannot attach {prog_name} at TC {hook} of {ifname}: every preference from {prefs[0]:#x} to "
        f"{prefs[-1]:#x} is taken (`tc filter show dev {ifname} {hook}`)"
    )


def used_prefs(ifname: str, hook: str) -> set[int]:
    """The preferences of every filter (of any kind) at `hook` of `ifname`."""
    return {int(entry["pref"]) for entry in _show(ifname, hook) if "pref" in entry}


def _show(ifname: str, hook: str) -> list[dict[str, Any]]:
    r = subprocess.run(
        ["tc", "-j", "filter", "show", "dev", ifname, hook], capture_output=True, text=True, timeout=10
    )
    if r.returncode != 0:
        return []
    return list(json.loads(r.stdout or "[]"))


def filters(ifname: str, hook: str) -> list[BpfFilter]:
    """The BPF filters at `hook` of `ifname` (empty when the interface or its clsact is absent)."""
    found = []
    for entry in _show(ifname, hook):
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
