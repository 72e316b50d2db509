# SPDX-License-Identifier: Apache-2.0
"""`python -m lbtui` and the `lbtui` command.

The signal handlers come first, before the imports that take a loaded host a good part of a second
(docs/architecture.md#stopping): a SIGTERM or SIGINT from then on is a clean stop, never a kill.
"""

import sys

from lbtui.stopping import Stopper


def run() -> int:
    stopper = Stopper()
    stopper.install(hup_stops=False)  # provisional: cli.main settles SIGHUP once it knows the mode

    from lbtui.cli import main

    return main(stopper=stopper)


if __name__ == "__main__":
    sys.exit(run())
