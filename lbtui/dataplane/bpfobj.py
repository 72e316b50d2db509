# SPDX-License-Identifier: Apache-2.0
"""Read-only access to a BPF program that another process loaded, found by its id (bpf(2) syscalls).

`lbtui backend-setup` is a one-shot command: the decapsulation program it attaches outlives it, held
by the TC filter. A later run (status, undo, a second setup) finds the program's id on the
interface and reads its maps through the program's map ids; nothing is pinned, so nothing is left
behind when the filter goes away or the network namespace is deleted.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from collections.abc import Iterator
from dataclasses import dataclass

_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_BPF_MAP_LOOKUP_ELEM = 1
_BPF_MAP_GET_NEXT_KEY = 4
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_MAP_GET_FD_BY_ID = 14
_BPF_OBJ_GET_INFO_BY_FD = 15
_ATTR_SIZE = 128
_OBJ_NAME_LEN = 16
_PERCPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
_ENOENT = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    r = _libc.syscall(_NR_BPF, cmd, attr, _ATTR_SIZE)
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return int(r)


def _fd_by_id(cmd: int, obj_id: int) -> int:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=I", attr, 0, obj_id)
    return _bpf(cmd, attr)


def _info(fd: int, size: int) -> bytes:
    info = ctypes.create_string_buffer(size)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=IIQ", attr, 0, fd, size, ctypes.addressof(info))
    _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr)
    return info.raw


def possible_cpus() -> int:
    """Number of possible CPUs: per-CPU map values hold one 8-byte-aligned slot for each."""
    with open("/sys/devices/system/cpu/possible") as f:
        count = 0
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            count += int(hi or lo) - int(lo) + 1
    return count


@dataclass
class MapRef:
    """An open map of another process's program: name, sizes and an fd (close() releases it)."""

    fd: int
    name: str
    map_type: int
    key_size: int
    value_size: int

    @property
    def percpu(self) -> bool:
        return self.map_type in _PERCPU_TYPES

    def _value_bytes(self) -> int:
        if not self.percpu:
            return self.value_size
        return ((self.value_size + 7) // 8) * 8 * possible_cpus()

    def keys(self) -> Iterator[bytes]:
        key = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        first = True
        while True:
            struct.pack_into(
                "=IIQQ", attr, 0, self.fd, 0, 0 if first else ctypes.addressof(key), ctypes.addressof(nxt)
            )
            try:
                _bpf(_BPF_MAP_GET_NEXT_KEY, attr)
            except OSError as exc:
                if exc.errno == _ENOENT:
                    return
                raise
            first = False
            ctypes.memmove(key, nxt, self.key_size)
            yield key.raw

    def lookup(self, key: bytes) -> bytes | None:
        """The raw value (for a per-CPU map: every CPU's slot, concatenated), None if absent."""
        k = ctypes.create_string_buffer(key, self.key_size)
        v = ctypes.create_string_buffer(self._value_bytes())
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("=IIQQ", attr, 0, self.fd, 0, ctypes.addressof(k), ctypes.addressof(v))
        try:
            _bpf(_BPF_MAP_LOOKUP_ELEM, attr)
        except OSError as exc:
            if exc.errno == _ENOENT:
                return None
            raise
        return v.raw

    def percpu_u64_sum(self, key: bytes) -> int:
        """Sum over CPUs of a per-CPU u64 value (0 when absent)."""
        raw = self.lookup(key)
        if raw is None:
            return 0
        return sum(struct.unpack(f"={len(raw) // 8}Q", raw))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def prog_id(prog_fd: int) -> int:
    """The id of a loaded program (struct bpf_prog_info: id at offset 4)."""
    (pid,) = struct.unpack_from("=I", _info(prog_fd, 64), 4)
    return int(pid)


def program_map_ids(prog_id: int) -> list[int]:
    """The ids of the maps program `prog_id` uses."""
    prog_fd = _fd_by_id(_BPF_PROG_GET_FD_BY_ID, prog_id)
    try:
        # struct bpf_prog_info: nr_map_ids at offset 52, map_ids (u64 pointer) at 56
        head = _info(prog_fd, 64)
        (nr_maps,) = struct.unpack_from("=I", head, 52)
        ids = (ctypes.c_uint32 * max(nr_maps, 1))()
        info = ctypes.create_string_buffer(64)
        struct.pack_into("=IQ", info, 52, nr_maps, ctypes.addressof(ids))
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("=IIQ", attr, 0, prog_fd, 64, ctypes.addressof(info))
        _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr)
    finally:
        os.close(prog_fd)
    return [int(i) for i in list(ids)[:nr_maps]]


def program_maps(prog_id: int) -> dict[str, MapRef]:
    """Open every map of program `prog_id`, by name; the caller closes them."""
    maps: dict[str, MapRef] = {}
    for map_id in program_map_ids(prog_id):
        fd = _fd_by_id(_BPF_MAP_GET_FD_BY_ID, map_id)
        # struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16]
        raw = _info(fd, 40)
        map_type, _, key_size, value_size = struct.unpack_from("=IIII", raw, 0)
        name = raw[24 : 24 + _OBJ_NAME_LEN].split(b"\0", 1)[0].decode()
        maps[name] = MapRef(fd, name, map_type, key_size, value_size)
    return maps
