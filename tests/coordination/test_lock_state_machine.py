"""The lock over the API against a small reference model, under random acquire/extend/release/force/time/restart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from coordination.models import SwapLock
from coordination.services import LockHeld, lock_gate

pytestmark = pytest.mark.django_db

LOCK = "/api/swap/lock"
HOLDERS = st.sampled_from(["cron", "agent", "ci"])
# TTLs and time steps from the same small set, so that "now == expires_at" comes up often.
SECONDS = st.sampled_from([1, 30, 59, 60, 61, 300])


@dataclass
class Reference:
    """What the lock should be: a holder with a token until an expiry, and the epoch of the last grant."""

    holder: str | None = None
    token: str | None = None
    expires_at: datetime | None = None
    epoch: int = 0
    forced: bool = False

    def held(self, at: datetime) -> bool:
        return self.holder is not None and self.expires_at is not None and self.expires_at > at


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_lock_matches_the_reference_model(operator, admin_api, clock):
    class LockMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            SwapLock.objects.all().delete()
            self.model = Reference()
            self.tokens: list[str] = ["sclk_never-granted"]  # every token ever seen, stale ones included
            self.epochs: list[int] = []

        def pick_token(self, data: st.DataObject) -> str | None:
            return data.draw(st.one_of(st.none(), st.sampled_from(self.tokens)))

        def granted(self, body: dict, holder: str) -> None:
            assert body["epoch"] == self.model.epoch + 1
            assert not self.epochs or body["epoch"] > self.epochs[-1]
            self.epochs.append(body["epoch"])
            self.model = Reference(holder, body["token"], parse(body["expires_at"]), body["epoch"])
            self.tokens.append(body["token"])

        @rule(holder=HOLDERS, ttl=SECONDS | st.integers(1, 300), data=st.data())
        def acquire(self, holder: str, ttl: int, data: st.DataObject) -> None:
            token = self.pick_token(data)
            headers = {"X-Swap-Lock-Token": token} if token else None
            response = operator.post(LOCK, {"holder": holder, "ttl_seconds": ttl}, headers=headers)
            body = response.json()
            if self.model.held(clock.at):
                if token == self.model.token:
                    assert response.status_code == 200, body
                    assert body["token"] == token and body["epoch"] == self.model.epoch
                    assert body["holder"] == self.model.holder
                    self.model.expires_at = clock.at + timedelta(seconds=ttl)
                    assert parse(body["expires_at"]) == self.model.expires_at
                else:
                    assert response.status_code == 423, body
                    assert body["holder"] == self.model.holder
                    assert parse(body["expires_at"]) == self.model.expires_at
            else:
                assert response.status_code == 201, body
                assert parse(body["expires_at"]) == clock.at + timedelta(seconds=ttl)
                self.granted(body, holder)

        @rule(data=st.data())
        def release(self, data: st.DataObject) -> None:
            token = self.pick_token(data)
            response = operator.delete(LOCK, headers={"X-Swap-Lock-Token": token} if token else None)
            if not self.model.held(clock.at):
                assert response.status_code == 204
            elif token == self.model.token:
                assert response.status_code == 204
                self.model = Reference(epoch=self.model.epoch)
            else:
                assert response.status_code == 403

        @rule()
        def force_release_by_operator(self) -> None:
            assert operator.delete(LOCK + "?force=true").status_code == 403

        @rule()
        def force_release_by_admin(self) -> None:
            assert admin_api.delete(LOCK + "?force=true").status_code == 204
            if self.model.held(clock.at):
                self.model = Reference(epoch=self.model.epoch, forced=True)

        @rule(data=st.data(), force=st.booleans())
        def swap_gate(self, data: st.DataObject, force: bool) -> None:
            token = self.pick_token(data)
            refused = self.model.held(clock.at) and token != self.model.token and not force
            try:
                with transaction.atomic():
                    epoch = lock_gate(token=token, force=force, actor="swapper")
            except LockHeld as exc:
                assert refused and exc.holder == self.model.holder
            else:
                assert not refused and epoch == self.model.epoch
                if self.model.held(clock.at) and token != self.model.token:
                    self.model.forced = True

        @rule(seconds=SECONDS | st.just(0))
        def advance_time(self, seconds: int) -> None:
            clock.advance(seconds)

        @precondition(lambda self: self.model.held(clock.at))
        @rule(offset=st.sampled_from([-1, 0, 1]))
        def advance_to_expiry(self, offset: int) -> None:
            """Land on either side of the expiry, and on it: the lock is free from expires_at on."""
            clock.advance((self.model.expires_at - clock.at).total_seconds() + offset)

        @rule()
        def restart(self) -> None:
            # Nothing about the lock lives in the process: what a restarted server knows is the row.
            lock = SwapLock.objects.filter(pk=1).first()
            if self.model.held(clock.at):
                assert lock is not None and lock.holder == self.model.holder
                assert lock.expires_at == self.model.expires_at
            assert (lock.epoch if lock else 0) == self.model.epoch

        @invariant()
        def status_agrees(self) -> None:
            status = operator.get(LOCK).json()
            held = self.model.held(clock.at)
            assert status["locked"] is held
            assert status["holder"] == (self.model.holder if held else None)
            assert status["epoch"] == self.model.epoch
            assert status["forced"] is self.model.forced
            assert SwapLock.objects.count() <= 1

    run_state_machine_as_test(
        LockMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
