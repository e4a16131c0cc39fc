"""Exception types raised by anyorder.

Every error a user can cause derives from :class:`AnyorderError`, so the CLI can print it as one clean message
(without a traceback) and exit with status 2.
"""

from __future__ import annotations


class AnyorderError(Exception):
    """Base class for errors caused by input: a config, a plugin, a file, a run directory."""


class ConfigError(AnyorderError):
    """A run config is invalid: an unknown key, a wrong type, a missing value or an inconsistent setting."""


class PluginError(AnyorderError):
    """A plugin is unknown, ambiguous (claimed by two distributions) or failed to load."""


class DataError(AnyorderError):
    """A dataset file is missing, damaged (checksum mismatch) or cannot be parsed."""


class RunError(AnyorderError):
    """A run directory or checkpoint is missing, incomplete or incompatible."""


class RunInterrupted(AnyorderError):
    """Training was stopped by a signal (SIGTERM from a scheduler, Ctrl-C); the message says how to continue.

    ``exit_status`` is the shell's convention for the signal (143 for SIGTERM, 130 for Ctrl-C), not 2.
    """

    def __init__(self, message: str, exit_status: int = 2) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class NonFiniteLossError(AnyorderError):
    """Training produced a NaN or infinite loss; the last good checkpoint was left untouched."""
