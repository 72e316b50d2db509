# SPDX-License-Identifier: Apache-2.0
"""Live flow counts come from the data path (issue 15): a drain reports connections opened a moment
ago, and a handshake nobody completed is no active flow."""

from __future__ import annotations

import re
import time
from pathlib import Path

from lbtui import model
from tests.support.labtools import running_lb, wait_until

HELD = 6


def test_drain_counts_connections_opened_a_moment_ago(tmp_path: Path) -> None:
    with running_lb("llc", tmp_path) as (lab, handle):
        held = lab.hold(HELD, seconds=20)
        opened = held.opened()
        assert opened["errors"] == 0, opened
        t0 = time.monotonic()
        continuing = 0
        for i in lab.backend_ids:
            r = handle.submit(model.Drain("web", f"{lab.backend_ip(i)}:8080", timeout_s=60))
            assert r.ok, r.message
            m = re.search(r"(\d+) flows continue", r.message)
            assert m is not None, r.message
            continuing += int(m.group(1))
        took = time.monotonic() - t0
        print(f"\ndrain counts {continuing} flows of {HELD} held, {took * 1000:.0f} ms after they opened")
        assert continuing == HELD and took < 1.0
        # the published snapshot follows within a second (a control tick reads the counts)

        def active() -> int:
            web = handle.snapshot().service("web")
            return web.active_flows if web is not None else -1

        assert wait_until(lambda: active() == HELD, timeout=2.0), active()
        held.stop()
