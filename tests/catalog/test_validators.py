import re

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


# --- owned vLLM flags in every spelling vLLM's parser maps to them -------------------------------------------------

from catalog.validators import (  # noqa: E402
    owned_vllm_flag,
    validate_container_env,
    validate_env_name,
    validate_image,
    validate_launcher_flags,
    validate_mods,
    validate_served_model_name,
)


@pytest.mark.parametrize(
    "args, owned",
    [
        (["--served_model_name=x"], "--served-model-name"),
        (["--served_model_name", "x"], "--served-model-name"),
        (["--tensor_parallel_size", "2"], "--tensor-parallel-size"),
        (["--tensor-parallel-size=2"], "--tensor-parallel-size"),
        (["-tp", "2"], "-tp"),
        (["-tp=2"], "-tp"),
        (["-tp2"], "-tp"),
        (["-TP", "2"], "-tp"),
        (["-t", "2"], "-tp"),  # argparse's unique prefix of -tp
        (["--PORT", "9000"], "--port"),
        (["--Port=9000"], "--port"),
        (["--por", "9000"], "--port"),  # abbreviation
        (["--hos=0.0.0.0"], "--host"),
        (["--served", "x"], "--served-model-name"),
        (["--served-model", "x"], "--served-model-name"),
        (["--tensor-par", "2"], "--tensor-parallel-size"),
        (["--nnodes", "2"], "--nnodes"),
        (["--node_rank=1"], "--node-rank"),
        (["--master-addr", "10.0.0.1"], "--master-addr"),
        (["--master_port=29501"], "--master-port"),
        (["--headless"], "--headless"),
        (["--head"], "--headless"),
        (["--distributed-executor-backend", "ray"], "--distributed-executor-backend"),
        (["--distributed_executor_backend=mp"], "--distributed-executor-backend"),
        (["--pipeline-parallel-size", "2"], "--pipeline-parallel-size"),
        (["-pp", "2"], "-pp"),
        (["-dp=2"], "-dp"),
        (["--port.x", "1"], "--port"),  # a dotted (JSON) argument of an owned flag
        (["--model", "other/model"], "--model"),
        (["--config", "x.yaml"], "--config"),
        (["--uds", "/tmp/s"], "--uds"),
        (["--help"], "--help"),
    ],
)
def test_owned_flags_are_refused_in_every_spelling(args, owned):
    with pytest.raises(ValidationError) as info:
        validate_vllm_args(["--enforce-eager", *args])
    message = " ".join(info.value.messages)
    assert owned in message and "cannot be given as a vLLM flag" in message


@pytest.mark.parametrize(
    "args",
    [
        ["--max-model-len", "32768"],
        ["--max_num_seqs=8"],
        ["--gpu-memory-utilization-gb", "108"],  # a mod's flag, longer than any owned one
        ["--data-parallel-size-local", "1"],
        ["-dpl", "1"],  # its own option, not -dp with a value
        ["-dcp", "1"],
        ["--no-enable-prefix-caching"],
        ["--speculative-config", '{"method": "mtp", "num_speculative_tokens": 2}'],
        ["--override-generation-config", "-1"],
        ["-O3"],
        ["--hf-overrides", "{}"],
    ],
)
def test_ordinary_flags_pass(args):
    validate_vllm_args(args)


def test_every_problem_is_reported_and_names_the_spelling():
    with pytest.raises(ValidationError) as info:
        validate_vllm_args(["--served_model_name=x", "--enforce-eager", "--PORT", "1", "--", "x\n"])
    messages = info.value.messages
    assert len(messages) == 4
    assert "--served-model-name (spelled --served_model_name) cannot be given" in messages[0]
    assert "use the served_model_name field" in messages[0]


def test_owned_flag_lookup():
    assert owned_vllm_flag("--enforce-eager") is None
    assert owned_vllm_flag("fp8") is None
    assert owned_vllm_flag("-1") is None
    assert owned_vllm_flag("--tensor_parallel_size")[0] == "--tensor-parallel-size"


@pytest.mark.parametrize("name", ["-x", "--port", "a b", "x\ny", "tab\there"])
def test_bad_served_model_names(name):
    with pytest.raises(ValidationError):
        validate_served_model_name(name)


def test_good_served_model_names():
    for name in ("", "qwen3", "org/model:v2", "glm-4.7-flash"):
        validate_served_model_name(name)


@pytest.mark.parametrize(
    "path, why",
    [
        ("/models/x:rw", "':'"),
        ("/models/a,b", "','"),
        ("/models/a b", "whitespace"),
        ("/models/$(id)", "worker's shell"),
        ("/models/a;b", "worker's shell"),
    ],
)
def test_local_paths_that_break_the_docker_mount(path, why):
    with pytest.raises(ValidationError, match=re.escape(why)):
        validate_local_path(path, roots=ROOTS)


# --- the launcher's fields -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "",
        "vllm-node",
        "vllm-node-mxfp4",
        "eugr/spark-vllm:latest",
        "nvcr.io/nvidia/vllm:25.09-py3",
        "localhost:5000/team/vllm-node:v1.2",
        "vllm-node@sha256:" + "a" * 64,
        "registry.example.com/vllm:tag@sha256:" + "0" * 64,
    ],
)
def test_good_images(image):
    validate_image(image)


