# SPDX-License-Identifier: Apache-2.0
"""lbtui itself on the scale-out lab's load-balancer hosts, announcing the VIP through BIRD
([settings.announce], docs/scale-out.md): one `lbtui --no-ui` per host (NAT forwarding: it only has
to run, attach and decide; no traffic crosses it), health-checking the lab's backends, and the
events that make it withdraw: a clean stop, every backend unreachable, the operator's command, the
host's death. Used by tests/e2e/test_scaleout_announce.py and bench/scaleout_bgp.py --lbtui.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from lbtui import ctl
from lbtui.control_client import SocketEngineHandle
from lbtui.engine import PIN_ROOT, instance_name
from lbtui.netlab import LabError
from lbtui.scaleout_lab import BACKEND_NET, ScaleOutLab

START_TIMEOUT_S = 120.0  # BCC compiles the data path at each start; slow on a busy 2-vCPU VM


class LbtuiHosts:
    """`lbtui --no-ui` on each host of `lab`, its files in `lab.workdir`."""

    def __init__(self, lab: ScaleOutLab, health_interval_ms: int = 100, forwarding: str = "nat") -> None:
        self.lab = lab
        self.health_interval_ms = health_interval_ms
        self.forwarding = forwarding
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def socket(self, i: int) -> str:
        return self.lab.control_socket(i)

    def _file(self, i: int, suffix: str) -> Path:
        return Path(self.lab.workdir) / f"lbtui-h{i}.{suffix}"

    def config(self, i: int) -> str:
        # in the lab directory: the default (/var/lib/lbtui/<name>.state) would outlive the lab
        state = str(self._file(i, "state"))
        return self.lab.lbtui_config(i, self.forwarding, self.health_interval_ms, state_file=state)

    def start(self, i: int) -> None:
        """Start lbtui on host i; returns once it runs (its VIP decision made)."""
        cfg, log = self._file(i, "toml"), self._file(i, "log")
        cfg.write_text(self.config(i))
        with open(log, "a") as err:
            cmd = self.lab.python_cmd("-m", "lbtui", "-c", str(cfg), "--no-ui")
            proc = self.lab.popen(self.lab.ns_host(i), *cmd, stderr=err, stdout=subprocess.DEVNULL)
        self._procs[i] = proc
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._running(i):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"lbtui on host {i} did not start (exit {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.1)

    def _running(self, i: int) -> bool:
        with contextlib.suppress(OSError, ConnectionError):
            handle = SocketEngineHandle(self.socket(i))
            try:
                return handle.snapshot().running
            finally:
                handle.close()
        return False

    def send_signal(self, i: int, sig: int = signal.SIGTERM) -> subprocess.Popen[bytes]:
        """Send `sig` to lbtui on host i without waiting for it (stop() afterwards); its process."""
        proc = self._procs[i]
        os.killpg(proc.pid, sig)
        return proc

    def stop(self, i: int, sig: int = signal.SIGTERM) -> None:
        """A clean stop (SIGTERM) or a crash (SIGKILL) of lbtui on host i."""
        proc = self._procs.pop(i)
        self.lab.forget(proc)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(30)

    def kill_host(self, i: int) -> None:
        """Host i dies: every process on it (lbtui, BIRD) killed at once; its routes go with BIRD's
        sessions (the kernel closes them), not through lbtui."""
        proc = self._procs.pop(i)
        self.lab.forget(proc)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.lab.signal_bird(self.lab.ns_host(i), signal.SIGKILL)
        proc.wait(30)

    def revive_host(self, i: int) -> None:
        """After kill_host: BIRD and lbtui again (lbtui takes over the data path the killed one
        pinned, and the route it left in the table)."""
        self.lab.start_bird_host(i)
        self.start(i)

    def backends_reachable(self, i: int, reachable: bool) -> None:
        """Every backend unreachable from host i (its health checks fail at once), or back."""
        verb = "del" if reachable else "replace"
        self.lab.run(self.lab.ns_host(i), "ip", "route", verb, "unreachable", f"{BACKEND_NET}.0/24")

    def ctl(self, i: int, *args: str) -> int:
        """`lbtui ctl` against host i (e.g. "announce", "withdraw"); its exit code."""
        with open(os.devnull, "w") as null:
            return ctl.main(["--socket", self.socket(i), *args], out=null, err=null)

    def table_routes(self, i: int) -> set[str]:
        """The VIPs in host i's announcement table."""
        return self.lab.host_routes(i).announced()

    def stop_all(self) -> None:
        for i in list(self._procs):
            with contextlib.suppress(Exception):
                self.stop(i)
        self.remove_pins()

    def remove_pins(self) -> None:
        """What a killed lbtui left pinned (a crashed run of the same prefix, or a host that died)."""
        for i in self.lab.host_ids:
            shutil.rmtree(os.path.join(PIN_ROOT, instance_name(self.socket(i))), ignore_errors=True)
