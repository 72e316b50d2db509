# SPDX-License-Identifier: Apache-2.0
"""Host checks against a stand-in host: each problem's message, key path and exit code.

The same checks on real namespaces (no forwarding, a missing interface, a busy port) run in
tests/e2e/test_hostcheck.py.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import socket

from lbtui import exitcodes, hostcheck
from lbtui.config import parse_config
from lbtui.hostcheck import ERROR, OK, WARNING, Probe

CONFIG = """
[settings]
control_socket = "/run/lbtui/test.sock"
[settings.metrics]
listen = "127.0.0.1:17100"
[[proxy]]
name = "web"
interfaces = ["eth0", "eth1"]
vip = "10.0.0.1"
port = 80
[[proxy.backend]]
address = "10.0.2.11:8080"
weight = 1
"""


@dataclasses.dataclass
class FakeHost(Probe):
    root: bool = True
    bcc: bool = True
    release: str = "6.1.0-18-amd64"
    paths: tuple[str, ...] = ("/lib/modules/6.1.0-18-amd64/build/include", "/sys/kernel/btf/vmlinux")
    forwarding: str = "1"
    links: dict[str, str] = dataclasses.field(default_factory=lambda: {"eth0": "up", "eth1": "up"})
    local: dict[str, list[str]] = dataclasses.field(default_factory=lambda: {"10.0.0.1": ["eth0"]})
    busy_port: int | None = None
    running: bool = False
    accept_local: dict[str, str] = dataclasses.field(default_factory=dict)  # "all"/interface -> value
    memory: int | None = 8 << 30

    def mem_total_bytes(self) -> int | None:
        return self.memory

    def euid(self) -> int:
        return 0 if self.root else 1000

    def bcc_importable(self) -> bool:
        return self.bcc

    def kernel_release(self) -> str:
        return self.release

    def exists(self, path: str) -> bool:
        return path in self.paths

    def sysctl(self, name: str) -> str | None:
        if name == "net.ipv4.ip_forward":
            return self.forwarding
        for scope in ("all", *self.links):
            if name in (f"net.ipv4.conf.{scope}.accept_local", f"net/ipv4/conf/{scope}/accept_local"):
                return self.accept_local.get(scope, "0")
        return None

    def interface_state(self, name: str) -> str | None:
        return self.links.get(name)

    def local_address_interfaces(self, ip: str) -> list[str] | None:
        return self.local.get(ip)

    def bind_problem(self, host: str, port: int) -> int | None:
        return errno.EADDRINUSE if port == self.busy_port else None

    def instance_answers(self, path: str) -> bool:
        return self.running

    def is_socket(self, path: str) -> bool:
        return False

    def writable_dir(self, path: str) -> bool:
        return True


def checks(host: FakeHost, text: str = CONFIG) -> dict[str, list[hostcheck.Check]]:
    by_name: dict[str, list[hostcheck.Check]] = {}
    for c in hostcheck.run_checks(parse_config(text, "test.toml"), host):
        by_name.setdefault(c.name, []).append(c)
    return by_name


def code(host: FakeHost, text: str = CONFIG) -> int:
    return hostcheck.exit_code(hostcheck.run_checks(parse_config(text, "test.toml"), host))


def test_a_ready_host_passes() -> None:
    found = checks(FakeHost())
    assert all(c.status == OK for cs in found.values() for c in cs), found
    assert code(FakeHost()) == exitcodes.OK
    assert "local address on eth0" in found["vip"][0].message
    assert (
        "only 80/tcp is balanced, its other ports reach this host's own services" in found["vip"][0].message
    )


def test_missing_interface_is_a_host_error_with_its_key_path() -> None:
    found = checks(FakeHost(links={"eth0": "up"}))["interfaces"]
    assert [(c.status, c.key_path) for c in found] == [(ERROR, "proxy[0].interfaces[1]")]
    assert "eth1 (proxy web) does not exist here" in found[0].message
    assert code(FakeHost(links={"eth0": "up"})) == exitcodes.HOST
    assert checks(FakeHost(links={"eth0": "up", "eth1": "down"}))["interfaces"][0].status == WARNING


def test_forwarding_off_is_an_error_unless_lbtui_may_set_it() -> None:
    found = checks(FakeHost(forwarding="0"))["ip_forward"][0]
    assert found.status == ERROR and found.exit_code == exitcodes.HOST
    assert "net.ipv4.ip_forward = 0" in found.message and "settings.manage_sysctls = true" in found.message
    managed = CONFIG.replace("[settings]\n", "[settings]\nmanage_sysctls = true\n")
    found = checks(FakeHost(forwarding="0"), managed)["ip_forward"][0]
    assert found.status == OK and "lbtui sets it to 1 at start" in found.message


def test_a_busy_metrics_port_is_temporary() -> None:
    found = checks(FakeHost(busy_port=17100))["metrics"][0]
    assert (found.status, found.key_path, found.exit_code) == (
        ERROR,
        "settings.metrics.listen",
        exitcodes.TEMPORARY,
    )
    assert "127.0.0.1:17100 is in use by another program" in found.message
    assert code(FakeHost(busy_port=17100)) == exitcodes.TEMPORARY
    # a host problem outranks a busy port: retrying alone would not help
    assert code(FakeHost(busy_port=17100, forwarding="0")) == exitcodes.HOST


def test_a_running_instance_is_not_a_busy_port() -> None:
    found = checks(FakeHost(busy_port=17100, running=True))
    assert found["metrics"][0].status == OK
    assert found["control_socket"][0].status == WARNING
    assert code(FakeHost(busy_port=17100, running=True)) == exitcodes.OK


def test_kernel_problems() -> None:
    assert checks(FakeHost(paths=()))["kernel"][0].status == ERROR
    assert "no kernel headers for 6.1.0-18-amd64" in checks(FakeHost(paths=()))["kernel"][0].message
    with_kheaders = FakeHost(paths=("/sys/kernel/kheaders.tar.xz",))
    assert checks(with_kheaders)["kernel"][0].status == OK
    assert "no BTF" in checks(with_kheaders)["kernel"][0].message
    assert checks(FakeHost(release="5.10.0-28-amd64"))["kernel"][0].status == ERROR
    assert checks(FakeHost(root=False))["privileges"][0].status == ERROR
    assert checks(FakeHost(bcc=False))["bcc"][0].status == ERROR


def test_a_routed_vip_is_a_warning_that_says_how_it_must_arrive() -> None:
    found = checks(FakeHost(local={}))["vip"][0]
    assert found.status == WARNING and found.key_path == "proxy[0].vip"
    assert "not a local address" in found.message and "route it to this host" in found.message
    assert code(FakeHost(local={})) == exitcodes.OK


def test_reports() -> None:
    config = parse_config(CONFIG, "test.toml")
    found = hostcheck.run_checks(config, FakeHost(forwarding="0"))
    text = hostcheck.report_text("test.toml", config, found)
    assert text.splitlines()[0] == "test.toml: configuration ok (1 proxies, 1 backends)"
    assert text.splitlines()[-1] == "1 error, 0 warnings: exit 3: " + exitcodes.MEANING[exitcodes.HOST]
    data = json.loads(hostcheck.report_json("test.toml", found))
    assert data["exit_code"] == 3 and not data["ok"] and data["config_errors"] == []
    assert {"name": "ip_forward", "status": "error"}.items() <= next(
        c for c in data["checks"] if c["name"] == "ip_forward"
    ).items()


def test_the_real_probe_on_this_machine() -> None:
    probe = Probe()
    assert probe.interface_state("lo") in ("unknown", "up")
    assert probe.interface_state("no-such-if0") is None
    assert probe.local_address_interfaces("127.0.0.1") is not None
    assert probe.local_address_interfaces("192.0.2.77") is None  # TEST-NET-1: never local here
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        assert probe.bind_problem("127.0.0.1", held.getsockname()[1]) == errno.EADDRINUSE


def test_max_connections_beyond_the_host_s_memory_is_a_config_error() -> None:
    """16M connections (the schema's maximum) preallocate conntrack tables of 32M + 128k entries (with
    the IPv6 tables' default 128k + 32k): more than half of an 8 GiB host. A configuration error naming
    the key and what fits, not a failed start."""
    text = CONFIG.replace("[settings]\n", "[settings]\nmax_connections = 16777216\n", 1)
    found = checks(FakeHost(), text)["memory"]
    assert [(c.status, c.key_path) for c in found] == [(ERROR, "settings.max_connections")]
    assert found[0].message.startswith("max_connections = 16777216 needs about 14912 MiB")
    assert "more than half of this host's 8192 MiB: at most about 4608140 fit" in found[0].message
    assert code(FakeHost(), text) == exitcodes.CONFIG
    # the default fits, and says how much it takes
    default = checks(FakeHost())["memory"][0]
    assert (default.status, default.message) == (
        OK,
        "the maps and their sweep take about 422 MiB of 8192 MiB",
    )
    assert checks(FakeHost(memory=None))["memory"][0].status == WARNING


def test_the_ipv6_conntrack_tables_have_their_own_sizes_and_are_counted() -> None:
    """The IPv6 tables hold 2 x ipv6_max_connections and 2 x ipv6_embryonic_connections entries (the
    BPF programs get both families' sizes), and the host check counts them (larger entries) too."""
    from lbtui.dataplane.port import DataplaneSpec
    from lbtui.engine.instance import dataplane_spec

    spec = DataplaneSpec(
        conntrack_entries=2000, transient_entries=400, conntrack6_entries=600, transient6_entries=100
    )
    flags = spec.cflags()
    assert {"-DLB_CT_SIZE=2000", "-DLB_CT6_SIZE=600"} <= set(flags)
    assert {"-DLB_CT_TRANSIENT_SIZE=400", "-DLB_CT6_TRANSIENT_SIZE=100"} <= set(flags)
    empty = dataclasses.replace(
        spec, conntrack_entries=0, transient_entries=0, conntrack6_entries=0, transient6_entries=0
    )
    assert spec.memory_bytes() - empty.memory_bytes() == 2400 * (160 + 300) + 700 * (240 + 420)
    text = CONFIG.replace(
        "[settings]\n", "[settings]\nipv6_max_connections = 3000\nipv6_embryonic_connections = 1500\n", 1
    )
    sized = dataplane_spec(parse_config(text))
    assert (sized.conntrack6_entries, sized.transient6_entries) == (6000, 3000)


DSR = CONFIG.replace("port = 80\n", 'port = 80\nforwarding = "ipip"\n').replace("8080", "80")


def test_dsr_needs_accept_local_on_its_interfaces() -> None:
    found = checks(FakeHost(), DSR)["accept_local"]
    assert [c.status for c in found] == [ERROR, ERROR]
    assert "net.ipv4.conf.eth0.accept_local = 0" in found[0].message
    assert "settings.manage_sysctls = true" in found[0].message
    assert code(FakeHost(), DSR) == exitcodes.HOST
    assert [c.status for c in checks(FakeHost(accept_local={"all": "1"}), DSR)["accept_local"]] == [OK, OK]
    one = checks(FakeHost(accept_local={"eth0": "1"}), DSR)["accept_local"]
    assert [c.status for c in one] == [OK, ERROR]
    managed = DSR.replace("[settings]\n", "[settings]\nmanage_sysctls = true\n")
    assert [c.status for c in checks(FakeHost(), managed)["accept_local"]] == [OK, OK]
    assert "accept_local" not in checks(FakeHost())  # NAT proxies do not need it
