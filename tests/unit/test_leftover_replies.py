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
FOUND = [
    ReplyFilter("br0", 10, REPLY_PREF),
    ReplyFilter("br1", 11, REPLY_PREF + 1),
    ReplyFilter("other0", 20, REPLY_PREF),
]


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    detached: list[str] = []
    attached = {f.ifname: (f.prog_id, f.pref) for f in FOUND}
    monkeypatch.setattr(leftover_replies, "reply_filters", lambda: list(FOUND))
    monkeypatch.setattr(leftover_replies.bpfobj, "program_map_ids", lambda prog_id: MAPS[prog_id])

    def filters(ifname: str, hook: str) -> list[tcfilter.BpfFilter]:
        if ifname not in attached:
            return []
        prog, pref = attached[ifname]
        return [tcfilter.BpfFilter("lbtui_tc_reply", prog, pref)]

    def detach(ifname: str, hook: str, pref: int, handle: int = 1, delete_clsact: bool = False) -> None:
        assert (hook, pref) == (tcfilter.INGRESS, attached[ifname][1])
        detached.append(ifname)
        del attached[ifname]

    monkeypatch.setattr(leftover_replies.tcfilter, "filters", filters)
    monkeypatch.setattr(leftover_replies.tcfilter, "detach", detach)
    return detached


def test_only_programs_with_our_maps_are_ours(kernel: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        left = LeftoverReplies.find({3, 4, 5})
    assert [(f.ifname, f.prog_id) for f in left.ours] == [("br0", 10), ("br1", 11)]
    assert left.adoptable() == {"br0": (REPLY_PREF, 10), "br1": (REPLY_PREF + 1, 11)}
    assert "at TC ingress of other0 (preference 0xc002, program id 20) is another instance's" in caplog.text
    assert "`tc filter del dev other0 ingress pref 49154`" in caplog.text


def test_fast_path_off_removes_all_of_ours(kernel: list[str], caplog: pytest.LogCaptureFixture) -> None:
    left = LeftoverReplies.find({1})
    with caplog.at_level(logging.WARNING):
        left.remove('settings.fast_path is "off"')
    assert kernel == ["br0", "br1"]
    assert "removed the reply program an earlier run left on TC ingress of br0" in caplog.text
    assert left.ours == []


def test_a_program_replaced_since_load_is_not_removed(kernel: list[str]) -> None:
    """Where this run replaced the earlier run's program in place (fastpath.ReplyPrograms' adopt), or
    anyone else did, the filter found at load is no longer there."""
    left = LeftoverReplies.find({1})
    left.ours[0] = ReplyFilter("br0", 99, REPLY_PREF)  # another program is there now
    left.remove("test")
    assert kernel == ["br1"]
