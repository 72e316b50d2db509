# SPDX-License-Identifier: Apache-2.0
"""The demo/test lab: network namespaces, veths, a bridge and real backend servers (iproute2 calls).

Topology for prefix ``p`` (every name starts with it, nothing is created in the root namespace):

    pcli  [pc0 10.0.0.2/24] ==veth== [pl0 10.0.0.1/24 = VIP]  plb (ip_forward=1)
    pcli2 [pc1 10.0.1.2/24] ==veth== [pl1 10.0.1.1/24]        (second client network)
    plb: bridge pbr0 10.0.2.1/24; per backend i: veth pbNp (bridge port) <-> pbN in ns pbN,
         10.0.2.(10+i)/24, default route via 10.0.2.1

The load balancer attaches to ``pl0`` and ``pl1`` (the client-facing interfaces) inside ``plb``.
Client veths have tx checksum offload off so that packets reaching the LB carry full checksums, as
on a wire (docs/datapath.md#checksums). Backends route everything back through ``plb`` because DNAT keeps the
client's source address.
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
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

VIP = "10.0.0.1"
CLIENT_NET = "10.0.0"
CLIENT2_NET = "10.0.1"
BACKEND_NET = "10.0.2"
HTTP_VIP_PORT = 80
MAX_PREFIX_LEN = 4  # longest interface name is "<p>b99p": 4 + 4 <= 15 (IFNAMSIZ - 1)
MAX_BACKENDS = 99
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,3}$")
_SUFFIX_RE = r"(lb|cli|cli2|b\d+)"


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its output."""


@dataclass(frozen=True)
class LabSpec:
    prefix: str = "lbt"
    backends: int = 3
    second_client: bool = True

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(
                f"lab prefix {self.prefix!r}: 1-{MAX_PREFIX_LEN} chars, a lowercase letter then "
                "letters/digits (interface names must stay <= 15 chars)"
            )
        if not 1 <= self.backends <= MAX_BACKENDS:
            raise ValueError(f"lab backends {self.backends}: expected 1..{MAX_BACKENDS}")


@dataclass(frozen=True)
class ServerParams:
    http_port: int = 8080
    udp_port: int = 5353
    health_port: int | None = None


