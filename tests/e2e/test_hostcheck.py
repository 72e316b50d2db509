# SPDX-License-Identifier: Apache-2.0
"""`lbtui --check` (and a start) on a host that is not ready, inside a network namespace made here:
IP forwarding off, a missing interface, a busy metrics port. Each gives a clear message and the
documented exit code (README.md, "Exit codes": 3 the host is not ready, 4 a resource is busy).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.beside  # may run beside other e2e tests (tests/conftest.py)

NS = "lckns"  # prefix "lck", unique in tests/
IF = "lck0"
PORT = 17100


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[str]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)  # a crashed earlier run
    ip("netns", "add", NS)
    try:
        ip("-n", NS, "link", "set", "lo", "up")
        ip("-n", NS, "link", "add", IF, "type", "veth", "peer", "name", "lck1")
        ip("-n", NS, "addr", "add", "10.77.0.1/24", "dev", IF)
        ip("-n", NS, "link", "set", IF, "up")
        ip("-n", NS, "link", "set", "lck1", "up")
        yield NS
    finally:
        pids = subprocess.run(["ip", "netns", "pids", NS], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                subprocess.run(["kill", "-9", pid], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def config(tmp: Path, interface: str = IF) -> Path:
    path = tmp / "lbtui.toml"
    path.write_text(
        f"""
[settings]
control_socket = "{tmp}/lck.sock"
[settings.metrics]
listen = "127.0.0.1:{PORT}"
[[proxy]]
name = "web"
interfaces = ["{interface}"]
vip = "10.77.0.1"
port = 80
[[proxy.backend]]
address = "10.77.0.2:8080"
weight = 1
"""
    )
    return path


def lbtui(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    root = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        ["ip", "netns", "exec", ns, "env", f"PYTHONPATH={root}", sys.executable, "-m", "lbtui", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def forwarding(ns: str, on: bool) -> None:
    ip("netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.ip_forward={int(on)}")


def test_a_ready_namespace_passes(netns: str, tmp_path: Path) -> None:
    forwarding(netns, True)
    r = lbtui(netns, "--check", "-c", str(config(tmp_path)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "0 errors, 0 warnings: ready to run"
    assert "web: 10.77.0.1 is a local address on lck0" in r.stdout


def test_without_ip_forwarding(netns: str, tmp_path: Path) -> None:
    forwarding(netns, False)
    r = lbtui(netns, "--check", "-c", str(config(tmp_path)))
    assert r.returncode == 3, r.stdout + r.stderr
    assert (
        "error    ip_forward      net.ipv4.ip_forward = 0: NAT mode forwards every balanced packet"
        in r.stdout
    )
    assert r.stdout.splitlines()[-1].startswith("1 error, 0 warnings: exit 3: the host is not ready")


def test_with_a_missing_interface(netns: str, tmp_path: Path) -> None:
    forwarding(netns, True)
    r = lbtui(netns, "--check", "-c", str(config(tmp_path, interface="lck9")))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "error    interfaces      proxy[0].interfaces[0]: lck9 (proxy web) does not exist here" in r.stdout


def test_with_a_busy_metrics_port_check_and_start(netns: str, tmp_path: Path) -> None:
    forwarding(netns, True)
    listener = (
        f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {PORT})); s.listen(); "
        "print('up', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", listener], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        cfg = str(config(tmp_path))
        r = lbtui(netns, "--check", "-c", cfg)
        assert r.returncode == 4, r.stdout + r.stderr
        assert f"settings.metrics.listen: 127.0.0.1:{PORT} is in use by another program" in r.stdout
        data = json.loads(lbtui(netns, "--check", "--json", "-c", cfg).stdout)
        assert data["exit_code"] == 4 and not data["ok"]
        assert [c["name"] for c in data["checks"] if c["status"] == "error"] == ["metrics"]
        # a start finds the same before it touches the kernel, and says so
        r = lbtui(netns, "--no-ui", "-c", cfg)
        assert r.returncode == 4, r.stderr
        assert f"lbtui: metrics: settings.metrics.listen: 127.0.0.1:{PORT} is in use" in r.stderr
        link = subprocess.run(["ip", "-n", netns, "-d", "link", "show", IF], capture_output=True, text=True)
        assert "xdp" not in link.stdout
    finally:
        holder.kill()
        holder.wait(10)


def test_config_errors_come_first_and_as_json(netns: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config(tmp_path).read_text().replace("port = 80", "port = 0"))
    r = lbtui(netns, "--check", "--json", "-c", str(path))
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["exit_code"] == 1 and data["checks"] == []
    assert [e["key_path"] for e in data["config_errors"]] == ["proxy[0].port"]
