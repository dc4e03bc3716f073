"""testkit.service itself: a start that fails says why in the process's own words, and `stop()` leaves nothing
running — grandchildren included — and runs every clean-up even when one of them fails."""

from __future__ import annotations

import os
import time

import pytest

from testkit.service import Service, ServiceError, free_port

SLEEPER = "import subprocess, sys, time; print('{name} up', flush=True); {spawn}time.sleep(600)"
GRANDCHILD = (
    "open(sys.argv[1], 'w').write(str(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']).pid)); "
)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie waiting for its reaper is gone too


def test_a_process_that_exits_before_it_is_ready_fails_the_start_with_its_output(tmp_path):
    with Service(tmp_path) as service:
        proc = service.spawn("web", ["-c", "print('cannot bind: port taken'); raise SystemExit(3)"], port=free_port())
        with pytest.raises(ServiceError, match="(?s)web exited with 3.*cannot bind: port taken"):
            service.wait_ready(proc, timeout=30)


def test_a_worker_is_ready_once_it_says_it_takes_tasks(tmp_path):
    with Service(tmp_path) as service:
        code = "import time; time.sleep(0.3); print('Starting worker', flush=True); time.sleep(600)"
        worker = service.spawn("worker", ["-c", code])
        service.wait_ready(worker, timeout=30)
        assert worker.alive()


def test_stop_ends_every_process_and_its_children_and_runs_every_clean_up(tmp_path):
    cleaned: list[str] = []
    service = Service(tmp_path, env={"MARK": "x"})
    pid_file = tmp_path / "grandchild.pid"
    first = service.spawn("first", ["-c", SLEEPER.format(name="first", spawn=GRANDCHILD), str(pid_file)])
    second = service.spawn("second", ["-c", SLEEPER.format(name="second", spawn="")])
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text() and "second up" in second.output()):
        assert time.monotonic() < deadline, service.logs()
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())

    def failing() -> None:
        raise RuntimeError("this clean-up fails")

    service.on_stop(lambda: cleaned.append("registered first"))
    service.on_stop(failing)
    service.on_stop(lambda: cleaned.append("registered last"))
    with pytest.raises(RuntimeError, match="this clean-up fails"):
        service.stop()
    assert cleaned == ["registered last", "registered first"]
    assert not first.alive() and not second.alive()
    deadline = time.monotonic() + 10
    while not _gone(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived stop()"
        time.sleep(0.05)
    assert "first up" in service.logs() and "second up" in service.logs()


def test_the_environment_points_nowhere_but_the_installation(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://elsewhere/db")
    monkeypatch.setenv("SPARKCONTROL_SECRET_KEY", "someone else's")
    monkeypatch.setenv("SPARKSIM_LAUNCHER_DIR", "/somewhere")
    with Service(tmp_path, redis_url="redis://127.0.0.1:6379/9", env={"HF_TOKEN": ""}) as service:
        env = service.env
        assert env["DATABASE_URL"] == "" and env["REDIS_URL"] == "redis://127.0.0.1:6379/9"
        assert env["SPARKCONTROL_DATA_DIR"] == str(tmp_path / "data")
        assert "SPARKCONTROL_SECRET_KEY" not in env and "SPARKSIM_LAUNCHER_DIR" not in env
        assert env["SPARKCONTROL_ENV_FILE"] == str(tmp_path / "none.env") and env["HF_TOKEN"] == ""
