# SPDX-License-Identifier: Apache-2.0
"""The bpf filesystem that holds an instance's pinned maps and programs (docs/datapath.md#bpffs).

A pinned map is adopted by the next start of the same instance: its conntrack, selection tables and
backend addresses steer every packet. So the pins must be lbtui's own: the bpffs lbtui mounts and
each instance's directory are mode 0700, and a directory (or a pin in it) that belongs to another
user, or that others may write to, is refused instead of adopted: whoever could write there could
have planted maps that send traffic anywhere.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import subprocess

from lbtui.dataplane.port import DataplaneError

log = logging.getLogger(__name__)


class PinDirRefused(DataplaneError):
    """The pin directory is not lbtui's alone; it is left exactly as it was found."""


BPF_FS_TYPE = "bpf"
PIN_DIR_MODE = 0o700
CONNTRACK_PIN = "lb_ct_established"  # the map whose pin says an earlier run left state to adopt


def prepare_pin_dir(path: str) -> None:
    """Make `path` this user's 0700 directory on a bpf filesystem (mounting one, 0700, on its parent
    if needed); PinDirRefused if it exists but is not safe to adopt from (`check_pin_dir`)."""
    root = os.path.dirname(path.rstrip("/"))
    if not _on_bpffs(root):
        _mount_bpffs(root)
    try:
        os.mkdir(path, PIN_DIR_MODE)
    except FileExistsError:
        check_pin_dir(path)
    os.chmod(path, PIN_DIR_MODE)  # whatever the umask; an earlier version made it 0755


def _mount_bpffs(root: str) -> None:
    """Mount a 0700 bpffs on `root`, once: two instances starting together (systemd starts them in
    parallel) would otherwise both see no bpffs and mount twice, and the second mount would hide the
    first one's pins. The check and the mount happen under a lock on the parent directory."""
    os.makedirs(root, mode=PIN_DIR_MODE, exist_ok=True)
    fd = os.open(os.path.dirname(root.rstrip("/")) or "/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _on_bpffs(root):  # the other start mounted it while this one waited
            return
        mount = ["mount", "-t", "bpf", "-o", f"mode={PIN_DIR_MODE:o}", "bpf", root]
        r = subprocess.run(mount, capture_output=True, text=True)
        if r.returncode != 0:
            raise DataplaneError(f"cannot mount a bpf filesystem on {root}: {r.stderr.strip()}")
        log.warning("mounted bpffs on %s (pins survive only while this mount does)", root)
    finally:
        os.close(fd)  # and with it the lock


def check_pin_dir(path: str) -> None:
    """Refuse (PinDirRefused) a pin directory that is not a real directory of ours, closed to others,
    or that holds a pin of another user."""
    st = os.lstat(path)
    me = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise PinDirRefused(f"pin directory {path} is not a directory (a symlink or a file): refusing it")
    if st.st_uid != me:
        raise PinDirRefused(
            f"pin directory {path} belongs to uid {st.st_uid}, not to lbtui's uid {me}: refusing to adopt "
            "maps another user may have planted (remove the directory if its pins are lbtui's)"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PinDirRefused(
            f"pin directory {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): refusing to "
            "adopt maps another user may have planted (remove the directory if its pins are lbtui's)"
        )
    for name in os.listdir(path):
        owner = os.lstat(os.path.join(path, name)).st_uid
        if owner != me:
            raise PinDirRefused(
                f"pin {path}/{name} belongs to uid {owner}, not to lbtui's uid {me}: refusing to adopt it "
                "(remove the directory if its pins are lbtui's)"
            )


def _on_bpffs(path: str) -> bool:
    real = os.path.realpath(path)
    best = ("", "")
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            mnt, fstype = parts[1], parts[2]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, fstype)
    return best[1] == BPF_FS_TYPE


def has_pinned_state(pin_dir: str | None) -> bool:
    return bool(pin_dir) and os.path.exists(os.path.join(str(pin_dir), CONNTRACK_PIN))


def remove_pins(pin_dir: str | None) -> None:
    """Unpin this instance's maps and programs (the kernel frees them once nothing holds them)."""
    if not pin_dir or not os.path.isdir(pin_dir):
        return
    for name in os.listdir(pin_dir):
        try:
            os.unlink(os.path.join(pin_dir, name))
        except OSError as exc:
            log.warning("unpinning %s: %s", name, exc)
    try:
        os.rmdir(pin_dir)
    except OSError as exc:
        log.warning("removing %s: %s", pin_dir, exc)
