# SPDX-License-Identifier: Apache-2.0
"""The lab's names and the config it describes (no namespaces are made)."""

from __future__ import annotations

import tomllib

import pytest

from lbtui.lab import Lab, LabSpec


@pytest.mark.parametrize("prefix", ["", "abcde", "1ab", "a-b", "AB"])
def test_spec_rejects_prefixes_that_break_interface_names(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        LabSpec(prefix=prefix)


def test_spec_rejects_bad_backend_count() -> None:
    with pytest.raises(ValueError, match="backends"):
        LabSpec(backends=0)


def test_names_follow_prefix() -> None:
    lab = Lab(LabSpec(prefix="ltn", backends=2))
    assert (lab.ns_lb, lab.ns_client, lab.ns_client2) == ("ltnlb", "ltncli", "ltncli2")
    assert lab.ns_backend(2) == "ltnb2"
    assert lab.backend_ip(2) == "10.0.2.12"
    assert lab.client_ifaces == ["ltnl0", "ltnl1"]
    assert lab.vip == "10.0.0.1"
    with pytest.raises(ValueError):
        lab.ns_backend(3)
    assert Lab(LabSpec(prefix="ltn", second_client=False)).client_ifaces == ["ltnl0"]


def test_config_toml_describes_the_lab() -> None:
    lab = Lab(LabSpec(prefix="ltc", backends=4))
    cfg = tomllib.loads(lab.config_toml(weights=(5, 1), algorithm="maglev"))
    assert cfg["settings"]["control_socket"] == "/run/lbtui/ltc.sock"
    assert cfg["settings"]["xdp_mode"] == "generic"
    assert cfg["settings"]["metrics"]["enabled"] is False
    web, udp = cfg["proxy"]
    assert (web["name"], web["protocol"], web["vip"], web["port"]) == ("web", "tcp", "10.0.0.1", 80)
    assert (udp["name"], udp["protocol"], udp["port"]) == ("udp", "udp", 5353)
    for proxy in (web, udp):
        assert proxy["interfaces"] == ["ltcl0", "ltcl1"]
        assert proxy["algorithm"] == "maglev"
    assert [b["address"] for b in web["backend"]] == [f"10.0.2.{10 + i}:8080" for i in range(1, 5)]
    assert [b["address"] for b in udp["backend"]] == [f"10.0.2.{10 + i}:5353" for i in range(1, 5)]
    assert [b["weight"] for b in web["backend"]] == [5, 1, 1, 1]


def test_config_toml_extra_goes_into_web_proxy() -> None:
    extra = 'algorithm_note = "x"\n[proxy.health]\ntype = "http"\npath = "/healthz"\n'
    cfg = tomllib.loads(Lab(LabSpec(prefix="ltc")).config_toml(extra_proxy_toml=extra))
    web, udp = cfg["proxy"]
    assert web["health"] == {"type": "http", "path": "/healthz"}
    assert web["algorithm_note"] == "x"
    assert len(web["backend"]) == 3
    assert "health" not in udp
