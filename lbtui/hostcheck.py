# SPDX-License-Identifier: Apache-2.0
"""Host checks: can this configuration run on this host now? (`lbtui --check`, and at every start)

Each check gives ok, warning or error; an error carries the exit code it stands for (lbtui.exitcodes:
HOST for what the host must fix, TEMPORARY for a busy resource). What is checked, in order:
privileges, BCC, the kernel (version, headers for BCC, BTF), the client-facing interfaces, IPv4
forwarding (NAT mode forwards every DNATed packet), how each VIP reaches the host (a local address
or routed to it; docs/deployment.md), the memory the maps take (settings.max_connections), the
control socket, the metrics listener and the access log.
Everything the checks read goes through a `Probe`, so tests can stand in for the host.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import socket
import stat
import subprocess
from dataclasses import dataclass

from lbtui import exitcodes
from lbtui.config import Config

OK, WARNING, ERROR = "ok", "warning", "error"
MIN_KERNEL = (5, 15)
IP_FORWARD = "net.ipv4.ip_forward"
MEMORY_SHARE = 0.5  # the maps and the sweep buffers may take at most this share of the host's memory


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warning | error
    message: str
    key_path: str = ""  # the configuration key the check is about, when there is one
    exit_code: int = exitcodes.OK  # for errors: what it stands for


def ok(name: str, message: str, key_path: str = "") -> Check:
    return Check(name, OK, message, key_path)


def warning(name: str, message: str, key_path: str = "") -> Check:
    return Check(name, WARNING, message, key_path)


def error(name: str, message: str, key_path: str = "", code: int = exitcodes.HOST) -> Check:
    return Check(name, ERROR, message, key_path, code)


class Probe:
    """What the checks read from the host (tests replace it)."""

    def euid(self) -> int:
        return os.geteuid()

    def bcc_importable(self) -> bool:
        try:
            import bcc  # noqa: F401
        except ImportError:
            return False
        return True

    def mem_total_bytes(self) -> int | None:
        try:
            with open("/proc/meminfo") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
        except (OSError, StopIteration, ValueError, IndexError):
            return None

    def kernel_release(self) -> str:
        return os.uname().release

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def sysctl(self, name: str) -> str | None:
        """`name` dotted ("net.ipv4.ip_forward") or as a path under /proc/sys (interface names may
        hold dots)."""
        try:
            with open("/proc/sys/" + (name if "/" in name else name.replace(".", "/"))) as f:
                return f.read().strip()
        except OSError:
            return None

    def interface_state(self, name: str) -> str | None:
        """None if there is no such interface here, else its operstate ("up", "down", "unknown")."""
        try:
            socket.if_nametoindex(name)
        except OSError:
            return None
        try:
            with open(f"/sys/class/net/{name}/operstate") as f:
                return f.read().strip()
        except OSError:
            return "unknown"

    def local_address_interfaces(self, ip: str) -> list[str] | None:
        """The interfaces holding `ip` as a local address; None when it is not local."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((ip, 0))  # only a local address can be bound (unless ip_nonlocal_bind)
            except OSError:
                return None
        try:
            out = subprocess.run(
                ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=10
            )
            links = json.loads(out.stdout or "[]")
        except (OSError, ValueError, subprocess.SubprocessError):
            return []
        return [link["ifname"] for link in links for a in link.get("addr_info", []) if a.get("local") == ip]

    def bind_problem(self, host: str, port: int) -> int | None:
        """The errno binding host:port (TCP) would fail with now, or None if it would work."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
        except OSError as exc:
            return exc.errno or errno.EINVAL
        return None

    def instance_answers(self, path: str) -> bool:
        """True if something accepts connections on the unix socket `path` (a running instance)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            try:
                s.connect(path)
            except OSError:
                return False
        return True

    def is_socket(self, path: str) -> bool:
        try:
            return stat.S_ISSOCK(os.stat(path).st_mode)
        except OSError:
            return False

    def writable_dir(self, path: str) -> bool:
        """Whether `path` exists as a writable directory or could be created (nearest ancestor writable)."""
        current = os.path.abspath(path)
        while not os.path.exists(current):
            parent = os.path.dirname(current)
            if parent == current:
                return False
            current = parent
        return os.path.isdir(current) and os.access(current, os.W_OK | os.X_OK)


