"""`manage.py catalog import-recipes DIR` on recipe files written here, in the launcher's recipe format."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog.models import ModelEntry
from catalog.recipes import catalog_import_recipes, recipe_to_entry
from catalog.services import CatalogImportError

pytestmark = pytest.mark.django_db

SOLO = """
recipe_version: "1"
name: Tiny Solo
description: a one-node model
model: org/tiny-solo
container: vllm-node-tf5
build_args: [--pre-tf]
solo_only: true
mods:
  - mods/fix-tiny
defaults:
  port: 8000
  host: 0.0.0.0
  tensor_parallel: 2
  gpu_memory_utilization: 0.7
  max_model_len: 32k
env:
  VLLM_MARLIN_USE_ATOMIC_ADD: 1
  PYTORCH_CUDA_ALLOC_CONF: "expandable_segments:True"
command: |
  vllm serve org/tiny-solo \\
      --served-model-name tiny \\
      --port {port} --host {host} \\
      -tp {tensor_parallel} \\
      --gpu-memory-utilization {gpu_memory_utilization} \\
      --max-model-len {max_model_len} \\
      --speculative-config '{{"method": "mtp", "num_speculative_tokens": 2}}' \\
      --enable-prefix-caching
"""

CLUSTER = """
recipe_version: "1"
name: Big Cluster
container: vllm-node
cluster_only: true
defaults:
  port: 8000
  host: 0.0.0.0
  tensor_parallel: 2
command: |
  vllm serve org/big-model \\
    --tensor-parallel-size {tensor_parallel} \\
    --max-num-seqs 4 \\
    --max-model-len auto \\
    --distributed-executor-backend ray \\
    --port {port} \\
    --host {host}
"""

FOUR_NODES = """
name: Too Big
container: vllm-node
cluster_only: true
defaults: {tensor_parallel: 4}
command: vllm serve org/huge -tp {tensor_parallel}
"""

BROKEN = """
name: Broken
container: Not An Image
env:
  VLLM_HOST_IP: 10.0.0.1
command: |
  vllm serve org/broken --port 8000 --nnodes 2 --max-model-len {missing}
"""


def write(directory, files):
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_recipes_become_catalog_entries_and_a_second_import_changes_nothing(tmp_path):
    directory = write(tmp_path / "recipes", {"tiny-solo.yaml": SOLO, "big.cluster.yaml": CLUSTER})
    result = catalog_import_recipes(directory=directory)
    assert sorted(result.report.created) == ["big-cluster", "tiny-solo"]

    tiny = ModelEntry.objects.get(key="tiny-solo")
    assert tiny.name == "Tiny Solo" and tiny.repo == "org/tiny-solo" and tiny.image == "vllm-node-tf5"
    assert tiny.nodes == 1 and tiny.tensor_parallel_size is None  # solo: run-recipe.py forces tensor_parallel 1
    assert tiny.served_model_name == "tiny"
    assert tiny.gpu_memory_utilization == 0.7 and tiny.max_model_len == 32000
    assert tiny.mods == ["mods/fix-tiny"]
    assert tiny.container_env == {
        "VLLM_MARLIN_USE_ATOMIC_ADD": "1",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    }
    assert tiny.vllm_args == [
        "--speculative-config",
        '{"method": "mtp", "num_speculative_tokens": 2}',
        "--enable-prefix-caching",
    ]

    big = ModelEntry.objects.get(key="big-cluster")
    assert big.nodes == 2 and big.max_num_seqs == 4 and big.served_model_name == ""
    assert big.vllm_args == ["--max-model-len", "auto"]  # a value the knob cannot hold stays a flag

    stamps = {e.key: e.updated_at for e in ModelEntry.objects.all()}
    again = catalog_import_recipes(directory=directory)
    assert again.report.created == [] and again.report.updated == []
    assert sorted(again.report.unchanged) == ["big-cluster", "tiny-solo"]
    assert stamps == {e.key: e.updated_at for e in ModelEntry.objects.all()}


def test_every_error_is_listed_and_nothing_is_written(tmp_path, model_factory):
    model_factory("tiny-solo", name="Before")
    directory = write(tmp_path / "recipes", {"tiny-solo.yaml": SOLO, "huge.yaml": FOUR_NODES, "broken.yaml": BROKEN})
    with pytest.raises(CatalogImportError) as info:
        catalog_import_recipes(directory=directory)
    text = "\n".join(info.value.errors)
    assert "huge.yaml: command: needs 4 nodes" in text and "at most 2" in text
    assert "broken.yaml: command: placeholder {missing} has no value in defaults" in text
    assert ModelEntry.objects.get(key="tiny-solo").name == "Before"
    assert ModelEntry.objects.count() == 1


def test_catalog_validation_errors_name_file_and_field(tmp_path):
    broken = BROKEN.replace("{missing}", "4096")
    directory = write(tmp_path / "recipes", {"broken.yaml": broken, "ok.yaml": CLUSTER})
    with pytest.raises(CatalogImportError) as info:
        catalog_import_recipes(directory=directory)
    text = "\n".join(info.value.errors)
    assert "broken.yaml: image:" in text
    assert "broken.yaml: container_env: VLLM_HOST_IP: VLLM_HOST_IP is set by the launcher" in text
    assert "broken.yaml: vllm_args: --nnodes cannot be given as a vLLM flag" in text
    assert not ModelEntry.objects.exists()


@pytest.mark.parametrize(
    "document, problem",
    [
        ("just text", "must be a YAML mapping"),
        ({"name": "x", "container": "vllm-node"}, "command: this field is required"),
        ({"name": "x", "container": "vllm-node", "command": "python serve.py"}, "vllm serve MODEL"),
        ({"name": "x", "container": "vllm-node", "command": "vllm serve org/x", "colour": 1}, "unknown field"),
        ({"name": "x", "container": "vllm-node", "command": "vllm serve org/x -pp 2"}, "tensor parallel only"),
        ({"name": "x", "container": "vllm-node", "command": "vllm serve 'org/x"}, "cannot split"),
    ],
)
def test_recipe_problems(document, problem):
    _, problems = recipe_to_entry(key="x", document=document)
    assert any(problem in str(p) for p in problems), problems


def test_command_reports_and_refuses(tmp_path, capsys):
    directory = write(tmp_path / "recipes", {"huge.yaml": FOUR_NODES})
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("catalog", "import-recipes", str(directory))
    assert "huge.yaml: command: needs 4 nodes" in capsys.readouterr().err
    write(directory, {"huge.yaml": CLUSTER})
    call_command("catalog", "import-recipes", str(directory))
    assert "created 1" in capsys.readouterr().out
    with pytest.raises(CommandError, match="not a directory"):
        call_command("catalog", "import-recipes", str(tmp_path / "nope"))
