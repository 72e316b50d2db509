# SPDX-License-Identifier: Apache-2.0
"""`lbtui ctl` run in process against a control socket, its output captured."""

from __future__ import annotations

import io

from lbtui import ctl


def run_ctl(sock: str, *args: str) -> tuple[int, str, str]:
    """`lbtui ctl --socket SOCK ARGS...`: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = ctl.main(["--socket", sock, *args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()
