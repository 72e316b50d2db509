# SPDX-License-Identifier: Apache-2.0
"""`lbtui ctl`: ask a running instance, over its control socket, for its status or to run a command.

    lbtui ctl list                     the running instances (sockets in /run/lbtui)
    lbtui ctl [--socket PATH] [--json] status [PROXY]
    lbtui ctl flows [FILTER ...] [--sort bytes|age|idle|backend] [--limit N]
    lbtui ctl drain PROXY BACKEND [--timeout S] [--cut]
    lbtui ctl undrain PROXY BACKEND
    lbtui ctl weight PROXY BACKEND N|+N|-N|P%
    lbtui ctl ratelimit PROXY [--per-source RATE[/BURST]] [--per-backend RATE[/BURST]]
    lbtui ctl circuit PROXY BACKEND force-open|force-close|reset
    lbtui ctl reload [--file PATH] [--dry-run]
    lbtui ctl announce withdraw|announce [PROXY]   take VIPs out of BGP rotation / back (docs/scale-out.md)
    lbtui ctl fingerprint                         a digest of each selection table, to compare hosts
    ... and the runtime operations of ctlverbs.py: add-backend, remove-backend, maint, ready, health,
    events, overrides

Without --socket (or -c FILE) the one running instance is found in /run/lbtui (instances.py); with
several, they are listed and nothing is done.

Exit codes: 0 done, 1 refused by the engine (its reason is printed), 2 usage (or several instances
and no --socket), 3 no instance answers (or the socket may not be opened: it is root-only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import TextIO

from lbtui import ctlverbs, instances, model, wire
from lbtui.control_client import RemoteError, SocketEngineHandle
from lbtui.ctl_format import format_flows, format_status
from lbtui.ctl_scaleout import format_fingerprints

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
FLOWS_WAIT_S = 30.0  # a sweep runs every settings.sweep_interval_s (default 2 s)


def _common() -> argparse.ArgumentParser:
    # accepted before or after the subcommand; SUPPRESS keeps a later default from hiding an earlier value
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the instance's control socket (default: the one instance running, found in /run/lbtui)",
    )
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="take the socket path from this configuration's settings.control_socket",
    )
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return p


def _parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(
        prog="lbtui ctl",
        parents=[common],
        description="Talk to a running lbtui instance over its control socket.",
        epilog="Exit codes: 0 done, 1 refused (with the reason), 2 usage, 3 no instance answers.",
    )
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    sub.add_parser("list", parents=[common], help="the running instances and their sockets (in /run/lbtui)")
    st = sub.add_parser(
        "status",
        parents=[common],
        help="backends per proxy: weight, health, state, rates; p99 over 10 s, 1 min, 5 min beside lifetime",
    )
    st.add_argument("proxy", nargs="?", metavar="PROXY", help="only this proxy")

    f = sub.add_parser(
        "flows",
        parents=[common],
        help="flows in conntrack matching a filter (searched among all of them), biggest first",
    )
    f.add_argument(
        "filter",
        nargs="*",
        metavar="FILTER",
        help="terms that must all match a flow's addresses, proxy, state or protocol (10.0.0.2: :8080 web)",
    )
    f.add_argument("--sort", choices=model.FLOW_SORTS, default="bytes", help="order (default: bytes)")
    f.add_argument("--limit", type=int, default=50, metavar="N", help="rows (default 50; the view holds 200)")

    d = sub.add_parser("drain", parents=[common], help="stop sending new connections to a backend")
    d.add_argument("proxy", metavar="PROXY")
    d.add_argument("backend", metavar="BACKEND", help="as written in the config, e.g. 10.0.2.11:8080")
    d.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="end the drain after S seconds even if flows remain (default: settings.drain_timeout_s)",
    )
    d.add_argument(
        "--cut",
        action="store_true",
        help="at the timeout, cut the connections still open (their conntrack entries are removed)",
    )

    u = sub.add_parser("undrain", parents=[common], help="put a drained backend back in rotation")
    u.add_argument("proxy", metavar="PROXY")
    u.add_argument("backend", metavar="BACKEND")

    w = sub.add_parser(
        "weight",
        parents=[common],
        help="set a backend's weight: N, +N or -N from now, P%% of the configured one",
    )
    w.add_argument("proxy", metavar="PROXY")
    w.add_argument("backend", metavar="BACKEND")
    w.add_argument("weight", metavar="N|+N|-N|P%")

    r = sub.add_parser(
        "ratelimit",
        parents=[common],
        help="set a proxy's rate limits (new connections per second; 0 turns a limit off)",
    )
    r.add_argument("proxy", metavar="PROXY")
    r.add_argument("--per-source", type=_rate, metavar="RATE[/BURST]", help="per client address")
    r.add_argument("--per-backend", type=_rate, metavar="RATE[/BURST]", help="per backend")

    c = sub.add_parser(
        "circuit", parents=[common], help="force a backend's circuit breaker open or closed, or reset it"
    )
    c.add_argument("proxy", metavar="PROXY")
    c.add_argument("backend", metavar="BACKEND")
    c.add_argument("action", choices=("force-open", "force-close", "reset"))

    rl = sub.add_parser("reload", parents=[common], help="reload the configuration file")
    rl.add_argument(
        "--file", metavar="PATH", help="load this file instead of the one the instance started with"
    )
    rl.add_argument(
        "--dry-run",
        action="store_true",
        help="print the changes a reload would make (and what needs a restart); apply nothing",
    )
    ctlverbs.add_parsers(sub, common)
    a = sub.add_parser(
        "announce", parents=[common], help="withdraw a proxy's VIP (or all) from BGP, or announce it again"
    )
    a.add_argument("action", choices=("withdraw", "announce"))
    a.add_argument("proxy", metavar="PROXY", nargs="?", help="default: every VIP")
    sub.add_parser("fingerprint", parents=[common], help="a fingerprint of each selection table")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"seconds must be >= 0, got {text!r}")
    return value


def _rate(text: str) -> tuple[int, int | None]:
    rate, slash, burst = text.partition("/")
    try:
        parsed = int(rate), (int(burst) if slash else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RATE or RATE/BURST (integers), got {text!r}") from None
    if parsed[0] < 0 or (parsed[1] is not None and parsed[1] < 0):
        raise argparse.ArgumentTypeError(f"rates and bursts must be >= 0, got {text!r}")
    return parsed


def _command(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> model.Command:
    match ns.cmd:
        case "drain":
            return model.Drain(ns.proxy, ns.backend, ns.timeout, ns.cut)
        case "undrain":
            return model.Undrain(ns.proxy, ns.backend)
        case "weight":
            try:
                return ctlverbs.weight_command(ns.proxy, ns.backend, ns.weight)
            except ValueError as exc:
                parser.error(str(exc))
        case "circuit":
            return model.CircuitCommand(ns.proxy, ns.backend, ns.action.replace("-", "_"))
        case "ratelimit":
            if ns.per_source is None and ns.per_backend is None:
                parser.error("ratelimit: give --per-source and/or --per-backend")
            src = ns.per_source or (None, None)
            be = ns.per_backend or (None, None)
            return model.SetRateLimit(ns.proxy, src[0], src[1], be[0], be[1])
        case "announce":
            return model.Announce(ns.action, ns.proxy)
        case "reload":
            # the instance runs elsewhere (another cwd): send an absolute path
            return model.Reload(os.path.abspath(ns.file) if ns.file else None, ns.dry_run)
    command = ctlverbs.command(ns)
    if command is None:
        raise AssertionError(ns.cmd)
    return command


def _socket_path(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """--socket, else -c FILE's settings.control_socket, else None: find the running instance."""
    if hasattr(ns, "socket"):
        return str(ns.socket)
    if hasattr(ns, "config"):
        from lbtui.config import ConfigError, load_config

        try:
            return load_config(ns.config).settings.control_socket
        except ConfigError as exc:
            parser.error(f"{ns.config}: {exc}")
        except OSError as exc:
            parser.error(f"cannot read {ns.config}: {exc.strerror}")
    return None


