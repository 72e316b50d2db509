# SPDX-License-Identifier: Apache-2.0
"""Package metadata: every third-party module the package imports is a declared dependency."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# not on PyPI: Debian's python3-bpfcc, seen through the --system-site-packages venv (README.md)
SYSTEM_MODULES = {"bcc"}


def _top_level_imports(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"lbtui", "__future__"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_runtime_import_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_normalise(re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    distributions = metadata.packages_distributions()
    missing = {}
    for module in sorted(_top_level_imports(ROOT / "lbtui") - SYSTEM_MODULES):
        dists = {_normalise(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"


def test_runtime_requirements_match_between_pyproject_and_requirements_dev() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    for requirement in project["dependencies"]:
        assert requirement in dev, f"{requirement} is in pyproject.toml but not in requirements-dev.txt"


def test_every_package_directory_is_shipped() -> None:
    # the wheel lists its packages by hand (bpf/ is shipped as lbtui.bpf): a new subpackage must be
    # listed, or the installed lbtui fails to import it
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        "lbtui" + "".join(f".{part}" for part in init.parent.relative_to(ROOT / "lbtui").parts)
        for init in (ROOT / "lbtui").rglob("__init__.py")
    }
    assert on_disk - listed == set()
