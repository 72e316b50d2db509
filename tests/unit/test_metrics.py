# SPDX-License-Identifier: Apache-2.0
"""Prometheus metrics (render, promtool, HTTP serving, monotonic counters) and rate meters."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lbtui import model
from lbtui.dataplane.structs import GLOBAL_COUNTERS, HIST_BOUNDS_MS, HIST_BUCKETS, hist_bucket
from lbtui.engine.measurements import fast_path_view
from lbtui.observe.histogram import histogram_from_counts
from lbtui.observe.metrics import BUCKETS_S, Metrics, parse_listen, rate_limit_scope


def backend(
    address: str = "10.0.2.11:8080",
    counters: model.Counters | None = None,
    health: model.Health = model.Health.UP,
    circuit: model.Circuit | None = model.Circuit.CLOSED,
    active: int = 3,
    weight: int = 5,
) -> model.BackendView:
    return model.BackendView(
        proxy="web",
        address=address,
        group="default",
        configured_weight=weight,
        effective_weight=weight,
        counters=counters or model.Counters(10, 1000, 8, 8000, 4, 4, 1),
        active_flows=active,
        health=health,
        circuit=circuit,
    )


def snapshot(
    backends: tuple[model.BackendView, ...] | None = None,
    drops: dict[str, int] | None = None,
    dns: tuple[model.DnsStatus, ...] = (),
    latency: tuple[model.LatencyView, ...] = (),
    taken_at: float = 1_700_000_000.0,
    fast_path: model.FastPathView | None = None,
) -> model.Snapshot:
    if backends is None:
        backends = (
            backend("10.0.2.11:8080"),
            backend("10.0.2.12:8080", health=model.Health.DOWN, circuit=model.Circuit.OPEN, weight=0),
            backend("10.0.2.13:8080", health=model.Health.UNKNOWN, circuit=model.Circuit.HALF_OPEN),
        )
    svc = model.ServiceView(
        name="web",
        vip="10.0.0.1",
        port=80,
        protocol="tcp",
        algorithm="weighted_round_robin",
        interfaces=("eth0",),
        backends=backends,
        drops=drops if drops is not None else {"no_backend": 2, "conntrack_full": 0, "rate_limit_source": 7},
    )
    return model.Snapshot(
        taken_at=taken_at,
        started_at=1_699_999_000.0,
        config_path=None,
        services=(svc,),
        conntrack=model.ConntrackSummary(entries=6, flows=3, tcp=3, capacity=1024),
        flows=(),
        dns=dns,
        latency=latency,
        fast_path=fast_path,
    )


def flow_event(kind: str = "closed", duration_s: float | None = 1.5, handshake_s: float | None = 0.0004):
    return model.FlowEvent(
        kind=kind,
        ts=1_700_000_000.0,
        proxy="web",
        protocol="tcp",
        client_ip="10.0.1.5",
        client_port=40000,
        vip_ip="10.0.0.1",
        vip_port=80,
        backend_ip="10.0.2.11",
        backend_port=8080,
        duration_s=duration_s,
        handshake_s=handshake_s,
        close_reason="fin",
    )


def latency_view(n: int = 1) -> model.LatencyView:
    """n connections of 1.5 s with a 0.4 ms handshake, in the data path's log2 buckets."""
    hs = [0] * HIST_BUCKETS
    du = [0] * HIST_BUCKETS
    hs[hist_bucket(400)] = n
    du[hist_bucket(1_500_000)] = n
    return model.LatencyView(
        proxy="web",
        backend="10.0.2.11:8080",
        handshake=histogram_from_counts(HIST_BOUNDS_MS, hs, 0.4 * n),
        duration=histogram_from_counts(HIST_BOUNDS_MS, du, 1500.0 * n),
    )


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_render_parses_and_has_every_family() -> None:
    snap = snapshot(dns=(model.DnsStatus("api.example", "web", last_success=1.0),), latency=(latency_view(),))
    metrics = Metrics(lambda: snap, version="9.9.9")
    metrics.observe_health_check("web", "10.0.2.11:8080", 0.003)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    expected = {
        "lbtui_connections_active": "gauge",
        "lbtui_connections": "counter",
        "lbtui_bytes": "counter",
        "lbtui_packets": "counter",
        "lbtui_backend_health": "gauge",
        "lbtui_backend_effective_weight": "gauge",
        "lbtui_circuit_breaker_state": "gauge",
        "lbtui_health_check_latency_seconds": "histogram",
        "lbtui_backend_handshake_seconds": "histogram",
        "lbtui_connection_duration_seconds": "histogram",
        "lbtui_dns_resolution_status": "gauge",
        "lbtui_drops": "counter",
        "lbtui_rate_limited": "counter",
        "lbtui_build_info": "gauge",
    }
    for name, kind in expected.items():
        assert name in families, name
        assert families[name].type == kind, name

    pb = {"proxy": "web", "backend": "10.0.2.11:8080"}
    assert value(metrics, "lbtui_build_info", version="9.9.9") == 1
    assert value(metrics, "lbtui_connections_total", **pb) == 4
    assert value(metrics, "lbtui_bytes_total", direction="in", **pb) == 1000
    assert value(metrics, "lbtui_bytes_total", direction="out", **pb) == 8000
    assert value(metrics, "lbtui_packets_total", direction="in", **pb) == 10
    assert value(metrics, "lbtui_packets_total", direction="out", **pb) == 8
    assert value(metrics, "lbtui_connections_active", **pb) == 3
    assert value(metrics, "lbtui_backend_effective_weight", **pb) == 5
    assert value(metrics, "lbtui_backend_health", **pb) == 1
    assert value(metrics, "lbtui_backend_health", proxy="web", backend="10.0.2.12:8080") == 0
    assert value(metrics, "lbtui_backend_health", proxy="web", backend="10.0.2.13:8080") is None  # unknown
    assert value(metrics, "lbtui_circuit_breaker_state", **pb) == 0
    assert value(metrics, "lbtui_circuit_breaker_state", proxy="web", backend="10.0.2.13:8080") == 1
    assert value(metrics, "lbtui_circuit_breaker_state", proxy="web", backend="10.0.2.12:8080") == 2
    assert value(metrics, "lbtui_drops_total", proxy="web", reason="no_backend") == 2
    assert value(metrics, "lbtui_drops_total", proxy="web", reason="rate_limit_source") == 7
    assert value(metrics, "lbtui_rate_limited_total", proxy="web", scope="source") == 7
    assert value(metrics, "lbtui_dns_resolution_status", proxy="web", hostname="api.example") == 1
    assert value(metrics, "lbtui_backend_handshake_seconds_count", **pb) == 1
    assert value(metrics, "lbtui_backend_handshake_seconds_sum", **pb) == pytest.approx(0.0004)
    assert value(metrics, "lbtui_connection_duration_seconds_count", **pb) == 1
    assert value(metrics, "lbtui_connection_duration_seconds_sum", **pb) == pytest.approx(1.5)
    assert value(metrics, "lbtui_connection_duration_seconds_bucket", le="1.048576", **pb) == 0
    assert value(metrics, "lbtui_connection_duration_seconds_bucket", le="2.097152", **pb) == 1
    assert value(metrics, "lbtui_health_check_latency_seconds_count", **pb) == 1


