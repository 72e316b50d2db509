# SPDX-License-Identifier: Apache-2.0
"""The engine's history (lbtui/engine/history.py) over the in-memory dataplane: one point per second
of every series per backend and proxy, windowed latency in every snapshot, events as marks, removed
backends aging out, the retention as a setting, and the control loop's one publication per second."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lbtui import model
from lbtui.dataplane.memory import MemoryDataplane
from lbtui.engine import Engine
from lbtui.engine.history import RETIRED_MAX
from tests.support.engine import START_WALL, ManualClock, Probes, make_engine, running, settle

pytestmark = pytest.mark.anyio

WEB = """
[settings]
table_size = 97
max_connections = 4096
control_socket = "/run/lbtui/unit.sock"
history_s = 600
[settings.metrics]
enabled = false
[[proxy]]
name = "web"
interfaces = ["lb0"]
vip = "10.0.0.1"
port = 80
[proxy.rate_limit]
per_source = { rate = 100, burst = 200 }
[[proxy.backend]]
address = "10.0.2.11:8080"
weight = 1
[[proxy.backend]]
address = "10.0.2.12:8080"
weight = 1
[[proxy.source_route]]
cidr = "192.168.0.0/16"
backends = [{ address = "10.0.2.11:8080", weight = 1 }]
[[proxy]]
name = "dns"
interfaces = ["lb0"]
vip = "10.0.0.1"
port = 53
protocol = "udp"
[[proxy.backend]]
address = "10.0.4.10:53"
weight = 1
"""
B1, B2, DNS1 = "10.0.2.11:8080", "10.0.2.12:8080", "10.0.4.10:53"
T0 = int(START_WALL)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def second(e: Engine, clock: ManualClock) -> model.Snapshot:
    """One second passes: the control tick and the snapshot of the new second."""
    clock.advance(1.0)
    e.tick()
    e.publish()
    return e.snapshot()


def values(e: Engine, proxy: str, backend: str | None, name: str, since: float | None = None) -> list:
    answer = e.history(model.HistoryQuery(proxy, backend, since=since, series=(name,)))
    (history,) = answer.histories
    series = history.get(name)
    assert series is not None
    return list(series.values)


def web_flows(dp: MemoryDataplane, n: int, port: int, client: str = "192.0.2.1") -> None:
    """n answered flows with 100 bytes in and 1000 out each, closed (FIN both ways)."""
    for i in range(n):
        f = dp.connect(f"{client}:{port + i}", "10.0.0.1:80")
        assert f is not None
        dp.answer(f)
        dp.transfer(f, bytes_in=100, bytes_out=1000)
        dp.finish(f)


async def test_one_point_per_second_of_every_series_per_backend_and_proxy():
    clock = ManualClock()
    async with running(WEB, clock=clock) as (e, dp):
        assert e.snapshot().history_s == 600
        for s in range(5):
            web_flows(dp, 10, 1000 + 100 * s)
            second(e, clock)
        answer = e.history(model.HistoryQuery("web", B1))
        assert answer.kept_s == 600 and answer.taken_at == START_WALL + 5
        (history,) = answer.histories
        assert history.start == T0 and history.end == T0 + 5  # the start's point, then one a second
        assert set(model.HISTORY_SERIES) <= {s.name for s in history.series}
        both = values(e, "web", None, "new_flows")
        per_backend = [values(e, "web", b, "new_flows") for b in (B1, B2)]
        assert both[0] is None and both[1:] == [10.0] * 5  # the first point has no second before it
        assert [a + b for a, b in zip(per_backend[0][1:], per_backend[1][1:], strict=True)] == [10.0] * 5
        assert values(e, "web", None, "bytes_out")[1:] == [10_000.0] * 5
        assert values(e, "web", None, "packets_in")[1:] == [20.0] * 5  # the SYN and one more each
        assert values(e, "web", None, "failed_handshakes")[1:] == [0.0] * 5
        # UDP: no handshakes, so no handshake series
        dns = e.history(model.HistoryQuery("dns", DNS1)).histories[0]
        assert dns.get("handshake_p99_ms") is None and dns.get("failed_handshakes") is None
        assert dns.get("duration_p99_ms") is not None


async def test_rates_span_a_late_second_and_skipped_seconds_have_no_point():
    clock = ManualClock()
    async with running(WEB, clock=clock) as (e, dp):
        second(e, clock)
        web_flows(dp, 30, 1000)
        clock.advance(2.0)  # the loop was late: two seconds in one
        second(e, clock)
        got = values(e, "web", None, "new_flows")
        assert got[-4:] == [0.0, None, None, 10.0]  # 30 flows over 3 s; the seconds between unknown


async def test_active_flows_failed_handshakes_and_drops_by_reason():
    clock = ManualClock()
    async with running(WEB, clock=clock) as (e, dp):
        second(e, clock)
        open_flows = []
        for i in range(6):
            f = dp.connect(f"192.0.2.7:{2000 + i}", "10.0.0.1:80")
            assert f is not None
            dp.answer(f)
            open_flows.append(f)
        refused = dp.connect("192.0.2.8:3000", "10.0.0.1:80")
        assert refused is not None
        dp.refuse(refused)
        web = e.topology.proxies["web"].service_id
        dp.add_service_counters(web, drops={"rate_limit_source": 4})
        await e.sweep()
        second(e, clock)
        assert values(e, "web", None, "active_flows")[-1] == 6.0
        got = (
            e.history(model.HistoryQuery("web", refused.backend_address))
            .histories[0]
            .get("failed_handshakes")
        )
        assert got is not None and got.values[-1] == 1.0
        assert values(e, "web", None, "failed_handshakes")[-1] == 1.0
        assert values(e, "web", None, "drops.rate_limit_source")[-1] == 4.0
        names = {s.name for s in e.history(model.HistoryQuery("web")).histories[0].series}
        assert "drops.no_backend" not in names  # a reason gets a series once it happens
        second(e, clock)
        assert values(e, "web", None, "drops.rate_limit_source")[-1] == 0.0


async def test_windows_show_a_backend_turning_slow_within_10s_beside_lifetime():
    clock = ManualClock()
    async with running(WEB, clock=clock) as (e, dp):
        b1 = e.backend_id("web", B1)
        for _ in range(120):  # two minutes at ~1 ms
            dp.add_latency(b1, handshake_us=[900] * 20, duration_us=[5000] * 20)
            snap = second(e, clock)
        view = snap.latency_of("web", B1)
        assert view is not None and [w.seconds for w in view.windows] == list(model.LATENCY_WINDOWS_S)
        fast = view.window(10)
        assert fast is not None and fast.handshake is not None and fast.handshake.count == 200
        assert fast.handshake.p99_ms is not None and fast.handshake.p99_ms < 1.1
        dp.add_latency(b1, handshake_us=[50_000] * 20, duration_us=[55_000] * 20)  # then ~50 ms
        view = second(e, clock).latency_of("web", B1)
        assert view is not None
        window = view.window(10)  # one second of slow handshakes (20 of 200) moves the 10 s p99
        assert window is not None and window.handshake is not None and window.handshake.p99_ms is not None
        assert window.handshake.p99_ms > 32
        for _ in range(9):
            dp.add_latency(b1, handshake_us=[50_000] * 20, duration_us=[55_000] * 20)
            snap = second(e, clock)
        view = snap.latency_of("web", B1)
        assert view is not None and view.handshake is not None
        ten, five_min = view.window(10), view.window(300)
        assert ten is not None and ten.handshake is not None and ten.duration is not None
        assert ten.handshake.p50_ms is not None and ten.handshake.p50_ms > 32  # all slow for 10 s
        assert ten.duration.p50_ms is not None and ten.duration.p50_ms > 32
        assert view.handshake.p50_ms is not None and view.handshake.p50_ms < 1.1  # lifetime lags
        assert five_min is not None and five_min.handshake is not None
        assert five_min.handshake.count == 2600  # everything since the start: under 5 min
        p99 = values(e, "web", B1, "handshake_p99_ms")
        assert p99[-1] == pytest.approx(ten.handshake.p99_ms, rel=1e-5) and p99[-12] < 1.1
        proxy = values(e, "web", None, "handshake_p99_ms")  # the proxy merges its backends
        assert proxy[-1] is not None and proxy[-1] > 32
        udp = snap.latency_of("dns", DNS1)
        assert udp is not None and all(w.handshake is None for w in udp.windows)


async def test_drains_reloads_and_circuit_changes_are_marks_of_their_targets():
    clock = ManualClock()
    async with running(WEB, clock=clock) as (e, dp):
        second(e, clock)
        result = await e.execute(model.Drain("web", B2))
        assert result.ok, result.message
        second(e, clock)
        await e.execute(model.Reload())
        second(e, clock)
        marks = e.history(model.HistoryQuery("web", B2)).marks
        assert [m.kind for m in marks] == ["drain", "reload"] and marks[0].backend == B2
        assert [m.kind for m in e.history(model.HistoryQuery("web", B1)).marks] == ["reload"]
        assert [m.kind for m in e.history(model.HistoryQuery("web")).marks] == ["drain", "reload"]
        with pytest.raises(ValueError, match="a backend needs its proxy"):
            e.history(model.HistoryQuery(backend=B1))


DNS_WEB = """
[settings]
table_size = 97
max_connections = 4096
control_socket = "/run/lbtui/unit.sock"
history_s = 300
[settings.metrics]
enabled = false
[[proxy]]
name = "api"
interfaces = ["lb0"]
vip = "10.0.0.1"
port = 80
[[proxy.backend]]
host = "api.internal"
port = 8080
dns_refresh_s = 0.02
"""


async def test_backends_that_come_and_go_age_out_and_memory_stays_bounded():
    """A DNS name whose answer changes every second: the store keeps the live backends and at most
    RETIRED_MAX that left, whatever the churn; the windows forget those that left at once."""
    clock = ManualClock()
    probes = Probes(dns={"api.internal": ("10.9.0.1",)})
    async with running(DNS_WEB, clock=clock, probes=probes) as (e, dp):
        recorder = e.recorder
        churn = RETIRED_MAX + 20

        def address(i: int) -> str:
            return f"10.9.{1 + i // 200}.{1 + i % 200}"

        for i in range(churn):
            probes.dns["api.internal"] = (address(i),)
            await settle(lambda i=i: {m.ip for m in e.topology.backends.values()} == {address(i)}, "dns")
            second(e, clock)
        targets = recorder.store.targets
        assert len(targets) == 1 + 1 + RETIRED_MAX  # the proxy, the live backend, those that left
        series = max(len(e.history(model.HistoryQuery(p, b)).histories[0].series) for p, b in targets)
        assert recorder.store.nbytes() <= len(targets) * series * 300 * 4
        assert set(recorder.windows._duration) == {("api", None), ("api", f"{address(churn - 1)}:8080")}
        # the newest that left still show their past; the oldest were forgotten
        assert ("api", f"{address(churn - 2)}:8080") in targets
        assert ("api", f"{address(0)}:8080") not in targets
        gone = values(e, "api", f"{address(churn - 2)}:8080", "active_flows")
        assert gone[-1] is None and gone[-2] == 0.0


async def test_retention_is_a_setting_and_a_reload_resizes_it_keeping_the_newest_points():
    clock = ManualClock()
    async with running(WEB, clock=clock) as (e, dp):
        for s in range(20):
            web_flows(dp, s % 7, 1000 + 10 * s)
            second(e, clock)
        before = values(e, "web", None, "new_flows")
        assert e.config.path is not None
        with open(e.config.path) as f:
            text = f.read()
        with open(e.config.path, "w") as f:
            f.write(text.replace("history_s = 600", "history_s = 300"))
        assert (await e.execute(model.Reload())).ok
        assert e.snapshot().history_s == 300
        assert values(e, "web", None, "new_flows") == before
        for _ in range(400):
            second(e, clock)
        assert len(values(e, "web", None, "new_flows")) == 300


async def test_history_is_answered_from_other_threads_while_the_loop_records():
    clock = ManualClock()
    async with running(WEB, clock=clock) as (e, dp):
        stop = threading.Event()
        errors: list[BaseException] = []

        def ask() -> None:
            while not stop.is_set():
                try:
                    for h in e.history(model.HistoryQuery()).histories:
                        assert len({len(s.values) for s in h.series}) <= 1
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    return

        reader = threading.Thread(target=ask)
        reader.start()
        try:
            for s in range(300):
                web_flows(dp, 1, 5000 + s)
                second(e, clock)
                await asyncio.sleep(0)
        finally:
            stop.set()
            reader.join()
        assert not errors, errors


async def test_the_control_loop_publishes_once_at_the_start_of_each_wall_second():
    clock = ManualClock(wall=START_WALL + 0.9)
    async with running(WEB, clock=clock, loops=True) as (e, dp):
        await settle(lambda: e.recorder.store.span(), "the first point")
        for _ in range(3):
            clock.advance(0.5)  # a second begins every other step
            await asyncio.sleep(0.3)  # a tick
        got = e.history(model.HistoryQuery("web"))
        (history,) = got.histories
        assert history.start == T0 and history.end == T0 + 2
        assert all(len(s.values) == 3 for s in history.series)


async def test_a_stopped_engine_is_not_due_again_within_the_same_second():
    """Not running: nothing is recorded, and once a second's snapshot is published the recorder is
    not due again until the next second (else the control loop would publish at every tick)."""
    clock = ManualClock()
    engine, _dp = make_engine(WEB, clock=clock)
    assert engine.recorder.due()
    engine.publish()
    assert not engine.recorder.due()
    clock.advance(1.0)
    assert engine.recorder.due()
    engine.publish()
    assert not engine.recorder.due()
    answer = engine.history(model.HistoryQuery("web", B1, series=("new_flows",)))
    assert all(not h.get("new_flows").values for h in answer.histories)  # type: ignore[union-attr]
