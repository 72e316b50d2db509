# SPDX-License-Identifier: Apache-2.0
"""Fixtures the unit tests of the control socket and `lbtui ctl` share: the real Engine over the
in-memory dataplane as the console meets it (tests/support/console_engine.py), and a control socket
serving it. A module whose engine must publish in the background (the console's tests) or play a
story first defines its own `engine`, which takes the place of this one for that module."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from lbtui.control_socket import ControlServer
from tests.support.console_engine import ConsoleEngine


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer
    path = tempfile.mkdtemp(prefix="lbtu-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def engine() -> Iterator[ConsoleEngine]:
    handle = ConsoleEngine(loops=False)  # no background publication: two snapshot() calls agree
    yield handle
    handle.shutdown()


@pytest.fixture
def sock(engine: ConsoleEngine, sock_dir: str) -> Iterator[str]:
    """The operator's control socket of `engine`."""
    srv = ControlServer(engine, os.path.join(sock_dir, "lbtui.sock"))
    srv.start()
    yield srv.path
    srv.stop()