def test_histogram_buckets_match_the_console_histograms() -> None:
    assert BUCKETS_S[0] == 0.00005
    assert BUCKETS_S[-1] == 600.0
    assert len(BUCKETS_S) == 30


def test_histograms_never_go_down_when_the_data_path_restarts_them() -> None:
    current = {"snap": snapshot(latency=(latency_view(n=5),))}
    metrics = Metrics(lambda: current["snap"])
    pb = {"proxy": "web", "backend": "10.0.2.11:8080"}
    assert value(metrics, "lbtui_connection_duration_seconds_count", **pb) == 5
    current["snap"] = snapshot(
        latency=(latency_view(n=2),), taken_at=1_700_000_002.0
    )  # a new backend id: counts restart
    assert value(metrics, "lbtui_connection_duration_seconds_count", **pb) == 7


def test_dns_status_failing_and_never_resolved() -> None:
    snap = snapshot(
        dns=(
            model.DnsStatus(
                "a.example", "web", last_success=1.0, consecutive_failures=2, last_error="timeout"
            ),
            model.DnsStatus("b.example", "web"),
        )
    )
    metrics = Metrics(lambda: snap)
    assert value(metrics, "lbtui_dns_resolution_status", proxy="web", hostname="a.example") == 0
    assert value(metrics, "lbtui_dns_resolution_status", proxy="web", hostname="b.example") == 0


