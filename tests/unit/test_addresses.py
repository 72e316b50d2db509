# SPDX-License-Identifier: Apache-2.0
"""Addresses as lbtui writes and reads them (lbtui/addresses.py), and every place that shows or parses
them: members and events, the conntrack filter (console and engine), `lbtui ctl`, metrics labels,
access logs, the control protocol's wire forms."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lbtui import addresses, model, wire
from lbtui.addresses import AddressError
from lbtui.ctl import format_flows, format_status
from lbtui.engine import split_address
from lbtui.engine.commands import canonical_backend
from lbtui.engine.group import Member
from lbtui.observe.accesslog import format_clf, format_json
from lbtui.observe.metrics import Metrics
from lbtui.widgets.conntrack import select_flows
from tests.unit.test_accesslog import event
from tests.unit.test_metrics import backend, snapshot, value

V6 = "[fd00:20::11]:8080"


@pytest.mark.parametrize(
    ("text", "ip", "port"),
    [
        ("10.0.2.11:8080", "10.0.2.11", 8080),
        ("[fd00:20::11]:8080", "fd00:20::11", 8080),
        ("[FD00:20:0:0::11]:1", "fd00:20::11", 1),
        ("[2001:db8::1]:65535", "2001:db8::1", 65535),
        ("[::1]:80", "::1", 80),
    ],
)
def test_endpoints_parse_to_canonical_form_and_format_back(text: str, ip: str, port: int) -> None:
    assert addresses.parse_endpoint(text) == (ip, port)
    shown = addresses.format_endpoint(ip, port)
    assert addresses.parse_endpoint(shown) == (ip, port)
    assert shown == (f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
    assert len(shown) <= addresses.ENDPOINT_MAX_WIDTH


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("fd00::1:80", 'needs brackets, e.g. "[fd00::1]:80"'),
        ("fd00::1", 'e.g. "[fd00::1]:PORT"'),
        ("[fd00::1]", "the port is missing"),
        ("[fd00::1]:", "the port is missing"),
        ("[fd00::1:80", 'the closing "]" is missing'),
        ("fd00::1]:80", "needs brackets"),
        ("[10.0.0.1]:80", "brackets are for IPv6 addresses only"),
        ("[fe80::1%eth0]:80", "zone ids (%eth0) are not supported"),
        ("[::ffff:10.0.0.1]:80", "write the IPv4 address 10.0.0.1"),
        ("[fd00::1]:0", "port from 1 to 65535"),
        ("[fd00::1]:65536", "port from 1 to 65535"),
        ("[fd00::1]:８０", "port from 1 to 65535"),  # non-ASCII digits
        ("10.0.0.1", "the port is missing"),
        ("host:80", "expected an IPv4 or IPv6 address"),
    ],
)
def test_malformed_endpoints_say_why(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as err:
        addresses.parse_endpoint(text)
    assert reason in str(err.value)


def test_unicast_refuses_what_can_never_be_a_vip_or_backend() -> None:
    for text in ("::", "ff02::1", "fe80::1", "0.0.0.0", "224.0.0.1", "255.255.255.255"):
        addresses.parse_ip(text)  # an address ...
        with pytest.raises(AddressError):
            addresses.parse_ip(text, unicast=True)  # ... but not a unicast one
    assert addresses.parse_ip("FD00::1", unicast=True) == "fd00::1"


def test_networks() -> None:
    assert addresses.parse_network("FD00:30::/48") == "fd00:30::/48"
    assert addresses.parse_network("10.1.2.3") == "10.1.2.3/32"
    assert addresses.parse_network("fd00::1") == "fd00::1/128"
    for bad, reason in [
        ("fd00::/129", "0 to 128"),
        ("10.0.0.0/33", "0 to 32"),
        ("fd00::1/64", "host bits set"),
        ("fe80::%eth0/64", "zone ids"),
        ("::ffff:0:0/96", "IPv4-mapped"),
    ]:
        with pytest.raises(AddressError, match=reason):
            addresses.parse_network(bad)


@pytest.mark.parametrize(
    ("term", "canonical"),
    [
        ("[FD00:20:0::11]:8080", "[fd00:20::11]:8080"),
        ("[FD00:20::11]", "[fd00:20::11]"),
        ("FD00:20:0::11", "fd00:20::11"),
        ("10.0.2.11:8080", "10.0.2.11:8080"),
        ("fd00:", "fd00:"),  # a part of an address stays a part
        ("Web", "web"),
        (":8080", ":8080"),
    ],
)
def test_filter_terms_are_made_canonical(term: str, canonical: str) -> None:
    assert addresses.search_term(term) == canonical
    assert model.FlowQuery(text=f"tcp {term}").terms() == ("tcp", canonical)


def flow(client: str, backend: str = V6, vip: str = "[fd00:10::1]:80") -> model.FlowView:
    return model.FlowView("tcp", client, vip, backend, "web6", "established", 1.0, 0.5, 1, 100, 1, 100)


def test_the_console_filter_takes_bracketed_and_bare_ipv6_addresses() -> None:
    flows = (
        flow("[fd00:40::5]:40000"),
        flow("[fd00:40::50]:40001", backend="[fd00:20::12]:8080"),
        flow("10.0.1.5:40002", backend="10.0.2.11:8080", vip="10.0.0.1:80"),
    )

    def clients(needle: str) -> list[str]:
        return [f.client for f in select_flows(flows, needle, "bytes")]

    assert clients("[fd00:40::5]") == ["[fd00:40::5]:40000"]  # brackets: that address only
    assert clients("fd00:40::5") == ["[fd00:40::5]:40000", "[fd00:40::50]:40001"]  # a part of both
    assert clients("[FD00:40:0::5]:40000") == ["[fd00:40::5]:40000"]  # any spelling
    assert clients("[fd00:20::12]:8080") == ["[fd00:40::50]:40001"]
    assert clients(":8080") == [f.client for f in flows]
    assert clients("10.0.1.5") == ["10.0.1.5:40002"]
    ordered = [f.backend for f in select_flows(flows, "", "backend")]
    assert ordered == ["10.0.2.11:8080", V6, "[fd00:20::12]:8080"]  # IPv4 first, then numerically


def test_ctl_flows_widen_their_columns_for_ipv6() -> None:
    long = "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65535"
    flows = [flow(long), flow("10.0.1.5:40002", backend="10.0.2.11:8080", vip="10.0.0.1:80")]
    snap = replace(snapshot(), flows=tuple(flows), flows_matched=2)
    lines = format_flows(snap, flows).splitlines()
    assert long in lines[1]
    # every column starts at the same offset on every line: the backend column comes after the client's
    starts = [line.index("established") for line in lines[1:3]]
    assert starts[0] == starts[1] == lines[0].index("state")
    assert lines[2].split()[:4] == ["tcp", "10.0.1.5:40002", "10.0.0.1:80", "10.0.2.11:8080"]


def test_ctl_status_shows_an_ipv6_vip_in_brackets() -> None:
    base = snapshot(backends=(backend(address=V6),))
    svc = replace(base.services[0], name="web6", vip="fd00:10::1", algorithm="maglev")
    text = format_status(replace(base, services=(svc,)))
    assert "web6  [fd00:10::1]:80/tcp  maglev" in text
    assert f"  {V6}  default" in text


def test_members_events_and_commands_name_ipv6_backends_in_brackets() -> None:
    m = Member(1, "web6", "default", "fd00:20::11", 8080, 1, 1)
    assert m.address == V6
    assert split_address("[FD00:20::11]:8080") == ("fd00:20::11", 8080)
    assert canonical_backend(model.Drain("web6", "[FD00:20:0::11]:8080")) == model.Drain("web6", V6)
    assert canonical_backend(model.SetWeight("web6", "api:8080", 2)) == model.SetWeight("web6", "api:8080", 2)
    assert canonical_backend(model.Reload()) == model.Reload()


def test_metrics_label_ipv6_backends_in_brackets() -> None:
    snap = snapshot(backends=(backend(address=V6),))
    metrics = Metrics(lambda: snap)
    metrics.observe_health_check("web", V6, 0.003)
    assert value(metrics, "lbtui_connections_total", proxy="web", backend=V6) is not None


def test_access_logs_of_an_ipv6_flow() -> None:
    ev = event(client_ip="fd00:40::5", vip_ip="fd00:10::1", backend_ip="fd00:20::11")
    line = json.loads(format_json(ev))
    assert line["client_ip"] == "fd00:40::5" and line["vip_ip"] == "fd00:10::1"
    assert line["backend_ip"] == "fd00:20::11" and line["backend_port"] == 8080
    assert '"TCP [fd00:10::1]:80 [fd00:20::11]:8080"' in format_clf(ev)
    assert format_clf(ev).startswith("fd00:40::5 - - [")


def test_wire_forms_carry_ipv6_endpoints_unchanged() -> None:
    cmd = model.Drain("web6", V6, 30.0)
    assert wire.decode_command(json.loads(json.dumps(wire.encode_command(cmd)))) == cmd
    snap = replace(snapshot(), flows=(flow("[fd00:40::5]:40000"),), flows_matched=1)
    back = wire.decode_snapshot(json.loads(json.dumps(wire.encode_snapshot(snap))))
    assert back.flows[0].client == "[fd00:40::5]:40000" and back.flows[0].backend == V6
