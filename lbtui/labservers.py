# SPDX-License-Identifier: Apache-2.0
"""Tiny servers and clients for the demo/test lab (stdlib only, no lbtui imports).

Run inside a backend namespace:

    python -m lbtui.labservers --name b1 --http-port 8080 --udp-port 5353 [--health-port N]
                               [--bind ADDR[,ADDR]] [--record FILE] [--ready-file FILE]

- HTTP/1.1 with keep-alive: ``GET /`` -> "b1\\n", ``GET /healthz`` -> 200 "ok",
  ``GET /sleep?ms=N`` -> "b1\\n" after N ms, anything else -> 404. ``Connection: close`` is honoured.
- UDP echo: a datagram "x" is answered with "b1 x".
- ``--bind``: the addresses to listen on (default 0.0.0.0; "0.0.0.0,::" for both families).
- ``--record FILE``: one line "client_ip:client_port" per accepted TCP connection, flushed per line.
- ``--ready-file FILE``: created once every socket is bound (the lab waits for it).
- ``--control FILE``: re-read every 0.5 s when it changes, JSON ``{"delay_ms": N, "refuse": bool}``:
  answer ``GET /`` after N ms (a slow backend), or close the HTTP port (not the health port) so
  new connections are refused with a RST (a failing backend). The demo drives its story with it.

Run inside a client namespace (the demo's background traffic):

    python -m lbtui.labservers client traffic --url URL --udp-host H --udp-port P --rate R
    python -m lbtui.labservers client probe --url URL        (exit 0 if one GET is answered)

``traffic`` runs until killed and prints one line per request: ``http b1``, ``udp b2``, ``http !``
(failure). The test clients built on the same functions are in tests/support/labclients.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from typing import TextIO, cast

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16384
ERRORS_KEY = "errors"


# ---------------------------------------------------------------- servers


class BackendServer:
    """HTTP + UDP echo server answering with its backend name."""

    def __init__(self, name: str, record: TextIO | None) -> None:
        self.name = name
        self.record = record
        self.delay_ms = 0  # --control: extra time before answering GET /

    async def handle_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self.record is not None and peer:
            self.record.write(f"{peer[0]}:{peer[1]}\n")
            self.record.flush()
        try:
            while await self._serve_one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # client went away or sent garbage: just close
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _serve_one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must be closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                raise
            return False  # clean EOF between requests
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = _parse_request_line(lines[0])
        headers = _parse_headers(lines[1:])
        length = int(headers.get("content-length", "0") or "0")
        if length:
            await reader.readexactly(length)  # body is ignored, but must be consumed
        conn_tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
        keep_alive = "keep-alive" in conn_tokens if version == "HTTP/1.0" else "close" not in conn_tokens
        status, body = await self._route(method, target)
        head_out = (
            f"HTTP/1.1 {status}\r\n"
            f"Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Backend: {self.name}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        writer.write(head_out.encode() + (body if method != "HEAD" else b""))
        await writer.drain()
        return keep_alive

    async def _route(self, method: str, target: str) -> tuple[str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"method not allowed\n"
        url = urllib.parse.urlsplit(target)
        if url.path == "/":
            if self.delay_ms:
                await asyncio.sleep(self.delay_ms / 1000)
            return "200 OK", f"{self.name}\n".encode()
        if url.path == "/healthz":
            return "200 OK", b"ok"
        if url.path == "/sleep":
            query = urllib.parse.parse_qs(url.query)
            ms = min(int(query.get("ms", ["0"])[0]), 3_600_000)
            await asyncio.sleep(ms / 1000)
            return "200 OK", f"{self.name}\n".encode()
        return "404 Not Found", b"not found\n"


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.prefix = f"{name} ".encode()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.prefix + data, addr)


def _parse_request_line(line: str) -> tuple[str, str, str]:
    parts = line.split(" ")
    if len(parts) != 3:
        raise ValueError(f"bad request line {line!r}")
    return parts[0], parts[1], parts[2]


def _parse_headers(lines: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return headers


def _udp_socket(host: str, port: int) -> socket.socket:
    """A bound UDP socket; an IPv6 one only for IPv6 (as asyncio makes its TCP listeners), so that
    "::" and "0.0.0.0" on one port do not clash."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_hosts(bind: str) -> list[str]:
    """--bind "0.0.0.0,::" -> both addresses (a dual-stack backend: one socket per family)."""
    return [host.strip() for host in bind.split(",") if host.strip()]


async def serve(args: argparse.Namespace) -> None:
    record = open(args.record, "a", buffering=1) if args.record else None  # noqa: SIM115 (lives as long as the server)
    server = BackendServer(args.name, record)
    loop = asyncio.get_running_loop()
    servers = []
    ports = [args.http_port] + ([args.health_port] if args.health_port else [])
    for port in ports:
        servers.append(
            await asyncio.start_server(
                server.handle_http,
                bind_hosts(args.bind),
                port,
                backlog=4096,
                reuse_address=True,
                limit=MAX_HEADER_BYTES,
            )
        )
    transports: list[asyncio.DatagramTransport] = []
    if args.udp_port:
        for host in bind_hosts(args.bind):  # a datagram endpoint takes one address
            transport, _ = await loop.create_datagram_endpoint(
                lambda: UdpEcho(args.name), sock=_udp_socket(host, args.udp_port)
            )
            transports.append(transport)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    watcher = None
    if args.control:
        watcher = asyncio.create_task(_follow_control(args, server, servers))
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    for s in servers:
        s.close()
    for transport in transports:
        transport.close()
    if record is not None:
        record.close()


