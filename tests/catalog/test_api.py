import pytest

from audit.models import AuditEntry
from catalog.models import ModelEntry

pytestmark = pytest.mark.django_db


def test_list_needs_credentials(anon, reader, model_factory):
    model_factory("tiny")
    assert anon.get("/api/models").status_code == 401
    response = reader.get("/api/models")
    assert response.status_code == 200
    [item] = response.json()
    assert item["key"] == "tiny" and item["repo"] == "sim/tiny-model" and item["local"] is False
    assert item["served_model_name"] == "tiny" and item["knobs"]["max_model_len"] is None


def test_create_needs_admin_scope(reader, operator, admin_api):
    body = {"key": "new", "repo": "org/new"}
    assert reader.post("/api/models", body).status_code == 403
    assert operator.post("/api/models", body).status_code == 403
    response = admin_api.post("/api/models", body)
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "new"
    assert AuditEntry.objects.filter(action="catalog.create", target="new").exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"key": "x", "repo": "org/x", "local_path": "/models/x"}, "local_path"),
        ({"key": "x"}, "repo"),
        ({"key": "x", "local_path": "/models-evil/x"}, "local_path"),
        ({"key": "x", "local_path": "models/x"}, "local_path"),
        ({"key": "x", "repo": "org/x", "vllm_args": ["--served-model-name", "y"]}, "vllm_args"),
        ({"key": "x", "repo": "org/x", "nodes": 3}, "nodes"),
        ({"key": "bad key!", "repo": "org/x"}, "key"),
        ({"key": "x", "repo": "org/x", "knobs": {"gpu_memory_utilization": "lots"}}, "gpu_memory_utilization"),
        ({"key": "x", "repo": "org/x", "surprise": 1}, "surprise"),
    ],
)
def test_create_refuses_bad_input_naming_the_field(admin_api, body, field):
    response = admin_api.post("/api/models", body)
    assert response.status_code == 422, response.content
    assert field in response.json()["detail"]
    assert ModelEntry.objects.count() == 0


def test_malformed_json_and_wrong_types_are_4xx(admin_api):
    response = admin_api.post("/api/models", raw="{not json")
    assert 400 <= response.status_code < 500
    assert "detail" in response.json()
    response = admin_api.post("/api/models", raw="[1, 2]")
    assert 400 <= response.status_code < 500


def test_oversize_body_is_413(admin_api):
    response = admin_api.post("/api/models", raw='{"key": "' + "x" * 300_000 + '"}')
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_knobs_update_and_owned_flags(admin_api, operator, model_factory):
    model_factory("tiny")
    body = {"knobs": {"gpu_memory_utilization": 0.6, "max_model_len": 8192}, "vllm_args": ["--enforce-eager"]}
    assert operator.put("/api/models/tiny/knobs", body).status_code == 403
    response = admin_api.put("/api/models/tiny/knobs", body)
    assert response.status_code == 200, response.content
    assert response.json()["knobs"]["max_model_len"] == 8192
    refused = admin_api.put("/api/models/tiny/knobs", {"vllm_args": ["--port=1"]})
    assert refused.status_code == 422 and "--port" in refused.json()["detail"]
    assert ModelEntry.objects.get(key="tiny").vllm_args == ["--enforce-eager"]
    assert admin_api.put("/api/models/nope/knobs", body).status_code == 404


