# SPDX-License-Identifier: Apache-2.0
"""`scripts/demo` in a real terminal (tmux): the Access log pane streams the client's connections.

The demo configures an access log, so within seconds of the console coming up the pane shows CLF
lines that start with the lab client's address; the empty-pane note never shows.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from lbtui.lab import Lab, LabSpec, lab_namespaces
from tests.e2e.test_console import REPO, Tmux, rows
from tests.support.labtools import wait_until

pytestmark = pytest.mark.requires("tmux")

PREFIX = "lcv"


def test_demo_access_log_pane_shows_the_clients_lines() -> None:
    client = Lab(LabSpec(prefix=PREFIX)).client_ips[0]
    tmux = Tmux("lbtui-demo-time-test", f"cd {REPO} && ./scripts/demo --prefix {PREFIX} --rate 20")
    try:
        # setup runs first (fast once installed), then the lab, then the console with its rows
        assert wait_until(lambda: len(rows(tmux.screen())) == 3, timeout=120), tmux.screen()
        tmux.keys("5")
        shown_at = time.monotonic()
        mine = f"{client} - - ["  # CLF: client - - [time] "PROTO vip backend" status bytes
        assert wait_until(lambda: mine in tmux.screen(), timeout=10), tmux.screen()
        took = time.monotonic() - shown_at
        screen = tmux.screen()
        line = next(line for line in screen.splitlines() if mine in line)
        assert '"TCP 10.0.0.1:80 ' in line or '"UDP 10.0.0.1:5353 ' in line, line
        assert "no access log configured" not in screen
        print(f"access log line on screen {took:.1f} s after showing the pane: {line.strip()}")
        tmux.keys("q")
        assert wait_until(lambda: "Quit lbtui?" in tmux.screen(), timeout=10), tmux.screen()
        tmux.keys("y")
        assert wait_until(lambda: not tmux.alive(), timeout=30)
        assert wait_until(lambda: not lab_namespaces(PREFIX), timeout=15)
    finally:
        tmux.kill()
        subprocess.run(["pkill", "-f", f"lbtui demo --prefix {PREFIX}"], capture_output=True)
        wait_until(lambda: not lab_namespaces(PREFIX), timeout=15)