def run_checks(config: Config, probe: Probe | None = None, socket_path: str | None = None) -> list[Check]:
    """Every host check for `config` (socket_path: a --socket that replaces settings.control_socket)."""
    p = probe or Probe()
    checks = [_privileges(p), _bcc(p), _kernel(p), *_interfaces(config, p), _forwarding(config, p)]
    checks += _accept_local(config, p)
    checks += _vips(config, p)
    checks.append(_memory(config, p))
    socket_path = socket_path or config.settings.control_socket
    instance_running = p.instance_answers(socket_path)
    checks.append(_control_socket(socket_path, p, instance_running))
    checks.append(_metrics(config, p, instance_running))
    checks += _access_log(config, p)
    if config.settings.read_only.socket is not None:
        checks.append(_read_only_socket(config))
    return checks


def exit_code(checks: list[Check]) -> int:
    """HOST if anything the host must fix failed, else TEMPORARY if only busy resources did, else OK."""
    codes = {c.exit_code for c in checks if c.status == ERROR}
    for code in (exitcodes.CONFIG, exitcodes.HOST, exitcodes.TEMPORARY):
        if code in codes:
            return code
    return exitcodes.OK


def manage_sysctls(config: Config, probe: Probe | None = None) -> list[str]:
    """With settings.manage_sysctls, turn IPv4 forwarding on, and accept_local on the interfaces of
    DSR proxies; what was changed (for the log)."""
    p = probe or Probe()
    if not config.settings.manage_sysctls or not config.proxies:
        return []
    changed = []
    if p.sysctl(IP_FORWARD) != "1":
        with open("/proc/sys/" + IP_FORWARD.replace(".", "/"), "w") as f:
            f.write("1\n")
        changed.append(
            f"settings.manage_sysctls: set {IP_FORWARD} = 1 (NAT mode forwards every balanced packet)"
        )
    for ifname in _dsr_interfaces(config):
        if _accept_local_of(p, ifname) != "1":
            with open(f"/proc/sys/net/ipv4/conf/{ifname}/accept_local", "w") as f:
                f.write("1\n")
            changed.append(
                f"settings.manage_sysctls: set net.ipv4.conf.{ifname}.accept_local = 1 "
                '(forwarding = "ipip": the kernel forwards packets with this host\'s own source)'
            )
    return changed


def _dsr_interfaces(config: Config) -> list[str]:
    return sorted({n for proxy in config.proxies if proxy.forwarding == "ipip" for n in proxy.interfaces})


def _accept_local_of(p: Probe, ifname: str) -> str:
    """The effective accept_local of an interface (the kernel ORs `all` and the interface's)."""
    values = (p.sysctl("net.ipv4.conf.all.accept_local"), p.sysctl(f"net/ipv4/conf/{ifname}/accept_local"))
    return "1" if "1" in values else "0"


def _accept_local(config: Config, p: Probe) -> list[Check]:
    """DSR: the XDP program hands the kernel an IPIP packet whose source is this host's address, which
    the kernel forwards only with accept_local (docs/scale-out.md#the-load-balancer-hosts)."""
    checks = []
    for ifname in _dsr_interfaces(config):
        name = f"net.ipv4.conf.{ifname}.accept_local"
        if _accept_local_of(p, ifname) == "1":
            checks.append(ok("accept_local", f"{name} = 1"))
        elif config.settings.manage_sysctls:
            checks.append(
                ok("accept_local", f"{name} = 0; lbtui sets it to 1 at start (settings.manage_sysctls)")
            )
        else:
            checks.append(
                error(
                    "accept_local",
                    f'{name} = 0: with forwarding = "ipip" the kernel must forward the encapsulated '
                    f"packets, whose source is this host. Set it (sysctl -w {name}=1) or set "
                    "settings.manage_sysctls = true",
                )
            )
    return checks


# ---- the checks ---------------------------------------------------------------------------------


def _privileges(p: Probe) -> Check:
    if p.euid() == 0:
        return ok("privileges", "running as root")
    return error(
        "privileges", "lbtui must run as root (it loads BPF programs and changes interfaces); try sudo"
    )


def _bcc(p: Probe) -> Check:
    if p.bcc_importable():
        return ok("bcc", "the BCC Python module is importable")
    return error(
        "bcc",
        "the BCC Python module is not importable: install python3-bpfcc and run lbtui with "
        "/usr/bin/python3 or a venv made with --system-site-packages (the Debian package does this)",
    )


