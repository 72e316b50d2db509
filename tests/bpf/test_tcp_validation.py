# SPDX-License-Identifier: Apache-2.0
"""TCP validation on real packets (BPF_PROG_TEST_RUN): RSTs honoured only in the window the data path
tracks (RFC 5961 style), a RST+SYN cannot move a flow, SYN|RST, SYN|FIN and bad checksums are dropped
and counted by reason (docs/datapath.md#tcp-validation)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lbtui.control.selection import weighted_table
from lbtui.dataplane import structs
from lbtui.dataplane.progrun import TC_ACT_OK, TC_ACT_SHOT, XDP_DROP, XDP_PASS
from tests.support.bpfrun import (
    BACKEND_ISN,
    BACKENDS,
    CLIENT,
    CLIENT_ISN,
    TABLE,
    VIP,
    Programs,
    backend_of,
    from_backend,
    handshake,
    source_of,
    to_vip,
)
from tests.support.maps import write_table


@pytest.fixture(scope="module")
def module_progs() -> Iterator[Programs]:
    progs = Programs(conntrack_entries=4096)
    yield progs
    progs.close()


@pytest.fixture
def progs(module_progs: Programs) -> Programs:
    module_progs.clear()
    write_table(module_progs.maps, 0, weighted_table({0: 1, 1: 1, 2: 1}, TABLE))
    return module_progs


def flow_flags(progs: Programs, sport: int) -> int:
    fwd = [e for e in progs.entries() if e.direction == structs.DIR_FORWARD and e.client[1] == sport]
    assert len(fwd) == 1, f"{len(fwd)} forward entries for port {sport}"
    return fwd[0].flags


def still_forwarded(progs: Programs, sport: int, backend: tuple[str, int], seq: int) -> None:
    verdict, out = progs.xdp(to_vip("PA", sport=sport, seq=seq, ack=BACKEND_ISN + 1, payload=b"data"))
    assert verdict == XDP_PASS and backend_of(out) == backend


def test_blind_rst_from_the_client_side_is_dropped_and_counted(progs: Programs) -> None:
    backend = handshake(progs, sport=40100)
    verdict, _ = progs.xdp(to_vip("R", sport=40100, seq=CLIENT_ISN + 1 + 2**31))
    assert verdict == XDP_DROP
    assert not flow_flags(progs, 40100) & structs.CT_F_RST
    assert progs.drops(0)["rst_out_of_window"] >= 1
    still_forwarded(progs, 40100, backend, CLIENT_ISN + 1)


def test_rst_at_the_expected_sequence_number_closes_the_flow(progs: Programs) -> None:
    handshake(progs, sport=40200)
    verdict, _ = progs.xdp(to_vip("R", sport=40200, seq=CLIENT_ISN + 1))
    assert verdict == XDP_PASS
    assert flow_flags(progs, 40200) & structs.CT_F_CLOSED


def test_rst_inside_the_window_is_passed_without_closing(progs: Programs) -> None:
    """The backend applies RFC 5961 itself (a challenge ACK); the load balancer keeps the flow."""
    backend = handshake(progs, sport=40300)
    verdict, out = progs.xdp(to_vip("R", sport=40300, seq=CLIENT_ISN + 1 + 5000))
    assert verdict == XDP_PASS and backend_of(out) == backend
    assert not flow_flags(progs, 40300) & structs.CT_F_CLOSED


def test_rst_then_syn_cannot_take_a_flow_over(progs: Programs) -> None:
    backend = handshake(progs, sport=40400)
    elsewhere = [b for b, addr in BACKENDS.items() if addr != backend]
    write_table(progs.maps, 0, weighted_table(dict.fromkeys(elsewhere, 1), TABLE))  # a re-pick would move it
    progs.xdp(to_vip("R", sport=40400, seq=CLIENT_ISN + 1 + 2**31))
    verdict, out = progs.xdp(to_vip("S", sport=40400, seq=31337))
    assert verdict == XDP_PASS and backend_of(out) == backend
    still_forwarded(progs, 40400, backend, CLIENT_ISN + 1)


def test_blind_rst_toward_the_client_is_dropped(progs: Programs) -> None:
    """A RST injected with a backend's address (routed back out through the load balancer)."""
    backend = handshake(progs, sport=40500)
    verdict, _ = progs.tc(from_backend(backend, "R", dport=40500, seq=BACKEND_ISN + 1 + 2**31, ack=0))
    assert verdict == TC_ACT_SHOT
    assert not flow_flags(progs, 40500) & structs.CT_F_RST
    verdict, out = progs.tc(from_backend(backend, "R", dport=40500, seq=BACKEND_ISN + 1, ack=0))
    assert verdict == TC_ACT_OK and source_of(out) == (VIP, 80)
    assert flow_flags(progs, 40500) & structs.CT_F_CLOSED


