#!/usr/bin/env python
"""`python studies/report.py` in a checkout: the installed command `fsl-report`
(fsl/commands/report.py)."""

import sys

from fsl.commands.report import main

if __name__ == "__main__":
    sys.exit(main())
