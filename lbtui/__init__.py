# SPDX-License-Identifier: Apache-2.0
"""lbtui: a layer-4 load balancer with an XDP/TC data path, a control plane and an operator console."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # __version__ is read on first use, not at import: `lbtui` must take its signal handlers within
    # milliseconds of exec (lbtui/__main__.py), and importlib.metadata alone takes tens of them
    if name == "__version__":
        from importlib import metadata

        try:
            # one source: the version in pyproject.toml, as installed
            version = metadata.version("lbtui")
        except metadata.PackageNotFoundError:  # a source tree that was never installed
            version = "0+unknown"
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module 'lbtui' has no attribute {name!r}")
