# SPDX-License-Identifier: Apache-2.0
"""Several instances' reply programs on one backend-facing interface (fastpath.ReplyPrograms,
leftover_replies.py, tcfilter.attach_free; docs/datapath.md#attachments), on a real veth's TC ingress
in a namespace of the test's own.

The programs are small stand-ins named lbtui_tc_reply, one per "instance", each counting the frames
it sees in a map of its own and answering TC_ACT_UNSPEC as lbtui_tc_reply does for a packet that is
no reply of its flows (tests/bpf/test_fast_path.py checks that verdict on the real program); frames
sent into the veth show that every filter of the chain sees them. tests/e2e/test_instances.py runs two
real instances with traffic.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from lbtui.dataplane import bpfobj, tcfilter
from lbtui.dataplane.fastpath import REPLY_PREF, REPLY_PREFS, ReplyPrograms
from lbtui.dataplane.leftover_replies import LeftoverReplies, map_ids_of
from tests.support.netnsrun import call_in_netns

NS = f"lbrf-{os.getpid()}"  # of this run: other worktrees run these tests at the same time
IF, PEER = "rf0", "rf0p"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

STAND_IN = """
BPF_ARRAY(seen, u64, 1);
int lbtui_tc_reply(struct __sk_buff *skb)
{
    int k = 0;
    u64 *n = seen.lookup(&k);
    if (n && skb->protocol == htons(0x88b5))  // the test's frames only, not the links' own IPv6 ND
        __sync_fetch_and_add(n, 1);
    return -1;  // TC_ACT_UNSPEC: the hook's next filter decides
}

int someone_else(struct __sk_buff *skb)
{
    return -1;
}
"""


def in_ns(fn: Callable[[], T]) -> T:
    """fn() from inside NS (netlink sockets and the `tc` it runs belong to NS)."""
    return call_in_netns(NS, fn)


class Instance:
    """One stand-in reply program, loaded."""

    def __init__(self) -> None:
        from bcc import BPF

        self.bpf = BPF(text=STAND_IN)
        self.fn = self.bpf.load_func("lbtui_tc_reply", BPF.SCHED_CLS)
        self.prog_id = bpfobj.prog_id(self.fn.fd)

    @property
    def seen(self) -> int:
        return int(self.bpf["seen"][ctypes.c_int(0)].value)


@pytest.fixture
def veth() -> Iterator[None]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        ip = ["ip", "-n", NS, "link"]
        subprocess.run([*ip, "add", IF, "type", "veth", "peer", "name", PEER], check=True)
        subprocess.run([*ip, "set", IF, "up"], check=True)
        subprocess.run([*ip, "set", PEER, "up"], check=True)
        yield
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


@pytest.fixture(scope="module")
def instances() -> list[Instance]:
    return [Instance() for _ in range(3)]


def reply_filters() -> dict[int, int]:
    """preference -> program id of the BPF filters at TC ingress of IF."""
    return {f.pref: f.prog_id for f in in_ns(lambda: tcfilter.filters(IF, tcfilter.INGRESS))}


def has_clsact() -> bool:
    out = subprocess.run(["tc", "-n", NS, "qdisc", "show", "dev", IF], capture_output=True, text=True)
    return "clsact" in out.stdout


def send_frames(count: int) -> None:
    """`count` Ethernet frames out of the peer, into IF's TC ingress."""

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((PEER, 0))
            frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x72\x01" + b"\x88\xb5" + b"lbtui reply filters"  # local
            for _ in range(count):
                s.send(frame.ljust(60, b"\x00"))

    in_ns(send)


