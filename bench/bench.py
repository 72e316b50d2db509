#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""lbtui side-by-side traffic benchmark.

For every repetition and every mode a fresh lab (``lbtui.lab.Lab``: client ns -> LB ns -> backend
namespaces on a bridge) is built, nginx backends are started, the load balancer under test is started
in the LB namespace, and the same wrk loads run from the client namespace. Fresh namespaces per
(rep, mode) cell keep backend TIME_WAIT / conntrack state of one mode from hurting the next
(bench/README.md#harness-pitfalls). After each mode the LB namespace is checked for XDP, tc and
nftables leftovers.

Every mode runs over each address family of ``--family`` (default both, in the same run): IPv4 (VIP
10.0.0.1, backends 10.0.2.1N) and IPv6 (VIP fd00:10::1, backends fd00:20::1N), and with each number
of backends of ``--backends`` (default "1,3"), each with its own ratio to ``direct`` over the same
family and backend count.

Modes:
  direct   client -> backend 1 (10.0.2.11:8080 / [fd00:20::11]:8080) directly, routed through the LB
           ns (the ceiling)
  nft      nftables DNAT, ``numgen random`` over the backends (kernel conntrack + NAT)
  haproxy  HAProxy in TCP mode, 1 thread (a full proxy: two TCP connections per client connection)
  lbtui    ``ip netns exec <p>lb PYTHON -m lbtui -c CFG --no-ui`` (XDP DNAT + TC SNAT), stopped by SIGTERM;
           its XDP mode is lbtui's default (``--lbtui-xdp-mode`` sets one); the fast path is on
           (lbtui's default), so with ``--lbtui-xdp-mode native --backend-links veth-gro`` this is
           native XDP with the fast path against lbtui-fp's generic
  lbtui-fp lbtui with ``fast_path = "auto"``, generic XDP
  lbtui-dsr  lbtui with ``forwarding = "ipip"`` (DSR): the client's packets go to the backends inside
           IPIP (XDP), the backends (``lbtui backend-setup``: VIP on lo, TC decapsulation) answer from
           the VIP over a return link that bypasses the LB namespace's IP stack: a veth from the client
           namespace into the backends' bridge (10.0.2.200), the backends' route to the client network

Loads (wrk, 1 thread):
  keepalive  HTTP/1.1 keep-alive, --conns connections: per-packet cost of the LB path
  close      ``Connection: close``, --conns connections: a new TCP connection per request (per-flow
             cost under load); wrk's latency excludes the handshake (bench/README.md#harness-pitfalls)
  connlat    ``Connection: close`` over one connection at a time: each request waits for the previous
             connection's handshake, request, reply and close, so req/s is 1 / (the whole connection's
             latency), handshake included; p50/p99 are wrk's (request to reply)

For the lbtui modes the kernel's per-program counters (run_cnt, run_time_ns) are enabled around the
loads (bench/bpf_stats.py: the kernel switches them off again when the benchmark exits, however it
exits) and read from the lbtui process's program file descriptors before and after each load.
lbtui's runtime overrides (settings.state_file) go to a temporary directory removed at the end.

Prints markdown tables of medians, ratios to ``direct`` and lbtui's ratios to every other mode with
the targets of issue 16, and writes every sample as JSON. Needs root, wrk, nginx, nft, haproxy, curl,
bpftool.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's root
from lbtui.addresses import FAMILY_NAMES, IPV4, IPV6, format_endpoint  # noqa: E402
from lbtui.dataplane.structs import GLOBAL_COUNTERS  # noqa: E402
from lbtui.lab import MAX_BACKENDS, LabSpec  # noqa: E402
from tests.support.lab import ClientLab  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/: its sibling modules
from bpf_stats import KernelProgramStats, ProgramRuns, process_programs, program_names  # noqa: E402

MODES = ("direct", "nft", "haproxy", "lbtui", "lbtui-fp", "lbtui-dsr")
LOADS = ("keepalive", "close", "connlat")
LBTUI_MODES = ("lbtui", "lbtui-fp", "lbtui-dsr")
# issue 16's targets: lbtui's req/s over each other mode's, per load (same family, same backends)
TARGETS = {
    "direct": {"keepalive": 0.95, "close": 0.97, "connlat": 0.97},
    "nft": {"keepalive": 1.2, "close": 1.2, "connlat": 1.2},
    "haproxy": {"keepalive": 1.5, "close": 1.5, "connlat": 1.5},
}
FAMILIES = (IPV4, IPV6)
BACKEND_PORT = 8080
VIP_PORT = 80
NFT_TABLE = "lbtui_bench"
REQUIRED_TOOLS = {
    "direct": [],
    "nft": ["nft"],
    "haproxy": ["haproxy"],
    "lbtui": [],
    "lbtui-fp": [],  # lbtui with settings.fast_path = "auto"
    "lbtui-dsr": [],
}
DSR_RETURN_IP = "10.0.2.200"  # the client's address on the backends' bridge (lbtui-dsr's return path)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class ModeRecord:
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    spread: list[dict[str, int]] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)
    leftovers: list[list[str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bpf: list[dict[str, Any]] = field(default_factory=list)  # per (rep, load): lbtui's programs' counters
    xdp_attach: list[dict[str, str]] = field(default_factory=list)  # per rep: interface -> XDP mode


# ---------------------------------------------------------------- backends and load balancers


def nginx_conf(workdir: str, name: str) -> str:
    return f"""worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/tmp; proxy_temp_path {workdir}/tmp; fastcgi_temp_path {workdir}/tmp;
  uwsgi_temp_path {workdir}/tmp; scgi_temp_path {workdir}/tmp;
  keepalive_requests 1000000;
  server {{
    listen {BACKEND_PORT} reuseport backlog=4096;
    listen [::]:{BACKEND_PORT} ipv6only=on reuseport backlog=4096;
    listen {VIP_PORT} reuseport backlog=4096;  # lbtui-dsr: the client's packet arrives on VIP:80
    location / {{ default_type text/plain; return 200 "{name}\\n"; }}
  }}
}}
"""


def start_nginx_backends(lab: ClientLab, family: int) -> None:
    for i in lab.backend_ids:
        d = os.path.join(lab.workdir, f"nginx-b{i}")
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(d, f"b{i}"))
        out = open(os.path.join(d, "stdout.log"), "w")  # noqa: SIM115 (the child keeps it)
        lab.popen(lab.ns_backend(i), "nginx", "-c", conf, stdout=out, stderr=subprocess.STDOUT)
        out.close()
    for i in lab.backend_ids:
        url = f"http://{lab.backend_endpoint(i, BACKEND_PORT, family)}/"
        if not wait_for_body(lab, lab.ns_lb, url, f"b{i}", timeout=10):
            raise RuntimeError(f"nginx backend b{i} did not come up")


def curl_body(lab: ClientLab, ns: str, url: str) -> str | None:
    r = lab.run(ns, "curl", "-s", "-g", "-m", "1", url, check=False, timeout=5)  # -g: "[ip6]" literal
    return r.stdout.strip() if r.returncode == 0 else None


def wait_for_body(lab: ClientLab, ns: str, url: str, pattern: str, timeout: float, proc: Any = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        body = curl_body(lab, ns, url)
        if body is not None and re.fullmatch(pattern, body):
            return True
        time.sleep(0.1)
    return False


class LoadBalancer:
    """One mode's load balancer inside the lab's LB namespace."""

    def __init__(self, mode: str, family: int, lab: ClientLab, args: argparse.Namespace) -> None:
        self.mode, self.family, self.lab, self.args = mode, family, lab, args
        self.vip = lab.vip_of(family)
        self.proc: subprocess.Popen[Any] | None = None
        self.logfile = os.path.join(lab.workdir, f"lb-{mode}.log")

    @property
    def target(self) -> str:
        if self.mode == "direct":
            return f"http://{self.lab.backend_endpoint(1, BACKEND_PORT, self.family)}/"
        return f"http://{format_endpoint(self.vip, VIP_PORT)}/"

    def backend_ips(self) -> list[str]:
        lab = self.lab
        return [lab.backend_ip(i) if self.family == IPV4 else lab.backend_ip6(i) for i in lab.backend_ids]

    def start(self) -> float:
        """Start; returns seconds until the target answered with a backend name."""
        t0 = time.monotonic()
        lab, ns = self.lab, self.lab.ns_lb
        if self.mode == "nft":
            ips = self.backend_ips()
            elems = ", ".join(f"{n} : {ip} . {BACKEND_PORT}" for n, ip in enumerate(ips))
            fam = "ip" if self.family == IPV4 else "ip6"
            rules = (
                f"table {fam} {NFT_TABLE} {{\n chain prerouting {{\n"
                "  type nat hook prerouting priority dstnat; policy accept;\n"
                f"  {fam} daddr {self.vip} tcp dport {VIP_PORT} "
                f"dnat {fam} to numgen random mod {len(ips)} map {{ {elems} }}\n }}\n}}\n"
            )
            path = os.path.join(lab.workdir, "nft.rules")
            with open(path, "w") as f:
                f.write(rules)
            lab.run(ns, "nft", "-f", path)
        elif self.mode == "haproxy":
            # HAProxy's address:port form: the last colon separates the port, for IPv6 too
            servers = "".join(
                f"  server b{n + 1} {ip}:{BACKEND_PORT}\n" for n, ip in enumerate(self.backend_ips())
            )
            # a higher maxconn exceeds the FD limit (bench/README.md#harness-pitfalls)
            cfg = (
                "global\n  maxconn 8000\n  nbthread 1\n"
                "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
                f"frontend fe\n  bind {self.vip}:{VIP_PORT}\n  default_backend be\n"
                f"backend be\n  balance roundrobin\n{servers}"
            )
            path = os.path.join(lab.workdir, "haproxy.cfg")
            with open(path, "w") as f:
                f.write(cfg)
            self._popen("haproxy", "-db", "-f", path)
        elif self.mode in LBTUI_MODES:
            path = os.path.join(lab.workdir, "lbtui.toml")
            with open(path, "w") as f:
                f.write(self.lbtui_config())
            self._popen(self.args.python, "-m", "lbtui", "-c", path, "--no-ui")
        if not wait_for_body(lab, lab.ns_client, self.target, r"b\d+", self.args.ready_timeout, self.proc):
            state = "exited" if self.proc is not None and self.proc.poll() is not None else "not answering"
            raise RuntimeError(f"{self.mode} {state} on {self.target}; log: {self._log_tail()}")
        return time.monotonic() - t0

    def lbtui_config(self) -> str:
        """The lab's configuration for this lbtui mode, its runtime overrides in the run's temporary
        state directory (not /var/lib/lbtui) and, for mode lbtui, lbtui's own XDP mode."""
        lab = self.lab
        if self.mode == "lbtui-dsr":
            text = dsr_config(lab)
        else:
            # lbtui-fp names its fast path; mode lbtui runs what lbtui does by default
            text = lab.config_toml(
                weights=(1,) * lab.spec.backends,
                family=self.family,
                fast_path="auto" if self.mode == "lbtui-fp" else None,
            )
        lines = [line for line in text.splitlines() if not line.startswith(("state_file =", "xdp_mode ="))]
        at = lines.index("[settings]") + 1
        xdp_mode = "generic" if self.mode != "lbtui" else self.args.lbtui_xdp_mode
        state = os.path.join(self.args.state_dir, f"{lab.prefix}-{self.mode}.state")
        lines[at:at] = [f'state_file = "{state}"'] + ([f'xdp_mode = "{xdp_mode}"'] if xdp_mode else [])
        return "\n".join(lines) + "\n"

    def _popen(self, *cmd: str) -> None:
        out = open(self.logfile, "a")  # noqa: SIM115 (the child keeps it)
        self.proc = self.lab.popen(self.lab.ns_lb, *cmd, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def _log_tail(self, n: int = 800) -> str:
        try:
            with open(self.logfile) as f:
                return f.read()[-n:].strip() or "(empty)"
        except FileNotFoundError:
            return "(none)"

    def stop(self) -> None:
        if self.proc is not None:
            # SIGTERM first and give the LB time to detach its programs itself
            ClientLab.stop_process(self.proc, timeout=15.0)
            self.proc = None
        if self.mode == "nft":
            fam = "ip" if self.family == IPV4 else "ip6"
            self.lab.run(self.lab.ns_lb, "nft", "delete", "table", fam, NFT_TABLE, check=False)


def dsr_config(lab: ClientLab) -> str:
    """lbtui-dsr: the NAT mode's proxy with forwarding = "ipip" (backends on the VIP's port)."""
    backends = "".join(
        f'[[proxy.backend]]\naddress = "{lab.backend_ip(i)}:{VIP_PORT}"\n' for i in lab.backend_ids
    )
    return f"""[settings]
control_socket = "{lab.control_socket}"
xdp_mode = "generic"
manage_sysctls = true

[settings.metrics]
enabled = false

[[proxy]]
name = "web"
interfaces = ["{lab.client_ifaces[0]}"]
vip = "{lab.vip}"
port = {VIP_PORT}
forwarding = "ipip"

{backends}"""


def backend_setup(lab: ClientLab, i: int, *args: str) -> None:
    cmd = lab.python_cmd("-m", "lbtui", "backend-setup", *args, "--interface", f"{lab.prefix}b{i}")
    lab.run(lab.ns_backend(i), *cmd, timeout=120)


def dsr_up(lab: ClientLab) -> None:
    """The backends decapsulate and answer from the VIP; their replies to the client network go over
    a veth from the client namespace into the bridge (L2 in the LB namespace: no routing, no lbtui)."""
    p = lab.prefix
    for i in lab.backend_ids:
        backend_setup(lab, i, "--vip", lab.vip)
    lab.run(
        lab.ns_client,
        "ip",
        "link",
        "add",
        f"{p}c9",
        "type",
        "veth",
        "peer",
        "name",
        f"{p}r9p",
        "netns",
        lab.ns_lb,
    )
    lab.run(lab.ns_client, "ip", "addr", "add", f"{DSR_RETURN_IP}/24", "dev", f"{p}c9")
    lab.run(lab.ns_client, "ip", "link", "set", f"{p}c9", "up")
    lab.run(lab.ns_lb, "ip", "link", "set", f"{p}r9p", "master", f"{p}br0")
    lab.run(lab.ns_lb, "ip", "link", "set", f"{p}r9p", "up")
    for i in lab.backend_ids:
        lab.run(
            lab.ns_backend(i),
            "ip",
            "route",
            "add",
            f"{lab.client_ips[0].rsplit('.', 1)[0]}.0/24",
            "via",
            DSR_RETURN_IP,
        )


def dsr_down(lab: ClientLab) -> None:
    for i in lab.backend_ids:
        try:
            backend_setup(lab, i, "--undo")
        except Exception as e:  # the namespace goes anyway; say what was left
            log(f"   backend-setup --undo in b{i}: {e}")


def xdp_attachments(lab: ClientLab) -> dict[str, str]:
    """Interface -> XDP mode ("generic", "native") of the programs attached in the LB namespace."""
    found = {}
    for line in lab.run(lab.ns_lb, "ip", "-o", "link", "show", check=False).stdout.splitlines():
        m = re.search(r"\bxdp(generic|drv|offload)?\b", line)
        if m:
            iface = line.split(":")[1].strip().split("@")[0]
            found[iface] = {"generic": "generic", "offload": "offload"}.get(m.group(1) or "", "native")
    return found


def leftovers(lab: ClientLab) -> list[str]:
    """XDP programs, clsact/ingress qdiscs or nftables rules still present in the LB namespace."""
    found = []
    ns = lab.ns_lb
    for line in lab.run(ns, "ip", "-o", "link", "show", check=False).stdout.splitlines():
        if re.search(r"\bxdp(generic|drv|offload)?\b|prog/xdp", line):
            found.append("xdp on " + line.split(":")[1].strip().split("@")[0])
    for line in lab.run(ns, "tc", "qdisc", "show", check=False).stdout.splitlines():
        if line.startswith(("qdisc clsact", "qdisc ingress")):
            found.append(line.strip())
    if lab.run(ns, "nft", "list", "ruleset", check=False).stdout.strip():
        found.append("nftables ruleset not empty")
    return found


# ---------------------------------------------------------------- load


_UNITS_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0, "m": 60_000_000.0}


def _to_us(value: str, unit: str) -> float:
    return float(value) * _UNITS_US[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests/s, p50/p90/p99 latency (µs) and errors from ``wrk --latency`` text output."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+),", out, re.M)
    if rps is None or total is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    res: dict[str, Any] = {"rps": float(rps.group(1)), "requests": int(total.group(1))}
    for pct in (50, 90, 99):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        res[f"p{pct}_us"] = round(_to_us(m.group(1), m.group(2)), 1) if m else None
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    res["errors"] = errors
    return res


def run_wrk(lab: ClientLab, load: str, url: str, duration: int, args: argparse.Namespace) -> dict[str, Any]:
    bound = duration + 20
    threads, conns = (1, 1) if load == "connlat" else (args.threads, args.conns)
    cmd = [
        "timeout",
        str(bound),
        "wrk",
        f"-t{threads}",
        f"-c{conns}",
        f"-d{duration}s",
        "--latency",
    ]
    if load in ("close", "connlat"):
        cmd += ["-H", "Connection: close"]
    r = lab.run(lab.ns_client, *cmd, url, check=False, timeout=bound + 10)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout}{r.stderr}")
    return parse_wrk(r.stdout)


# ---------------------------------------------------------------- main loop


def cell_name(mode: str, family: int, backends: int) -> str:
    """The report's key of one (mode, family, backend count): "lbtui/ipv4/3b"."""
    return f"{mode}/{FAMILY_NAMES[family].lower()}/{backends}b"


def _runs_json(runs: dict[str, ProgramRuns]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "run_cnt": r.runs,
            "run_time_ns": r.run_time_ns,
            "ns_per_run": None if r.ns_per_run is None else round(r.ns_per_run, 1),
        }
        for name, r in sorted(runs.items())
    }