def _kernel(p: Probe) -> Check:
    release = p.kernel_release()
    numbers = tuple(int(n) for n in release.split("-")[0].split(".")[:2] if n.isdigit())
    if numbers < MIN_KERNEL:
        return error(
            "kernel", f"kernel {release} is older than {MIN_KERNEL[0]}.{MIN_KERNEL[1]}, which lbtui needs"
        )
    build = f"/lib/modules/{release}/build"
    btf = "BTF present" if p.exists("/sys/kernel/btf/vmlinux") else "no BTF (not needed)"
    if p.exists(f"{build}/include"):
        return ok("kernel", f"kernel {release}; headers for BCC at {build}; {btf}")
    if p.exists("/sys/kernel/kheaders.tar.xz"):
        return ok("kernel", f"kernel {release}; headers for BCC from /sys/kernel/kheaders.tar.xz; {btf}")
    return error(
        "kernel",
        f"no kernel headers for {release}: BCC compiles the programs against {build} (install "
        f"linux-headers-{release}, or linux-headers-amd64 for Debian's kernel, or load the kheaders "
        "module; docs/deployment.md, Troubleshooting)",
    )


def _interfaces(config: Config, p: Probe) -> list[Check]:
    checks = []
    for i, proxy in enumerate(config.proxies):
        for j, name in enumerate(proxy.interfaces):
            key = f"proxy[{i}].interfaces[{j}]"
            state = p.interface_state(name)
            if state is None:
                checks.append(
                    error(
                        "interfaces",
                        f"{name} (proxy {proxy.name}) does not exist here; `ip -br link` lists them",
                        key,
                    )
                )
            elif state == "down":
                checks.append(warning("interfaces", f"{name} (proxy {proxy.name}) is down", key))
    if not checks:
        names = sorted({n for proxy in config.proxies for n in proxy.interfaces})
        checks.append(ok("interfaces", f"{', '.join(names)} present"))
    return checks


def _forwarding(config: Config, p: Probe) -> Check:
    if not config.proxies:
        return ok("ip_forward", "no proxies: forwarding not needed")
    value = p.sysctl(IP_FORWARD)
    if value == "1":
        return ok("ip_forward", f"{IP_FORWARD} = 1")
    if config.settings.manage_sysctls:
        return ok(
            "ip_forward", f"{IP_FORWARD} = {value}; lbtui sets it to 1 at start (settings.manage_sysctls)"
        )
    return error(
        "ip_forward",
        f"{IP_FORWARD} = {value}: NAT mode forwards every balanced packet, so the host must forward IPv4. "
        f"Set it (sysctl -w {IP_FORWARD}=1, and in /etc/sysctl.d/ to keep it) or set "
        "settings.manage_sysctls = true",
    )


def _vips(config: Config, p: Probe) -> list[Check]:
    checks = []
    for i, proxy in enumerate(config.proxies):
        key = f"proxy[{i}].vip"
        service = f"{proxy.port}/{proxy.protocol}"
        holders = p.local_address_interfaces(proxy.vip)
        if holders is None:
            checks.append(
                warning(
                    "vip",
                    f"{proxy.name}: {proxy.vip} is not a local address, so nothing here answers ARP for it: "
                    f"the network must route it to this host (a static route or BGP) and it must arrive on "
                    f"{', '.join(proxy.interfaces)}",
                    key,
                )
            )
            continue
        where = f" on {', '.join(holders)}" if holders else ""
        checks.append(
            ok(
                "vip",
                f"{proxy.name}: {proxy.vip} is a local address{where}: the host answers ARP for it; "
                f"only {service} is balanced, its other ports reach this host's own services",
                key,
            )
        )
    return checks


def _memory(config: Config, p: Probe) -> Check:
    """settings.max_connections sizes a preallocated conntrack table: refuse one the host cannot hold
    (a configuration error: the file asks for more than this host has)."""
    from lbtui.dataplane.port import DataplaneSpec  # here: `lbtui --version` need not load numpy

    s, key = config.settings, "settings.max_connections"
    n, total = s.max_connections, p.mem_total_bytes()
    spec = DataplaneSpec(
        table_size=s.table_size,
        conntrack_entries=2 * n,
        transient_entries=2 * s.embryonic_connections,
        conntrack6_entries=2 * s.ipv6_max_connections,
        transient6_entries=2 * s.ipv6_embryonic_connections,
    )
    need = spec.memory_bytes()
    if total is None:
        return warning("memory", "cannot read MemTotal from /proc/meminfo: the sizes are unchecked", key)
    if need <= total * MEMORY_SHARE:
        return ok("memory", f"the maps and their sweep take about {need >> 20} MiB of {total >> 20} MiB", key)
    fit = n * int(total * MEMORY_SHARE) // need
    return error(
        "memory",
        f"max_connections = {n} needs about {need >> 20} MiB (conntrack and its sweep), more than half of "
        f"this host's {total >> 20} MiB: at most about {fit} fit",
        key,
        exitcodes.CONFIG,
    )


