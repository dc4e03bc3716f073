"""`manage.py check --deploy` is clean with the production settings documented in docs/OPERATIONS.md, and each of
those settings is what silences its warning (so the documentation and the settings cannot drift apart)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "SPARKCONTROL_SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "spark.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://spark.example.org",
    "SPARKCONTROL_SECURE_COOKIES": "1",
    "SPARKCONTROL_HSTS_SECONDS": "31536000",
    "SPARKCONTROL_SSL_REDIRECT": "1",
    "SPARKCONTROL_BEHIND_PROXY": "1",
    "SPARKCONTROL_DEBUG": "0",
}


def deploy_check(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKCONTROL_", "ALLOWED_HOSTS", "CSRF_"))}
    base.update({"SPARKCONTROL_DATA_DIR": str(tmp_path), "SPARKCONTROL_ENV_FILE": str(tmp_path / "no.env")})
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path):
    done = deploy_check(tmp_path, PRODUCTION)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_the_documented_settings_are_all_in_docs_operations():
    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    for name in PRODUCTION:
        assert name in text, f"{name} is not documented in docs/OPERATIONS.md"


@pytest.mark.parametrize(
    "drop, warning",
    [
        ("SPARKCONTROL_SECURE_COOKIES", "security.W012"),
        ("SPARKCONTROL_HSTS_SECONDS", "security.W004"),
        ("SPARKCONTROL_SSL_REDIRECT", "security.W008"),
    ],
)
def test_each_production_setting_silences_its_warning(tmp_path, drop, warning):
    done = deploy_check(tmp_path, {k: v for k, v in PRODUCTION.items() if k != drop})
    assert done.returncode != 0
    assert warning in done.stdout + done.stderr


def test_debug_in_production_is_reported(tmp_path):
    done = deploy_check(tmp_path, {**PRODUCTION, "SPARKCONTROL_DEBUG": "1"})
    assert done.returncode != 0 and "security.W018" in done.stdout + done.stderr
