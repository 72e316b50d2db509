# SPDX-License-Identifier: Apache-2.0
"""A spoofed SYN flood for the lab, run inside a client namespace (raw frames on an AF_PACKET socket).

    python -m tests.support.synflood --iface IF --dst-mac MAC --vip IP --port P --net 10.0.0
        --rate 25000 --seconds 20

Every frame is built before the clock starts (numpy, checksums included, so the data path sees
well-formed SYNs): source addresses drawn from the client's /24 (.3 to .254, never the real
clients' .1/.2), random source ports, sequence numbers and IP ids, all distinct tuples. They are
then sent at `rate` frames/s for at most `seconds`, never more than rate x seconds frames: the
flood is bounded in count and time. Prints {"sent": n, "seconds": s, "rate": r}.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import time
from collections.abc import Sequence

import numpy as np

ETH, IP, TCP = 14, 20, 20
FRAME = ETH + IP + TCP


def _fold(total: np.ndarray) -> np.ndarray:
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF).astype(np.uint16)


def _words(block: np.ndarray) -> np.ndarray:
    """Sum of the big-endian 16-bit words of each row."""
    words = block.reshape(len(block), -1, 2).astype(np.uint32) @ np.array([256, 1], dtype=np.uint32)
    return words.sum(axis=1, dtype=np.uint32)


def build_frames(count: int, dst_mac: bytes, vip: str, port: int, net: str, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    f = np.zeros((count, FRAME), dtype=np.uint8)
    f[:, 0:6] = np.frombuffer(dst_mac, dtype=np.uint8)
    f[:, 6:12] = np.frombuffer(bytes([0x02, 0x66, 0x6C, 0x6F, 0x6F, 0x64]), dtype=np.uint8)
    f[:, 12:14] = (0x08, 0x00)
    ip = f[:, ETH : ETH + IP]
    ip[:, 0], ip[:, 8], ip[:, 9] = 0x45, 64, socket.IPPROTO_TCP
    ip[:, 2:4] = (0, IP + TCP)
    ip[:, 4:6] = rng.integers(0, 256, size=(count, 2), dtype=np.uint8)
    base = np.frombuffer(socket.inet_aton(f"{net}.0"), dtype=np.uint8)
    ip[:, 12:15] = base[:3]
    # distinct (source address, source port) pairs: a permutation of 252 hosts x 60,000 ports
    pairs = rng.choice(252 * 60000, size=count, replace=False)
    ip[:, 15] = 3 + pairs // 60000
    sport = 1024 + pairs % 60000
    ip[:, 16:20] = np.frombuffer(socket.inet_aton(vip), dtype=np.uint8)
    ip[:, 10:12] = 0
    check = _fold(_words(ip))
    ip[:, 10], ip[:, 11] = check >> 8, check & 0xFF
    tcp = f[:, ETH + IP :]
    tcp[:, 0], tcp[:, 1] = sport >> 8, sport & 0xFF
    tcp[:, 2:4] = (port >> 8, port & 0xFF)
    tcp[:, 4:8] = rng.integers(0, 256, size=(count, 4), dtype=np.uint8)
    tcp[:, 12], tcp[:, 13] = 5 << 4, 0x02  # no options, SYN
    tcp[:, 14:16] = (0xFA, 0xF0)  # window 64240
    pseudo = _words(ip[:, 12:20]) + socket.IPPROTO_TCP + TCP
    check = _fold(pseudo + _words(tcp))
    tcp[:, 16], tcp[:, 17] = check >> 8, check & 0xFF
    return [row.tobytes() for row in f]


def flood(iface: str, frames: Sequence[bytes], rate: float, seconds: float) -> dict[str, float]:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    limit = min(len(frames), int(rate * seconds))
    sent, batch, busy = 0, max(1, int(rate / 1000)), 0  # a batch per millisecond
    start = time.monotonic()
    try:
        while sent < limit:
            now = time.monotonic()
            if now - start > seconds:
                break
            due = int((now - start) * rate)
            if sent >= due:
                time.sleep(0.0005)
                continue
            for frame in frames[sent : min(limit, sent + batch, due + batch)]:
                try:
                    sock.send(frame)
                except OSError as e:  # the device queue is full: let it drain, then go on
                    if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                        raise
                    busy += 1
                    time.sleep(0.0002)
                    break
                sent += 1
    finally:
        sock.close()
    took = time.monotonic() - start
    return {
        "sent": sent,
        "seconds": round(took, 2),
        "rate": round(sent / took) if took else 0,
        "queue_full": busy,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.synflood")
    p.add_argument("--iface", required=True)
    p.add_argument("--dst-mac", required=True)
    p.add_argument("--vip", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--net", required=True, help="the client's /24, e.g. 10.0.0")
    p.add_argument("--rate", type=float, default=25000)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    frames = build_frames(
        int(a.rate * a.seconds), bytes.fromhex(a.dst_mac.replace(":", "")), a.vip, a.port, a.net, a.seed
    )
    print(json.dumps({"event": "ready", "frames": len(frames)}), flush=True)
    print(json.dumps(flood(a.iface, frames, a.rate, a.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
