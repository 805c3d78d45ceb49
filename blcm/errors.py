"""Errors the `blcm` command reports in one line (exit status 2) instead of a traceback."""


class CLIError(Exception):
    """Bad input to a command."""


class ConfigError(ValueError):
    """A model configuration that cannot be built (an unknown core variant, a missing init_from, ...)."""


class DataError(Exception):
    """Input data that cannot be used (a missing path, no documents)."""
