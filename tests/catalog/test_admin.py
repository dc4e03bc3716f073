import pytest

from catalog.models import ModelEntry

pytestmark = pytest.mark.django_db


def test_add_local_model_form(staff_client):
    page = staff_client.get("/admin/catalog/modelentry/add-local/")
    assert page.status_code == 200 and b"local_path" in page.content and b"repo" not in page.content
    response = staff_client.post(
        "/admin/catalog/modelentry/add-local/",
        {"key": "ten31", "name": "Ten31", "local_path": "/models/ten31", "nodes": 1, "served_model_name": ""},
    )
    assert response.status_code == 302
    entry = ModelEntry.objects.get(key="ten31")
    assert entry.is_local and entry.repo == ""


def test_add_local_model_form_refuses_a_hostile_path(staff_client):
    response = staff_client.post(
        "/admin/catalog/modelentry/add-local/",
        {"key": "evil", "name": "Evil", "local_path": "/models-evil/x", "nodes": 1},
    )
    assert response.status_code == 200 and b"not inside an allowed local-model root" in response.content
    assert not ModelEntry.objects.filter(key="evil").exists()


def test_changelist_shows_the_local_badge(staff_client, model_factory):
    model_factory("ten31", local_path="/models/ten31")
    page = staff_client.get("/admin/catalog/modelentry/")
    assert b"sc-local" in page.content and b"Add local model" in page.content


def test_delete_from_disk_is_refused_for_local_models(staff_client, model_factory):
    local = model_factory("ten31", local_path="/models/ten31")
    response = staff_client.post(
        "/admin/catalog/modelentry/",
        {"action": "delete_from_disk", "_selected_action": [local.pk]},
        follow=True,
    )
    assert b"local models are never deleted from disk" in response.content
    assert ModelEntry.objects.filter(key="ten31").exists()
