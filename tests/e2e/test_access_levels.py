# SPDX-License-Identifier: Apache-2.0
"""Access levels and finding the instance end to end (issue 19, must-show 3).

`lbtui --no-ui` runs in a lab with a read-only socket for one group. A non-root user in that group
(setpriv: uid 65534 with the group as a supplementary one) reads status, flows and events over it
and attaches the console read-only in a real terminal (tmux); its drain is refused; a user outside
the group is refused at connect. `lbtui demo --no-ui` prints its attach command, and `lbtui ctl`
without --socket finds the demo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbtui.control_client import SocketEngineHandle
from lbtui.lab import LabSpec
from tests.e2e.test_console import Tmux, rows
from tests.support.lab import ClientLab
from tests.support.labtools import start_lbtui, wait_until

pytestmark = pytest.mark.alone  # `ctl` without --socket must find this module's instance alone

PREFIX = "lal"
GROUP = 47121  # a gid no account has; the test user gets it as a supplementary group
NOBODY = 65534
REPO = Path(__file__).resolve().parents[2]


def as_user(groups: str | None) -> list[str]:
    who = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}"]
    return who + ([f"--groups={groups}"] if groups else ["--clear-groups"])


def ctl_as(groups: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*as_user(groups), sys.executable, "-m", "lbtui", "ctl", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "HOME": "/tmp"},
    )


@pytest.mark.requires("setpriv", "tmux")
def test_a_group_member_reads_and_attaches_read_only_and_others_are_refused(tmp_path: Path) -> None:
    lab = ClientLab(LabSpec(prefix=PREFIX, second_client=False))
    ro = f"/run/lbtui/{PREFIX}-ro.sock"
    lab.up()
    proc = None
    tmux = None
    try:
        lab.start_backends()
        cfg = tmp_path / "lbtui.toml"
        text = lab.config_toml(weights=(1, 1, 1)).replace(
            "[settings]\n", "[settings]\nsweep_interval_s = 0.25\n", 1
        )
        cfg.write_text(text + f'\n[settings.read_only]\nsocket = "{ro}"\ngroup = "{GROUP}"\n')
        os.chmod(tmp_path, 0o755)
        log = tmp_path / "lbtui.log"
        log.write_text("")
        proc = start_lbtui(lab, cfg, log)
        member = str(GROUP)
        b1 = f"{lab.backend_ip(1)}:8080"

        status = ctl_as(member, "--socket", ro, "status", "web")
        assert status.returncode == 0, status
        assert b1 in status.stdout and "PKT/S" in status.stdout
        held = lab.hold(12, seconds=30.0)
        held.opened()
        flows = ctl_as(member, "--socket", ro, "--json", "flows", f"{lab.client_ips[0]}:", "established")
        assert flows.returncode == 0, flows
        assert json.loads(flows.stdout)["matched"] == 12
        events = ctl_as(member, "--socket", ro, "--json", "events")
        assert events.returncode == 0, events
        assert any(json.loads(line)["kind"] for line in events.stdout.splitlines())

        drain = ctl_as(member, "--socket", ro, "drain", "web", b1)
        assert drain.returncode == 1, drain
        assert "lbtui ctl: refused: this is the read-only socket" in drain.stderr
        root = SocketEngineHandle(lab.control_socket)
        try:
            backend = root.snapshot().backend("web", b1)
            assert backend is not None and backend.drain.value == "active"
        finally:
            root.close()

        outsider = ctl_as(None, "--socket", ro, "status")
        assert outsider.returncode == 3 and "permission denied" in outsider.stderr, outsider
        assert ctl_as(member, "--socket", lab.control_socket, "status").returncode == 3

        # `ctl list` (root) sees both sockets of the one instance
        listing = subprocess.run(
            [sys.executable, "-m", "lbtui", "ctl", "--json", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        mine = {f["socket"]: f for f in json.loads(listing.stdout) if f["socket"] in (ro, lab.control_socket)}
        assert {f["access"] for f in mine.values()} == {"operator", "read-only"}
        assert len({f["pid"] for f in mine.values()}) == 1

        # the console over the read-only socket: read-only by itself
        command = " ".join([*as_user(member), "env", "HOME=/tmp", sys.executable, "-m", "lbtui", "attach"])
        tmux = Tmux("lbtui-ro-attach-test", f"cd {REPO} && {command} --socket {ro}")
        assert wait_until(lambda: len(rows(tmux.screen())) == 3, timeout=30), tmux.screen()

        def footer() -> str:
            return [line for line in tmux.screen().splitlines() if line.strip()][-1]

        assert wait_until(lambda: "Chart" in footer(), timeout=15), tmux.screen()  # drawn after the rows
        screen = tmux.screen()
        assert "(read-only)" in screen, screen
        assert "Drain" not in footer() and "Reload" not in footer(), screen
        tmux.keys("d")
        tmux.keys("r")
        time.sleep(1.0)
        assert "(y)" not in tmux.screen(), tmux.screen()
        held.stop()
        tmux.keys("q")
        assert wait_until(lambda: "keeps running" in tmux.screen(), timeout=10), tmux.screen()
        tmux.keys("y")
        assert wait_until(lambda: not tmux.alive(), timeout=15)
        assert proc.poll() is None  # the instance runs on
    finally:
        if tmux is not None:
            tmux.kill()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        lab.down()
    assert not os.path.exists(ro)


def test_demo_prints_its_attach_command_and_ctl_finds_it_without_a_socket() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "lbtui", "demo", "--no-ui", "--prefix", "lad", "--duration", "60"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert demo.stderr is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = demo.stderr.readline()
            lines.append(line)
            if "attach the console with" in line or not line:
                break
        assert "attach the console with: sudo lbtui attach --socket /run/lbtui/lad.sock" in lines[-1], lines
        status = subprocess.run(
            [sys.executable, "-m", "lbtui", "ctl", "status"], capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status  # the one instance running: found without --socket
        assert "web" in status.stdout and "/lbtui-demo-" in status.stdout
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.communicate(timeout=60)
    assert demo.returncode == 0
