# SPDX-License-Identifier: Apache-2.0
"""sd_notify: datagrams on NOTIFY_SOCKET (path and abstract), the watchdog interval, and headless pings."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

from lbtui import model
from lbtui.headless import run_headless
from lbtui.sdnotify import Notifier


def test_nothing_without_notify_socket() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready("x") and n.watchdog_s is None


def test_messages_reach_a_path_socket_and_an_abstract_one(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    for address, bind_to in ((path, path), ("@lbtui-test-notify", "\0lbtui-test-notify")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(bind_to)
            server.settimeout(5)
            n = Notifier({"NOTIFY_SOCKET": address})
            assert n.ready("running: 1 proxies")
            assert server.recv(4096).decode().split("\n") == [
                "READY=1",
                "STATUS=running: 1 proxies",
                f"MAINPID={os.getpid()}",
            ]
            n.close()


def test_watchdog_interval_only_for_this_process() -> None:
    assert Notifier({"WATCHDOG_USEC": "20000000"}).watchdog_s == 20.0
    assert Notifier({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 20.0
    assert Notifier({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}).watchdog_s is None


class _Handle:
    """An EngineHandle stand-in whose engine stops after a while."""

    def __init__(self) -> None:
        self.closed = False

    def snapshot(self, flows: model.FlowQuery | None = None) -> model.Snapshot:
        return model.Snapshot(
            taken_at=1.0,
            started_at=0.0,
            config_path=None,
            services=(),
            conntrack=model.ConntrackSummary(),
            flows=(),
        )

    def submit(self, command: model.Command, timeout: float = 10.0) -> model.CommandResult:
        return model.CommandResult(True, "ok")

    def events_since(self, seq: int, limit: int = 1000) -> list[model.Event]:
        return []

    def close(self) -> None:
        self.closed = True


def test_headless_pings_the_watchdog_only_while_the_engine_ticks(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(0.1)
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})  # ping every 0.1 s
        beat = {"t": time.monotonic(), "ticking": True}
        t0 = time.monotonic()

        def heartbeat() -> float:
            if beat["ticking"]:
                beat["t"] = time.monotonic()
            return beat["t"]

        def stuck_after_1s() -> None:
            time.sleep(1.0)
            beat["ticking"] = False  # the engine loop hangs

        got: list[tuple[float, str]] = []
        done = threading.Event()

        def receive() -> None:  # as systemd does: read as they come (the queue holds only a few)
            while not done.is_set():
                try:
                    got.append((time.monotonic(), server.recv(4096).decode()))
                except TimeoutError:
                    pass

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        threading.Thread(target=stuck_after_1s, daemon=True).start()
        handle = _Handle()
        alive = lambda: time.monotonic() - t0 < 2.0  # noqa: E731
        try:
            assert run_headless(handle, 0.5, alive, notifier=notifier, heartbeat=heartbeat) == 0  # type: ignore[arg-type]
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # run_headless installed its handlers
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            time.sleep(0.3)
            done.set()
            receiver.join(5)
    assert handle.closed
    pings = [m for _, m in got if m == "WATCHDOG=1"]
    # about 10 pings while it ticked (1 s at 0.1 s), then none once the heartbeat is 0.2 s stale
    assert 5 <= len(pings) <= 14, got
    assert not any(m.startswith("STATUS=") for _, m in got)  # every 5 s: not within these 2 s
    assert got[-1][1].startswith("STOPPING=1\n")
