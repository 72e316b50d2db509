# SPDX-License-Identifier: Apache-2.0
"""The engine side never imports the console's libraries; the console never imports the kernel side.

Each module is imported in a fresh process and its sys.modules inspected
(docs/architecture.md#layers). One interpreter forks a child per module, so each import starts from
the same clean state without paying an interpreter start (and its common stdlib imports) 130 times.
"""

from __future__ import annotations

import functools
import json
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


# Preloaded by the forking parent: the standard library and numpy (slow imports that many modules
# share). None of them imports a module the tests look for, which the parent checks, so a module's
# sys.modules in the child holds a forbidden module exactly when its own imports bring it in.
PRELOAD = ("asyncio", "concurrent.futures", "csv", "importlib.metadata", "logging", "numpy", "subprocess")
FORBIDDEN_ROOTS = ("textual", "rich", "bcc", "pyroute2", "lbtui")
PROBE = r"""
import os, sys
for name in sys.argv[1].split(","):
    __import__(name)
early = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2].split(","))
results = {"(preload)": {"ok": not early, "out": "\n".join(early)}}
for module in sys.argv[3:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            __import__(module)
            out, code = "\n".join(sorted(sys.modules)), 0
        except BaseException:
            import traceback
            out, code = traceback.format_exc(), 1
        with os.fdopen(w, "w") as f:
            f.write(out)
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    results[module] = {"ok": os.waitpid(pid, 0)[1] == 0, "out": out}
import json
print(json.dumps(results))
"""


@functools.cache
def imports() -> dict[str, dict[str, object]]:
    modules = sorted(ENGINE_MODULES | CONSOLE_MODULES | KERNEL_FREE)
    args = [",".join(PRELOAD), ",".join(FORBIDDEN_ROOTS), *modules]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300, check=True
    )
    results: dict[str, dict[str, object]] = json.loads(out.stdout)
    assert results.pop("(preload)")["ok"], "the preloaded modules import a module the tests look for"
    return results


def imported_by(module: str) -> set[str]:
    result = imports()[module]
    assert result["ok"], f"import {module} failed:\n{result['out']}"
    return set(str(result["out"]).split())


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
