# SPDX-License-Identifier: Apache-2.0
"""Katran's XDP balancer next to lbtui in bench/microbench.py (``--katran PATH``).

Nothing of Katran is in this repository: PATH is a Katran checkout the user points to. This module
compiles ``katran/lib/bpf/balancer.bpf.c`` from it with clang (Katran's own pipeline: clang to LLVM
IR, llc to BPF), loads the object with libbpf (Debian's libbpf.so.1 through ctypes; BCC cannot load a
prebuilt object) and fills Katran's maps for one VIP and three reals the way its tester's
provisioning and KatranLb do it:

- ``vip_map``: (VIP, port, TCP) -> {flags 0, vip_num 0}
- ``reals``: real ids 1..3 (id 0 means "unset" to Katran) -> the real's address
- ``ch_rings``: the VIP's ring of 65,537 slots -> real ids, equal weights
- ``ctl_array[0]``: the MAC of the default gateway (the tester's 00:00:de:ad:be:af)
- ``lru_mapping[cpu]``: a per-CPU LRU for the CPU the bench runs on, as KatranLb builds one per
  forwarding core (``--katran-lru percpu``, the default), or none, so the program falls back to
  its 1,000-entry ``fallback_cache`` as the unit tester does (``--katran-lru fallback``)

The VIP, reals and packets are lbtui's (the same frames lbtui's classes time). Katran encapsulates
every VIP packet in IPIP in place and returns XDP_TX, so each call gets a fresh copy of the frame.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import socket
import struct
import subprocess
import tempfile
from dataclasses import dataclass

XDP_PASS, XDP_TX = 2, 3
BPF_MAP_TYPE_LRU_HASH = 9
RING_SIZE = 65537  # Katran's balancer_consts.h
MAX_VIPS = 512
GATEWAY_MAC = bytes.fromhex("0000deadbeaf")  # the tester's default MAC (KatranTestProvision)
SOURCE = "katran/lib/bpf/balancer.bpf.c"
# indexes into Katran's per-CPU `stats` map (balancer_consts.h): MAX_VIPS + ...
STATS_LRU, STATS_LRU_MISS, STATS_FALLBACK_LRU = 0, 1, 3


class KatranError(Exception):
    pass


def build(checkout: str, out_dir: str) -> str:
    """Compile Katran's balancer as its Makefile-bpf does; returns the object's path."""
    src = os.path.join(checkout, SOURCE)
    if not os.path.isfile(src):
        raise KatranError(f"{checkout} is not a Katran checkout: {SOURCE} is missing")
    for tool in ("clang", "llc"):
        if not shutil.which(tool):
            raise KatranError(f"{tool} is missing: it is a bench-only tool (scripts/setup installs it)")
    obj = os.path.join(out_dir, "balancer.bpf.o")
    cflags = [
        "-O2",
        "-g",
        "-emit-llvm",
        "-D__KERNEL__",
        "-fno-asynchronous-unwind-tables",
        "-Wno-unused-value",
        "-Wno-pointer-sign",
        "-Wno-compare-distinct-pointer-types",
        f"-I{checkout}",
        f"-I{os.path.join(checkout, 'katran/lib/linux_includes')}",
    ]
    ir = os.path.join(out_dir, "balancer.bc")
    for cmd in (
        ["clang", *cflags, "-c", src, "-o", ir],
        ["llc", "-march=bpf", "-filetype=obj", ir, "-o", obj],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise KatranError(f"{cmd[0]} failed:\n{r.stderr[-3000:]}")
    return obj


class _Libbpf:
    """The few libbpf.so.1 calls the bench needs (libbpf >= 1.0: NULL / -errno on error)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        lib = ctypes.CDLL(name, use_errno=True)
        vp, cp, i, u32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
        for fn, res, args in (
            ("bpf_object__open_file", vp, [cp, vp]),
            ("bpf_object__load", i, [vp]),
            ("bpf_object__close", None, [vp]),
            ("bpf_object__find_map_by_name", vp, [vp, cp]),
            ("bpf_object__find_program_by_name", vp, [vp, cp]),
            ("bpf_program__fd", i, [vp]),
            ("bpf_map__fd", i, [vp]),
            ("bpf_map__key_size", u32, [vp]),
            ("bpf_map__value_size", u32, [vp]),
            ("bpf_map_create", i, [i, cp, u32, u32, u32, vp]),
            ("bpf_map_update_elem", i, [i, vp, vp, ctypes.c_uint64]),
            ("bpf_map_lookup_elem", i, [i, vp, vp]),
            ("libbpf_num_possible_cpus", i, []),
        ):
            f = getattr(lib, fn)
            f.restype, f.argtypes = res, args
        self.lib = lib

    def check(self, rc: int, what: str) -> int:
        if rc < 0:
            err = ctypes.get_errno() or -rc
            raise KatranError(f"{what}: {os.strerror(err)}")
        return rc


