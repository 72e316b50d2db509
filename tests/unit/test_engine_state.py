# SPDX-License-Identifier: Apache-2.0
"""Runtime overrides kept across restarts (the state file) on the real Engine over the in-memory
dataplane: after a clean stop, a stop that leaves the data path pinned, and a crash; what a changed
configuration drops (with events); a file that cannot be used; atomic writes; commands answered
only once their change is on disk."""

from __future__ import annotations

import json
import os

import pytest

from lbtui import model
from lbtui.dataplane.memory import MemoryPins
from lbtui.engine.statefile import StateFile, decode
from tests.support.engine import BASE_SETTINGS, TWO_PROXIES, ManualClock, make_engine, messages, running

pytestmark = pytest.mark.anyio

WEB1, WEB2, WEB3, B4 = "10.0.2.11:8080", "10.0.2.12:8080", "10.0.2.13:8080", "10.0.2.14:8080"
DNS1 = "10.0.4.10:53"
COMMANDS = (
    model.Drain("web", WEB2, timeout_s=30),
    model.SetWeight("web", WEB1, 7),
    model.AddBackend("web", B4, 2),
    model.Maintenance("web", WEB3),
    model.ForceHealth("dns", DNS1, "down"),
    model.CircuitCommand("web", WEB1, "force_close"),
    model.SetRateLimit("dns", per_source_rate=10),
    model.RemoveBackend("dns", "10.0.4.11:53"),
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def with_state(path: str, text: str = TWO_PROXIES) -> str:
    return BASE_SETTINGS.replace("[settings]\n", f'[settings]\nstate_file = "{path}"\n', 1) + text


def listed(e) -> list[tuple[str, str, str | None, str]]:
    e.publish()
    return [(o.kind, o.proxy, o.backend, o.value) for o in e.snapshot().overrides]


def in_force(e) -> dict[str, object]:
    """What the overrides do, as the snapshot and the tables show it."""
    e.publish()
    snap = e.snapshot()
    web = {b.address: b for b in snap.service("web").backends}
    return {
        "web weights": {a: (b.configured_weight, b.effective_weight) for a, b in web.items()},
        "web states": {a: ("maint" if b.maintenance else b.drain.value) for a, b in web.items()},
        "circuit held": web[WEB1].circuit_held,
        "dns health": snap.backend("dns", DNS1).health,
        "dns backends": [b.address for b in snap.service("dns").backends],
        "dns limits": snap.service("dns").rate_limit,
    }


async def set_up(e) -> None:
    for cmd in COMMANDS:
        assert (await e.execute(cmd)).ok, cmd


@pytest.mark.parametrize("how", ["clean stop", "data path kept", "crash"])
async def test_every_override_survives_a_restart(tmp_path, how):
    path = str(tmp_path / "web.state")
    pins, clock = MemoryPins(), ManualClock()
    text = with_state(path)
    first, _dp = make_engine(text, pins=pins, clock=clock, keep_dataplane=how == "data path kept")
    await first.start()
    await set_up(first)
    before_list, before = listed(first), in_force(first)
    assert before["web states"] == {WEB1: "active", WEB2: "draining", WEB3: "maint", B4: "active"}
    if how != "crash":
        await first.stop()
    decode(open(path, "rb").read())  # valid on disk, whatever happened to the process
    clock.advance(10)
    try:
        async with running(text, pins=pins, clock=clock) as (second, dp2):
            assert dp2.adopted is (how != "clean stop")
            assert messages(second, "state") == [f"restored {len(COMMANDS)} runtime overrides from {path}"]
            assert in_force(second) == before
            after_list = listed(second)
            assert after_list == [
                (kind, p, b, v.replace("timeout in 30 s", "timeout in 20 s")) for kind, p, b, v in before_list
            ]
            assert not messages(second, "override")
    finally:
        if how == "crash":
            await first.stop()


async def test_a_changed_configuration_drops_what_no_longer_applies_with_an_event(tmp_path):
    path = str(tmp_path / "web.state")
    async with running(with_state(path)) as (first, _dp):
        await set_up(first)
    # while stopped, the file changes WEB1's weight and loses WEB3
    text = with_state(path).replace(
        'address = "10.0.2.11:8080"\nweight = 3', 'address = "10.0.2.11:8080"\nweight = 4'
    )
    text = text.replace('[[proxy.backend]]\naddress = "10.0.2.13:8080"\nweight = 1\n', "")
    async with running(text) as (second, _dp):
        assert messages(second, "override") == [
            "runtime weight 7 of web 10.0.2.11:8080 dropped: "
            "the file changed its weight while lbtui was stopped",
            "maintenance of web 10.0.2.13:8080 dropped: the backend is no longer in the configuration",
        ]
        assert [o.kind for o in second.snapshot().overrides] == [
            "drain",
            "health",
            "circuit",
            "added",
            "removed",
            "rate_limit",
        ]
        state = decode(open(path, "rb").read())  # the file follows: what was dropped is gone
        assert not state.weights and not state.maintenance and state.added[0].backend == B4
        # a reload of a changed file drops B4 (the file says which backends exist), with an event too
        open(second.config.path, "w").write(text.replace("weight = 2", "weight = 3", 1))
        assert (await second.execute(model.Reload())).ok
        assert messages(second, "override")[-2:] == [
            f"backend added at run time of web {B4} dropped: "
            "a reload of a changed file takes the file's backends",
            "backend removed at run time of dns 10.0.4.11:53 dropped: "
            "a reload of a changed file takes the file's backends",
        ]
        assert not decode(open(path, "rb").read()).added


OTHER_CONFIGURATION = """
[[proxy]]
name = "api"
interfaces = ["lb0"]
vip = "10.0.0.1"
port = 80
[[proxy.backend]]
address = "10.0.9.11:8080"
"""


async def test_the_state_of_another_configuration_applies_nothing_and_says_why(tmp_path):
    """An instance name reused with another file (or the file rewritten while stopped): not one of
    the old overrides names anything that exists, so each is dropped with the true reason."""
    path = str(tmp_path / "web.state")
    async with running(with_state(path)) as (first, _dp):
        await set_up(first)
    async with running(with_state(path, OTHER_CONFIGURATION)) as (second, _dp):
        assert listed(second) == []
        web_gone = "proxy web is no longer in the configuration"
        dns_gone = "proxy dns is no longer in the configuration"
        assert messages(second, "override") == [
            f"runtime weight 7 of web {WEB1} dropped: {web_gone}",
            f"drain of web {WEB2} dropped: {web_gone}",
            f"maintenance of web {WEB3} dropped: {web_gone}",
            f"health forced down of dns {DNS1} dropped: {dns_gone}",
            f"circuit held closed of web {WEB1} dropped: {web_gone}",
            f"backend added at run time of web {B4} dropped: {web_gone}",
            f"backend removed at run time of dns 10.0.4.11:53 dropped: {dns_gone}",
            f"runtime rate limits of dns dropped: {dns_gone}",
        ]
        state = decode(open(path, "rb").read())
        assert state == StateFile(version=1, saved_at=state.saved_at)  # nothing of it is kept


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (json.dumps({"version": 99, "saved_at": 0}).encode(), "version 99; this lbtui reads version 1"),
        (
            json.dumps(
                {
                    "version": 1,
                    "saved_at": 0,
                    "weights": [{"proxy": "web", "backend": WEB1, "weight": 0, "configured": [3]}],
                }
            ).encode(),
            "a weight must be an integer 1..2147483647, got 0",
        ),
        (json.dumps({"version": 1, "saved_at": 0, "extra": 1}).encode(), "state: unknown field(s) 'extra'"),
        (
            json.dumps(
                {"version": 1, "saved_at": 0, "maintenance": [{"proxy": "web", "backend": "nope"}]}
            ).encode(),
            'backend \'nope\': expected "ip:port" (IPv4) or "[ip]:port" (IPv6): the port is missing',
        ),
    ],
)
async def test_a_state_file_that_cannot_be_used_is_moved_aside_and_the_instance_starts(
    tmp_path, content, why
):
    path = tmp_path / "web.state"
    path.write_bytes(content)
    async with running(with_state(str(path))) as (e, _dp):
        assert e.running and e.overrides == type(e.overrides)()
        [message] = messages(e, "state")
        assert message.startswith(f"state file {path} cannot be used ({why}")
        assert message.endswith(f"); starting without runtime overrides; it was moved to {path}.unreadable")
        assert (tmp_path / "web.state.unreadable").read_bytes() == content
        decode(path.read_bytes())  # a fresh, empty state in its place