def bpf_process(proc: Any) -> int | None:
    """The pid holding lbtui's programs: the started process or one of its descendants."""
    if proc is None:
        return None
    todo = [proc.pid]
    while todo:
        pid = todo.pop(0)
        try:
            if any(
                os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf-prog"
                for fd in os.listdir(f"/proc/{pid}/fd")
            ):
                return pid
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return None


def _bpftool_json(*args: str) -> Any:
    out = subprocess.run(["bpftool", *args, "--json"], capture_output=True, text=True, check=True, timeout=30)
    return json.loads(out.stdout)


def global_stats_map(pid: int) -> int | None:
    """The id of the lb_global_stats map the lbtui process holds (other instances' maps share the name)."""
    names = {int(m["id"]): m.get("name") for m in _bpftool_json("map", "show")}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-map":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                m = re.search(r"^map_id:\s*(\d+)", f.read(), re.M)
        except OSError:
            continue
        if m and names.get(int(m.group(1))) == "lb_global_stats":
            return int(m.group(1))
    return None


def global_counters(map_id: int) -> dict[str, int]:
    """lbtui's global counters (lb_global_stats, per CPU: summed), by the names lb.h gives them."""

    def number(hex_bytes: list[str]) -> int:
        return int.from_bytes(bytes(int(b, 16) for b in hex_bytes), "little")

    out = {}
    for entry in _bpftool_json("map", "dump", "id", str(map_id)):
        key = number(entry["key"])
        name = GLOBAL_COUNTERS[key] if key < len(GLOBAL_COUNTERS) else f"counter{key}"
        out[name] = sum(number(v["value"]) for v in entry["values"])
    return out


