# SPDX-License-Identifier: Apache-2.0
"""Generated configuration changes, for comparing `reload --dry-run` with the reload that follows
(issue 19, must-show 4): a small model of a configuration, random edits of it (backends, weights,
routes, algorithms, rate limits, proxies added, removed and moved, health checks, settings, and now
and then a setting that needs a restart), and its TOML."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

ALGORITHMS = ("weighted-random", "least-connections", "maglev", "source-hash")
ROUTES = ("192.168.0.0/16", "172.16.0.0/12", "198.18.0.0/15")


@dataclass
class GenProxy:
    name: str
    port: int
    protocol: str = "tcp"
    algorithm: str = "weighted-random"
    backends: dict[str, int] = field(default_factory=dict)  # "ip:port" -> weight
    routes: dict[str, dict[str, int]] = field(default_factory=dict)  # cidr -> backends
    rate: int | None = None  # per-source new connections per second
    health_ms: int | None = None  # tcp health checks every this many ms


@dataclass
class GenConfig:
    vip: str
    interfaces: tuple[str, ...]
    subnet: str  # "10.0.2": backends are subnet.N
    settings: str  # TOML lines of [settings] (control_socket, state_file, ...)
    proxies: dict[str, GenProxy] = field(default_factory=dict)
    sweep_interval_s: float = 2.0
    drain_timeout_s: float = 30.0
    table_size: int = 97
    serial: int = 0  # for fresh names and addresses

    def fresh(self, port: int) -> str:
        self.serial += 1
        return f"{self.subnet}.{100 + self.serial % 150}:{port}"

    def toml(self) -> str:
        lines = [
            "[settings]",
            self.settings.strip(),
            f"sweep_interval_s = {self.sweep_interval_s}",
            f"drain_timeout_s = {self.drain_timeout_s}",
            f"table_size = {self.table_size}",
            "[settings.metrics]",
            "enabled = false",
        ]
        for p in self.proxies.values():
            ifaces = ", ".join(f'"{i}"' for i in self.interfaces)
            lines += [
                "",
                "[[proxy]]",
                f'name = "{p.name}"',
                f"interfaces = [{ifaces}]",
                f'vip = "{self.vip}"',
                f"port = {p.port}",
                f'protocol = "{p.protocol}"',
                f'algorithm = "{p.algorithm}"',
            ]
            if p.health_ms is not None:
                lines += [
                    "[proxy.health]",
                    'type = "tcp"',
                    f"interval_ms = {p.health_ms}",
                    "timeout_ms = 100",
                ]
            if p.rate is not None:
                lines += ["[proxy.rate_limit]", f"per_source = {{ rate = {p.rate}, burst = {2 * p.rate} }}"]
            for address, weight in p.backends.items():
                lines += ["[[proxy.backend]]", f'address = "{address}"', f"weight = {weight}"]
            for cidr, members in p.routes.items():
                inline = ", ".join(f'{{ address = "{a}", weight = {w} }}' for a, w in members.items())
                lines += ["[[proxy.source_route]]", f'cidr = "{cidr}"', f"backends = [{inline}]"]
        return "\n".join(lines) + "\n"


def initial(vip: str, interfaces: tuple[str, ...], subnet: str, settings: str) -> GenConfig:
    config = GenConfig(vip, interfaces, subnet, settings)
    for name, port in (("web", 80), ("api", 8443)):
        p = GenProxy(name, port)
        for _ in range(3):
            p.backends[config.fresh(8080)] = 1
        config.proxies[name] = p
    return config


def mutate(config: GenConfig, rng: random.Random) -> list[str]:
    """One to three random edits; what they were, for the test's messages."""
    done = []
    for _ in range(rng.randint(1, 3)):
        done.append(_edit(config, rng))
    return done


def _edit(c: GenConfig, rng: random.Random) -> str:  # noqa: C901 - a list of independent edits
    p = c.proxies[rng.choice(sorted(c.proxies))]
    kind = rng.choice(
        ("add", "add", "remove", "weight", "weight", "route+", "route-", "algorithm", "rate", "proxy+",
         "proxy-", "move", "health", "settings", "restart")
    )  # fmt: skip
    if kind == "add":
        address = c.fresh(8080)
        p.backends[address] = rng.randint(1, 5)
        return f"{p.name}: add {address}"
    if kind == "remove" and len(p.backends) > 1:
        address = rng.choice(sorted(p.backends))
        del p.backends[address]
        return f"{p.name}: remove {address}"
    if kind == "weight":
        address = rng.choice(sorted(p.backends))
        p.backends[address] = rng.choice([w for w in range(1, 10) if w != p.backends[address]])
        return f"{p.name}: weight of {address}"
    if kind == "route+":
        free = [r for r in ROUTES if r not in p.routes]
        if free:
            cidr = rng.choice(free)
            p.routes[cidr] = {c.fresh(8080): rng.randint(1, 3)}
            return f"{p.name}: route {cidr}"
    if kind == "route-" and p.routes:
        cidr = rng.choice(sorted(p.routes))
        del p.routes[cidr]
        return f"{p.name}: no route {cidr}"
    if kind == "algorithm":
        p.algorithm = rng.choice([a for a in ALGORITHMS if a != p.algorithm])
        return f"{p.name}: algorithm {p.algorithm}"
    if kind == "rate":
        p.rate = None if p.rate is not None else rng.choice((50, 100, 1000))
        return f"{p.name}: rate {p.rate}"
    if kind == "proxy+" and len(c.proxies) < 4:
        c.serial += 1
        name = f"p{c.serial}"
        port = 9000 + c.serial
        c.proxies[name] = GenProxy(name, port, backends={c.fresh(8080): 1, c.fresh(8080): 2})
        return f"add proxy {name}"
    if kind == "proxy-" and len(c.proxies) > 1:
        del c.proxies[p.name]
        return f"remove proxy {p.name}"
    if kind == "move":
        c.serial += 1
        p.port = 9500 + c.serial
        return f"{p.name}: port {p.port}"
    if kind == "health":
        p.health_ms = None if p.health_ms is not None else rng.choice((500, 1000, 2000))
        return f"{p.name}: health {p.health_ms}"
    if kind == "settings":
        c.sweep_interval_s = rng.choice([s for s in (0.5, 1.0, 2.0, 3.0) if s != c.sweep_interval_s])
        c.drain_timeout_s = rng.choice((10.0, 30.0, 60.0))
        return "settings"
    if kind == "restart":
        c.table_size = 89 if c.table_size == 97 else 97
        return f"table_size {c.table_size}"
    address = c.fresh(8080)  # an edit that could not apply here: add a backend instead
    p.backends[address] = 1
    return f"{p.name}: add {address}"
