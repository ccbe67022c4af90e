#!/usr/bin/env python
"""`python studies/byol_search.py` in a checkout: the installed command `fsl-byol-search`
(fsl/commands/byol_search.py)."""

import sys

from fsl.commands.byol_search import main

if __name__ == "__main__":
    sys.exit(main())
