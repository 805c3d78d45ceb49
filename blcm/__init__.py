"""blcm: the byte-lcm system. Wires blt/, concept_core/ and bridges/; trains with Lightning; the `blcm` CLI.
The layout map is README.md's *The layout*.

Its errors, which the `blcm` command reports in one line (exit status 2) instead of a traceback, are defined here.
"""


class CLIError(Exception):
    """Bad input to a command."""


class ConfigError(ValueError):
    """A model configuration that cannot be built (an unknown core variant, a missing init_from, ...)."""


class DataError(Exception):
    """Input data that cannot be used (a missing path, no documents)."""
