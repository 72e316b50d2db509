# SPDX-License-Identifier: Apache-2.0
"""The console's entry points: embedded in `lbtui -c FILE` (run_console) and `lbtui attach` on a
running instance over its control socket; `--peer NAME=SOCKET` shows other instances under the header
(docs/scale-out.md#the-demo). Textual is imported only when the console runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import nullcontext

from lbtui import exitcodes
from lbtui.stopping import Stopper


def peer_sockets(specs: Sequence[str]) -> dict[str, str]:
    """`--peer NAME=SOCKET` values as {name: socket}; ValueError names a malformed one."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--peer {spec!r}: expected NAME=SOCKET")
        if name in out:
            raise ValueError(f"--peer {name}: given twice")
        out[name] = path
    return out


def run_console(
    handle: object,
    title: str = "lbtui",
    refresh_s: float = 1.0,
    attached: bool = False,
    stopper: Stopper | None = None,
    read_only: bool = False,
    peers: Mapping[str, str] | None = None,
) -> int:
    """The console until it quits, or until a stop (`stopper`) ends it the way quitting does (the
    terminal is given back as it was). peers: other instances' control sockets, shown by name."""
    from lbtui.app import LbtuiApp
    from lbtui.control_client import SocketEngineHandle

    if stopper is not None and stopper.requested:
        return exitcodes.OK
    if sys.stderr.isatty():
        # Textual sizes the screen from COLUMNS/LINES when they are set; a value exported by some
        # parent (tmux, test runners, scripts) would pin the console to a stale size
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)
    app = LbtuiApp(
        handle,  # type: ignore[arg-type]
        refresh_s=refresh_s,
        title=title,
        attached=attached,
        read_only=read_only,
        peers={name: SocketEngineHandle(path, connect_timeout=1.0) for name, path in (peers or {}).items()},
    )

    async def serve() -> None:
        loop = asyncio.get_running_loop()

        def exit_app() -> None:
            # a signal is handled on this thread, between two steps of the app's loop: schedule it
            loop.call_soon_threadsafe(app.exit)

        with stopper.while_running(exit_app) if stopper else nullcontext():
            await app.run_async()

    try:
        asyncio.run(serve())
    finally:
        for peer in app.peers.values():
            peer.close()
    return exitcodes.OK


def attach(ns: argparse.Namespace, stopper: Stopper | None = None) -> int:
    """`lbtui attach`: the same console over the control socket; quitting leaves the instance running."""
    from lbtui import instances
    from lbtui.control_client import SocketEngineHandle

    path = ns.socket
    if path is None:
        try:
            path = instances.the_socket()
        except instances.NotFound as exc:
            print(f"lbtui attach: {exc}", file=sys.stderr)
            return exitcodes.USAGE if exc.several else exitcodes.HOST
    stopper = stopper or Stopper()
    stopper.install(hup_stops=True)
    handle = SocketEngineHandle(path)
    try:
        info = handle.hello()
    except (ConnectionError, OSError) as exc:
        print(f"lbtui attach: {exc}", file=sys.stderr)
        return exitcodes.HOST
    read_only = ns.read_only or info.get("read_only") is True
    try:
        peers = peer_sockets(ns.peer)
    except ValueError as exc:
        print(f"lbtui attach: {exc}", file=sys.stderr)
        handle.close()
        return exitcodes.USAGE
    try:
        return run_console(
            handle,
            title=f"lbtui — attached to {info.get('instance', path)}",
            refresh_s=ns.refresh,
            attached=True,
            stopper=stopper,
            read_only=read_only,
            peers=peers,
        )
    finally:
        handle.close()
