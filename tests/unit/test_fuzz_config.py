# SPDX-License-Identifier: Apache-2.0
"""Config fuzzing (checker and strategies: tests/fuzz/configs.py; 10,000 examples: bench/fuzz_config.py).

parse_config/load_config only ever raise ConfigError; every issue has a message and a key path into
the document (file-level only for TOML syntax and encoding errors); valid documents round-trip
through config_to_toml.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbtui import config as lbconfig
from lbtui.config import ConfigError, ConfigIssue
from lbtui.config.keys import INVALID, Items, Table, Tables, Text, declared_keys
from lbtui.config.validate import Validator
from tests.fuzz import configs as fuzzing

REPO = Path(__file__).resolve().parents[2]
STRATEGIES = fuzzing.config_strategies()


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )


def assert_contract(check: fuzzing.ConfigCheck) -> None:
    assert check.problems == (), "\n".join(check.problems)


# ---- the checker's own parts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("settings", ["settings"]),
        ("proxy[0].backend[12].weight", ["proxy", 0, "backend", 12, "weight"]),
        ('settings."a.b"', ["settings", "a.b"]),
        ('"x y"[3]', ["x y", 3]),
        ('proxy[0]."\\u00e9"', ["proxy", 0, "é"]),
        ('""', [""]),
    ],
)
def test_parse_key_path(text: str, steps: list[Any]) -> None:
    assert fuzzing.parse_key_path(text) == steps


@pytest.mark.parametrize("text", ["", "a.", ".a", "a[x]", "a..b", 'a."b', "a b"])
def test_parse_key_path_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        fuzzing.parse_key_path(text)


def test_key_paths_written_by_the_validator_parse_back() -> None:
    for key in ["plain", "a.b", "x y", "", "é", '"q"', "[0]"]:
        path = lbconfig.join_key("proxy[1]", key)
        assert fuzzing.parse_key_path(path) == ["proxy", 1, key]


def test_resolve_key_path() -> None:
    document = {"proxy": [{"backend": [{"weight": 1}]}], "settings": {}}
    assert fuzzing.resolve_key_path(document, ["proxy", 0, "backend", 0, "weight"])
    assert fuzzing.resolve_key_path(document, ["settings"])
    assert not fuzzing.resolve_key_path(document, ["proxy", 1])
    assert not fuzzing.resolve_key_path(document, ["settings", "x"])
    assert not fuzzing.resolve_key_path(document, ["proxy", "0"])


def test_every_string_format_has_samples_that_the_format_agrees_with() -> None:
    """The fuzzer's samples per string format (derived from the declarations) are right about it."""
    formats = {}

    def collect(cls: type) -> None:
        for d in declared_keys(cls):
            key = d.key.item if isinstance(d.key, Items) else d.key
            if isinstance(key, Text) and key.format is not None:
                formats[key.format.name] = key.format
            if isinstance(key, Table | Tables):
                collect(key.cls)

    collect(lbconfig.Config)
    assert {"ip", "endpoint", "host", "cidr", "name", "socket"} <= set(formats)
    for name, fmt in formats.items():
        valid, invalid = fuzzing._STRING_SAMPLES[name]
        for text in valid:
            validator = Validator("f.toml")
            assert Text("", format=fmt).check(text, "k", validator) is not INVALID, validator.issues
        for text in invalid:
            assert Text("", format=fmt).check(text, "k", Validator("f.toml")) is INVALID, (name, text)


toml_keys = st.text(max_size=6)
toml_values = st.recursive(
    st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.text(max_size=10)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(toml_keys, children, min_size=1, max_size=3)
    ),
    max_leaves=10,
)


@fuzz(100)
@given(st.dictionaries(toml_keys, toml_values, max_size=4))
def test_toml_writer_round_trips(document: dict[str, Any]) -> None:
    text = fuzzing.toml_document(document)
    assert tomllib.loads(text) == document


def test_checker_flags_contract_violations(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "configs" / "minimal.toml").read_text()
    assert fuzzing.check_config_text(text).outcome == "valid"
    assert_contract(fuzzing.check_config_text(text))

    def crash(_text: str, _path: str = "") -> None:
        raise KeyError("boom")

    monkeypatch.setattr(lbconfig, "parse_config", crash)
    assert fuzzing.check_config_text(text).outcome == "crash"

    def bad_path(_text: str, path: str = "") -> None:
        raise ConfigError([ConfigIssue(path, "proxy[7].weight", "expected a positive integer")])

    monkeypatch.setattr(lbconfig, "parse_config", bad_path)
    assert any("does not lead into" in p for p in fuzzing.check_config_text(text).problems)

    def no_path(_text: str, path: str = "") -> None:
        raise ConfigError([ConfigIssue(path, "", "something is wrong")])

    monkeypatch.setattr(lbconfig, "parse_config", no_path)
    assert any("without a key path" in p for p in fuzzing.check_config_text(text).problems)


