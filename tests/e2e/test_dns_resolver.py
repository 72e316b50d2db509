# SPDX-License-Identifier: Apache-2.0
"""DNS backends against a real dnsmasq.

Each test makes its own network namespace (prefix "dnst" + pid) with the server's address on the
namespace's loopback, runs dnsmasq there on port 53, and drives the resolver in a child process inside
the namespace (the program is CHILD below) over a JSON-lines protocol.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
DNSMASQ = "/usr/sbin/dnsmasq"

pytestmark = pytest.mark.beside  # may run beside other e2e tests (tests/conftest.py)

CHILD = r"""
import asyncio, dataclasses, json, random, sys

import dns.flags, dns.message, dns.rrset

from lbtui.control.dns import DnsBackendResolver


class Garbage(asyncio.DatagramProtocol):
    # mode "random": bytes that are not DNS; "lies": a well-formed answer with unusable addresses
    def __init__(self, mode):
        self.mode = mode

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if self.mode == "random":
            self.transport.sendto(data[:2] + random.randbytes(40), addr)
            self.transport.sendto(random.randbytes(3), addr)
            return
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        name = query.question[0].name
        reply.answer.append(
            dns.rrset.from_text(name, 5, "IN", "A", "0.0.0.0", "224.0.0.1", "255.255.255.255", "10.9.9.9")
        )
        reply.answer.append(dns.rrset.from_text(name, 5, "IN", "TXT", '"10.1.1.1"'))
        self.transport.sendto(reply.to_wire(), addr)


async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    resolvers = {}
    changes = []

    def on_change(proxy, hostname, old, new):
        changes.append([proxy, hostname, list(old), list(new)])

    def statuses():
        # Through JSON, so tuples compare equal to the lists the test sends.
        return json.loads(json.dumps([dataclasses.asdict(s) for r in resolvers.values() for s in r.status()]))

    def reply(**fields):
        fields.update(status=statuses(), changes=changes)
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    def matches(status, until):
        return all(status.get(key) == value for key, value in until.get("equal", {}).items()) and all(
            status.get(key, 0) >= value for key, value in until.get("at_least", {}).items()
        )

    while line := await reader.readline():
        request = json.loads(line)
        op = request["op"]
        if op == "start":
            resolver = DnsBackendResolver(
                request["nameservers"], on_change=on_change, timeout_s=request["timeout_s"]
            )
            resolvers[request["id"]] = resolver
            resolver.set_names({(p, h): refresh for p, h, refresh in request["names"]})
            first = {}
            for proxy, hostname, _ in request["names"]:
                result = await resolver.resolve_now(proxy, hostname)
                first[hostname] = list(result.addresses) if result else None
            reply(first=first)
        elif op == "wait":
            deadline = loop.time() + request["wait_s"]
            while True:
                found = [s for s in statuses() if s["hostname"] == request["hostname"]]
                ok = bool(found) and matches(found[0], request["until"])
                if ok or loop.time() > deadline:
                    break
                await asyncio.sleep(0.05)
            reply(ok=ok)
        elif op == "garbage":
            await loop.create_datagram_endpoint(
                lambda: Garbage(request["mode"]), local_addr=(request["address"], 53)
            )
            reply()
        elif op == "close":
            for resolver in resolvers.values():
                await resolver.close()
            alive = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("dns ")]
            reply(alive=alive)
            return


