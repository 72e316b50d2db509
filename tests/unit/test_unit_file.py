# SPDX-License-Identifier: Apache-2.0
"""packaging/lbtui.service: systemd-analyze verify is clean, and the unit matches the code it runs."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lbtui import exitcodes

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "lbtui.service"
MOUNT = ROOT / "packaging" / "run-lbtui-bpffs.mount"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


@pytest.mark.requires("systemd-analyze")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    lbtui = shutil.which("lbtui", path=str(Path(sys.executable).parent)) or "/usr/bin/lbtui"
    (tmp_path / UNIT.name).write_text(UNIT.read_text().replace("/usr/bin/lbtui", lbtui))
    (tmp_path / MOUNT.name).write_text(MOUNT.read_text())
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", UNIT.name, MOUNT.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr


def test_the_unit_says_what_the_code_does() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecReload"] == "/usr/bin/lbtui ctl reload"
    assert service["ExecStartPre"] == "-/usr/bin/lbtui --check -c /etc/lbtui/lbtui.toml"
    assert service["ExecStart"].startswith("/usr/bin/lbtui --no-ui -c /etc/lbtui/lbtui.toml")
    assert service["Restart"] == "on-failure"
    prevented = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert prevented == {exitcodes.CONFIG, exitcodes.USAGE}  # host (3) and busy (4) are retried
    assert "RequiresMountsFor" in unit()["Unit"]
    watchdog_s = float(service["WatchdogSec"].removesuffix("s"))
    assert watchdog_s >= 8  # pings every quarter; the engine ticks every 0.25 s
