# SPDX-License-Identifier: Apache-2.0
"""AAAA records from a real dnsmasq: the names of IPv6 proxies resolve to their usable IPv6 addresses.

The test makes its own network namespace (prefix "dsix" + pid) with the server's IPv4 and IPv6
addresses on the namespace's loopback, runs dnsmasq there, and runs the resolver in a child process
inside the namespace: one name with A and AAAA records (asked both ways), one with only A records,
and the server reached over IPv6 as well as over IPv4.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import json_from_child

DNSMASQ = "/usr/sbin/dnsmasq"
SERVER4 = "10.56.0.1"
SERVER6 = "fd00:56::1"

CHILD = r"""
import asyncio, json, sys

from lbtui.control.dns import DnsBackendResolver


async def main(request):
    resolver = DnsBackendResolver(request["nameservers"], timeout_s=2.0)
    answers = {}
    for proxy, name, rdtype in request["names"]:
        result = await resolver.resolve_now(proxy, name, rdtype=rdtype)
        answers[f"{proxy} {name} {rdtype}"] = list(result.addresses) if result else None
    errors = {f"{s.proxy} {s.hostname}": s.last_error for s in resolver.status()}
    await resolver.close()
    print(json.dumps({"answers": answers, "errors": errors}))


asyncio.run(main(json.loads(sys.argv[1])))
"""

RECORDS = {
    "dual.lbt.test": ["10.56.1.2", "10.56.1.1", "fd00:56:1::2", "fd00:56:1::1", "fd00:56:1:0::10"],
    "old.lbt.test": ["10.56.1.3"],
    # what a careless zone may hold: none of it can be a backend of an IPv6 proxy
    "junk.lbt.test": ["::1", "fe80::1", "::ffff:10.56.1.9", "fd00:56:1::20"],
}


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[str]:
    ns = f"dsix{os.getpid() % 100000}"
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"{a} {name}\n" for name, addresses in RECORDS.items() for a in addresses))
    _run("ip", "netns", "add", ns)
    server: subprocess.Popen[bytes] | None = None
    try:
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "addr", "add", f"{SERVER4}/32", "dev", "lo")
        _run("ip", "-n", ns, "-6", "addr", "add", f"{SERVER6}/128", "dev", "lo", "nodad")
        log = open(tmp_path / "dnsmasq.log", "wb")  # noqa: SIM115 - the Popen owns it
        server = subprocess.Popen(
            [
                *("ip", "netns", "exec", ns, DNSMASQ),
                *"--no-daemon -k --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces".split(),
                *"--port 53 --user=root --local=/lbt.test/ --log-facility=- --log-queries".split(),
                f"--addn-hosts={hosts}",
                f"--listen-address={SERVER4}",
                f"--listen-address={SERVER6}",
                f"--pid-file={tmp_path / 'dnsmasq.pid'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while True:
            listening = subprocess.run(
                ["ss", "-N", ns, "-Hunl"], capture_output=True, text=True, timeout=10
            ).stdout
            if f"{SERVER4}:53" in listening and f"[{SERVER6}]:53" in listening:
                break
            assert server.poll() is None, (tmp_path / "dnsmasq.log").read_text()
            assert time.monotonic() < deadline, f"dnsmasq did not start listening: {listening}"
            time.sleep(0.02)
        yield ns
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def resolve(ns: str, nameservers: list[str], names: list[tuple[str, str, str]]) -> dict[str, Any]:
    return json_from_child(ns, CHILD, json.dumps({"nameservers": nameservers, "names": names}))


@pytest.mark.root
@pytest.mark.requires(DNSMASQ)
@pytest.mark.parametrize("server", [SERVER4, SERVER6])
def test_aaaa_records_for_ipv6_proxies_a_records_for_ipv4_ones(dnsmasq: str, server: str) -> None:
    names = [
        ("web", "dual.lbt.test", "A"),
        ("web6", "dual.lbt.test", "AAAA"),
        ("web6", "old.lbt.test", "AAAA"),
        ("junk6", "junk.lbt.test", "AAAA"),
    ]
    result = resolve(dnsmasq, [server], names)
    assert result["answers"] == {
        "web dual.lbt.test A": ["10.56.1.1", "10.56.1.2"],
        "web6 dual.lbt.test AAAA": ["fd00:56:1::1", "fd00:56:1::2", "fd00:56:1::10"],
        "web6 old.lbt.test AAAA": None,  # only A records: an IPv6 proxy gets no backend from it
        "junk6 junk.lbt.test AAAA": ["fd00:56:1::20"],  # loopback, link-local, IPv4-mapped dropped
    }
    assert result["errors"]["web6 old.lbt.test"] == "no AAAA records"
    assert result["errors"]["web6 dual.lbt.test"] is None
