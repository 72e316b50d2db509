# SPDX-License-Identifier: Apache-2.0
"""One version (pyproject.toml's, as installed) shown by --version, snapshots and ctl status (the console
shows Snapshot.version in its summary line)."""

from __future__ import annotations

from importlib import metadata

import pytest

import lbtui
from lbtui import cli, ctl
from tests.support.snapshots import bare_snapshot


def test_the_version_is_the_installed_distributions() -> None:
    assert lbtui.__version__ == metadata.version("lbtui")


def test_dash_dash_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"lbtui {lbtui.__version__}"


def test_snapshots_carry_the_version_of_the_engine_that_built_them() -> None:
    assert bare_snapshot().version == lbtui.__version__
    assert ctl.format_status(bare_snapshot(version="7.7.7"), {"pid": 1}).startswith("lbtui 7.7.7 pid 1,")
