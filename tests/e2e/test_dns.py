# SPDX-License-Identifier: Apache-2.0
"""DNS backends end to end, against a real dnsmasq started by the test inside the lab.

dnsmasq runs in the lab's LB namespace on the bridge address (10.0.2.1:53) and answers
`web.lab.test` from an addn-hosts file with the addresses of backends b1..b3. `lbtui --no-ui` runs
in the same namespace with proxy "web" = one static backend (b4) + the DNS name, refreshed every
second. The test changes the records (SIGHUP makes dnsmasq reread the file), then stops dnsmasq,
and watches the groups, the DNS status, the events and real traffic from the client namespace.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lbtui import model
from lbtui.addresses import IPV4, host_text
from lbtui.control_client import SocketEngineHandle
from lbtui.lab import LabSpec, TrafficGenerator
from tests.support.lab import ClientLab
from tests.support.labtools import served, start_lbtui, wait_until

DNSMASQ = "/usr/sbin/dnsmasq"

pytestmark = pytest.mark.requires(DNSMASQ)

PREFIX = "ldn"
NAME = "web.lab.test"
SERVER = "10.0.2.1"  # the lab bridge's address in the LB namespace
SERVER6 = "fd00:20::1"  # and its IPv6 address
REFRESH_S = 1.0
# Longest wait between two refreshes is REFRESH_S + 10 % jitter; the rest is margin for a loaded
# machine (query, group rewrite, snapshot publication).
FOLLOW_BOUND_S = REFRESH_S * 1.1 + 3.0
# In the foreground, no config file, answers only from the hosts file; root so that it can reread
# a file under pytest's private tmp dir on SIGHUP; other names under lab.test are NXDOMAIN.
DNSMASQ_FLAGS = (
    "--no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces --port=53"
    " --user=root --local=/lab.test/ --log-facility=- --log-queries"
).split()


def write_hosts(path: Path, addresses: list[str]) -> None:
    path.write_text("".join(f"{address} {NAME}\n" for address in addresses))


def config_text(lab: ClientLab, family: int = IPV4) -> str:
    """Proxy "web" on the VIP of `family`: static backend b4 and the name (A records for an IPv4
    proxy, AAAA records for an IPv6 one), the nameserver reached over the same family."""
    ifaces = ", ".join(f'"{i}"' for i in lab.client_ifaces)
    server = SERVER if family == IPV4 else SERVER6
    return f"""
[settings]
control_socket = "/run/lbtui/{lab.prefix}.sock"
xdp_mode = "generic"
sweep_interval_s = 0.25

[settings.metrics]
enabled = false

[settings.dns]
nameservers = ["{server}"]

[[proxy]]
name = "web"
interfaces = [{ifaces}]
vip = "{lab.vip_of(family)}"
port = 80
protocol = "tcp"
algorithm = "weighted-random"

[[proxy.backend]]
address = "{lab.backend_endpoint(4, 8080, family)}"
weight = 1

# the name's weight is shared by its A (or AAAA) records: 3 // 3 = 1 each, later 3 // 2 = 1 each
[[proxy.backend]]
host = "{NAME}"
port = 8080
weight = 3
dns_refresh_s = {REFRESH_S}
"""


class Dnsmasq:
    """dnsmasq in the lab's LB namespace, answering from `hosts`; stopped by lab.down() at the latest."""

    def __init__(self, lab: ClientLab, hosts: Path, log: Path, server: str = SERVER) -> None:
        self.lab = lab
        self.hosts = hosts
        self.log = log
        self.server = server  # the address it listens on in the LB namespace (IPv4 or IPv6)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = self.lab.popen(
                self.lab.ns_lb,
                DNSMASQ,
                *DNSMASQ_FLAGS,
                f"--addn-hosts={self.hosts}",
                f"--listen-address={self.server}",
                f"--pid-file={self.log.with_suffix('.pid')}",
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        assert wait_until(lambda: self.listening() or proc.poll() is not None, timeout=10), (
            self.log.read_text()
        )
        assert proc.poll() is None, self.log.read_text()

    def listening(self) -> bool:
        out = self.lab.run(self.lab.ns_lb, "ss", "-Hunl", check=False).stdout
        return f"{host_text(self.server)}:53" in out

    def reload(self) -> None:
        assert self.proc is not None
        # `ip netns exec` execs dnsmasq in place: the Popen's pid is dnsmasq's own.
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None:
            ClientLab.stop_process(self.proc)
            self.proc = None


