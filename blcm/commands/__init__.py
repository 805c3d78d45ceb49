"""The `blcm` commands other than training, each a ``cmd_*(args) -> exit status`` that blcm.cli dispatches to.

    model.py   generate, encode, decode, reconstruct     export.py  export
    eval.py    eval (its flags from blcm.eval.settings)   patch.py   patch
    data.py    data fetch, prepare                       inputs.py  what they read (a model, a file)

A command turns bad input into a CLIError: one line on stderr, exit status 2.
"""
