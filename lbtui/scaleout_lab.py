# SPDX-License-Identifier: Apache-2.0
"""The scale-out lab: a router spreading a VIP over load-balancer hosts with BGP and ECMP, and DSR
backends behind it (docs/scale-out.md).

Topology for prefix ``p`` (every name starts with it, nothing is created in the root namespace):

    pcli [pc0 10.0.0.2/24] ==== [prc 10.0.0.1/24]  prt: the router (ip_forward, L4 multipath hash,
                                                        loose rp_filter: replies come from the VIP)
    per LB host i:  prt [prh<i> 10.1.<i>.1/24] ==== [ph<i> 10.1.<i>.2/24]  ph<i>, default via the router
    prt: bridge pbr0 10.2.0.1/24; per backend j: port pb<j>p <-> pb<j> in ns pb<j>, 10.2.0.<10+j>/24,
         default route via the router: replies go straight to the client (direct server return)

Each LB host has one interface, toward the router, as Katran hosts have: what it sends to a backend
(IPIP) leaves the way the client's packet came in. With ``spec.bird`` the router and every host run
BIRD 2 with the configs/bird/ templates: a VIP route a host puts into its table VIP_TABLE
(lbtui.dataplane.announce) reaches the router's kernel table as one more ECMP next hop. Without
BIRD the router gets a static ECMP route over all hosts. With ``spec.backend_setup`` every backend
runs `lbtui backend-setup --vip ...` (undone in down()).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbtui.addresses import IPV4
from lbtui.backend_setup import STATE_DIR
from lbtui.bird import BirdControl, BirdError, render_config
from lbtui.dataplane.announce import DEFAULT_TABLE, RouteReader, VipRoutes
from lbtui.netlab import LabError, NamespaceLab, check_prefix, ip, lab_namespaces

log = logging.getLogger(__name__)

CLIENT_NET = "10.0.0"
BACKEND_NET = "10.2.0"
LB_HOSTS_RANGE = "10.1.0.0/16"
VIP_PREFIXES = "10.100.0.0/24"
VIP = "10.100.0.1"
ROUTER_AS = 65000
LB_AS = 65100
VIP_TABLE = DEFAULT_TABLE
MAX_HOSTS = 9
MAX_BACKENDS = 99
_SUFFIX_RE = r"(rt|cli|h\d|b\d+)"
BIRD_TEMPLATES = Path(__file__).resolve().parent.parent / "configs" / "bird"


@dataclass(frozen=True)
class ScaleOutSpec:
    prefix: str = "lbs"
    hosts: int = 3
    backends: int = 3
    bird: bool = True
    backend_setup: bool = True
    bfd: bool = True  # False: the BGP sessions rely on the hold timer alone (routers without BFD)
    vips: tuple[str, ...] = (VIP,)

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if not 1 <= self.hosts <= MAX_HOSTS:
            raise ValueError(f"scale-out lab hosts {self.hosts}: expected 1..{MAX_HOSTS}")
        if not 1 <= self.backends <= MAX_BACKENDS:
            raise ValueError(f"scale-out lab backends {self.backends}: expected 1..{MAX_BACKENDS}")


def scaleout_namespaces(prefix: str) -> list[str]:
    return lab_namespaces(prefix, _SUFFIX_RE)


class ScaleOutLab(NamespaceLab):
    SUFFIX_RE = _SUFFIX_RE
    BACKEND_NET = BACKEND_NET

    def __init__(self, spec: ScaleOutSpec | None = None) -> None:
        self.spec = spec or ScaleOutSpec()
        super().__init__(self.spec.prefix, self.spec.backends)
        self._bird: dict[str, subprocess.Popen[Any]] = {}
        self._routes: RouteReader | None = None

    # ------------------------------------------------------------ names and addresses

    @property
    def vip(self) -> str:
        return self.spec.vips[0]

    @property
    def ns_router(self) -> str:
        return f"{self.prefix}rt"

    @property
    def ns_client(self) -> str:
        return f"{self.prefix}cli"

    @property
    def client_ip(self) -> str:
        return f"{CLIENT_NET}.2"

    def client_ns(self, client: int = 1) -> str:
        if client != 1:
            raise ValueError(f"client {client}: the scale-out lab has one client namespace")
        return self.ns_client

    def vip_of(self, family: int = IPV4) -> str:
        if family != IPV4:
            raise ValueError("the scale-out lab's VIPs are IPv4 (DSR over IPIP is IPv4 only)")
        return self.vip

    def vip_url(self, family: int = IPV4) -> str:
        return f"http://{self.vip_of(family)}/"

    @property
    def host_ids(self) -> range:
        return range(1, self.spec.hosts + 1)

    def _check_host(self, i: int) -> None:
        if i not in self.host_ids:
            raise ValueError(f"host {i}: this lab has hosts 1..{self.spec.hosts}")

    def ns_host(self, i: int) -> str:
        self._check_host(i)
        return f"{self.prefix}h{i}"

    def host_iface(self, i: int) -> str:
        """The host's one interface (toward the router), in the host's namespace."""
        self._check_host(i)
        return f"{self.prefix}h{i}"

    def router_host_iface(self, i: int) -> str:
        """The router's end of host i's link."""
        self._check_host(i)
        return f"{self.prefix}rh{i}"

    def host_ip(self, i: int) -> str:
        self._check_host(i)
        return f"10.1.{i}.2"

    def host_gateway(self, i: int) -> str:
        self._check_host(i)
        return f"10.1.{i}.1"

    def backend_iface(self, i: int) -> str:
        self._check_backend(i)
        return f"{self.prefix}b{i}"

    def control_socket(self, i: int) -> str:
        """The control socket of lbtui on host i (lbtui_config)."""
        self._check_host(i)
        return f"/run/lbtui/{self.prefix}h{i}.sock"

    def lbtui_config(
        self, i: int, forwarding: str = "ipip", health_interval_ms: int = 100, state_file: str | None = None
    ) -> str:
        """lbtui's configuration on host i: proxy "web" on the VIP's port 80 with Maglev, the lab's
        backends listed in another order on each host (the Maglev tables must still be equal), TCP
        health checks (through the tunnel in ipip), the VIP announced through the host's BIRD."""
        self._check_host(i)
        ids = list(self.backend_ids)
        ids = ids[i % len(ids) :] + ids[: i % len(ids)]
        backends = "".join(f'\n[[proxy.backend]]\naddress = "{self.backend_ip(j)}:80"\n' for j in ids)
        state = f'state_file = "{state_file}"\n' if state_file else ""
        interval = health_interval_ms
        return f"""
[settings]
control_socket = "{self.control_socket(i)}"
{state}table_size = 251
manage_sysctls = {"true" if forwarding == "ipip" else "false"}

[settings.metrics]
enabled = false

[settings.announce]
enabled = true
table = {VIP_TABLE}
bird_socket = "{self.bird_socket(self.ns_host(i))}"

[[proxy]]
name = "web"
interfaces = ["{self.host_iface(i)}"]
vip = "{self.vip}"
port = 80
algorithm = "maglev"
forwarding = "{forwarding}"

[proxy.health]
type = "tcp"
interval_ms = {interval}
timeout_ms = {interval}
rise = 1
fall = 1
{backends}"""

    @property
    def namespaces(self) -> list[str]:
        return [
            self.ns_router,
            self.ns_client,
            *(self.ns_host(i) for i in self.host_ids),
            *(self.ns_backend(j) for j in self.backend_ids),
        ]

    # ------------------------------------------------------------ topology

    def up(self) -> None:
        self._remove_stale_backend_states()
        super().up()

    def _remove_stale_backend_states(self) -> None:
        """State files `backend-setup` left for this lab's backends in a run that crashed: their
        namespaces are gone (up() removes leftovers), so nothing can undo them any more."""
        pattern = re.compile(re.escape(self.prefix) + r"b\d+$")
        for path in STATE_DIR.glob("backend-setup-netns*.json"):
            try:
                interface = json.loads(path.read_text()).get("interface", "")
            except (OSError, ValueError):
                continue
            if pattern.match(str(interface)):
                path.unlink(missing_ok=True)

    def _build(self) -> None:
        p, rt = self.prefix, self.ns_router
        self.sysctl(rt, "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1")
        self.sysctl(rt, "net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.default.rp_filter=2")
        self.veth(self.ns_client, f"{p}c0", f"{self.client_ip}/24", rt, f"{p}rc", f"{CLIENT_NET}.1/24")
        ip("-n", self.ns_client, "route", "add", "default", "via", f"{CLIENT_NET}.1")
        # full checksums on what the client sends, as from a wire (docs/datapath.md#checksums)
        self.run(self.ns_client, "ethtool", "-K", f"{p}c0", "tx", "off")
        self.sysctl(self.ns_client, "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1")
        for i in self.host_ids:
            h = self.ns_host(i)
            gw = self.host_gateway(i)
            self.veth(
                rt, self.router_host_iface(i), f"{gw}/24", h, self.host_iface(i), f"{self.host_ip(i)}/24"
            )
            ip("-n", h, "route", "add", "default", "via", gw)
            self.sysctl(h, "net.ipv4.ip_forward=1")
        br = f"{p}br0"
        ip("-n", rt, "link", "add", br, "type", "bridge")
        ip("-n", rt, "addr", "add", f"{BACKEND_NET}.1/24", "dev", br)
        ip("-n", rt, "link", "set", br, "up")
        for j in self.backend_ids:
            b = self.ns_backend(j)
            self.veth(b, self.backend_iface(j), f"{self.backend_ip(j)}/24", rt, f"{p}b{j}p", "")
            ip("-n", rt, "link", "set", f"{p}b{j}p", "master", br)
            ip("-n", b, "route", "add", "default", "via", f"{BACKEND_NET}.1")
            self.sysctl(b, "net.core.somaxconn=4096")
        # ethtool flaps the link (docs/datapath.md#checksums): ping every path before anyone uses it
        self._wait_ping(self.ns_client, f"{CLIENT_NET}.1")
        for i in self.host_ids:
            self._wait_ping(self.ns_host(i), self.host_gateway(i))
        for j in self.backend_ids:
            self._wait_ping(rt, self.backend_ip(j))
        if self.spec.backend_setup:
            self._backend_setup_all()
        if self.spec.bird:
            self.start_bird_router()
            for i in self.host_ids:
                self.start_bird_host(i)
        else:
            for vip in self.spec.vips:
                hops = [a for i in self.host_ids for a in ("nexthop", "via", self.host_ip(i))]
                ip("-n", rt, "route", "add", f"{vip}/32", *hops)

    # ------------------------------------------------------------ backends: lbtui backend-setup

    def backend_setup_cmd(self, j: int, *args: str) -> list[str]:
        return self.python_cmd("-m", "lbtui", "backend-setup", *args, "--interface", self.backend_iface(j))

    def _backend_setup_all(self) -> None:
        """`lbtui backend-setup` in every backend at once (each compiles the program: ~1 s of CPU)."""
        vip_args = [a for v in self.spec.vips for a in ("--vip", v)]
        procs = {
            j: self.popen(
                self.ns_backend(j),
                *self.backend_setup_cmd(j, *vip_args),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for j in self.backend_ids
        }
        failed = []
        for j, proc in procs.items():
            out, _ = proc.communicate(timeout=120)
            self.forget(proc)
            if proc.returncode != 0:
                failed.append(f"b{j}: {out.strip()}")
        if failed:
            raise LabError("lbtui backend-setup failed:\n" + "\n".join(failed))

    def _before_down(self) -> None:
        """`backend-setup --undo` in every backend, so no state file is left under /run/lbtui."""
        if not self.spec.backend_setup or not self.workdir:
            return
        existing = set(scaleout_namespaces(self.prefix))
        for j in self.backend_ids:
            if self.ns_backend(j) in existing:
                with contextlib.suppress(Exception):
                    self.run(self.ns_backend(j), *self.backend_setup_cmd(j, "--undo"), check=False)

    # ------------------------------------------------------------ BIRD

    def bird_socket(self, ns: str) -> str:
        return os.path.join(self.workdir, f"{ns}.bird.ctl")

    def _start_bird(self, ns: str, template: str, values: dict[str, object]) -> None:
        conf = render_config((BIRD_TEMPLATES / template).read_text(), values)
        if not self.spec.bfd:
            conf = conf.replace("    bfd on;", "    bfd off;")
        # the templates log to syslog; the lab keeps each BIRD's log beside its config
        conf += f'\nlog "{os.path.join(self.workdir, ns + ".bird.log")}" all;\n'
        path = os.path.join(self.workdir, f"{ns}.bird.conf")
        Path(path).write_text(conf)
        sock = self.bird_socket(ns)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
        pidfile = os.path.join(self.workdir, f"{ns}.bird.pid")
        proc = self.popen(ns, "bird", "-f", "-c", path, "-s", sock, "-P", pidfile, stderr=subprocess.DEVNULL)
        self._bird[ns] = proc
        # BIRD opens its socket before it reads the configuration: ready is when it answers
        control = BirdControl(sock, timeout_s=1.0)
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                problem = self._bird_error(path)
                raise LabError(f"BIRD in {ns} did not start (exit {proc.poll()}); {path}: {problem}")
            try:
                control.command("show status")
                return
            except BirdError:
                time.sleep(0.02)

    @staticmethod
    def _bird_error(conf: str) -> str:
        r = subprocess.run(["bird", "-p", "-c", conf], capture_output=True, text=True, timeout=10)
        return (r.stderr or r.stdout).strip() or "configuration parses"

    def bird_values(self, ns: str) -> dict[str, object]:
        """The placeholders of the router's (ns_router) or a host's BIRD template."""
        if ns == self.ns_router:
            return {
                "ROUTER_ID": f"{CLIENT_NET}.1",
                "ROUTER_AS": ROUTER_AS,
                "LB_HOSTS": LB_HOSTS_RANGE,
                "LB_AS": LB_AS,
                "VIP_PREFIXES": VIP_PREFIXES,
            }
        i = next(i for i in self.host_ids if self.ns_host(i) == ns)
        return {
            "ROUTER_ID": self.host_ip(i),
            "LOCAL_AS": LB_AS,
            "ROUTER_IP": self.host_gateway(i),
            "ROUTER_AS": ROUTER_AS,
            "VIP_TABLE": VIP_TABLE,
        }

    def start_bird_router(self) -> None:
        self._start_bird(self.ns_router, "router.conf", self.bird_values(self.ns_router))

    def start_bird_host(self, i: int) -> None:
        self._start_bird(self.ns_host(i), "lb-host.conf", self.bird_values(self.ns_host(i)))

    def signal_bird(self, ns: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the BIRD of `ns` (SIGKILL: a crash; SIGSTOP: a hung host; SIGTERM: a clean stop)."""
        proc = self._bird.get(ns)
        if proc is None or proc.poll() is not None:
            raise LabError(f"no BIRD running in {ns}")
        os.kill(proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(10)
            self.forget(proc)
            del self._bird[ns]

    # ------------------------------------------------------------ announcing and what the router sees

    def host_routes(self, i: int) -> VipRoutes:
        """Announce/withdraw VIPs on host i (what lbtui does there), from this process."""
        return VipRoutes(VIP_TABLE, netns=self.ns_host(i))

    def router_nexthops(self, vip: str | None = None) -> set[str]:
        """The hosts (their addresses) the router's kernel spreads `vip` over right now."""
        self._require_up()
        if self._routes is None:
            self._routes = RouteReader(self.ns_router)
        return self._routes.nexthops(vip or self.vip)

    def host_of(self, address: str) -> int:
        for i in self.host_ids:
            if self.host_ip(i) == address:
                return i
        raise ValueError(f"{address} is not a host of this lab")

    def set_host_link(self, i: int, up: bool) -> None:
        """Take host i's link down (or up) at the router's end, as a pulled cable or a port shut."""
        ip("-n", self.ns_router, "link", "set", self.router_host_iface(i), "up" if up else "down")

    def down(self) -> None:
        if self._routes is not None:
            with contextlib.suppress(Exception):
                self._routes.close()
            self._routes = None
        self._bird.clear()
        super().down()