@contextmanager
def running_lb_with_dns(
    tmp: Path,
    prefix: str = PREFIX,
    family: int = IPV4,
    records: Callable[[ClientLab], list[str]] | None = None,
) -> Iterator[tuple[ClientLab, SocketEngineHandle, Dnsmasq]]:
    """A 4-backend lab, dnsmasq answering NAME with `records(lab)` (default b1..b3 of `family`), and
    lbtui with config_text(lab, family)."""
    lab = ClientLab(LabSpec(prefix=prefix, backends=4, second_client=False))
    proc = None
    handle = None
    dnsmasq = None
    try:
        lab.up()
        lab.start_backends(bind="0.0.0.0" if family == IPV4 else "::")
        hosts = tmp / "hosts"
        ips = [lab.backend_ip(i) if family == IPV4 else lab.backend_ip6(i) for i in (1, 2, 3)]
        write_hosts(hosts, records(lab) if records else ips)
        dnsmasq = Dnsmasq(lab, hosts, tmp / "dnsmasq.log", server=SERVER if family == IPV4 else SERVER6)
        dnsmasq.start()
        cfg = tmp / "lbtui.toml"
        cfg.write_text(config_text(lab, family))
        log = tmp / "lbtui.log"
        log.write_text("")
        proc = start_lbtui(lab, cfg, log)
        handle = SocketEngineHandle(lab.control_socket)
        yield lab, handle, dnsmasq
    finally:
        if handle is not None:
            handle.close()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        if dnsmasq is not None:
            dnsmasq.stop()
        lab.down()


def web_backends(handle: SocketEngineHandle) -> dict[str, str]:
    """address -> source of proxy "web"'s default group."""
    svc = handle.snapshot().service("web")
    assert svc is not None
    return {b.address: b.source for b in svc.backends}


def dns_status(handle: SocketEngineHandle) -> model.DnsStatus:
    (status,) = [s for s in handle.snapshot().dns if s.hostname == NAME and s.proxy == "web"]
    return status


def test_dns_backends_follow_records_and_survive_server_outage(tmp_path):
    with running_lb_with_dns(tmp_path) as (lab, h, dnsmasq):
        ip = {i: lab.backend_ip(i) for i in (1, 2, 3, 4)}
        static = f"{ip[4]}:8080"
        source = f"dns:{NAME}"

        # ---- phase 1: three A records -> three DNS backends + the static one, all get traffic
        status = dns_status(h)
        assert status.addresses == (ip[1], ip[2], ip[3]), status
        assert status.consecutive_failures == 0 and status.last_error is None and status.last_success
        assert web_backends(h) == {
            static: "static",
            f"{ip[1]}:8080": source,
            f"{ip[2]}:8080": source,
            f"{ip[3]}:8080": source,
        }
        got = lab.http_requests(120)
        assert got.get("errors", 0) == 0 and set(served(got)) == {"b1", "b2", "b3", "b4"}, got

        traffic = TrafficGenerator(lab, rate_per_s=20, udp=False)
        traffic.start()
        try:
            # ---- phase 2: the records change; the group follows within a refresh (+ jitter)
            write_hosts(dnsmasq.hosts, [ip[1], ip[2]])
            dnsmasq.reload()
            t0 = time.monotonic()
            assert wait_until(lambda: len(web_backends(h)) == 3, timeout=15, interval=0.05), web_backends(h)
            took = time.monotonic() - t0
            assert took < FOLLOW_BOUND_S, f"followed the change after {took:.2f} s"
            assert web_backends(h) == {static: "static", f"{ip[1]}:8080": source, f"{ip[2]}:8080": source}
            assert dns_status(h).addresses == (ip[1], ip[2])
            b3_before = len(lab.recorded_peers(3))
            got = lab.http_requests(120)
            assert got.get("errors", 0) == 0 and set(served(got)) == {"b1", "b2", "b4"}, got
            assert len(lab.recorded_peers(3)) == b3_before, "b3 got new connections after its removal"
            messages = [e.message for e in h.events_since(0) if e.kind == "dns"]
            assert any(f"{NAME} resolves to {ip[1]}, {ip[2]}, {ip[3]}" in m for m in messages), messages
            changed = f"{NAME} now resolves to {ip[1]}, {ip[2]} (was {ip[1]}, {ip[2]}, {ip[3]})"
            assert any(changed in m for m in messages), messages

            # ---- phase 3: the server is gone; the last good set stays and traffic goes on
            dnsmasq.stop()
            # the time of the last success, read once the failures began (a snapshot is up to a
            # second old: read before the stop, a refresh that succeeded just before it moved it on)
            assert wait_until(lambda: dns_status(h).consecutive_failures >= 1, timeout=20), dns_status(h)
            good_at = dns_status(h).last_success
            assert wait_until(lambda: dns_status(h).consecutive_failures >= 2, timeout=20), dns_status(h)
            status = dns_status(h)
            assert status.last_error, status
            assert status.addresses == (ip[1], ip[2]) and status.last_success == good_at, status
            assert web_backends(h) == {static: "static", f"{ip[1]}:8080": source, f"{ip[2]}:8080": source}
            got = lab.http_requests(120)
            assert got.get("errors", 0) == 0 and set(served(got)) == {"b1", "b2", "b4"}, got
            counts_before_stop = traffic.counts()
        finally:
            traffic.stop()
        # the background traffic ran through the change and the outage without a single error
        counts = traffic.counts()
        assert counts.http_failed == 0, counts
        assert counts_before_stop.http_ok.get("b4", 0) > 0, counts
        assert set(counts.http_ok) <= {"b1", "b2", "b3", "b4"}, counts
        # a failure never reported the name as changed
        messages = [e.message for e in h.events_since(0) if e.kind == "dns" and "now resolves" in e.message]
        assert len(messages) == 1, messages
