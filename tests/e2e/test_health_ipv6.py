# SPDX-License-Identifier: Apache-2.0
"""Health checks of IPv6 backends across a real IPv6 link.

The test makes two network namespaces (prefix "hsix" + pid) joined by a veth pair, fd00:57::1 (the
checker) and fd00:57::2 (the backend), runs a small HTTP server on [fd00:57::2]:8080 that records the
Host header of every request, and runs lbtui's checks in a child process in the checker's namespace:
TCP and HTTP up, then refused once the server is gone.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import PYTHON, json_from_child

CHECKER, BACKEND = "fd00:57::1", "fd00:57::2"

SERVER = r"""
import http.server, socket, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[2], "a") as log:
            log.write(self.headers["Host"] + "\n")
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

class Server(http.server.HTTPServer):
    address_family = socket.AF_INET6

Server((sys.argv[1], 8080), Handler).serve_forever()
"""

CHILD = r"""
import asyncio, json, sys

from lbtui.control.health import Target, run_check


class Cfg:
    def __init__(self, **kw):
        self.path, self.http_host, self.expected_status, self.timeout_ms = "/healthz", None, (200,), 2000
        self.__dict__.update(kw)


async def main(ip):
    out = {}
    for name, cfg in {
        "tcp": Cfg(type="tcp"),
        "http": Cfg(type="http"),
        "http-404": Cfg(type="http", path="/missing"),
        "http-named": Cfg(type="http", http_host="www.example.com"),
    }.items():
        result = await run_check(Target(ip, 8080, cfg))
        out[name] = [result.ok, result.detail]
    print(json.dumps(out))


asyncio.run(main(sys.argv[1]))
"""


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


@pytest.fixture
def link() -> Iterator[tuple[str, str]]:
    tag = os.getpid() % 100000
    checker, backend = f"hsix{tag}c", f"hsix{tag}b"
    _run("ip", "netns", "add", checker)
    _run("ip", "netns", "add", backend)
    try:
        _run(
            "ip",
            "link",
            "add",
            f"hsix{tag}",
            "netns",
            checker,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            backend,
        )
        for ns, dev, address in ((checker, f"hsix{tag}", CHECKER), (backend, "eth0", BACKEND)):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "-6", "addr", "add", f"{address}/64", "dev", dev, "nodad")
            _run("ip", "-n", ns, "link", "set", dev, "up")
        yield checker, backend
    finally:
        for ns in (checker, backend):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def checks(ns: str) -> dict[str, Any]:
    return json_from_child(ns, CHILD, BACKEND)


@pytest.mark.root
def test_tcp_and_http_checks_of_an_ipv6_backend(link: tuple[str, str], tmp_path: Path) -> None:
    checker, backend = link
    hosts = tmp_path / "hosts"
    server = subprocess.Popen(
        ["ip", "netns", "exec", backend, str(PYTHON), "-c", SERVER, BACKEND, str(hosts)]
    )
    try:
        deadline = time.monotonic() + 10
        while (
            f"[{BACKEND}]:8080"
            not in subprocess.run(
                ["ss", "-N", backend, "-Htln"], capture_output=True, text=True, timeout=10
            ).stdout
        ):
            assert server.poll() is None and time.monotonic() < deadline, "the server did not listen"
            time.sleep(0.02)
        assert checks(checker) == {
            "tcp": [True, "connected"],
            "http": [True, "HTTP 200"],
            "http-404": [False, "HTTP 404 (expected 200)"],
            "http-named": [True, "HTTP 200"],
        }
        assert hosts.read_text().split() == [f"[{BACKEND}]:8080"] * 2 + ["www.example.com"]
    finally:
        server.terminate()
        server.wait(10)
    down = checks(checker)
    assert down["tcp"] == [False, "connection refused"] and down["http"] == [False, "connection refused"]