async def test_a_directory_is_not_a_state_file(tmp_path):
    os.mkdir(tmp_path / "web.state")
    async with running(with_state(str(tmp_path / "web.state"))) as (e, _dp):
        assert "cannot be used (not a regular file)" in messages(e, "state")[0]


async def test_a_command_is_answered_once_its_change_is_on_disk(tmp_path):
    path = str(tmp_path / "web.state")
    async with running(with_state(path)) as (e, _dp):
        for cmd in COMMANDS:
            assert (await e.execute(cmd)).ok
            kept = decode(open(path, "rb").read())
            assert len(kept.weights + kept.drains + kept.maintenance + kept.health) + len(
                kept.circuits + kept.added + kept.removed + kept.limits
            ) == len(e.overrides.entries()), cmd
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert [n for n in os.listdir(tmp_path) if n.startswith(".lbtui-state-")] == []  # no temporary left


async def test_a_failed_write_leaves_the_old_file_says_so_and_changes_nothing_else(tmp_path, monkeypatch):
    path = str(tmp_path / "web.state")
    async with running(with_state(path)) as (e, _dp):
        assert (await e.execute(model.SetWeight("web", WEB1, 7))).ok
        good = open(path, "rb").read()

        def full_disk(_src: str, _dst: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", full_disk)
        assert (await e.execute(model.SetWeight("web", WEB1, 8))).ok  # the change is in force
        assert open(path, "rb").read() == good
        assert messages(e, "state")[-1] == (
            f"cannot save the runtime overrides to {path}: No space left on device; "
            "they are in force but would not survive a restart"
        )
        monkeypatch.undo()
        assert (await e.execute(model.SetWeight("web", WEB1, 9))).ok
        assert decode(open(path, "rb").read()).weights[0].weight == 9


async def test_without_a_state_file_nothing_is_written(tmp_path):
    async with running(TWO_PROXIES) as (e, _dp):
        await set_up(e)
        assert e.snapshot().state_file is None and not messages(e, "state")
