# SPDX-License-Identifier: Apache-2.0
"""What every lab of network namespaces needs: names under a prefix, building and removing them,
processes inside them, and the lab backend servers (lbtui.labservers).

A lab subclass names its namespaces (``<prefix><suffix>``, the suffixes matched by SUFFIX_RE),
builds its topology in ``_build`` and says which namespaces hold backends. ``up()`` first removes
what a crashed earlier run with the same prefix left (namespaces, so their links, and the processes
in them); ``down()`` removes everything and is safe on a half-built lab and when called twice.
Labs: lbtui.lab (the NAT demo lab), lbtui.scaleout_lab (routers, BGP, several load-balancer hosts).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self

log = logging.getLogger(__name__)

MAX_PREFIX_LEN = 4  # interface names are "<prefix>" + up to 4 characters: 4 + 4 <= 15 (IFNAMSIZ - 1)
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,3}$")


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its output."""


def check_prefix(prefix: str) -> None:
    if not _PREFIX_RE.match(prefix):
        raise ValueError(
            f"lab prefix {prefix!r}: 1-{MAX_PREFIX_LEN} chars, a lowercase letter then "
            "letters/digits (interface names must stay <= 15 chars)"
        )


@dataclass(frozen=True)
class ServerParams:
    http_port: int = 8080
    udp_port: int = 5353
    health_port: int | None = None
    bind: str = "0.0.0.0"


