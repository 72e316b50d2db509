# SPDX-License-Identifier: Apache-2.0
"""Pins are lbtui's alone (docs/datapath.md#bpffs): an instance's pin directory is made 0700, a bpffs
lbtui mounts is 0700, and a pin directory another user owns or may write to (or that holds another
user's pin) is refused before anything is compiled or adopted, and left exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtui.dataplane.bpffs import prepare_pin_dir
from lbtui.dataplane.kernel import KernelDataplane
from lbtui.dataplane.port import DataplaneError, DataplaneSpec
from lbtui.engine import PIN_ROOT

NOBODY = 65534
SMALL = dict(table_size=7, conntrack_entries=1024, max_backends=16, max_groups=2, max_services=2)


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    path = Path(PIN_ROOT, f"lbpd{os.getpid()}")  # per process: bpf tests do not take the e2e lock
    prepare_pin_dir(str(path.parent / "lbpd-probe"))  # the bpffs is mounted
    os.rmdir(path.parent / "lbpd-probe")
    yield path
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        for child in path.iterdir():
            child.rmdir() if child.is_dir() and not child.is_symlink() else child.unlink()
        path.rmdir()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_new_pin_dir_is_0700_and_goes_at_a_clean_stop(pin_dir: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        dp = KernelDataplane(DataplaneSpec(**SMALL, pin_dir=str(pin_dir)))  # type: ignore[arg-type]
        dp.load()
    finally:
        os.umask(old_umask)
    try:
        assert mode(pin_dir) == 0o700
        assert (pin_dir / "lb_ct_established").exists()
    finally:
        dp.close()
    assert not pin_dir.exists()


@pytest.mark.parametrize(
    "case",
    ["owned by another user", "writable by others", "holds another user's pin", "a symlink"],
)
def test_a_pin_dir_that_is_not_ours_alone_is_refused_and_left_alone(pin_dir: Path, case: str) -> None:
    target = pin_dir.parent / f"{pin_dir.name}-target"
    if case == "a symlink":
        target.mkdir(mode=0o700)
        pin_dir.symlink_to(target)
    else:
        pin_dir.mkdir(mode=0o700)
    if case == "owned by another user":
        os.chown(pin_dir, NOBODY, NOBODY)
    elif case == "writable by others":
        os.chmod(pin_dir, 0o777)
    elif case == "holds another user's pin":
        (pin_dir / "lb_ct_established").mkdir()  # bpffs holds pins and directories only
        os.chown(pin_dir / "lb_ct_established", NOBODY, NOBODY)
    before = (os.lstat(pin_dir), sorted(os.listdir(pin_dir)))
    dp = KernelDataplane(DataplaneSpec(**SMALL, pin_dir=str(pin_dir)))  # type: ignore[arg-type]
    try:
        with pytest.raises(DataplaneError, match="refusing"):
            dp.load()
        assert not dp.adopted
    finally:
        dp.close()  # the engine closes a dataplane whose load failed: the directory stays as it was
        try:
            after = (os.lstat(pin_dir), sorted(os.listdir(pin_dir)))
            assert (after[0].st_uid, after[0].st_mode, after[1]) == (
                before[0].st_uid,
                before[0].st_mode,
                before[1],
            )
        finally:
            if target.exists():
                target.rmdir()


def test_a_bpffs_lbtui_mounts_is_0700() -> None:
    base = Path(tempfile.mkdtemp(prefix="lbtui-bpffs-"))
    root = base / "bpffs"
    try:
        prepare_pin_dir(str(root / "inst"))
        assert subprocess.run(["mountpoint", "-q", str(root)]).returncode == 0
        assert mode(root) & 0o777 == 0o700  # the kernel adds the sticky bit to a bpffs root
        assert mode(root / "inst") == 0o700
    finally:
        if subprocess.run(["mountpoint", "-q", str(root)]).returncode == 0:
            subprocess.run(["umount", str(root)], check=True)
        shutil.rmtree(base)


def test_starts_racing_to_mount_the_bpffs_mount_it_once(tmp_path: Path) -> None:
    """Four processes prepare pin directories under one fresh mount point at the same moment: one
    bpffs is mounted there (not four stacked ones), and every directory is on it."""
    root = tmp_path / "bpffs"
    code = (
        "import sys, time; from lbtui.dataplane.bpffs import prepare_pin_dir; "
        "t = float(sys.argv[2]); time.sleep(max(0.0, t - time.time())); prepare_pin_dir(sys.argv[1])"
    )
    start = f"{time.time() + 1.0}"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root / f"i{n}"), start]) for n in range(4)]
    try:
        assert [p.wait(30) for p in procs] == [0, 0, 0, 0]
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        assert mounts.count(str(root)) == 1, mounts
        assert {"i0", "i1", "i2", "i3"} <= set(os.listdir(root))  # (a bpffs also shows maps.debug...)
    finally:
        while str(root) in Path("/proc/self/mounts").read_text():
            subprocess.run(["umount", str(root)], check=True)
