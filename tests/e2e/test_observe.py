# SPDX-License-Identifier: Apache-2.0
"""Observability end to end: ring-buffer events -> access log, histograms, Prometheus, in a real lab.

500 HTTP requests, each on a new connection, go through the VIP. The access log must hold exactly
500 close lines whose client ports and backends are those the backends recorded, and whose packet
and byte counts equal what a packet capture on each backend's interface saw for that connection
(up to and including the second FIN; the final ACK after it is not part of the event).
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import PcapReader

from lbtui.lab import LabSpec
from tests.support.lab import ClientLab
from tests.support.labtools import start_lbtui, wait_until

METRICS_PORT = 9109
N = 500


def scrape(lab: ClientLab) -> str:
    r = lab.run(lab.ns_lb, "curl", "-sf", f"http://127.0.0.1:{METRICS_PORT}/metrics")
    return r.stdout


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("observe")
    lab = ClientLab(LabSpec(prefix="lto"))
    lab.up()
    procs = []
    try:
        lab.start_backends()
        access = tmp / "access.log"
        cfg = tmp / "lbtui.toml"
        text = lab.config_toml(weights=(1, 1, 1))
        text = text.replace(
            "[settings.metrics]\nenabled = false",
            f'[settings.metrics]\nenabled = true\nlisten = "127.0.0.1:{METRICS_PORT}"\n\n'
            f'[settings.access_log]\nformat = "json"\nfile = "{access}"',
        )
        text = text.replace(
            "[settings]\n", "[settings]\ntcp_closing_timeout_s = 1\nsweep_interval_s = 0.5\n", 1
        )
        cfg.write_text(text)
        log = tmp / "lbtui.log"
        with open(log, "w") as err:
            lb = lab.popen(lab.ns_lb, sys.executable, "-m", "lbtui", "-c", str(cfg), "--no-ui", stderr=err)
        procs.append(lb)
        assert wait_until(lambda: "started" in log.read_text()), log.read_text()
        captures = {}
        for i in lab.backend_ids:
            pcap = tmp / f"b{i}.pcap"
            dump = lab.popen(
                lab.ns_backend(i),
                "tcpdump",
                "-i",
                f"ltob{i}",
                "-U",
                "-s",
                "128",
                "-w",
                str(pcap),
                "tcp port 8080",
                stderr=subprocess.DEVNULL,
            )
            captures[i] = (dump, pcap)
        # tcpdump writes the pcap file header once its capture is active and filtered
        pcaps = [path for _, path in captures.values()]
        assert wait_until(lambda: all(path.exists() and path.stat().st_size >= 24 for path in pcaps))
        got = lab.http_requests(N, new_conn=True)
        assert got.get("errors", 0) == 0, got
        time.sleep(1.0)
        for dump, _ in captures.values():
            dump.send_signal(signal.SIGINT)
            dump.wait(10)
        yield lab, lb, log, access, captures, got
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(15)
        lab.down()


def close_lines(access) -> list[dict]:
    lines = [json.loads(x) for x in access.read_text().splitlines() if x.strip()]
    return [x for x in lines if x["event"] == "closed" and x["vip_port"] == 80]


def test_exactly_one_close_line_per_connection_matching_backends(run):
    lab, lb, log, access, captures, got = run
    assert wait_until(lambda: len(close_lines(access)) >= N, timeout=10), len(close_lines(access))
    lines = close_lines(access)
    assert len(lines) == N
    # the client may reuse a source port for a later connection: compare multisets, not sets
    seen = collections.Counter(
        ((x["client_ip"], x["client_port"]), f"{x['backend_ip']}:{x['backend_port']}") for x in lines
    )
    recorded: collections.Counter[tuple[tuple[str, int], str]] = collections.Counter()
    for i in lab.backend_ids:
        for peer in lab.recorded_peers(i):
            recorded[(peer, f"{lab.backend_ip(i)}:8080")] += 1
    assert recorded == seen, "one close line per accepted connection, on the backend that accepted it"
    per_backend: collections.Counter[str] = collections.Counter()
    for (_, backend), n in seen.items():
        per_backend[backend] += n
    assert sorted(per_backend.values()) == sorted(v for k, v in got.items() if k != "errors")
    assert all(x["close_reason"] == "fin" for x in lines)
    assert all(x["handshake_ms"] is not None and x["handshake_ms"] >= 0 for x in lines)
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$", x["timestamp"]) for x in lines)


def test_byte_and_packet_counts_match_packet_captures(run):
    lab, lb, log, access, captures, got = run
    # close lines per (client ip:port, backend ip), in the order the connections ended
    lines: dict[tuple[str, int, str], list[dict]] = collections.defaultdict(list)
    for x in sorted(close_lines(access), key=lambda x: x["timestamp"]):
        lines[(x["client_ip"], x["client_port"], x["backend_ip"])].append(x)
    checked = 0
    for i, (_, pcap) in captures.items():
        # per client ip:port, one record per connection (a client SYN starts the next one)
        conns: dict[tuple[str, int], list[dict]] = collections.defaultdict(list)
        for pkt in PcapReader(str(pcap)):
            if IP not in pkt or TCP not in pkt:
                continue
            ip, tcp = pkt[IP], pkt[TCP]
            inbound = ip.dst == lab.backend_ip(i)  # not by port: a client may use 8080 as its own port
            client = (ip.src, tcp.sport) if inbound else (ip.dst, tcp.dport)
            if inbound and tcp.flags & 0x12 == 0x02:
                conns[client].append({"pin": 0, "bin": 0, "pout": 0, "bout": 0, "fins": 0, "done": False})
            if not conns[client]:
                continue
            f = conns[client][-1]
            if f["done"]:
                continue  # the ACK after both FINs is not part of the close event
            if inbound:
                f["pin"] += 1
                f["bin"] += ip.len
            else:
                f["pout"] += 1
                f["bout"] += ip.len
            if tcp.flags & 0x01:
                f["fins"] += 1
                if f["fins"] == 2:
                    f["done"] = True
        for client, records in conns.items():
            logged = lines[(*client, lab.backend_ip(i))]
            assert len(logged) == len(records), (client, logged, records)
            for line, f in zip(logged, records, strict=True):
                counted = (line["packets_in"], line["bytes_in"], line["packets_out"], line["bytes_out"])
                assert counted == (f["pin"], f["bin"], f["pout"], f["bout"]), (client, line, f)
                checked += 1
    assert checked == N


def test_histograms_count_every_connection(run):
    lab, lb, log, access, captures, got = run
    text = scrape(lab)
    assert metric(text, "lbtui_connection_duration_seconds_count", proxy="web") == N
    assert metric(text, "lbtui_backend_handshake_seconds_count", proxy="web") == N


def test_counters_match_request_counts_and_promtool_accepts(run):
    lab, lb, log, access, captures, got = run
    text = scrape(lab)
    assert metric(text, "lbtui_connections_total", proxy="web") >= N
    for i in lab.backend_ids:
        name = f"b{i}"
        backend = f"{lab.backend_ip(i)}:8080"
        # the lab's readiness probes may add a few connections beyond the test's own
        assert metric(text, "lbtui_connections_total", proxy="web", backend=backend) >= got.get(name, 0)
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_counters_survive_conntrack_expiry(run):
    lab, lb, log, access, captures, got = run
    before = scrape(lab)
    # closing timeout is 1 s and the sweep runs every 0.5 s: every flow is gone from conntrack now
    assert wait_until(lambda: metric(scrape(lab), "lbtui_conntrack_entries") == 0, timeout=10)
    after = scrape(lab)
    for name in ("lbtui_connections_total", "lbtui_bytes_total", "lbtui_packets_total"):
        assert metric(after, name, proxy="web") >= metric(before, name, proxy="web") > 0, name


def test_clean_stop_flushes_the_log(run):
    lab, lb, log, access, captures, got = run
    lb.send_signal(signal.SIGTERM)
    assert lb.wait(15) == 0
    lines = [json.loads(x) for x in access.read_text().splitlines() if x.strip()]
    assert len([x for x in lines if x["event"] == "closed" and x["vip_port"] == 80]) == N


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_slow_log_consumer_drops_lines_not_memory_or_traffic(tmp_path):
    """The access log goes to a FIFO whose reader never reads: writes block once the pipe is full.

    The engine must keep balancing, drop (and count) log lines instead of queueing them without
    bound, and show the drops in the metrics.
    """
    lab = ClientLab(LabSpec(prefix="lts", second_client=False))
    lab.up()
    reader = None
    lb = None
    try:
        lab.start_backends()
        fifo = tmp_path / "access.fifo"
        os.mkfifo(fifo)
        # holds the FIFO open for reading and never reads
        reader = subprocess.Popen(["bash", "-c", f"exec 3<{fifo}; sleep 600"])
        cfg = tmp_path / "lbtui.toml"
        text = lab.config_toml(weights=(1, 1, 1))
        text = text.replace(
            "[settings.metrics]\nenabled = false",
            f'[settings.metrics]\nenabled = true\nlisten = "127.0.0.1:{METRICS_PORT}"\n\n'
            f'[settings.access_log]\nformat = "json"\nlog_new = true\nfile = "{fifo}"',
        )
        cfg.write_text(text)
        log = tmp_path / "lbtui.log"
        log.write_text("")
        lb = start_lbtui(lab, cfg, log)
        rss_before = rss_kb(lb.pid)
        got = lab.http_requests(6000, new_conn=True)
        assert got.get("errors", 0) == 0, got  # balancing went on
        assert sum(v for k, v in got.items() if k != "errors") == 6000
        assert wait_until(lambda: metric(scrape(lab), "lbtui_events_dropped_total") > 0, timeout=10)
        dropped = metric(scrape(lab), "lbtui_events_dropped_total")
        print(f"\nslow consumer: 12,000 lines, {dropped:.0f} dropped; RSS +{rss_kb(lb.pid) - rss_before} KiB")
        assert dropped >= 12000 - 10000 - 2000, dropped  # 12,000 lines, a 10,000-line queue, a 64 KiB pipe
        assert rss_kb(lb.pid) - rss_before < 100_000, "memory stays bounded"
    finally:
        if reader is not None:
            reader.kill()  # unblocks the writer (broken pipe) so the clean stop can finish
            reader.wait()
        if lb is not None and lb.poll() is None:
            lb.send_signal(signal.SIGTERM)
            lb.wait(30)
        lab.down()
