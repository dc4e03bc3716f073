"""`manage.py probe`: the table, the sweep kinds, and the exit code."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from cluster.models import ServiceStatus

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


def probe(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("probe", *args, stdout=out, no_color=True)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_all_up_exits_zero_and_prints_a_table(farm, service_for):
    service_for(farm.add("vllm"), key="vllm")
    service_for(farm.add("qdrant"), key="qdrant")
    code, out = probe("--timeout", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["TARGET", "SWEEP", "STATUS", "LATENCY", "DETAIL"]
    assert lines[1].split()[:3] == ["qdrant", "status", "up"] and lines[1].split()[4] == "ms"
    assert lines[2].split()[:3] == ["vllm", "status", "up"] and "serves sim/tiny-model" in lines[2]
    assert ServiceStatus.objects.count() == 2  # results are recorded like any sweep


def test_something_down_exits_one(farm, service_for):
    service_for(farm.add("http"), key="web")
    service_for(farm.add("stt", mode="hang"), key="asr")
    code, out = probe("--timeout", "0.5")
    assert code == 1
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:3]}
    assert rows["asr"][1:3] == ["status", "down"] and rows["web"][1:3] == ["status", "up"]
    assert "GET /health: no answer within 0.5 s" in out


def test_degraded_alone_exits_zero(farm, service_for):
    service_for(farm.add("vllm", mode="wedged"), key="vllm")
    code, out = probe("--deep", "--timeout", "0.5")
    assert code == 0
    assert "degraded" in out and "one-token completion" in out


def test_deep_service_and_connectivity_options(farm, service_for):
    llm = farm.add("vllm")
    other = farm.add("http")
    service_for(llm, key="vllm")
    service_for(other, key="web")
    code, out = probe("--deep", "--connectivity", "--service", "vllm", "--timeout", "1")
    assert code == 0
    assert "POST /v1/completions" in llm.log and other.connections == 0
    sweeps = [line.split()[1] for line in out.splitlines()[1:3]]
    assert sweeps == ["deep", "connectivity"]


def test_disabled_and_unknown_services(farm, service_for):
    fake = farm.add("http")
    service_for(fake, key="off", enabled=False)
    code, out = probe("--service", "off")
    assert code == 0 and "disabled, not probed: off" in out and fake.connections == 0
    with pytest.raises(CommandError, match="no service named nope"):
        call_command("probe", "--service", "nope", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--timeout"):
        call_command("probe", "--timeout", "0", stdout=io.StringIO())


def test_the_process_exit_code(farm, tmp_path):
    """The real command line: exit status 1 when a service is down, 0 when all are up."""
    up, down = farm.add("http"), farm.add("http", mode="refuse")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"SPARKCONTROL_DATA_DIR": str(tmp_path), "SPARKCONTROL_ENV_FILE": str(tmp_path / "none.env")}

    def manage(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
        )

    assert manage("migrate", "-v", "0").returncode == 0
    setup = (
        "from cluster.models import Service; Service.objects.all().delete(); "
        f"Service.objects.create(key='up', name='up', kind='http', url='{up.url}'); "
        f"Service.objects.create(key='down', name='down', kind='http', url='{down.url}')"
    )
    assert manage("shell", "-c", setup).returncode == 0
    done = manage("probe", "--timeout", "1")
    assert done.returncode == 1, done.stderr
    assert "connection refused" in done.stdout
    done = manage("probe", "--service", "up")
    assert done.returncode == 0, done.stderr
