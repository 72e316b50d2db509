# SPDX-License-Identifier: Apache-2.0
"""`lbtui -c FILE [--no-ui]`: the instance's life (README.md#command-line, docs/architecture.md#stopping).

The host checks first, then the control socket(s), then the engine (programs attached, first tables
written), then a front end (the console or headless) until it stops; everything is undone in the
reverse order on the way out, whatever ends it. A resource busy at start is exit 4 (systemd retries).
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from lbtui import exitcodes, hostcheck
from lbtui.config import Config
from lbtui.console import run_console
from lbtui.stopping import Stopper

if TYPE_CHECKING:
    from lbtui.control_socket import ControlServer
    from lbtui.sdnotify import Notifier

# a busy resource at start (port, socket, an interface's XDP slot): systemd retries (exitcodes.py)
TEMPORARY_ERRNOS = (errno.EADDRINUSE, errno.EBUSY, errno.EAGAIN)

log = logging.getLogger("lbtui")


def run(
    config: Config,
    no_ui: bool,
    stats_interval_s: float = 10.0,
    keep_dataplane: bool = False,
    socket_path: str | None = None,
    stopper: Stopper | None = None,
    peers: Mapping[str, str] | None = None,
) -> int:
    """Start the engine for `config`, serve the control socket, run a front end until it stops.

    A stop (`stopper`: SIGTERM, SIGINT) at any moment ends it with exit 0 and, unless
    keep_dataplane, nothing attached or pinned (docs/architecture.md#stopping)."""
    from lbtui.sdnotify import Notifier

    stopper = stopper or Stopper()
    notifier = Notifier()  # systemd Type=notify; does nothing elsewhere
    try:
        return _run(
            config, no_ui, stats_interval_s, keep_dataplane, socket_path, stopper, notifier, peers or {}
        )
    finally:
        notifier.close()


def _run(
    config: Config,
    no_ui: bool,
    stats_interval_s: float,
    keep_dataplane: bool,
    socket_path: str | None,
    stopper: Stopper,
    notifier: Notifier,
    peers: Mapping[str, str],
) -> int:
    """Start the engine for `config`, serve the control socket, run a front end until it stops."""
    from lbtui.control_socket import ControlServer, SocketInUse, resolve_group
    from lbtui.dataplane import DataplaneError
    from lbtui.engine import Engine, default_state_file, instance_name, kernel_dataplane
    from lbtui.runner import EngineRunner, StartCancelled

    code = _preflight(config, socket_path)
    if code != exitcodes.OK or _stopped(stopper, notifier):
        return code
    notifier.status("starting: compiling and attaching the data path")
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
    info = {"instance": instance_name(path), "config": config.path}
    servers = [ControlServer(runner, path, instance=info)]
    ro = config.settings.read_only
    if ro.socket is not None:
        group = resolve_group(ro.group or "")  # the host checks made sure it exists
        servers.append(ControlServer(runner, ro.socket, instance=info, read_only=True, group=group))
    try:
        for server in servers:  # first: a live instance on the same socket must stop us before the kernel
            server.start()
    except SocketInUse as exc:
        print(f"lbtui: {exc}", file=sys.stderr)
        _stop_all(servers)
        return exitcodes.TEMPORARY
    except OSError as exc:
        print(f"lbtui: cannot serve the control socket {server.path}: {exc}", file=sys.stderr)
        _stop_all(servers)
        return exitcodes.HOST
    try:
        try:
            with stopper.while_running(runner.cancel_start):
                runner.start()  # returns once the programs are attached and the first tables written
        except StartCancelled:
            log.info("%s while starting: the start was undone", stopper.describe())
            return exitcodes.OK
        except DataplaneError as exc:
            print(f"lbtui: {exc}", file=sys.stderr)
            return exitcodes.HOST
        except OSError as exc:
            print(f"lbtui: cannot start: {exc}", file=sys.stderr)
            return exitcodes.TEMPORARY if exc.errno in TEMPORARY_ERRNOS else exitcodes.HOST
        except (RuntimeError, ValueError) as exc:
            print(f"lbtui: cannot start: {exc}", file=sys.stderr)
            return exitcodes.HOST
        if _stopped(stopper, notifier):
            log.info("%s: stopping", stopper.describe())
            return exitcodes.OK
        from lbtui.headless import run_headless, status_line

        notifier.ready(f"running: {status_line(runner.snapshot())}")
        if no_ui:
            return run_headless(
                runner,
                stats_interval_s,
                is_alive=lambda: runner.engine.running,
                notifier=notifier,
                heartbeat=lambda: runner.engine.heartbeat,
                stopper=stopper,
            )
        return run_console(
            runner,
            title=f"lbtui — {config.path}",
            refresh_s=config.settings.console.refresh_s,
            stopper=stopper,
            peers=peers,
        )
    finally:
        _stopped(stopper, notifier)
        runner.close()
        _stop_all(servers)


def _stopped(stopper: Stopper, notifier: Notifier) -> bool:
    """Whether a stop was requested; if so, say so to systemd (once: Notifier.stopping)."""
    if stopper.requested:
        notifier.stopping(f"stopping ({stopper.describe()}): detaching the programs")
    return stopper.requested


def _stop_all(servers: list[ControlServer]) -> None:
    for server in servers:
        server.stop()


def _preflight(config: Config, socket_path: str | None) -> int:
    """The host checks of --check, before anything is touched: errors end the start with their code."""
    checks = hostcheck.run_checks(config, socket_path=socket_path)
    for c in checks:
        where = f"{c.key_path}: " if c.key_path else ""
        if c.status == hostcheck.ERROR:
            print(f"lbtui: {c.name}: {where}{c.message}", file=sys.stderr)
        elif c.status == hostcheck.WARNING:
            log.warning("%s: %s%s", c.name, where, c.message)
    code = hostcheck.exit_code(checks)
    if code != exitcodes.OK:
        return code
    try:
        for change in hostcheck.manage_sysctls(config):
            log.warning(change)
    except OSError as exc:
        print(f"lbtui: settings.manage_sysctls: cannot set {hostcheck.IP_FORWARD}: {exc}", file=sys.stderr)
        return exitcodes.HOST
    return exitcodes.OK
