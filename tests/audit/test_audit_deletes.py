"""Bulk and single deletes in the admin, and schedule registry changes, reach the audit trail."""

import pytest

from accounts.tokens import apitoken_create
from audit.models import AuditEntry
from cluster.models import SparkHost

pytestmark = pytest.mark.django_db


def test_delete_selected_is_audited_per_object(staff_client, model_factory):
    a, b = model_factory("a"), model_factory("b")
    host = SparkHost.objects.create(name="spare", address="10.1.1.1", role="worker")
    token, _ = apitoken_create(name="old-cron", scope="read")
    for url, pks in (
        ("/admin/catalog/modelentry/", [a.pk, b.pk]),
        ("/admin/cluster/sparkhost/", [host.pk]),
        ("/admin/accounts/apitoken/", [token.pk]),
    ):
        response = staff_client.post(url, {"action": "delete_selected", "_selected_action": pks, "post": "yes"})
        assert response.status_code == 302, url
    actions = set(AuditEntry.objects.values_list("action", "target", "actor"))
    assert {("catalog.delete", "a", "staff"), ("catalog.delete", "b", "staff")} <= actions
    assert ("spark.delete", str(host), "staff") in actions
    assert ("token.delete", str(token), "staff") in actions


def test_schedule_changes_are_audited(operator):
    body = {"id": "nightly", "name": "Nightly", "owner": "cron", "schedule": "0 3 * * *"}
    assert operator.post("/api/schedule", body).status_code == 201
    assert operator.post("/api/schedule", body).status_code == 200
    assert operator.delete("/api/schedule/nightly").status_code == 204
    actions = list(AuditEntry.objects.filter(target="nightly").order_by("id").values_list("action", flat=True))
    assert actions == ["schedule.create", "schedule.replace", "schedule.delete"]
