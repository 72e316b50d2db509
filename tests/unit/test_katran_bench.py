# SPDX-License-Identifier: Apache-2.0
"""bench/katran_bench.py's check of Katran's output (the one untimed run before timing): an IPIP
frame to a real with the gateway's MAC, a valid outer checksum and the inner packet unchanged."""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import katran_bench  # noqa: E402

REALS = ["10.0.2.11", "10.0.2.12", "10.0.2.13"]


def _csum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def client_frame() -> bytes:
    eth = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
    ip = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            40,
            1,
            0x4000,
            64,
            6,
            0,
            socket.inet_aton("10.0.0.2"),
            socket.inet_aton("10.0.0.1"),
        )
    )
    struct.pack_into("!H", ip, 10, _csum(bytes(ip)))
    return eth + bytes(ip) + bytes(20)


def encapsulated(frame: bytes, real: str = REALS[1]) -> bytearray:
    eth = katran_bench.GATEWAY_MAC + frame[0:6] + b"\x08\x00"
    outer = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            len(frame) - 14 + 20,
            0,
            0,
            64,
            4,
            0,
            socket.inet_aton("172.16.1.2"),
            socket.inet_aton(real),
        )
    )
    struct.pack_into("!H", outer, 10, _csum(bytes(outer)))
    return bytearray(eth + bytes(outer) + frame[14:])


def test_a_correct_encapsulation_passes() -> None:
    frame = client_frame()
    assert "-> 10.0.2.12" in katran_bench.check_encap(frame, bytes(encapsulated(frame)), REALS)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b.__setitem__(0, 0x02),  # not the gateway's MAC
        lambda b: b.__setitem__(24, b[24] ^ 0xFF),  # outer checksum broken
        lambda b: b.__setitem__(len(b) - 1, 0x01),  # inner packet changed
        lambda b: b.__setitem__(23, 17),  # outer protocol is not IPIP
    ],
)
def test_damaged_output_is_refused(damage: Callable[[bytearray], None]) -> None:
    frame = client_frame()
    out = encapsulated(frame)
    damage(out)
    with pytest.raises(katran_bench.KatranError):
        katran_bench.check_encap(frame, bytes(out), REALS)


def test_a_real_that_is_not_configured_is_refused() -> None:
    frame = client_frame()
    with pytest.raises(katran_bench.KatranError, match="not a real"):
        katran_bench.check_encap(frame, bytes(encapsulated(frame, real="10.9.9.9")), REALS)


def test_build_refuses_a_directory_that_is_not_a_katran_checkout(tmp_path: Path) -> None:
    with pytest.raises(katran_bench.KatranError, match="not a Katran checkout"):
        katran_bench.build(str(tmp_path), str(tmp_path))
