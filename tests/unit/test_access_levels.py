# SPDX-License-Identifier: Apache-2.0
"""Access levels (issue 19): the read-only socket (config, socket file, peer check, commands refused),
the console in read-only mode, and finding the running instance (`ctl list`, no --socket).

No BPF: the engine is the real one over the in-memory dataplane. The tests with another user run
the client under setpriv (root only)."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtui import ctl, instances, model
from lbtui.app import LbtuiApp
from lbtui.config import ConfigError, parse_config
from lbtui.control_client import SocketEngineHandle
from lbtui.control_socket import ControlServer
from tests.support.console_engine import ConsoleEngine
from tests.unit.test_app import SIZE, started

REPO = Path(__file__).resolve().parents[2]
GROUP = 47119  # a gid nobody has: the test user gets it with setpriv --groups
NOBODY = 65534

MINIMAL = """
[[proxy]]
name = "web"
vip = "10.0.0.1"
port = 80
interfaces = ["eth0"]
[[proxy.backend]]
address = "10.0.2.11:8080"
"""


@pytest.fixture
def servers(engine: ConsoleEngine, sock_dir: str) -> Iterator[tuple[ControlServer, ControlServer]]:
    run = os.path.join(sock_dir, "run")
    operator = ControlServer(engine, os.path.join(run, "lbtui.sock"), instance={"instance": "lbtui"})
    ro = ControlServer(
        engine,
        os.path.join(run, "lbtui-ro.sock"),
        instance={"instance": "lbtui"},
        read_only=True,
        group=GROUP,
    )
    operator.start()
    ro.start()
    yield operator, ro
    ro.stop()
    operator.stop()


# ---- configuration -------------------------------------------------------------------------------


def _settings(text: str) -> str:
    return "[settings]\n" + text + "\n" + MINIMAL


def test_read_only_socket_needs_its_group_and_a_path_of_its_own() -> None:
    config = parse_config(_settings('[settings.read_only]\nsocket = "/run/lbtui/ro.sock"\ngroup = "adm"'))
    assert config.settings.read_only.socket == "/run/lbtui/ro.sock"
    assert config.settings.read_only.group == "adm"
    for body, where, says in (
        (
            '[settings.read_only]\nsocket = "/run/lbtui/ro.sock"',
            "settings.read_only.socket",
            "needs group too",
        ),
        ('[settings.read_only]\ngroup = "adm"', "settings.read_only.group", "needs socket too"),
        (
            '[settings.read_only]\nsocket = "/run/lbtui/lbtui.sock"\ngroup = "adm"',
            "settings.read_only.socket",
            "must differ from settings.control_socket",
        ),
        (
            '[settings.read_only]\nsocket = "/run/lbtui/ro.sock"\ngroup = "a b"',
            "settings.read_only.group",
            "group",
        ),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(_settings(body))
        issues = {i.key_path: i.message for i in info.value.issues}
        assert where in issues and says in issues[where], issues
    assert parse_config(MINIMAL).settings.read_only.socket is None  # off unless configured


# ---- the socket ----------------------------------------------------------------------------------


def test_read_only_socket_is_0660_to_its_group_in_a_searchable_directory(
    servers: tuple[ControlServer, ControlServer],
) -> None:
    operator, ro = servers
    st = os.stat(ro.path)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == GROUP
    assert stat.S_IMODE(os.stat(operator.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(ro.path)).st_mode) == 0o755


def test_read_only_socket_serves_reads_and_refuses_every_command(
    engine: ConsoleEngine, servers: tuple[ControlServer, ControlServer]
) -> None:
    _, ro = servers
    client = SocketEngineHandle(ro.path)
    try:
        assert client.hello()["read_only"] is True
        assert client.snapshot().service("web") is not None
        assert client.events_since(0) is not None
        for command in (model.Drain("web", "10.0.2.11:8080"), model.Stop(), model.Reload()):
            result = client.submit(command)
            assert not result.ok
            assert result.message.startswith(f"this is the read-only socket {ro.path}")
        assert engine.commands == []
    finally:
        client.close()


def _as_nobody(
    args: list[str], groups: str | None, run_dir: str = "/nonexistent"
) -> subprocess.CompletedProcess[str]:
    who = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}"]
    who += [f"--groups={groups}"] if groups else ["--clear-groups"]
    return subprocess.run(
        [*who, sys.executable, "-m", "lbtui.ctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "LBTUI_RUN_DIR": run_dir},
    )


@pytest.mark.root
@pytest.mark.requires("setpriv")
def test_a_group_member_reads_and_is_refused_a_drain_and_others_cannot_connect(
    engine: ConsoleEngine, servers: tuple[ControlServer, ControlServer], sock_dir: str
) -> None:
    operator, ro = servers
    os.chmod(sock_dir, 0o755)  # the test's own temporary directory, above the run directory
    member = _as_nobody(["--socket", ro.path, "--json", "status"], str(GROUP))
    assert member.returncode == 0, member
    assert json.loads(member.stdout)["snapshot"]["services"][0]["name"] == "web"
    events = _as_nobody(["--socket", ro.path, "events"], str(GROUP))
    assert events.returncode == 0, events
    drain = _as_nobody(["--socket", ro.path, "drain", "web", "10.0.2.11:8080"], str(GROUP))
    assert drain.returncode == 1 and "lbtui ctl: refused: this is the read-only socket" in drain.stderr, drain
    assert engine.commands == []
    # not in the group: the socket's mode refuses at connect
    outsider = _as_nobody(["--socket", ro.path, "status"], None)
    assert outsider.returncode == 3 and "permission denied" in outsider.stderr, outsider
    # a member may not use the operator socket
    assert _as_nobody(["--socket", operator.path, "status"], str(GROUP)).returncode == 3
    # the socket opened to all by mistake: the peer check still refuses those outside the group
    os.chmod(ro.path, 0o666)
    outsider = _as_nobody(["--socket", ro.path, "status"], None)
    assert outsider.returncode == 3, outsider
    assert "the read-only socket serves members of its group only" in outsider.stderr
    # without --socket a member finds the read-only socket (the operator one refuses it)
    run = os.path.dirname(ro.path)
    found = _as_nobody(["--json", "status"], str(GROUP), run_dir=run)
    assert found.returncode == 0, found
    assert json.loads(found.stdout)["instance"]["read_only"] is True
    listed = _as_nobody(["list"], str(GROUP), run_dir=run)
    assert [line.split()[1] for line in listed.stdout.splitlines()[1:]] == ["read-only", "refused"], listed
    os.chmod(run, 0o700)  # a closed run directory: said so, not "no instance"
    closed = _as_nobody(["list"], str(GROUP), run_dir=run)
    assert (
        closed.returncode == 3 and f"cannot look for instances in {run}: permission denied" in closed.stderr
    )


# ---- finding the instance ------------------------------------------------------------------------


def test_one_instance_is_found_by_its_operator_socket_and_stale_sockets_are_ignored(
    servers: tuple[ControlServer, ControlServer],
) -> None:
    operator, ro = servers
    run = os.path.dirname(operator.path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.path.join(run, "crashed.sock"))  # bound, never listening: what a crash leaves
    stale.close()
    found = instances.scan(run)
    assert [(f.socket, f.access) for f in found] == [(ro.path, "read-only"), (operator.path, "operator")]
    assert instances.the_socket(directory=run) == operator.path
    # with only the read-only socket answering (what a monitoring user sees), that one
    assert instances.the_socket([f for f in found if f.read_only]) == ro.path


def test_several_instances_are_listed_and_none_is_chosen(
    engine: ConsoleEngine, servers: tuple[ControlServer, ControlServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    operator, _ = servers
    run = os.path.dirname(operator.path)
    other = ControlServer(
        engine, os.path.join(run, "other.sock"), instance={"pid": 999999, "instance": "other"}
    )
    other.start()
    try:
        monkeypatch.setenv("LBTUI_RUN_DIR", run)
        out, err = io.StringIO(), io.StringIO()
        assert ctl.main(["status"], out, err) == ctl.EXIT_USAGE
        assert "2 lbtui instances run; choose one with --socket PATH" in err.getvalue()
        assert other.path in err.getvalue() and operator.path in err.getvalue()
        out = io.StringIO()
        assert ctl.main(["list"], out, io.StringIO()) == 0
        lines = out.getvalue().splitlines()
        assert lines[0].split() == ["SOCKET", "ACCESS", "PID", "INSTANCE", "VERSION", "CONFIG"]
        assert [line.split()[:3] for line in lines[1:]] == [
            [os.path.join(run, "lbtui-ro.sock"), "read-only", str(os.getpid())],
            [operator.path, "operator", str(os.getpid())],
            [other.path, "operator", "999999"],
        ]
        out = io.StringIO()
        assert ctl.main(["list", "--json"], out, io.StringIO()) == 0
        assert [f["access"] for f in json.loads(out.getvalue())] == ["read-only", "operator", "operator"]
    finally:
        other.stop()
    out = io.StringIO()
    assert ctl.main(["status"], out, io.StringIO()) == 0  # one instance again: found
    assert "web" in out.getvalue()


def test_no_instance_says_where_it_looked(sock_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LBTUI_RUN_DIR", sock_dir)
    err = io.StringIO()
    assert ctl.main(["status"], io.StringIO(), err) == ctl.EXIT_UNREACHABLE
    assert f"no lbtui instance is running (no socket in {sock_dir} answers)" in err.getvalue()


# ---- the console ---------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_read_only_console_hides_and_refuses_the_keys_that_change_traffic() -> None:
    engine = ConsoleEngine()
    try:
        app = LbtuiApp(engine, refresh_s=0.05, attached=True, read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            await started(app, pilot)
            for key in ("d", "m", "h", "w", "plus", "minus", "a", "x", "l", "c", "r"):
                await pilot.press(key)
                await pilot.pause()
                assert app.screen is app.screen_stack[0], key  # no dialog opened
            assert engine.commands == []
            footer_keys = {
                binding.binding.action for binding in app.screen.active_bindings.values() if binding.enabled
            }
            assert not footer_keys & {"drain", "reweight", "reload", "rate_limits"}, footer_keys
            assert {"chart", "filter", "help", "quit"} <= footer_keys
            titles = [title for title, _, _ in app.palette_actions()]
            assert not any(t.startswith(("Drain", "Reweight", "Reload", "Remove", "Add")) for t in titles), (
                titles
            )
            assert any(t.startswith("Chart of") for t in titles)
            assert "(read-only)" in str(app.summary.render())
            assert not any("drain" in text for _, text in app.key_help())
    finally:
        engine.shutdown()
