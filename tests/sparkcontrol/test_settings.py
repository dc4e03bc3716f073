import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparkcontrol.env import env_float, env_int

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw", ["", "   ", "abc", "70000", "0", "-1", "80.5"])
def test_bad_numbers_fall_back_with_a_warning(monkeypatch, caplog, raw):
    monkeypatch.setenv("VLLM_PORT", raw)
    with caplog.at_level(logging.WARNING, logger="sparkcontrol.settings"):
        assert env_int("VLLM_PORT", 8888, minimum=1, maximum=65535) == 8888
    assert "VLLM_PORT" in caplog.text


def test_good_numbers_are_used(monkeypatch):
    monkeypatch.setenv("VLLM_PORT", " 8000 ")
    assert env_int("VLLM_PORT", 8888, minimum=1, maximum=65535) == 8000
    monkeypatch.setenv("X", "nan")
    assert env_float("X", 1.0) == 1.0


@pytest.mark.parametrize("raw", ["", "abc", "70000"])
def test_start_up_survives_a_bad_port(tmp_path, raw):
    env = {**os.environ, "VLLM_PORT": raw, "SWAP_TIMEOUT_SECONDS": "soon", "SPARKCONTROL_DATA_DIR": str(tmp_path)}
    code = "import django; django.setup(); from django.conf import settings; print(settings.SPARKCONTROL['VLLM_PORT'])"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "sparkcontrol.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "8888"
    assert "VLLM_PORT" in result.stderr
    assert (tmp_path / "secret_key").exists()


def test_sqlite_runs_in_wal_with_immediate_transactions(db):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite-only setting")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        mode = cursor.fetchone()[0]
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert mode == "wal"


def test_local_model_roots_must_be_absolute(monkeypatch, caplog):
    from sparkcontrol.env import env_paths

    monkeypatch.setenv("LOCAL_MODEL_ROOTS", "/models/, relative/dir, /data//llm ,\n")
    with caplog.at_level(logging.WARNING, logger="sparkcontrol.settings"):
        assert env_paths("LOCAL_MODEL_ROOTS", ["/models"]) == ["/models", "/data/llm"]
    assert "relative/dir" in caplog.text


def test_webhook_backoff_from_the_environment(monkeypatch, caplog):
    from sparkcontrol.env import env_seconds_list

    monkeypatch.setenv("SPARKCONTROL_WEBHOOK_BACKOFF", "0, 5,60")
    assert env_seconds_list("SPARKCONTROL_WEBHOOK_BACKOFF") == [0, 5, 60]
    for bad in ("soon", "-1,5", "1,99999"):
        monkeypatch.setenv("SPARKCONTROL_WEBHOOK_BACKOFF", bad)
        with caplog.at_level(logging.WARNING, logger="sparkcontrol.settings"):
            assert env_seconds_list("SPARKCONTROL_WEBHOOK_BACKOFF") is None
    assert "SPARKCONTROL_WEBHOOK_BACKOFF" in caplog.text