def _ip(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return run_cmd(["ip", *args], check=check, timeout=timeout)


def run_cmd(
    cmd: list[str], check: bool = True, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise LabError(
            f"command failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stdout.strip()}\n{r.stderr.strip()}"
        )
    return r


def list_namespaces() -> list[str]:
    r = _ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def lab_namespaces(prefix: str) -> list[str]:
    """Existing namespaces that belong to a lab with this exact prefix (not to a longer prefix)."""
    pattern = re.compile(re.escape(prefix) + _SUFFIX_RE + "$")
    return [ns for ns in list_namespaces() if pattern.match(ns)]


def _kill_namespace_processes(ns: str) -> None:
    """SIGTERM, then SIGKILL, every process living in ``ns`` (never this process itself)."""
    own = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split() if p.isdigit()]
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


def lab_state_file(prefix: str) -> str:
    """Where lbtui keeps the runtime overrides of a lab's instance (settings.state_file)."""
    return f"/run/lbtui/{prefix}.state"


def cleanup_prefix(prefix: str) -> None:
    """Remove the namespaces (and so their links) a lab with this prefix left behind, and the runtime
    overrides its instance kept; never raises."""
    with contextlib.suppress(OSError):
        os.unlink(lab_state_file(prefix))
    for ns in lab_namespaces(prefix):
        try:
            _kill_namespace_processes(ns)
            _ip("netns", "del", ns, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("lab cleanup of %s: %s", ns, e)


@dataclass
class _Tracked:
    proc: subprocess.Popen[Any]
    label: str = ""
    files: list[Any] = field(default_factory=list)


class Lab:
    vip = VIP

    def __init__(self, spec: LabSpec | None = None) -> None:
        self.spec = spec or LabSpec()
        self.prefix = self.spec.prefix
        self._procs: list[_Tracked] = []
        self._servers: dict[int, _Tracked] = {}
        self._server_params: ServerParams | None = None
        self._is_up = False
        self._lock = threading.Lock()
        self.workdir = ""

    # ------------------------------------------------------------ names

    @property
    def control_socket(self) -> str:
        """The control socket of lbtui run with config_toml() (the demo's: /run/lbtui/lbtd.sock)."""
        return f"/run/lbtui/{self.prefix}.sock"

    @property
    def ns_lb(self) -> str:
        return f"{self.prefix}lb"

    @property
    def ns_client(self) -> str:
        return f"{self.prefix}cli"

    @property
    def ns_client2(self) -> str:
        return f"{self.prefix}cli2"

    def ns_backend(self, i: int) -> str:
        self._check_backend(i)
        return f"{self.prefix}b{i}"

    def backend_ip(self, i: int) -> str:
        self._check_backend(i)
        return f"{BACKEND_NET}.{10 + i}"

    @property
    def backend_ids(self) -> range:
        return range(1, self.spec.backends + 1)

    @property
    def client_ifaces(self) -> list[str]:
        ifaces = [f"{self.prefix}l0"]
        if self.spec.second_client:
            ifaces.append(f"{self.prefix}l1")
        return ifaces

    @property
    def client_ips(self) -> list[str]:
        return [f"{CLIENT_NET}.2"] + ([f"{CLIENT2_NET}.2"] if self.spec.second_client else [])

    @property
    def namespaces(self) -> list[str]:
        nss = [self.ns_lb, self.ns_client]
        if self.spec.second_client:
            nss.append(self.ns_client2)
        return nss + [self.ns_backend(i) for i in self.backend_ids]

    def client_ns(self, client: int) -> str:
        if client == 1:
            return self.ns_client
        if client == 2 and self.spec.second_client:
            return self.ns_client2
        raise ValueError(f"no client {client} in this lab")

    def _check_backend(self, i: int) -> None:
        if not 1 <= i <= self.spec.backends:
            raise ValueError(f"backend {i}: this lab has backends 1..{self.spec.backends}")

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Lab:
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
        cleanup_prefix(self.prefix)
        self.workdir = tempfile.mkdtemp(prefix=f"lbtui-lab-{self.prefix}-")
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self._is_up = True
        log.info("lab %s up: %d backends in %s", self.prefix, self.spec.backends, self.namespaces)

    def down(self) -> None:
        """Tear everything down; safe on a half-built lab and when called twice."""
        self._is_up = False
        try:
            self._stop_all_processes()
        except Exception as e:  # noqa: BLE001 - down() must always reach the namespace cleanup
            log.warning("lab %s: stopping processes: %s", self.prefix, e)
        cleanup_prefix(self.prefix)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = ""

    def _build(self) -> None:
        p, lb = self.prefix, self.ns_lb
        for ns in self.namespaces:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        self.sysctl(lb, "net.ipv4.ip_forward=1")
        # client networks
        clients = [(self.ns_client, f"{p}c0", f"{p}l0", CLIENT_NET)]
        if self.spec.second_client:
            clients.append((self.ns_client2, f"{p}c1", f"{p}l1", CLIENT2_NET))
        for ns, cif, lif, net in clients:
            _ip("-n", ns, "link", "add", cif, "type", "veth", "peer", "name", lif, "netns", lb)
            _ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", cif)
            _ip("-n", lb, "addr", "add", f"{net}.1/24", "dev", lif)
            _ip("-n", ns, "link", "set", cif, "up")
            _ip("-n", lb, "link", "set", lif, "up")
            _ip("-n", ns, "route", "add", "default", "via", f"{net}.1")
            # full checksums on packets entering the LB, as from a wire (docs/datapath.md#checksums)
            self.run(ns, "ethtool", "-K", cif, "tx", "off")
            # many ephemeral ports and TIME_WAIT reuse for connection-per-request loads
            self.sysctl(ns, "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1")
        # backend network
        br = f"{p}br0"
        _ip("-n", lb, "link", "add", br, "type", "bridge")
        _ip("-n", lb, "addr", "add", f"{BACKEND_NET}.1/24", "dev", br)
        _ip("-n", lb, "link", "set", br, "up")
        for i in self.backend_ids:
            ns, bif, port = self.ns_backend(i), f"{p}b{i}", f"{p}b{i}p"
            _ip("-n", ns, "link", "add", bif, "type", "veth", "peer", "name", port, "netns", lb)
            _ip("-n", ns, "addr", "add", f"{self.backend_ip(i)}/24", "dev", bif)
            _ip("-n", ns, "link", "set", bif, "up")
            _ip("-n", ns, "route", "add", "default", "via", f"{BACKEND_NET}.1")
            _ip("-n", lb, "link", "set", port, "master", br)
            _ip("-n", lb, "link", "set", port, "up")
            self.sysctl(ns, "net.core.somaxconn=4096")
        # ethtool flaps the link (docs/datapath.md#checksums): ping every path before anyone uses it
        for ns, _cif, _lif, net in clients:
            self._wait_ping(ns, f"{net}.1")
        for i in self.backend_ids:
            self._wait_ping(lb, self.backend_ip(i))

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

    # ------------------------------------------------------------ backend servers

    def start_backends(
        self, http_port: int = 8080, udp_port: int = 5353, health_port: int | None = None
    ) -> None:
        """Start a labservers process in every backend namespace; returns when all are bound."""
        self._server_params = ServerParams(http_port, udp_port, health_port)
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
        args += ["--control", self.control_path(i)]
        if params.health_port:
            args += ["--health-port", str(params.health_port)]
        logf = open(os.path.join(self.workdir, f"b{i}.log"), "a")  # noqa: SIM115 (closed on stop)
        proc = self.popen(self.ns_backend(i), *self.python_cmd(*args), stdout=logf, stderr=subprocess.STDOUT)
        with self._lock:
            tracked = next(t for t in self._procs if t.proc is proc)
            tracked.files.append(logf)
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

    def _require_up(self) -> None:
        if not self._is_up:
            raise LabError(f"lab {self.prefix} is not up")

    def vip_answers(self, client: int = 1, timeout: float = 1.0) -> bool:
        """One HTTP GET to the VIP from a client namespace: is the load balancer serving yet?"""
        cmd = self.python_cmd("-m", "lbtui.labservers", "client", "probe", "--url", f"http://{self.vip}/")
        cmd += ["--timeout", str(timeout)]
        r = run_cmd(
            ["ip", "netns", "exec", self.client_ns(client), *cmd],
            check=False,
            timeout=timeout + 30,
            env=self._child_env(),
        )
        return r.returncode == 0

    # ------------------------------------------------------------ configuration

    def config_toml(
        self,
        weights: tuple[int, ...] = (3, 2, 1),
        algorithm: str = "weighted-random",
        extra_proxy_toml: str = "",
    ) -> str:
        """A valid lbtui config for this lab.

        Proxy "web" (tcp VIP:80 -> backends :8080) and proxy "udp" (udp VIP:5353 -> :5353), both on
        the client-facing interfaces. Backend i gets ``weights[i-1]`` (1 when the tuple is shorter).
        ``extra_proxy_toml`` is inserted into proxy "web" right after its own keys, so it may hold
        plain keys as well as sub-tables such as ``[proxy.health]``."""
        ifaces = ", ".join(f'"{i}"' for i in self.client_ifaces)
        lines = [
            "[settings]",
            f'control_socket = "{self.control_socket}"',
            f'state_file = "{lab_state_file(self.prefix)}"',
            'xdp_mode = "generic"',
            "",
            "[settings.metrics]",
            "enabled = false",
            "",
        ]
        for name, proto, port, backend_port, extra in (
            ("web", "tcp", HTTP_VIP_PORT, 8080, extra_proxy_toml),
            ("udp", "udp", 5353, 5353, ""),
        ):
            lines += [
                "[[proxy]]",
                f'name = "{name}"',
                f"interfaces = [{ifaces}]",
                f'vip = "{self.vip}"',
                f"port = {port}",
                f'protocol = "{proto}"',
                f'algorithm = "{algorithm}"',
            ]
            if extra.strip():
                lines += [extra.strip()]
            lines.append("")
            for i in self.backend_ids:
                weight = weights[i - 1] if i - 1 < len(weights) else 1
                lines += [
                    "[[proxy.backend]]",
                    f'address = "{self.backend_ip(i)}:{backend_port}"',
                    f"weight = {weight}",
                    "",
                ]
        return "\n".join(lines)


@dataclass(frozen=True)
class TrafficCounts:
    http_ok: dict[str, int]
    http_failed: int
    udp_ok: dict[str, int]
    udp_failed: int


class TrafficGenerator:
    """Light steady traffic from the client namespace to the VIP: HTTP with a new connection each
    time, alternating with UDP queries. The requests run in a ``client traffic`` process inside the
    namespace; a thread here reads its one-line results and counts them."""

    def __init__(self, lab: Lab, rate_per_s: float = 20, client: int = 1, udp: bool = True) -> None:
        self.lab = lab
        self.rate_per_s = rate_per_s
        self.client = client
        self.udp = udp
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ok: dict[str, Counter[str]] = {"http": Counter(), "udp": Counter()}
        self._failed: Counter[str] = Counter()

    def start(self) -> None:
        if self._proc is not None:
            return
        args = ["traffic", "--url", f"http://{self.lab.vip}/", "--rate", str(self.rate_per_s)]
        args += ["--udp-host", self.lab.vip if self.udp else ""]
        self._proc = self.lab.popen(
            self.lab.client_ns(self.client),
            *self.lab.python_cmd("-m", "lbtui.labservers", "client", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, name="lab-traffic", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            kind, _, name = line.strip().partition(" ")
            if kind not in self._ok:
                continue
            with self._lock:
                if name == "!":
                    self._failed[kind] += 1
                else:
                    self._ok[kind][name] += 1

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            Lab.stop_process(proc, timeout=2.0)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def counts(self) -> TrafficCounts:
        with self._lock:
            return TrafficCounts(
                http_ok=dict(self._ok["http"]),
                http_failed=self._failed["http"],
                udp_ok=dict(self._ok["udp"]),
                udp_failed=self._failed["udp"],
            )

    def __enter__(self) -> TrafficGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