def _control_socket(path: str, p: Probe, running: bool) -> Check:
    key = "settings.control_socket"
    if running:
        return warning(
            "control_socket",
            f"an instance is running on {path}: this file can be loaded into it (lbtui ctl reload); "
            "a second instance on this socket would not start",
            key,
        )
    if p.exists(path) and not p.is_socket(path):
        return error("control_socket", f"{path} exists and is not a socket", key)
    if not p.writable_dir(os.path.dirname(path)):
        return error("control_socket", f"cannot create {path}: its directory is not writable", key)
    return ok("control_socket", f"{path} usable", key)


def _read_only_socket(config: Config) -> Check:
    from lbtui.control_socket import resolve_group

    ro = config.settings.read_only
    try:
        gid = resolve_group(ro.group or "")
    except KeyError:
        return error(
            "read_only_socket", f"no group named {ro.group!r} on this host", "settings.read_only.group"
        )
    return ok(
        "read_only_socket", f"{ro.socket} for the members of group {ro.group} ({gid})", "settings.read_only"
    )


def _metrics(config: Config, p: Probe, instance_running: bool) -> Check:
    from lbtui.observe.metrics import parse_listen

    m = config.settings.metrics
    key = "settings.metrics.listen"
    if not m.enabled:
        return ok("metrics", "disabled")
    if instance_running:
        return ok("metrics", f"{m.listen}: not checked (the running instance may hold it)", key)
    host, port = parse_listen(m.listen)
    problem = p.bind_problem(host, port)
    if problem is None:
        return ok("metrics", f"{m.listen} free", key)
    if problem == errno.EADDRINUSE:
        return error(
            "metrics",
            f"{m.listen} is in use by another program (`ss -ltnp 'sport = :{port}'` shows which); "
            "systemd retries, or choose another port",
            key,
            exitcodes.TEMPORARY,
        )
    reason = os.strerror(problem)
    if problem == errno.EADDRNOTAVAIL:
        reason = f"{host} is not an address of this host"
    return error("metrics", f"cannot listen on {m.listen}: {reason}", key)


def _access_log(config: Config, p: Probe) -> list[Check]:
    a = config.settings.access_log
    checks = []
    if a.file and not p.writable_dir(os.path.dirname(os.path.abspath(a.file))):
        checks.append(
            error(
                "access_log",
                f"cannot create {a.file}: its directory is not writable",
                "settings.access_log.file",
            )
        )
    syslog = a.syslog
    if syslog and syslog.startswith("/") and not p.is_socket(syslog):
        checks.append(
            error("access_log", f"syslog socket {syslog} does not exist", "settings.access_log.syslog")
        )
    if not checks:
        targets = [t for t in (a.file, syslog, "stdout" if a.stdout else None) if t]
        checks.append(ok("access_log", f"writes to {', '.join(targets)}" if targets else "off"))
    return checks


# ---- output -------------------------------------------------------------------------------------


def report_text(path: str, config: Config, checks: list[Check]) -> str:
    backends = sum(len(proxy.backends) for proxy in config.proxies)
    lines = [f"{path}: configuration ok ({len(config.proxies)} proxies, {backends} backends)"]
    for c in checks:
        where = f"{c.key_path}: " if c.key_path and c.status != OK else ""
        lines.append(f"{c.status:8} {c.name:15} {where}{c.message}")
    code = exit_code(checks)
    errors = sum(c.status == ERROR for c in checks)
    warnings = sum(c.status == WARNING for c in checks)
    verdict = "ready to run" if code == exitcodes.OK else f"exit {code}: {exitcodes.MEANING[code]}"
    lines.append(f"{_count(errors, 'error')}, {_count(warnings, 'warning')}: {verdict}")
    return "\n".join(lines) + "\n"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def report_json(path: str, checks: list[Check], config_issues: list[dict[str, str]] | None = None) -> str:
    code = exitcodes.CONFIG if config_issues else exit_code(checks)
    return json.dumps(
        {
            "file": path,
            "ok": code == exitcodes.OK,
            "exit_code": code,
            "meaning": exitcodes.MEANING[code],
            "config_errors": config_issues or [],
            "checks": [dataclasses.asdict(c) for c in checks],
        },
        indent=2,
    )
