# SPDX-License-Identifier: Apache-2.0
"""Run a loaded BPF program on a buffer: BPF_PROG_TEST_RUN through the bpf(2) syscall (BCC 0.26 has
no binding for it).

The engine removes conntrack entries this way (`lbtui_reap`, see maps.reap_conntrack); the data-path
tests use it for the verdict and every output byte of one packet, bench/ for kernel-timed ns per run.
With repeat > 1 the kernel runs the program on the same buffer without resetting it, so callers that
measure the DNAT path run one packet per call.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from dataclasses import dataclass

_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_BPF_PROG_TEST_RUN = 10
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
TC_ACT_UNSPEC = 0xFFFFFFFF  # -1 as the test run's unsigned retval: the hook's next filter decides
TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7


@dataclass(frozen=True)
class RunResult:
    retval: int
    data: bytes
    duration_ns: int
    ctx: bytes = b""  # the context after the run, when one was given (e.g. the skb's mark)


def skb_context(ifindex: int, mark: int = 0, gso_size: int = 0, gso_segs: int = 0) -> bytes:
    """A struct __sk_buff for a TC program's run: the frame arrives on `ifindex` of the calling
    thread's network namespace (skb->dev; bpf_fib_lookup uses that namespace), with that mark and, for
    a GSO skb, gso_size bytes of payload per segment. The kernel takes only these fields (and a few
    others) and wants every other byte zero."""
    ctx = bytearray(192)  # sizeof(struct __sk_buff)
    struct.pack_into("=I", ctx, 8, mark)
    struct.pack_into("=II", ctx, 36, ifindex, ifindex)  # ingress_ifindex, ifindex
    struct.pack_into("=I", ctx, 164, gso_segs)
    struct.pack_into("=I", ctx, 176, gso_size)
    return bytes(ctx)


def run_program(
    prog_fd: int, data: bytes, repeat: int = 1, ctx: bytes | None = None, ingress_ifindex: int = 0
) -> RunResult:
    """Run a loaded program on one packet `repeat` times; returns the verdict and the output packet.

    `ingress_ifindex` (XDP only): the frame arrives on that interface of the calling thread's network
    namespace (bpf_fib_lookup then uses that namespace's routes and neighbours); 0: the loopback.
    TC programs take `ctx=skb_context(...)` for the same.
    """
    if ingress_ifindex:  # struct xdp_md: data, data_end (= the frame's size), data_meta, ingress_ifindex...
        ctx = struct.pack("=IIIIII", 0, len(data), 0, ingress_ifindex, 0, 0)
    buf_in = ctypes.create_string_buffer(data, len(data))
    buf_out = ctypes.create_string_buffer(len(data) + 512)
    ctx_in = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    # the kernel copies its whole context struct back (or fails with ENOSPC): room for the largest
    ctx_out = ctypes.create_string_buffer(max(len(ctx), 256)) if ctx else None
    attr = ctypes.create_string_buffer(128)  # union bpf_attr, zero padded
    # struct { u32 prog_fd, retval, data_size_in, data_size_out; u64 data_in, data_out;
    #          u32 repeat, duration, ctx_size_in, ctx_size_out; u64 ctx_in, ctx_out; u32 flags, cpu; }
    struct.pack_into("=IIII", attr, 0, prog_fd, 0, len(data), len(buf_out))
    struct.pack_into("=QQ", attr, 16, ctypes.addressof(buf_in), ctypes.addressof(buf_out))
    struct.pack_into("=II", attr, 32, repeat, 0)
    if ctx_in is not None and ctx_out is not None:
        struct.pack_into("=II", attr, 40, len(ctx_in), len(ctx_out))
        struct.pack_into("=QQ", attr, 48, ctypes.addressof(ctx_in), ctypes.addressof(ctx_out))
    r = _libc.syscall(_NR_BPF, _BPF_PROG_TEST_RUN, attr, 128)
    if r != 0:
        err = ctypes.get_errno()
        raise OSError(err, "BPF_PROG_TEST_RUN: " + os.strerror(err))
    (retval,) = struct.unpack_from("=I", attr, 4)
    (size_out,) = struct.unpack_from("=I", attr, 12)
    (duration,) = struct.unpack_from("=I", attr, 36)
    ctx_after = b""
    if ctx_out is not None:
        (ctx_size,) = struct.unpack_from("=I", attr, 44)
        ctx_after = ctx_out.raw[:ctx_size]
    return RunResult(retval=retval, data=buf_out.raw[:size_out], duration_ns=duration, ctx=ctx_after)
