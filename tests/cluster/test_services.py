import pytest

from cluster.models import Service
from cluster.services import ServicesConfigError, cluster_settings_get, services_sync

pytestmark = pytest.mark.django_db

OVERRIDES = """
services:
  parakeet-asr:
    port: 8010
  vllm-b:
    name: vLLM on the worker
    kind: vllm
    node: worker
    port: 8000
    models: [gemma-4]
"""


def test_builtins_are_present_after_migrate():
    keys = set(Service.objects.values_list("key", flat=True))
    assert {"vllm", "parakeet-asr", "kokoro-tts", "embeddings", "qdrant"} <= keys


def test_overrides_change_fields_and_add_a_read_only_vllm(tmp_path):
    path = tmp_path / "services-overrides.yaml"
    path.write_text(OVERRIDES)
    services_sync(overrides_path=path)
    assert Service.objects.get(key="parakeet-asr").port == 8010
    assert Service.objects.get(key="parakeet-asr").kind == "stt"  # unchanged fields stay
    second = Service.objects.get(key="vllm-b")
    assert second.kind == "vllm" and second.read_only and second.source == "override"
    assert not Service.objects.get(key="vllm").read_only


@pytest.mark.parametrize(
    "text, expected",
    [
        ("services:\n  parakeet-asr:\n    port: 99999\n", "service 'parakeet-asr': field 'port'"),
        ("services:\n  new-one:\n    kind: vllm\n    port: 1\n", "service 'new-one': field 'name' is required"),
        ("services:\n  x:\n    name: X\n    kind: gpu\n    port: 1\n", "service 'x': field 'kind'"),
        ("services:\n  x:\n    name: X\n    kind: http\n    colour: 1\n    port: 1\n", "unknown field 'colour'"),
        ("services: [1, 2]\n", "must be a mapping"),
        ("services:\n  x: [\n", "cannot read"),
        ("services:\n  Bad Key:\n    name: X\n", "key must be"),
    ],
)
def test_a_bad_overrides_file_is_refused_and_the_last_good_set_stays(tmp_path, text, expected):
    good = tmp_path / "good.yaml"
    good.write_text(OVERRIDES)
    services_sync(overrides_path=good)
    before = {s.key: (s.port, s.kind, s.name) for s in Service.objects.all()}
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ServicesConfigError) as info:
        services_sync(overrides_path=bad)
    assert expected in str(info.value)
    assert str(bad) in str(info.value)
    assert before == {s.key: (s.port, s.kind, s.name) for s in Service.objects.all()}


def test_admin_enabled_flag_survives_a_sync(tmp_path):
    Service.objects.filter(key="qdrant").update(enabled=False)
    services_sync(overrides_path=tmp_path / "missing.yaml")
    assert Service.objects.get(key="qdrant").enabled is False


def test_endpoints_flag_disabled_services(reader, settings):
    row = cluster_settings_get()
    row.disabled_services = "parakeet-asr"
    row.save()
    Service.objects.filter(key="qdrant").update(enabled=False)
    response = reader.get("/api/endpoints")
    assert response.status_code == 200
    by_key = {item["key"]: item for item in response.json()}
    assert by_key["parakeet-asr"]["disabled"] is True
    assert by_key["qdrant"]["disabled"] is True
    assert by_key["vllm"]["disabled"] is False
    assert by_key["vllm"]["probe"]["status"] == "unknown"
    assert by_key["vllm"]["url"].endswith(":8888")


def test_cluster_settings_defaults():
    row = cluster_settings_get()
    assert row.effective_vllm_port == 8888 and row.effective_container == "vllm_node"
    row.vllm_port = 8000
    assert row.effective_vllm_port == 8000