asyncio.run(main())
"""


SERVER = "10.53.0.1"
# In the foreground, no config file, answers only from the hosts file; root so it can reread a file
# under pytest's private tmp dir on SIGHUP; names under lbt.test that are not in it are NXDOMAIN.
DNSMASQ_FLAGS = (
    "--no-daemon -k --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces --port 53"
    " --user=root --local=/lbt.test/ --log-facility=- --log-queries"
).split()
_counter = iter(range(1000))


def _ns_name() -> str:
    return f"dnst{os.getpid() % 1000}x{next(_counter)}"


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


@dataclass
class DnsLab:
    ns: str
    hosts: Path
    workdir: Path
    server: subprocess.Popen[bytes] | None = None
    child: subprocess.Popen[str] | None = None
    child_errors: list[str] = field(default_factory=list)

    def write_hosts(self, records: dict[str, list[str]]) -> None:
        lines = [f"{address} {name}" for name, addresses in records.items() for address in addresses]
        self.hosts.write_text("\n".join(lines) + "\n")

    def start_server(self) -> None:
        assert self.server is None
        log = open(self.workdir / "dnsmasq.log", "ab")  # noqa: SIM115 - the Popen owns it
        self.server = subprocess.Popen(
            [
                *("ip", "netns", "exec", self.ns, DNSMASQ),
                *DNSMASQ_FLAGS,
                f"--addn-hosts={self.hosts}",
                f"--listen-address={SERVER}",
                f"--pid-file={self.workdir / 'dnsmasq.pid'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while f"{SERVER}:53" not in self._udp_listeners():
            assert self.server.poll() is None, (self.workdir / "dnsmasq.log").read_text()
            assert time.monotonic() < deadline, "dnsmasq did not start listening"
            time.sleep(0.02)

    def stop_server(self) -> None:
        if self.server is None:
            return
        self.server.terminate()
        try:
            self.server.wait(5)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(5)
        self.server = None

    def reload_server(self) -> None:
        assert self.server is not None
        # `ip netns exec` execs dnsmasq in place, so the Popen's pid is dnsmasq's own.
        self.server.send_signal(signal.SIGHUP)

    def _udp_listeners(self) -> str:
        return subprocess.run(
            ["ss", "-N", self.ns, "-Hunl"], capture_output=True, text=True, timeout=10
        ).stdout

    def start_child(self) -> None:
        self.child = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, str(PYTHON), "-c", CHILD],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / "child.log", "w"),  # noqa: SIM115 - the Popen owns it
            text=True,
        )

    def ask(self, timeout: float = 20.0, **request: Any) -> dict[str, Any]:
        child = self.child
        assert child is not None and child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps(request) + "\n")
        child.stdin.flush()
        ready, _, _ = select.select([child.stdout], [], [], timeout)
        line = child.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"child gave no answer to {request}: {self.child_log()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def child_log(self) -> str:
        path = self.workdir / "child.log"
        return path.read_text() if path.exists() else ""

    def stop_child(self) -> None:
        if self.child is None:
            return
        if self.child.poll() is None:
            self.child.kill()
        self.child.wait(5)
        self.child = None


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[DnsLab]:
    ns = _ns_name()
    lab = DnsLab(ns=ns, hosts=tmp_path / "hosts", workdir=tmp_path)
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "addr", "add", f"{SERVER}/24", "dev", "lo")
        yield lab
    finally:
        lab.stop_child()
        lab.stop_server()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def status_of(answer: dict[str, Any], hostname: str) -> dict[str, Any]:
    (status,) = [s for s in answer["status"] if s["hostname"] == hostname]
    return status


def wait(lab: DnsLab, hostname: str, timeout: float = 10.0, **until: Any) -> dict[str, Any]:
    answer = lab.ask(timeout=timeout + 10, op="wait", hostname=hostname, until=until, wait_s=timeout)
    assert answer["ok"], f"{hostname} never reached {until}: {status_of(answer, hostname)}"
    return answer


def close_child(lab: DnsLab) -> None:
    answer = lab.ask(op="close")
    assert answer["alive"] == []  # every refresh task ended
    assert lab.child is not None
    assert lab.child.wait(10) == 0, lab.child_log()
    assert "Traceback" not in lab.child_log(), lab.child_log()


API = "api.lbt.test"
THREE = ["10.53.1.1", "10.53.1.2", "10.53.1.3"]


def dnsmasq_test(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a test as needing root (namespaces) and dnsmasq."""
    marked: Callable[..., None] = pytest.mark.root(pytest.mark.requires(DNSMASQ)(test))
    return marked


@dnsmasq_test
def test_real_server_all_a_records_and_nxdomain(lab: DnsLab):
    lab.write_hosts({API: ["10.53.1.3", "10.53.1.1", "10.53.1.2"]})
    lab.start_server()
    lab.start_child()
    missing = "missing.lbt.test"
    answer = lab.ask(
        op="start",
        id="main",
        nameservers=[SERVER],
        timeout_s=1.0,
        names=[["web", API, 30.0], ["web", missing, 30.0]],
    )
    assert answer["first"] == {API: THREE, missing: None}
    api = status_of(answer, API)
    assert api["addresses"] == THREE and api["consecutive_failures"] == 0 and api["last_error"] is None
    nx = status_of(answer, missing)
    assert nx["addresses"] == [] and nx["consecutive_failures"] == 1
    assert "NXDOMAIN" in nx["last_error"]
    assert nx["last_success"] is None
    assert answer["changes"] == []
    close_child(lab)


