"""Running code in a fresh process against a scratch database (file SQLite or a Postgres database of its own).

Scenarios that need many connections at once, or a restart, run this way: each backend is exercised whichever
database the test run itself uses, the data is really committed (not inside a test's transaction), and a new
process is what a restart is. The SQLite database uses the real settings: WAL, IMMEDIATE transactions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(
    env: dict[str, str], *args: str, timeout: float = 180, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS` in the repository with `env`, capturing text output."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def run_scenario(env: dict[str, str], name: str, **params: object) -> dict:
    """Run `tests/coordination/scenarios.py NAME` and return the JSON it prints on its last line."""
    result = run_python(env, "-m", "tests.coordination.scenarios", name, json.dumps(params))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def base_env(data_dir: Path) -> dict[str, str]:
    """This environment, pointed at an empty data directory and the SQLite database in it."""
    env = dict(os.environ)
    env.update(SPARKCONTROL_DATA_DIR=str(data_dir), DATABASE_URL="", DJANGO_SETTINGS_MODULE="sparkcontrol.settings")
    env["SPARKCONTROL_WEBHOOK_ALLOW_PRIVATE"] = "true"  # the test receiver listens on 127.0.0.1
    return env


def migrate(env: dict[str, str]) -> None:
    """Create the schema in the scratch database."""
    result = run_python(env, "manage.py", "migrate", "--no-input", "-v0")
    assert result.returncode == 0, result.stderr[-3000:]