def run_loads(
    lab: ClientLab, lb: LoadBalancer, rep: int, args: argparse.Namespace, record: ModeRecord
) -> None:
    """Every load of the cell; for an lbtui mode with the kernel's program counters on, read before
    and after each load from the lbtui process's program descriptors."""
    pid = bpf_process(lb.proc) if lb.mode in LBTUI_MODES and args.bpf_stats else None
    stats = KernelProgramStats() if pid is not None else contextlib.nullcontext()
    with stats:
        names = program_names() if pid is not None else {}
        counters_id = global_stats_map(pid) if pid is not None else None
        for load in args.loads:
            before = process_programs(pid, names) if pid is not None else {}
            counters_before = global_counters(counters_id) if counters_id is not None else {}
            res = run_wrk(lab, load, lb.target, args.duration, args)
            res["rep"] = rep
            record.samples.setdefault(load, []).append(res)
            log(
                f"   {load:<9} {res['rps']:>10.0f} req/s  p50 {res['p50_us']:>8}us  "
                f"p99 {res['p99_us']:>8}us  errors {res['errors']}"
            )
            if pid is not None:
                delta = KernelProgramStats.delta(before, process_programs(pid, names))
                counters = global_counters(counters_id) if counters_id is not None else {}
                moved = {n: v - counters_before.get(n, 0) for n, v in counters.items()}
                record.bpf.append(
                    {
                        "rep": rep,
                        "load": load,
                        "pid": pid,
                        "requests": res["requests"],
                        "programs": _runs_json(delta),
                        "counters": {n: v for n, v in moved.items() if v},
                    }
                )
                log(
                    "   bpf_stats "
                    + ", ".join(
                        f"{n} {r.runs} runs {r.ns_per_run:.0f} ns/run"
                        for n, r in sorted(delta.items())
                        if r.runs and r.ns_per_run is not None
                    )
                )
                fast = ", ".join(f"{n} {v}" for n, v in moved.items() if v and n.startswith("fast_"))
                if fast:
                    log(f"   counters {fast}")


