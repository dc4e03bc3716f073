import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog.models import ModelEntry
from catalog.services import CatalogImportError, catalog_export, catalog_import, catalog_parse_yaml

pytestmark = pytest.mark.django_db

GOOD = """
models:
  - key: alpha
    name: Alpha
    repo: org/alpha
    vllm_args: ["--enforce-eager"]
    knobs: {gpu_memory_utilization: 0.5, max_model_len: 4096}
  - key: beta
    name: Beta
    local_path: /models/beta
    nodes: 2
"""

BAD = """
models:
  - key: good-one
    name: Good
    repo: org/good
  - key: both
    repo: org/x
    local_path: /models/x
  - key: hostile
    local_path: /models/../etc
  - key: owned
    repo: org/y
    vllm_args: ["--port", "1"]
  - key: knobby
    repo: org/z
    knobs: {gpu_memory_utilization: 7}
  - name: no key
    repo: org/w
  - key: extra
    repo: org/v
    colour: blue
"""


def test_import_creates_entries_and_is_idempotent(tmp_path):
    report = catalog_import(entries=catalog_parse_yaml(text=GOOD))
    assert report.created == ["alpha", "beta"]
    beta = ModelEntry.objects.get(key="beta")
    assert beta.is_local and beta.nodes == 2
    stamp = {e.key: e.updated_at for e in ModelEntry.objects.all()}
    again = catalog_import(entries=catalog_parse_yaml(text=GOOD))
    assert again.created == [] and again.updated == [] and again.unchanged == ["alpha", "beta"]
    assert stamp == {e.key: e.updated_at for e in ModelEntry.objects.all()}


def test_import_with_any_error_writes_nothing_and_reports_every_error():
    with pytest.raises(CatalogImportError) as info:
        catalog_import(entries=catalog_parse_yaml(text=BAD))
    errors = info.value.errors
    text = "\n".join(errors)
    assert "entry 2 (both)" in text
    assert "entry 3 (hostile): local_path" in text
    assert "entry 4 (owned): vllm_args" in text
    assert "entry 5 (knobby): gpu_memory_utilization" in text
    assert "entry 6: key: this field is required" in text
    assert "entry 7 (extra): unknown field(s): colour" in text
    assert ModelEntry.objects.count() == 0


def test_failed_import_leaves_existing_entries_untouched(model_factory):
    model_factory("good-one", name="Before")
    with pytest.raises(CatalogImportError):
        catalog_import(entries=catalog_parse_yaml(text=BAD))
    assert ModelEntry.objects.get(key="good-one").name == "Before"


def test_duplicate_keys_and_malformed_yaml():
    with pytest.raises(CatalogImportError, match="more than once"):
        catalog_import(entries=[{"key": "a", "repo": "o/a"}, {"key": "a", "repo": "o/b"}])
    with pytest.raises(CatalogImportError, match="not valid YAML"):
        catalog_parse_yaml(text="models: [\n")
    with pytest.raises(CatalogImportError, match="'models' list"):
        catalog_parse_yaml(text="- a\n- b\n")


def test_export_round_trips():
    catalog_import(entries=catalog_parse_yaml(text=GOOD))
    exported = catalog_export()
    report = catalog_import(entries=catalog_parse_yaml(text=exported))
    assert report.unchanged == ["alpha", "beta"]


def test_command_reports_errors_and_imports_the_example(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("catalog", "import", str(bad))
    assert "entry 3 (hostile)" in capsys.readouterr().err
    call_command("catalog", "import", "examples/models.yaml")
    assert set(ModelEntry.objects.values_list("key", flat=True)) == {"qwen3-30b-a3b", "gpt-oss-120b", "ten31-v2"}


LAUNCHER = """
models:
  - key: glm
    repo: org/glm
    image: vllm-node-tf5
    mods: [mods/fix-glm]
    container_env: {VLLM_MARLIN_USE_ATOMIC_ADD: "1"}
    launcher_flags: [--non-privileged, --shm-size-gb, "32"]
  - key: alias
    repo: org/alias
    env: {A: "1"}
    launcher_args: [--no-cache-dirs]
"""


def test_launcher_fields_round_trip_and_secrets_stay_out_of_the_export():
    from catalog.models import ModelSecret

    report = catalog_import(entries=catalog_parse_yaml(text=LAUNCHER))
    assert report.created == ["glm", "alias"]
    glm = ModelEntry.objects.get(key="glm")
    assert glm.image == "vllm-node-tf5" and glm.launcher_flags == ["--non-privileged", "--shm-size-gb", "32"]
    assert ModelEntry.objects.get(key="alias").container_env == {"A": "1"}
    ModelSecret.objects.create(model=glm, name="HF_TOKEN", value="hf_export_must_not_show")
    exported = catalog_export()
    assert "hf_export_must_not_show" not in exported
    assert "#   glm: HF_TOKEN" in exported  # the names, as a comment, so the operator knows what to set again
    again = catalog_import(entries=catalog_parse_yaml(text=exported))
    assert sorted(again.unchanged) == ["alias", "glm"]


def test_import_refuses_bad_launcher_fields_naming_them():
    bad = """
models:
  - key: bad
    repo: org/bad
    image: "vllm node"
    launcher_flags: [-e, A=1]
    container_env: {HF_TOKEN: hf_x}
"""
    with pytest.raises(CatalogImportError) as info:
        catalog_import(entries=catalog_parse_yaml(text=bad))
    text = "\n".join(info.value.errors)
    assert "entry 1 (bad): image:" in text
    assert "entry 1 (bad): launcher_flags: -e cannot be given as a launcher flag" in text
    assert "entry 1 (bad): container_env: HF_TOKEN" in text
    assert "hf_x" not in text
