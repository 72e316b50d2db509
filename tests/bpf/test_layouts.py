# SPDX-License-Identifier: Apache-2.0
"""structs.py against what the C compiler laid out: every field's name, order, offset and size.

Map keys and values come from the loaded programs (BCC generates ctypes types from the compiled C,
the same call the loader makes at start-up). The structs that are no map's key or value
(structs.RECORD_LAYOUTS: the ring-buffer record, lbtui_reap's input) are compiled here into one-entry
maps of a check program that includes lb.h, so BCC generates their types the same way.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from lbtui.dataplane import structs
from lbtui.dataplane.loader import DataplaneSpec, Loaded, bpf_source_dir

SMALL = DataplaneSpec(table_size=13, conntrack_entries=64, max_backends=8, max_groups=2, ringbuf_pages=1)


@pytest.fixture(scope="module")
def compiled() -> Any:
    from bcc import BPF

    loaded = Loaded(SMALL)
    text = '#include "lb.h"\n' + "".join(
        f"BPF_ARRAY(layout_{name}, struct {name}, 1);\n" for name in structs.RECORD_LAYOUTS
    )
    check = BPF(text=text, cflags=[f"-I{bpf_source_dir()}", *SMALL.cflags()])
    types = structs.map_types(loaded.bpf)
    types.update({f"struct {name}": check[f"layout_{name}"].Leaf for name in structs.RECORD_LAYOUTS})
    yield types
    check.cleanup()
    loaded.close()


def variant(mirror: Any, swap: tuple[str, str] | None = None, rename: tuple[str, str] | None = None) -> Any:
    """A copy of a mirror with two fields swapped or one renamed."""
    fields = list(mirror._fields_)
    names = [f[0] for f in fields]
    if swap:
        i, j = names.index(swap[0]), names.index(swap[1])
        fields[i], fields[j] = fields[j], fields[i]
    if rename:
        i = names.index(rename[0])
        fields[i] = (rename[1], *fields[i][1:])
    return type(mirror.__name__ + "Variant", (ctypes.Structure,), {"_fields_": fields})


def mismatch(compiled: Any, what: str, mirror: Any) -> str:
    with pytest.raises(structs.LayoutError) as err:
        structs.check_layouts(compiled, {**structs.MIRRORS, what: mirror})
    return str(err.value)


def test_every_mirror_is_compared_with_the_compiled_c(compiled):
    assert set(compiled) == set(structs.MIRRORS)
    structs.check_layouts(compiled)


def test_two_swapped_fields_of_equal_size_fail(compiled):
    swapped = variant(structs.CtEntry, swap=("backend_id", "service_id"))
    assert ctypes.sizeof(swapped) == ctypes.sizeof(structs.CtEntry)  # the old size check passed it
    msg = mismatch(compiled, "lb_ct_established value", swapped)
    assert "lb_ct_established value (C lb_ct_entry" in msg
    assert "field backend_id is at offset 20 (4 bytes) in C, at offset 24 (4 bytes) in Python" in msg
    assert "field service_id is at offset 24 (4 bytes) in C, at offset 20 (4 bytes) in Python" in msg


def test_swapped_fields_of_a_record_fail(compiled):
    msg = mismatch(compiled, "struct lb_event", variant(structs.Event, swap=("client_ip", "vip")))
    assert "struct lb_event (C lb_event" in msg
    assert "field client_ip is at offset 56 (4 bytes) in C, at offset 60 (4 bytes) in Python" in msg


def test_swapped_fields_inside_a_nested_struct_fail(compiled):
    key = variant(structs.CtKey, swap=("sport", "dport"))
    fields = [(name, key if name == "key" else t) for name, t in structs.ReapRec._fields_]
    rec = type("ReapRecVariant", (ctypes.Structure,), {"_fields_": fields})
    msg = mismatch(compiled, "struct lb_reap_rec", rec)
    assert "field key.sport is at offset 8 (2 bytes) in C, at offset 10 (2 bytes) in Python" in msg


def test_a_renamed_field_fails(compiled):
    msg = mismatch(compiled, "lb_ct_transient key", variant(structs.CtKey, rename=("sport", "src_port")))
    assert "lb_ct_transient key (C lb_ct_key" in msg
    assert "field sport (C offset 8) is missing in Python" in msg
    assert "field src_port (Python offset 8) is not in C" in msg


def test_a_wrong_size_fails(compiled):
    msg = mismatch(compiled, "lb_global_stats value", ctypes.c_uint32)
    assert "lb_global_stats value" in msg and ": 8 bytes in C, 4 in Python" in msg
