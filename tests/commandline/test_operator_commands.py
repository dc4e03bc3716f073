"""Every app's commands, run as an operator runs them: a bad argument is one line on stderr and a non-zero exit."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command, get_commands

from commandline.base import OperatorCommand
from tests.commandline.shell import manage

pytestmark = pytest.mark.django_db


# The apps' operator commands (Django's own are not on the base, nor, yet, `apitoken`).
OPERATOR_COMMANDS = [
    "apitoken",
    "catalog",
    "lock",
    "probe",
    "schedule",
    "serve",
    "spark",
    "sparksim_register",
    "swap",
    "swaps",
    "webhook",
]


BAD_ARGUMENTS = [
    (["catalog"], "action"),
    (["catalog", "import"], "file"),
    (["catalog", "import-recipes"], "directory"),
    (["catalog", "export", "extra"], "extra"),
    (["probe", "--timeout", "soon"], "--timeout"),
    (["probe", "--bogus"], "--bogus"),
    (["spark"], "action"),
    (["spark", "trust"], "name"),
    (["spark", "nope"], "nope"),
    (["sparksim_register"], "--root"),
    (["serve", "--port", "x"], "--port"),
    (["serve", "--workers"], "--workers"),
    (["swap"], "model"),
    (["swap", "tiny", "--wait=yes"], "--wait"),
    (["swaps", "--limit", "many"], "--limit"),
    (["swaps", "-v", "7"], "-v"),
]


@pytest.mark.parametrize(("argv", "named"), BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_a_bad_argument_is_one_line_naming_it_and_exit_2(argv, named, monkeypatch, capsys):
    code, out, err = manage(*argv, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "usage:" not in err, err
    assert named in lines[0] and lines[0].endswith("--help)"), lines[0]
    assert lines[0].startswith(f"manage.py {argv[0]}")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["probe", "--timeout", "0"], "--timeout"),
        (["probe", "--service", "nope"], "nope"),
        (["spark", "trust", "nope"], "'nope'"),
        (["catalog", "import", "/nonexistent/models.yaml"], "cannot read"),
        (["sparksim_register", "--root", "/nonexistent"], "not a sparksim cluster description"),
        (["serve", "--workers", "0"], "--workers"),
        (["swap", "nope"], "'nope'"),
    ],
)
def test_a_refused_value_is_one_line_and_exit_1(argv, named, monkeypatch, capsys):
    code, out, err = manage(*argv, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("CommandError: ") and named in lines[0], err


def test_called_from_code_a_bad_argument_raises_instead_of_exiting():
    with pytest.raises(CommandError, match="--limit"):
        call_command("swaps", "--limit", "many")
    with pytest.raises(CommandError, match="name"):
        call_command("spark", "trust")


def test_every_operator_command_has_the_one_base():
    from importlib import import_module

    commands = get_commands()
    for name in OPERATOR_COMMANDS:
        module = import_module(f"{commands[name]}.management.commands.{name}")
        assert issubclass(module.Command, OperatorCommand), name


class _Refuses(OperatorCommand):
    help = "Refuses what a service refuses."

    def handle(self, *args, **options) -> None:  # type: ignore[override]
        raise ValidationError({"url": ["give an absolute URL"], "events": ["unknown event 'x'"]})


def test_a_validation_error_from_a_service_is_one_line_with_its_fields(monkeypatch, capsys):
    monkeypatch.setattr("django.db.connections.close_all", lambda: None)
    with pytest.raises(SystemExit) as exited:
        _Refuses().run_from_argv(["manage.py", "refuses"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err == "CommandError: url: give an absolute URL; events: unknown event 'x'\n"
    with pytest.raises(CommandError, match="^url: give an absolute URL; events"):
        call_command(_Refuses())
