# SPDX-License-Identifier: Apache-2.0
"""An instance: what names it, where its pinned state lives, and the data path built for it.

Every running lbtui is an instance named after the control socket it actually serves (`--socket`,
else settings.control_socket): one socket per running instance, so two instances never share a
name. Its programs and maps are pinned under PIN_ROOT/<name>, so a restart of the same instance
adopts them and no other instance ever does (docs/datapath.md#bpffs, docs/architecture.md#state).
"""

from __future__ import annotations

import hashlib
import os

from lbtui.config import Config
from lbtui.dataplane.port import Dataplane, DataplaneSpec

PIN_ROOT = "/run/lbtui/bpffs"
SOCKET_DIR = "/run/lbtui"  # sockets here name their instance by file name alone
STATE_ROOT = "/var/lib/lbtui"  # runtime overrides of each instance, unless settings.state_file says


def instance_name(socket_path: str) -> str:
    """The socket's file name without .sock; for a socket outside /run/lbtui, with a short hash
    of its whole path (two sockets of the same name in two directories are two instances)."""
    path = os.path.abspath(socket_path)
    base = os.path.basename(path).removesuffix(".sock") or "lbtui"
    if os.path.dirname(path) == SOCKET_DIR:
        return base
    return f"{base}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def default_state_file(socket_path: str) -> str:
    """Where the instance on `socket_path` keeps its runtime overrides by default."""
    return f"{STATE_ROOT}/{instance_name(socket_path)}.state"


def dataplane_spec(config: Config, socket_path: str | None = None) -> DataplaneSpec:
    """Map sizes from the configuration; pins of the instance on `socket_path` (default: the
    configured socket)."""
    s = config.settings
    return DataplaneSpec(
        table_size=s.table_size,
        conntrack_entries=2 * s.max_connections,
        transient_entries=2 * s.embryonic_connections,
        conntrack6_entries=2 * s.ipv6_max_connections,
        transient6_entries=2 * s.ipv6_embryonic_connections,
        pin_dir=f"{PIN_ROOT}/{instance_name(socket_path or s.control_socket)}",
        fast_path=s.fast_path == "auto",
    )


# [settings] a running instance cannot take: its map sizes, XDP mode and control socket
RESTART_SETTINGS = (
    "table_size",
    "max_connections",
    "embryonic_connections",
    "ipv6_max_connections",
    "ipv6_embryonic_connections",
    "xdp_mode",
    "fast_path",
    "control_socket",
)


def restart_needed(old: Config, new: Config) -> bool:
    """Whether `new` changes settings a reload cannot apply (RESTART_SETTINGS)."""
    return any(getattr(old.settings, k) != getattr(new.settings, k) for k in RESTART_SETTINGS)


def kernel_dataplane(config: Config, socket_path: str | None = None) -> Dataplane:
    """The BPF data path of the instance on `socket_path` (imports bcc: only for the real thing)."""
    from lbtui.dataplane.kernel import KernelDataplane

    return KernelDataplane(dataplane_spec(config, socket_path), config.settings.xdp_mode)
