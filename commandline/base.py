"""The base of the operators' commands: every error one line on stderr and a non-zero exit, never a usage block.

An argument argparse rejects prints `manage.py CMD: message (see manage.py CMD --help)` and exits 2; a
`CommandError` prints its line and exits 1 (Django's own handling); a `ValidationError` from a service or
`full_clean()` becomes such a `CommandError`, `field: message; field: message`. Called through `call_command`,
argument errors raise `CommandError` instead of exiting.
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser, _SubParsersAction
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser


class OneLineParser(CommandParser):
    """argparse prints its usage before an error; an operator gets the error alone, and where help is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if self.called_from_command_line:
            self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")
        raise CommandError(message)


def _one_line(parser: ArgumentParser) -> None:
    parser.__class__ = OneLineParser
    for action in parser._actions:
        if isinstance(action, _SubParsersAction):
            for subparser in action.choices.values():
                _one_line(subparser)


class OperatorCommand(BaseCommand):
    """A `manage.py` command whose every error is one line and a non-zero exit."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        _one_line(parser)  # after add_arguments: its subcommands' parsers too
        return parser

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except ValidationError as exc:
            raise CommandError(validation_line(exc)) from None


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
