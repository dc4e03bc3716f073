"""Periodic sweeps: the sweep lease, the tick chain, the start-up hook, and workers scaled out (real processes
on a SQLite file and on the Postgres server of this machine) running one sweep per period, not one each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from cluster.models import ProbeResult, SweepKind, SweepLease
from cluster.schedule import (
    NEVER_RUN,
    WATCHDOG_GRACE,
    probes_schedule_revive,
    probes_schedule_start,
    sweep_lease_claim,
    sweep_leases_ensure,
    sweep_tick,
)
from cluster.tasks import probe_sweep, probe_sweep_tick

REPO = Path(__file__).resolve().parents[2]
TICK_PATH = "cluster.tasks.probe_sweep_tick"
POSTGRES = "postgres://postgres@127.0.0.1:5432"


def pending_ticks(sweep: str | None = None) -> list[DBTaskResult]:
    rows = DBTaskResult.objects.filter(task_path=TICK_PATH, status="READY").order_by("run_after")
    return [row for row in rows if sweep is None or row.args_kwargs["args"][0] == sweep]


@pytest.mark.django_db
class TestLeaseAndTicks:
    def test_one_claim_per_period(self):
        sweep_leases_ensure()
        sweep_leases_ensure()  # idempotent
        assert SweepLease.objects.count() == 3
        now = timezone.now()
        period = timedelta(seconds=15)
        assert sweep_lease_claim(sweep="status", period=period, now=now) == now + period
        assert sweep_lease_claim(sweep="status", period=period, now=now) is None
        assert sweep_lease_claim(sweep="status", period=period, now=now + timedelta(seconds=14)) is None
        assert sweep_lease_claim(sweep="status", period=period, now=now + period) == now + 2 * period
        assert sweep_lease_claim(sweep="deep", period=period, now=now) is not None  # kinds are independent

    def test_a_tick_claims_queues_its_successor_and_sweeps(self, farm, service_for, cluster_settings):
        fake = farm.add("http")
        service_for(fake, key="web")
        sweep_leases_ensure()
        summary = sweep_tick(sweep="status", due=NEVER_RUN.isoformat())
        assert summary.startswith("status: 1 up")
        assert fake.requests == 1
        lease = SweepLease.objects.get(sweep="status")
        assert lease.next_due - lease.claimed_at == timedelta(seconds=cluster_settings.probe_status_interval_s)
        [successor] = pending_ticks("status")
        assert successor.run_after == lease.next_due
        assert successor.args_kwargs["args"] == ["status", lease.next_due.isoformat()]

    def test_a_tick_for_a_period_already_swept_dies_quietly(self, farm, service_for):
        fake = farm.add("http")
        service_for(fake, key="web")
        sweep_leases_ensure()
        sweep_tick(sweep="status", due=NEVER_RUN.isoformat())
        before = len(pending_ticks())
        # A second chain (another serving process started) wakes for the same period: it must not sweep,
        # and must not queue a successor either, so duplicate chains collapse to one.
        summary = sweep_tick(sweep="status", due=NEVER_RUN.isoformat())
        assert "was swept by" in summary
        assert fake.requests == 1
        assert len(pending_ticks()) == before

    def test_an_early_tick_is_requeued_for_the_due_time(self, farm, service_for):
        service_for(farm.add("http"), key="web")
        sweep_leases_ensure()
        due = timezone.now() + timedelta(seconds=30)
        SweepLease.objects.filter(sweep="status").update(next_due=due)
        summary = sweep_tick(sweep="status", due=due.isoformat())
        assert "re-queued" in summary
        assert [tick.run_after for tick in pending_ticks("status")] == [due]
        assert not ProbeResult.objects.exists()

    def test_start_queues_one_tick_per_kind_and_watchdogs_once_scheduled(self):
        probes_schedule_start()
        ticks = pending_ticks()
        assert sorted(tick.args_kwargs["args"][0] for tick in ticks) == sorted(SweepKind.values)
        assert all(tick.run_after <= timezone.now() for tick in ticks)  # a fresh install sweeps at once
        DBTaskResult.objects.all().delete()
        due = timezone.now() + timedelta(seconds=60)
        SweepLease.objects.update(next_due=due)
        probes_schedule_start()
        assert {tick.run_after for tick in pending_ticks()} == {due + WATCHDOG_GRACE}

    def test_a_dead_chain_is_taken_over_by_a_watchdog(self, farm, service_for):
        fake = farm.add("http")
        service_for(fake, key="web")
        sweep_leases_ensure()
        stale = timezone.now() - timedelta(seconds=120)
        SweepLease.objects.update(next_due=stale)  # the tick meant for `stale` never ran
        assert probes_schedule_revive() == 3
        [watchdog] = pending_ticks("status")
        summary = sweep_tick(sweep=watchdog.args_kwargs["args"][0], due=watchdog.args_kwargs["args"][1])
        assert summary.startswith("status: 1 up") and fake.requests == 1
        assert probes_schedule_revive() == 2  # status is on time again; deep and connectivity still overdue

    def test_finished_tick_results_are_pruned_by_the_status_tick(self, farm, service_for):
        service_for(farm.add("http"), key="web")
        old = timezone.now() - timedelta(hours=2)
        for status in ("SUCCESSFUL", "FAILED"):
            result = probe_sweep_tick.enqueue("deep", None)
            DBTaskResult.objects.filter(id=result.id).update(status=status, finished_at=old)
        other = probe_sweep.enqueue("status", None)
        DBTaskResult.objects.filter(id=other.id).update(status="SUCCESSFUL", finished_at=old)
        sweep_leases_ensure()
        sweep_tick(sweep="status", due=NEVER_RUN.isoformat())
        left = set(DBTaskResult.objects.exclude(status="READY").values_list("task_path", "status"))
        assert left == {(TICK_PATH, "FAILED"), ("cluster.tasks.probe_sweep", "SUCCESSFUL")}

    def test_the_tasks_take_json_arguments(self, farm, service_for):
        fake = farm.add("http")
        service_for(fake, key="web")
        assert probe_sweep.call("status", ["web"]) == {"up": 1}
        sweep_leases_ensure()
        assert probe_sweep_tick.call("connectivity").startswith("connectivity: 1 up")
        assert fake.wait_for_connections(2) == 2 and fake.requests == 1


# --- scaled out: real worker processes on a shared database -------------------------------------------------------


class Deployment:
    """A database of its own (SQLite file or a fresh Postgres database), migrated, with processes on it."""

    def __init__(self, tmp_path: Path, backend: str) -> None:
        self.backend = backend
        self.data_dir = tmp_path / "data"
        self.data_dir.mkdir()
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env.update(
            {
                "SPARKCONTROL_DATA_DIR": str(self.data_dir),
                "SPARKCONTROL_ENV_FILE": str(tmp_path / "none.env"),
                "DJANGO_SETTINGS_MODULE": "sparkcontrol.settings",
                "PYTHONPATH": str(REPO),
            }
        )
        self.database = ""
        if backend == "postgres":
            self.database = f"sc_probe_lease_{uuid.uuid4().hex[:10]}"
            self._admin(f'CREATE DATABASE "{self.database}"')
            self.env["DATABASE_URL"] = f"{POSTGRES}/{self.database}"
        self.processes: list[subprocess.Popen] = []
        self.python(["manage.py", "migrate", "-v", "0"])

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql)

    def python(self, argv: list[str], timeout: float = 60) -> str:
        done = subprocess.run(
            [sys.executable, *argv], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def run(self, code: str, timeout: float = 60) -> str:
        return self.python(["-c", "import django; django.setup()\n" + textwrap.dedent(code)], timeout=timeout)

    def spawn(self, argv: list[str], stdout: int = subprocess.DEVNULL) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            env=self.env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        if self.database:
            self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


@pytest.fixture(params=["sqlite-file", "postgres"])
def deployment(request, tmp_path):  # type: ignore[no-untyped-def]
    running = Deployment(tmp_path, request.param)
    yield running
    running.close()


RACE = """
import json, os, sys, threading, time
from datetime import timedelta
from django.db import connection
from cluster.schedule import sweep_lease_claim, sweep_leases_ensure

