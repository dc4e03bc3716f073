"""Service restarts: the API's answers, and the task against sparksim (real sshd, fake docker, a fake service that
really stops listening and comes back after its start-up delay)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import Client
from django_tasks_db.models import DBTaskResult

from audit.models import AuditEntry
from cluster.models import RestartState, Role, Service, ServiceRestart, SparkHost
from cluster.probes import ProbeTarget, probe_client, probe_service
from cluster.restarts import service_restart_run
from coordination.services import lock_acquire
from realtime.broadcast import DASHBOARD_GROUP

START_SECONDS = 1.5


def make_service(key: str, **fields) -> Service:  # type: ignore[no-untyped-def]
    fields.setdefault("name", key)
    fields.setdefault("kind", "stt")
    fields.setdefault("node", "worker")
    fields.setdefault("port", 8000)
    fields.setdefault("health_path", "/health")
    service = Service(key=key, **fields)
    service.full_clean()
    service.save()
    return service


@pytest.fixture
def worker_host(db) -> SparkHost:  # type: ignore[no-untyped-def]
    return SparkHost.objects.create(name="spark-w", address="127.0.0.1", role=Role.WORKER)


# --- the API ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_restart_needs_credentials_and_the_admin_scope(anon, reader, operator, worker_host):
    make_service("asr", container="parakeet")
    assert anon.post("/api/services/asr/restart").status_code == 401
    for client in (reader, operator):
        response = client.post("/api/services/asr/restart")
        assert response.status_code == 403
        assert "admin" in response.json()["detail"]
    assert not ServiceRestart.objects.exists()


@pytest.mark.django_db
def test_a_restart_is_accepted_queued_audited_and_enqueued_on_its_own_queue(
    admin_api, worker_host, django_capture_on_commit_callbacks
):
    make_service("asr", container="parakeet")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.post("/api/services/asr/restart")
    assert response.status_code == 202
    body = response.json()
    restart = ServiceRestart.objects.get()
    assert body == {"id": restart.pk, "state": "queued"}
    assert (restart.container, restart.host, restart.requested_by) == ("parakeet", "spark-w", restart.requested_by)
    assert restart.requested_by.startswith("token:")
    entry = AuditEntry.objects.get(action="service.restart")
    assert entry.target == "asr" and entry.detail["container"] == "parakeet"
    task = DBTaskResult.objects.get()
    assert task.queue_name == "services" and task.args_kwargs["args"] == [restart.pk]
    # A second request while the first is active is refused, not queued twice.
    again = admin_api.post("/api/services/asr/restart")
    assert again.status_code == 409 and "already being restarted" in again.json()["detail"]
    # The endpoint list shows it on the tile.
    endpoint = next(e for e in admin_api.get("/api/endpoints").json() if e["key"] == "asr")
    assert endpoint["restartable"] is True and endpoint["restart"]["state"] == "queued"


@pytest.mark.django_db
def test_restart_refusals_name_the_reason(admin_api, worker_host):
    make_service("plain")  # no container
    missing = admin_api.post("/api/services/nope/restart")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    no_container = admin_api.post("/api/services/plain/restart")
    assert no_container.status_code == 409 and "no container" in no_container.json()["detail"]
    head = admin_api.post("/api/services/vllm/restart")
    assert head.status_code == 409 and "swap" in head.json()["detail"]
    make_service("far", container="c1", node="spark-gone")
    nowhere = admin_api.post("/api/services/far/restart")
    assert nowhere.status_code == 409 and "no enabled Spark" in nowhere.json()["detail"]
    endpoints = {e["key"]: e for e in admin_api.get("/api/endpoints").json()}
    assert not endpoints["plain"]["restartable"] and not endpoints["vllm"]["restartable"]
    assert not ServiceRestart.objects.exists()


@pytest.mark.django_db
def test_the_gpus_services_wait_for_the_lock_others_do_not(admin_api, worker_host):
    make_service("asr", container="parakeet")
    make_service("asr-gpu", container="parakeet-gpu", gpu=True)
    make_service("llm2", kind="vllm", container="vllm2", port=8100, health_path="/v1/models")
    lock_acquire(holder="nightly-eval", ttl_seconds=600, actor="test")
    for key in ("asr-gpu", "llm2"):
        response = admin_api.post(f"/api/services/{key}/restart")
        assert response.status_code == 423, key
        assert "nightly-eval" in response.json()["detail"]
    assert admin_api.post("/api/services/asr/restart").status_code == 202
    assert list(ServiceRestart.objects.values_list("service__key", flat=True)) == ["asr"]


@pytest.mark.django_db
def test_a_staff_session_restarts_with_its_csrf_token(django_user_model, worker_host):
    make_service("asr", container="parakeet")
    staff = django_user_model.objects.create_user(username="ops", password="pw-ops-12345", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.post("/api/services/asr/restart").status_code == 403  # no CSRF token
    client.get("/")  # the dashboard sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    response = client.post("/api/services/asr/restart", headers={"X-CSRFToken": token})
    assert response.status_code == 202
    assert ServiceRestart.objects.get().requested_by == "ops"


@pytest.mark.django_db
def test_the_admin_action_restarts_what_it_can_and_says_why_not_for_the_rest(staff_client, worker_host):
    asr = make_service("asr", container="parakeet")
    plain = make_service("plain")
    response = staff_client.post(
        "/admin/cluster/service/",
        {"action": "restart", "_selected_action": [asr.pk, plain.pk]},
        follow=True,
    )
    assert response.status_code == 200
    text = response.content.decode()
    restart = ServiceRestart.objects.get()
    assert restart.service == asr and restart.requested_by == "staff"
    assert f'<li class="success">Restart {restart.pk} of &#x27;asr&#x27; queued.</li>' in text
    assert '<li class="error">Not restarted: service &#x27;plain&#x27; has no container to restart' in text
    assert AuditEntry.objects.filter(action="service.restart", actor="staff", target="asr").exists()


# --- the task against sparksim ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory):  # type: ignore[no-untyped-def]
    from sparksim import SimCluster

    with SimCluster(root=tmp_path_factory.mktemp("sim-restart"), nodes=2, load_seconds=0.2, launcher_dir="") as cluster:
        yield cluster


@pytest.fixture
def sparks(sim, db) -> list[SparkHost]:  # type: ignore[no-untyped-def]
    Service.objects.all().delete()
    hosts = []
    for node in sim.nodes:
        host = SparkHost(
            name=node.name,
            address=node.host,
            ssh_port=node.port,
            ssh_user=node.user,
            role=Role.HEAD if node.role == "head" else Role.WORKER,
            key_path=sim.client_key_path,
            host_key=node.host_key_line,
        )
        host.full_clean()
        host.save()
        hosts.append(host)
    return hosts


def _wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} never answered")


class Prober(threading.Thread):
    """Probes the service with Spark Control's own probe every 100 ms while the restart runs (no database)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.target = ProbeTarget(key="asr", kind="stt", base_url=f"http://127.0.0.1:{port}", health_path="/health")
        self.seen: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        async def loop() -> None:
            async with probe_client(size=1, timeout=1.0) as client:
                while not self.stop.is_set():
                    outcome = await probe_service(client, self.target, timeout=1.0)
                    if not self.seen or self.seen[-1] != outcome.status:
                        self.seen.append(outcome.status)
                    await asyncio.sleep(0.1)

        asyncio.run(loop())


