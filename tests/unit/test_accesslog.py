# SPDX-License-Identifier: Apache-2.0
"""Access log: JSON and CLF lines (checked by jq, goaccess and a strict regex), rotation, back-pressure."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lbtui import model
from lbtui.observe.accesslog import AccessLog, format_clf, format_json, rfc3339_utc

TS = 1_704_164_645.25  # 2024-01-02T03:04:05.250Z

CLF_LINE = re.compile(
    r"^(?P<host>\S+) - - "
    r"\[(?P<day>\d{2})/(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/(?P<year>\d{4})"
    r":(?P<time>\d{2}:\d{2}:\d{2}) (?P<zone>[+-]\d{4})\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-)$'
)


@dataclass(frozen=True)
class Cfg:
    format: str = "json"
    stdout: bool = False
    file: str | None = None
    max_bytes: int = 10_485_760
    max_files: int = 5
    log_new: bool = False


def event(
    seq: int = 40000,
    kind: str = "closed",
    close_reason: str | None = "fin",
    protocol: str = "tcp",
    client_ip: str = "10.0.1.5",
    vip_ip: str = "10.0.0.1",
    backend_ip: str = "10.0.2.11",
    bytes_out: int = 5120,
    ts: float = TS,
) -> model.FlowEvent:
    return model.FlowEvent(
        kind=kind,
        ts=ts,
        proxy="web",
        protocol=protocol,
        client_ip=client_ip,
        client_port=seq,
        vip_ip=vip_ip,
        vip_port=80,
        backend_ip=backend_ip,
        backend_port=8080,
        packets_in=6,
        bytes_in=420,
        packets_out=5,
        bytes_out=bytes_out,
        duration_s=1.2345 if kind == "closed" else None,
        handshake_s=0.000321,
        close_reason=close_reason if kind == "closed" else None,
    )


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class BlockingHandler(ListHandler):
    """A sink that cannot write until released: the slow disk."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.gate.wait()
        super().emit(record)


# ---- formats -------------------------------------------------------------------------------------


def test_json_line_has_every_field() -> None:
    line = format_json(event())
    assert "\n" not in line
    obj = json.loads(line)
    assert obj == {
        "timestamp": "2024-01-02T03:04:05.250Z",
        "event": "closed",
        "proxy": "web",
        "protocol": "tcp",
        "client_ip": "10.0.1.5",
        "client_port": 40000,
        "vip_ip": "10.0.0.1",
        "vip_port": 80,
        "backend_ip": "10.0.2.11",
        "backend_port": 8080,
        "duration_ms": 1234.5,
        "bytes_in": 420,
        "bytes_out": 5120,
        "packets_in": 6,
        "packets_out": 5,
        "handshake_ms": 0.321,
        "close_reason": "fin",
    }


def test_json_new_event_has_nulls() -> None:
    obj = json.loads(format_json(event(kind="new")))
    assert obj["event"] == "new"
    assert obj["duration_ms"] is None
    assert obj["close_reason"] is None