def run_cell(
    mode: str, family: int, backends: int, rep: int, args: argparse.Namespace, record: ModeRecord
) -> None:
    routed = args.backend_links == "veth-gro"
    spec = LabSpec(args.prefix, backends, second_client=False, backend_bridge=not routed, backend_gro=routed)
    lab = ClientLab(spec)
    lb: LoadBalancer | None = None
    try:
        lab.up()
        if routed:  # GRO on the client's end too: the LB's client veth takes native redirects (replies)
            lab.run(lab.ns_client, "ethtool", "-K", f"{lab.prefix}c0", "gro", "on")
        # haproxy originates connections from the LB namespace: many ports, TIME_WAIT reuse
        lab.sysctl(lab.ns_lb, "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1")
        if mode == "lbtui-dsr":
            dsr_up(lab)
        start_nginx_backends(lab, family)
        lb = LoadBalancer(mode, family, lab, args)
        record.ready_s.append(round(lb.start(), 2))
        record.spread.append(lab.http_requests(12, url=lb.target))
        record.xdp_attach.append(xdp_attachments(lab))
        if args.warmup:
            run_wrk(lab, "keepalive", lb.target, args.warmup, args)
        run_loads(lab, lb, rep, args, record)
    except Exception as e:  # keep going with the other cells
        log(f"   ERROR {mode}: {e}")
        record.errors.append(str(e)[:1000])
    finally:
        if lb is not None:
            lb.stop()
            left = leftovers(lab)
            if left:
                record.leftovers.append(left)
                log(f"   {mode} left behind: {', '.join(left)}")
        if mode == "lbtui-dsr":
            dsr_down(lab)
        lab.down()


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    load_start = os.getloadavg()
    # lbtui-dsr is IPv4 only: IPIP carries IPv4 (an IPv6 proxy cannot use forwarding = "ipip")
    cells = [
        (mode, family, backends)
        for backends in args.backends
        for family in args.family
        for mode in args.modes
        if not (mode == "lbtui-dsr" and family == IPV6)
    ]
    records = {cell_name(*c): ModeRecord() for c in cells}
    skipped = 0
    for rep in range(1, args.reps + 1):
        shift = (rep - 1) % len(cells)
        order = cells[shift:] + cells[:shift]  # rotate so slow drift hits every cell alike
        for mode, family, backends in order:
            if time.monotonic() - started > args.max_minutes * 60:
                skipped += 1
                continue
            log(f"== rep {rep}/{args.reps} mode {mode} over {FAMILY_NAMES[family]}, {backends} backend(s)")
            run_cell(mode, family, backends, rep, args, records[cell_name(mode, family, backends)])
    if skipped:
        log(f"time budget of {args.max_minutes} min used up: {skipped} cells skipped")
    return {
        "info": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "args": {k: v for k, v in vars(args).items() if k != "out"},
            "elapsed_s": round(time.monotonic() - started, 1),
            "skipped_cells": skipped,
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "modes": {
            cell_name(*c): {
                "mode": c[0],
                "family": c[1],
                "backends": c[2],
                "samples": r.samples,
                "spread": r.spread,
                "ready_s": r.ready_s,
                "leftovers": r.leftovers,
                "errors": r.errors,
                "xdp_attach": r.xdp_attach,
                "bpf_stats": r.bpf,
            }
            for c, r in ((c, records[cell_name(*c)]) for c in cells)
        },
    }


