"""`manage.py swap MODEL --wait` through the real task path: enqueue on commit, the worker wakes, the runner runs."""

import os
import re
import threading
import time

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


def test_swap_command_draws_a_progress_bar_on_a_terminal(topology, model_factory, worker):
    """On a terminal (a real pseudo-terminal here) the load is one bar redrawn in place; its events are not lines."""
    model_factory("tiny", repo="sim/tiny-model")
    topology.set_load_seconds(1.5)
    controller, terminal = os.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with open(terminal, "w", encoding="utf-8", closefd=True) as out:
        call_command("swap", "tiny", "--wait", stdout=out)
    deadline = time.monotonic() + 5
    while b"ready in" not in b"".join(chunks) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.close(controller)
    shown = b"".join(chunks).decode()
    assert "[ready]" in shown and "ready in" in shown
    # Bars redrawn in place (the line cleared first), never going back; which phase the first one shows depends on
    # how fast the engine started.
    percents = [int(percent) for percent in re.findall(r"\r\x1b\[K\[[#.]{30}\]\s+(\d+)% ", shown)]
    assert percents and percents == sorted(percents), shown
    assert "% capturing CUDA graphs" in shown
    assert "progress: " not in shown  # the bar replaces the progress events' lines


def test_swap_command_prints_progress_as_lines_elsewhere(topology, model_factory, worker, capsys):
    model_factory("tiny", repo="sim/tiny-model")
    call_command("swap", "tiny", "--wait")
    out = capsys.readouterr().out
    assert "   progress: starting the engine · 0% overall · first load of this model" in out
    assert "\r" not in out