def main(argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run `lbtui ctl ARGV`; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    try:
        ns = parser.parse_args(list(argv))
        path = _socket_path(ns, parser)
        reads = ("list", "status", "flows", "events", "fingerprint") + (
            ("overrides",) if not getattr(ns, "clear", False) else ()
        )
        command = None if ns.cmd in reads else _command(ns, parser)
        query = None
        if ns.cmd == "flows":
            query = model.FlowQuery(text=" ".join(ns.filter), sort=ns.sort)
            if query.problem():
                parser.error(str(query.problem()))
    except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    as_json = getattr(ns, "json", False)
    if ns.cmd == "list":
        try:
            return _list(as_json, out)
        except instances.NotFound as exc:
            print(f"lbtui ctl: {exc}", file=err)
            return EXIT_UNREACHABLE
    if path is None:
        try:
            path = instances.the_socket()
        except instances.NotFound as exc:
            print(f"lbtui ctl: {exc}", file=err)
            return EXIT_USAGE if exc.several else EXIT_UNREACHABLE
    handle = SocketEngineHandle(path)
    try:
        if query is not None:
            return _flows(handle, query, ns.limit, as_json, out)
        if ns.cmd == "events":
            return ctlverbs.events(handle, ns, as_json, out, err)
        if ns.cmd == "overrides" and command is None:
            return ctlverbs.overrides(handle, ns, as_json, out)
        if ns.cmd == "fingerprint":
            return _fingerprints(handle, as_json, out)
        if command is None:
            return _status(handle, ns.proxy, as_json, out, err)
        return _run(handle, command, as_json, out, err)
    except ConnectionError as exc:
        print(f"lbtui ctl: {exc}", file=err)
        return EXIT_UNREACHABLE
    except RemoteError as exc:
        print(f"lbtui ctl: {exc}", file=err)
        return EXIT_REFUSED
    finally:
        handle.close()


def _list(as_json: bool, out: TextIO) -> int:
    found = instances.scan()
    if as_json:
        print(json.dumps([{**asdict(f), "access": f.access} for f in found]), file=out)
    elif found:
        out.write(instances.format_list(found))
    else:
        print(f"no lbtui instance is running (no socket in {instances.run_dir()} answers)", file=out)
    return EXIT_OK


def _run(handle: SocketEngineHandle, command: model.Command, as_json: bool, out: TextIO, err: TextIO) -> int:
    result = handle.submit(command, timeout=30.0)
    if as_json:
        print(json.dumps({**wire.encode_result(result), "command": wire.encode_command(command)}), file=out)
    else:
        listed = isinstance(command, model.Reload) and command.dry_run
        write_result(result, out, err, listed=listed)
    return EXIT_OK if result.ok else EXIT_REFUSED


def write_result(
    result: model.CommandResult, out: TextIO, err: TextIO, prog: str = "lbtui ctl", listed: bool = False
) -> None:
    """The message, then (a dry run, a refused reload) the change list one line each; a reload's
    own message already says its changes."""
    if not (listed or not result.ok):
        result = replace(result, changes=())
    if result.ok:
        print(result.message + (":" if result.changes else ""), file=out)
    else:
        print(f"{prog}: refused: {result.message}" + (":" if result.changes else ""), file=err)
    for change in result.changes:
        print(f"  {change}", file=out if result.ok else err)


def _fingerprints(handle: SocketEngineHandle, as_json: bool, out: TextIO) -> int:
    snap = handle.snapshot()
    tables = [wire.encode_value(t) for t in snap.tables]
    out.write(json.dumps({"tables": tables}) + "\n" if as_json else format_fingerprints(snap))
    return EXIT_OK


def _status(handle: SocketEngineHandle, proxy: str | None, as_json: bool, out: TextIO, err: TextIO) -> int:
    snap = handle.snapshot()
    if proxy is not None:
        svc = snap.service(proxy)
        if svc is None:
            have = ", ".join(s.name for s in snap.services) or "none"
            print(f"lbtui ctl: no proxy named {proxy!r} (have: {have})", file=err)
            return EXIT_REFUSED
        snap = replace(snap, services=(svc,))
    if as_json:
        print(json.dumps({"instance": handle.instance, "snapshot": wire.encode_snapshot(snap)}), file=out)
    else:
        out.write(format_status(snap, handle.instance))
    return EXIT_OK


def _flows(handle: SocketEngineHandle, query: model.FlowQuery, limit: int, as_json: bool, out: TextIO) -> int:
    snap = handle.snapshot(query)
    deadline = time.monotonic() + FLOWS_WAIT_S
    while snap.flow_query != query and time.monotonic() < deadline:
        time.sleep(0.2)  # the engine answers queries from its next conntrack sweep on
        snap = handle.snapshot(query)
    if snap.flow_query != query:
        raise RemoteError(f"the instance did not answer the flow query within {FLOWS_WAIT_S:g} s")
    flows = snap.flows[: max(0, limit)]
    if as_json:
        data = {"matched": snap.flows_matched, "flows": [wire.encode_value(f) for f in flows]}
        print(json.dumps(data), file=out)
    else:
        out.write(format_flows(snap, flows))
    return EXIT_OK


# ---- human summary -------------------------------------------------------------------------------


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
