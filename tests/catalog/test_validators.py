import pytest
from django.core.exceptions import ValidationError

from catalog.validators import validate_local_path, validate_repo, validate_vllm_args

ROOTS = ["/models", "/data/llm"]


@pytest.mark.parametrize(
    "path",
    [
        "models/x",  # relative
        "/models/../etc/passwd",
        "/models/./x",
        "/models//x",
        "//models/x",
        "/models/x/",
        "/models/x\nrm -rf /",
        "/models/x\x00",
        "/models/x\t",
        "/etc/passwd",
        "/models",  # the root itself is not a model directory
        "/models-evil/x",  # a sibling sharing the prefix
        "/modelsx",
        "/data/llm-other/x",
        "",
    ],
)
def test_hostile_local_paths_are_refused(path):
    with pytest.raises(ValidationError):
        validate_local_path(path, roots=ROOTS)


@pytest.mark.parametrize("path", ["/models/x", "/models/org/ten31-v2", "/data/llm/Qwen3-ft_v2.1"])
def test_paths_inside_a_root_are_accepted(path):
    validate_local_path(path, roots=ROOTS)


def test_refusal_says_why():
    with pytest.raises(ValidationError, match="not inside an allowed local-model root: /models"):
        validate_local_path("/models-evil/x", roots=["/models"])
    with pytest.raises(ValidationError, match="not absolute"):
        validate_local_path("x/y", roots=["/models"])


@pytest.mark.parametrize("arg", ["--port", "--port=9000", "--host", "--host=0.0.0.0", "--served-model-name=x"])
def test_owned_flags_are_refused(arg):
    with pytest.raises(ValidationError, match="cannot be given as a vLLM flag"):
        validate_vllm_args([arg, "9000"])


def test_flags_must_be_a_list_of_strings():
    with pytest.raises(ValidationError):
        validate_vllm_args("--enforce-eager")
    with pytest.raises(ValidationError):
        validate_vllm_args(["--max-num-seqs", 8])
    validate_vllm_args(["--enforce-eager", "--kv-cache-dtype", "fp8"])


@pytest.mark.parametrize("repo", ["Qwen/Qwen3-8B", "sim/tiny-model", "org/name.v2_x"])
def test_repo_ids(repo):
    validate_repo(repo)


@pytest.mark.parametrize("repo", ["noslash", "a/b/c", "../x", "org/..", "org/$(x)", "/abs", "org/"])
def test_bad_repo_ids(repo):
    with pytest.raises(ValidationError):
        validate_repo(repo)
