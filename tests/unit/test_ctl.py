# SPDX-License-Identifier: Apache-2.0
"""`lbtui ctl`: commands, output and exit codes against a control socket served by the real Engine
over the in-memory dataplane (tests/support/console_engine.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lbtui import ctl, model, wire
from lbtui.config import ConfigError, load_config
from lbtui.control_socket import ControlServer
from tests.support.console_engine import ConsoleEngine
from tests.support.console_time import STORY_S, make_engine
from tests.support.ctl import run_ctl

REPO = Path(__file__).resolve().parents[2]


def test_status_lists_every_backend_per_proxy(engine: ConsoleEngine, sock: str):
    code, out, err = run_ctl(sock, "status")
    assert code == 0, err
    assert f"pid {os.getpid()}" in out and "up 1h02m03s" in out and f"config {engine.config_path}" in out
    assert "conntrack: 52 flows (44 tcp, 8 udp), 104/393216 entries" in out
    lines = out.splitlines()
    web = next(i for i, line in enumerate(lines) if line.startswith("web "))
    dns = next(i for i, line in enumerate(lines) if line.startswith("dns "))
    assert (
        "10.0.0.1:80/tcp" in lines[web] and "40 active flows" in lines[web]
    )  # the unanswered SYN is not active
    assert "per-source 100/s burst 200" in lines[web]
    assert lines[web + 1].split() == [
        "BACKEND", "GROUP", "WEIGHT", "EFF", "HEALTH", "CIRCUIT", "STATE", "ACTIVE", "NEW/S", "PKT/S",
        "BYTES/S", "NOTE"
    ]  # fmt: skip
    assert lines[web + 2].split() == [
        "10.0.2.11:8080",
        "default",
        "3",
        "3",
        "up",
        "closed",
        "active",
        "24",
        "8.3",
        "17/8",
        "183k/8.2M",
        "ok",
    ]
    assert lines[web + 4].split()[:9] == [
        "10.0.2.13:8080",
        "default",
        "1",
        "0",
        "down",
        "open",
        "active",
        "0",
        "0.0",
    ]
    assert lines[web + 4].endswith("health down, circuit open")
    assert lines[web + 5].split()[:2] == ["10.0.3.10:8080", "192.168.0.0/16"]
    assert lines[dns + 2].split() == [
        "10.0.4.10:53",
        "default",
        "1",
        "1",
        "unknown",
        "-",
        "active",
        "4",
        "1.3",
        "3/1",
        "178/305",
        "ok",
    ]


def test_status_shows_the_latency_windows_beside_lifetime(sock_dir: str):
    """After the story of tests/support/console_time.py: 10.0.2.12 was slow minutes ago, so its
    lifetime p99 is high while the last 10 s are fast; UDP backends have durations only."""
    story = make_engine(story_s=STORY_S)
    srv = ControlServer(story, os.path.join(sock_dir, "story.sock"))
    srv.start()
    try:
        code, out, err = run_ctl(srv.path, "status")
        assert code == 0, err
        lines = out.splitlines()
        first = next(i for i, line in enumerate(lines) if line.strip().startswith("p99 in ms"))
        names = ["HS-10S", "HS-1M", "HS-5M", "HS-LIFE", "DUR-10S", "DUR-1M", "DUR-5M", "DUR-LIFE"]
        assert lines[first + 1].split() == ["BACKEND", *names]
        rows = {
            line.split()[0]: dict(zip(names, line.split()[1:], strict=True))
            for line in lines[first + 2 : first + 6]
        }
        view = story.snapshot().latency_of("web", "10.0.2.12:8080")
        assert view is not None and view.handshake is not None and view.handshake.p99_ms is not None
        ten = view.window(10)
        assert ten is not None and ten.handshake is not None and ten.handshake.p99_ms is not None
        b2 = rows["10.0.2.12:8080"]
        assert (
            float(b2["HS-10S"]) == pytest.approx(ten.handshake.p99_ms, abs=0.01) and float(b2["HS-10S"]) < 32
        )
        assert (
            float(b2["HS-LIFE"]) == pytest.approx(view.handshake.p99_ms, rel=0.01)
            and float(b2["HS-LIFE"]) > 32
        )
        udp = next(i for i, line in enumerate(lines) if line.strip().startswith("p99 in ms") and i > first)
        assert lines[udp + 1].split() == ["BACKEND", *names[4:]]
        code, out, _ = run_ctl(srv.path, "status", "--json")
        latency = json.loads(out)["snapshot"]["latency"]
        b2_json = next(v for v in latency if v["backend"] == "10.0.2.12:8080")
        assert [w["seconds"] for w in b2_json["windows"]] == [10, 60, 300]
        assert b2_json["windows"][0]["handshake"]["p99_ms"] == ten.handshake.p99_ms
    finally:
        srv.stop()
        story.shutdown()


def test_status_json_is_the_snapshot(engine: ConsoleEngine, sock: str):
    code, out, _ = run_ctl(sock, "status", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["instance"]["pid"] == os.getpid()
    assert wire.decode_snapshot(data["snapshot"]) == engine.snapshot()


def test_drain_then_undrain(engine: ConsoleEngine, sock: str):
    code, out, err = run_ctl(sock, "drain", "web", "10.0.2.11:8080", "--timeout", "30")
    assert (code, err) == (0, "") and "draining" in out
    assert engine.commands[-1] == model.Drain("web", "10.0.2.11:8080", 30.0)
    assert engine.backend("web", "10.0.2.11:8080").drain is model.DrainState.DRAINING

    code, out, err = run_ctl(sock, "drain", "web", "10.9.9.9:1")
    assert code == 1 and out == ""
    assert err == "lbtui ctl: refused: proxy 'web' has no backend 10.9.9.9:1\n"

    code, out, _ = run_ctl(sock, "undrain", "web", "10.0.2.11:8080")
    assert code == 0 and "10.0.2.11:8080 back in rotation" in out
    assert engine.commands[-1] == model.Undrain("web", "10.0.2.11:8080")


def test_weight(engine: ConsoleEngine, sock: str):
    assert run_ctl(sock, "weight", "web", "10.0.2.12:8080", "7")[0] == 0
    assert engine.backend("web", "10.0.2.12:8080").configured_weight == 7
    code, _, err = run_ctl(sock, "weight", "web", "10.0.2.12:8080", "0")
    assert code == 1 and "weight must be an integer 1..2147483647, got 0" in err
    code, _, err = run_ctl(sock, "weight", "web", "10.9.9.9:1", "2")
    assert code == 1 and "proxy 'web' has no backend 10.9.9.9:1" in err


def test_ratelimit(engine: ConsoleEngine, sock: str):
    assert run_ctl(sock, "ratelimit", "web", "--per-source", "50/80", "--per-backend", "0")[0] == 0
    assert engine.commands[-1] == model.SetRateLimit("web", 50, 80, 0, None)
    assert run_ctl(sock, "ratelimit", "web", "--per-backend", "900")[0] == 0
    assert engine.commands[-1] == model.SetRateLimit("web", None, None, 900, None)


def test_reload(engine: ConsoleEngine, sock: str, sock_dir: str):
    code, out, _ = run_ctl(sock, "reload")
    assert code == 0 and "nothing changed" in out
    assert engine.commands[-1] == model.Reload(None)
    # a relative path is sent absolute: the instance does not share our working directory
    code, _, _ = run_ctl(sock, "reload", "--file", "configs/other.toml")
    assert code == 1
    assert engine.commands[-1] == model.Reload(os.path.abspath("configs/other.toml"))
    with open(engine.config_path) as f:
        good = f.read()
    with open(engine.config_path, "w") as f:
        f.write(good.replace("port = 80\n", "port = 0\n", 1))
    with pytest.raises(ConfigError) as refused:
        load_config(engine.config_path)
    code, out, err = run_ctl(sock, "--json", "reload")
    assert code == 1
    assert json.loads(out) == {
        "ok": False,
        "message": str(refused.value),
        "changes": [],
        "command": {"type": "Reload", "path": None, "dry_run": False},
    }


def test_reload_dry_run_lists_the_changes_and_applies_nothing(engine: ConsoleEngine, sock: str):
    with open(engine.config_path) as f:
        good = f.read()
    with open(engine.config_path, "w") as f:
        f.write(good.replace("weight = 3\n", "weight = 5\n", 1))
    code, out, err = run_ctl(sock, "reload", "--dry-run")
    assert (code, err) == (0, "")
    assert out == (
        f"a reload of {engine.config_path} would make 1 change:\n  web: 10.0.2.11:8080 weight 3 -> 5\n"
    )
    assert engine.commands[-1] == model.Reload(None, dry_run=True)
    code, out, _ = run_ctl(sock, "--json", "reload", "--dry-run")
    assert json.loads(out)["changes"] == ["web: 10.0.2.11:8080 weight 3 -> 5"]
    code, out, _ = run_ctl(sock, "status", "web")
    assert " 3 " in next(line for line in out.splitlines() if "10.0.2.11:8080" in line)  # not applied
    # `lbtui --check --diff -c FILE` asks the instance the same
    diff = subprocess.run(
        [sys.executable, "-m", "lbtui", "--check", "--diff", "-c", engine.config_path, "--socket", sock],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert diff.returncode == 0, diff
    assert diff.stdout == (
        f"a reload of {engine.config_path} would make 1 change:\n  web: 10.0.2.11:8080 weight 3 -> 5\n"
    )


def test_options_before_or_after_the_command(sock: str):
    assert ctl.main(["status", "--socket", sock], out=io.StringIO(), err=io.StringIO()) == 0
    out = io.StringIO()
    assert ctl.main(["--json", "--socket", sock, "undrain", "web", "10.9.9.9:1"], out=out) == 1
    assert json.loads(out.getvalue())["ok"] is False


def test_socket_path_from_the_config(sock: str, sock_dir: str):
    config = Path(sock_dir, "lbtui.toml")
    minimal = (REPO / "configs" / "minimal.toml").read_text()
    config.write_text(f'[settings]\ncontrol_socket = "{sock}"\n\n{minimal}')
    out, err = io.StringIO(), io.StringIO()
    assert ctl.main(["-c", str(config), "status"], out=out, err=err) == 0, err.getvalue()
    assert "10.0.2.11:8080" in out.getvalue()
    # --socket wins over the config
    missing = os.path.join(sock_dir, "none.sock")
    assert ctl.main(["-c", str(config), "--socket", missing, "status"], out=out, err=err) == 3


def test_unreadable_config_is_a_usage_error(sock_dir: str, capsys):
    assert ctl.main(["-c", os.path.join(sock_dir, "missing.toml"), "status"]) == 2
    assert "missing.toml" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["drain", "web"],
        ["weight", "web", "10.0.2.11:8080", "heavy"],
        ["drain", "web", "10.0.2.11:8080", "--timeout", "-1"],
        ["ratelimit", "web"],
        ["ratelimit", "web", "--per-source", "fast"],
        ["ratelimit", "web", "--per-source", "10/"],
        ["ratelimit", "web", "--per-source", "-3"],
    ],
)
def test_usage_errors_exit_2_without_contacting_anyone(args: list[str], sock_dir: str, capsys):
    assert ctl.main(["--socket", os.path.join(sock_dir, "none.sock"), *args]) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert ctl.main(["--help"]) == 0
    assert "status" in capsys.readouterr().out


def test_no_instance_exits_3(sock_dir: str):
    missing = os.path.join(sock_dir, "none.sock")
    for args in (["status"], ["drain", "web", "10.0.2.11:8080"], ["reload"]):
        code, out, err = run_ctl(missing, *args)
        assert code == 3 and out == ""
        assert err.startswith(f"lbtui ctl: cannot connect to {missing}: no lbtui instance is running")


def test_stale_socket_without_listener_exits_3(sock_dir: str):
    import socket

    path = os.path.join(sock_dir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    assert run_ctl(path, "status")[0] == 3


@pytest.mark.root
@pytest.mark.requires("setpriv")
def test_non_root_user_gets_permission_denied(sock: str):
    # the directory must be traversable so that the socket's own 0600 mode is what refuses
    os.chmod(os.path.dirname(sock), 0o755)
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "lbtui.ctl",
            "--socket",
            sock,
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 3, out
    assert out.stdout == ""
    assert out.stderr == (
        f"lbtui ctl: cannot connect to {sock}: "
        "permission denied (the control socket is root-only, use sudo; "
        "a read-only socket admits its group's members)\n"
    )
