# SPDX-License-Identifier: Apache-2.0
"""No end-to-end test inherits another's runtime overrides.

Every lbtui a test starts keeps its runtime overrides (drains, weights, rate limits...) in a state
file and re-applies them at its next start (README.md#runtime-state): in the lab's file
(/run/lbtui/<prefix>.state, which the lab removes when it is built and when it goes) or, for a
configuration of the test's own, under /var/lib/lbtui. A test that drained a backend would leave it
drained for the next test (or the next run) of an instance with the same name. So each state file
that appeared while a test ran, or while a module's fixtures lived, is removed once they end.
What appeared while a test ran is taken as its own: true of the tests that run one at a time. The
`beside` tests run at the same moment as others (scripts/test sets LBTUI_TESTS_BESIDE=1 for them):
their run sweeps nothing, since what appeared may be another test's; their labs remove their own state
files, and they keep no overrides across a restart, so a sweep by the other run cannot hurt them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from lbtui.engine.instance import SOCKET_DIR, STATE_ROOT


def _state_files() -> set[str]:
    """State files, those moved aside and half-written ones (statefile.py names them so)."""
    found = set()
    for directory in (SOCKET_DIR, STATE_ROOT):
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                kept = name.endswith((".state", ".state.unreadable")) or name.startswith(".lbtui-state-")
                if kept and entry.is_file(follow_symlinks=False):
                    found.add(entry.path)
    return found


@contextlib.contextmanager
def _no_state_left_behind() -> Iterator[None]:
    if os.environ.get("LBTUI_TESTS_BESIDE") == "1":
        yield
        return
    before = _state_files()
    yield
    for path in _state_files() - before:
        with contextlib.suppress(OSError):
            os.unlink(path)


@pytest.fixture(autouse=True, scope="module")
def _module_leaves_no_state() -> Iterator[None]:
    """What an instance started by a module's fixture kept (set up before any test's snapshot)."""
    with _no_state_left_behind():
        yield


@pytest.fixture(autouse=True)
def _test_leaves_no_state() -> Iterator[None]:
    with _no_state_left_behind():
        yield
