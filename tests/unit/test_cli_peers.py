# SPDX-License-Identifier: Apache-2.0
"""`--peer NAME=SOCKET` (the console shows other instances) and `lbtui demo --hosts N`'s bounds."""

from __future__ import annotations

import pytest

from lbtui import cli, console
from lbtui.stopping import Stopper


def test_peer_sockets_by_name() -> None:
    assert console.peer_sockets(["h2=/run/lbtui/a.sock", "h3=/x=y.sock"]) == {
        "h2": "/run/lbtui/a.sock",
        "h3": "/x=y.sock",
    }
    assert console.peer_sockets([]) == {}


@pytest.mark.parametrize("specs", [["h2"], ["=/a.sock"], ["h2="], ["h2=/a", "h2=/b"]])
def test_malformed_peers_are_refused(specs: list[str]) -> None:
    with pytest.raises(ValueError, match="--peer"):
        console.peer_sockets(specs)


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "x.toml", "--no-ui", "--peer", "h2=/a.sock"],
        ["-c", "x.toml", "--peer", "h2"],
        ["demo", "--hosts", "0"],
        ["demo", "--hosts", "10"],
    ],
)
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv, stopper=Stopper())
    assert exc.value.code == 2
    assert "--peer" in capsys.readouterr().err or "--hosts" in " ".join(argv)