@pytest.mark.parametrize("flags", ["SR", "SF", "SRF"])
def test_syn_with_rst_or_fin_is_dropped(progs: Programs, flags: str) -> None:
    before = progs.drops(0)["tcp_flags"]
    verdict, _ = progs.xdp(to_vip(flags, sport=40600))
    assert verdict == XDP_DROP
    assert progs.drops(0)["tcp_flags"] == before + 1
    assert not progs.entries()


def test_syn_with_a_bad_checksum_is_dropped(progs: Programs) -> None:
    pkt = to_vip("S", sport=40700)
    pkt["TCP"].chksum = 0x1234
    before = progs.drops(0)["bad_checksum"]
    verdict, _ = progs.xdp(pkt)
    assert verdict == XDP_DROP
    assert progs.drops(0)["bad_checksum"] == before + 1
    assert not progs.entries()


def test_rst_with_a_bad_checksum_does_not_close(progs: Programs) -> None:
    backend = handshake(progs, sport=40800)
    pkt = to_vip("R", sport=40800, seq=CLIENT_ISN + 1)
    pkt["TCP"].chksum = 0x4321
    verdict, _ = progs.xdp(pkt)
    assert verdict == XDP_DROP
    assert not flow_flags(progs, 40800) & structs.CT_F_RST
    still_forwarded(progs, 40800, backend, CLIENT_ISN + 1)


def test_window_follows_the_window_scale_option(progs: Programs) -> None:
    """The backend offers 1024 << 7 = 131,072 bytes: a RST 100,000 bytes ahead is inside it."""
    verdict, out = progs.xdp(to_vip("S", sport=40900))
    backend = backend_of(out)
    progs.tc(from_backend(backend, "SA", dport=40900, window=1024))
    progs.xdp(to_vip("A", sport=40900, seq=CLIENT_ISN + 1, ack=BACKEND_ISN + 1))
    progs.tc(from_backend(backend, "A", dport=40900, seq=BACKEND_ISN + 1, ack=CLIENT_ISN + 1, window=1024))
    assert progs.xdp(to_vip("R", sport=40900, seq=CLIENT_ISN + 1 + 100_000))[0] == XDP_PASS
    assert progs.xdp(to_vip("R", sport=40900, seq=CLIENT_ISN + 1 + 300_000))[0] == XDP_DROP


def test_client_data_moves_the_window(progs: Programs) -> None:
    backend = handshake(progs, sport=41000)
    seq = CLIENT_ISN + 1
    for _ in range(3):
        progs.xdp(to_vip("PA", sport=41000, seq=seq, ack=BACKEND_ISN + 1, payload=b"y" * 1000))
        seq += 1000
    verdict, _ = progs.xdp(to_vip("R", sport=41000, seq=seq))
    assert verdict == XDP_PASS
    assert flow_flags(progs, 41000) & structs.CT_F_CLOSED
    assert backend  # the flow was tracked all along


def test_a_blind_segment_far_from_an_established_flow_does_not_move_it(progs: Programs) -> None:
    """Plain segments of established flows are tracked without the reverse entry, within
    LB_PLAIN_MAX_ADVANCE of the next sequence number (docs/datapath.md#tcp-validation)."""
    backend = handshake(progs, sport=41100)
    seq = CLIENT_ISN + 1
    for far in (2**31, 2**25):  # half the sequence space ahead, 32 MiB ahead: outside the bound
        verdict, out = progs.xdp(to_vip("PA", sport=41100, seq=seq + far, ack=BACKEND_ISN + 1, payload=b"z"))
        assert verdict == XDP_PASS and backend_of(out) == backend
    progs.xdp(to_vip("PA", sport=41100, seq=seq, ack=BACKEND_ISN + 1, payload=b"y" * 1000))
    verdict, _ = progs.xdp(to_vip("R", sport=41100, seq=seq + 1000))
    assert verdict == XDP_PASS
    assert flow_flags(progs, 41100) & structs.CT_F_CLOSED


def test_checksums_stay_valid_after_validation(progs: Programs) -> None:
    from tests.support.bpfrun import assert_checksums_valid

    backend = handshake(progs, sport=41100)
    _, out = progs.xdp(to_vip("PA", sport=41100, seq=CLIENT_ISN + 1, ack=BACKEND_ISN + 1, payload=b"z" * 33))
    assert_checksums_valid(out)
    _, out = progs.tc(from_backend(backend, "PA", dport=41100, seq=BACKEND_ISN + 1, payload=b"w" * 17))
    assert_checksums_valid(out)
    assert CLIENT  # the flow's client
