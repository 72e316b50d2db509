# SPDX-License-Identifier: Apache-2.0
"""Exit codes of `lbtui` (README.md, "Exit codes"; packaging/lbtui.service relies on them).

systemd's RestartPreventExitStatus= names CONFIG and USAGE only: restarting cannot fix a bad file or
command line, while a host that is not ready yet (an interface that appears later) and a busy
resource (a port still held by an old process) are retried.
"""

OK = 0
CONFIG = 1  # the configuration file is invalid (every problem is printed with its key path)
USAGE = 2  # the command line is wrong
HOST = 3  # the host is not ready: privileges, kernel (BCC, headers, BPF), interfaces, IP forwarding
TEMPORARY = 4  # a resource is busy: the metrics port, the control socket of a running instance

MEANING = {
    OK: "ok",
    CONFIG: "the configuration is invalid",
    USAGE: "usage error",
    HOST: "the host is not ready (privileges, kernel, interfaces, IP forwarding)",
    TEMPORARY: "a resource is busy; retrying may succeed",
}
