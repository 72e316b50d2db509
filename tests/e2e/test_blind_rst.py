# SPDX-License-Identifier: Apache-2.0
"""Blind resets and a RST+SYN takeover do not end or move a connection (issue 12, must show 3).

A client's keep-alive connection gets spoofed RSTs with random sequence numbers (outside the
window the data path tracks) and then a RST followed by a SYN on its own tuple, all with its own
addresses. The data path drops the RSTs (`rst_out_of_window`) and passes the SYN to the flow's
backend (which answers with a challenge ACK): the next request on the same connection is answered
by the same backend, and the drops show in the snapshot and in the metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.labtools import running_lb, wait_until

pytestmark = pytest.mark.beside  # may run beside other e2e tests (tests/conftest.py)

METRICS = "127.0.0.1:9131"
RESETS = 3


def test_blind_rst_and_rst_syn_takeover_fail(tmp_path: Path) -> None:
    with running_lb("lrs", tmp_path, metrics_listen=METRICS) as (lab, handle):
        cmd = lab.python_cmd("-m", "tests.support.labclients", "blindrst", "--resets", str(RESETS))
        r = lab.run(lab.client_ns(1), *cmd, timeout=60)
        got = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"\nblind resets: {got}")
        assert got["errors"] == 0 and got["second"] == got["first"], got

        def drops() -> dict[str, int]:
            web = handle.snapshot().service("web")
            return dict(web.drops) if web is not None else {}

        assert wait_until(lambda: drops().get("rst_out_of_window", 0) >= RESETS + 1, timeout=3.0), drops()
        assert not drops().get("tcp_flags") and not drops().get("bad_checksum"), drops()
        page = lab.run(lab.ns_lb, "curl", "-sf", f"http://{METRICS}/metrics").stdout
        line = next(
            (x for x in page.splitlines() if x.startswith("lbtui_drops_total{") and "rst_out_of_window" in x),
            None,
        )
        print(line)
        assert line is not None and float(line.rsplit(" ", 1)[1]) >= RESETS + 1, page
