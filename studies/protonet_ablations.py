#!/usr/bin/env python
"""`python studies/protonet_ablations.py` in a checkout: the installed command `fsl-ablations`
(fsl/commands/protonet_ablations.py)."""

import sys

from fsl.commands.protonet_ablations import main

if __name__ == "__main__":
    sys.exit(main())
