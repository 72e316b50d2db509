# SPDX-License-Identifier: Apache-2.0
"""`lbtui --check -c FILE` (the file and this host, with the exit code a start would have) and
`lbtui --check --diff -c FILE` (what a reload of FILE would change in the running instance).
"""

from __future__ import annotations

import os
import sys

from lbtui import exitcodes, hostcheck
from lbtui.config import Config


def check(config: Config, path: str, as_json: bool, host: bool, socket_path: str | None = None) -> int:
    """`lbtui --check`: the file is valid; now the host checks, printed; the exit code a start would have."""
    checks = hostcheck.run_checks(config, socket_path=socket_path) if host else []
    if as_json:
        print(hostcheck.report_json(path, checks))
    else:
        sys.stdout.write(hostcheck.report_text(path, config, checks))
    return hostcheck.exit_code(checks)


def diff(path: str, socket_path: str, as_json: bool) -> int:
    """`lbtui --check --diff -c FILE`: the running instance's dry run of a reload from FILE."""
    import json

    from lbtui import ctl, model, wire
    from lbtui.control_client import SocketEngineHandle

    handle = SocketEngineHandle(socket_path)
    try:
        result = handle.submit(model.Reload(os.path.abspath(path), dry_run=True), timeout=30.0)
    except ConnectionError as exc:
        print(f"lbtui: --diff: {exc}", file=sys.stderr)
        return exitcodes.HOST
    finally:
        handle.close()
    if as_json:
        print(json.dumps(wire.encode_result(result)))
    else:
        ctl.write_result(result, sys.stdout, sys.stderr, prog="lbtui", listed=True)
    return exitcodes.OK if result.ok else exitcodes.CONFIG
