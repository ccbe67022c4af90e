#!/usr/bin/env python
"""`python studies/make_data.py` in a checkout: the installed command `fsl-make-data`
(fsl/commands/make_data.py)."""

import sys

from fsl.commands.make_data import main

if __name__ == "__main__":
    sys.exit(main())