@dataclass(frozen=True)
class Layout:
    """Katran's struct layouts (balancer_structs.h), checked against the object's BTF sizes."""

    vip_definition: str = "=4s12xHBx"  # union {vip; vipv6[4]}, port, proto
    vip_meta: str = "=II"  # flags, vip_num
    real_definition: str = "=4s12xB3x"  # union {dst; dstv6[4]}, flags
    ctl_value: str = "=6s2x"  # union {value; ifindex; mac[6]}
    lb_stats: str = "=QQ"


class Katran:
    """Katran's balancer loaded from a checkout, filled for one VIP and three reals."""

    def __init__(
        self, checkout: str, vip: str, port: int, reals: list[str], cpu: int, lru: str, lru_entries: int
    ) -> None:
        self.bpf = _Libbpf()
        self.tmp = tempfile.mkdtemp(prefix="lbtui-katran-")
        self.obj_path = build(os.path.abspath(checkout), self.tmp)
        self.obj = self.bpf.lib.bpf_object__open_file(self.obj_path.encode(), None)
        if not self.obj:
            raise KatranError(f"libbpf cannot open {self.obj_path}: {os.strerror(ctypes.get_errno())}")
        self.bpf.check(self.bpf.lib.bpf_object__load(self.obj), "loading Katran's balancer")
        prog = self.bpf.lib.bpf_object__find_program_by_name(self.obj, b"balancer_ingress")
        if not prog:
            raise KatranError("no balancer_ingress program in the object")
        self.prog_fd = self.bpf.lib.bpf_program__fd(prog)
        self.ncpus = self.bpf.lib.libbpf_num_possible_cpus()
        self.inner_fd = -1
        self.reals = reals
        self._check_layout()
        self._fill(vip, port, reals, cpu, lru, lru_entries)

    def close(self) -> None:
        self.bpf.lib.bpf_object__close(self.obj)
        if self.inner_fd >= 0:
            os.close(self.inner_fd)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- maps

    def _map(self, name: str) -> tuple[int, int, int]:
        m = self.bpf.lib.bpf_object__find_map_by_name(self.obj, name.encode())
        if not m:
            raise KatranError(f"Katran's object has no map {name}")
        return (
            self.bpf.lib.bpf_map__fd(m),
            self.bpf.lib.bpf_map__key_size(m),
            self.bpf.lib.bpf_map__value_size(m),
        )

    def _check_layout(self) -> None:
        lay = Layout()
        for name, key, value in (
            ("vip_map", lay.vip_definition, lay.vip_meta),
            ("reals", "=I", lay.real_definition),
            ("ctl_array", "=I", lay.ctl_value),
            ("stats", "=I", lay.lb_stats),
        ):
            _, ks, vs = self._map(name)
            if (ks, vs) != (struct.calcsize(key), struct.calcsize(value)):
                raise KatranError(
                    f"{name}: key/value {ks}/{vs} bytes, this bench expects "
                    f"{struct.calcsize(key)}/{struct.calcsize(value)}: Katran changed"
                )

    def _update(self, fd: int, key: bytes, value: bytes, what: str) -> None:
        k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
        self.bpf.check(self.bpf.lib.bpf_map_update_elem(fd, k, v, 0), f"filling {what}")

    def _fill(self, vip: str, port: int, reals: list[str], cpu: int, lru: str, lru_entries: int) -> None:
        lay = Layout()
        vip_fd, _, _ = self._map("vip_map")
        key = struct.pack(lay.vip_definition, socket.inet_aton(vip), socket.htons(port), socket.IPPROTO_TCP)
        self._update(vip_fd, key, struct.pack(lay.vip_meta, 0, 0), "vip_map")
        reals_fd, _, _ = self._map("reals")
        for real_id, addr in enumerate(reals, start=1):
            self._update(
                reals_fd,
                struct.pack("=I", real_id),
                struct.pack(lay.real_definition, socket.inet_aton(addr), 0),
                "reals",
            )
        ring_fd, _, _ = self._map("ch_rings")
        vip_num = 0
        for slot in range(RING_SIZE):  # equal weights: every real owns a third of the ring
            self._update(
                ring_fd,
                struct.pack("=I", RING_SIZE * vip_num + slot),
                struct.pack("=I", 1 + slot % len(reals)),
                "ch_rings",
            )
        ctl_fd, _, _ = self._map("ctl_array")
        self._update(ctl_fd, struct.pack("=I", 0), struct.pack(lay.ctl_value, GATEWAY_MAC), "ctl_array")
        if lru == "percpu":
            _, ks, vs = self._map("fallback_cache")  # same key/value as the per-CPU LRUs
            fd = self.bpf.lib.bpf_map_create(BPF_MAP_TYPE_LRU_HASH, b"katran_lru", ks, vs, lru_entries, None)
            self.inner_fd = self.bpf.check(fd, "creating the per-CPU LRU")
            outer_fd, _, _ = self._map("lru_mapping")
            self._update(outer_fd, struct.pack("=I", cpu), struct.pack("=I", self.inner_fd), "lru_mapping")

    def stat(self, index: int) -> tuple[int, int]:
        """Katran's per-CPU `stats` entry MAX_VIPS + index, summed over CPUs: (v1, v2)."""
        fd, _, vs = self._map("stats")
        stride = (vs + 7) & ~7
        buf = ctypes.create_string_buffer(stride * self.ncpus)
        key = ctypes.c_uint32(MAX_VIPS + index)
        self.bpf.check(self.bpf.lib.bpf_map_lookup_elem(fd, ctypes.byref(key), buf), "reading stats")
        v1 = v2 = 0
        for c in range(self.ncpus):
            a, b = struct.unpack_from("=QQ", buf.raw, c * stride)
            v1, v2 = v1 + a, v2 + b
        return v1, v2

    def counters(self) -> dict[str, int]:
        """What shows whether the timed classes took the intended paths."""
        vip_packets, lru_misses = self.stat(STATS_LRU)
        syn_misses, nonsyn_misses = self.stat(STATS_LRU_MISS)
        fallback, _ = self.stat(STATS_FALLBACK_LRU)
        return {
            "vip_packets": vip_packets,
            "lru_misses": lru_misses,
            "syn_lru_misses": syn_misses,
            "nonsyn_lru_misses": nonsyn_misses,
            "fallback_lru_packets": fallback,
        }


def check_encap(frame: bytes, out: bytes, reals: list[str]) -> str:
    """Katran's output for one VIP frame: gateway MAC, outer IPv4/IPIP to a real, the frame's IP
    packet unchanged inside, a valid outer header checksum."""
    if len(out) != len(frame) + 20:
        raise KatranError(f"encapsulated frame is {len(out)} bytes, expected {len(frame) + 20}")
    if out[0:6] != GATEWAY_MAC:
        raise KatranError(f"destination MAC {out[0:6].hex()} is not the gateway's")
    outer = out[14:34]
    if outer[0] != 0x45 or outer[9] != 4:
        raise KatranError("outer header is not IPv4 carrying IPIP")
    s = sum(struct.unpack("!10H", outer))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    if s != 0xFFFF:
        raise KatranError("outer IPv4 checksum is wrong")
    real = socket.inet_ntoa(outer[16:20])
    if real not in reals:
        raise KatranError(f"outer destination {real} is not a real")
    if out[34:] != frame[14:]:
        raise KatranError("the inner packet was changed")
    return f"IPIP {socket.inet_ntoa(outer[12:16])} -> {real}, inner packet unchanged"
