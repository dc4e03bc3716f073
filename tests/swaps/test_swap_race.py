"""One active swap at a time, enforced by the database: simultaneous requests give one 202, the rest 409."""

import pytest

from tests.coordination.conftest import postgres_env, scratch_env, sqlite_env  # noqa: F401 - fixtures
from tests.coordination.scratch import run_python

pytestmark = pytest.mark.integration


def test_simultaneous_swap_requests_admit_exactly_one(scratch_env):  # noqa: F811
    import json

    result = run_python(scratch_env, "-m", "tests.swaps.scenarios", "race", json.dumps({"threads": 8, "rounds": 5}))
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    for round_outcome in outcome["rounds"]:
        assert round_outcome == ["202"] + ["409"] * 7, round_outcome
    assert outcome["active"] == 0