def test_rfc3339_utc() -> None:
    assert rfc3339_utc(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339_utc(TS) == "2024-01-02T03:04:05.250Z"
    assert rfc3339_utc(59.9996) == "1970-01-01T00:01:00.000Z"
    pattern = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
    assert pattern.match(rfc3339_utc(1_999_999_999.999))


def test_clf_line() -> None:
    line = format_clf(event())
    assert line == '10.0.1.5 - - [02/Jan/2024:03:04:05 +0000] "TCP 10.0.0.1:80 10.0.2.11:8080" 200 5120'
    assert CLF_LINE.match(line)


@pytest.mark.parametrize(
    ("kind", "reason", "status"),
    [("closed", "fin", "200"), ("closed", "rst", "499"), ("closed", "idle", "408"),
     ("closed", "evicted", "503"), ("closed", None, "520"), ("new", None, "100")],
)  # fmt: skip
def test_clf_status_codes(kind: str, reason: str | None, status: str) -> None:
    match = CLF_LINE.match(format_clf(event(kind=kind, close_reason=reason)))
    assert match is not None
    assert match["status"] == status


def test_clf_ipv6_udp_and_no_bytes() -> None:
    line = format_clf(
        event(
            protocol="udp",
            client_ip="2001:db8::5",
            vip_ip="2001:db8::1",
            backend_ip="2001:db8::11",
            bytes_out=0,
        )
    )
    match = CLF_LINE.match(line)
    assert match is not None
    assert match["host"] == "2001:db8::5"
    assert match["request"] == "UDP [2001:db8::1]:80 [2001:db8::11]:8080"
    assert match["bytes"] == "-"


def test_json_ipv6_addresses_are_plain_canonical_text_beside_their_ports() -> None:
    obj = json.loads(
        format_json(event(client_ip="2001:db8::5", vip_ip="2001:db8::1", backend_ip="2001:db8::11"))
    )
    # the address fields hold bare addresses (no brackets: the port is a field of its own)
    assert (obj["client_ip"], obj["client_port"]) == ("2001:db8::5", 40000)
    assert (obj["vip_ip"], obj["vip_port"]) == ("2001:db8::1", 80)
    assert (obj["backend_ip"], obj["backend_port"]) == ("2001:db8::11", 8080)


def test_clf_month_names_do_not_depend_on_the_locale() -> None:
    months = {CLF_LINE.match(format_clf(event(ts=TS + d * 86400 * 31)))["mon"] for d in range(12)}  # type: ignore[index]
    assert len(months) == 12


# ---- writing -------------------------------------------------------------------------------------


def write_events(path: Path, fmt: str, count: int, **cfg: object) -> AccessLog:
    access = AccessLog(Cfg(format=fmt, file=str(path), **cfg))  # type: ignore[arg-type]
    access.start()
    for seq in range(count):
        access.log(event(seq=seq, ts=TS + seq))
    access.stop()
    return access


def test_json_file_parses_with_json_and_jq(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "access.log"  # the directory is created
    write_events(path, "json", 50)
    lines = path.read_text().splitlines()
    assert len(lines) == 50
    assert [json.loads(line)["client_port"] for line in lines] == list(range(50))
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq not installed")
    result = subprocess.run([jq, "-c", "."], input=path.read_bytes(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.decode().splitlines()) == 50


def test_clf_file_parses_with_regex_and_goaccess(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    access = AccessLog(Cfg(format="clf", file=str(path)))
    access.start()
    reasons = ["fin", "rst", "idle", "evicted"]
    for seq in range(40):
        access.log(event(seq=seq, close_reason=reasons[seq % 4], bytes_out=seq * 10, ts=TS + seq))
    access.stop()
    lines = path.read_text().splitlines()
    assert len(lines) == 40
    assert all(CLF_LINE.match(line) for line in lines)
    goaccess = shutil.which("goaccess")
    if goaccess is None:
        pytest.skip("goaccess not installed")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [goaccess, str(path), "--log-format=COMMON", "--no-global-config", "-o", str(report)],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    general = json.loads(report.read_text())["general"]
    assert general["total_requests"] == 40
    assert general["valid_requests"] == 40
    assert general["failed_requests"] == 0
    assert general["bandwidth"] == sum(seq * 10 for seq in range(40))


def test_rotation_keeps_max_files_and_loses_no_line(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    access = write_events(path, "json", 5000, max_bytes=2048, max_files=3)
    assert access.dropped == 0
    assert access.written == 5000
    files = sorted(tmp_path.iterdir())
    assert {f.name for f in files} <= {"access.log", "access.log.1", "access.log.2", "access.log.3"}
    assert len(files) == 4
    longest_line = max(len(line) + 1 for f in files for line in f.read_text().splitlines())
    assert all(f.stat().st_size <= 2048 + longest_line for f in files)
    # oldest file first: access.log.3, .2, .1, access.log
    ordered = [path.with_name(f"access.log.{i}") for i in (3, 2, 1)] + [path]
    seqs = [json.loads(line)["client_port"] for f in ordered for line in f.read_text().splitlines()]
    assert seqs == list(range(seqs[0], 5000))  # contiguous, no gap, ends with the last event
    assert len(seqs) > 4  # several lines per file were kept


def test_stop_flushes_every_queued_line() -> None:
    sink = BlockingHandler()
    access = AccessLog(Cfg(format="json"), queue_size=1000, extra_handlers=[sink])
    access.start()
    for seq in range(500):
        access.log(event(seq=seq))
    assert sink.entered.wait(10)  # the writer holds line 0; 499 lines wait in the queue
    stopper = threading.Thread(target=access.stop)
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive()  # stop() waits for the queue, it does not abandon it
    sink.gate.set()
    stopper.join(30)
    assert not stopper.is_alive()
    assert access.dropped == 0
    assert [json.loads(line)["client_port"] for line in sink.lines] == list(range(500))


def test_slow_writer_never_blocks_and_counts_drops() -> None:
    sink = BlockingHandler()
    access = AccessLog(Cfg(format="json"), queue_size=100, tail_size=10, extra_handlers=[sink])
    access.start()
    access.log(event(seq=0))
    assert sink.entered.wait(10)  # the writer is now stuck on the first line
    done = threading.Event()

    def produce() -> None:
        for seq in range(1, 5001):
            access.log(event(seq=seq))
        done.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    # log() returns even though nothing is being written; a blocking log() would hang here forever
    assert done.wait(60), "log() blocked on a full queue"
    assert access._queue.qsize() <= 100  # memory bounded by the queue size
    assert access.dropped == 5000 - 100
    sink.gate.set()
    access.stop()
    assert len(sink.lines) == 5001 - access.dropped
    seqs = [json.loads(line)["client_port"] for line in sink.lines]
    assert seqs == list(range(101))  # the first lines got in, the rest were dropped
    assert len(access.tail(1000)) == 10  # the tail is bounded too


def test_tail_keeps_the_last_lines_in_order() -> None:
    access = AccessLog(Cfg(format="json"), tail_size=5)
    access.start()
    for seq in range(12):
        access.log(event(seq=seq))
    access.stop()
    assert [json.loads(line)["client_port"] for line in access.tail(3)] == [9, 10, 11]
    assert [json.loads(line)["client_port"] for line in access.tail(100)] == [7, 8, 9, 10, 11]
    assert access.tail(0) == ()


def test_new_events_only_with_log_new() -> None:
    quiet = AccessLog(Cfg(format="json"))
    quiet.start()
    quiet.log(event(seq=1, kind="new"))
    quiet.log(event(seq=2))
    quiet.stop()
    assert [json.loads(line)["event"] for line in quiet.tail(10)] == ["closed"]

    chatty = AccessLog(Cfg(format="json", log_new=True))
    chatty.start()
    chatty.log(event(seq=1, kind="new"))
    chatty.log(event(seq=1))
    chatty.stop()
    assert [json.loads(line)["event"] for line in chatty.tail(10)] == ["new", "closed"]


def test_stdout_sink(capsys: pytest.CaptureFixture[str]) -> None:
    access = AccessLog(Cfg(format="clf", stdout=True))
    access.start()
    access.log(event(seq=7))
    access.stop()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert CLF_LINE.match(out[0])


def test_lines_after_stop_are_ignored_and_restart_works(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    access = AccessLog(Cfg(format="json", file=str(path)))
    access.start()
    access.log(event(seq=1))
    access.stop()
    access.log(event(seq=2))  # not running: ignored, no error
    access.start()
    access.log(event(seq=3))
    access.stop()
    access.stop()
    assert [json.loads(line)["client_port"] for line in path.read_text().splitlines()] == [1, 3]
    assert access.written == 2


def test_bad_format_is_refused() -> None:
    with pytest.raises(ValueError):
        AccessLog(Cfg(format="xml"))


def test_does_not_write_to_the_root_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    access = AccessLog(Cfg(format="json"))
    access.start()
    access.log(event())
    access.stop()
    assert not [r for r in caplog.records if r.name.startswith("lbtui.accesslog")]


@dataclass(frozen=True)
class ProdCfg(Cfg):
    file_mode: int = 0o640
    syslog: str | None = None
    syslog_facility: str = "local0"


def _written(log: AccessLog, n: int, start: int = 0) -> None:
    for i in range(n):
        log.log(event(seq=start + i))


def test_files_are_created_0640_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "access.log"
    old = os.umask(0o077)  # what the systemd unit sets
    try:
        log = AccessLog(ProdCfg(file=str(path), max_bytes=2000, max_files=2))
        log.start()
        _written(log, 40)  # several rotations
        log.stop()
    finally:
        os.umask(old)
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == ["access.log", "access.log.1", "access.log.2"]
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o640}
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # makedirs' 0750, under umask 077


def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("")
    path.chmod(0o600)
    log = AccessLog(ProdCfg(file=str(path)))
    log.start()
    _written(log, 1)
    log.stop()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reopens_the_file_after_logrotate_moved_it(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(ProdCfg(file=str(path)))
    log.start()
    try:
        _written(log, 3)
        assert wait_for(lambda: len(path.read_text().splitlines()) == 3)
        path.rename(tmp_path / "access.log.1")  # logrotate's "create" mode, without copytruncate
        _written(log, 2, start=100)
        assert wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == 2)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        path.unlink()  # removed altogether: recreated too
        _written(log, 1, start=200)
        assert wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == 1)
    finally:
        log.stop()
    assert len((tmp_path / "access.log.1").read_text().splitlines()) == 3
    assert [json.loads(line)["client_port"] for line in path.read_text().splitlines()] == [200]


def wait_for(pred, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_syslog_target_over_a_local_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        log = AccessLog(ProdCfg(format="clf", syslog=path, syslog_facility="local3"))
        log.start()
        _written(log, 2)
        log.stop()
        messages = [server.recv(4096).decode() for _ in range(2)]
    # <PRI> = facility local3 (19) * 8 + severity info (6) = 158; the tag carries the pid
    assert all(m.startswith(f"<158>lbtui[{os.getpid()}]: 10.0.1.5 - - [") for m in messages), messages
    assert all(CLF_LINE.match(m.split(": ", 1)[1]) for m in messages)


def test_syslog_target_over_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        port = server.getsockname()[1]
        log = AccessLog(ProdCfg(syslog=f"127.0.0.1:{port}"))
        log.start()
        _written(log, 1)
        log.stop()
        message = server.recv(4096).decode()
    assert message.startswith("<134>lbtui[")  # local0.info
    assert json.loads(message.split(": ", 1)[1])["client_ip"] == "10.0.1.5"


def test_a_bad_syslog_target_is_refused_at_start(tmp_path: Path) -> None:
    for bad in (str(tmp_path / "nobody-listens"), "nohost", "127.0.0.1:x"):
        with pytest.raises((OSError, ValueError)):
            AccessLog(ProdCfg(syslog=bad)).start()
    with pytest.raises(ValueError):
        AccessLog(ProdCfg(syslog="127.0.0.1:514", syslog_facility="nonsense")).start()


def test_production_keys_in_the_configuration(tmp_path: Path) -> None:
    from lbtui.config import ConfigError, parse_config
    from lbtui.observe.hub import ObservabilityHub

    base = '[[proxy]]\nname = "w"\ninterfaces = ["eth0"]\nvip = "10.0.0.1"\nport = 80\n'
    base += '[[proxy.backend]]\naddress = "10.0.2.1:80"\n'
    config = parse_config('[settings.access_log]\nfile_mode = 0o600\nsyslog = "tcp://[::1]:514"\n' + base)
    log = config.settings.access_log
    assert (log.file_mode, log.syslog, log.syslog_facility) == (0o600, "tcp://[::1]:514", "local0")
    assert config.settings.metrics.listen == "127.0.0.1:17100" and not config.settings.manage_sysctls
    for bad, key in (
        ('syslog = "514"', "settings.access_log.syslog"),
        ('syslog_facility = "local9"', "settings.access_log.syslog_facility"),
        ("file_mode = 0o1777", "settings.access_log.file_mode"),
    ):
        with pytest.raises(ConfigError) as exc:
            parse_config(f"[settings.access_log]\n{bad}\n" + base, "x.toml")
        assert f"x.toml: {key}: " in str(exc.value)

    # syslog alone is enough for the hub to run an access log
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        path = str(tmp_path / "log.sock")
        server.bind(path)
        server.settimeout(5)
        config = parse_config(
            f'[settings.metrics]\nenabled = false\n[settings.access_log]\nsyslog = "{path}"\n' + base
        )
        hub = ObservabilityHub(lambda: None)
        hub.configure(config.settings)
        try:
            assert hub.access_log is not None
            hub.observe(event())
        finally:
            hub.close()
        assert server.recv(4096).startswith(b"<134>lbtui[")
