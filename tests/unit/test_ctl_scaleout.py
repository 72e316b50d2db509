# SPDX-License-Identifier: Apache-2.0
"""`lbtui ctl announce`, `lbtui ctl fingerprint` and the announcement block of `ctl status`, against a
control socket served by the real Engine over the in-memory dataplane."""

from __future__ import annotations

import json
from dataclasses import replace

from lbtui import ctl, model
from lbtui.ctl_scaleout import announce_lines
from tests.support.console_engine import ConsoleEngine
from tests.support.ctl import run_ctl


def test_fingerprint_lists_every_table(sock: str):
    code, out, err = run_ctl(sock, "fingerprint")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["PROXY", "GROUP", "ALGORITHM", "SLOTS", "BACKENDS", "FINGERPRINT"]
    rows = [line.split() for line in lines[1:]]
    assert {(r[0], r[1]) for r in rows} == {("web", "default"), ("web", "192.168.0.0/16"), ("dns", "default")}
    assert all(r[3] == "97" and len(r[5]) == 16 for r in rows)
    code, out, _ = run_ctl(sock, "--json", "fingerprint")
    tables = json.loads(out)["tables"]
    assert {t["fingerprint"] for t in tables} == {r[5] for r in rows}


def test_announce_is_refused_when_announcement_is_off(sock: str, engine: ConsoleEngine):
    code, out, err = run_ctl(sock, "announce", "withdraw", "web")
    assert (code, out) == (1, "")
    assert err == "lbtui ctl: refused: VIP announcement is off (settings.announce.enabled = false)\n"
    assert engine.commands[-1] == model.Announce("withdraw", "web")
    code, _, _ = run_ctl(sock, "announce", "drop")
    assert code == 2  # usage


def test_status_shows_announcements_and_bgp_sessions():
    view = model.AnnounceView(
        enabled=True,
        table=4242,
        vips=(
            model.VipAnnouncement("10.100.0.1", ("web",), True, "web: 3 of 3 backends usable", 3),
            model.VipAnnouncement(
                "10.100.0.2", ("api", "api2"), False, "withdrawn by the operator", 2, held=True
            ),
        ),
        bgp=(model.BgpSessionView("uplink", "Established", "10.1.1.1", 65000, "08:00:01"),),
    )
    snap = model.Snapshot(0.0, 0.0, None, (), model.ConntrackSummary(), ())
    lines = announce_lines(replace(snap, announce=view))
    assert lines == [
        "",
        "announce (table 4242):",
        "  10.100.0.1       ANNOUNCED  web: web: 3 of 3 backends usable",
        "  10.100.0.2       withdrawn  api, api2: withdrawn by the operator  HELD by operator",
        "  BGP uplink       Established 10.1.1.1 AS65000  since 08:00:01",
    ]
    down = replace(view, bgp=(), bird_error="[Errno 2] No such file or directory")
    assert announce_lines(replace(snap, announce=down))[-1] == (
        "  BIRD: cannot read its sessions: [Errno 2] No such file or directory"
    )
    assert announce_lines(snap) == []  # off: nothing in ctl status
    assert "announce (table" in ctl.format_status(replace(snap, announce=view))