def test_session_writes_need_csrf(staff_client):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.cookies = staff_client.cookies
    response = client.post("/api/models", data={"key": "x", "repo": "o/x"}, content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert client.get("/api/models").status_code == 200


def test_health_needs_no_credentials(anon):
    response = anon.get("/api/health")
    assert response.status_code == 200 and response.json()["database"] == "ok"


def test_launcher_fields_are_written_and_read_and_secrets_are_write_only(admin_api, reader):
    from catalog.selectors import model_secrets

    body = {
        "key": "glm",
        "repo": "org/glm",
        "image": "vllm-node-tf5",
        "mods": ["mods/fix-glm"],
        "env": {
            "VLLM_MARLIN_USE_ATOMIC_ADD": "1",
            "HF_TOKEN": {"value": "hf_api_secret_value", "secret": True},
        },
        "secrets": {"EXTRA_KEY": "second_api_secret"},
        "launcher_args": ["--non-privileged", "--shm-size-gb", "32"],
    }
    response = admin_api.post("/api/models", body)
    assert response.status_code == 201, response.content
    item = response.json()
    assert item["image"] == "vllm-node-tf5" and item["mods"] == ["mods/fix-glm"]
    assert item["env"] == {"VLLM_MARLIN_USE_ATOMIC_ADD": "1"}
    assert item["secret_names"] == ["EXTRA_KEY", "HF_TOKEN"]
    assert item["launcher_args"] == ["--non-privileged", "--shm-size-gb", "32"]
    listed = reader.get("/api/models")
    assert b"hf_api_secret_value" not in listed.content and b"second_api_secret" not in listed.content
    assert listed.json()[0]["secret_names"] == ["EXTRA_KEY", "HF_TOKEN"]
    entry = ModelEntry.objects.get(key="glm")
    assert entry.container_env == {"VLLM_MARLIN_USE_ATOMIC_ADD": "1"}
    assert model_secrets(entry) == {"EXTRA_KEY": "second_api_secret", "HF_TOKEN": "hf_api_secret_value"}

    # Update: launcher fields replace, secrets merge (null removes one), absent fields stay.
    response = admin_api.put(
        "/api/models/glm/knobs",
        {"container_env": {"A": "b"}, "secrets": {"EXTRA_KEY": None, "HF_TOKEN": "hf_rotated"}, "mods": []},
    )
    assert response.status_code == 200, response.content
    item = response.json()
    assert item["env"] == {"A": "b"} and item["mods"] == [] and item["image"] == "vllm-node-tf5"
    assert item["secret_names"] == ["HF_TOKEN"] and b"hf_rotated" not in response.content
    assert model_secrets(ModelEntry.objects.get(key="glm")) == {"HF_TOKEN": "hf_rotated"}
    for entry in AuditEntry.objects.all():
        assert "hf_" not in str(entry.detail) and "second_api_secret" not in str(entry.detail)


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"image": "not an image"}, "image", "whitespace"),
        ({"mods": ["../x"]}, "mods", "'..'"),
        ({"env": {"VLLM_HOST_IP": "1.2.3.4"}}, "container_env", "set by the launcher"),
        ({"env": {"HF_TOKEN": "hf_plain"}}, "container_env", "secret"),
        ({"secrets": {"bad-name": "x"}}, "secrets", "not a variable name"),
        ({"launcher_args": ["-t", "x"]}, "launcher_flags", "use the image field"),
        ({"launcher_args": ["--apply-mod", "x"]}, "launcher_flags", "use the mods field"),
        ({"vllm_args": ["--tensor_parallel_size", "2"]}, "vllm_args", "--tensor-parallel-size"),
        ({"vllm_args": ["--served_model_name=x"]}, "vllm_args", "--served-model-name"),
        ({"vllm_args": ["--PORT", "1"]}, "vllm_args", "--port"),
        ({"vllm_args": ["--por=1"]}, "vllm_args", "--port"),
        ({"vllm_args": ["--nnodes", "2"]}, "vllm_args", "--nnodes"),
        ({"env": {"A": "1"}, "container_env": {"A": "1"}}, "env", "not both"),
    ],
)
def test_launcher_field_errors_name_the_field(admin_api, model_factory, body, field, words):
    model_factory("tiny")
    response = admin_api.put("/api/models/tiny/knobs", body)
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert detail.startswith(field) or f"{field}:" in detail, detail
    assert words in detail
    assert "hf_plain" not in detail
    entry = ModelEntry.objects.get(key="tiny")
    assert entry.image == "" and entry.container_env == {} and entry.vllm_args == []
    assert not entry.secrets.exists()


def test_create_refuses_a_bad_served_name_and_local_path(admin_api):
    response = admin_api.post("/api/models", {"key": "x", "repo": "o/x", "served_model_name": "--port"})
    assert response.status_code == 422 and "served_model_name" in response.json()["detail"]
    response = admin_api.post("/api/models", {"key": "x", "local_path": "/models/x:rw"})
    assert response.status_code == 422 and "local_path" in response.json()["detail"]
    assert ModelEntry.objects.count() == 0
