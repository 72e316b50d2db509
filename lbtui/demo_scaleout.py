# SPDX-License-Identifier: Apache-2.0
"""`lbtui demo --hosts N`: the scale-out lab under the console (docs/scale-out.md#the-demo).

Builds lbtui.scaleout_lab (a router running BIRD with ECMP over the load-balancer hosts, each with
BIRD of its own; three backends set up with `lbtui backend-setup`), runs lbtui on every host with
`forwarding = "ipip"`, Maglev and [settings.announce], and sends light background traffic from the
client namespace once the router spreads the VIP over every host. Host 1's lbtui runs with the
console (as `lbtui demo` runs its one host); the others run headless, and the console shows them
on its peers line, read from their control sockets (`--peer`). Everything is removed on exit, as
by `lbtui demo`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from lbtui.addresses import IPV4
from lbtui.dataplane.bpffs import remove_pins
from lbtui.demo import is_root, report_traffic, supervise
from lbtui.engine import PIN_ROOT, instance_name
from lbtui.lab import TrafficGenerator
from lbtui.scaleout_lab import ScaleOutLab, ScaleOutSpec
from lbtui.stopping import Stopper

HEALTH_INTERVAL_MS = 500
READY_TIMEOUT_S = 240.0  # every host compiles its data path (BCC) at start: slow on a busy small VM
STOP_TIMEOUT_S = 30.0


def host_name(i: int) -> str:
    return f"h{i}"


def _wait_announced(
    lab: ScaleOutLab, proc: subprocess.Popen[bytes], stopper: Stopper, timeout_s: float = READY_TIMEOUT_S
) -> bool:
    """Until the router spreads the VIP over every host (each lbtui runs and announces it)."""
    every = {lab.host_ip(i) for i in lab.host_ids}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None and not stopper.requested:
        if lab.router_nexthops() == every:
            return True
        stopper.wait(0.5)
    return False


def run_scaleout_demo(
    stopper: Stopper,
    no_ui: bool,
    hosts: int = 3,
    prefix: str = "lbtx",
    rate: float = 20.0,
    stats_interval_s: float = 10.0,
    duration_s: float | None = None,
) -> int:
    """As lbtui.demo.run_demo, over `hosts` load-balancer hosts: the console (or the headless stats)
    is host 1's; a stop ends every host cleanly (each withdraws its VIP), then the lab goes."""
    stopper.install(hup_stops=True)
    if not is_root():
        return 3
    lab = ScaleOutLab(ScaleOutSpec(prefix=prefix, hosts=hosts, backends=3))
    traffic = {IPV4: TrafficGenerator(lab, rate_per_s=rate, udp=False)}
    others: list[subprocess.Popen[bytes]] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        print(f"lbtui demo: building the scale-out lab ({', '.join(lab.namespaces)})...", file=sys.stderr)
        lab.up()
        for i in lab.host_ids:  # what a crashed earlier demo pinned belongs to namespaces now gone
            remove_pins(f"{PIN_ROOT}/{instance_name(lab.control_socket(i))}")
        lab.start_backends(http_port=80, bind="0.0.0.0")  # DSR: they answer on the VIP (on lo) too
        if stopper.requested:
            return 0
        work = Path(lab.workdir)
        configs = {}
        for i in lab.host_ids:
            configs[i] = work / f"{host_name(i)}.toml"
            state = str(work / f"{host_name(i)}.state")
            configs[i].write_text(lab.lbtui_config(i, "ipip", HEALTH_INTERVAL_MS, state_file=state))
        for i in list(lab.host_ids)[1:]:
            with open(work / f"{host_name(i)}.log", "w") as err:
                cmd = lab.python_cmd("-m", "lbtui", "-c", str(configs[i]), "--no-ui")
                others.append(lab.popen(lab.ns_host(i), *cmd, stderr=err, stdout=subprocess.DEVNULL))
        peers = [f"{host_name(i)}={lab.control_socket(i)}" for i in list(lab.host_ids)[1:]]
        cmd = ["ip", "netns", "exec", lab.ns_host(1), sys.executable, "-m", "lbtui", "-c", str(configs[1])]
        if no_ui:
            cmd += ["--no-ui", "--stats-interval", str(stats_interval_s)]
        else:
            cmd += [a for peer in peers for a in ("--peer", peer)]
        host_ips = ", ".join(lab.host_ip(i) for i in lab.host_ids)
        backend_ips = ", ".join(lab.backend_ip(j) for j in lab.backend_ids)
        print(
            f"lbtui demo: VIP {lab.vip}:80 over {hosts} hosts ({host_ips}), forwarding ipip, Maglev; "
            f"backends {backend_ips}; configs and logs in {work}",
            file=sys.stderr,
        )
        proc = subprocess.Popen(cmd)
        if _wait_announced(lab, proc, stopper) and no_ui:
            attach = f"sudo lbtui attach --socket {lab.control_socket(1)}"
            attach += "".join(f" --peer {p}" for p in peers)
            print(f"lbtui demo: every host announces the VIP; console: {attach}", file=sys.stderr, flush=True)
        if not stopper.requested and proc.poll() is None:
            traffic[IPV4].start()
        rc = supervise(proc, stopper, traffic.values(), duration_s)
        report_traffic(traffic)
        return 0 if rc in (0, -signal.SIGTERM, -signal.SIGINT) else rc
    finally:
        for generator in traffic.values():
            generator.stop()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        for other in others:  # a clean stop each: the VIP withdrawn, the programs detached, pins gone
            lab.stop_process(other, timeout=STOP_TIMEOUT_S)
        lab.down()
        print("lbtui demo: lab removed", file=sys.stderr)
