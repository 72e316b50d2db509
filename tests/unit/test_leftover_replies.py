# SPDX-License-Identifier: Apache-2.0
"""Which reply programs an earlier run left are this instance's, and which of them a start removes
(lbtui/dataplane/leftover_replies.py); the kernel side is faked here, tests/e2e/test_fast_path_restart.py
does it for real."""

from __future__ import annotations

import logging

import pytest

from lbtui.dataplane import leftover_replies, tcfilter
from lbtui.dataplane.fastpath import REPLY_PREF
from lbtui.dataplane.leftover_replies import LeftoverReplies, ReplyFilter

MAPS = {10: [1, 2, 3], 11: [1, 2, 3], 20: [7, 8]}  # program id -> its map ids; 20: another instance's
FOUND = [ReplyFilter("br0", 10), ReplyFilter("br1", 11), ReplyFilter("other0", 20)]


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    detached: list[str] = []
    attached = {f.ifname: f.prog_id for f in FOUND}
    monkeypatch.setattr(leftover_replies, "reply_filters", lambda: list(FOUND))
    monkeypatch.setattr(leftover_replies.bpfobj, "program_map_ids", lambda prog_id: MAPS[prog_id])

    def filters(ifname: str, hook: str) -> list[tcfilter.BpfFilter]:
        prog = attached.get(ifname)
        return [] if prog is None else [tcfilter.BpfFilter("lbtui_tc_reply", prog, REPLY_PREF)]

    def detach(ifname: str, hook: str, pref: int, handle: int = 1, delete_clsact: bool = False) -> None:
        assert (hook, pref) == (tcfilter.INGRESS, REPLY_PREF)
        detached.append(ifname)
        del attached[ifname]

    monkeypatch.setattr(leftover_replies.tcfilter, "filters", filters)
    monkeypatch.setattr(leftover_replies.tcfilter, "detach", detach)
    return detached


def test_only_programs_with_our_maps_are_ours(kernel: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        left = LeftoverReplies.find({3, 4, 5})
    assert left.ours == {"br0": 10, "br1": 11}
    assert "attached to TC ingress of other0; left alone" in caplog.text


def test_fast_path_off_removes_all_of_ours(kernel: list[str], caplog: pytest.LogCaptureFixture) -> None:
    left = LeftoverReplies.find({1})
    with caplog.at_level(logging.WARNING):
        left.remove(set(), 'settings.fast_path is "off"')
    assert kernel == ["br0", "br1"]
    assert "removed the reply program an earlier run left on TC ingress of br0" in caplog.text
    assert left.ours == {}


def test_those_this_run_re_attached_stay(kernel: list[str]) -> None:
    LeftoverReplies.find({1}).remove({"br1"}, "not backend-facing now")
    assert kernel == ["br0"]


def test_a_program_replaced_since_load_is_not_removed(kernel: list[str]) -> None:
    left = LeftoverReplies.find({1})
    left.ours["br0"] = 99  # another program is there now
    left.remove(set(), "test")
    assert kernel == ["br1"]
