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


def _change_form_data(entry, **overrides):
    data = {
        "key": entry.key,
        "name": entry.name,
        "enabled": "on",
        "repo": entry.repo,
        "local_path": entry.local_path,
        "served_model_name": entry.served_model_name,
        "nodes": entry.nodes,
        "vllm_args": "",
        "image": "",
        "mods": "",
        "container_env": "",
        "launcher_flags": "",
        "secrets-TOTAL_FORMS": "1",
        "secrets-INITIAL_FORMS": "0",
        "secrets-MIN_NUM_FORMS": "0",
        "secrets-MAX_NUM_FORMS": "1000",
        "secrets-0-id": "",
        "secrets-0-model": entry.pk,
        "secrets-0-name": "",
        "secrets-0-value": "",
    }
    data.update(overrides)
    return data


def test_change_form_edits_lists_env_and_secrets_as_text(staff_client, model_factory):
    from audit.models import AuditEntry
    from catalog.selectors import model_secrets

    entry = model_factory("tiny")
    url = f"/admin/catalog/modelentry/{entry.pk}/change/"
    page = staff_client.get(url)
    assert page.status_code == 200
    assert b'<textarea name="vllm_args"' in page.content and b'<textarea name="container_env"' in page.content
    assert b'name="secrets-0-value"' in page.content and b'type="password"' in page.content
    speculative = '{"method": "mtp", "num_speculative_tokens": 2}'
    response = staff_client.post(
        url,
        _change_form_data(
            entry,
            vllm_args=f"--kv-cache-dtype\r\nfp8\r\n\r\n--speculative-config\r\n{speculative}\r\n",
            image="vllm-node-tf5",
            mods="mods/fix-glm\nmods/drop-caches",
            container_env="VLLM_MARLIN_USE_ATOMIC_ADD=1\nPYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
            launcher_flags="--non-privileged\n--mem-limit-gb\n100",
            **{"secrets-0-name": "HF_TOKEN", "secrets-0-value": "hf_admin_secret_value"},
        ),
    )
    assert response.status_code == 302, response.content.decode()[-3000:]
    entry.refresh_from_db()
    assert entry.vllm_args == ["--kv-cache-dtype", "fp8", "--speculative-config", speculative]
    assert entry.mods == ["mods/fix-glm", "mods/drop-caches"] and entry.image == "vllm-node-tf5"
    assert entry.container_env == {
        "VLLM_MARLIN_USE_ATOMIC_ADD": "1",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    }
    assert entry.launcher_flags == ["--non-privileged", "--mem-limit-gb", "100"]
    assert model_secrets(entry) == {"HF_TOKEN": "hf_admin_secret_value"}
    # The page shows the lists back exactly, and the secret's name but never its value.
    page = staff_client.get(url)
    assert speculative.replace('"', "&quot;").encode() in page.content
    assert b"HF_TOKEN" in page.content and b"hf_admin_secret_value" not in page.content
    assert AuditEntry.objects.filter(action="catalog.change", target="tiny").exists()
    assert not any("hf_admin_secret_value" in str(a.detail) for a in AuditEntry.objects.all())

    # A blank value keeps the stored secret; a new value replaces it.
    secret = entry.secrets.get()
    keep = _change_form_data(
        entry,
        vllm_args="--kv-cache-dtype\nfp8",
        **{
            "secrets-INITIAL_FORMS": "1",
            "secrets-0-id": secret.pk,
            "secrets-0-name": "HF_TOKEN",
            "secrets-0-value": "",
        },
    )
    assert staff_client.post(url, keep).status_code == 302
    assert model_secrets(entry) == {"HF_TOKEN": "hf_admin_secret_value"}
    keep["secrets-0-value"] = "hf_new_value"
    assert staff_client.post(url, keep).status_code == 302
    assert model_secrets(entry) == {"HF_TOKEN": "hf_new_value"}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("vllm_args", "--served_model_name=x", "--served-model-name"),
        ("vllm_args", "-tp\n2", "tensor_parallel_size"),
        ("launcher_flags", "-t\nother", "use the image field"),
        ("container_env", "VLLM_HOST_IP=1.2.3.4", "set by the launcher"),
        ("container_env", "HF_TOKEN=hf_x", "secret"),
        ("container_env", "no equals sign", "NAME=value"),
        ("mods", "mods/../x", "'..'"),
        ("image", "Vllm-Node", "docker image"),
        ("served_model_name", "--x", "would be read as a flag"),
    ],
)
def test_change_form_refuses_what_breaks_a_launch(staff_client, model_factory, field, value, message):
    entry = model_factory("tiny")
    response = staff_client.post(
        f"/admin/catalog/modelentry/{entry.pk}/change/", _change_form_data(entry, **{field: value})
    )
    assert response.status_code == 200
    assert message.encode() in response.content.replace(b"&#x27;", b"'")
    entry.refresh_from_db()
    assert entry.vllm_args == [] and entry.container_env == {} and entry.image == ""


def test_new_secret_needs_a_value(staff_client, model_factory):
    entry = model_factory("tiny")
    response = staff_client.post(
        f"/admin/catalog/modelentry/{entry.pk}/change/", _change_form_data(entry, **{"secrets-0-name": "HF_TOKEN"})
    )
    assert response.status_code == 200 and b"needs a value" in response.content
    assert not entry.secrets.exists()
