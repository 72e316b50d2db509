"""`python -m lbtui` = the lbtui command."""

import sys

from lbtui.cli import main

sys.exit(main())