def _dashboard_messages(channel: str) -> list[dict]:
    layer = get_channel_layer()
    messages = []

    async def drain() -> None:
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=0.2)
            except TimeoutError:
                return
            messages.append(json.loads(message["text"]))

    async_to_sync(drain)()
    return messages


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_restart_stops_the_container_waits_for_the_probe_and_reports_each_state(sim, sparks, settings):
    settings.SERVICE_RESTART_WAIT_SECONDS = 30
    settings.SERVICE_RESTART_STOP_SECONDS = 2
    port = sim.run_service("spark2", "parakeet-asr", "stt", start_seconds=START_SECONDS)
    _wait_listening(port)
    make_service("asr", container="parakeet-asr", node="spark2", port=port)
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(DASHBOARD_GROUP, channel)
    from cluster.restarts import service_restart_request

    restart = service_restart_request(key="asr", requested_by="tester")
    prober = Prober(port)
    prober.start()
    try:
        assert service_restart_run(restart_id=restart.pk) == "up"
    finally:
        prober.stop.set()
        prober.join(timeout=10)
    restart.refresh_from_db()
    assert restart.state == RestartState.UP and restart.error == ""
    # Down from the stop until the service listened again: at least its start-up delay.
    assert restart.downtime_s is not None and restart.downtime_s >= START_SECONDS
    assert restart.stopping_at <= restart.started_at <= restart.finished_at
    # Spark Control's probe saw the service up, then down while it restarted, then up again.
    assert prober.seen[0] == "up" and "down" in prober.seen and prober.seen[-1] == "up", prober.seen
    states = [m["restart"]["state"] for m in _dashboard_messages(channel) if m["kind"] == "service_restart"]
    assert states == ["queued", "stopping", "starting", "up"]
    # The same container was restarted through the node's docker (not removed and run anew).
    assert sim.containers("spark2").count("parakeet-asr") == 1
    runs = [r for r in sim.records(prog="docker", event="start") if r.get("argv", [None])[0] == "restart"]
    assert [r["argv"] for r in runs] == [["restart", "--time", "2", "parakeet-asr"]]
    # The tile's probe is fresh and up at the end.
    assert Service.objects.get(key="asr").statuses.get(sweep="status").status == "up"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_restart_of_a_container_that_does_not_exist_fails_with_dockers_words(sim, sparks, settings):
    make_service("ghost", container="no-such-box", node="spark2", port=1)
    from cluster.restarts import service_restart_request

    restart = service_restart_request(key="ghost", requested_by="tester")
    assert service_restart_run(restart_id=restart.pk) == "failed"
    restart.refresh_from_db()
    assert restart.state == RestartState.FAILED
    assert "docker restart exited 1" in restart.error
    assert "Error response from daemon: No such container: no-such-box" in restart.error
    assert restart.downtime_s is None and restart.finished_at is not None
    # A finished restart never runs again when its task is retried.
    assert service_restart_run(restart_id=restart.pk) == "failed"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_service_that_does_not_come_back_in_time_fails(sim, sparks, settings):
    settings.SERVICE_RESTART_WAIT_SECONDS = 2
    settings.SERVICE_RESTART_STOP_SECONDS = 1
    port = sim.run_service("spark2", "silent-tts", "tts", start_seconds=0.2)
    _wait_listening(port)
    # The row points at a port nothing listens on: the container restarts, the probe never passes.
    from sparksim.cluster import free_port

    make_service("tts", kind="tts", container="silent-tts", node="spark2", port=free_port())
    from cluster.restarts import service_restart_request

    restart = service_restart_request(key="tts", requested_by="tester")
    assert service_restart_run(restart_id=restart.pk) == "failed"
    restart.refresh_from_db()
    assert restart.started_at is not None
    assert restart.error.startswith("not up within 2 s of the start:") and "connection refused" in restart.error
