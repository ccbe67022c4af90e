"""The study commands: each module's main(argv) is a console entry point (pyproject.toml, e.g.
`fsl-protonet-search`) and what `python studies/<module>.py` runs in a checkout."""
