# SPDX-License-Identifier: Apache-2.0
"""The demo/test lab: network namespaces, veths, a bridge and real backend servers (iproute2 calls).

Topology for prefix ``p`` (every name starts with it, nothing is created in the root namespace):

    pcli  [pc0 10.0.0.2/24] ==veth== [pl0 10.0.0.1/24 = VIP]  plb (ip_forward=1)
    pcli2 [pc1 10.0.1.2/24] ==veth== [pl1 10.0.1.1/24]        (second client network)
    plb: bridge pbr0 10.0.2.1/24; per backend i: veth pbNp (bridge port) <-> pbN in ns pbN,
         10.0.2.(10+i)/24, default route via 10.0.2.1
         (``backend_bridge=False``: no bridge; each pbNp holds 10.0.2.1/32 and a route to its
         backend's address, so the LB's backend-facing interfaces are veths)

``backend_gro=True`` turns GRO on at the backends' ends (pbN): then the LB's pbNp can transmit XDP
frames, what a native XDP redirect into them needs (docs/datapath.md#fast-path).

Every link is dual stack: beside each IPv4 address x.y.z.n/24 its IPv6 twin in a /64 (client
networks fd00:10::/64 and fd00:11::/64 with VIP6 fd00:10::1, backends fd00:20::(10+i) behind
fd00:20::1), default routes for both families, and plb forwards both.

The load balancer attaches to ``pl0`` and ``pl1`` (the client-facing interfaces) inside ``plb``.
Client veths have tx checksum offload off so that packets reaching the LB carry full checksums, as
on a wire (docs/datapath.md#checksums). Backends route everything back through ``plb`` because DNAT keeps the
client's source address.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from lbtui.addresses import IPV4, IPV6, format_endpoint, host_text
from lbtui.netlab import (
    MAX_PREFIX_LEN,
    LabError,
    NamespaceLab,
    ServerParams,
    check_prefix,
    cleanup_namespaces,
    ip,
    run_cmd,
)
from lbtui.netlab import lab_namespaces as _lab_namespaces

__all__ = [
    "MAX_PREFIX_LEN",
    "Lab",
    "LabError",
    "LabSpec",
    "ServerParams",
    "TrafficGenerator",
    "cleanup_prefix",
    "lab_namespaces",
    "run_cmd",
]

log = logging.getLogger(__name__)

VIP = "10.0.0.1"
CLIENT_NET = "10.0.0"
CLIENT2_NET = "10.0.1"
BACKEND_NET = "10.0.2"
# IPv6 twins of the networks above (the host part is the same: 10.0.0.1 <-> fd00:10::1)
VIP6 = "fd00:10::1"
CLIENT_NET6 = "fd00:10:"
CLIENT2_NET6 = "fd00:11:"
BACKEND_NET6 = "fd00:20:"
HTTP_VIP_PORT = 80
# backend servers listening on both families (start_backends(bind=...)): the demo serves both
DUAL_STACK_BIND = "0.0.0.0,::"
MAX_BACKENDS = 99
_SUFFIX_RE = r"(lb|cli|cli2|b\d+)"


@dataclass(frozen=True)
class LabSpec:
    prefix: str = "lbt"
    backends: int = 3
    second_client: bool = True
    backend_bridge: bool = True  # False: one routed veth per backend, no bridge (see the module doc)
    backend_gro: bool = False  # GRO on at the backends' ends of their veths

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if not 1 <= self.backends <= MAX_BACKENDS:
            raise ValueError(f"lab backends {self.backends}: expected 1..{MAX_BACKENDS}")


def lab_namespaces(prefix: str) -> list[str]:
    """Existing namespaces that belong to a lab with this exact prefix (not to a longer prefix)."""
    return _lab_namespaces(prefix, _SUFFIX_RE)


def lab_state_file(prefix: str) -> str:
    """Where lbtui keeps the runtime overrides of a lab's instance (settings.state_file). The lab
    owns it: a new lab starts without the overrides of an earlier one (a backend drained in the last
    demo is not drained in this one), and the file goes with the lab."""
    return f"/run/lbtui/{prefix}.state"


def cleanup_prefix(prefix: str) -> None:
    """Remove the namespaces (and so their links) a lab with this prefix left behind, and the runtime
    overrides its instance kept; never raises."""
    for path in (lab_state_file(prefix), f"{lab_state_file(prefix)}.unreadable"):
        with contextlib.suppress(OSError):
            os.unlink(path)
    cleanup_namespaces(prefix, _SUFFIX_RE)


class Lab(NamespaceLab):
    vip = VIP
    SUFFIX_RE = _SUFFIX_RE
    BACKEND_NET = BACKEND_NET

    def __init__(self, spec: LabSpec | None = None) -> None:
        self.spec = spec or LabSpec()
        super().__init__(self.spec.prefix, self.spec.backends)

    def _clean_leftovers(self) -> None:
        cleanup_prefix(self.prefix)  # the namespaces and the lab's state file

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

    def backend_ip6(self, i: int) -> str:
        self._check_backend(i)
        return f"{BACKEND_NET6}:{10 + i}"

    def vip_of(self, family: int = IPV4) -> str:
        """The VIP of one family: 10.0.0.1 or fd00:10::1."""
        return {IPV4: VIP, IPV6: VIP6}[family]

    def vip_url(self, family: int = IPV4, port: int = HTTP_VIP_PORT) -> str:
        """ "http://10.0.0.1/" or "http://[fd00:10::1]/" (the port only when it is not 80)."""
        at = "" if port == HTTP_VIP_PORT else f":{port}"
        return f"http://{host_text(self.vip_of(family))}{at}/"

    def backend_endpoint(self, i: int, port: int = 8080, family: int = IPV4) -> str:
        """Backend i as a config and console endpoint: "10.0.2.11:8080" or "[fd00:20::11]:8080"."""
        return format_endpoint(self.backend_ip(i) if family == IPV4 else self.backend_ip6(i), port)

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
    def client_ips6(self) -> list[str]:
        return [f"{CLIENT_NET6}:2"] + ([f"{CLIENT2_NET6}:2"] if self.spec.second_client else [])

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

    # ------------------------------------------------------------ topology

    def _build(self) -> None:
        p, lb = self.prefix, self.ns_lb
        self.sysctl(lb, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        # client networks
        clients = [(self.ns_client, f"{p}c0", f"{p}l0", CLIENT_NET, CLIENT_NET6)]
        if self.spec.second_client:
            clients.append((self.ns_client2, f"{p}c1", f"{p}l1", CLIENT2_NET, CLIENT2_NET6))
        for ns, cif, lif, net, net6 in clients:
            ip("-n", ns, "link", "add", cif, "type", "veth", "peer", "name", lif, "netns", lb)
            ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", cif)
            ip("-n", lb, "addr", "add", f"{net}.1/24", "dev", lif)
            # nodad: usable at once (duplicate address detection would hold them back a second)
            ip("-n", ns, "-6", "addr", "add", f"{net6}:2/64", "dev", cif, "nodad")
            ip("-n", lb, "-6", "addr", "add", f"{net6}:1/64", "dev", lif, "nodad")
            ip("-n", ns, "link", "set", cif, "up")
            ip("-n", lb, "link", "set", lif, "up")
            ip("-n", ns, "route", "add", "default", "via", f"{net}.1")
            ip("-n", ns, "-6", "route", "add", "default", "via", f"{net6}:1")
            # full checksums on packets entering the LB, as from a wire (docs/datapath.md#checksums)
            self.run(ns, "ethtool", "-K", cif, "tx", "off")
            # many ephemeral ports and TIME_WAIT reuse for connection-per-request loads
            self.sysctl(ns, "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1")
        # backend network
        br = f"{p}br0"
        if self.spec.backend_bridge:
            ip("-n", lb, "link", "add", br, "type", "bridge")
            ip("-n", lb, "addr", "add", f"{BACKEND_NET}.1/24", "dev", br)
            ip("-n", lb, "-6", "addr", "add", f"{BACKEND_NET6}:1/64", "dev", br, "nodad")
            ip("-n", lb, "link", "set", br, "up")
        for i in self.backend_ids:
            ns, bif, port = self.ns_backend(i), f"{p}b{i}", f"{p}b{i}p"
            ip("-n", ns, "link", "add", bif, "type", "veth", "peer", "name", port, "netns", lb)
            ip("-n", ns, "addr", "add", f"{self.backend_ip(i)}/24", "dev", bif)
            ip("-n", ns, "-6", "addr", "add", f"{self.backend_ip6(i)}/64", "dev", bif, "nodad")
            ip("-n", ns, "link", "set", bif, "up")
            ip("-n", ns, "route", "add", "default", "via", f"{BACKEND_NET}.1")
            ip("-n", ns, "-6", "route", "add", "default", "via", f"{BACKEND_NET6}:1")
            if self.spec.backend_bridge:
                ip("-n", lb, "link", "set", port, "master", br)
                ip("-n", lb, "link", "set", port, "up")
            else:
                ip("-n", lb, "addr", "add", f"{BACKEND_NET}.1/32", "dev", port)
                ip("-n", lb, "-6", "addr", "add", f"{BACKEND_NET6}:1/128", "dev", port, "nodad")
                ip("-n", lb, "link", "set", port, "up")
                ip("-n", lb, "route", "add", f"{self.backend_ip(i)}/32", "dev", port)
                ip("-n", lb, "-6", "route", "add", f"{self.backend_ip6(i)}/128", "dev", port)
            if self.spec.backend_gro:
                self.run(ns, "ethtool", "-K", bif, "gro", "on")
            self.sysctl(ns, "net.core.somaxconn=4096")
        # ethtool flaps the link (docs/datapath.md#checksums): ping every path before anyone uses it
        for ns, _cif, _lif, net, net6 in clients:
            self._wait_ping(ns, f"{net}.1")
            self._wait_ping(ns, f"{net6}:1")
        for i in self.backend_ids:
            self._wait_ping(lb, self.backend_ip(i))
            self._wait_ping(lb, self.backend_ip6(i))

    def vip_answers(self, client: int = 1, timeout: float = 1.0, family: int = IPV4) -> bool:
        """One HTTP GET to the VIP from a client namespace: is the load balancer serving yet?"""
        cmd = self.python_cmd("-m", "lbtui.labservers", "client", "probe", "--url", self.vip_url(family))
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
        family: int = IPV4,
        ipv6_twins: bool = False,
        fast_path: str | None = None,
    ) -> str:
        """A valid lbtui config for this lab.

        Proxy "web" (tcp VIP:80 -> backends :8080) and proxy "udp" (udp VIP:5353 -> :5353), both on
        the client-facing interfaces, over ``family`` (VIP 10.0.0.1 and IPv4 backends, or VIP6
        fd00:10::1 and the backends' IPv6 addresses). ``ipv6_twins`` adds "web6" and "udp6", the same
        two proxies on VIP6 (the demo's dual stack). Backend i gets ``weights[i-1]`` (1 when the tuple
        is shorter). ``extra_proxy_toml`` is inserted into every TCP proxy right after its own keys,
        so it may hold plain keys as well as sub-tables such as ``[proxy.health]``. ``fast_path``, if
        given, is settings.fast_path ("auto" | "off"; left out: the default, "auto")."""
        lines = [
            "[settings]",
            f'control_socket = "{self.control_socket}"',
            f'state_file = "{lab_state_file(self.prefix)}"',
            'xdp_mode = "generic"',
            *([f'fast_path = "{fast_path}"'] if fast_path else []),
            "",
            "[settings.metrics]",
            "enabled = false",
            "",
        ]
        extra = extra_proxy_toml
        proxies = [("web", "udp", family)] + ([("web6", "udp6", IPV6)] if ipv6_twins else [])
        for web, udp, fam in proxies:
            lines += self._proxy_toml(web, "tcp", HTTP_VIP_PORT, 8080, fam, weights, algorithm, extra)
            lines += self._proxy_toml(udp, "udp", 5353, 5353, fam, weights, algorithm, "")
        return "\n".join(lines)

    def _proxy_toml(
        self,
        name: str,
        protocol: str,
        port: int,
        backend_port: int,
        family: int,
        weights: tuple[int, ...],
        algorithm: str,
        extra: str,
    ) -> list[str]:
        ifaces = ", ".join(f'"{i}"' for i in self.client_ifaces)
        lines = [
            "[[proxy]]",
            f'name = "{name}"',
            f"interfaces = [{ifaces}]",
            f'vip = "{self.vip_of(family)}"',
            f"port = {port}",
            f'protocol = "{protocol}"',
            f'algorithm = "{algorithm}"',
        ]
        if extra.strip():
            lines += [extra.strip()]
        lines.append("")
        for i in self.backend_ids:
            weight = weights[i - 1] if i - 1 < len(weights) else 1
            lines += [
                "[[proxy.backend]]",
                f'address = "{self.backend_endpoint(i, backend_port, family)}"',
                f"weight = {weight}",
                "",
            ]
        return lines


@dataclass(frozen=True)
class TrafficCounts:
    http_ok: dict[str, int]
    http_failed: int
    udp_ok: dict[str, int]
    udp_failed: int


class TrafficTarget(Protocol):
    """What TrafficGenerator needs of a lab (this one, or the scale-out lab)."""

    def vip_of(self, family: int = IPV4) -> str: ...

    def vip_url(self, family: int = IPV4) -> str: ...

    def client_ns(self, client: int) -> str: ...

    def popen(self, ns: str, *cmd: str, **kw: Any) -> subprocess.Popen[Any]: ...

    def python_cmd(self, *args: str) -> list[str]: ...


class TrafficGenerator:
    """Light steady traffic from the client namespace to the VIP of ``family``: HTTP with a new
    connection each time, alternating with UDP queries. The requests run in a ``client traffic``
    process inside the namespace; a thread here reads its one-line results and counts them."""

    def __init__(
        self,
        lab: TrafficTarget,
        rate_per_s: float = 20,
        client: int = 1,
        udp: bool = True,
        family: int = IPV4,
    ) -> None:
        self.lab = lab
        self.rate_per_s = rate_per_s
        self.client = client
        self.udp = udp
        self.family = family
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ok: dict[str, Counter[str]] = {"http": Counter(), "udp": Counter()}
        self._failed: Counter[str] = Counter()

    def start(self) -> None:
        if self._proc is not None:
            return
        vip = self.lab.vip_of(self.family)
        args = ["traffic", "--url", self.lab.vip_url(self.family), "--rate", str(self.rate_per_s)]
        args += ["--udp-host", vip if self.udp else ""]
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
            NamespaceLab.stop_process(proc, timeout=2.0)
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