# ---------------------------------------------------------------- report


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _fmt(x: float | None, spec: str = ",.0f") -> str:
    return "—" if x is None else format(x, spec)


def median_rps(rec: dict[str, Any] | None, load: str) -> float | None:
    return None if rec is None else _median([s["rps"] for s in rec["samples"].get(load, [])])


def same_rep_ratios(rec: dict[str, Any], other: dict[str, Any] | None, load: str) -> list[float]:
    """req/s of ``rec`` over ``other``'s in each repetition both have a sample of."""
    if other is None:
        return []
    theirs = {s["rep"]: s["rps"] for s in other["samples"].get(load, []) if s["rps"]}
    return [s["rps"] / theirs[s["rep"]] for s in rec["samples"].get(load, []) if s["rep"] in theirs]


def _row(label: str, rec: dict[str, Any], loads: list[str], ceiling: dict[str, float | None]) -> str:
    row = f"| {label} |"
    for load in loads:
        samples = rec["samples"].get(load, [])
        if not samples:
            row += " — | — | — | — | — |"
            continue
        rps = _median([s["rps"] for s in samples])
        c = ceiling[load]
        ratio = f"{rps / c:.2f}" if rps is not None and c else "—"
        row += (
            f" {_fmt(rps)} | {ratio} | {_fmt(_median([s['p50_us'] for s in samples]))} |"
            f" {_fmt(_median([s['p99_us'] for s in samples]))} | {sum(s['errors'] for s in samples)} |"
        )
    return row


