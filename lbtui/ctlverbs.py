# SPDX-License-Identifier: Apache-2.0
"""The runtime-operation verbs of `lbtui ctl` (HAProxy's runtime API, README.md#runtime-operations):

    lbtui ctl add-backend PROXY ADDR [--weight N] [--group CIDR]
    lbtui ctl remove-backend PROXY ADDR [--cut]
    lbtui ctl maint PROXY BACKEND          lbtui ctl ready PROXY BACKEND
    lbtui ctl health PROXY BACKEND force-up|force-down|auto
    lbtui ctl weight PROXY BACKEND N|+N|-N|P%
    lbtui ctl events [--follow] [--since SEQ] [--json]
    lbtui ctl overrides [PROXY [BACKEND]] [--clear] [--json]

ctl.py holds the parser and the older verbs; this module adds these to it and runs them.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Sequence
from typing import TextIO

from lbtui import model, wire
from lbtui.control_client import SocketEngineHandle

FOLLOW_WAIT_S = 10.0  # each `events --follow` request waits this long for a new event
FOLLOW_BACKLOG = 10  # `events --follow` without --since starts with this many recent events
PAGE = 1000  # events per request (the protocol's maximum)


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    a = sub.add_parser(
        "add-backend", parents=[common], help="add a backend at run time (kept across restarts)"
    )
    a.add_argument("proxy", metavar="PROXY")
    a.add_argument("backend", metavar="ADDR", help="ip:port")
    a.add_argument("--weight", type=int, default=1, metavar="N", help="its weight (default 1)")
    a.add_argument("--group", metavar="CIDR", help="a source route's group instead of the default one")

    r = sub.add_parser(
        "remove-backend",
        parents=[common],
        help="take a backend out: no new connections, established ones finish",
    )
    r.add_argument("proxy", metavar="PROXY")
    r.add_argument("backend", metavar="BACKEND")
    r.add_argument("--cut", action="store_true", help="also cut its established connections")

    for verb, text in (
        ("maint", "maintenance: no new connections, health checks paused, established ones continue"),
        ("ready", "end maintenance or a drain: back in rotation, health checks running"),
    ):
        p = sub.add_parser(verb, parents=[common], help=text)
        p.add_argument("proxy", metavar="PROXY")
        p.add_argument("backend", metavar="BACKEND")

    h = sub.add_parser(
        "health", parents=[common], help="force a backend's health up or down, or back to its checks"
    )
    h.add_argument("proxy", metavar="PROXY")
    h.add_argument("backend", metavar="BACKEND")
    h.add_argument("state", choices=("force-up", "force-down", "auto"))

    e = sub.add_parser("events", parents=[common], help="the engine's events (--follow: as they happen)")
    e.add_argument("--follow", "-f", action="store_true", help="keep printing new events until interrupted")
    e.add_argument("--since", type=_seq, metavar="SEQ", help="only events after this number")

    o = sub.add_parser(
        "overrides", parents=[common], help="runtime overrides in force (--clear: back to the configuration)"
    )
    o.add_argument("proxy", nargs="?", metavar="PROXY")
    o.add_argument("backend", nargs="?", metavar="BACKEND")
    o.add_argument("--clear", action="store_true", help="remove them (all, the proxy's, or the backend's)")


def _seq(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an event number >= 0, got {text!r}")
    return int(text)


def weight_command(proxy: str, backend: str, text: str) -> model.Command:
    """N sets the weight; +N and -N move it from the weight in use; P% is P percent of the configured
    weight. ValueError when the text is none of these."""
    t = text.strip()
    try:
        if t.endswith("%"):
            return model.AdjustWeight(proxy, backend, percent=float(t[:-1]))
        if t[:1] in ("+", "-"):
            return model.AdjustWeight(proxy, backend, step=int(t))
        return model.SetWeight(proxy, backend, int(t))
    except ValueError:
        raise ValueError(f"weight: expected N, +N, -N or P% (e.g. 5, +1, -1, 50%), got {text!r}") from None


def command(ns: argparse.Namespace) -> model.Command | None:
    """The command of one of these verbs (None: not a command verb)."""
    match ns.cmd:
        case "add-backend":
            return model.AddBackend(ns.proxy, ns.backend, ns.weight, ns.group)
        case "remove-backend":
            return model.RemoveBackend(ns.proxy, ns.backend, ns.cut)
        case "maint":
            return model.Maintenance(ns.proxy, ns.backend)
        case "ready":
            return model.Ready(ns.proxy, ns.backend)
        case "health":
            return model.ForceHealth(ns.proxy, ns.backend, ns.state.removeprefix("force-"))
        case "overrides" if ns.clear:
            return model.ClearOverrides(ns.proxy, ns.backend)
    return None


# ---- events ----------------------------------------------------------------------------------


def events(
    handle: SocketEngineHandle, ns: argparse.Namespace, as_json: bool, out: TextIO, err: TextIO
) -> int:
    """Print the events after --since (or all kept), then, with --follow, each new one as it comes."""
    since = ns.since
    if since is None and ns.follow:
        since = _recent(handle, FOLLOW_BACKLOG)
    seq = since or 0
    while True:
        batch = list(handle.events_since(seq, PAGE))
        seq = _print_events(batch, seq, as_json, out, err)
        if len(batch) < PAGE:
            break
    if not ns.follow:
        return 0
    try:
        while True:
            batch = list(handle.events_since(seq, PAGE, wait=FOLLOW_WAIT_S))
            seq = _print_events(batch, seq, as_json, out, err)
    except KeyboardInterrupt:
        return 0


def _recent(handle: SocketEngineHandle, n: int) -> int:
    """The number after which the last `n` events come."""
    last, seq = 0, 0
    while True:
        batch = handle.events_since(seq, PAGE)
        if not batch:
            return max(0, last - n)
        last = seq = batch[-1].seq


def _print_events(batch: Sequence[model.Event], after: int, as_json: bool, out: TextIO, err: TextIO) -> int:
    if batch and after and batch[0].seq > after + 1:
        missed = batch[0].seq - after - 1
        print(f"lbtui ctl: {missed} events are no longer kept (the log keeps the newest 10,000)", file=err)
    for e in batch:
        print(json.dumps(wire.encode_event(e)) if as_json else format_event(e), file=out)
    out.flush()
    return batch[-1].seq if batch else after


def format_event(e: model.Event) -> str:
    when = datetime.datetime.fromtimestamp(e.ts).isoformat(timespec="seconds")
    where = " ".join(x for x in (e.proxy, e.backend) if x)
    return f"{e.seq:>6} {when} {e.level.value:7} {e.kind:11} {where + ': ' if where else ''}{e.message}"


# ---- overrides -------------------------------------------------------------------------------


def overrides(handle: SocketEngineHandle, ns: argparse.Namespace, as_json: bool, out: TextIO) -> int:
    snap = handle.snapshot()
    shown = [
        o
        for o in snap.overrides
        if (ns.proxy is None or o.proxy == ns.proxy) and (ns.backend is None or o.backend == ns.backend)
    ]
    if as_json:
        data = {"state_file": snap.state_file, "overrides": [wire.encode_value(o) for o in shown]}
        print(json.dumps(data), file=out)
        return 0
    out.write(format_overrides(shown, snap.state_file))
    return 0


def format_overrides(shown: Sequence[model.OverrideView], state_file: str | None) -> str:
    rows = [("KIND", "PROXY", "BACKEND", "GROUP", "VALUE")] + [
        (o.kind, o.proxy, o.backend or "-", o.group or "-", o.value) for o in shown
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if not shown:
        lines = ["no runtime overrides: everything is as the configuration says"]
    kept = f"kept in {state_file}" if state_file else "not kept across restarts (no state file)"
    return "\n".join([*lines, kept]) + "\n"
