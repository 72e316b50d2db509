# SPDX-License-Identifier: Apache-2.0
"""How a reload reads its file (issue 12): only regular files of bounded size, read and parsed off the
engine's loop, and the file watch follows the file a reload switched to.

The engine runs on its runner thread (as in `lbtui`), so a read that blocks shows up as the engine
not answering other commands.
"""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

from lbtui import model
from lbtui.config import load
from lbtui.runner import EngineRunner
from tests.support.engine import TWO_PROXIES, WATCHED_SETTINGS, config_file, make_engine, running, settle

WEB1 = "10.0.2.11:8080"


@pytest.fixture
def runner():
    engine, _dp = make_engine(TWO_PROXIES)
    r = EngineRunner(engine)
    r.start()
    try:
        yield r
    finally:
        r.close()
        if engine.config.path and os.path.exists(engine.config.path):
            os.unlink(engine.config.path)


def unblock_readers(fifo: str) -> None:
    """A reader stuck opening the FIFO (a blocking read on the engine's loop) gets EOF and goes on."""
    with contextlib.suppress(OSError):  # ENXIO: nobody is reading it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_fifo_is_refused_and_never_blocks_the_engine(runner, tmp_path):
    fifo = str(tmp_path / "lbtui.toml")
    os.mkfifo(fifo)
    try:
        result = runner.submit(model.Reload(fifo), timeout=3)
        assert not result.ok
        assert result.message == f"{fifo}: not a regular file (a FIFO)"
        assert runner.submit(model.SetWeight("web", WEB1, 4), timeout=3).ok  # the engine goes on
    finally:
        unblock_readers(fifo)


def test_a_directory_is_not_a_configuration(runner, tmp_path):
    result = runner.submit(model.Reload(str(tmp_path)), timeout=3)
    assert result == model.CommandResult(False, f"{tmp_path}: not a regular file (a directory)")


def test_a_file_beyond_the_size_limit_is_refused_unread(runner, tmp_path):
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: 64 MiB that cost no disk
    result = runner.submit(model.Reload(str(big)), timeout=10)
    assert not result.ok
    assert result.message == (f"{big}: 67108864 bytes, more than a configuration file may have (4194304)")


def test_the_file_is_read_and_parsed_off_the_engine_loop(runner, monkeypatch):
    """While a reload is still parsing, the engine answers other commands."""
    parsing, release = threading.Event(), threading.Event()
    real_parse = load.parse_config

    def slow_parse(text: str, path: str = "<string>"):
        parsing.set()
        release.wait(10)
        return real_parse(text, path)

    monkeypatch.setattr(load, "parse_config", slow_parse)
    results: list[model.CommandResult] = []
    reload = threading.Thread(target=lambda: results.append(runner.submit(model.Reload(), timeout=20)))
    reload.start()
    try:
        assert parsing.wait(5)
        assert runner.submit(model.SetWeight("web", WEB1, 4), timeout=2).ok
    finally:
        release.set()
        reload.join(20)
    assert results and results[0].ok, results


@pytest.mark.anyio
async def test_the_file_watch_follows_the_file_a_reload_switched_to(tmp_path):
    async with running(WATCHED_SETTINGS + TWO_PROXIES, loops=True) as (e, _dp):
        first = e.config.path
        other = config_file(
            open(first)
            .read()
            .replace('address = "10.0.2.11:8080"\nweight = 3', f'address = "{WEB1}"\nweight = 4'),
            str(tmp_path / "other.toml"),
        )
        assert (await e.execute(model.Reload(other))).ok
        assert e.config.path == other and e.snapshot().backend("web", WEB1).configured_weight == 4
        with open(other, "w") as f:  # an edit of the new file is picked up by the watch
            f.write(open(first).read().replace("weight = 3", "weight = 6", 1))
        await settle(lambda: e.snapshot().backend("web", WEB1).configured_weight == 6, "the watch", 10)
        os.unlink(first)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
