#!/usr/bin/env python
"""`python studies/office_settings.py` in a checkout: the installed command `fsl-office-settings`
(fsl/commands/office_settings.py)."""

import sys

from fsl.commands.office_settings import main

if __name__ == "__main__":
    sys.exit(main())
