# SPDX-License-Identifier: Apache-2.0
"""The HTTP endpoint Prometheus scrapes: one path, bounded connections, every wait under a timeout.

One thread runs an asyncio loop, so an idle or slow connection costs a socket and a coroutine, never a
thread. At most `max_connections` are open at once; when one more arrives, the connection that has
waited longest for a request (an idle keep-alive, a client that never sends, a slowloris sending a
byte at a time) is closed to make room, so a scrape always gets in. A request head must arrive within
`header_timeout_s` (a kept-alive connection waits `idle_timeout_s` for its next request), a response
must be taken within `write_timeout_s`. Pages are rendered on one worker thread, one at a time, so the
loop keeps accepting while a page is built. Request heads are parsed by the standard library
(http.client.parse_headers); only GET and HEAD of the one path are served.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import http.client
import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lbtui.deadline import within

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0
WRITE_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 16 * 1024
BACKLOG = 128

# (Accept header or None) -> (body, content type)
Renderer = Callable[[str | None], tuple[bytes, str]]


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    waiting_since: float = field(default_factory=time.monotonic)
    busy: bool = False  # a request is being answered: never evicted


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    accept: str | None
    gzip: bool
    keep_alive: bool


class _BadRequest(Exception):
    pass


class ScrapeServer:
    def __init__(
        self,
        render: Renderer,
        path: str,
        *,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        self._render = render
        self.path = path
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.write_timeout_s = write_timeout_s
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._renderer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lbtui-metrics-render")
        self.evicted = 0  # connections closed to make room for a new one

    @property
    def address(self) -> tuple[str, int] | None:
        if self._socket is None:
            return None
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def start(self, host: str, port: int) -> None:
        """Bind now (a busy port raises OSError here, in the caller's thread), then serve on a thread."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        sock.setblocking(False)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._socket, self._loop = sock, loop
        self._thread = threading.Thread(target=self._run, args=(loop, sock, ready), name="lbtui-metrics")
        self._thread.daemon = True
        self._thread.start()
        ready.wait(10)

    def _run(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._serve, sock=sock, limit=MAX_HEAD_BYTES))
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for conn in list(self._connections):
                conn.writer.close()
            loop.run_until_complete(server.wait_closed())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def stop(self) -> None:
        loop, thread, sock = self._loop, self._thread, self._socket
        self._loop = self._thread = self._socket = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        if sock is not None:
            sock.close()
        self._renderer.shutdown(wait=True, cancel_futures=True)

    # ---- connections ---------------------------------------------------------------------------

    def _make_room(self, newcomer: _Connection) -> bool:
        """Close the connection that has waited longest for a request; False if all are busy."""
        idle = [c for c in self._connections if not c.busy and c is not newcomer]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.waiting_since)
        oldest.writer.close()
        self._connections.discard(oldest)
        self.evicted += 1
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer)
        self._connections.add(conn)
        if len(self._connections) > self.max_connections and not self._make_room(conn):
            self._connections.discard(conn)
            writer.close()
            return
        timeout = self.header_timeout_s
        try:
            while True:
                conn.busy, conn.waiting_since = False, time.monotonic()
                try:
                    head = await within(timeout, reader.readuntil(b"\r\n\r\n"))
                except (
                    TimeoutError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    ConnectionError,
                ):
                    return  # silence, a closed connection or an oversized head: nothing to answer
                conn.busy = True
                try:
                    request = _parse(head)
                except _BadRequest as exc:
                    await self._send(writer, 400, str(exc).encode() + b"\n", "text/plain", False, False)
                    return
                await self._answer(writer, request)
                if not request.keep_alive:
                    return
                timeout = self.idle_timeout_s
        except (TimeoutError, ConnectionError):
            return
        finally:
            self._connections.discard(conn)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, request: _Request) -> None:
        keep = request.keep_alive
        if request.path != self.path:
            body = f"not found; metrics are at {self.path}\n".encode()
            await self._send(writer, 404, body, "text/plain; charset=utf-8", keep, request.method == "HEAD")
            return
        if request.method not in ("GET", "HEAD"):
            await self._send(
                writer, 405, b"only GET and HEAD\n", "text/plain", keep, False, ("Allow", "GET, HEAD")
            )
            return
        loop = asyncio.get_running_loop()
        body, content_type = await loop.run_in_executor(self._renderer, self._page, request)
        extra = ("Content-Encoding", "gzip") if request.gzip else None
        await self._send(writer, 200, body, content_type, keep, request.method == "HEAD", extra)

    def _page(self, request: _Request) -> tuple[bytes, str]:
        body, content_type = self._render(request.accept)
        return (gzip.compress(body, compresslevel=6) if request.gzip else body), content_type

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str,
        keep_alive: bool,
        head_only: bool,
        extra: tuple[str, str] | None = None,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {http.client.responses.get(status, '')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        if extra is not None:
            lines.append(f"{extra[0]}: {extra[1]}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await within(self.write_timeout_s, writer.drain())


def _parse(head: bytes) -> _Request:
    line, _, rest = head.partition(b"\r\n")
    parts = line.decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest("bad request line")
    method, target, version = parts
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException as exc:
        raise _BadRequest(f"bad headers: {exc}") from None
    connection = (headers.get("Connection") or "").lower()
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    if headers.get("Transfer-Encoding") or (headers.get("Content-Length") or "0").strip() != "0":
        keep_alive = False  # a body is never read: do not try to find the next request after it
    return _Request(
        method=method,
        path=target.split("?", 1)[0],
        accept=headers.get("Accept"),
        gzip="gzip" in (headers.get("Accept-Encoding") or "").lower(),
        keep_alive=keep_alive,
    )
