#!/usr/bin/env python
"""`python studies/sync_mlflow.py` in a checkout: the installed command `fsl-sync-mlflow`
(fsl/commands/sync_mlflow.py)."""

import sys

from fsl.commands.sync_mlflow import main

if __name__ == "__main__":
    sys.exit(main())
