# SPDX-License-Identifier: Apache-2.0
"""`lbtui ctl reload --dry-run` against a running lbtui with the BPF data path (issue 19, must-show 4):
over 20 generated configuration changes (with runtime overrides issued in between), the dry run's
change list equals the one the real reload that follows reports, and `lbtui --check --diff` prints
the same as the dry run."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

from lbtui.lab import LabSpec, lab_state_file
from tests.support.configgen import initial, mutate
from tests.support.lab import ClientLab
from tests.support.labtools import start_lbtui

PREFIX = "lrp"


def ctl(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lbtui", "ctl", "--socket", sock, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dry_run_equals_the_following_reload_over_20_generated_changes(tmp_path: Path) -> None:
    lab = ClientLab(LabSpec(prefix=PREFIX, second_client=False))
    lab.up()
    proc = None
    try:
        sock = lab.control_socket
        Path(lab_state_file(PREFIX)).unlink(missing_ok=True)
        settings = f'control_socket = "{sock}"\nstate_file = "{lab_state_file(PREFIX)}"\nxdp_mode = "generic"'
        gen = initial(lab.vip, tuple(lab.client_ifaces), "10.0.2", settings)
        cfg = tmp_path / "lbtui.toml"
        cfg.write_text(gen.toml())
        log = tmp_path / "lbtui.log"
        log.write_text("")
        proc = start_lbtui(lab, cfg, log, timeout=60)
        rng = random.Random(19)
        compared = 0
        for step in range(20):
            if step % 3 == 1:  # a runtime override for the reload to keep or drop
                proxy = rng.choice(sorted(gen.proxies))
                backend = rng.choice(sorted(gen.proxies[proxy].backends))
                assert ctl(sock, "weight", proxy, backend, str(rng.randint(2, 9))).returncode == 0
            edits = mutate(gen, rng)
            cfg.write_text(gen.toml())
            dry = ctl(sock, "--json", "reload", "--dry-run")
            real = ctl(sock, "--json", "reload")
            assert dry.returncode == real.returncode, (step, edits, dry, real)
            planned, done = json.loads(dry.stdout), json.loads(real.stdout)
            assert planned["changes"] == done["changes"], (step, edits)
            assert planned["ok"] == done["ok"]
            compared += len(done["changes"])
            if not done["ok"]:
                gen.table_size = 97  # what runs; the next file goes back to it
        assert compared >= 40
        assert "planned" not in log.read_text()  # plan.py and the topology agreed each time (logged if not)

        # `lbtui --check --diff` asks the running instance for the same dry run
        name = sorted(gen.proxies)[0]  # "web" may be gone by now
        gen.proxies[name].backends[gen.fresh(8080)] = 3
        cfg.write_text(gen.toml())
        dry = ctl(sock, "reload", "--dry-run")
        diff = subprocess.run(
            [sys.executable, "-m", "lbtui", "--check", "--diff", "-c", str(cfg), "--socket", sock],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert diff.returncode == 0 and dry.returncode == 0, (diff, dry)
        assert diff.stdout == dry.stdout, (diff.stdout, dry.stdout)
        assert f"{name}: added backend" in diff.stdout
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        lab.down()
        Path(lab_state_file(PREFIX)).unlink(missing_ok=True)
