# SPDX-License-Identifier: Apache-2.0
"""settings.xdp_mode to the attach modes tried (lbtui.dataplane.loader.xdp_mode_flags)."""

from __future__ import annotations

import pytest

from lbtui.dataplane.loader import XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, xdp_mode_flags

NATIVE, GENERIC = XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE


@pytest.mark.parametrize(
    ("mode", "kind", "tried"),
    [
        ("auto", "veth", [GENERIC]),  # native only emulates a NIC there (docs/datapath.md#xdp-modes)
        ("auto", None, [NATIVE, GENERIC]),  # a physical NIC: its driver's XDP if it has one
        ("auto", "bond", [NATIVE, GENERIC]),
        ("native", "veth", [NATIVE]),  # asked for explicitly: as asked
        ("generic", None, [GENERIC]),
    ],
)
def test_auto_is_generic_on_veth_and_native_first_elsewhere(
    mode: str, kind: str | None, tried: list[int]
) -> None:
    assert xdp_mode_flags(mode, kind) == tried
