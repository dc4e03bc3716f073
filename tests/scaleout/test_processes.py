"""Scaled out for real: Postgres, Redis, web processes and db_worker processes, against a sparksim cluster.

- a swap requested through web process 1 runs exactly once, on one worker, and its events reach a dashboard
  websocket connected to web process 2 (channels-redis carries them);
- the lock race holds across processes: many simultaneous acquires spread over all web processes, one 201;
- a worker killed mid-swap leaves an `interrupted` swap that a web process's reaper reports, exactly once,
  and the next swap works.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.scaleout.deployment import ADMIN_PASSWORD, ADMIN_USER, DashboardSocket, Deployment, bearer, wait_swap

pytestmark = [pytest.mark.integration, pytest.mark.scaleout]

STEPS = ["queued", "preflight", "stopping", "launching", "loading", "ready"]


def _launches(sim, since: float) -> list[dict]:  # type: ignore[no-untyped-def]
    return [r for r in sim.records(prog="launch-cluster.sh", since=since) if "exec" in r["argv"]]


def test_processes_use_postgres_and_redis(deployment: Deployment):
    result = deployment.run(
        """
        from django.conf import settings
        from django.db import connection
        layer, tasks = settings.CHANNEL_LAYERS["default"]["BACKEND"], settings.TASKS["default"]["BACKEND"]
        result = [connection.vendor, layer, tasks]
        """
    )
    assert result == ["postgresql", "channels_redis.core.RedisChannelLayer", "django_tasks_db.DatabaseBackend"]
    for name, proc in deployment.procs.items():
        assert proc.process.poll() is None, f"{name} died:\n{proc.output()[-2000:]}"


def test_swap_through_web1_runs_once_and_streams_to_a_dashboard_on_web2(deployment: Deployment, sim):
    token = deployment.api_token("scaleout-swapper", "operate")
    web1, web2 = deployment.procs["web1"], deployment.procs["web2"]
    since = time.time()
    with DashboardSocket(web2.url, ADMIN_USER, ADMIN_PASSWORD) as socket:
        response = httpx.post(f"{web1.url}/api/swap", json={"model": "alpha"}, headers=bearer(token), timeout=10)
        assert response.status_code == 202, response.text
        swap_id = response.json()["id"]
        done = wait_swap(web1.url, token, swap_id, {"ready", "failed", "interrupted", "cancelled"})
        assert done["state"] == "ready", done["error"]
        socket.wait_for_state(swap_id, "ready")
        time.sleep(0.3)  # let stragglers in: the comparison below wants every event
        pushed = socket.events_of(swap_id)

    # Exactly once: one launcher exec on the nodes, one task row, claimed by one worker process.
    assert len(_launches(sim, since)) == 1
    rows = deployment.swap_rows(swap_id)
    [task] = rows["tasks"]
    assert task["status"] == "SUCCESSFUL" and len(task["worker_ids"]) == 1
    pid = int(rows["worker"].rsplit(":", 1)[1])
    assert pid in deployment.worker_pids(), (rows["worker"], deployment.worker_pids())

    # The socket on the other web process saw the whole story, in order, as the REST events endpoint tells it.
    states = [e["state"] for e in pushed if e["kind"] == "state"]
    assert states == STEPS
    rest = httpx.get(f"{web2.url}/api/swap/{swap_id}/events", headers=bearer(token), timeout=5).json()
    assert [e["seq"] for e in pushed] == [e["seq"] for e in rest]
    assert [e["message"] for e in pushed] == [e["message"] for e in rest]


def test_lock_race_across_processes_grants_once(deployment: Deployment):
    token = deployment.api_token("scaleout-racer", "operate")
    urls = [deployment.procs[name].url for name in ("web1", "web2", "web3")]
    attempts = 45

    def acquire(index: int) -> tuple[int, dict]:
        response = httpx.post(
            f"{urls[index % len(urls)]}/api/swap/lock",
            json={"holder": f"racer-{index}", "ttl_seconds": 120},
            headers=bearer(token),
            timeout=30,
        )
        return response.status_code, response.json()

    before = httpx.get(f"{urls[0]}/api/swap/lock", headers=bearer(token), timeout=5).json()["epoch"]
    with ThreadPoolExecutor(max_workers=attempts) as pool:
        results = list(pool.map(acquire, range(attempts)))
    statuses = sorted(status for status, _ in results)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(423) == attempts - 1, statuses
    [grant] = [body for status, body in results if status == 201]
    assert grant["epoch"] == before + 1
    for url in urls:  # every process sees the same holder
        seen = httpx.get(f"{url}/api/swap/lock", headers=bearer(token), timeout=5).json()
        assert seen["locked"] and seen["holder"] == grant["holder"] and seen["epoch"] == grant["epoch"]
    assert all(body["holder"] == grant["holder"] for status, body in results if status == 423)
    released = httpx.request(
        "DELETE", f"{urls[1]}/api/swap/lock", headers={**bearer(token), "X-Swap-Lock-Token": grant["token"]}, timeout=5
    )
    assert released.status_code == 204


def test_killed_worker_leaves_an_interrupted_swap_that_the_reaper_reports(deployment: Deployment, sim):
    token = deployment.api_token("scaleout-killer", "operate")
    web1 = deployment.procs["web1"]
    sim.set_load_seconds(60)
    response = httpx.post(f"{web1.url}/api/swap", json={"model": "beta"}, headers=bearer(token), timeout=10)
    assert response.status_code == 202, response.text
    swap_id = response.json()["id"]
    wait_swap(web1.url, token, swap_id, {"loading"}, timeout=60)
    rows = deployment.swap_rows(swap_id)
    pid = int(rows["worker"].rsplit(":", 1)[1])
    victim = deployment.worker_pids()[pid]
    deployment.kill(victim, signal.SIGKILL)

    done = wait_swap(web1.url, token, swap_id, {"interrupted", "ready", "failed"}, timeout=60)
    assert done["state"] == "interrupted", done
    # A reaper on the worker's machine sees its process gone; elsewhere the heartbeat goes stale.
    assert "is gone" in done["error"] or "stopped responding" in done["error"], done["error"]
    # The reapers of both daphne processes ran; the row lock let exactly one of them finish the swap.
    rows = deployment.swap_rows(swap_id)
    assert [e["state"] for e in rows["events"] if e["kind"] == "state"][-1:] == ["interrupted"]
    assert sum(1 for e in rows["events"] if e["kind"] == "state" and e["state"] == "interrupted") == 1
    report = f"swap {swap_id} (beta) was interrupted"
    reports = [name for name in ("web1", "web2") if report in deployment.procs[name].output()]
    assert len(reports) == 1, reports
    # The killed worker's task row stays claimed; no other worker picks the swap up again.
    [task] = rows["tasks"]
    assert task["status"] == "RUNNING"

    # The slot is free and the surviving worker runs the next swap; it stops the orphaned container first.
    sim.set_load_seconds(0.5)
    since = time.time()
    response = httpx.post(f"{web1.url}/api/swap", json={"model": "gamma"}, headers=bearer(token), timeout=10)
    assert response.status_code == 202, response.text
    nxt = wait_swap(web1.url, token, response.json()["id"], {"ready", "failed", "interrupted"}, timeout=90)
    assert nxt["state"] == "ready", nxt["error"]
    assert len(_launches(sim, since)) == 1
    assert any("stop" in r["argv"] for r in sim.records(prog="launch-cluster.sh", since=since))
    models = httpx.get(f"http://127.0.0.1:{sim.vllm_port}/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["gamma"]
    # Bring the deployment back to two workers for whatever runs next.
    deployment.wait_ready(deployment.start_worker(f"{victim}-replacement"))


def test_real_servers_refuse_oversized_bodies_before_reading_them(deployment: Deployment):
    def chunks(total: int):  # type: ignore[no-untyped-def]
        for _ in range(total // 65536 + 1):
            yield b"x" * 65536

    # With credentials, so that what stops a chunked body is its size (without any, it is a 401 before the body).
    bearer = {"Authorization": f"Bearer {deployment.api_token('oversize-operator', 'operate')}"}
    for name, path, size in (
        ("web1", "/api/swap", 300 * 1024),
        ("web2", "/admin/login/", 3 * 1024 * 1024),
        ("web3", "/metrics", 3 * 1024 * 1024),
    ):
        url = deployment.procs[name].url + path
        declared = httpx.post(url, content=b"x" * size, timeout=30)
        assert declared.status_code == 413, (name, path, declared.status_code, declared.text[:200])
        chunked = httpx.post(url, content=chunks(size), headers=bearer, timeout=30)
        assert chunked.status_code == 413, (name, path, chunked.status_code, chunked.text[:200])
