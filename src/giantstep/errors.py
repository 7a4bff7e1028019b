"""The exceptions a user may meet, at the bottom of the package so every module can raise them.

A leaf module: it imports nothing of giantstep.
"""


class ConfigError(ValueError):
    """A config value (or an argument) is invalid; the message names the dotted key."""
