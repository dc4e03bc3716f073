"""The lock under real concurrency and across restarts, on file SQLite (WAL, IMMEDIATE) and on Postgres.

Each scenario runs in a subprocess against a scratch database (see scratch.py for why).
"""

from __future__ import annotations

import pytest

from tests.coordination.scratch import run_python, run_scenario

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fresh", [True, False], ids=["first-use", "released-lock"])
def test_fifty_simultaneous_acquires_grant_exactly_one(scratch_env, fresh):
    result = run_scenario(scratch_env, "acquire_race", clients=50, fresh=fresh)
    assert result["vendor"] in ("sqlite", "postgresql")
    assert result["statuses"] == {"201": 1, "423": 49}, result
    assert result["epoch"] == (1 if fresh else 2) and result["grants_audited"] == 1
    assert result["holder"].startswith("client-")


def test_a_token_less_swap_never_passes_a_lock_acquired_before_it(scratch_env):
    result = run_scenario(scratch_env, "gate_race", rounds=100)
    rounds = result["rounds"]
    passes = 0
    for number, race in enumerate(rounds):
        assert isinstance(race["swap"], dict) and isinstance(race["acquired_epoch"], int), race
        assert sorted(race["order"]) == ["acquire", "gate"] or race["order"] == ["acquire"], race
        acquire_first = race["order"][0] == "acquire"
        if acquire_first or race["acquire_committed_before_swap_began"]:
            assert race["swap"] == {"passed": False}, (number, race)
        else:
            # The swap went first: it ran under the previous grant's epoch, the acquire got the next one.
            assert race["swap"] == {"passed": True, "epoch": race["acquired_epoch"] - 1}, (number, race)
            passes += 1
    assert [race["acquired_epoch"] for race in rounds] == list(range(1, len(rounds) + 1))
    assert result["swap_rows"] == passes
    # Both orders happened, so the race was real (and the assertions above were exercised both ways).
    assert 0 < passes < len(rounds), passes


def _lines(result) -> list[str]:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()


def _status(env: dict[str, str]) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in _lines(run_python(env, "manage.py", "lock", "status")))


def test_a_restarted_process_sees_the_lock_and_honours_the_old_token(scratch_env):
    env = scratch_env
    run_python(env, "manage.py", "lock", "force-release")
    before = int(_status(env)["epoch"])

    granted = _lines(run_python(env, "manage.py", "lock", "acquire", "nightly", "--ttl", "600"))
    token = granted[-1]
    assert token.startswith("sclk_") and f"epoch {before + 1}" in granted[0]

    status = _status(env)  # a new process
    assert status["locked"] == "True" and status["holder"] == "nightly"
    assert status["epoch"] == str(before + 1) and 590 < float(status["remaining_s"]) <= 600
    expires_at = status["expires_at"]

    intruder = run_python(env, "manage.py", "lock", "acquire", "intruder")
    assert intruder.returncode != 0 and "nightly" in intruder.stderr

    extended = _lines(
        run_python(env, "manage.py", "lock", "acquire", "nightly", "--ttl", "900", "--token", "-", stdin=token)
    )
    assert extended[0].startswith("extended") and f"epoch {before + 1}" in extended[0]
    status = _status(env)
    assert status["expires_at"] > expires_at and status["epoch"] == str(before + 1)

    assert _lines(run_python(env, "manage.py", "lock", "release", "--token", "-", stdin=token)) == ["released"]
    status = _status(env)
    assert status["locked"] == "False" and status["epoch"] == str(before + 1)
    regranted = _lines(run_python(env, "manage.py", "lock", "acquire", "nightly"))
    assert f"epoch {before + 2}" in regranted[0]
