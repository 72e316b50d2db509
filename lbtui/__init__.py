# SPDX-License-Identifier: Apache-2.0
"""lbtui: a layer-4 load balancer with an XDP/TC data path, a control plane and an operator console."""

from importlib import metadata

try:
    # one source: the version in pyproject.toml, as installed
    __version__ = metadata.version("lbtui")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
