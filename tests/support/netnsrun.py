# SPDX-License-Identifier: Apache-2.0
"""BPF_PROG_TEST_RUN from inside a network namespace, for programs that ask the kernel's tables.

bpf_fib_lookup in a test run looks at the routes and neighbours of the network namespace of the
thread that runs the program, with the ingress interface given in the run's context (xdp_md
ingress_ifindex). `run_in_netns` runs one frame from a short-lived thread that entered the namespace
(setns affects only that thread), so the test process itself stays where it is.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from lbtui.dataplane.progrun import RunResult, run_program

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def call_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """fn() on a short-lived thread that entered netns `ns` (its sockets, netlink included, and the
    processes it starts belong to `ns`); what it raises is raised here."""
    out: list[Any] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        ns_fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(ns_fd, CLONE_NEWNET) != 0:  # this thread only; it ends right after
                raise OSError(ctypes.get_errno(), "setns")
            out.append(fn())
        except BaseException as exc:  # handed to the test's thread
            out.append(exc)
        finally:
            os.close(ns_fd)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return cast(T, out[0])


def run_in_netns(
    ns: str, prog_fd: int, frame: bytes, ingress_ifindex: int = 0, ctx: bytes | None = None
) -> RunResult:
    """Run the program `prog_fd` on `frame` inside netns `ns`: an XDP program as if the frame arrived
    on `ingress_ifindex`, a TC program with `ctx` (progrun.skb_context: its interface and more)."""
    return call_in_netns(ns, lambda: run_program(prog_fd, frame, ctx=ctx, ingress_ifindex=ingress_ifindex))
