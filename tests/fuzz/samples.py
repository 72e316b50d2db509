# SPDX-License-Identifier: Apache-2.0
"""A few fixed frames for tests of the packet fuzzer and of the data path."""

from __future__ import annotations

from typing import Any

from tests.fuzz.packets.frames import FrameGenerator
from tests.fuzz.packets.topology import VIP6_B, VIP_B
from tests.fuzz.packets.wire import TCP, UDP, Built, addr, fix_checksums

CLIENT = addr("172.16.5.6")


def syn_frame(**kw: Any) -> Built:
    gen = FrameGenerator(0, scapy_pool=0)
    return gen.l4_frame(CLIENT, VIP_B, TCP, 40000, 80, flags=0x02, payload=b"", **kw)


def udp_frame(**kw: Any) -> Built:
    gen = FrameGenerator(0, scapy_pool=0)
    return gen.l4_frame(CLIENT, VIP_B, UDP, 5000, 53, payload=b"query", **kw)


def dnat_of(built: Built, backend: tuple[str, int]) -> bytes:
    """What a correct DNAT of `built` to `backend` looks like, with checksums computed from scratch."""
    out = bytearray(built.data)
    out[built.l3 + 16 : built.l3 + 20] = addr(backend[0])
    out[built.l4 + 2 : built.l4 + 4] = backend[1].to_bytes(2, "big")
    fix_checksums(out, built.l3)
    return bytes(out)


CLIENT6 = addr("fd00:fe::5:6")


def syn6_frame(**kw: Any) -> Built:
    """A SYN to the IPv6 VIP's port 80 (`ext`: extension headers, frames6.Ext)."""
    gen = FrameGenerator(0, scapy_pool=0)
    return gen.l4_frame(CLIENT6, VIP6_B, TCP, 40000, 80, flags=0x02, payload=b"", **kw)


def udp6_frame(**kw: Any) -> Built:
    gen = FrameGenerator(0, scapy_pool=0)
    return gen.l4_frame(CLIENT6, VIP6_B, UDP, 5000, 53, payload=b"query", **kw)
