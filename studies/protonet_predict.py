#!/usr/bin/env python
"""`python studies/protonet_predict.py` in a checkout: the installed command `fsl-predict`
(fsl/commands/protonet_predict.py)."""

import sys

from fsl.commands.protonet_predict import main

if __name__ == "__main__":
    sys.exit(main())
