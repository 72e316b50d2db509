# SPDX-License-Identifier: Apache-2.0
"""The netdev family's xdp-features as lbtui reads them (lbtui/dataplane/xdp_features.py): messages
encoded the way the kernel sends them, decoded and turned into the fast path's native targets."""

from __future__ import annotations

import struct

import pytest

from lbtui.dataplane.xdp_features import (
    NETDEV_CMD_DEV_GET,
    NETDEV_XDP_ACT_NDO_XMIT,
    can_transmit,
    features_by_ifindex,
    native_targets,
    netdev_msg,
)

BASIC, REDIRECT, RX_SG, NDO_XMIT_SG = 1, 2, 32, 64  # enum netdev_xdp_act
VETH = BASIC | REDIRECT | RX_SG  # a veth whose peer has neither XDP nor GRO (35, as the kernel says)
VETH_XMIT = VETH | NETDEV_XDP_ACT_NDO_XMIT | NDO_XMIT_SG  # ... and once it has (103)


def encoded(attrs: list[tuple[str, int]]) -> bytes:
    msg = netdev_msg()
    msg["cmd"] = NETDEV_CMD_DEV_GET
    msg["version"] = 1
    msg["attrs"] = [list(a) for a in attrs]
    msg["header"]["type"] = 0x20  # some family id
    msg.encode()
    return bytes(msg.data)


def decoded(data: bytes) -> netdev_msg:
    msg = netdev_msg(data)
    msg.decode()
    return msg


def test_the_kernel_layout_of_a_device_message() -> None:
    data = encoded([("NETDEV_A_DEV_IFINDEX", 7), ("NETDEV_A_DEV_XDP_FEATURES", VETH_XMIT)])
    # nlmsghdr (16) + genlmsghdr (4), then the attributes: u32 ifindex (type 1), u64 features (type 3)
    assert struct.unpack_from("=HHI", data, 20) == (8, 1, 7)
    assert struct.unpack_from("=HHQ", data, 28) == (12, 3, VETH_XMIT)
    assert features_by_ifindex([decoded(data)]) == {7: VETH_XMIT}


def test_a_dump_by_ifindex_skips_messages_without_the_attributes() -> None:
    msgs = [
        decoded(encoded([("NETDEV_A_DEV_IFINDEX", 1), ("NETDEV_A_DEV_XDP_FEATURES", 0)])),
        decoded(encoded([("NETDEV_A_DEV_IFINDEX", 2), ("NETDEV_A_DEV_XDP_FEATURES", VETH)])),
        decoded(encoded([("NETDEV_A_DEV_IFINDEX", 3)])),  # no features: not known to transmit
        decoded(encoded([("NETDEV_A_DEV_XDP_FEATURES", VETH_XMIT)])),  # no ifindex
        decoded(
            encoded(
                [
                    ("NETDEV_A_DEV_IFINDEX", 4),
                    ("NETDEV_A_DEV_XDP_FEATURES", VETH_XMIT),
                    ("NETDEV_A_DEV_XDP_ZC_MAX_SEGS", 1),
                ]
            )
        ),
    ]
    assert features_by_ifindex(msgs) == {1: 0, 2: VETH, 4: VETH_XMIT}


def test_an_attribute_newer_than_lbtui_is_ignored() -> None:
    data = encoded([("NETDEV_A_DEV_IFINDEX", 5), ("NETDEV_A_DEV_XDP_FEATURES", VETH_XMIT)])
    extra = struct.pack("=HHI", 8, 42, 0xDEAD)  # an attribute type this table does not know
    data = struct.pack("=I", len(data) + len(extra)) + data[4:] + extra
    assert features_by_ifindex([decoded(data)]) == {5: VETH_XMIT}


def test_only_devices_with_ndo_xdp_xmit_are_native_targets() -> None:
    features = {1: 0, 2: VETH, 3: VETH_XMIT, 4: NETDEV_XDP_ACT_NDO_XMIT}
    assert native_targets({1, 2, 3, 4, 9}, features) == {3, 4}  # 9: not in the dump
    assert can_transmit(features, 3) and not can_transmit(features, 2)


def test_without_the_netdev_family_nothing_is_a_native_target() -> None:
    assert native_targets({1, 2, 3}, None) == set()
    assert not can_transmit(None, 3)


def test_native_mode_writes_only_the_wanted_interfaces_that_transmit_xdp_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lbtui.dataplane import fastpath

    monkeypatch.setattr(fastpath, "route_interface", lambda ip: {"10.0.2.11": 5, "10.0.2.12": 6}.get(ip))
    monkeypatch.setattr(fastpath, "xdp_features", lambda: {2: VETH, 5: VETH_XMIT, 6: 0})

    def interface_macs(names: list[str], ifindexes: set[int]) -> dict[int, str]:
        named = {2} if list(names) == ["l0"] else set()
        return {i: f"02:00:00:00:00:0{i}" for i in named | set(ifindexes)}

    monkeypatch.setattr(fastpath, "interface_macs", interface_macs)
    fp = fastpath.FastPathInterfaces()
    for ip in ("10.0.2.11", "10.0.2.12", "10.9.9.9"):
        fp.note_backend(ip)
    macs = {2: "02:00:00:00:00:02", 5: "02:00:00:00:00:05", 6: "02:00:00:00:00:06"}
    generic = fp.wanted(["l0"], any_native=False)  # an skb redirect goes anywhere
    assert generic == fastpath.FastPathSet(macs, frozenset({2, 5, 6}))
    native = fp.wanted(["l0"], any_native=True)  # every one kept for its MAC and the replies
    assert native == fastpath.FastPathSet(macs, frozenset({5}))
    monkeypatch.setattr(fastpath, "xdp_features", lambda: None)  # no netdev family
    assert fp.wanted(["l0"], any_native=True) == fastpath.FastPathSet(macs, frozenset())