def run_cmd(
    cmd: list[str], check: bool = True, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise LabError(
            f"command failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stdout.strip()}\n{r.stderr.strip()}"
        )
    return r


def ip(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return run_cmd(["ip", *args], check=check, timeout=timeout)


def list_namespaces() -> list[str]:
    r = ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def lab_namespaces(prefix: str, suffix_re: str) -> list[str]:
    """Existing namespaces of a lab with this exact prefix (not of a lab with a longer prefix)."""
    pattern = re.compile(re.escape(prefix) + suffix_re + "$")
    return [ns for ns in list_namespaces() if pattern.match(ns)]


def _kill_namespace_processes(ns: str) -> None:
    """SIGTERM, then SIGKILL, every process living in ``ns`` (never this process itself)."""
    own = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in ip("netns", "pids", ns, check=False).stdout.split() if p.isdigit()]
        pids = [p for p in pids if p != own]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def cleanup_namespaces(prefix: str, suffix_re: str) -> None:
    """Remove the namespaces (and so their links) a lab with this prefix left behind; never raises."""
    for ns in lab_namespaces(prefix, suffix_re):
        try:
            _kill_namespace_processes(ns)
            ip("netns", "del", ns, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("lab cleanup of %s: %s", ns, e)


@dataclass
class _Tracked:
    proc: subprocess.Popen[Any]
    label: str = ""
    files: list[Any] = field(default_factory=list)


class NamespaceLab:
    """Namespaces under a prefix, processes in them, lab backend servers; subclasses build topologies."""

    SUFFIX_RE: ClassVar[str] = r"(?!)"  # the namespace suffixes of this kind of lab (a regex group)
    BACKEND_NET: ClassVar[str] = "10.0.2"  # backend i is <prefix>b<i>, address BACKEND_NET.<10+i>

    def __init__(self, prefix: str, backends: int) -> None:
        check_prefix(prefix)
        self.prefix = prefix
        self.backend_count = backends
        self._procs: list[_Tracked] = []
        self._servers: dict[int, _Tracked] = {}
        self._server_params: ServerParams | None = None
        self._is_up = False
        self._lock = threading.Lock()
        self.workdir = ""

    # ------------------------------------------------------------ what a subclass defines

    @property
    def namespaces(self) -> list[str]:
        raise NotImplementedError

    def _build(self) -> None:
        raise NotImplementedError

    def _before_down(self) -> None:
        """Undo what the lab did that outlives its namespaces (a subclass hook; must not raise)."""

    def _clean_leftovers(self) -> None:
        """Remove what a lab with this prefix left behind (before up, after down; must not raise)."""
        cleanup_namespaces(self.prefix, self.SUFFIX_RE)

    # ------------------------------------------------------------ backends: names and addresses

    @property
    def backend_ids(self) -> range:
        return range(1, self.backend_count + 1)

    def _check_backend(self, i: int) -> None:
        if i not in self.backend_ids:
            raise ValueError(f"backend {i}: this lab has backends 1..{self.backend_count}")

    def ns_backend(self, i: int) -> str:
        self._check_backend(i)
        return f"{self.prefix}b{i}"

    def backend_ip(self, i: int) -> str:
        self._check_backend(i)
        return f"{self.BACKEND_NET}.{10 + i}"

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self) -> None:
        if self._is_up:
            return
        self._stop_all_processes()
        self._clean_leftovers()
        self.workdir = tempfile.mkdtemp(prefix=f"lbtui-lab-{self.prefix}-")
        try:
            for ns in self.namespaces:
                ip("netns", "add", ns)
                ip("-n", ns, "link", "set", "lo", "up")
            self._build()
        except BaseException:
            self.down()
            raise
        self._is_up = True
        log.info("lab %s up: %s", self.prefix, self.namespaces)

    def down(self) -> None:
        """Tear everything down; safe on a half-built lab and when called twice."""
        self._is_up = False
        try:
            self._stop_all_processes()
        except Exception as e:  # noqa: BLE001 - down() must always reach the namespace cleanup
            log.warning("lab %s: stopping processes: %s", self.prefix, e)
        self._before_down()
        self._clean_leftovers()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = ""

    @property
    def is_up(self) -> bool:
        return self._is_up

    def _require_up(self) -> None:
        if not self._is_up:
            raise LabError(f"lab {self.prefix} is not up")

    # ------------------------------------------------------------ building blocks

    def veth(self, ns_a: str, if_a: str, addr_a: str, ns_b: str, if_b: str, addr_b: str) -> None:
        """A veth pair between two namespaces, both ends addressed ("10.0.0.1/24") and up."""
        ip("-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
            if addr:
                ip("-n", ns, "addr", "add", addr, "dev", ifname)
            ip("-n", ns, "link", "set", ifname, "up")

    def _wait_ping(self, ns: str, addr: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            r = self.run(ns, "ping", "-c1", "-W1", "-q", addr, check=False, timeout=5)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LabError(f"lab {self.prefix}: {addr} not reachable from {ns}: {r.stdout}{r.stderr}")
            time.sleep(0.1)

    def sysctl(self, ns: str, *settings: str) -> None:
        for s in settings:
            self.run(ns, "sysctl", "-qw", s)

    # ------------------------------------------------------------ processes

    def run(
        self, ns: str, *cmd: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside namespace ``ns`` and capture its output."""
        return run_cmd(["ip", "netns", "exec", ns, *cmd], check=check, timeout=timeout)

    def popen(self, ns: str, *cmd: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start a command inside ``ns``; it gets its own process group and is killed on down()."""
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("env", self._child_env())
        proc: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kw)
        with self._lock:
            self._procs.append(_Tracked(proc, label=f"{ns}: {' '.join(cmd)}"))
        return proc

    def forget(self, proc: subprocess.Popen[Any]) -> None:
        """Stop tracking a process (it was stopped by other means)."""
        with self._lock:
            self._procs = [t for t in self._procs if t.proc is not proc]

    def python_cmd(self, *args: str) -> list[str]:
        """argv running this Python (so ``lbtui`` is importable) with ``args``."""
        return [sys.executable, *args]

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH", "")]))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @staticmethod
    def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL it."""
        if proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
        log.warning("process %d did not exit after SIGKILL", proc.pid)

    def _stop_all_processes(self) -> None:
        with self._lock:
            procs, self._procs = self._procs, []
            self._servers.clear()
        for t in reversed(procs):
            self.stop_process(t.proc, timeout=3.0)
            for f in t.files:
                with contextlib.suppress(OSError):
                    f.close()

    def _track_file(self, proc: subprocess.Popen[Any], f: Any) -> _Tracked:
        with self._lock:
            tracked = next(t for t in self._procs if t.proc is proc)
            tracked.files.append(f)
        return tracked

    # ------------------------------------------------------------ backend servers

    def start_backends(
        self,
        http_port: int = 8080,
        udp_port: int = 5353,
        health_port: int | None = None,
        bind: str = "0.0.0.0",
    ) -> None:
        """Start a labservers process in every backend namespace; returns when all are bound."""
        self._server_params = ServerParams(http_port, udp_port, health_port, bind)
        for i in self.backend_ids:
            self.start_backend(i)

    def start_backend(self, i: int, timeout: float = 10.0) -> None:
        self._check_backend(i)
        self._require_up()
        if i in self._servers and self._servers[i].proc.poll() is None:
            return
        params = self._server_params or ServerParams()
        self._server_params = params
        ready = os.path.join(self.workdir, f"b{i}.ready")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ready)
        args = ["-m", "lbtui.labservers", "--name", f"b{i}", "--http-port", str(params.http_port)]
        args += ["--udp-port", str(params.udp_port), "--record", self.record_path(i), "--ready-file", ready]
        args += ["--bind", params.bind, "--control", self.control_path(i)]
        if params.health_port:
            args += ["--health-port", str(params.health_port)]
        logf = open(os.path.join(self.workdir, f"b{i}.log"), "a")  # noqa: SIM115 (closed on stop)
        proc = self.popen(self.ns_backend(i), *self.python_cmd(*args), stdout=logf, stderr=subprocess.STDOUT)
        tracked = self._track_file(proc, logf)
        with self._lock:
            self._servers[i] = tracked
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop_backend(i)
                raise LabError(f"backend b{i} did not start; see {logf.name}")
            time.sleep(0.02)

    def stop_backend(self, i: int) -> None:
        """Kill backend i's servers (its namespace and address stay)."""
        self._check_backend(i)
        with self._lock:
            tracked = self._servers.pop(i, None)
            if tracked is not None and tracked in self._procs:
                self._procs.remove(tracked)
        if tracked is None:
            return
        self.stop_process(tracked.proc)
        for f in tracked.files:
            with contextlib.suppress(OSError):
                f.close()

    def control_path(self, i: int) -> str:
        """File backend i's server follows: see `set_backend_behaviour`."""
        self._check_backend(i)
        return os.path.join(self.workdir, f"b{i}.control")

    def set_backend_behaviour(self, i: int, delay_ms: int = 0, refuse: bool = False) -> None:
        """Make backend i answer `GET /` after delay_ms, or refuse new connections (RST), within ~0.5 s.

        The health port (start_backends(health_port=...)) keeps answering either way."""
        path = self.control_path(i)
        with open(path + ".tmp", "w") as f:
            json.dump({"delay_ms": delay_ms, "refuse": refuse}, f)
        os.replace(path + ".tmp", path)  # the server never reads half a file

    def record_path(self, i: int) -> str:
        """File where backend i's server appends "client_ip:client_port" per accepted connection."""
        self._check_backend(i)
        return os.path.join(self.workdir, f"b{i}.conns")

    def recorded_peers(self, i: int) -> list[tuple[str, int]]:
        try:
            with open(self.record_path(i)) as f:
                lines = [line.strip() for line in f if line.strip()]
        except FileNotFoundError:
            return []
        peers = []
        for line in lines:
            host, _, port = line.rpartition(":")
            peers.append((host, int(port)))
        return peers
