"""Command line (README.md#command-line).

    lbtui -c FILE                 console with the engine embedded
    lbtui -c FILE --no-ui         headless
    lbtui --check -c FILE         validate only
    lbtui demo [--no-ui]          the demo lab with the load balancer on it
    lbtui ctl [--socket P] CMD    talk to a running instance
    lbtui attach [--socket P]     the console, on a running instance

Exit codes: 0 clean stop, 1 bad config (ctl: command refused), 2 usage, 3 kernel/privilege problem
(ctl/attach: no instance answers).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from lbtui.config import Config, ConfigError, load_config

EXIT_OK, EXIT_CONFIG, EXIT_USAGE, EXIT_KERNEL = 0, 1, 2, 3

log = logging.getLogger("lbtui")


def _main_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtui",
        description="Layer-4 load balancer (XDP/TC data path) with an operator console.",
        epilog="Other commands: `lbtui demo [--no-ui]`, `lbtui ctl ...`, `lbtui attach`.",
    )
    p.add_argument("-c", "--config", metavar="FILE", help="configuration file (TOML)")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("--no-ui", action="store_true", help="run headless (logs to stderr)")
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
    p.add_argument("--prefix", default="lbtd", help="name prefix of the lab's namespaces (default lbtd)")
    p.add_argument("--rate", type=float, default=20.0, help="background requests per second (default 20)")
    p.add_argument("--stats-interval", type=float, default=10.0, metavar="S")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _attach_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtui attach", description="The console, driving an instance that is already running."
    )
    p.add_argument("--socket", metavar="PATH", default="/run/lbtui/lbtui.sock")
    p.add_argument("--refresh", type=float, default=1.0, metavar="S", help="refresh interval (default 1 s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "demo":
        from lbtui.demo import run_demo

        dargs = _demo_parser().parse_args(args[1:])
        _setup_logging(dargs.verbose, quiet=not dargs.no_ui)
        return run_demo(
            no_ui=dargs.no_ui,
            prefix=dargs.prefix,
            rate=dargs.rate,
            stats_interval_s=dargs.stats_interval,
            duration_s=dargs.duration,
        )
    if args and args[0] == "ctl":
        from lbtui import ctl

        return ctl.main(args[1:])
    if args and args[0] == "attach":
        return attach(_attach_parser().parse_args(args[1:]))
    parser = _main_parser()
    ns = parser.parse_args(args)
    if not ns.config:
        parser.error("-c FILE is required")
    try:
        config = load_config(ns.config)
    except ConfigError as exc:
        print(f"lbtui: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    if ns.check:
        print(f"{ns.config}: ok ({len(config.proxies)} proxies)")
        return EXIT_OK
    _setup_logging(ns.verbose, quiet=not ns.no_ui)
    return run(
        config,
        no_ui=ns.no_ui,
        stats_interval_s=ns.stats_interval,
        keep_dataplane=ns.keep_dataplane,
        socket_path=ns.socket,
    )


def _setup_logging(verbose: bool, quiet: bool) -> None:
    from lbtui.headless import configure_logging

    # with the console on screen, only warnings reach stderr (the console shows the events)
    configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def run(
    config: Config,
    no_ui: bool,
    stats_interval_s: float = 10.0,
    keep_dataplane: bool = False,
    socket_path: str | None = None,
) -> int:
    """Start the engine for `config`, serve the control socket, run a front end until it stops."""
    from lbtui.control_socket import ControlServer, SocketInUse
    from lbtui.dataplane import DataplaneError, check_privileges
    from lbtui.engine import Engine, default_state_file, instance_name, kernel_dataplane
    from lbtui.runner import EngineRunner

    problem = check_privileges()
    if problem:
        print(f"lbtui: {problem}", file=sys.stderr)
        return EXIT_KERNEL
    # the instance is the socket it serves: its pins follow that path, not the file's setting
    path = socket_path or config.settings.control_socket
    # with the console on the terminal, the access log may not write to stdout
    engine = Engine(
        config,
        kernel_dataplane(config, path),
        allow_stdout=no_ui,
        keep_dataplane=keep_dataplane,
        state_file=default_state_file(path),
    )
    runner = EngineRunner(engine)
    server = ControlServer(runner, path, instance={"instance": instance_name(path), "config": config.path})
    try:
        server.start()  # first: a live instance on the same socket must stop us before we touch the kernel
    except SocketInUse as exc:
        print(f"lbtui: {exc}", file=sys.stderr)
        return EXIT_KERNEL
    except OSError as exc:
        print(f"lbtui: cannot serve the control socket {path}: {exc}", file=sys.stderr)
        return EXIT_KERNEL
    try:
        try:
            runner.start()
        except DataplaneError as exc:
            print(f"lbtui: {exc}", file=sys.stderr)
            return EXIT_KERNEL
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"lbtui: cannot start: {exc}", file=sys.stderr)
            return EXIT_KERNEL
        if no_ui:
            from lbtui.headless import run_headless

            return run_headless(runner, stats_interval_s, is_alive=lambda: runner.engine.running)
        return run_console(
            runner, title=f"lbtui — {config.path}", refresh_s=config.settings.console.refresh_s
        )
    finally:
        runner.close()
        server.stop()


def run_console(handle: object, title: str = "lbtui", refresh_s: float = 1.0, attached: bool = False) -> int:
    from lbtui.app import LbtuiApp

    if sys.stderr.isatty():
        # Textual sizes the screen from COLUMNS/LINES when they are set; a value exported by some
        # parent (tmux, test runners, scripts) would pin the console to a stale size
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)
    app = LbtuiApp(handle, refresh_s=refresh_s, title=title, attached=attached)  # type: ignore[arg-type]
    app.run()
    return EXIT_OK


def attach(ns: argparse.Namespace) -> int:
    """`lbtui attach`: the same console over the control socket; quitting leaves the instance running."""
    from lbtui.control_socket import SocketEngineHandle

    handle = SocketEngineHandle(ns.socket)
    try:
        info = handle.hello()
    except (ConnectionError, OSError) as exc:
        print(f"lbtui attach: {exc}", file=sys.stderr)
        return EXIT_KERNEL
    try:
        return run_console(
            handle,
            title=f"lbtui — attached to {info.get('instance', ns.socket)}",
            refresh_s=ns.refresh,
            attached=True,
        )
    finally:
        handle.close()


if __name__ == "__main__":
    sys.exit(main())
