"""The gateway's refresher thread outlives a failure at any step of its tick: a failed query costs one tick, and the
snapshots go on being refreshed (a dead refresher would leave them where they were for the process's lifetime)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from django.db import OperationalError

from gateway import runtime


class Stop(BaseException):
    """Ends the refresher's endless loop from inside (its guards catch Exception, not this)."""


def run_until_stopped(gateway: runtime.Gateway) -> None:
    try:
        gateway._run(threading.Event())
    except Stop:
        pass


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ("refresh", OperationalError("database is locked")),
        ("publish", OperationalError("server closed the connection unexpectedly")),
        ("ledger_forget_stale", OperationalError("database is locked")),
        ("ledger_forget_stale", RuntimeError("something unexpected")),
        ("close_old_connections", OperationalError("could not connect to server")),
    ],
)
def test_a_failing_step_costs_one_tick_not_the_thread(monkeypatch, step, error):
    gateway = runtime.Gateway()
    ticks: list[int] = []
    raised: list[str] = []

    def maybe_fail(name: str) -> None:
        if name == step and not raised:
            raised.append(name)
            raise error

    def refresh(**kwargs: object) -> None:
        ticks.append(1)
        maybe_fail("refresh")
        if len(ticks) >= 4:
            raise Stop  # the loop went on past the failure: enough

    monkeypatch.setattr(gateway, "refresh", refresh)
    monkeypatch.setattr(gateway, "publish", lambda **kwargs: maybe_fail("publish"))
    monkeypatch.setattr(runtime, "ledger_forget_stale", lambda: maybe_fail("ledger_forget_stale"))
    monkeypatch.setattr(runtime, "close_old_connections", lambda: maybe_fail("close_old_connections"))
    monkeypatch.setattr(runtime, "CONNECTION_RECYCLE_SECONDS", 0.0)  # the recycle step runs on every tick
    monkeypatch.setattr(runtime, "gateway_settings", lambda: SimpleNamespace(tick_s=0.01))

    thread = threading.Thread(target=run_until_stopped, args=(gateway,), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert raised == [step]
    assert len(ticks) == 4  # the refresher went on after the failure


def test_stop_ends_the_thread_and_the_next_use_starts_another(monkeypatch):
    gateway = runtime.Gateway()
    ticks: list[int] = []
    monkeypatch.setattr(gateway, "refresh", lambda **kwargs: ticks.append(1))
    monkeypatch.setattr(gateway, "publish", lambda **kwargs: None)
    monkeypatch.setattr(runtime, "gateway_settings", lambda: SimpleNamespace(tick_s=0.01))
    monkeypatch.setattr(runtime.atexit, "register", lambda fn: None)
    gateway.ensure_started()
    first = gateway.thread
    assert first is not None and first.is_alive()
    gateway.stop()
    assert not first.is_alive() and gateway.thread is None
    counted = len(ticks)
    gateway.ensure_started()
    assert gateway.thread is not None and gateway.thread is not first and gateway.thread.is_alive()
    deadline = time.monotonic() + 5
    while len(ticks) == counted:
        assert time.monotonic() < deadline, "the new thread never refreshed"
        time.sleep(0.01)
    gateway.stop()
