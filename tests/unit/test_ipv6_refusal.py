# SPDX-License-Identifier: Apache-2.0
"""Until the IPv6 data path is built, an IPv6 proxy is refused at start, at reload (everything stays as
it was) and by `lbtui --check`, naming its key path (lbtui/dataplane/families.py, the one place)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lbtui import model
from lbtui.config import ConfigError
from lbtui.dataplane.families import UNBUILT
from tests.support.engine import TWO_PROXIES, make_engine, messages, running
from tests.unit.test_engine_reload import rewrite, state

pytestmark = pytest.mark.anyio

PROXY6 = """
[[proxy]]
name = "web6"
interfaces = ["eth0"]
vip = "fd00:10::1"
port = 80

[[proxy.backend]]
address = "[fd00:20::11]:8080"
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_ipv6_proxy_is_refused_at_start_before_anything_is_touched():
    engine, dp = make_engine(TWO_PROXIES + PROXY6)
    with pytest.raises(ConfigError) as err:
        await engine.start()
    (issue,) = err.value.issues
    assert issue.key_path == "proxy[2].vip"
    assert UNBUILT in issue.message and "web6" in issue.message
    assert not engine.running
    assert dp.read_services() == []
    await engine.stop()


async def test_an_ipv6_proxy_is_refused_at_reload_and_nothing_changes():
    async with running(TWO_PROXIES) as (e, _dp):
        before = state(e)
        path = e.config.path
        with open(path, "a") as f:
            f.write(PROXY6)
        r = await e.reload()
        assert not r.ok
        assert r.message == f"{path}: proxy[2].vip: {UNBUILT} (proxy 'web6', vip fd00:10::1)"
        assert messages(e, "reload")[-1] == f"reload refused, configuration unchanged:\n{r.message}"
        assert state(e) == before
        # an IPv4 change in the same file is not applied either: the whole reload is refused
        rewrite(e, 'address = "10.0.2.13:8080"', 'address = "10.0.2.14:8080"')
        assert not (await e.reload()).ok
        assert state(e) == before
        assert await e.execute(model.Reload()) == model.CommandResult(False, r.message)


def test_check_refuses_an_ipv6_proxy_with_its_key_path(tmp_path: Path) -> None:
    path = tmp_path / "v6.toml"
    path.write_text(PROXY6)
    out = subprocess.run(
        [sys.executable, "-m", "lbtui", "--check", "--config-only", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert f"{path}: proxy[0].vip: {UNBUILT}" in out.stderr
