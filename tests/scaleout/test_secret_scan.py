"""No secret leaks: after a full scaled-out run with every kind of secret in play (API tokens, the lock token, a
webhook signing secret, HF_TOKEN, the metrics token, an admin password), none of them appears in any process's
log, any websocket message, any database row (events, swaps, audit entries, task arguments and results, webhook
deliveries...) except the one column that must keep it, or anything sparksim recorded (argv of every program
run on the nodes, container logs and files)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.coordination.receiver import serve_receiver
from tests.scaleout.deployment import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    HF_TOKEN,
    METRICS_TOKEN,
    POSTGRES,
    DashboardSocket,
    Deployment,
    bearer,
    wait_swap,
)

pytestmark = [pytest.mark.integration, pytest.mark.scaleout]

# The one place a secret must stay: the webhook secret keys the signatures, so it is stored in clear.
KEEPS_SECRET = {("coordination_webhookendpoint", "webhook secret")}


def database_texts(database: str) -> dict[str, str]:
    """Every row of every table of the deployment's database, as JSON text, by table."""
    texts = {}
    with psycopg.connect(f"{POSTGRES}/{database}") as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        for table in tables:
            rows = connection.execute(f'SELECT row_to_json(t)::text FROM "{table}" t').fetchall()
            texts[table] = "\n".join(row[0] for row in rows)
    return texts


def sim_texts(root: str) -> dict[str, str]:
    """Every file sparksim keeps: the record of every program run (argv), container logs and state."""
    texts = {}
    for path in Path(root).rglob("*"):
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        text = path.read_text(errors="replace")
        if path.name == "state.json" and path.parent.parent.name == "containers":
            # A container's configured environment (what `docker inspect` shows) is where HF_TOKEN must end up;
            # everything else about the container (its command line included) is scanned.
            state = json.loads(text)
            state.pop("env", None)
            text = json.dumps(state)
        texts[str(path)] = text
    return texts


def test_no_secret_in_logs_events_audit_rows_or_argv_after_a_full_run(deployment: Deployment, sim):
    web1, web2 = deployment.procs["web1"], deployment.procs["web2"]
    operate = deployment.api_token("scan-operator", "operate")
    admin = deployment.api_token("scan-admin", "admin")
    created = httpx.post(
        f"{web1.url}/api/models", json={"key": "scan-oom", "name": "scan oom", "repo": "sim/oom"}, headers=bearer(admin)
    )
    assert created.status_code == 201, created.text

    with serve_receiver() as receiver, DashboardSocket(web2.url, ADMIN_USER, ADMIN_PASSWORD) as socket:
        secret = deployment.manage("webhook", "add", receiver.url).strip().splitlines()[-1]
        assert secret.startswith("whsec_")
        try:
            grant = httpx.post(
                f"{web1.url}/api/swap/lock", json={"holder": "scan-cron", "ttl_seconds": 600}, headers=bearer(operate)
            ).json()
            lock_token = grant["token"]
            with_lock = {**bearer(operate), "X-Swap-Lock-Token": lock_token}
            outcomes = []
            for model in ("scan-oom", "alpha"):
                response = httpx.post(f"{web1.url}/api/swap", json={"model": model}, headers=with_lock, timeout=10)
                assert response.status_code == 202, response.text
                outcomes.append(wait_swap(web1.url, operate, response.json()["id"], {"ready", "failed", "interrupted"}))
            assert [o["state"] for o in outcomes] == ["failed", "ready"], outcomes
            socket.wait_for_state(outcomes[-1]["id"], "ready")
            receiver.wait_for(2, timeout=30)
            assert httpx.get(f"{web2.url}/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200
            released = httpx.request("DELETE", f"{web2.url}/api/swap/lock", headers=with_lock)
            assert released.status_code == 204
            # Read while the endpoint and its delivery log still exist.
            tables = database_texts(deployment.database)
        finally:
            deployment.manage("webhook", "remove", receiver.url)
        websocket_text = json.dumps(socket.messages)
        deliveries = list(receiver.requests)

    # The secrets were really used: deliveries signed with the webhook secret, HF_TOKEN in the container's env.
    assert sorted(json.loads(r.body)["event"] for r in deliveries) == ["swap_complete", "swap_failed"]
    for request in deliveries:
        expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Spark-Signature"] == f"sha256={expected}"
    assert any(f"HF_TOKEN={HF_TOKEN}".encode() in environ(pid) for pid in sim.processes()), "HF_TOKEN never arrived"

    secrets = {
        "operate API token": operate,
        "admin API token": admin,
        "lock token": lock_token,
        "webhook secret": secret,
        "HF token": HF_TOKEN,
        "metrics token": METRICS_TOKEN,
        "admin password": ADMIN_PASSWORD,
    }
    places = {f"log of {name}": proc.output() for name, proc in deployment.procs.items()}
    places["websocket messages"] = websocket_text
    places.update({f"table {table}": text for table, text in tables.items()})
    places.update({f"sparksim {path}": text for path, text in sim_texts(sim.root).items()})
    assert any("swap.request" in text for place, text in places.items() if place == "table audit_auditentry")
    assert any("launch-cluster.sh" in text for place, text in places.items() if place.endswith("record.jsonl"))

    leaks = [
        f"{what} in {place}"
        for what, value in secrets.items()
        for place, text in places.items()
        if value in text and (place.removeprefix("table "), what) not in KEEPS_SECRET
    ]
    assert leaks == []
    # The one table allowed to keep a secret does keep it: the scan would have seen a leak there.
    assert secret in places["table coordination_webhookendpoint"]
    assert "scan-cron" in places["table audit_auditentry"]


def environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read()
    except OSError:
        return b""