@pytest.mark.parametrize(
    "image",
    ["vllm node", "vllm;rm", "$(x)", "Vllm-Node", "vllm:", "vllm@sha256:abc", "-t", "vllm:tag:tag", "a" * 256],
)
def test_bad_images(image):
    with pytest.raises(ValidationError):
        validate_image(image)


def test_mods():
    validate_mods(["mods/fix-qwen3.5-chat-template", "/opt/mods/x.zip", "mods/drop-caches"])
    for bad in (["mods/../etc"], ["mods/a b"], ["mods/x\n"], ["-x"], ["mods/$(x)"], ["mods//x"], [""], "mods/x", [1]):
        with pytest.raises(ValidationError):
            validate_mods(bad)


@pytest.mark.parametrize(
    "name, why",
    [
        ("VLLM_HOST_IP", "set by the launcher"),
        ("NCCL_SOCKET_IFNAME", "set by the launcher"),
        ("RAY_object_store_memory", "set by the launcher"),
        ("HF_TOKEN", "secret"),
        ("1ABC", "not a variable name"),
        ("A-B", "not a variable name"),
        ("A B", "not a variable name"),
    ],
)
def test_container_env_names(name, why):
    with pytest.raises(ValidationError, match=why):
        validate_container_env({name: "1"})


def test_container_env_values():
    validate_container_env({"VLLM_MARLIN_USE_ATOMIC_ADD": "1", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})
    for bad in ({"A": "x\ny"}, {"A": "x\x00"}, {"A": 1}, {"A": "a b"}, {"A": "x" * 5000}, ["A=1"]):
        with pytest.raises(ValidationError):
            validate_container_env(bad)
    validate_env_name("HF_TOKEN", secret=True)  # a secret variable may carry it


@pytest.mark.parametrize(
    "flags",
    [
        ["--non-privileged", "--mem-limit-gb", "100", "--shm-size-gb", "32", "--pids-limit", "8192"],
        ["--eth-if", "enp1s0f0np0", "--ib-if", "rocep1s0f0"],
        ["--nccl-debug"],
        ["--nccl-debug", "INFO", "--no-cache-dirs"],
        ["-v", "/data/cache:/root/.cache/extra:ro", "--volume=/a:/b"],
        ["--earlyoom", "--earlyoom-args", "-M 524288,102400 -s 100 -r 60"],
        ["--keep-entrypoint", "-j", "8"],
    ],
)
def test_allowed_launcher_flags(flags):
    validate_launcher_flags(flags)


@pytest.mark.parametrize(
    "flags, why",
    [
        (["-t", "x"], "use the image field"),
        (["-e", "A=1"], "container_env"),
        (["--env", "A=1"], "container_env"),
        (["--apply-mod", "mods/x"], "use the mods field"),
        (["--solo"], "nodes"),
        (["-n", "1.2.3.4"], "nodes"),
        (["-d"], "daemon"),
        (["--name", "x"], "cluster setting"),
        (["--config", "x"], "cluster setting"),
        (["--launch-script", "x.sh"], "vLLM command"),
        (["--ray"], "capabilities"),
        (["--no-ray"], "capabilities"),
        (["--check-config"], "launches nothing"),
        (["--setup"], "autodiscovery"),
        (["--discover"], "autodiscovery"),
        (["-p", "8000:8000"], "host network"),
        (["-h"], "help"),
        (["--master-port", "1"], "engine-owned"),
        (["exec"], "action"),
        (["stop"], "action"),
        (["--apply-vllm-pr", "123"], "not a launcher option"),
        (["--eth-if"], "needs a value"),
        (["--eth-if", "eth 0"], "not a network interface"),
        (["--eth-if=eth0"], "next argument"),
        (["--mem-limit-gb", "100"], "only take effect with --non-privileged"),
        (["--non-privileged", "--mem-limit-gb", "lots"], "positive whole number"),
        (["--earlyoom", "--keep-entrypoint"], "--keep-entrypoint"),
        (["--earlyoom-args", "-M 1; rm -rf /"], "word-splits"),
        (["-v", "/a:/b:rw;x"], "HOST_PATH:CONTAINER_PATH"),
        (["-v", "relative:/b"], "HOST_PATH:CONTAINER_PATH"),
        (["--nccl-debug", "info"], "capitals"),
        ("--non-privileged", "list"),
    ],
)
def test_refused_launcher_flags_say_what_to_use(flags, why):
    with pytest.raises(ValidationError, match=re.escape(why)):
        validate_launcher_flags(flags)


@pytest.mark.parametrize("value", ["$(id)", "`id`", "a;b", "x'y", 'x"y', "a|b", "a&b", "a>b", "*"])
def test_plain_container_env_values_refuse_what_a_workers_shell_would_interpret(value):
    from catalog.validators import validate_container_env

    with pytest.raises(ValidationError, match=r"worker.{1,3}s shell unquoted"):
        validate_container_env({"SOME_VAR": value})
    validate_container_env({"SOME_VAR": "safe-1.0,a=b:c/d@e+f%g"})
