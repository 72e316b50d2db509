# SPDX-License-Identifier: Apache-2.0
"""The lab as the end-to-end tests drive it: `lbtui.lab.Lab` plus the test clients (HTTP and UDP
requests counted per backend, held keep-alive connections) and checksum-error counters.

The clients run inside a client namespace as `python -m tests.support.labclients` (this repository's
root is on the children's PYTHONPATH), so what they measure crosses the lab's veths and the LB.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from typing import Any

from lbtui.lab import HTTP_VIP_PORT, Lab, LabError, run_cmd


class ClientLab(Lab):
    """A lab whose client namespaces can send counted test traffic."""

    def _client(self, client: int, *args: str, timeout: float) -> dict[str, Any]:
        cmd = self.python_cmd("-m", "tests.support.labclients", *args)
        r = run_cmd(
            ["ip", "netns", "exec", self.client_ns(client), *cmd], timeout=timeout, env=self._child_env()
        )
        result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
        return result

    def http_requests(
        self, count: int, new_conn: bool = True, client: int = 1, url: str | None = None, timeout: float = 2.0
    ) -> dict[str, int]:
        """GET ``url`` (default the VIP) ``count`` times from a client namespace.

        Returns requests answered per backend name plus ``"errors"``. ``new_conn`` opens a new TCP
        connection per request; otherwise one keep-alive connection carries them all."""
        args = ["http", "--url", url or f"http://{self.vip}/", "--count", str(count)]
        args += ["--new-conn" if new_conn else "--keepalive", "--timeout", str(timeout)]
        return self._client(client, *args, timeout=30 + count * timeout)

    def udp_requests(
        self, count: int, client: int = 1, host: str | None = None, port: int = 5353, timeout: float = 1.0
    ) -> dict[str, int]:
        """``count`` UDP queries (a new socket, so a new flow, each); answers per backend + "errors"."""
        args = ["udp", "--host", host or self.vip, "--port", str(port), "--count", str(count)]
        args += ["--timeout", str(timeout)]
        return self._client(client, *args, timeout=30 + count * timeout)

    def hold(
        self,
        count: int,
        seconds: float,
        client: int = 1,
        host: str | None = None,
        port: int = HTTP_VIP_PORT,
        every: float = 0.0,
    ) -> HeldConnections:
        """Open ``count`` keep-alive connections and keep them ``seconds`` (drain tests); with
        ``every``, each is asked again that often meanwhile."""
        args = ["hold", "--host", host or self.vip, "--port", str(port)]
        args += ["--count", str(count), "--seconds", str(seconds), "--every", str(every)]
        proc = self.popen(
            self.client_ns(client),
            *self.python_cmd("-m", "tests.support.labclients", *args),
            stdout=subprocess.PIPE,
            text=True,
        )
        return HeldConnections(self, proc, seconds)

    def nstat_csum_errors(
        self, keys: tuple[str, ...] = ("TcpInCsumErrors", "UdpInCsumErrors"), extra: tuple[str, ...] = ()
    ) -> dict[str, dict[str, int]]:
        """Absolute checksum-error counters (nstat names) per namespace of the lab and the `extra`
        namespaces a test added. Linux counts TCP over IPv6 in TcpInCsumErrors (one TCP MIB), UDP
        over IPv6 in Udp6InCsumErrors and ICMPv6 in Icmp6InCsumErrors."""
        out: dict[str, dict[str, int]] = {}
        for ns in (*self.namespaces, *extra):
            r = self.run(ns, "nstat", "-asz", *keys, check=False)
            counts = dict.fromkeys(keys, 0)
            for line in r.stdout.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] in counts and parts[1].isdigit():
                    counts[parts[0]] = int(parts[1])
            out[ns] = counts
        return out


class HeldConnections:
    """A ``client hold`` process: N keep-alive connections held open for a while."""

    def __init__(self, lab: Lab, proc: subprocess.Popen[str], seconds: float) -> None:
        self.lab = lab
        self.proc = proc
        self.seconds = seconds

    def _read_event(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    break
                event: dict[str, Any] = json.loads(line)
                return event
        raise LabError(f"held connections: no answer within {timeout}s (exit {self.proc.poll()})")

    def opened(self, timeout: float = 60.0) -> dict[str, Any]:
        """{"event": "opened", "backends": {name: n}, "errors": e} once every connection is open."""
        return self._read_event(timeout)

    def done(self, timeout: float | None = None) -> dict[str, Any]:
        """{"event": "done", "backends": {...}, "errors": e}: who still answered on the same connection."""
        return self._read_event(timeout if timeout is not None else self.seconds + 60.0)

    def stop(self) -> None:
        Lab.stop_process(self.proc)
