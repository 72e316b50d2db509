# SPDX-License-Identifier: Apache-2.0
"""`python -m lbtui` = the lbtui command."""

import sys

from lbtui.cli import main

sys.exit(main())
