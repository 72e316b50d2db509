# SPDX-License-Identifier: Apache-2.0
"""Running a piece of lbtui inside a test's network namespace: a Python program in the venv that
prints one JSON document."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"


def json_from_child(ns: str, program: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run `program` (Python source) with `args` in namespace `ns`; its stdout, parsed as JSON."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, str(PYTHON), "-c", program, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer
