# SPDX-License-Identifier: Apache-2.0
"""What a test needs, decided in one place.

The tests are sorted by kind: `unit/` (pure Python, no root), `bpf/` (BPF programs run with
BPF_PROG_TEST_RUN: root) and `e2e/` (namespace labs with real servers: root). Everything under
`bpf/` and `e2e/` is marked `root` (and `e2e/` also `slow`); a test elsewhere that needs root says
`@pytest.mark.root`. Without root those tests are skipped, with a reason. A test that drives an
outside program says `@pytest.mark.requires("tmux")` (a command name or an absolute path) and is
skipped where that program is missing. `beside` and `alone` say how an end-to-end module may share
the host with other tests (scripts/test runs them accordingly).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT_KINDS = {"bpf", "e2e"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root, BPF and network namespaces")
    config.addinivalue_line("markers", "slow: end-to-end test over namespaces")
    config.addinivalue_line("markers", "requires(program): needs an outside program (name or path)")
    config.addinivalue_line(
        "markers",
        "beside: an end-to-end module that may run beside the other end-to-end tests: labs of its own "
        "prefix, no runtime overrides kept across a restart, no time bound a busy CPU could break "
        "(scripts/test runs these after the unit and BPF tests, while the rest run)",
    )
    config.addinivalue_line(
        "markers",
        "alone: looks at every lbtui instance of the host (e.g. `lbtui ctl` without --socket): "
        "scripts/test runs these last, when nothing else runs",
    )


def _have(program: str) -> bool:
    return Path(program).exists() if os.path.isabs(program) else shutil.which(program) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        if kind in ROOT_KINDS:
            item.add_marker(pytest.mark.root)
        if kind == "e2e":
            item.add_marker(pytest.mark.slow)
        if not is_root and item.get_closest_marker("root") is not None:
            item.add_marker(pytest.mark.skip(reason="needs root (BPF and network namespaces)"))
        for mark in item.iter_markers("requires"):
            missing = [p for p in mark.args if not _have(p)]
            if missing:
                item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(missing)}"))
