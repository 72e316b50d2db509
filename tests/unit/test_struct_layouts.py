# SPDX-License-Identifier: Apache-2.0
"""structs.check_layouts on hand-written "compiled" types (no root; tests/bpf/test_layouts.py runs it
on what the C compiler really laid out)."""

from __future__ import annotations

import ctypes

import pytest

from lbtui.dataplane import structs


def struct(name: str, *fields: tuple) -> type:
    return type(name, (ctypes.Structure,), {"_fields_": list(fields)})


LOCK = struct("bpf_spin_lock", ("val", ctypes.c_uint32))


def test_padding_bcc_inserts_and_a_lock_mirrored_as_a_u32_are_not_differences():
    # BCC names the gaps the compiler left __pad_1, ..., __pad_end; the mirror leaves them implicit
    c_rec = struct("rec", ("a", ctypes.c_uint8), ("__pad_1", ctypes.c_char * 7), ("b", ctypes.c_uint64))
    py_rec = struct("Rec", ("a", ctypes.c_uint8), ("b", ctypes.c_uint64))
    c_bucket = struct("bucket", ("lock", LOCK), ("pad", ctypes.c_uint32), ("tokens", ctypes.c_uint64))
    py_bucket = struct(
        "Bucket", *[(n, ctypes.c_uint32) for n in ("lock", "pad")], ("tokens", ctypes.c_uint64)
    )
    structs.check_layouts({"r": c_rec, "b": c_bucket}, {"r": py_rec, "b": py_bucket})


def test_every_difference_is_reported_at_once():
    c_key = struct("key", ("x", ctypes.c_uint16), ("y", ctypes.c_uint16))
    c_rec = struct("rec", ("key", c_key), ("n", ctypes.c_uint32))
    py_key = struct("Key", ("y", ctypes.c_uint16), ("x", ctypes.c_uint16))
    py_rec = struct("Rec", ("key", py_key), ("count", ctypes.c_uint32))
    with pytest.raises(structs.LayoutError) as err:
        structs.check_layouts({"struct rec": c_rec}, {"struct rec": py_rec})
    prefix = "  struct rec (C rec, Python Rec): "
    assert str(err.value).splitlines()[1:] == [
        prefix + "field key.x is at offset 0 (2 bytes) in C, at offset 2 (2 bytes) in Python",
        prefix + "field key.y is at offset 2 (2 bytes) in C, at offset 0 (2 bytes) in Python",
        prefix + "field n (C offset 4) is missing in Python",
        prefix + "field count (Python offset 4) is not in C",
    ]


def test_names_the_compiled_side_lacks_are_not_checked():
    structs.check_layouts({}, {"lb_x key": ctypes.c_uint32})


def test_the_mirror_table_covers_every_map_part_and_record():
    assert len(structs.MIRRORS) == 2 * len(structs.MAP_LAYOUTS) + len(structs.RECORD_LAYOUTS)
    assert structs.MIRRORS["lb_ct_established value"] is structs.CtEntry
    assert structs.MIRRORS["lb_ct_transient key"] is structs.CtKey
    assert structs.MIRRORS["struct lb_event"] is structs.Event
