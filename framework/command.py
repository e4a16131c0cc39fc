"""The base of command plugins: ``anyorder <name>`` subcommands contributed by plugin families.

A command is registered under the entry-point group ``anyorder.commands``; unlike the other kinds, the entry point
names the :class:`Command` subclass itself (there is no options dataclass: a command's options are its arguments)::

    [options.entry_points]
    anyorder.commands =
        orders = my_package.commands:OrdersCommand

The module holding the class is imported whenever the CLI is built, so it must stay light: no torch or Lightning
import at module level (import them inside :meth:`Command.run`).
"""

from __future__ import annotations

import argparse
from typing import ClassVar


class Command:
    """An ``anyorder`` subcommand: its one-line ``help``, its ``description``, its arguments and what it runs.

    The CLI builds one instance with no arguments, passes its subparser to :meth:`add_arguments`, and calls
    :meth:`run` with the parsed arguments; the returned integer is the exit status. Errors caused by input should be
    raised as :class:`anyorder.errors.AnyorderError`, which the CLI prints as one line with exit status 2.
    Positional ``key=value`` arguments left over by argparse are appended to ``ns.overrides`` (or ``ns.args``) when
    the command defines that argument.
    """

    help: ClassVar[str] = ""
    """The one-line summary shown by ``anyorder --help`` and ``anyorder plugins``."""

    description: ClassVar[str] = ""
    """The longer text shown by ``anyorder <name> --help`` (``help`` when empty)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's arguments to its subparser (none by default)."""

    def run(self, ns: argparse.Namespace) -> int:
        """Carry out the command with the parsed arguments; return the exit status."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement run()")
