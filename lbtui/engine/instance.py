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


def instance_name(socket_path: str) -> str:
    """The socket's file name without .sock; for a socket outside /run/lbtui, with a short hash
    of its whole path (two sockets of the same name in two directories are two instances)."""
    path = os.path.abspath(socket_path)
    base = os.path.basename(path).removesuffix(".sock") or "lbtui"
    if os.path.dirname(path) == SOCKET_DIR:
        return base
    return f"{base}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def dataplane_spec(config: Config, socket_path: str | None = None) -> DataplaneSpec:
    """Map sizes from the configuration; pins of the instance on `socket_path` (default: the
    configured socket)."""
    s = config.settings
    return DataplaneSpec(
        table_size=s.table_size,
        conntrack_entries=2 * s.max_connections,
        transient_entries=2 * s.embryonic_connections,
        pin_dir=f"{PIN_ROOT}/{instance_name(socket_path or s.control_socket)}",
    )


def restart_needed(old: Config, new: Config) -> bool:
    """Settings a running instance cannot take: its map sizes, XDP mode and control socket."""
    o, n = old.settings, new.settings
    return (o.table_size, o.max_connections, o.embryonic_connections, o.xdp_mode, o.control_socket) != (
        n.table_size,
        n.max_connections,
        n.embryonic_connections,
        n.xdp_mode,
        n.control_socket,
    )


def kernel_dataplane(config: Config, socket_path: str | None = None) -> Dataplane:
    """The BPF data path of the instance on `socket_path` (imports bcc: only for the real thing)."""
    from lbtui.dataplane.kernel import KernelDataplane

    return KernelDataplane(dataplane_spec(config, socket_path), config.settings.xdp_mode)
