# SPDX-License-Identifier: Apache-2.0
"""A run killed with the fast path on leaves its reply program (lbtui_tc_reply) at TC ingress of the
backend-facing bridge; the next start, with settings.fast_path = "off", adopts the pinned maps and
must remove that program (dataplane/leftover_replies.py), or it would go on SNATing and redirecting
replies through the adopted maps.

Checked in a real lab: the program is there after the kill -9, replaced in place (same preference,
a new program) by a restart with the fast path on, gone after a restart without it (which says so
in its log), requests are served with no reply taking the fast path, and a clean stop leaves no pin.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lbtui.dataplane.fastpath import REPLY_PREF
from lbtui.engine import PIN_ROOT
from lbtui.lab import LabSpec
from tests.support.lab import ClientLab
from tests.support.labtools import global_counter, served, start_lbtui, stop_lbtui, wait_until

pytestmark = pytest.mark.beside  # may run beside other e2e tests (tests/conftest.py)

P = "lfk"
PIN_DIR = f"{PIN_ROOT}/{P}"


def reply_filters(lab: ClientLab) -> str:
    return lab.run(lab.ns_lb, "tc", "filter", "show", "dev", f"{P}br0", "ingress").stdout


def reply_programs(lab: ClientLab) -> dict[int, int]:
    """preference -> program id of the lbtui_tc_reply filters at TC ingress of the bridge."""
    out = lab.run(lab.ns_lb, "tc", "-j", "filter", "show", "dev", f"{P}br0", "ingress").stdout
    return {
        int(f["pref"]): int(f["options"]["prog"]["id"])
        for f in json.loads(out or "[]")
        if f.get("options", {}).get("prog", {}).get("name") == "lbtui_tc_reply"
    }


def test_a_killed_runs_reply_program_is_removed_by_a_start_without_fast_path(tmp_path: Path) -> None:
    lab = ClientLab(LabSpec(prefix=P))
    lab.up()
    cfg, log = tmp_path / "lbtui.toml", tmp_path / "lbtui.log"
    proc = None
    try:
        lab.start_backends()
        cfg.write_text(lab.config_toml(weights=(1, 1, 1)))  # the fast path on (the default)
        proc = start_lbtui(lab, cfg, log)
        assert wait_until(lambda: "lbtui_tc_reply" in reply_filters(lab), timeout=10), log.read_text()
        got = lab.http_requests(30)
        assert got["errors"] == 0 and len(served(got)) == 3, got
        assert global_counter("fast_path_reply_forwarded", PIN_DIR) > 0

        proc.kill()  # kill -9: nothing detached, nothing unpinned
        proc.wait(10)
        killed = reply_programs(lab)
        assert list(killed) == [REPLY_PREF]

        # started again as it was: its reply program replaced in place, at the same preference
        proc = start_lbtui(lab, cfg, log)
        again = reply_programs(lab)
        assert list(again) == [REPLY_PREF] and again != killed, again
        assert "removed the reply program" not in log.read_text()
        proc.kill()
        proc.wait(10)

        cfg.write_text(lab.config_toml(weights=(1, 1, 1), fast_path="off"))
        proc = start_lbtui(lab, cfg, log)
        text = log.read_text()
        assert "took over the data path of an earlier run" in text
        assert "lbtui_tc_reply" not in reply_filters(lab)
        assert f"removed the reply program an earlier run left on TC ingress of {P}br0" in text, text
        before = global_counter("fast_path_reply_forwarded", PIN_DIR)
        # 30 requests leave a backend out 1 run in 60,000 (3 x (2/3)^30)
        got = lab.http_requests(30)
        assert got["errors"] == 0 and len(served(got)) == 3, got
        assert global_counter("fast_path_reply_forwarded", PIN_DIR) == before
        stop_lbtui(proc, log, P)
        proc = None
        assert not Path(PIN_DIR).exists()  # the clean stop unpinned everything
    finally:
        try:
            if proc is not None:
                stop_lbtui(proc, log, P)
        finally:
            shutil.rmtree(PIN_DIR, ignore_errors=True)  # a failed restart leaves the killed run's pins
            lab.down()
