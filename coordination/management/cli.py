"""What the operators' commands share: argument errors on one line, a token read from stdin, validation as a line."""

from __future__ import annotations

import sys

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser


class OneLineParser(CommandParser):
    """argparse prints its usage before an error; an operator gets the error alone, and where help is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if self.called_from_command_line:
            self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")
        raise CommandError(message)


def one_line_errors(parser: CommandParser) -> None:
    """Call first in `add_arguments`: argument errors, subcommands' included, become one line and exit 2."""
    parser.__class__ = OneLineParser  # add_subparsers makes its parsers of the parser's own class


def token_arg(value: str | None, *, option: str) -> str | None:
    """`-` reads the token from stdin, which keeps it out of the process list; an empty stdin is an error."""
    if value != "-":
        return value
    token = sys.stdin.readline().strip()
    if not token:
        raise CommandError(f"{option} -: no token on stdin")
    return token


def validation_line(exc: ValidationError) -> str:
    """A model or service ValidationError as `field: message; field: message`."""
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)
