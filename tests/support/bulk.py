# SPDX-License-Identifier: Apache-2.0
"""Bulk transfers both ways with content checks, for the GRO test: run inside lab namespaces.

    python -m tests.support.bulk serve --name b1 --port 8080
    python -m tests.support.bulk client --url http://10.0.0.1/ --conns 4 --bytes 4194304

The server answers ``GET /<n>`` with ``pattern(n)`` (n bytes) and ``POST`` with the SHA-256 of the
body it read. The client runs ``--conns`` connections in parallel, each uploading and then
downloading ``--bytes`` bytes, and prints one JSON line: bytes and transfers that arrived intact,
and the failures (a wrong hash or length, an error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import sys
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

CHUNK = 1 << 16


def pattern(n: int, seed: int = 0) -> bytes:
    """n reproducible bytes that are not one repeated value (a wrong byte changes the hash)."""
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest() * 64
        block += 1
    return bytes(out[:n])


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, target = head.split(" ", 2)[:2]
            length = 0
            for line in head.split("\r\n")[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value)
            if method == "POST":
                digest, left = hashlib.sha256(), length
                while left:
                    data = await reader.read(min(CHUNK, left))
                    if not data:
                        raise ConnectionError("upload cut short")
                    digest.update(data)
                    left -= len(data)
                body = digest.hexdigest().encode()
            else:
                body = pattern(int(target.strip("/") or 0))
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nX-Backend: {name}\r\n\r\n".encode()
            )
            writer.write(body)
            await writer.drain()
    writer.close()


def serve(name: str, port: int, bind: str = "0.0.0.0") -> None:
    async def run() -> None:
        server = await asyncio.start_server(lambda r, w: _serve(r, w, name), bind, port)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


def transfer(url: str, size: int, seed: int, timeout: float) -> dict[str, object]:
    """One connection: upload `size` bytes, then download `size` bytes; what arrived intact."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port or 80, timeout=timeout)
    data = pattern(size, seed)
    try:
        conn.request("POST", "/", body=data, headers={"Content-Length": str(size)})
        resp = conn.getresponse()
        up_ok = resp.read().decode() == hashlib.sha256(data).hexdigest()
        backend = resp.getheader("X-Backend", "?")
        conn.request("GET", f"/{size}")
        got = conn.getresponse().read()
        down_ok = got == pattern(size)
        return {"backend": backend, "up": size if up_ok else 0, "down": len(got) if down_ok else 0}
    except (OSError, http.client.HTTPException) as e:
        return {"error": repr(e)}
    finally:
        conn.close()


def client(url: str, conns: int, size: int, timeout: float) -> dict[str, object]:
    with ThreadPoolExecutor(conns) as pool:
        results = list(pool.map(lambda i: transfer(url, size, i + 1, timeout), range(conns)))
    intact = [r for r in results if r.get("up") == size and r.get("down") == size]
    return {
        "uploaded": sum(int(str(r.get("up", 0))) for r in results),
        "downloaded": sum(int(str(r.get("down", 0))) for r in results),
        "intact": len(intact),
        "backends": sorted({str(r["backend"]) for r in intact}),
        "failures": [r for r in results if r not in intact],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.bulk")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--bind", default="0.0.0.0", help='"::" for IPv6')
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--conns", type=int, default=4)
    c.add_argument("--bytes", type=int, default=1 << 22)
    c.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args(argv)
    if a.cmd == "serve":
        serve(a.name, a.port, a.bind)
    else:
        print(json.dumps(client(a.url, a.conns, a.bytes, a.timeout), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
