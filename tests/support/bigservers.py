# SPDX-License-Identifier: Apache-2.0
"""Backend servers with big answers, for path-MTU tests: run inside a backend namespace.

    python -m tests.support.bigservers --name b1 --http-port 8080 --udp-port 5353 --body 1048576 --udp 3000

Both listen on --bind (0.0.0.0 by default; :: for IPv6).
HTTP: every request on a connection gets `body` bytes (keep-alive). UDP: every datagram gets a reply
of `udp` bytes, the first ones the server's name. Both stop when the process is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.bigservers")
    p.add_argument("--name", required=True)
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--udp-port", type=int, default=5353)
    p.add_argument("--body", type=int, default=1 << 20)
    p.add_argument("--udp", type=int, default=3000)
    p.add_argument("--bind", default="0.0.0.0")
    a = p.parse_args(argv)
    body = (a.name.encode() + b" " + b"x" * a.body)[: a.body]
    reply = (a.name.encode() + b" " + b"u" * a.udp)[: a.udp]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nX-Backend: {a.name}\r\n\r\n"
                writer.write(head.encode() + body)
                await writer.drain()
        writer.close()

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(reply, addr)  # type: ignore[attr-defined]

    async def run() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Udp, local_addr=(a.bind, a.udp_port))
        server = await asyncio.start_server(serve, a.bind, a.http_port)
        async with server:
            await server.serve_forever()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