def groups(report: dict[str, Any]) -> list[tuple[int, int]]:
    """(backends, family) in the order of the arguments."""
    a = report["info"]["args"]
    return [(b, f) for b in a["backends"] for f in a["family"]]


def results_tables(report: dict[str, Any]) -> list[str]:
    modes, a = report["modes"], report["info"]["args"]
    loads = a["loads"]
    lines = []
    for backends, family in groups(report):
        lines += [f"**{backends} backend(s), {FAMILY_NAMES[family]}**", ""]
        head, sep = "| mode |", "|---|"
        for load in loads:
            head += f" {load} req/s | x | p50 µs | p99 µs | errors |"
            sep += "---:|---:|---:|---:|---:|"
        lines += [head, sep]
        direct = modes.get(cell_name("direct", family, backends))
        ceiling = {load: median_rps(direct, load) for load in loads}
        for mode in a["modes"]:
            rec = modes.get(cell_name(mode, family, backends))
            if rec is not None:  # lbtui-dsr has no IPv6 cell
                lines.append(_row(mode, rec, loads, ceiling))
        lines.append("")
    return lines


def target_tables(report: dict[str, Any]) -> list[str]:
    """Each lbtui mode's req/s over each other mode's (medians), with issue 16's targets."""
    modes, a = report["modes"], report["info"]["args"]
    lbtuis = [m for m in a["modes"] if m in LBTUI_MODES]
    others = [m for m in TARGETS if m in a["modes"]]
    if not lbtuis or not others:
        return []
    lines = [
        "lbtui's req/s over each other mode's (ratio of the medians; the target after ≥; in brackets the"
        " lowest and highest ratio within one repetition; errors: lbtui's wrk errors in that load plus its"
        " failed cells):",
        "",
        "| backends | family | mode | load | req/s | " + " | ".join(f"÷ {o}" for o in others) + " | errors |",
        "|---:|---|---|---|---:|" + "---|" * len(others) + "---:|",
    ]
    for backends, family in groups(report):
        for mode in lbtuis:
            rec = modes.get(cell_name(mode, family, backends))
            if rec is None:
                continue
            for load in a["loads"]:
                rps = median_rps(rec, load)
                cols = []
                for other in others:
                    base = median_rps(modes.get(cell_name(other, family, backends)), load)
                    target = TARGETS[other][load]
                    if rps is None or not base:
                        cols.append("—")
                        continue
                    ratio = rps / base
                    per_rep = same_rep_ratios(rec, modes.get(cell_name(other, family, backends)), load)
                    spread = f" [{min(per_rep):.2f}–{max(per_rep):.2f}]" if len(per_rep) > 1 else ""
                    cols.append(f"{ratio:.2f} (≥ {target}) {'pass' if ratio >= target else 'FAIL'}{spread}")
                errors = sum(x["errors"] for x in rec["samples"].get(load, [])) + len(rec["errors"])
                lines.append(
                    f"| {backends} | {FAMILY_NAMES[family]} | {mode} | {load} | {_fmt(rps)} | "
                    + " | ".join(cols)
                    + f" | {errors} |"
                )
    return lines + [""]


