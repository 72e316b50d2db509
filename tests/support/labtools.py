# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the end-to-end tests: waiting, running lbtui headless in a lab, reading results."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lbtui import model
from lbtui.addresses import IPV4, IPV6
from lbtui.control_client import SocketEngineHandle
from lbtui.dataplane import structs
from lbtui.engine.instance import PIN_ROOT
from lbtui.lab import LabSpec
from tests.support.lab import ClientLab


def wait_until(pred: Callable[[], object], timeout: float = 20.0, interval: float = 0.1) -> bool:
    """Poll pred until it is true or the timeout passes (state is polled, never slept on blindly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False


def global_counter(name: str, pin_dir: str) -> int:
    """A per-CPU global counter of the pinned lb_global_stats (structs.GLOBAL_COUNTERS), summed."""
    key = [str(b) for b in structs.GLOBAL_COUNTERS.index(name).to_bytes(4, "little")]
    cmd = ["bpftool", "-j", "map", "lookup", "pinned", f"{pin_dir}/lb_global_stats", "key", *key]
    item = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    item = item.get("formatted", item)
    total = 0
    for cpu in item.get("values", []):
        value = cpu["value"]
        total += (
            int.from_bytes(bytes(int(b, 16) for b in value), "little")
            if isinstance(value, list)
            else int(value)
        )
    return total


def served(got: dict[str, int]) -> dict[str, int]:
    """The backends that answered (name -> count), without the error count."""
    return {k: v for k, v in got.items() if k != "errors" and v}


def forget_backend_neighbours(lab: ClientLab) -> None:
    """No neighbour entries (both families) between the LB and its backends, on either side, so that
    the LB's next packet to a backend finds none. The backends' go first: a backend whose entry for
    the LB is still being confirmed (DELAY/PROBE, some 5 s after the lab's pings) sends the LB an
    ARP request or neighbour solicitation, and the receiver of one makes the sender's entry (STALE,
    usable): flushing the LB alone left it a few seconds later with entries nobody asked for."""
    p = lab.prefix
    for i in lab.backend_ids:
        lab.run(lab.ns_backend(i), "ip", "neigh", "flush", "dev", f"{p}b{i}")
    lb_links = [f"{p}br0"] if lab.spec.backend_bridge else [f"{p}b{i}p" for i in lab.backend_ids]
    for link in lb_links:
        lab.run(lab.ns_lb, "ip", "neigh", "flush", "dev", link)


def backend(handle: SocketEngineHandle, address: str, proxy: str = "web") -> model.BackendView:
    b = handle.snapshot().backend(proxy, address)
    assert b is not None
    return b


def start_lbtui(
    lab: ClientLab, cfg: Path, log: Path, *extra: str, ns: str | None = None, timeout: float = 30.0
) -> subprocess.Popen[bytes]:
    """`lbtui -c cfg --no-ui *extra` in the lab's LB namespace (or `ns`), its stderr appended to `log`;
    returns once it logged one more `msg=started` than before (so a restart over the same log waits for
    its own), failing with the log if it exited or did not start within `timeout` s."""
    before = log.read_text().count("msg=started") if log.exists() else 0
    with open(log, "a") as err:
        proc = lab.popen(
            ns or lab.ns_lb, sys.executable, "-m", "lbtui", "-c", str(cfg), "--no-ui", *extra, stderr=err
        )
    assert wait_until(
        lambda: log.read_text().count("msg=started") > before or proc.poll() is not None, timeout=timeout
    ), log.read_text()
    assert proc.poll() is None, log.read_text()
    return proc


@contextmanager
def running_lb(
    prefix: str,
    tmp: Path,
    weights: tuple[int, ...] = (1, 1, 1),
    extra: str = "",
    health_port: int | None = None,
    settings: str = "",
    algorithm: str = "weighted-random",
    second_client: bool = False,
    metrics_listen: str | None = None,
    family: int = IPV4,
    tables: str = "",
    dual_stack_backends: bool = False,
    spec: LabSpec | None = None,
    xdp_mode: str = "generic",
) -> Iterator[tuple[ClientLab, SocketEngineHandle]]:
    """A lab with `lbtui --no-ui` in its LB namespace, and a handle on its control socket (and the
    metrics endpoint on `metrics_listen`, inside the LB namespace, if given). `family` 6: the
    proxies' VIP is VIP6 and their backends are the backends' IPv6 addresses (Lab.config_toml).
    `settings` holds plain keys of [settings]; `tables` more tables (e.g. [settings.access_log]).
    `dual_stack_backends`: the backends listen on both families whatever `family` is. `spec`: a lab
    of another shape (its prefix must be `prefix`); `xdp_mode`: settings.xdp_mode."""
    lab = ClientLab(spec or LabSpec(prefix=prefix, second_client=second_client))
    assert lab.prefix == prefix
    lab.up()
    proc = None
    handle = None
    try:
        lab.start_backends(
            health_port=health_port,
            bind="0.0.0.0,::" if dual_stack_backends else "::" if family == IPV6 else "0.0.0.0",
        )
        cfg = tmp / "lbtui.toml"
        text = lab.config_toml(weights=weights, algorithm=algorithm, extra_proxy_toml=extra, family=family)
        text = text.replace("[settings]\n", f"[settings]\nsweep_interval_s = 0.25\n{settings}", 1)
        text = text.replace('xdp_mode = "generic"', f'xdp_mode = "{xdp_mode}"', 1)
        if metrics_listen is not None:
            disabled = "[settings.metrics]\nenabled = false"
            assert disabled in text
            text = text.replace(disabled, f'[settings.metrics]\nenabled = true\nlisten = "{metrics_listen}"')
        cfg.write_text(f"{text}\n{tables}")
        log = tmp / "lbtui.log"
        log.write_text("")
        proc = start_lbtui(lab, cfg, log)
        handle = SocketEngineHandle(f"/run/lbtui/{prefix}.sock")
        yield lab, handle
    finally:
        if handle is not None:
            handle.close()
        try:
            if proc is not None:
                stop_lbtui(proc, tmp / "lbtui.log", prefix)
        finally:
            lab.down()


def stop_lbtui(proc: subprocess.Popen[bytes], log: Path, instance: str, grace_s: float = 30.0) -> None:
    """SIGTERM, and fail (after a kill -9 and removing the instance's pins and socket) if the stop
    took more than grace_s: the lab, the pins and the process never outlive the test."""
    if proc.poll() is not None:
        return
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
        return
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    shutil.rmtree(f"{PIN_ROOT}/{instance}", ignore_errors=True)
    Path(f"/run/lbtui/{instance}.sock").unlink(missing_ok=True)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
    raise AssertionError(f"lbtui did not stop {time.monotonic() - started:.0f} s after SIGTERM; log:\n{tail}")
