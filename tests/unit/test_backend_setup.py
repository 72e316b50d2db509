# SPDX-License-Identifier: Apache-2.0
"""lbtui backend-setup without a kernel: VIP parsing, which sysctls it changes, the state file."""

from __future__ import annotations

import pytest

from lbtui import backend_setup
from lbtui.backend_setup import BackendState, SetupError, parse_vips, sysctl_plan


def test_vips_are_normalised_and_deduplicated():
    assert parse_vips(["10.100.0.1", " 10.100.0.1", "FD00::0001"]) == ("10.100.0.1", "fd00::1")


@pytest.mark.parametrize("bad", ["10.100.0", "127.0.0.1", "224.0.0.1", "0.0.0.0", "fe80::1", "::", "vip"])
def test_bad_vips_are_refused(bad):
    with pytest.raises(SetupError, match="--vip"):
        parse_vips([bad])


def reader(values: dict[str, int]):
    def read(key: str) -> str:
        return str(values.get(key, 0))

    return read


def test_fresh_namespace_gets_every_arp_setting_and_no_rp_filter_change():
    assert sysctl_plan("eth0", reader({})) == {
        "net/ipv4/conf/all/arp_ignore": "1",
        "net/ipv4/conf/eth0/arp_ignore": "1",
        "net/ipv4/conf/all/arp_announce": "2",
        "net/ipv4/conf/eth0/arp_announce": "2",
    }


def test_stricter_settings_are_left_alone_and_strict_rp_filter_becomes_loose():
    values = {
        "net/ipv4/conf/all/arp_ignore": 2,  # stricter than 1: kept
        "net/ipv4/conf/eth0/arp_ignore": 8,
        "net/ipv4/conf/all/arp_announce": 2,
        "net/ipv4/conf/eth0/arp_announce": 2,
        "net/ipv4/conf/all/rp_filter": 1,  # max(all, eth0) = 1: strict, eth0 made loose
    }
    assert sysctl_plan("eth0", reader(values)) == {"net/ipv4/conf/eth0/rp_filter": "2"}


@pytest.mark.parametrize(("all_", "iface"), [(0, 0), (2, 0), (0, 2), (1, 2)])
def test_loose_or_off_rp_filter_is_not_touched(all_, iface):
    values = {"net/ipv4/conf/all/rp_filter": all_, "net/ipv4/conf/eth0/rp_filter": iface}
    assert "net/ipv4/conf/eth0/rp_filter" not in sysctl_plan("eth0", reader(values))


def test_state_file_round_trip():
    state = BackendState(
        netns_cookie=7,
        interface="eth0",
        vips=("10.100.0.1", "fd00::1"),
        added_addresses=("10.100.0.1/32",),
        sysctls=(("net/ipv4/conf/all/arp_ignore", "0"),),
        clsact_created=True,
    )
    assert BackendState.from_json(state.to_json()) == state


def test_state_file_of_an_unknown_version_is_refused():
    with pytest.raises(SetupError, match="version"):
        BackendState.from_json('{"version": 99, "netns_cookie": 1, "interface": "x"}')


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        backend_setup.main([])
    assert e.value.code == 2 and "--vip" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        backend_setup.main(["--undo", "--vip", "10.0.0.1"])