def bpf_tables(report: dict[str, Any]) -> list[str]:
    """The kernel's counters of each lbtui cell's programs per load: runs and ns per run, summed over
    the repetitions (runs per request from wrk's request count)."""
    modes, a = report["modes"], report["info"]["args"]
    lines: list[str] = []
    for backends, family in groups(report):
        for mode in a["modes"]:
            rec = modes.get(cell_name(mode, family, backends))
            if rec is None or not rec["bpf_stats"]:
                continue
            for load in a["loads"]:
                entries = [e for e in rec["bpf_stats"] if e["load"] == load]
                requests = sum(e["requests"] for e in entries)
                totals: dict[str, list[int]] = {}
                for e in entries:
                    for name, p in e["programs"].items():
                        t = totals.setdefault(name, [0, 0])
                        t[0] += p["run_cnt"]
                        t[1] += p["run_time_ns"]
                ran = {n: t for n, t in sorted(totals.items()) if t[0]}
                if not lines:
                    lines += [
                        "The kernel's per-program counters (run_cnt, run_time_ns; on while the lbtui cells'"
                        " loads ran, by BPF_ENABLE_STATS) of the programs the lbtui process held, deltas over"
                        " each load, summed over the repetitions:",
                        "",
                        "| backends | family | mode | load | program | runs | runs / request | ns / run |",
                        "|---:|---|---|---|---|---:|---:|---:|",
                    ]
                for name, (runs, ns) in ran.items():
                    per_req = f"{runs / requests:.1f}" if requests else "—"
                    lines.append(
                        f"| {backends} | {FAMILY_NAMES[family]} | {mode} | {load} | {name} | {runs:,} |"
                        f" {per_req} | {ns / runs:,.0f} |"
                    )
                if not ran:
                    lines.append(
                        f"| {backends} | {FAMILY_NAMES[family]} | {mode} | {load} | (none ran) | 0 | — | — |"
                    )
    return lines + [""] if lines else []


FAST_PATH_SHOWN = ("xdp_packets", "fast_path_forwarded", "tc_snat", "fast_path_reply_forwarded")


def counter_table(report: dict[str, Any]) -> list[str]:
    """lbtui's own counters of its packets per load, summed over the repetitions: how many went the
    fast path each way, and every fallback reason that moved."""
    modes, a = report["modes"], report["info"]["args"]
    lines = [
        "lbtui's global counters (lb_global_stats) moved during each load, summed over the repetitions:",
        "",
        "| backends | family | mode | load | " + " | ".join(FAST_PATH_SHOWN) + " | fallbacks |",
        "|---:|---|---|---|" + "---:|" * len(FAST_PATH_SHOWN) + "---|",
    ]
    rows = 0
    for backends, family in groups(report):
        for mode in a["modes"]:
            rec = modes.get(cell_name(mode, family, backends))
            if rec is None:
                continue
            for load in a["loads"]:
                entries = [e for e in rec["bpf_stats"] if e["load"] == load and "counters" in e]
                if not entries:
                    continue
                total: dict[str, int] = {}
                for e in entries:
                    for n, v in e["counters"].items():
                        total[n] = total.get(n, 0) + v
                fallbacks = ", ".join(
                    f"{n} {v:,}"
                    for n, v in sorted(total.items())
                    if n.startswith("fast_path_") and n not in FAST_PATH_SHOWN
                )
                lines.append(
                    f"| {backends} | {FAMILY_NAMES[family]} | {mode} | {load} | "
                    + " | ".join(f"{total.get(n, 0):,}" for n in FAST_PATH_SHOWN)
                    + f" | {fallbacks or '—'} |"
                )
                rows += 1
    return lines + [""] if rows else []


