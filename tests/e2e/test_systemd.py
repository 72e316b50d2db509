# SPDX-License-Identifier: Apache-2.0
"""What the systemd unit relies on, against a real instance in a lab (no systemd needed):

- the Type=notify protocol: a test socket plays systemd's NOTIFY_SOCKET; READY=1 comes only once
  the XDP and TC programs are attached and the tables answer (checked the moment READY arrives),
  WATCHDOG=1 follows every quarter of WATCHDOG_USEC, STATUS= says what runs, STOPPING=1 on SIGTERM;
  a start that fails its host checks exits with the documented code and never says READY;
- ExecReload=lbtui ctl reload: a refused file makes the command fail with the file and key path.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtui.lab import LabSpec
from tests.support.lab import ClientLab
from tests.support.labtools import served, wait_until

PREFIX = "lsn"
SOCK = f"/run/lbtui/{PREFIX}.sock"


class NotifySocket:
    """A datagram socket that records what the service sends, as systemd would read it."""

    def __init__(self, path: Path, on_message=None) -> None:  # type: ignore[no-untyped-def]
        self.path = str(path)
        self.messages: list[tuple[float, str]] = []
        self._on_message = on_message
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                text = self._sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), text))
            if self._on_message is not None:
                self._on_message(text)

    def fields(self, key: str) -> list[tuple[float, str]]:
        return [
            (t, line.split("=", 1)[1])
            for t, text in self.messages
            for line in text.split("\n")
            if line.startswith(key + "=")
        ]

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[ClientLab]:
    lab = ClientLab(LabSpec(prefix=PREFIX, second_client=False))
    lab.up()
    try:
        lab.start_backends()
        yield lab
    finally:
        lab.down()


def attached(lab: ClientLab, ifname: str) -> dict[str, bool]:
    link = json.loads(lab.run(lab.ns_lb, "ip", "-j", "-d", "link", "show", "dev", ifname).stdout)[0]
    tc = lab.run(lab.ns_lb, "tc", "filter", "show", "dev", ifname, "egress").stdout
    return {"xdp": "xdp" in link, "tc": "bpf" in tc and "lbtui_tc" in tc}


def start(
    lab: ClientLab, cfg: Path, notify: NotifySocket, log: Path, watchdog_usec: int
) -> subprocess.Popen[bytes]:
    env = lab._child_env()
    env.update(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=str(watchdog_usec))
    with open(log, "w") as err:
        return lab.popen(
            lab.ns_lb, sys.executable, "-m", "lbtui", "-c", str(cfg), "--no-ui", stderr=err, env=env
        )


def test_ready_after_attach_then_watchdog_status_and_stopping(lab: ClientLab, tmp_path: Path) -> None:
    cfg = tmp_path / "lbtui.toml"
    cfg.write_text(lab.config_toml(weights=(1, 1, 1)))
    iface = lab.client_ifaces[0]
    assert attached(lab, iface) == {"xdp": False, "tc": False}
    at_ready: dict[str, object] = {}

    def on_message(text: str) -> None:
        if "READY=1" in text.split("\n"):
            at_ready.update(attached(lab, iface))  # right away, before anything else happens

    notify = NotifySocket(tmp_path / "notify", on_message)
    log = tmp_path / "lbtui.log"
    proc = start(lab, cfg, notify, log, watchdog_usec=2_000_000)
    try:
        assert wait_until(lambda: bool(notify.fields("READY")) or proc.poll() is not None, timeout=60), (
            log.read_text()
        )
        assert proc.poll() is None, log.read_text()
        assert wait_until(lambda: bool(at_ready), timeout=10)
        assert at_ready == {"xdp": True, "tc": True}
        got = lab.http_requests(30)  # the first tables are written: every backend answers
        assert got["errors"] == 0 and len(served(got)) == 3, got

        ready_at = notify.fields("READY")[0][0]
        before = [text for t, text in notify.messages if t < ready_at]
        assert before and all("READY=1" not in text for text in before)
        assert any(s.startswith("starting") for _, s in notify.fields("STATUS"))
        assert dict(notify.fields("MAINPID")) and notify.fields("MAINPID")[0][1] == str(proc.pid)
        assert notify.fields("STATUS")[-1][1].startswith("running: 2 proxies, 6/6 backends with weight")

        def pings_after_ready() -> list[float]:
            return [t for t, text in notify.messages if text == "WATCHDOG=1" and t > ready_at]

        assert wait_until(lambda: len(pings_after_ready()) >= 5, timeout=10), notify.messages
        pings = pings_after_ready()
        assert len(pings) >= 5, notify.messages  # every 0.5 s (a quarter of 2 s)
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < 1.0, gaps  # well inside the 2 s systemd would wait

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert notify.fields("STOPPING") and notify.messages[-1][1].startswith("STOPPING=1")
        assert attached(lab, iface) == {"xdp": False, "tc": False}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()


def test_failed_host_check_exits_with_its_code_and_never_says_ready(lab: ClientLab, tmp_path: Path) -> None:
    cfg = tmp_path / "lbtui.toml"
    cfg.write_text(lab.config_toml().replace(f'"{lab.client_ifaces[0]}"', '"nosuch0"'))
    notify = NotifySocket(tmp_path / "notify")
    log = tmp_path / "lbtui.log"
    proc = start(lab, cfg, notify, log, watchdog_usec=2_000_000)
    try:
        assert proc.wait(60) == 3, log.read_text()
        time.sleep(0.3)
        assert not notify.fields("READY")
        assert "nosuch0 (proxy web) does not exist here" in log.read_text()
    finally:
        notify.close()


def test_ctl_reload_of_a_refused_file_fails_with_the_key_path(lab: ClientLab, tmp_path: Path) -> None:
    cfg = tmp_path / "lbtui.toml"
    good = lab.config_toml(weights=(1, 1, 1))
    cfg.write_text(good)
    notify = NotifySocket(tmp_path / "notify")
    proc = start(lab, cfg, notify, tmp_path / "lbtui.log", watchdog_usec=0)
    try:
        assert wait_until(lambda: bool(notify.fields("READY")) or proc.poll() is not None, timeout=60)
        cfg.write_text(good.replace("port = 80\n", "port = 0\n", 1))  # what ExecReload then runs:
        r = subprocess.run(
            [sys.executable, "-m", "lbtui", "ctl", "--socket", SOCK, "reload"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"{cfg}: proxy[0].port: " in r.stderr
        assert served(lab.http_requests(20)), "the running configuration stays"
        cfg.write_text(good)
        r = subprocess.run(
            [sys.executable, "-m", "lbtui", "ctl", "--socket", SOCK, "reload"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        notify.close()
