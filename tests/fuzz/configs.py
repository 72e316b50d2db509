# SPDX-License-Identifier: Apache-2.0
"""Config fuzzing: a checker for the loader's contract (`check_config_text` / `check_config_bytes`)
and hypothesis strategies that generate documents (`config_strategies`), for tests/unit/test_fuzz_config.py
and bench/fuzz_config.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tomli_w

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_INDEX_RE = re.compile(r"\[([0-9]+)\]")


def parse_key_path(text: str) -> list[str | int]:
    """`proxy[0].backend[1]."odd key"` -> ["proxy", 0, "backend", 1, "odd key"]; ValueError if malformed."""
    steps: list[str | int] = []
    i = 0
    decoder = json.JSONDecoder()
    while True:
        if i < len(text) and text[i] == '"':
            key, i = decoder.raw_decode(text, i)
            if not isinstance(key, str):
                raise ValueError(f"bad quoted key in {text!r}")
            steps.append(key)
        else:
            match = _BARE_KEY_RE.match(text, i)
            if match is None:
                raise ValueError(f"bad key at offset {i} of {text!r}")
            steps.append(match.group())
            i = match.end()
        while (index := _INDEX_RE.match(text, i)) is not None:
            steps.append(int(index.group(1)))
            i = index.end()
        if i == len(text):
            return steps
        if text[i] != ".":
            raise ValueError(f"expected '.' at offset {i} of {text!r}")
        i += 1


def resolve_key_path(document: Any, steps: Sequence[str | int]) -> bool:
    """True if the steps lead to a value in the parsed TOML document."""
    node = document
    for step in steps:
        if isinstance(step, int) and isinstance(node, list) and step < len(node):
            node = node[step]
        elif isinstance(step, str) and isinstance(node, dict) and step in node:
            node = node[step]
        else:
            return False
    return True


@dataclass(frozen=True)
class ConfigCheck:
    outcome: str  # "valid" | "invalid" | "toml-error"
    issues: tuple[Any, ...]  # lbtui.config.ConfigIssue values
    problems: tuple[str, ...]  # violations of the loader's contract; () when it behaved


def check_config_text(text: str, file: str = "fuzz.toml") -> ConfigCheck:
    """parse_config's contract on one document.

    It raises nothing but ConfigError; every issue has a message and the file; when the TOML itself
    parses, every issue has a key path that leads to a value of the document, or (for "missing ..."
    issues) to the table that lacks it; a valid document round-trips through config_to_toml to an
    equal Config, and writing that again gives the same text.
    """
    from lbtui.config import ConfigError, config_to_toml, parse_config

    try:
        document: Any = tomllib.loads(text)
    except (ValueError, RecursionError):
        document = None
    try:
        config = parse_config(text, file)
    except ConfigError as err:
        problems = _issue_problems(err.issues, document, file)
        return ConfigCheck("invalid" if document is not None else "toml-error", err.issues, tuple(problems))
    except Exception as exc:  # the contract: nothing but ConfigError
        return ConfigCheck("crash", (), (f"parse_config raised {type(exc).__name__}: {exc}",))
    if document is None:
        return ConfigCheck("valid", (), ("parse_config accepted text that tomllib rejects",))
    problems = []
    try:
        written = config_to_toml(config)
        again = parse_config(written, file)
        if again != config:
            problems.append(f"round trip changed the config:\n{config}\n->\n{again}")
        elif config_to_toml(again) != written:
            problems.append("config_to_toml is not stable: writing the re-read config gives other text")
    except Exception as exc:
        problems.append(f"round trip raised {type(exc).__name__}: {exc}")
    return ConfigCheck("valid", (), tuple(problems))


def _issue_problems(issues: Sequence[Any], document: Any, file: str) -> list[str]:
    problems = []
    if not issues:
        problems.append("ConfigError without issues")
    for issue in issues:
        if issue.file != file:
            problems.append(f"issue names file {issue.file!r}, not {file!r}: {issue}")
        if not issue.message:
            problems.append(f"issue without a message at {issue.key_path!r}")
        if document is None:
            if issue.key_path:
                problems.append(f"a TOML syntax error should be file-level, got key path: {issue}")
            continue
        if not issue.key_path:
            problems.append(f"issue without a key path in a document that is valid TOML: {issue}")
            continue
        try:
            steps = parse_key_path(issue.key_path)
        except ValueError as exc:
            problems.append(f"unparseable key path {issue.key_path!r}: {exc}")
            continue
        if not resolve_key_path(document, steps[:-1]):
            problems.append(f"key path {issue.key_path!r} does not lead into the document: {issue}")
        elif not issue.message.startswith("missing") and not resolve_key_path(document, steps):
            problems.append(f"key path {issue.key_path!r} names no value of the document: {issue}")
    return problems


def check_config_bytes(data: bytes, directory: str) -> ConfigCheck:
    """load_config on raw bytes (non-UTF-8, NULs, BOMs): only ConfigError, file-level for bad bytes."""
    from lbtui.config import ConfigError, load_config

    path = os.path.join(directory, "fuzz.toml")
    with open(path, "wb") as handle:
        handle.write(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    try:
        load_config(path)
    except ConfigError as err:
        if text is None:
            bad = [str(i) for i in err.issues if i.key_path or "UTF-8" not in i.message]
            problems = [f"non-UTF-8 bytes should give one file-level issue, got {bad}"] if bad else []
            return ConfigCheck("toml-error", err.issues, tuple(problems))
        return check_config_text(text, path)
    except Exception as exc:
        return ConfigCheck("crash", (), (f"load_config raised {type(exc).__name__}: {exc}",))
    if text is None:
        return ConfigCheck("valid", (), ("load_config accepted bytes that are not UTF-8",))
    return check_config_text(text, path)


# ---- TOML text of generated documents: the project's one TOML writer, tomli-w ---------------------


def toml_document(document: dict[str, Any]) -> str:
    return tomli_w.dumps(document)


def toml_value(value: Any) -> str:
    """One value (not a table) as TOML text, e.g. for a key written by hand."""
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


# ---- the schema the document strategies follow: derived from the declarations in lbtui/config -------
# Tables are dicts, arrays of tables one-element lists, leaves kinds: ("int", low, high), ("prime",),
# ("num", positive, high) (positive: > 0, else >= 0), ("bool",), ("choice", options), ("list", kind)
# and (format name,) for strings, whose samples are in _STRING_SAMPLES.


def config_schema() -> dict[str, Any]:
    from lbtui.config import Config

    return _table_schema(Config)


def _table_schema(cls: type) -> dict[str, Any]:
    from lbtui.config.keys import declared_keys

    return {d.name: _kind(d.key) for d in declared_keys(cls)}


def _kind(key: Any) -> Any:
    from lbtui.config import keys

    if isinstance(key, keys.Table):
        return _table_schema(key.cls)
    if isinstance(key, keys.Tables):
        return [_table_schema(key.cls)]
    if isinstance(key, keys.Int):
        return ("prime",) if key.prime else ("int", key.low, key.high)
    if isinstance(key, keys.Number):
        return ("num", key.positive, key.high)
    if isinstance(key, keys.Flag):
        return ("bool",)
    if isinstance(key, keys.Choice):
        return ("choice", key.options)
    if isinstance(key, keys.Items):
        return ("list", _kind(key.item))
    if isinstance(key, keys.Text) and key.format is not None:
        return (key.format.name,)
    raise TypeError(f"the config fuzzer has no strategy for {key!r}")


def _required_keys(cls: type) -> set[str]:
    """TOML names of required keys anywhere below `cls`, and address/host (a backend needs one)."""
    from lbtui.config import keys

    found = {"address", "host"}
    for d in keys.declared_keys(cls):
        if d.key.required:
            found.add(d.name)
        if isinstance(d.key, keys.Table | keys.Tables):
            found |= _required_keys(d.key.cls)
    return found


# (valid samples, invalid samples) of the string kinds
_STRING_SAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "name": (["web", "dns", "a.b-c_d", "x" * 64], ["", "x y", "x" * 65, "ä", "a/b"]),
    "ifname": (["eth0", "lo", "veth-a.1", "x" * 15], ["", "x" * 16, "a b", "a/b", "a:b", ".", "..", "\x01"]),
    "ip": (
        ["10.0.0.1", "192.168.1.1", "1.2.3.4", "fd00:10::1", "2001:DB8:0::1", "::1"],
        [
            "",
            "1.2.3",
            "10.000.0.1",
            "10.0.0.256",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "10.0.0.1 ",
            "::",
            "ff02::1",
            "fe80::1",  # link-local: needs a zone
            "fe80::1%eth0",  # zone ids
            "fd00::1%1",
            "::ffff:10.0.0.1",  # IPv4-mapped
            "[fd00::1]",
            "fd00::g",
            "fd00:::1",
        ],
    ),
    "endpoint": (
        ["10.0.2.11:8080", "10.0.2.12:1", "1.2.3.4:65535", "[fd00:20::11]:8080", "[2001:DB8::1]:1"],
        [
            "10.0.2.11",
            "10.0.2.11:0",
            "10.0.2.11:65536",
            ":80",
            "host:80",
            "10.0.2.11:+80",
            "10.0.2.11:08a",
            "fd00::1:80",  # brackets missing
            "fd00::1",
            "[fd00::1]",
            "[fd00::1]:",
            "[fd00::1:80",
            "fd00::1]:80",
            "[fd00::1]:0",
            "[fd00::1]:65536",
            "[10.0.2.11]:80",
            "[fe80::1%eth0]:80",  # zone ids
            "[::ffff:10.0.2.11]:80",  # IPv4-mapped
            "[::]:80",
            "[ff02::1]:80",
            "[host]:80",
        ],
    ),
    "host": (
        ["api.internal", "example.com", "a-b.c.", "x" * 63],
        ["", "-a", "a..b", "x" * 64, "10.0.0.1", "a b", "a_" * 130, "."],
    ),
    "cidr": (
        [
            "192.168.0.0/16",
            "10.0.0.0/8",
            "0.0.0.0/0",
            "1.2.3.4/32",
            "fd00:30::/48",
            "::/0",
            "2001:db8::1/128",
        ],
        [
            "192.168.1.0/16",
            "10.0.0.0/33",
            "x",
            "",
            "fd00::1/48",  # host bits
            "fd00::/129",  # prefix over 128
            "fd00::/1000",
            "fd00::/",
            "fd00::/-1",
            "fe80::%eth0/64",  # zone ids
            "::ffff:0:0/96",  # IPv4-mapped
            "[fd00::]/48",
        ],
    ),
    "listen": (
        ["127.0.0.1:17100", "[::1]:9100", "localhost:9100", "0.0.0.0:1"],
        ["9100", ":9100", "127.0.0.1:0", "[::1:9100", "a b:1", "127.0.0.1:99999"],
    ),
    "urlpath": (["/metrics", "/healthz", "/a/b?c=d", "/"], ["metrics", "", "/a b", "/\x7f"]),
    "file": (["/var/log/lbtui/access.log", "rel/path", "/" + "x" * 120], ["", "/tmp/a\x00b"]),
    "socket": (["/run/lbtui/lbtui.sock", "/tmp/a.sock", "rel/path"], ["", "/tmp/a\x00b", "/" + "x" * 120]),
    "group": (["lbtui-ro", "adm", "47119", "_svc"], ["", "a b", "-x", "x" * 40, "1234567890"]),
    "httphost": (["www.example.com", "a", "10.0.0.1:8080"], ["", "a b", "a\tb", "x\x7f"]),
    "nameserver": (["10.0.0.53", "::1", "2001:db8::53"], ["", "dns.google", "10.0.0.300"]),
    "syslog": (
        ["/dev/log", "10.0.0.5:514", "tcp://logs.example:6514", "udp://[::1]:514"],
        ["", "514", "tcp://x"],
    ),
}
# kinds whose valid values must share the family of their proxy's VIP
_FAMILY_KINDS = ("ip", "endpoint", "cidr")


def _sample_family(kind: str, text: str) -> int:
    """4 or 6: the address family of a valid sample of a family kind."""
    if kind == "endpoint":
        return 6 if text.startswith("[") else 4
    return 6 if ":" in text else 4


_PRIMES = [7, 11, 13, 251, 4099, 65537]
_NOT_PRIMES = [0, 1, 5, 9, 65536, 65539, 100000, -7]
_ANY_SCALARS: list[Any] = ["", "x", "10.0.0.1", 0, 1, -1, 2**31, 10**30, 0.5, float("nan"), True, [], {}]


@dataclass(frozen=True)
class Ipv6Form:
    """A dual-stack document with at most one IPv6 form broken: `key_path` names the broken value
    (None: the document is valid) and `what` says how it was broken."""

    text: str
    key_path: str | None
    what: str


def check_ipv6_form(form: Ipv6Form) -> ConfigCheck:
    """check_config_text, and: a valid dual-stack document (two proxies sharing a port on different
    families) is accepted; a broken IPv6 form is refused with an issue naming its key path."""
    check = check_config_text(form.text)
    problems = list(check.problems)
    named = {issue.key_path for issue in check.issues}
    if form.key_path is None and check.outcome != "valid":
        problems.append(f"a valid dual-stack document was refused: {[str(i) for i in check.issues]}")
    elif form.key_path is not None and check.outcome == "valid":
        problems.append(f"{form.what}: accepted at {form.key_path}")
    elif form.key_path is not None and form.key_path not in named:
        problems.append(f"{form.what}: no issue names {form.key_path}, only {sorted(named)}")
    return ConfigCheck(check.outcome, check.issues, tuple(problems))


# malformed IPv6 forms the "ipv6" strategy writes where a valid one was (besides the samples' invalid
# ones): prefix lengths over 128, zone ids, v4-mapped addresses, brackets missing or misplaced
_BAD_IPV6: dict[str, list[str]] = {
    "ip": [
        "fd00:10::1%eth0",
        "fe80::1%1",
        "::ffff:10.0.0.1",
        "::ffff:a00:1",
        "[fd00:10::1]",
        "fd00:10::1/128",
    ],
    "endpoint": [
        "fd00:20::11:8080",
        "fd00:20::11",
        "[fd00:20::11]",
        "[fd00:20::11]:",
        "[fd00:20::11:8080",
        "fd00:20::11]:8080",
        "[fd00:20::11%eth0]:8080",
        "[::ffff:10.0.2.11]:8080",
        "[fd00:20::11]:65536",
        "[[fd00:20::11]]:8080",
        "[fd00:20::11]8080",
    ],
    "cidr": [
        "fd00:30::/129",
        "fd00:30::/200",
        "fd00:30::/-0",
        "fd00:30::%eth0/48",
        "::ffff:10.0.0.0/104",
        "[fd00:30::]/48",
        "fd00:30::1/48",
        "fd00:30::/48/64",
    ],
}


def config_strategies() -> dict[str, Any]:
    """hypothesis strategies: "document" (schema-based text), "mutated" (text mutations of
    configs/full.toml), "restructured" (value/key mutations of its parsed form), "raw" (bytes),
    "ipv6" (Ipv6Form: dual-stack documents, valid or with one IPv6 form broken)."""
    from hypothesis import strategies as st

    from lbtui.config import Config

    schema = config_schema()
    required = _required_keys(Config)
    scalars = st.one_of(
        st.sampled_from(_ANY_SCALARS),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.text(max_size=12),
    )
    keys = st.one_of(
        st.sampled_from(["x", "Port", "backends", "proxy", "name", "a.b", ""]), st.text(max_size=8)
    )
    anything = st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)
        ),
        max_leaves=8,
    )

    octet = st.integers(0, 255)
    unicast = st.builds(
        lambda a, b, c, d: f"{a}.{b}.{c}.{d}", st.integers(1, 223), octet, octet, st.integers(1, 254)
    )
    # IPv6 unicast: unique-local and documentation addresses, written compressed or in full
    unicast6 = st.builds(
        lambda prefix, low, full: (lambda a: a.exploded if full else str(a))(
            ipaddress.IPv6Address(prefix | low)
        ),
        st.sampled_from([0xFD << 120, 0x20010DB8 << 96]),
        st.integers(1, 2**64 - 1),
        st.booleans(),
    )
    ports = st.integers(1, 65535)
    by_family: dict[tuple[str, int], Any] = {
        ("ip", 4): unicast,
        ("ip", 6): unicast6,
        ("endpoint", 4): st.builds(lambda ip, port: f"{ip}:{port}", unicast, ports),
        ("endpoint", 6): st.builds(lambda ip, port: f"[{ip}]:{port}", unicast6, ports),
        ("cidr", 4): st.builds(
            lambda ip, bits: str(ipaddress.IPv4Network(f"{ip}/{bits}", strict=False)),
            unicast,
            st.integers(0, 32),
        ),
        ("cidr", 6): st.builds(
            lambda ip, bits: str(ipaddress.IPv6Network(f"{ip}/{bits}", strict=False)),
            unicast6,
            st.integers(0, 128),
        ),
    }
    generated: dict[str, Any] = {
        "name": st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
        "ifname": st.from_regex(r"[a-z][a-z0-9.-]{0,14}", fullmatch=True),
        "host": st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True).filter(
            lambda name: not name.endswith("-") and "-." not in name
        ),
    }

    def valid(kind: tuple[Any, ...], family: int = 4) -> Any:
        """Valid values of a kind; addresses, endpoints and networks of `family`."""
        name = kind[0]
        if name == "int":
            low, high = kind[1], kind[2]
            return st.one_of(st.integers(low, min(high, low + 1000)), st.sampled_from([low, high]))
        if name == "num":
            low, high = (0.001 if kind[1] else 0.0), min(kind[2], 1e6)
            return st.one_of(st.floats(low, high), st.integers(1, int(high)), st.sampled_from([low, kind[2]]))
        if name == "bool":
            return st.booleans()
        if name == "choice":
            return st.sampled_from(kind[1])
        if name == "prime":
            return st.sampled_from(_PRIMES)
        if name == "list":
            return st.lists(valid(kind[1], family), min_size=1, max_size=3, unique_by=repr)
        if name in _FAMILY_KINDS:
            same = [t for t in _STRING_SAMPLES[name][0] if _sample_family(name, t) == family]
            return st.one_of(st.sampled_from(same), by_family[(name, family)])
        samples = st.sampled_from(_STRING_SAMPLES[name][0])
        return st.one_of(samples, generated[name]) if name in generated else samples

    def invalid(kind: tuple[Any, ...]) -> Any:
        name = kind[0]
        if name == "int":
            low, high = kind[1], kind[2]
            return st.sampled_from([low - 1, high + 1, 0, -1, 2**63, -(2**63), 10**40, 1.0, "1", True])
        if name == "num":
            return st.sampled_from([0, -1, -0.5, float("nan"), float("inf"), 1e300, 10**400, "1", True, 2.5])
        if name == "bool":
            return st.sampled_from([0, 1, "true", "yes"])
        if name == "choice":
            return st.sampled_from(["", "TCP", kind[1][0].upper(), kind[1][0] + " ", 1])
        if name == "prime":
            return st.sampled_from(_NOT_PRIMES)
        if name == "list":
            return st.one_of(
                st.just([]),
                st.lists(invalid(kind[1]), min_size=1, max_size=2),
                valid(kind[1]),  # a bare value where an array belongs
                st.lists(valid(kind[1]), min_size=2, max_size=2).map(lambda xs: [xs[0], xs[0]]),
            )
        return st.sampled_from(_STRING_SAMPLES[name][1] + [1])

    @st.composite
    def table(draw: Any, spec: dict[str, Any], chaos: float, family: int = 4) -> dict[str, Any]:
        """A table of `spec`; its addresses of `family` (under chaos, sometimes of the other one)."""
        out: dict[str, Any] = {}
        keys_here = list(spec)
        if "address" in spec and draw(st.floats(0, 1)) >= chaos:
            # a backend: usually one form only, as a valid one would be
            drop = ("host", "port", "dns_refresh_s") if draw(st.booleans()) else ("address",)
            keys_here = [k for k in keys_here if k not in drop]
        for key in keys_here:
            kind = spec[key]
            roll = draw(st.floats(0, 1))
            if roll < (chaos * 0.3 if key in required else 0.4):
                continue  # omitted: an optional key, or a required one (a "missing" issue)
            roll = draw(st.floats(0, 1))
            if roll < chaos * 0.5:
                out[key] = draw(anything)
            elif isinstance(kind, dict):
                out[key] = draw(table(kind, chaos, family))
            elif isinstance(kind, list):
                out[key] = draw(
                    st.lists(table(kind[0], chaos, family), min_size=0 if roll < chaos else 1, max_size=3)
                )
            elif roll < chaos:
                out[key] = draw(invalid(kind))
            else:
                mixed = draw(st.floats(0, 1)) < chaos * 0.3  # a family mismatch
                out[key] = draw(valid(kind, 10 - family if mixed else family))
        if draw(st.floats(0, 1)) < chaos * 0.3:
            out[draw(keys)] = draw(anything)
        return out

    @st.composite
    def document_text(draw: Any) -> str:
        chaos = draw(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.3]))
        document = {}
        if draw(st.booleans()):
            document["settings"] = draw(table(schema["settings"], chaos))
        if draw(st.floats(0, 1)) >= chaos * 0.2:
            proxy = schema["proxy"][0]
            document["proxy"] = draw(
                st.lists(
                    st.sampled_from([4, 6]).flatmap(lambda f: table(proxy, chaos, f)), min_size=1, max_size=3
                )
            )
        return toml_document(document)

    @st.composite
    def ipv6_form(draw: Any) -> Ipv6Form:
        """An IPv4 and an IPv6 proxy on one port and protocol (valid: different families), the IPv6
        one with bracketed, DNS and source-route backends and a per-source limit by prefix; then at
        most one of its forms broken (or of the other family) where the key path is known."""
        port, protocol = draw(ports), draw(st.sampled_from(["tcp", "udp"]))
        six = draw(st.lists(unicast6, min_size=4, max_size=4, unique_by=ipaddress.IPv6Address))
        proxy4 = {
            "name": "web4",
            "interfaces": ["eth0"],
            "vip": draw(unicast),
            "port": port,
            "protocol": protocol,
            "backend": [{"address": draw(by_family[("endpoint", 4)])}],
        }
        proxy6: dict[str, Any] = {
            "name": "web6",
            "interfaces": ["eth0"],
            "vip": six[0],
            "port": port,
            "protocol": protocol,
            "backend": [
                {"address": f"[{six[1]}]:{draw(ports)}"},
                {"address": f"[{six[2]}]:{draw(ports)}"},
                {"host": "api.internal", "port": draw(ports)},
            ],
            "source_route": [
                {"cidr": draw(by_family[("cidr", 6)]), "backends": [{"address": f"[{six[3]}]:{draw(ports)}"}]}
            ],
            "rate_limit": {"per_source": {"rate": 10}, "ipv6_source_prefix": draw(st.integers(1, 128))},
        }
        targets = {
            "proxy[1].vip": ("ip", proxy6, ("vip",)),
            "proxy[1].backend[0].address": ("endpoint", proxy6["backend"][0], ("address",)),
            "proxy[1].backend[1].address": ("endpoint", proxy6["backend"][1], ("address",)),
            "proxy[1].source_route[0].cidr": ("cidr", proxy6["source_route"][0], ("cidr",)),
            "proxy[1].source_route[0].backends[0].address": (
                "endpoint",
                proxy6["source_route"][0]["backends"][0],
                ("address",),
            ),
        }
        how = draw(st.sampled_from(["valid", "valid", "malformed", "malformed", "mismatch", "prefix"]))
        key_path: str | None = None
        what = "valid"
        if how == "malformed":
            key_path = draw(st.sampled_from(sorted(targets)))
            kind, holder, (key,) = targets[key_path]
            holder[key] = draw(st.sampled_from(_BAD_IPV6[kind] + _STRING_SAMPLES[kind][1]))
            what = f"malformed {kind} {holder[key]!r}"
        elif how == "mismatch":  # one address of the other family in either proxy
            key_path = draw(
                st.sampled_from([k for k in sorted(targets) if k != "proxy[1].vip"] + ["proxy[0]"])
            )
            if key_path == "proxy[0]":
                key_path = "proxy[0].backend[0].address"
                proxy4["backend"][0]["address"] = draw(by_family[("endpoint", 6)])
                what = f"IPv6 backend {proxy4['backend'][0]['address']!r} of an IPv4 VIP"
            else:
                kind, holder, (key,) = targets[key_path]
                holder[key] = draw(by_family[(kind, 4)])
                what = f"IPv4 {kind} {holder[key]!r} for an IPv6 VIP"
        elif how == "prefix":
            key_path = "proxy[1].rate_limit.ipv6_source_prefix"
            proxy6["rate_limit"]["ipv6_source_prefix"] = draw(st.sampled_from([0, -1, 129, 200, 2**40]))
            what = f"ipv6_source_prefix {proxy6['rate_limit']['ipv6_source_prefix']}"
        return Ipv6Form(toml_document({"proxy": [proxy4, proxy6]}), key_path, what)

    full_text = _full_example()

    @st.composite
    def mutated_text(draw: Any) -> str:
        text = full_text
        for _ in range(draw(st.integers(1, 4))):
            lines = text.split("\n")
            op = draw(
                st.sampled_from(
                    [
                        "del-line",
                        "dup-line",
                        "swap",
                        "ins-text",
                        "cut-line",
                        "del-span",
                        "number",
                        "string",
                        "char",
                    ]
                )
            )
            i = draw(st.integers(0, len(lines) - 1))
            if op == "del-line":
                del lines[i]
            elif op == "dup-line":
                lines.insert(i, lines[i])
            elif op == "swap":
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            elif op == "ins-text":
                lines.insert(i, draw(st.text(max_size=30)))
            elif op == "cut-line":
                lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
            text = "\n".join(lines)
            if op == "del-span" and text:
                a = draw(st.integers(0, len(text) - 1))
                text = text[:a] + text[a + draw(st.integers(1, 20)) :]
            elif op == "number":
                numbers = list(re.finditer(r"\b[0-9]+(\.[0-9]+)?\b", text))
                if numbers:
                    m = draw(st.sampled_from(numbers))
                    new = draw(
                        st.sampled_from(
                            ["0", "-1", "1e400", "inf", "nan", "65536", "2147483648", "1.5", str(2**64)]
                        )
                    )
                    text = text[: m.start()] + new + text[m.end() :]
            elif op == "string":
                strings = list(re.finditer(r'"[^"\n]*"', text))
                if strings:
                    m = draw(st.sampled_from(strings))
                    text = text[: m.start()] + toml_value(draw(st.text(max_size=20))) + text[m.end() :]
            elif op == "char" and text:
                a = draw(st.integers(0, len(text) - 1))
                text = text[:a] + draw(st.sampled_from(list("[]{}=\"'#.,\n\\ 0a"))) + text[a:]
        return text

    def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        if isinstance(value, dict):
            for key, child in value.items():
                found += paths(child, (*prefix, key))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                found += paths(child, (*prefix, index))
        return found

    @st.composite
    def restructured_text(draw: Any) -> str:
        document = tomllib.loads(full_text)
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(paths(document)))
            if not path:
                continue
            parent = document
            for step in path[:-1]:
                parent = parent[step]
            last = path[-1]
            op = draw(st.sampled_from(["replace", "delete", "add-key", "duplicate"]))
            if op == "replace":
                parent[last] = draw(anything)
            elif op == "delete":
                del parent[last]
            elif op == "add-key" and isinstance(parent[last], dict):
                parent[last][draw(keys)] = draw(anything)
            elif op == "duplicate" and isinstance(parent, list):
                parent.append(parent[last])
        return toml_document(document)

    @st.composite
    def raw_bytes(draw: Any) -> bytes:
        data = bytearray(full_text.encode())
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(
                st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xef\xbb\xbf", b"\xed\xa0\x80", b"\r"])
            )
        return bytes(data)

    return {
        "document": document_text(),
        "mutated": mutated_text(),
        "restructured": restructured_text(),
        "raw": raw_bytes(),
        "ipv6": ipv6_form(),
    }


def _full_example() -> str:
    """configs/full.toml of the checkout (every key, commented)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(here, "configs", "full.toml"), encoding="utf-8") as handle:
        return handle.read()