def test_two_instances_reply_programs_share_an_interface_and_each_stop_removes_its_own(veth, instances):
    a, b, _ = instances
    replies_a, replies_b = ReplyPrograms(a.fn), ReplyPrograms(b.fn)
    in_ns(lambda: replies_a.set({IF}))
    in_ns(lambda: replies_b.set({IF}))
    assert replies_a.attached == {IF: REPLY_PREF} and replies_b.attached == {IF: REPLY_PREF + 1}
    assert reply_filters() == {REPLY_PREF: a.prog_id, REPLY_PREF + 1: b.prog_id}

    seen = a.seen, b.seen
    send_frames(5)
    assert (a.seen - seen[0], b.seen - seen[1]) == (5, 5)  # A's TC_ACT_UNSPEC let B see them too

    in_ns(replies_b.close)
    assert reply_filters() == {REPLY_PREF: a.prog_id}
    assert has_clsact()
    in_ns(lambda: replies_b.set({IF}))  # back: the free preference again
    assert reply_filters() == {REPLY_PREF: a.prog_id, REPLY_PREF + 1: b.prog_id}
    in_ns(replies_a.close)
    assert reply_filters() == {REPLY_PREF + 1: b.prog_id}
    in_ns(replies_b.close)
    assert reply_filters() == {} and not has_clsact()  # the last one out removes the clsact


def test_a_killed_instances_leftover_is_removed_or_adopted_and_the_others_stays(veth, instances, caplog):
    a, b, b_again = instances
    replies_a, killed = ReplyPrograms(a.fn), ReplyPrograms(b.fn)
    in_ns(lambda: replies_a.set({IF}))
    in_ns(lambda: killed.set({IF}))  # never closed: as after kill -9

    # B's next start finds its own by its maps (its pins adopted), and leaves A's alone
    with caplog.at_level("INFO"):
        left = in_ns(lambda: LeftoverReplies.find(map_ids_of([b.fn.fd])))
    assert [(f.ifname, f.pref, f.prog_id) for f in left.ours] == [(IF, REPLY_PREF + 1, b.prog_id)]
    assert (
        f"TC ingress of {IF} (preference {REPLY_PREF:#x}, program id {a.prog_id}) is another" in caplog.text
    )
    # wanted again: the new run replaces it in place, and the leftover cleanup then has nothing to do
    restarted = ReplyPrograms(b_again.fn, left.adoptable())
    in_ns(lambda: restarted.set({IF}))
    assert reply_filters() == {REPLY_PREF: a.prog_id, REPLY_PREF + 1: b_again.prog_id}
    in_ns(lambda: left.remove("test"))
    assert reply_filters() == {REPLY_PREF: a.prog_id, REPLY_PREF + 1: b_again.prog_id}

    # not wanted any more (or fast_path = "off"): the leftover goes, A's stays
    left = in_ns(lambda: LeftoverReplies.find(map_ids_of([b_again.fn.fd])))
    in_ns(lambda: left.remove("not backend-facing now"))
    assert reply_filters() == {REPLY_PREF: a.prog_id}
    seen = a.seen
    send_frames(3)
    assert a.seen - seen == 3
    in_ns(replies_a.close)
    assert not has_clsact()


def test_a_preference_anyone_else_uses_is_skipped(veth, instances):
    """Someone's filter at the first preference: left as it is, ours takes the next. (This kernel has
    no other classifier than bpf: a program of another name stands for it.)"""
    from bcc import BPF

    a, _, _ = instances
    someone = a.bpf.load_func("someone_else", BPF.SCHED_CLS)
    in_ns(lambda: tcfilter.attach(IF, tcfilter.INGRESS, someone.fd, someone.name, REPLY_PREF))
    replies = ReplyPrograms(a.fn)
    in_ns(lambda: replies.set({IF}))
    assert replies.attached == {IF: REPLY_PREF + 1}
    someones = bpfobj.prog_id(someone.fd)
    assert reply_filters() == {REPLY_PREF: someones, REPLY_PREF + 1: a.prog_id}
    in_ns(replies.close)
    assert reply_filters() == {REPLY_PREF: someones}
    assert has_clsact()  # someone's filter is still on it


def test_every_preference_taken_is_a_clear_error_and_nothing_is_replaced(veth, instances, caplog):
    a, b, _ = instances
    others = [ReplyPrograms(b.fn) for _ in REPLY_PREFS]
    for other in others:
        in_ns(lambda other=other: other.set({IF}))
    assert sorted(reply_filters()) == list(REPLY_PREFS)
    replies = ReplyPrograms(a.fn)
    with caplog.at_level("WARNING"):
        in_ns(lambda: replies.set({IF}))
    assert replies.attached == {}
    assert f"every preference from {REPLY_PREFS[0]:#x} to {REPLY_PREFS[-1]:#x} is taken" in caplog.text
    assert set(reply_filters().values()) == {b.prog_id}
