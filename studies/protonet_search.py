#!/usr/bin/env python
"""`python studies/protonet_search.py` in a checkout: the installed command `fsl-protonet-search`
(fsl/commands/protonet_search.py)."""

import sys

from fsl.commands.protonet_search import main

if __name__ == "__main__":
    sys.exit(main())