@dnsmasq_test
def test_real_server_change_is_followed_after_sighup(lab: DnsLab):
    lab.write_hosts({API: THREE})
    lab.start_server()
    lab.start_child()
    answer = lab.ask(op="start", id="main", nameservers=[SERVER], timeout_s=1.0, names=[["web", API, 0.5]])
    assert answer["first"] == {API: THREE}

    changed = ["10.53.1.2", "10.53.1.3", "10.53.1.4", "10.53.1.10"]
    lab.write_hosts({API: changed})
    lab.reload_server()  # dnsmasq rereads addn-hosts on SIGHUP
    numeric_order = ["10.53.1.2", "10.53.1.3", "10.53.1.4", "10.53.1.10"]
    answer = wait(lab, API, equal={"addresses": numeric_order})
    assert answer["changes"] == [["web", API, THREE, numeric_order]]
    assert all(new for _, _, _, new in answer["changes"])
    close_child(lab)


@dnsmasq_test
def test_real_server_down_keeps_last_good_set_then_recovers(lab: DnsLab):
    lab.write_hosts({API: THREE})
    lab.start_server()
    lab.start_child()
    answer = lab.ask(op="start", id="main", nameservers=[SERVER], timeout_s=0.3, names=[["web", API, 0.5]])
    assert answer["first"] == {API: THREE}
    good_at = status_of(answer, API)["last_success"]

    lab.stop_server()
    answer = wait(lab, API, at_least={"consecutive_failures": 2})
    down = status_of(answer, API)
    assert down["addresses"] == THREE  # the last good set stays
    assert down["last_error"]
    assert down["last_success"] == good_at
    assert answer["changes"] == []  # never told "no addresses" because of a failure

    lab.write_hosts({API: ["10.53.1.7"]})
    lab.start_server()
    answer = wait(lab, API, equal={"consecutive_failures": 0, "addresses": ["10.53.1.7"]})
    up = status_of(answer, API)
    assert up["last_error"] is None and up["last_success"] > good_at
    assert answer["changes"] == [["web", API, THREE, ["10.53.1.7"]]]
    close_child(lab)


@dnsmasq_test
def test_garbage_and_lying_servers_do_not_crash_anything(lab: DnsLab):
    lab.write_hosts({API: THREE})
    lab.start_server()
    _run("ip", "-n", lab.ns, "addr", "add", "10.53.0.2/24", "dev", "lo")
    _run("ip", "-n", lab.ns, "addr", "add", "10.53.0.3/24", "dev", "lo")
    lab.start_child()
    lab.ask(op="garbage", mode="random", address="10.53.0.2")
    lab.ask(op="garbage", mode="lies", address="10.53.0.3")

    answer = lab.ask(
        op="start", id="random", nameservers=["10.53.0.2"], timeout_s=0.3, names=[["r", API, 0.2]]
    )
    assert answer["first"] == {API: None}
    answer = wait(lab, API, at_least={"consecutive_failures": 3})
    random_status = status_of(answer, API)
    assert random_status["addresses"] == [] and random_status["last_error"]

    answer = lab.ask(
        op="start", id="lies", nameservers=["10.53.0.3"], timeout_s=1.0, names=[["l", "x.y", 30]]
    )
    # Only the one usable address survives: 0.0.0.0, multicast, broadcast and the TXT are ignored.
    assert answer["first"] == {"x.y": ["10.9.9.9"]}

    answer = lab.ask(op="start", id="good", nameservers=[SERVER], timeout_s=1.0, names=[["g", API, 30]])
    assert answer["first"] == {API: THREE}  # the process and its loop are fine
    close_child(lab)


@dnsmasq_test
def test_real_server_through_the_system_resolver(lab: DnsLab):
    # `ip netns exec` bind-mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf.
    etc = Path("/etc/netns") / lab.ns
    etc.mkdir(parents=True)
    try:
        (etc / "resolv.conf").write_text(f"nameserver {SERVER}\noptions timeout:1 attempts:1\n")
        lab.write_hosts({API: THREE})
        lab.start_server()
        lab.start_child()
        answer = lab.ask(op="start", id="system", nameservers=[], timeout_s=1.0, names=[["web", API, 30.0]])
        assert answer["first"] == {API: THREE}
        close_child(lab)
    finally:
        shutil.rmtree(etc, ignore_errors=True)
