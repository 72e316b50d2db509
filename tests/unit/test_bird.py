# SPDX-License-Identifier: Apache-2.0
"""lbtui.bird: BIRD's control-socket replies parsed, templates rendered, a fake BIRD on a socket."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest

from lbtui.bird import BirdControl, BirdError, parse_bgp_sessions, parse_protocols, parse_reply, render_config

REPO = Path(__file__).resolve().parents[2]

REPLIES = Path(__file__).parent / "bird_replies"
# Replies of BIRD 2.0.12 in files (trailing spaces matter: a code followed by a space ends a reply).
# host_* and router_* were recorded from the configs/bird templates with one session up;
# show_protocols*.txt are edited from such recordings to hold a session that is down, and the
# "iso long" time format.
SHOW_PROTOCOLS = (REPLIES / "show_protocols.txt").read_text()
SHOW_PROTOCOLS_ALL = (REPLIES / "show_protocols_all.txt").read_text()


def test_reply_lines_keep_their_codes():
    reply = parse_reply("0001 BIRD 2.0.12 ready.\n1002-a\n b\n0000 \n")
    assert reply == [(1, "BIRD 2.0.12 ready."), (1002, "a"), (1002, "b"), (0, "")]


def test_show_protocols_rows():
    rows = parse_protocols(parse_reply(SHOW_PROTOCOLS))
    assert [(r.name, r.proto, r.state) for r in rows] == [
        ("device1", "Device", "up"),
        ("lbtui_kernel4", "Kernel", "up"),
        ("bfd1", "BFD", "up"),
        ("uplink", "BGP", "up"),
        ("down1", "BGP", "start"),
    ]
    assert rows[3].info == "Established" and rows[3].since == "04:25:37.120"
    assert rows[4].info == "Idle          Socket: Connection closed"


def test_bgp_sessions_with_neighbours():
    sessions = parse_bgp_sessions(parse_reply(SHOW_PROTOCOLS_ALL))
    assert [s.name for s in sessions] == ["uplink", "down1"]
    up, down = sessions
    assert up.established and up.neighbor == "10.1.1.1" and up.neighbor_as == 65000 and up.local_as == 65100
    assert up.last_error is None
    assert not down.established and down.state == "Active" and down.neighbor == "10.1.2.1"
    assert down.last_error == "Socket: Connection refused" and down.since == "2026-12-06 04:25:39"


def test_recorded_host_and_router_sessions():
    host = parse_bgp_sessions(parse_reply((REPLIES / "host_show_protocols_all.txt").read_text()))
    assert [(s.name, s.state, s.neighbor, s.neighbor_as, s.local_as) for s in host] == [
        ("uplink", "Established", "10.1.1.1", 65000, 65100)
    ]
    rows = parse_protocols(parse_reply((REPLIES / "host_show_protocols.txt").read_text()))
    assert [(r.name, r.proto, r.table) for r in rows][1] == ("lbtui_kernel4", "Kernel", "lbtui_vips4")
    router = parse_bgp_sessions(parse_reply((REPLIES / "router_show_protocols_all.txt").read_text()))
    # the dynamic-neighbour template (no address: a range) and the session it spawned
    assert [(s.name, s.state, s.neighbor) for s in router] == [
        ("lb_hosts", "Passive", None),
        ("lbhost1", "Established", "10.1.1.2"),
    ]


def test_render_fills_code_not_comments():
    text = "# @A@ is the answer\nrouter id @A@;  # @A@\nlocal as @B@;\n"
    assert render_config(text, {"A": "10.0.0.1", "B": 65000}) == (
        "# @A@ is the answer\nrouter id 10.0.0.1;  # @A@\nlocal as 65000;\n"
    )


def test_render_names_missing_and_unused_values():
    with pytest.raises(ValueError, match=r"no value for \['B'\]; no placeholder for \['C'\]"):
        render_config("x @A@ @B@;\n", {"A": 1, "C": 2})


@pytest.mark.parametrize(
    ("template", "values"),
    [
        ("lb-host.conf", {"ROUTER_ID": 1, "LOCAL_AS": 1, "ROUTER_IP": 1, "ROUTER_AS": 1, "VIP_TABLE": 1}),
        ("router.conf", {"ROUTER_ID": 1, "ROUTER_AS": 1, "LB_HOSTS": 1, "LB_AS": 1, "VIP_PREFIXES": 1}),
    ],
)
def test_shipped_templates_have_exactly_the_documented_placeholders(template, values):
    text = (REPO / "configs" / "bird" / template).read_text()
    for name in values:
        assert f"#   @{name}@" in text, f"{template}: @{name}@ is not documented in the header"
    render_config(text, values)


@pytest.mark.requires("bird")
@pytest.mark.parametrize("template", ["lb-host.conf", "router.conf"])
def test_filled_templates_parse(tmp_path, template):
    """What the scale-out lab writes is a configuration BIRD accepts (`bird -p`: parse only)."""
    from lbtui.scaleout_lab import ScaleOutLab, ScaleOutSpec

    lab = ScaleOutLab(ScaleOutSpec(prefix="sxu"))  # only for its values; never brought up
    values = lab.bird_values(lab.ns_router if template == "router.conf" else lab.ns_host(1))
    conf = tmp_path / template
    conf.write_text(render_config((REPO / "configs" / "bird" / template).read_text(), values))
    r = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr


class FakeBird:
    """A unix socket that greets like BIRD and answers each command with a canned reply."""

    def __init__(self, path: str, replies: dict[str, str]) -> None:
        self.replies = replies
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"0001 BIRD 2.0.12 ready.\n")
                command = conn.makefile().readline().strip()
                reply = self.replies.get(command, "9001 syntax error\n")
                for i in range(0, len(reply), 7):  # in pieces, as a stream may deliver it
                    conn.sendall(reply[i : i + 7].encode())

    def close(self) -> None:
        self.server.close()


def test_client_against_a_fake_bird(tmp_path):
    path = str(tmp_path / "bird.ctl")
    fake = FakeBird(path, {"show protocols": SHOW_PROTOCOLS, "show protocols all": SHOW_PROTOCOLS_ALL})
    try:
        bird = BirdControl(path, timeout_s=2)
        assert [p.name for p in bird.protocols()][-1] == "down1"
        assert [s.state for s in bird.bgp_sessions()] == ["Established", "Active"]
        with pytest.raises(BirdError, match="syntax error"):
            bird.command("show nonsense")
    finally:
        fake.close()


def test_client_without_bird(tmp_path):
    with pytest.raises(BirdError, match="control socket"):
        BirdControl(str(tmp_path / "absent.ctl")).protocols()