def markdown(report: dict[str, Any]) -> str:
    info, modes = report["info"], report["modes"]
    a = info["args"]
    lines = [
        f"{info['date']}, kernel {info['kernel']}, {info['cpus']} CPUs; {'/'.join(map(str, a['backends']))}"
        f" nginx backends (1 worker each); wrk -t{a['threads']} -c{a['conns']} (connlat: -t1 -c1),"
        f" {a['duration']} s per load, {a['reps']} rep(s), medians; x = ratio of req/s to `direct` over the"
        f" same family and backends; {info['elapsed_s']:.0f} s; load average"
        f" {info['loadavg_start'][0]} at the start, {info['loadavg_end'][0]} at the end.",
        "",
    ]
    lines += results_tables(report)
    lines += target_tables(report)
    lines += bpf_tables(report)
    lines += counter_table(report)
    for name, rec in modes.items():
        notes = []
        if rec["spread"]:
            notes.append("spread of 12 requests " + json.dumps(rec["spread"][0], sort_keys=True))
        if rec["ready_s"]:
            notes.append(f"ready after {_fmt(_median(rec['ready_s']), '.2f')} s")
        if rec["xdp_attach"] and rec["xdp_attach"][0]:
            notes.append("XDP " + ", ".join(f"{i}: {m}" for i, m in sorted(rec["xdp_attach"][0].items())))
        notes.append(f"leftovers: {rec['leftovers'][0]}" if rec["leftovers"] else "no leftovers")
        if rec["errors"]:
            notes.append(f"ERRORS: {rec['errors'][0][:300]}")
        lines.append(f"- `{name}`: " + "; ".join(notes))
    if info["skipped_cells"]:
        lines.append(f"- time budget used up: {info['skipped_cells']} cells skipped")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--loads", default=",".join(LOADS), help=f"comma list of {', '.join(LOADS)}")
    ap.add_argument(
        "--family", default="4,6", help="address families, comma list of 4, 6 (each mode runs over each)"
    )
    ap.add_argument("--duration", type=int, default=5, help="seconds per load (integer, wrk wants one)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--backends", default="1,3", help="comma list of backend counts (each mode runs with each)"
    )
    ap.add_argument("--conns", type=int, default=8, help="wrk connections")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument(
        "--warmup", type=int, default=1, help="seconds of keep-alive load before measuring (0 = none)"
    )
    ap.add_argument("--prefix", default="lbb", help="lab name prefix (max 4 chars)")
    ap.add_argument("--python", default=sys.executable, help="Python that runs `-m lbtui` (mode lbtui)")
    ap.add_argument("--ready-timeout", type=float, default=30.0, help="seconds for an LB to start answering")
    ap.add_argument("--max-minutes", type=float, default=30.0, help="stop starting new cells after this")
    ap.add_argument(
        "--lbtui-xdp-mode",
        default="",
        choices=("", "auto", "native", "generic"),
        help="settings.xdp_mode of mode lbtui (default: lbtui's own); the other lbtui modes run generic",
    )
    ap.add_argument(
        "--backend-links",
        default="bridge",
        choices=("bridge", "veth-gro"),
        help="the lab's backend side: the bridge, or one routed veth per backend with GRO on at the "
        "backend's end and the client's (so the LB's veths take native XDP redirects; not with lbtui-dsr)",
    )
    ap.add_argument(
        "--no-bpf-stats",
        dest="bpf_stats",
        action="store_false",
        help="do not enable and read the kernel's per-program counters in the lbtui cells",
    )
    ap.add_argument("--out", help="JSON output path (default: a new file under the system temp dir)")
    args = ap.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.loads = [x.strip() for x in args.loads.split(",") if x.strip()]
    families = [x.strip() for x in args.family.split(",") if x.strip()]
    bad = [m for m in args.modes if m not in MODES] + [x for x in args.loads if x not in LOADS]
    bad += [f for f in families if f not in ("4", "6")]
    if bad or not args.modes or not args.loads or not families:
        ap.error(f"unknown or empty modes/loads/families: {bad}")
    args.family = sorted({int(f) for f in families})
    try:
        args.backends = sorted({int(b) for b in args.backends.split(",") if b.strip()})
    except ValueError:
        ap.error(f"--backends wants a comma list of numbers, not {args.backends!r}")
    if not args.backends or not all(1 <= b <= MAX_BACKENDS for b in args.backends):
        ap.error(f"--backends: counts between 1 and {MAX_BACKENDS} (the lab's backend namespaces)")
    if not (1 <= args.duration <= 120 and 1 <= args.reps <= 20 and 1 <= args.conns <= 1024):
        ap.error("keep it bounded: 1 <= duration <= 120, 1 <= reps <= 20, 1 <= conns <= 1024")
    if args.backend_links != "bridge" and "lbtui-dsr" in args.modes:
        ap.error("lbtui-dsr's return path needs the backends' bridge: --backend-links bridge")
    if not (0 <= args.warmup <= 30 and 1 <= args.threads <= 16 and 0 < args.max_minutes <= 240):
        ap.error("keep it bounded: 0 <= warmup <= 30, 1 <= threads <= 16, 0 < max-minutes <= 240")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        log("needs root (network namespaces, nftables, XDP)")
        return 2
    tools = {"ip", "ethtool", "ping", "curl", "wrk", "nginx"}
    for m in args.modes:
        tools.update(REQUIRED_TOOLS[m])
        if m in LBTUI_MODES and args.bpf_stats:
            tools.add("bpftool")
    missing = sorted(t for t in tools if shutil.which(t) is None)
    if missing:
        log(f"missing tools: {', '.join(missing)}")
        return 2

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through run_cell's finally: the lab is removed

    signal.signal(signal.SIGTERM, on_term)
    # lbtui's runtime overrides (settings.state_file) of this run only, removed however the run ends
    with tempfile.TemporaryDirectory(prefix="lbtui-bench-state-") as state_dir:
        args.state_dir = state_dir
        report = run(args)
    out = args.out or os.path.join(
        tempfile.gettempdir(), f"lbtui-bench-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    )
    with open(out, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    print(markdown(report))
    log(f"samples written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