async def _follow_control(
    args: argparse.Namespace, server: BackendServer, servers: list[asyncio.Server]
) -> None:
    """Apply --control: servers[0] is the HTTP port, closed while "refuse" is true."""
    seen: object = None
    while True:
        try:
            with open(args.control) as f:
                wanted = json.load(f)
        except (OSError, ValueError):
            wanted = {}
        if wanted != seen and isinstance(wanted, dict):
            seen = wanted
            server.delay_ms = max(0, min(int(wanted.get("delay_ms", 0)), 10_000))
            refuse = bool(wanted.get("refuse", False))
            listening = servers[0].is_serving()
            if refuse and listening:
                servers[0].close()
            elif not refuse and not listening:
                servers[0] = await asyncio.start_server(
                    server.handle_http,
                    bind_hosts(args.bind),
                    args.http_port,
                    backlog=4096,
                    reuse_address=True,
                    limit=MAX_HEADER_BYTES,
                )
        await asyncio.sleep(0.5)


# ---------------------------------------------------------------- clients


def _backend_of_body(body: bytes) -> str:
    return body.decode(errors="replace").strip().split(" ")[0] or "?"


def http_get(conn: http.client.HTTPConnection, path: str, close: bool) -> str:
    headers = {"Connection": "close"} if close else {}
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise OSError(f"HTTP status {resp.status}")
    return _backend_of_body(body)


def _split_url(url: str) -> tuple[str, int, str]:
    u = urllib.parse.urlsplit(url)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    return u.hostname or "127.0.0.1", u.port or 80, path


def http_counts(url: str, count: int, new_conn: bool, timeout: float) -> dict[str, int]:
    host, port, path = _split_url(url)
    counts: Counter[str] = Counter()
    errors = 0
    conn: http.client.HTTPConnection | None = None
    for _ in range(count):
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            counts[http_get(conn, path, close=new_conn)] += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = None  # a broken keep-alive connection is replaced by a new one
            continue
        if new_conn:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return {**dict(counts), ERRORS_KEY: errors}


def udp_counts(host: str, port: int, count: int, timeout: float) -> dict[str, int]:
    """One fresh socket (so one fresh source port, i.e. one new flow) per query."""
    counts: Counter[str] = Counter()
    errors = 0
    for i in range(count):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            payload = f"q{i}".encode()
            try:
                s.sendto(payload, (host, port))
                data, _ = s.recvfrom(2048)
            except OSError:
                errors += 1
                continue
            name, _, echoed = data.decode(errors="replace").partition(" ")
            if echoed != payload.decode():
                errors += 1
                continue
            counts[name] += 1
    return {**dict(counts), ERRORS_KEY: errors}


def traffic(url: str, udp_host: str | None, udp_port: int, rate: float, timeout: float) -> None:
    """Light steady load until killed: alternating HTTP (new connection) and UDP (new socket)."""
    interval = 1.0 / rate
    next_at = time.monotonic()
    do_udp = False
    while True:
        if do_udp and udp_host:
            r = udp_counts(udp_host, udp_port, 1, timeout)
            kind = "udp"
        else:
            r = http_counts(url, 1, new_conn=True, timeout=timeout)
            kind = "http"
        do_udp = not do_udp
        names = [k for k, v in r.items() if k != ERRORS_KEY and v]
        print(f"{kind} {names[0] if names else '!'}", flush=True)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # fell behind: do not burst to catch up


def _emit(obj: object) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


# ---------------------------------------------------------------- command line


def _server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lbtui.labservers", description="lab backend servers")
    p.add_argument("--name", required=True)
    p.add_argument("--bind", default="0.0.0.0", help='address(es) to listen on, e.g. "0.0.0.0,::"')
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--udp-port", type=int, default=5353, help="0 = no UDP echo")
    p.add_argument("--health-port", type=int, default=None, help="a second HTTP port with the same handler")
    p.add_argument("--record", help="append client_ip:client_port per accepted TCP connection")
    p.add_argument("--ready-file", help="created once all sockets are bound")
    p.add_argument("--control", help='JSON file followed while running: {"delay_ms": N, "refuse": bool}')
    return p


def _client_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lbtui.labservers client", description="lab clients")
    sub = p.add_subparsers(dest="kind", required=True)
    pr = sub.add_parser("probe", help="exit 0 if one GET is answered")
    pr.add_argument("--url", default="http://10.0.0.1/")
    pr.add_argument("--timeout", type=float, default=1.0)
    t = sub.add_parser("traffic")
    t.add_argument("--url", default="http://10.0.0.1/")
    t.add_argument("--udp-host", default="10.0.0.1", help="empty = HTTP only")
    t.add_argument("--udp-port", type=int, default=5353)
    t.add_argument("--rate", type=float, default=20.0, help="requests per second (HTTP and UDP together)")
    t.add_argument("--timeout", type=float, default=1.0)
    return p


def run_client(argv: Sequence[str]) -> int:
    a = _client_parser().parse_args(argv)
    if a.kind == "probe":
        return 1 if http_counts(a.url, 1, new_conn=True, timeout=a.timeout)[ERRORS_KEY] else 0
    if a.kind == "traffic":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            traffic(a.url, a.udp_host or None, a.udp_port, max(a.rate, 0.1), a.timeout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["client"]:
        return run_client(args[1:])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(_server_parser().parse_args(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
