"""The launcher's capabilities asked ahead of the pre-flight are used only for the very head and command they were
asked with; anything else, or a failed ask, makes the pre-flight run the command itself."""

from __future__ import annotations

from concurrent.futures import Future

from cluster.models import SparkHost
from cluster.ssh import CommandResult, SshError
from swaps.preflight import LauncherProbe


def _host(**changes: object) -> SparkHost:
    fields = {"pk": 1, "name": "spark1", "address": "10.0.0.1", "ssh_port": 22, "ssh_user": "me", "host_key": "k"}
    fields.update(changes)
    return SparkHost(**fields)


def _probe(result: CommandResult | Exception) -> LauncherProbe:
    future: Future[CommandResult] = Future()
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
    return LauncherProbe(host=_host(), command="help", result=future)


def test_the_answer_is_taken_for_the_same_head_and_command() -> None:
    answer = CommandResult(0, "usage", "")
    assert _probe(answer).take(head=_host(), command="help") is answer


def test_another_head_another_identity_or_another_command_is_asked_again() -> None:
    answer = CommandResult(0, "usage", "")
    assert _probe(answer).take(head=_host(pk=2), command="help") is None
    assert _probe(answer).take(head=_host(address="10.0.0.9"), command="help") is None
    assert _probe(answer).take(head=_host(host_key="other"), command="help") is None
    assert _probe(answer).take(head=_host(), command="help --other") is None


def test_a_failed_ask_is_left_to_the_preflight() -> None:
    assert _probe(SshError("spark1: cannot reach")).take(head=_host(), command="help") is None
