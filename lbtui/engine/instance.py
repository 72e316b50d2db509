"""An instance: what names it, where its pinned state lives, and the data path built for it.

Every running lbtui is an instance named after its control socket (one socket per running
instance); its programs and maps are pinned under PIN_ROOT/<name> so a restart of the same instance
adopts them (docs/datapath.md#bpffs).
"""

from __future__ import annotations

from lbtui.config import Config
from lbtui.dataplane.port import Dataplane, DataplaneSpec

PIN_ROOT = "/run/lbtui/bpffs"


def instance_name(config: Config) -> str:
    """An instance is named after its control socket (one socket per running instance)."""
    base = config.settings.control_socket.rstrip("/").rsplit("/", 1)[-1]
    return base.removesuffix(".sock") or "lbtui"


def dataplane_spec(config: Config) -> DataplaneSpec:
    s = config.settings
    return DataplaneSpec(
        table_size=s.table_size,
        conntrack_entries=2 * s.max_connections,
        pin_dir=f"{PIN_ROOT}/{instance_name(config)}",
    )


def restart_needed(old: Config, new: Config) -> bool:
    """Settings a running data path cannot take: its map sizes and XDP mode."""
    return dataplane_spec(new) != dataplane_spec(old) or new.settings.xdp_mode != old.settings.xdp_mode


def kernel_dataplane(config: Config) -> Dataplane:
    """The BPF data path for `config` (imports bcc: only front ends that run the real thing)."""
    from lbtui.dataplane.kernel import KernelDataplane

    return KernelDataplane(dataplane_spec(config), config.settings.xdp_mode)