def test_file_level_issues_for_bad_toml_and_bytes(tmp_path: Path) -> None:
    check = fuzzing.check_config_text("[proxy\n")
    assert check.outcome == "toml-error" and check.problems == ()
    assert all(issue.key_path == "" for issue in check.issues)
    check = fuzzing.check_config_bytes(b"[settings]\nmax_connections = 1\xff\n", str(tmp_path))
    assert check.outcome == "toml-error" and check.problems == ()
    assert check.issues[0].key_path == "" and "UTF-8" in check.issues[0].message


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400, -(10**400), 2**64, 1e308])
@pytest.mark.parametrize("key", ["tcp_timeout_s", "max_connections", "table_size", "sweep_interval_s"])
def test_extreme_numbers_give_key_paths(key: str, value: Any) -> None:
    minimal = (REPO / "configs" / "minimal.toml").read_text()
    assert "[settings]" not in minimal
    check = fuzzing.check_config_text(f"[settings]\n{key} = {fuzzing.toml_value(value)}\n\n{minimal}")
    assert_contract(check)
    assert check.outcome == "invalid"
    assert any(issue.key_path == f"settings.{key}" for issue in check.issues)


# ---- the fuzzing proper (~500 examples) ----------------------------------------------------------------


@fuzz(150)
@given(STRATEGIES["document"])
def test_fuzz_schema_documents(text: str) -> None:
    assert_contract(fuzzing.check_config_text(text))


@fuzz(150)
@given(STRATEGIES["mutated"])
def test_fuzz_text_mutations_of_full_toml(text: str) -> None:
    assert_contract(fuzzing.check_config_text(text))


@fuzz(100)
@given(STRATEGIES["restructured"])
def test_fuzz_restructured_full_toml(text: str) -> None:
    assert_contract(fuzzing.check_config_text(text))


@fuzz(100)
@given(STRATEGIES["raw"])
def test_fuzz_raw_bytes_through_load_config(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lbtui-fuzz-cfg-") as directory:
        assert_contract(fuzzing.check_config_bytes(data, directory))


@fuzz(150)
@given(STRATEGIES["ipv6"])
def test_fuzz_ipv6_forms(form: fuzzing.Ipv6Form) -> None:
    """Dual-stack documents: valid ones accepted (two proxies on one port, different families), each
    broken IPv6 form (zone id, brackets, v4-mapped, prefix over 128, the other family) refused with an
    issue naming its key path."""
    assert_contract(fuzzing.check_ipv6_form(form))


def test_the_ipv6_checker_wants_the_key_path_named() -> None:
    good = fuzzing.Ipv6Form(PROXY_PAIR, None, "valid")
    assert fuzzing.check_ipv6_form(good).problems == ()
    bad = PROXY_PAIR.replace('"[fd00:20::11]:8080"', '"fd00:20::11:8080"')
    named = fuzzing.Ipv6Form(bad, "proxy[1].backend[0].address", "brackets missing")
    assert fuzzing.check_ipv6_form(named).problems == ()
    elsewhere = fuzzing.Ipv6Form(bad, "proxy[1].vip", "brackets missing")
    assert "no issue names proxy[1].vip" in fuzzing.check_ipv6_form(elsewhere).problems[0]
    accepted = fuzzing.Ipv6Form(PROXY_PAIR, "proxy[1].vip", "a bad VIP")
    assert fuzzing.check_ipv6_form(accepted).problems == ("a bad VIP: accepted at proxy[1].vip",)


PROXY_PAIR = """
[[proxy]]
name = "web4"
interfaces = ["eth0"]
vip = "10.0.0.1"
port = 80
[[proxy.backend]]
address = "10.0.2.11:8080"

[[proxy]]
name = "web6"
interfaces = ["eth0"]
vip = "fd00:10::1"
port = 80
[[proxy.backend]]
address = "[fd00:20::11]:8080"
"""


def test_the_strategies_produce_valid_and_invalid_documents() -> None:
    """Guards against a strategy that drifted into producing only one kind of document."""
    from hypothesis import Phase

    outcomes: set[str] = set()

    @settings(
        max_examples=200, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )
    @given(STRATEGIES["document"])
    def collect(text: str) -> None:
        outcomes.add(fuzzing.check_config_text(text).outcome)

    collect()
    assert {"valid", "invalid"} <= outcomes

    kinds: set[str] = set()

    @settings(
        max_examples=200, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )
    @given(STRATEGIES["ipv6"])
    def collect6(form: fuzzing.Ipv6Form) -> None:
        kinds.add(form.what.split(" ")[0])

    collect6()
    assert {"valid", "malformed", "IPv4", "ipv6_source_prefix"} <= kinds
