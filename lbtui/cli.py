# SPDX-License-Identifier: Apache-2.0
"""Command line (README.md#command-line).

    lbtui -c FILE                 console with the engine embedded
    lbtui -c FILE --no-ui         headless
    lbtui --check -c FILE         validate the file and check the host (--json, --config-only)
    lbtui --check --diff -c FILE  what a reload of the file would change in the running instance
    lbtui demo [--no-ui]          the demo lab with the load balancer on it
    lbtui demo --hosts 3          the scale-out lab: 3 hosts behind a BGP/ECMP router, DSR over IPIP
    lbtui ctl [--socket P] CMD    talk to a running instance
    lbtui ctl list                the running instances (their sockets in /run/lbtui)
    lbtui attach [--socket P] [--read-only]   the console, on a running instance (found when only one runs)
    lbtui backend-setup ...       on a DSR backend: VIPs on lo, ARP settings, IPIP decapsulation

Exit codes (lbtui/exitcodes.py): 0 clean stop, 1 bad configuration, 2 usage, 3 the host is not ready
(privileges, kernel, interfaces, IP forwarding), 4 a resource is busy (metrics port, control socket).
`ctl` and `attach`: 1 command refused, 3 no instance answers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lbtui import __version__, exitcodes, hostcheck
from lbtui.check import check, diff
from lbtui.config import ConfigError, load_config
from lbtui.console import attach, peer_sockets
from lbtui.serve import run
from lbtui.stopping import Stopper


def _main_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtui",
        description="Layer-4 load balancer (XDP/TC data path) with an operator console.",
        epilog="Other commands: `lbtui demo [--no-ui]`, `lbtui ctl ...`, `lbtui attach`.",
    )
    p.add_argument("--version", action="version", version=f"lbtui {__version__}")
    p.add_argument("-c", "--config", metavar="FILE", help="configuration file (TOML)")
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the configuration and check the host (interfaces, IP forwarding, kernel headers, "
        "ports), then exit with the code a start would have",
    )
    p.add_argument("--json", action="store_true", help="with --check: the report as JSON")
    p.add_argument("--config-only", action="store_true", help="with --check: the file only, not this host")
    p.add_argument(
        "--diff",
        action="store_true",
        help="with --check: what a reload of the file would change in the running instance (applies nothing)",
    )
    p.add_argument("--no-ui", action="store_true", help="run headless (logs to stderr)")
    _add_peer_option(p)
    p.add_argument("--socket", metavar="PATH", help="control socket (default: settings.control_socket)")
    p.add_argument(
        "--keep-dataplane",
        action="store_true",
        help="on stop, leave the programs attached and the maps pinned (a restart adopts them)",
    )
    p.add_argument(
        "--stats-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="headless: seconds between stats lines (default 10)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtui demo",
        description=(
            "Build a lab of network namespaces (a client, the load-balancer host, three HTTP/UDP backends), "
            "run lbtui on it with light background traffic, and remove everything on exit."
        ),
    )
    p.add_argument("--no-ui", action="store_true", help="run headless")
    p.add_argument(
        "--hosts",
        type=int,
        default=1,
        metavar="N",
        help="load-balancer hosts; 2-9: the scale-out lab (a BGP router spreading the VIP over N hosts with "
        "ECMP, DSR over IPIP, Maglev), the console on host 1 showing the others (docs/scale-out.md#the-demo)",
    )
    p.add_argument(
        "--prefix", default=None, help="name prefix of the lab's namespaces (default lbtd; lbtx with --hosts)"
    )
    p.add_argument("--rate", type=float, default=20.0, help="background requests per second (default 20)")
    p.add_argument("--stats-interval", type=float, default=10.0, metavar="S")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _attach_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtui attach", description="The console, driving an instance that is already running."
    )
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="the instance's control socket (default: the one running, in /run/lbtui)",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="watch only: the keys that change traffic are hidden (always so on a read-only socket)",
    )
    p.add_argument("--refresh", type=float, default=1.0, metavar="S", help="refresh interval (default 1 s)")
    _add_peer_option(p)
    return p


def _add_peer_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=SOCKET",
        help="console: show another instance's state under the header (its BGP sessions, VIPs announced, "
        "flows, new/s), read from its control socket; repeatable (docs/scale-out.md#the-demo)",
    )


# shtab's completion actions (shtab.FILE, shtab.DIRECTORY), without importing shtab at run time
_FILE = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}


def manpage_parser() -> argparse.ArgumentParser:
    """The whole command line in one parser, for the man page (argparse-manpage) and the shell
    completions (shtab) that scripts/package generates. main() dispatches `demo`, `ctl` and `attach`
    itself before it parses, so each keeps its own parser; this one only describes them together."""
    from lbtui import ctl

    p = _main_parser()
    p.description = (
        "A layer-4 (TCP/UDP) load balancer for one Linux host: XDP picks a backend and rewrites the "
        "destination, TC egress rewrites replies back to the VIP, and a control plane keeps the BPF maps in "
        "step with the configuration (health checks, circuit breakers, draining, DNS, rate limits, hot "
        "reload). It runs with its operator console, or headless under systemd (--no-ui)."
    )
    p.epilog = None
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, parser, text in (
        ("ctl", ctl._parser(), "talk to a running instance over its control socket"),
        ("attach", _attach_parser(), "the console, on an instance that is already running"),
        ("demo", _demo_parser(), "a lab of network namespaces with lbtui on it"),
    ):
        sub.add_parser(name, parents=[parser], add_help=False, help=text, description=parser.description)
    for parser in (p, *sub.choices.values()):
        for action in parser._actions:
            if {"-c", "--config", "--file", "--socket"} & set(action.option_strings):
                action.complete = _FILE  # type: ignore[attr-defined]
    return p


def main(argv: Sequence[str] | None = None, stopper: Stopper | None = None) -> int:
    """The lbtui command. stopper: the signal handlers lbtui/__main__.py took before any import."""
    args = list(sys.argv[1:] if argv is None else argv)
    stopper = stopper or Stopper()
    if args and args[0] == "demo":
        from lbtui.demo import run_demo

        dparser = _demo_parser()
        dargs = dparser.parse_args(args[1:])
        _setup_logging(dargs.verbose, quiet=not dargs.no_ui)
        if dargs.hosts > 1:
            from lbtui.demo_scaleout import run_scaleout_demo
            from lbtui.scaleout_lab import MAX_HOSTS

            if dargs.hosts > MAX_HOSTS:
                dparser.error(f"--hosts {dargs.hosts}: at most {MAX_HOSTS}")
            return run_scaleout_demo(
                stopper,
                no_ui=dargs.no_ui,
                hosts=dargs.hosts,
                prefix=dargs.prefix or "lbtx",
                rate=dargs.rate,
                stats_interval_s=dargs.stats_interval,
                duration_s=dargs.duration,
            )
        if dargs.hosts < 1:
            dparser.error(f"--hosts {dargs.hosts}: at least 1")
        return run_demo(
            stopper,
            no_ui=dargs.no_ui,
            prefix=dargs.prefix or "lbtd",
            rate=dargs.rate,
            stats_interval_s=dargs.stats_interval,
            duration_s=dargs.duration,
        )
    if args and args[0] == "ctl":
        from lbtui import ctl

        stopper.release()
        return ctl.main(args[1:])
    if args and args[0] == "attach":
        return attach(_attach_parser().parse_args(args[1:]), stopper)
    if args and args[0] == "backend-setup":
        from lbtui import backend_setup

        stopper.release()  # it changes the host in steps of its own: signals act as they would
        return backend_setup.main(args[1:])
    parser = _main_parser()
    ns = parser.parse_args(args)
    if not ns.config:
        parser.error("-c FILE is required")
    if (ns.json or ns.config_only or ns.diff) and not ns.check:
        parser.error("--json, --config-only and --diff go with --check")
    if ns.peer and (ns.no_ui or ns.check):
        parser.error("--peer goes with the console")
    try:
        peers = peer_sockets(ns.peer)
    except ValueError as exc:
        parser.error(str(exc))
    if ns.check:
        stopper.release()
    else:
        stopper.install(hup_stops=not ns.no_ui)  # a signal is a clean stop, never a kill
    try:
        config = load_config(ns.config)
    except ConfigError as exc:
        if ns.check and ns.json:
            issues = [{"key_path": i.key_path, "message": i.message, "file": i.file} for i in exc.issues]
            print(hostcheck.report_json(ns.config, [], issues))
        else:
            print(f"lbtui: invalid configuration:\n{exc}", file=sys.stderr)
        return exitcodes.CONFIG
    if ns.check and ns.diff:
        return diff(ns.config, ns.socket or config.settings.control_socket, as_json=ns.json)
    if ns.check:
        return check(config, ns.config, as_json=ns.json, host=not ns.config_only, socket_path=ns.socket)
    _setup_logging(ns.verbose, quiet=not ns.no_ui)
    return run(
        config,
        no_ui=ns.no_ui,
        stats_interval_s=ns.stats_interval,
        keep_dataplane=ns.keep_dataplane,
        socket_path=ns.socket,
        stopper=stopper,
        peers=peers,
    )


def _setup_logging(verbose: bool, quiet: bool) -> None:
    from lbtui.headless import configure_logging

    # with the console on screen, only warnings reach stderr (the console shows the events)
    configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
