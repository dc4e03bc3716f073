"""The audit trail: every action worth a "who did that?" writes an AuditEntry with the right actor, through each
way in (API token, staff session in the admin, manage.py); the admin lists and filters them; no entry holds a
secret (API tokens, lock tokens, webhook secrets), even when the action handed one out."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import APIToken
from audit.models import AuditEntry
from catalog.models import ModelEntry
from cluster.models import SparkHost
from coordination.models import WebhookEndpoint

pytestmark = pytest.mark.django_db


def actions(actor: str | None = None) -> list[str]:
    rows = AuditEntry.objects.order_by("id")
    if actor is not None:
        rows = rows.filter(actor=actor)
    return list(rows.values_list("action", flat=True))


def entry(action: str) -> AuditEntry:
    return AuditEntry.objects.filter(action=action).latest("id")


def all_audit_text() -> str:
    return json.dumps(list(AuditEntry.objects.values("actor", "action", "target", "detail")), default=str)


def token_actor(client) -> str:  # type: ignore[no-untyped-def]
    prefix = client.token.removeprefix("sct_").split("_", 1)[0]
    return "token:" + APIToken.objects.get(prefix=prefix).name


def test_swap_request_and_cancel_through_the_api(operator, model_factory):
    model_factory("tiny")
    swap = operator.post("/api/swap", {"model": "tiny"})
    assert swap.status_code == 202, swap.content
    assert operator.post(f"/api/swap/{swap.json()['id']}/cancel").status_code == 202
    who = token_actor(operator)
    assert actions(who) == ["swap.request", "swap.cancel"]
    assert entry("swap.request").target == "tiny" and entry("swap.request").detail["swap"] == swap.json()["id"]
    assert entry("swap.cancel").detail == {"swap": swap.json()["id"]}


def test_lock_acquire_extend_release_force_and_forced_swap(operator, admin_api, model_factory):
    model_factory("tiny")
    grant = operator.post("/api/swap/lock", {"holder": "nightly", "ttl_seconds": 60}).json()
    token = {"X-Swap-Lock-Token": grant["token"]}
    assert operator.post("/api/swap/lock", {"holder": "nightly", "ttl_seconds": 120}, headers=token).status_code == 200
    assert operator.delete("/api/swap/lock", headers=token).status_code == 204
    again = operator.post("/api/swap/lock", {"holder": "nightly", "ttl_seconds": 60}).json()
    assert admin_api.post("/api/swap?force=true", {"model": "tiny"}).status_code == 202
    assert admin_api.delete("/api/swap/lock?force=true").status_code == 204

    assert actions(token_actor(operator)) == ["lock.acquire", "lock.extend", "lock.release", "lock.acquire"]
    assert actions(token_actor(admin_api)) == ["lock.force_swap", "swap.request", "lock.force_release"]
    assert entry("lock.force_release").detail["holder"] == "nightly"
    assert entry("lock.force_swap").detail["epoch"] == again["epoch"]
    assert entry("swap.request").detail["forced"] is True
    text = all_audit_text()
    assert grant["token"] not in text and again["token"] not in text


def test_catalog_writes_through_the_api_the_admin_and_the_import_command(admin_api, staff_client, tmp_path):
    created = admin_api.post("/api/models", {"key": "qwen", "name": "Qwen", "repo": "sim/qwen"})
    assert created.status_code == 201, created.content
    knobs = admin_api.put(
        "/api/models/qwen/knobs", {"knobs": {"max_model_len": 4096}, "vllm_args": ["--enforce-eager"]}
    )
    assert knobs.status_code == 200, knobs.content
    pk = ModelEntry.objects.get(key="qwen").pk
    assert staff_client.post(f"/admin/catalog/modelentry/{pk}/delete/", {"post": "yes"}).status_code == 302
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - key: imported\n    name: Imported\n    repo: sim/imported\n")
    call_command("catalog", "import", str(models), stdout=StringIO())

    assert actions(token_actor(admin_api)) == ["catalog.create", "catalog.knobs"]
    assert actions("staff") == ["catalog.delete"]
    assert actions("manage.py") == ["catalog.import"]
    assert entry("catalog.knobs").detail["vllm_args"] == ["--enforce-eager"]


def test_topology_edits_in_the_admin(staff_client):
    form = {
        "name": "spark9",
        "address": "10.0.0.9",
        "cluster_ip": "",
        "ssh_port": "22",
        "ssh_user": "root",
        "role": "worker",
        "key_path": "",
        "host_key": "",
        "enabled": "on",
    }
    assert staff_client.post("/admin/cluster/sparkhost/add/", form).status_code == 302
    host = SparkHost.objects.get(name="spark9")
    changed = staff_client.post(f"/admin/cluster/sparkhost/{host.pk}/change/", {**form, "ssh_port": "2222"})
    assert changed.status_code == 302
    assert staff_client.post(f"/admin/cluster/sparkhost/{host.pk}/delete/", {"post": "yes"}).status_code == 302
    assert actions("staff") == ["spark.create", "spark.change", "spark.delete"]
    assert entry("spark.change").detail == {"fields": ["ssh_port"]}


def test_webhook_secret_rotation_and_tokens_are_audited_without_their_secrets(staff_client):
    out = StringIO()
    call_command("webhook", "add", "http://receiver.example:9000/hook", stdout=out)
    first_secret = out.getvalue().strip().splitlines()[-1]
    endpoint = WebhookEndpoint.objects.get()
    rotated = staff_client.post(
        "/admin/coordination/webhookendpoint/",
        {"action": "rotate_secret", "_selected_action": [endpoint.pk]},
        follow=True,
    )
    endpoint.refresh_from_db()
    assert endpoint.secret != first_secret and endpoint.secret in rotated.content.decode()  # shown once, to staff

    out = StringIO()
    call_command("apitoken", "create", "cron", "--scope", "operate", stdout=out)
    plain = out.getvalue().strip().splitlines()[-1]
    token = APIToken.objects.get(name="cron")
    revoked = staff_client.post(
        "/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )
    assert revoked.status_code == 200

    assert actions("manage.py") == ["webhook.add", "token.create"]
    assert actions("staff") == ["webhook.rotate_secret", "token.revoke"]
    text = all_audit_text()
    for secret in (first_secret, endpoint.secret, plain, token.token_hash):
        assert secret not in text


def test_the_admin_lists_and_filters_the_trail(staff_client, operator, model_factory):
    model_factory("tiny")
    operator.post("/api/swap/lock", {"holder": "nightly", "ttl_seconds": 60})
    call_command("webhook", "add", "http://receiver.example:9000/hook", stdout=StringIO())

    def listed(query: str) -> str:
        response = staff_client.get(f"/admin/audit/auditentry/{query}")
        assert response.status_code == 200
        page = response.content.decode()
        start = page.index('id="result_list"')
        return page[start : page.index("</table>", start)]  # the rows, not the filter sidebar

    everything = listed("")
    assert "lock.acquire" in everything and "webhook.add" in everything and "holder=nightly" in everything
    locks = listed("?area=lock")
    assert "lock.acquire" in locks and "webhook.add" not in locks
    commands = listed("?actor_kind=command")
    assert "webhook.add" in commands and "lock.acquire" not in commands
    tokens = listed("?actor_kind=token")
    assert "lock.acquire" in tokens and "webhook.add" not in tokens
    searched = listed("?q=receiver.example")
    assert "webhook.add" in searched and "lock.acquire" not in searched
    assert "lock.acquire" in listed("?action=lock.acquire") and "webhook.add" not in listed("?action=lock.acquire")

    detail = staff_client.get(f"/admin/audit/auditentry/{entry('lock.acquire').pk}/change/")
    assert detail.status_code == 200 and "nightly" in detail.content.decode()
    # Read-only: nothing can be added, changed or deleted, even by a superuser.
    assert staff_client.get("/admin/audit/auditentry/add/").status_code == 403
    pk = entry("lock.acquire").pk
    assert staff_client.post(f"/admin/audit/auditentry/{pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=pk).exists()