meeting, period = sys.argv[1], timedelta(seconds=float(sys.argv[2]))
sweep_leases_ensure()
connection.close()
open(os.path.join(meeting, f"ready-{os.getpid()}"), "w").close()
go = os.path.join(meeting, "go")
while not os.path.exists(go):  # the test writes it once every racer is ready: start and stop times
    time.sleep(0.005)
time.sleep(0.05)
start, stop = (float(value) for value in open(go).read().split())
wins, errors = [], []

def hammer():
    from django.db import connection
    while time.time() < start:
        time.sleep(0.001)
    try:
        while time.time() < stop:
            won = sweep_lease_claim(sweep="status", period=period)
            if won is not None:
                wins.append((won - period).timestamp())
            time.sleep(0.002)
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connection.close()

threads = [threading.Thread(target=hammer) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"wins": wins, "errors": errors}))
"""


def test_two_processes_racing_the_lease_win_one_claim_per_period(deployment, tmp_path):
    """Two processes x three threads claim in a tight loop: exactly one winner per period, whatever the database."""
    period, window = 0.5, 2.0
    argv = ["-c", "import django; django.setup()\n" + RACE, str(tmp_path), str(period)]
    racers = [deployment.spawn(argv, stdout=subprocess.PIPE) for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < len(racers):  # both have started Django, however slowly
        assert time.monotonic() < deadline, "the racers did not start"
        assert all(racer.poll() is None for racer in racers), [racer.stderr.read()[-3000:] for racer in racers]
        time.sleep(0.02)
    start = time.time() + 0.3
    (tmp_path / "go.tmp").write_text(f"{start} {start + window}")
    (tmp_path / "go.tmp").rename(tmp_path / "go")
    results = []
    for racer in racers:
        stdout, stderr = racer.communicate(timeout=60)
        assert racer.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert all(not result["errors"] for result in results), results
    wins = sorted(win for result in results for win in result["wins"])
    gaps = [later - earlier for earlier, later in zip(wins, wins[1:], strict=False)]
    assert all(gap >= period - 0.001 for gap in gaps), gaps  # never two winners in one period
    assert window / period - 1 <= len(wins) <= window / period + 1, wins


SETUP = """
import sys
from cluster.models import Service
from cluster.services import cluster_settings_get
Service.objects.all().delete()
Service.objects.create(key="web", name="web", kind="http", url=sys.argv[1], health_path="/")
cluster = cluster_settings_get()
cluster.probe_status_interval_s = 1
cluster.probe_deep_interval_s = 3600
cluster.probe_connectivity_interval_s = 3600
cluster.probe_timeout_s = 1.0
cluster.save()
"""

# Three serving processes start at once (so a burst of ticks for the same period is queued together).
START = "from cluster.schedule import probes_schedule_start\nfor _ in range(3):\n    probes_schedule_start()\n"

REPORT = """
import json
from django_tasks_db.models import DBTaskResult
from cluster.models import ProbeResult
from cluster.schedule import NEVER_RUN
from django.utils.dateparse import parse_datetime
rows = ProbeResult.objects.filter(sweep="status").order_by("checked_at")
ticks = DBTaskResult.objects.filter(task_path="cluster.tasks.probe_sweep_tick")
dues = {parse_datetime(t.args_kwargs["args"][1]) for t in ticks if t.args_kwargs["args"][0] == "status"}
claims = sorted(due.timestamp() - 1.0 for due in dues if due != NEVER_RUN)
print(json.dumps({"results": [[r.checked_at.timestamp(), r.status] for r in rows], "claims": claims}))
"""


def test_two_workers_scaled_out_run_one_sweep_per_period(deployment, farm):
    """Two `db_worker` processes and two serving processes' start-up hooks: one status sweep per period."""
    fake = farm.add("http")
    deployment.python(["-c", "import django; django.setup()\n" + SETUP, fake.url])
    worker_argv = ["manage.py", "db_worker", "--interval", "0.05", "--no-startup-delay", "--queue-name", "default"]
    workers = [deployment.spawn(worker_argv) for _ in range(2)]
    deployment.run(START)
    deployment.run(START)  # six chains in all, which must collapse into one
    time.sleep(4.5)
    for worker in workers:
        assert worker.poll() is None, worker.stderr.read()[-3000:] if worker.stderr else ""
        worker.terminate()
    for worker in workers:
        worker.wait(timeout=30)
    report = json.loads(deployment.run(REPORT).strip().splitlines()[-1])
    times = [checked_at for checked_at, _ in report["results"]]
    claims = report["claims"]  # each winning tick queued its successor due one period after its claim
    assert {status for _, status in report["results"]} == {"up"}
    assert len(claims) >= 4, claims  # the chain kept going
    # The lease: claims of one kind are at least one period apart, whichever worker or chain made them.
    claim_gaps = [later - earlier for earlier, later in zip(claims, claims[1:], strict=False)]
    assert all(gap >= 1.0 - 0.001 for gap in claim_gaps), claim_gaps
    # One sweep per claim, never two (a worker stopped mid-sweep may leave its last claim without a result).
    assert len(claims) - 1 <= len(times) <= len(claims), (len(times), len(claims))
    # And the results themselves are spaced like periods (sweep durations vary with load, pairs would not).
    assert all(later - earlier >= 0.5 for earlier, later in zip(times, times[1:], strict=False)), times
    assert fake.requests >= len(times)  # the deep sweep's first run also reached it once
