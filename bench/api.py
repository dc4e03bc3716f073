"""M4: the API under 64 concurrent clients (lock reads; lock acquire/extend/release cycles), and its baselines:
a bare ASGI hello-world and django-ninja on daphne out of the box, each served alone on this machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, summary, wait_port
from bench.net import HttpConnection, LoadResult, Recorder, build_request, closed_loop, get_steps, open_loop
from testkit.service import Process, clean_env, free_port, spawn

CLIENTS = 64
LOCK_OK = {200, 201, 204, 423}


def result_out(result: LoadResult, *, ok: set[int]) -> dict[str, Any]:
    """Rate, latency in ms, and errors (broken connections plus any status outside `ok`)."""
    bad = sum(count for status, count in result.statuses.items() if status not in ok)
    return {
        "rate": result.rate,
        "latency_ms": summary([value * 1000 for value in result.latencies]),
        "errors": result.errors + bad,
        "statuses": {str(status): count for status, count in sorted(result.statuses.items())},
        **result.extra,
    }


def run_reads(
    port: int, path: str, *, headers: dict[str, str] | None, seconds: float, rate: float | None = None
) -> dict[str, Any]:
    """64 clients GETting `path`: back to back (closed loop), or together at `rate` requests per second."""
    if rate is None:
        result = asyncio.run(closed_loop(port, get_steps(path, headers), clients=CLIENTS, seconds=seconds))
    else:
        result = asyncio.run(open_loop(port, get_steps(path, headers), rate=rate, clients=CLIENTS, seconds=seconds))
    return result_out(result, ok={200})


def run_lock_cycles(port: int, *, token: str, seconds: float, rate: float | None = None) -> dict[str, Any]:
    """Each client: acquire; when granted, extend with the token, then release it; when held (423), try again.

    Back to back (closed loop), or with all clients together making `rate` requests per second.
    """
    grants: list[int] = []
    auth = {"Authorization": f"Bearer {token}"}

    def make_step(index: int):  # type: ignore[no-untyped-def]
        """One request per step: acquire, then (when granted) extend, then release."""
        body = {"holder": f"bench-{index}", "ttl_seconds": 60}
        acquire = build_request("POST", "/api/swap/lock", headers=auth, body=body)
        state: dict[str, Any] = {"next": "acquire"}

        async def step(connection: HttpConnection, recorder: Recorder) -> None:
            if state["next"] == "acquire":
                answer = await recorder.timed(connection, acquire)
                if answer is None:
                    await asyncio.sleep(0.01)
                elif answer[0] == 201:
                    grant = json.loads(answer[2])
                    grants.append(int(grant["epoch"]))
                    held = {**auth, "X-Swap-Lock-Token": grant["token"]}
                    state["extend"] = build_request("POST", "/api/swap/lock", headers=held, body=body)
                    state["release"] = build_request("DELETE", "/api/swap/lock", headers=held)
                    state["next"] = "extend"
            elif state["next"] == "extend":
                await recorder.timed(connection, state["extend"])
                state["next"] = "release"
            else:
                answer = await recorder.timed(connection, state["release"])
                if answer is not None:
                    state["next"] = "acquire"

        return step

    async def run() -> LoadResult:
        if rate is None:
            return await closed_loop(port, make_step, clients=CLIENTS, seconds=seconds)
        return await open_loop(port, make_step, rate=rate, clients=CLIENTS, seconds=seconds)

    result = asyncio.run(run())
    out = result_out(result, ok=LOCK_OK)
    out["grants"] = len(grants)
    out["duplicate_epochs"] = len(grants) - len(set(grants))
    return out


def force_release(port: int, *, token: str) -> None:
    """Free the lock after a run (a client may have stopped between its grant and its release)."""
    import httpx

    response = httpx.delete(
        f"http://127.0.0.1:{port}/api/swap/lock?force=true", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    if response.status_code != 204:
        raise RuntimeError(f"could not free the lock: {response.status_code} {response.text[:200]}")


def audit_mark() -> int:
    """The newest audit entry id now (lock grants after it are checked for overlaps)."""
    from audit.models import AuditEntry

    return AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


def double_grants(since_id: int) -> int:
    """Grants given while another grant was live, from the audit trail (commit order): acquire must alternate
    with release, since the TTL (60 s) is longer than the run."""
    from audit.models import AuditEntry

    overlaps, held = 0, False
    actions = AuditEntry.objects.filter(
        id__gt=since_id, action__in=["lock.acquire", "lock.release", "lock.force_release"]
    ).order_by("id")
    for action in actions.values_list("action", flat=True):
        if action == "lock.acquire":
            overlaps += held
            held = True
        else:
            held = False
    return overlaps


# --- baselines ------------------------------------------------------------------------------------------------------


def start_asgi(
    name: str, app: str, *, server: str, log_dir: Path, settings: str | None = None, workdir: Path | None = None
) -> tuple[Process, int]:
    """Serve an ASGI app alone (daphne or uvicorn) on a free loopback port."""
    port = free_port()
    env = clean_env(BENCH_BASELINE_DIR=str(workdir or log_dir))
    if settings:
        env["DJANGO_SETTINGS_MODULE"] = settings
    if server == "uvicorn":
        argv = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--lifespan", "off", "--no-access-log", "--log-level", "warning"]
    else:
        argv = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", app]
    child = spawn(name, argv, env=env, log_dir=log_dir)
    wait_port(port, timeout=60, process=child.process)
    time.sleep(0.3)
    return child, port


def run_baselines(*, log_dir: Path, seconds: float, server: str) -> dict[str, Any]:
    out: dict[str, Any] = {"server": server}
    hello, port = start_asgi("hello-asgi", "bench.baselines.hello_asgi:application", server=server, log_dir=log_dir)
    try:
        out["hello"] = run_reads(port, "/", headers=None, seconds=seconds)
    finally:
        hello.stop()
    ninja, port = start_asgi(
        "ninja-daphne",
        "bench.baselines.ninja_site:application",
        server="daphne",
        log_dir=log_dir,
        settings="bench.baselines.ninja_settings",
    )
    try:
        out["ninja_daphne"] = run_reads(port, "/api/hello", headers=None, seconds=seconds)
    finally:
        ninja.stop()
    return out
