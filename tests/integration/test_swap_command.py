"""`manage.py swap MODEL --wait` through the real task path: enqueue on commit, the worker wakes, the runner runs."""

import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from sparkcontrol.worker import WakeableWorker

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker():
    worker = WakeableWorker(interval=5.0)  # a long poll: only the enqueue signal can start swaps quickly
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker
    worker.stop()
    thread.join(timeout=30)


def test_swap_command_waits_and_exits_zero_on_ready(topology, model_factory, worker, capsys):
    model_factory("tiny", repo="sim/tiny-model")
    call_command("swap", "tiny", "--wait")
    out = capsys.readouterr().out
    assert "[loading]" in out and "[ready]" in out and "ready in" in out


def test_swap_command_fails_on_a_failed_swap(topology, model_factory, worker, capsys):
    model_factory("oom", repo="sim/oom")
    with pytest.raises(CommandError, match="swap failed: vLLM failed while loading"):
        call_command("swap", "oom", "--wait")
    call_command("swaps")
    assert "oom" in capsys.readouterr().out
