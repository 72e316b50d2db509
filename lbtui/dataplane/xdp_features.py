# SPDX-License-Identifier: Apache-2.0
"""Which interfaces can transmit XDP frames: the kernel's netdev `xdp-features` (docs/datapath.md#fast-path).

A native XDP program's `bpf_redirect` hands an XDP frame to the target's `ndo_xdp_xmit`; a device
without one drops the frame. The kernel tells which devices have it in the "netdev" generic netlink
family (since Linux 6.3): `NETDEV_CMD_DEV_GET` (dumped) answers per device `NETDEV_A_DEV_IFINDEX` and
`NETDEV_A_DEV_XDP_FEATURES`, a u64 of `NETDEV_XDP_ACT_*` flags; `NETDEV_XDP_ACT_NDO_XMIT` is the one that
counts here. A veth has it only while its peer runs an XDP program or has GRO on, so it changes at run
time; the kernel announces every change (`NETDEV_CMD_DEV_CHANGE_NTF`, also device add and delete) to
the family's "mgmt" multicast group, which `XdpFeaturesWatch` listens to.

A kernel without the family (older than 6.3) answers None: no interface is known to take XDP frames.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from pyroute2.netlink import genlmsg

from lbtui.dataplane.netlink import SocketWatch, off_loop

log = logging.getLogger(__name__)

NETDEV_FAMILY = "netdev"  # NETDEV_FAMILY_NAME (include/uapi/linux/netdev.h)
NETDEV_FAMILY_VERSION = 1
NETDEV_CMD_DEV_GET = 1
NETDEV_MCGRP_MGMT = "mgmt"
NETDEV_XDP_ACT_NDO_XMIT = 1 << 2  # enum netdev_xdp_act: the device implements ndo_xdp_xmit

NETLINK_GENERIC = 16  # linux/netlink.h (Python's socket module has no name for it)
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1


class netdev_msg(genlmsg):
    """A netdev family message's device attributes (enum NETDEV_A_DEV_*, in the uapi header's order)."""

    prefix = "NETDEV_A_DEV_"
    nla_map = (
        ("NETDEV_A_DEV_UNSPEC", "none"),
        ("NETDEV_A_DEV_IFINDEX", "uint32"),
        ("NETDEV_A_DEV_PAD", "none"),
        ("NETDEV_A_DEV_XDP_FEATURES", "uint64"),
        ("NETDEV_A_DEV_XDP_ZC_MAX_SEGS", "uint32"),
        ("NETDEV_A_DEV_XDP_RX_METADATA_FEATURES", "uint64"),
        ("NETDEV_A_DEV_XSK_FEATURES", "uint64"),
    )


def features_by_ifindex(msgs: Iterable[Any]) -> dict[int, int]:
    """ifindex -> xdp-features of the devices in decoded netdev messages (others are skipped)."""
    found: dict[int, int] = {}
    for msg in msgs:
        ifindex = msg.get_attr("NETDEV_A_DEV_IFINDEX")
        features = msg.get_attr("NETDEV_A_DEV_XDP_FEATURES")
        if ifindex is not None and features is not None:
            found[int(ifindex)] = int(features)
    return found


def can_transmit(features: dict[int, int] | None, ifindex: int) -> bool:
    """Whether a native XDP redirect into `ifindex` is delivered (unknown: no)."""
    return features is not None and bool(features.get(ifindex, 0) & NETDEV_XDP_ACT_NDO_XMIT)


def native_targets(candidates: Iterable[int], features: dict[int, int] | None) -> set[int]:
    """The candidates a native XDP program may redirect into: those that transmit XDP frames."""
    return {i for i in candidates if can_transmit(features, i)}


def _netdev_socket() -> Any:
    """A bound netdev family socket of the current thread's namespace, or None without the family."""
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.generic import GenericNetlinkSocket

    sock = GenericNetlinkSocket()
    try:
        sock.bind(NETDEV_FAMILY, netdev_msg)
    except NetlinkError:  # ENOENT: no such family on this kernel
        sock.close()
        return None
    return sock


@off_loop
def xdp_features() -> dict[int, int] | None:
    """ifindex -> xdp-features of every device in the current namespace; None if the kernel has no
    netdev family (then nothing is known to take XDP frames)."""
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST

    sock = _netdev_socket()
    if sock is None:
        return None
    try:
        msg = netdev_msg()
        msg["cmd"] = NETDEV_CMD_DEV_GET
        msg["version"] = NETDEV_FAMILY_VERSION
        flags = NLM_F_REQUEST | NLM_F_DUMP
        return features_by_ifindex(sock.nlm_request(msg, msg_type=sock.prid, msg_flags=flags))
    finally:
        sock.close()


@off_loop
def mgmt_group_id() -> int | None:
    """The netdev family's "mgmt" multicast group's id (None: no family, or no such group)."""
    sock = _netdev_socket()
    if sock is None:
        return None
    try:
        group = sock.mcast_groups.get(NETDEV_MCGRP_MGMT)
        return int(group) if group is not None else None
    finally:
        sock.close()


def mgmt_socket() -> socket.socket | None:
    """A generic netlink socket of the current thread's namespace that receives the netdev family's
    device notifications (None: the kernel has no such family or group)."""
    group = mgmt_group_id()
    if group is None:
        return None
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_GENERIC)
    sock.bind((0, 0))
    sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
    return sock


class XdpFeaturesWatch(SocketWatch):
    """Calls `changed` after every batch of netdev device notifications (a device added, deleted or
    its xdp-features changed). Any message counts (no parsing): a spurious call re-reads the features
    once."""

    def __init__(self, changed: Callable[[], None], sock: socket.socket) -> None:
        self._changed = changed
        super().__init__(sock, "lbtui-xdp-features")

    @classmethod
    def start(cls, changed: Callable[[], None]) -> XdpFeaturesWatch | None:
        sock = mgmt_socket()
        if sock is None:
            log.warning("fast path: the kernel announces no xdp-features changes (no netdev family)")
            return None
        return cls(changed, sock)

    def batch(self) -> None:
        try:
            while self._sock.recv(65536):  # the whole batch, then one call
                pass
        except BlockingIOError:
            pass
        except OSError as exc:  # ENOBUFS: notifications lost, so look anyway
            log.debug("fast path: xdp-features watch: %s", exc)
        self._changed()
