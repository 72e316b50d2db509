# SPDX-License-Identifier: Apache-2.0
"""The engine side never imports the console's libraries; the console never imports the kernel side.

Each module is imported in a fresh interpreter and its sys.modules inspected
(docs/architecture.md#layers).
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import lbtui

CONSOLE_MODULES = {"lbtui.app"} | {
    f"lbtui.{pkg}.{m.name}"
    for pkg in ("screens", "widgets")
    for m in pkgutil.iter_modules([f"{lbtui.__path__[0]}/{pkg}"])
}
ENGINE_MODULES = {f"lbtui.{m.name}" for m in pkgutil.iter_modules(lbtui.__path__) if not m.ispkg} | {
    f"lbtui.{pkg}.{m.name}"
    for pkg in ("config", "control", "observe", "dataplane", "engine", "model")
    for m in pkgutil.iter_modules([f"{lbtui.__path__[0]}/{pkg}"])
}
ENGINE_MODULES |= {"lbtui.engine", "lbtui.dataplane", "lbtui.config", "lbtui.model"}
ENGINE_MODULES -= CONSOLE_MODULES | {"lbtui.app", "lbtui.cli", "lbtui.__main__"}
# what runs the engine without a kernel (tests, the console's tests): no bcc, no pyroute2
KERNEL_FREE = {
    "lbtui.engine",
    "lbtui.dataplane",
    "lbtui.dataplane.port",
    "lbtui.dataplane.memory",
    "lbtui.runner",
}


def imported_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(out.stdout.split())


def test_engine_side_never_imports_textual_or_rich():
    assert {"lbtui.engine.facade", "lbtui.dataplane.maps", "lbtui.dataplane.memory"} <= ENGINE_MODULES
    for module in sorted(ENGINE_MODULES):
        mods = imported_by(module)
        bad = {m for m in mods if m.split(".")[0] in ("textual", "rich")}
        assert not bad, f"{module} imports {sorted(bad)[:5]}"


def test_console_never_imports_bcc_pyroute2_or_dataplane():
    assert "lbtui.app" in CONSOLE_MODULES
    for module in sorted(CONSOLE_MODULES):
        mods = imported_by(module)
        bad = {
            m
            for m in mods
            if m.split(".")[0] in ("bcc", "pyroute2")
            or m.startswith("lbtui.dataplane")
            or m.startswith("lbtui.engine")
        }
        assert not bad, f"{module} imports {sorted(bad)[:5]}"


def test_the_engine_over_the_memory_dataplane_needs_no_kernel_libraries():
    for module in sorted(KERNEL_FREE):
        mods = imported_by(module)
        bad = {m for m in mods if m.split(".")[0] in ("bcc", "pyroute2")}
        assert not bad, f"{module} imports {sorted(bad)[:5]}"
