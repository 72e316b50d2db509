# SPDX-License-Identifier: Apache-2.0
"""Every source file carries its one-line SPDX license header (scripts/spdx checks; --fix adds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.requires("git")
def test_every_source_file_has_its_spdx_header() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "spdx")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
