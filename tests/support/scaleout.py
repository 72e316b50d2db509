# SPDX-License-Identifier: Apache-2.0
"""The scale-out lab as the end-to-end tests drive it: `lbtui.scaleout_lab.ScaleOutLab` plus the
IPIP relay stand-in on the load-balancer hosts (tests/support/ipip_relay.py), client requests, a
backend's status and the state `backend-setup --undo` must restore.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import Any

from lbtui.netlab import LabError, run_cmd
from lbtui.scaleout_lab import ScaleOutLab


class ScaleOutClientLab(ScaleOutLab):
    def start_relay(self, i: int, backends: list[int] | None = None) -> None:
        """Host i forwards the VIP's packets to backends over IPIP (what lbtui will do there)."""
        ns = self.ns_host(i)
        # the host's kernel must drop the VIP's packets the relay takes: a blackhole is silent
        # (no ICMP unreachable that would abort the client's connection attempt)
        self.run(ns, "ip", "route", "replace", "blackhole", f"{self.vip}/32")
        ready = os.path.join(self.workdir, f"relay{i}.ready")
        args = ["-m", "tests.support.ipip_relay", "--iface", self.host_iface(i), "--vip", self.vip]
        for j in backends or list(self.backend_ids):
            args += ["--backend", self.backend_ip(j)]
        args += ["--log", self.relay_log(i), "--ready-file", ready]
        proc = self.popen(ns, *self.python_cmd(*args), stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"the IPIP relay on host {i} did not start (exit {proc.poll()})")
            time.sleep(0.02)

    def relay_log(self, i: int) -> str:
        return os.path.join(self.workdir, f"relay{i}.flows")

    def relayed_flows(self, i: int) -> list[list[str]]:
        """Flows host i's relay forwarded: [src, sport, dst, dport, proto, backend] each."""
        try:
            with open(self.relay_log(i)) as f:
                return [line.split() for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def replies_seen_by_relay(self, i: int) -> int:
        """Packets from the VIP that passed host i (0 when replies go straight to the client)."""
        try:
            with open(self.relay_log(i) + ".replies") as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0

    def http_requests(self, count: int, new_conn: bool = True, timeout: float = 2.0) -> dict[str, int]:
        """GET http://VIP/ from the client; answers per backend name plus "errors"."""
        args = ["http", "--url", f"http://{self.vip}/", "--count", str(count)]
        args += ["--new-conn" if new_conn else "--keepalive", "--timeout", str(timeout)]
        cmd = self.python_cmd("-m", "tests.support.labclients", *args)
        r = run_cmd(
            ["ip", "netns", "exec", self.ns_client, *cmd], timeout=30 + count * timeout, env=self._child_env()
        )
        result: dict[str, int] = json.loads(r.stdout.strip().splitlines()[-1])
        return result

    def client(self, *args: str) -> subprocess.Popen[str]:
        """A tests.support.labclients process in the client namespace (its JSON lines on stdout)."""
        cmd = self.python_cmd("-m", "tests.support.labclients", *args)
        return self.popen(self.ns_client, *cmd, stdout=subprocess.PIPE, text=True)

    @staticmethod
    def client_lines(proc: subprocess.Popen[str], count: int, timeout: float) -> list[dict[str, Any]]:
        """The next `count` JSON lines of a client process (LabError after `timeout` seconds)."""
        assert proc.stdout is not None
        lines: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(lines) < count:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline() if ready else ""
            if not line:
                raise LabError(
                    f"lab client: {len(lines)} of {count} results in {timeout}s (exit {proc.poll()})"
                )
            lines.append(json.loads(line))
        return lines

    def client_tcp_resets(self) -> dict[str, int]:
        """The client's TCP reset counters (nstat, absolute): established connections reset, and
        connection attempts refused."""
        r = self.run(self.ns_client, "nstat", "-asz", "TcpEstabResets", "TcpAttemptFails", check=False)
        counts = {"TcpEstabResets": 0, "TcpAttemptFails": 0}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in counts:
                counts[parts[0]] = int(parts[1])
        return counts

    def backend_setup(self, j: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cmd(
            ["ip", "netns", "exec", self.ns_backend(j), *self.backend_setup_cmd(j, *args)],
            check=check,
            timeout=120,
            env=self._child_env(),
        )

    def backend_status(self, j: int) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.backend_setup(j, "--status", "--json").stdout)
        return out

    def backend_snapshot(self, j: int) -> dict[str, Any]:
        """What backend-setup may change on backend j: addresses, the relevant sysctls, TC filters."""
        ns, ifname = self.ns_backend(j), self.backend_iface(j)
        addrs = json.loads(self.run(ns, "ip", "-j", "addr", "show").stdout)
        sysctls = {}
        for key in ("arp_ignore", "arp_announce", "rp_filter"):
            for scope in ("all", "default", ifname, "lo"):
                name = f"net.ipv4.conf.{scope}.{key}"
                sysctls[name] = self.run(ns, "sysctl", "-n", name).stdout.strip()
        return {
            "addresses": sorted(
                f"{a['ifname']} {i['local']}/{i['prefixlen']}" for a in addrs for i in a.get("addr_info", [])
            ),
            "sysctls": sysctls,
            "qdiscs": self.run(ns, "tc", "qdisc", "show", "dev", ifname).stdout,
            "ingress": self.run(ns, "tc", "filter", "show", "dev", ifname, "ingress").stdout,
        }