def test_promtool_accepts_the_page(tmp_path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    snap = snapshot(
        dns=(model.DnsStatus("api.example", "web", last_success=1.0),),
        latency=(latency_view(),),
        fast_path=fast_path_view(GLOBAL_VALUES),
    )
    metrics = Metrics(lambda: snap)
    metrics.observe_health_check("web", "10.0.2.11:8080", 0.003)
    assert b'lbtui_fast_path_fallbacks_total{reason="no_neigh"}' in metrics.render()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=metrics.render(), capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# every global counter of the data path with a value of its own (its position + 1, times 1000)
GLOBAL_VALUES = {name: (i + 1) * 1000 for i, name in enumerate(GLOBAL_COUNTERS)}


def test_fast_path_counters_by_direction_and_fallback_reason() -> None:
    current = {"snap": snapshot(fast_path=fast_path_view(GLOBAL_VALUES))}
    metrics = Metrics(lambda: current["snap"])
    page = samples(metrics)
    assert (
        value(metrics, "lbtui_fast_path_packets_total", direction="forward")
        == GLOBAL_VALUES["fast_path_forwarded"]
    )
    assert (
        value(metrics, "lbtui_fast_path_packets_total", direction="reply")
        == GLOBAL_VALUES["fast_path_reply_forwarded"]
    )
    directions = {
        dict(labels)["direction"] for name, labels in page if name == "lbtui_fast_path_packets_total"
    }
    assert directions == {"forward", "reply"}
    # one series per fallback counter the data path declares, each with that counter's value
    fallbacks = {
        dict(labels)["reason"]: v
        for (name, labels), v in page.items()
        if name == "lbtui_fast_path_fallbacks_total"
    }
    declared = {
        n.removeprefix("fast_path_"): GLOBAL_VALUES[n]
        for n in GLOBAL_COUNTERS
        if n.startswith("fast_path_") and not n.endswith("_forwarded")
    }
    assert fallbacks == declared
    assert set(fallbacks) == {
        "no_neigh",
        "frag_needed",
        "ttl",
        "ip_options",
        "unmanaged",
        "vlan",
        "fib_other",
        "other_host",
    }

    # maps recreated (a restart that could not adopt): the counters go on from where they were
    restarted = {name: 5 for name in GLOBAL_COUNTERS}
    current["snap"] = snapshot(fast_path=fast_path_view(restarted), taken_at=1_700_000_010.0)
    assert (
        value(metrics, "lbtui_fast_path_packets_total", direction="forward")
        == GLOBAL_VALUES["fast_path_forwarded"] + 5
    )
    assert (
        value(metrics, "lbtui_fast_path_fallbacks_total", reason="ttl") == GLOBAL_VALUES["fast_path_ttl"] + 5
    )


def test_next_hop_watch_counts() -> None:
    watch = model.NextHopWatchCounts(batches=7, messages=40, skipped=25, forgets=6, lost=1, evicted=2)
    current = {"snap": snapshot(fast_path=fast_path_view(GLOBAL_VALUES, watch))}
    metrics = Metrics(lambda: current["snap"])
    assert value(metrics, "lbtui_fast_path_netlink_messages_total", effect="changes") == 15
    assert value(metrics, "lbtui_fast_path_netlink_messages_total", effect="none") == 25
    assert value(metrics, "lbtui_fast_path_next_hop_forgets_total") == 6
    assert value(metrics, "lbtui_fast_path_netlink_lost_total") == 1
    assert value(metrics, "lbtui_fast_path_neighbours_evicted_total") == 2
    # a restart starts a new watch: the exported counters go on from where they were
    watch = model.NextHopWatchCounts(batches=1, messages=3, skipped=1, forgets=1)
    current["snap"] = snapshot(fast_path=fast_path_view(GLOBAL_VALUES, watch), taken_at=1_700_000_010.0)
    assert value(metrics, "lbtui_fast_path_netlink_messages_total", effect="changes") == 15 + 2
    assert value(metrics, "lbtui_fast_path_next_hop_forgets_total") == 6 + 1


def test_no_fast_path_series_while_the_fast_path_is_off() -> None:
    metrics = Metrics(lambda: snapshot(fast_path=None))
    names = {name for name, _ in samples(metrics)}
    assert not {n for n in names if n.startswith("lbtui_fast_path_")}


def test_no_snapshot_or_a_failing_one_still_renders() -> None:
    assert value(Metrics(lambda: None, version="1"), "lbtui_build_info", version="1") == 1

    def broken() -> model.Snapshot:
        raise RuntimeError("engine gone")

    assert value(Metrics(broken, version="1"), "lbtui_build_info", version="1") == 1


def test_two_instances_do_not_clash() -> None:
    first = Metrics(lambda: snapshot(latency=(latency_view(),)))
    second = Metrics(lambda: None)
    pb = {"proxy": "web", "backend": "10.0.2.11:8080"}
    assert value(first, "lbtui_connection_duration_seconds_count", **pb) == 1
    assert value(second, "lbtui_connection_duration_seconds_count", **pb) is None


def test_counters_never_decrease_across_resets_and_removal() -> None:
    current = {
        "snap": snapshot(backends=(backend(counters=model.Counters(100, 10_000, 90, 90_000, 50, 50, 0)),))
    }
    metrics = Metrics(lambda: current["snap"])
    pb = {"proxy": "web", "backend": "10.0.2.11:8080"}
    assert value(metrics, "lbtui_connections_total", **pb) == 50

    # the data-path counters start again (backend re-added / maps recreated)
    current["snap"] = snapshot(backends=(backend(counters=model.Counters(2, 200, 1, 100, 1, 1, 0)),))
    assert value(metrics, "lbtui_connections_total", **pb) == 51
    assert value(metrics, "lbtui_bytes_total", direction="in", **pb) == 10_200

    # the backend disappears, then comes back from zero
    current["snap"] = snapshot(backends=())
    assert value(metrics, "lbtui_connections_total", **pb) is None
    current["snap"] = snapshot(backends=(backend(counters=model.Counters(1, 10, 0, 0, 3, 0, 0)),))
    assert value(metrics, "lbtui_connections_total", **pb) == 54
    assert value(metrics, "lbtui_bytes_total", direction="in", **pb) == 10_210

    # drops reset too
    current["snap"] = snapshot(
        backends=(backend(counters=model.Counters(1, 10, 0, 0, 3, 0, 0)),), drops={"rate_limit_source": 1}
    )
    assert value(metrics, "lbtui_rate_limited_total", proxy="web", scope="source") == 8
    assert value(metrics, "lbtui_drops_total", proxy="web", reason="rate_limit_source") == 8


def test_counters_are_monotonic_over_random_snapshots() -> None:
    import random

    rng = random.Random(7)
    current = {"snap": snapshot()}
    metrics = Metrics(lambda: current["snap"])
    previous: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for _ in range(60):
        picked = tuple(
            backend(
                address,
                counters=model.Counters(*(rng.randrange(0, 1000) for _ in range(7))),
            )
            for address in ("10.0.2.11:8080", "10.0.2.12:8080")
            if rng.random() < 0.8
        )
        current["snap"] = snapshot(backends=picked, drops={"no_backend": rng.randrange(0, 50)})
        for key, v in samples(metrics).items():
            name = key[0]
            if name.endswith("_total") and key in previous:
                assert v >= previous[key], key
            previous[key] = v


def test_track_notices_resets_between_scrapes() -> None:
    current = {"snap": snapshot(backends=(backend(counters=model.Counters(new_flows=100)),))}
    metrics = Metrics(lambda: current["snap"])
    metrics.track(current["snap"])
    metrics.track(snapshot(backends=(backend(counters=model.Counters(new_flows=5)),)))  # reset
    current["snap"] = snapshot(backends=(backend(counters=model.Counters(new_flows=150)),))
    # without track() the scrape would see 100 -> 150 and report 150; with it: 100 + 150
    assert value(metrics, "lbtui_connections_total", proxy="web", backend="10.0.2.11:8080") == 250


def test_an_older_snapshot_is_not_taken_for_a_reset() -> None:
    newer = dataclasses.replace(
        snapshot(backends=(backend(counters=model.Counters(new_flows=200)),)), taken_at=2_000_000_000.0
    )
    older = snapshot(backends=(backend(counters=model.Counters(new_flows=100)),))
    metrics = Metrics(lambda: older)  # a scrape that fetched its snapshot before track() ran
    metrics.track(newer)
    assert value(metrics, "lbtui_connections_total", proxy="web", backend="10.0.2.11:8080") == 200
    metrics.track(dataclasses.replace(newer, taken_at=2_000_000_001.0))
    assert value(metrics, "lbtui_connections_total", proxy="web", backend="10.0.2.11:8080") == 200


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR as any server sets it: TIME_WAIT leftovers do not count, a listener would
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_serves_only_on_its_path_and_stop_frees_the_port() -> None:
    metrics = Metrics(lambda: snapshot(), version="1.2.3")
    metrics.start("127.0.0.1:0", "/metrics")
    try:
        address = metrics.server_address
        assert address is not None
        host, port = address
        assert not port_is_free(port)  # the check below means something
        status, body = http_get(f"http://{host}:{port}/metrics")
        assert status == 200
        assert b'lbtui_build_info{version="1.2.3"} 1.0' in body
        assert b"lbtui_connections_total" in body
        assert http_get(f"http://{host}:{port}/other")[0] == 404
        assert http_get(f"http://{host}:{port}/")[0] == 404
        with pytest.raises(RuntimeError):
            metrics.start("127.0.0.1:0", "/metrics")
    finally:
        metrics.stop()
    assert metrics.server_address is None
    assert port_is_free(port)

    # start/stop again on the same port, several times
    for _ in range(3):
        metrics.start(f"127.0.0.1:{port}", "custom")
        try:
            assert http_get(f"http://127.0.0.1:{port}/custom")[0] == 200
            assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 404
        finally:
            metrics.stop()
        assert port_is_free(port)
    metrics.stop()  # stopping twice is harmless


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    assert parse_listen(":9100") == ("0.0.0.0", 9100)
    for bad in ("127.0.0.1", "host:port", "1.2.3.4:70000", ""):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_rate_limit_scope() -> None:
    assert rate_limit_scope("rate_source") == "source"
    assert rate_limit_scope("rate_limit_backend") == "backend"
    assert rate_limit_scope("no_backend") is None
    assert rate_limit_scope("rate_") is None


def test_snapshot_dataclasses_still_match() -> None:
    # the collector relies on these model fields; fail loudly if they are renamed
    names = {f.name for f in dataclasses.fields(model.Counters)}
    assert {"packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows"} <= names


def test_every_metric_is_declared_once_prefixed_and_on_the_page() -> None:
    from lbtui.observe.metrics import METRICS

    assert len({m.name for m in METRICS}) == len(METRICS)
    assert all(m.name.startswith("lbtui_") for m in METRICS)
    snap = snapshot(dns=(model.DnsStatus("api.example", "web", last_success=1.0),), latency=(latency_view(),))
    metrics = Metrics(lambda: snap)
    metrics.observe_health_check("web", "10.0.2.11:8080", 0.003)
    page = {f.name: f.type for f in text_string_to_metric_families(metrics.render().decode())}
    # the parser names counter families without _total
    declared = {m.name.removesuffix("_total") if m.type == "counter" else m.name: m.type for m in METRICS}
    assert page == declared


def test_series_of_backends_that_came_and_went_leave_the_page() -> None:
    """100 backends appear (as DNS answers change) and go again: the page keeps only live series,
    and the counter state of the departed ones is forgotten after FORGET_AFTER_S."""
    from lbtui.observe.metrics import FORGET_AFTER_S

    live = ("10.0.2.11:8080",)
    t = 1_700_000_000.0
    current = {"snap": snapshot(backends=tuple(backend(a) for a in live), taken_at=t)}
    metrics = Metrics(lambda: current["snap"])
    for wave in range(10):  # 10 waves of 10 short-lived backends
        t += 1
        churn = tuple(f"10.0.3.{wave * 10 + i}:8080" for i in range(10))
        current["snap"] = snapshot(
            backends=tuple(backend(a) for a in (*live, *churn)),
            latency=tuple(dataclasses.replace(latency_view(), backend=a) for a in churn),
            taken_at=t,
        )
        metrics.track(current["snap"])
        for address in churn:
            metrics.observe_health_check("web", address, 0.002)
        assert {labels.get("backend") for labels in _backend_labels(metrics)} >= set(churn)
    t += 1
    current["snap"] = snapshot(backends=tuple(backend(a) for a in live), taken_at=t)
    metrics.track(current["snap"])
    on_page = {labels["backend"] for labels in _backend_labels(metrics)}
    assert on_page == set(live)
    assert metrics.tracked_series > 100 * 7  # departed series are still remembered for a while...
    t += FORGET_AFTER_S + 1
    current["snap"] = snapshot(backends=tuple(backend(a) for a in live), taken_at=t)
    metrics.track(current["snap"])
    assert {labels["backend"] for labels in _backend_labels(metrics)} == set(live)
    per_live_backend = 7  # connections, handshakes, failures, bytes in/out, packets in/out
    drops = len(snapshot().services[0].drops) + 1  # + the rate-limited scope
    assert metrics.tracked_series == per_live_backend * len(live) + drops + 2  # ...then forgotten


def _backend_labels(metrics: Metrics) -> list[dict[str, str]]:
    return [
        s.labels
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if "backend" in s.labels
    ]


def test_the_number_of_remembered_removed_series_is_bounded() -> None:
    from lbtui.observe.metrics import CounterTracker

    tracker = CounterTracker(forget_after_s=1e9, max_removed=50)
    for i in range(200):
        tracker.update(float(i), [("lbtui_connections_total", ("web", f"10.0.3.{i}:80"), 1.0)])
    assert len(tracker) == 51  # the live one and the 50 most recently removed


def test_ipv6_backends_are_labelled_with_their_bracketed_endpoints(tmp_path) -> None:
    """Every backend-labelled family writes an IPv6 backend as "[ip]:port" (addresses.format_endpoint),
    the form of the config, `lbtui ctl` and the console, so one label value finds it everywhere."""
    six = "[fd00:20::11]:8080"
    snap = snapshot(
        backends=(backend(six), backend("10.0.2.11:8080")),
        latency=(dataclasses.replace(latency_view(), backend=six),),
    )
    metrics = Metrics(lambda: snap)
    metrics.observe_health_check("web", six, 0.003)
    counters = backend(six).counters
    assert value(metrics, "lbtui_connections_total", proxy="web", backend=six) == counters.new_flows
    assert value(metrics, "lbtui_bytes_total", proxy="web", backend=six, direction="in") == counters.bytes_in
    assert value(metrics, "lbtui_backend_effective_weight", proxy="web", backend=six) == 5
    assert value(metrics, "lbtui_connections_active", proxy="web", backend=six) == 3
    assert value(metrics, "lbtui_backend_health", proxy="web", backend=six) == 1
    assert value(metrics, "lbtui_connection_duration_seconds_count", proxy="web", backend=six) == 1
    assert value(metrics, "lbtui_health_check_latency_seconds_count", proxy="web", backend=six) == 1
    labelled = {dict(labels)["backend"] for (_, labels) in samples(metrics) if "backend" in dict(labels)}
    assert labelled == {six, "10.0.2.11:8080"}
    promtool = shutil.which("promtool")
    if promtool is not None:
        result = subprocess.run(
            [promtool, "check", "metrics"], input=metrics.render(), capture_output=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
