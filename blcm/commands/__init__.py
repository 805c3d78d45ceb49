"""The `blcm` commands other than training, each a ``cmd_*(args) -> exit status`` that blcm.cli dispatches to
(which module holds which: README.md, *The layout*). A command turns bad input into a CLIError: one line on
stderr, exit status 2.
"""
