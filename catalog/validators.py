"""Validation of what people and files put into the catalog: HF repo ids, local paths, vLLM flags, and the
launcher's own options (image, mods, container environment, extra launcher flags).

Two programs read what the catalog holds, and each has its own way of misreading it:

- vLLM's `FlexibleArgumentParser` (vllm/utils/argparse_utils.py) rewrites `_` to `-` in a long option's name
  (between `--` and the first `.`), turns `--name.key value` into a JSON argument `--name`, and is a plain argparse
  parser otherwise: neither it nor the `serve` sub-parser turns off `allow_abbrev`, so a unique prefix of a long
  option (`--served`, `--por=1`) and of a single-dash one (`-t 2` for `-tp 2`) is that option. A flag Spark Control
  owns is therefore refused in every spelling that parser maps to it, and, as a margin, in any letter case.
- `launch-cluster.sh` appends `-e`/`-v` values and `VLLM_SPARK_EXTRA_DOCKER_ARGS` to `docker run` unquoted (so they
  are word-split) and sends the worker's `docker run` through `ssh` as one string (so the worker's shell reads it
  again). Values that reach those places must be single, shell-inert words.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
MAX_ARG_LENGTH = 4096
MAX_ARGS = 128

# --- vLLM flags --------------------------------------------------------------------------------------------------

# Long options Spark Control or the launcher sets on every launch, by their canonical name, with what to do instead.
OWNED_LONG_FLAGS: dict[str, str] = {
    "port": "Spark Control sets the port itself",
    "host": "Spark Control sets the host itself",
    "served-model-name": "use the served_model_name field",
    "tensor-parallel-size": "use the tensor_parallel_size knob (it must fit the model's nodes)",
    "pipeline-parallel-size": "Spark Control derives the parallel layout from the model's nodes",
    "data-parallel-size": "Spark Control derives the parallel layout from the model's nodes",
    "distributed-executor-backend": "the launcher chooses the multi-node backend",
    "nnodes": "the launcher sets it on each node in multi-node mode",
    "node-rank": "the launcher sets it on each node in multi-node mode",
    "master-addr": "the launcher sets it on each node in multi-node mode",
    "master-port": "the launcher sets it on each node in multi-node mode",
    "headless": "the launcher sets it on the worker in multi-node mode",
    "model": "use the repo or local_path field",
    "config": "a config file can set any flag; put the flags in vllm_args",
    "uds": "Spark Control serves and probes vLLM over TCP",
    "help": "it prints the help and exits",
}
# Single-dash options vLLM defines for owned settings (argparse also accepts `-tp=2` and a unique prefix `-t`).
OWNED_SHORT_FLAGS: dict[str, str] = {
    "-tp": OWNED_LONG_FLAGS["tensor-parallel-size"],
    "-pp": OWNED_LONG_FLAGS["pipeline-parallel-size"],
    "-dp": OWNED_LONG_FLAGS["data-parallel-size"],
    "-h": OWNED_LONG_FLAGS["help"],
}


def vllm_option_name(arg: str) -> str | None:
    """The canonical long-option name vLLM's parser reads from `arg` (`--Served_Model_Name.x=1` gives
    `served-model-name`), or None when `arg` is not a long option."""
    if not arg.startswith("--") or arg == "--":
        return None
    name = arg[2:].split("=", 1)[0].split(".", 1)[0]
    return name.replace("_", "-").lower().rstrip("+")


def owned_vllm_flag(arg: str) -> tuple[str, str] | None:
    """(the owned flag, what to do instead) when `arg` is an owned flag in any spelling vLLM maps to it."""
    name = vllm_option_name(arg)
    if name is not None:
        if not name:
            return None
        for owned, advice in OWNED_LONG_FLAGS.items():
            # argparse takes a unique prefix for the whole option; no real vLLM option is a prefix of an owned one,
            # so every prefix is either that owned flag or an ambiguity error: both are refused.
            if owned.startswith(name):
                return f"--{owned}", advice
        return None
    if arg.startswith("-") and len(arg) > 1 and not arg[1].isdigit():
        word = arg.split("=", 1)[0].lower()
        for owned, advice in OWNED_SHORT_FLAGS.items():
            # `-tp`, `-tp=2`, `-tp2` (a value attached to a short option), and the prefix `-t`; not `-dpl`, which
            # is an option of its own.
            rest = word[len(owned) :] if word.startswith(owned) else None
            if (rest is not None and (not rest or rest.isdigit())) or (len(word) >= 2 and owned.startswith(word)):
                return owned, advice
    return None


def validate_vllm_args(value: object) -> None:
    """A list of strings without the flags Spark Control or the launcher owns, in any spelling vLLM accepts."""
    if not isinstance(value, list):
        raise ValidationError("vLLM flags must be a list of strings", code="vllm_args")
    if len(value) > MAX_ARGS:
        raise ValidationError(f"at most {MAX_ARGS} vLLM arguments", code="vllm_args")
    problems: list[str] = []
    for index, arg in enumerate(value):
        if not isinstance(arg, str):
            problems.append(f"argument {index + 1} is not a string")
            continue
        if len(arg) > MAX_ARG_LENGTH:
            problems.append(f"argument {index + 1} is longer than {MAX_ARG_LENGTH} characters")
            continue
        if _has_control(arg):
            problems.append(f"argument {index + 1} contains a control character (NUL, newline...)")
            continue
        if arg == "--":
            problems.append("'--' would end vLLM's options and make the rest positional arguments")
            continue
        owned = owned_vllm_flag(arg)
        if owned is not None:
            flag, advice = owned
            shown = arg.split("=", 1)[0]
            spelled = "" if shown == flag else f" (spelled {shown})"
            problems.append(f"{flag}{spelled} cannot be given as a vLLM flag: {advice}")
    if problems:
        raise ValidationError([ValidationError(p, code="vllm_args") for p in problems])


def validate_served_model_name(value: str) -> None:
    """A name vLLM takes as the value of `--served-model-name`: not a flag, one word, printable."""
    if not value:
        return
    if value.startswith("-"):
        raise ValidationError(f"{value!r} starts with '-' and would be read as a flag", code="served_model_name")
    if _has_control(value) or any(ch.isspace() for ch in value):
        raise ValidationError(f"{value!r} contains whitespace or a control character", code="served_model_name")


# --- sources -----------------------------------------------------------------------------------------------------


def validate_repo(value: str) -> None:
    """A Hugging Face repo id `org/name`."""
    if not REPO_RE.match(value) or ".." in value:
        raise ValidationError(f"{value!r} is not a Hugging Face repo id of the form org/name", code="repo")


def local_model_roots() -> list[str]:
    """The allowed roots for local models, normalised, from LOCAL_MODEL_ROOTS."""
    return [posixpath.normpath(root) for root in settings.SPARKCONTROL["LOCAL_MODEL_ROOTS"] if root.startswith("/")]


# Characters a shell treats specially: the worker's `docker run` is a string the worker's shell parses.
SHELL_SPECIAL = set("$`\"'\\;&|<>()*?[]{}!#~^")


def validate_local_path(value: str, roots: Iterable[str] | None = None) -> None:
    """An absolute, normalised path strictly inside one of the allowed roots, usable in a docker `-v` mount.

    The remote checks (the directory exists on each node, symlinks resolve inside a root) belong to the
    swap pre-flight; this is the part that can be decided without SSH.
    """
    if not value:
        raise ValidationError("the local path is empty", code="local_path")
    if _has_control(value):
        raise ValidationError("the local path contains a control character or newline", code="local_path")
    if any(ch.isspace() for ch in value):
        raise ValidationError(
            f"{value!r} contains whitespace: the launcher word-splits VLLM_SPARK_EXTRA_DOCKER_ARGS", code="local_path"
        )
    if ":" in value:
        raise ValidationError(
            f"{value!r} contains ':', which would change the docker mount's mode (-v path:path:ro)", code="local_path"
        )
    if "," in value:
        raise ValidationError(f"{value!r} contains ',', which docker's mount syntax cannot carry", code="local_path")
    special = sorted(set(value) & SHELL_SPECIAL)
    if special:
        raise ValidationError(
            f"{value!r} contains {''.join(special)!r}: the worker's shell would read it in the launcher's docker run",
            code="local_path",
        )
    if not value.startswith("/"):
        raise ValidationError(f"{value!r} is not absolute: it must start with /", code="local_path")
    if value.startswith("//") or "//" in value:
        raise ValidationError(f"{value!r} has a doubled slash", code="local_path")
    if value != "/" and value.endswith("/"):
        raise ValidationError(f"{value!r} has a trailing slash", code="local_path")
    parts = value.split("/")[1:]
    if any(part in (".", "..") for part in parts):
        raise ValidationError(f"{value!r} has a '.' or '..' part", code="local_path")
    if posixpath.normpath(value) != value:
        raise ValidationError(f"{value!r} is not normalised", code="local_path")
    allowed = list(roots) if roots is not None else local_model_roots()
    for root in allowed:
        root = posixpath.normpath(root)
        # A root's sibling with a shared prefix (/models-evil for /models) is not inside it.
        if value != root and value.startswith(root.rstrip("/") + "/"):
            return
    shown = ", ".join(allowed) or "(none configured: set LOCAL_MODEL_ROOTS)"
    raise ValidationError(f"{value!r} is not inside an allowed local-model root: {shown}", code="local_path")


# --- the launcher: image, mods, container environment --------------------------------------------------------------

# Docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@algorithm:hex].
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?)"
_COMPONENT = r"(?:[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)"
IMAGE_RE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?$"
)


def validate_image(value: str) -> None:
    """A docker image reference for the launcher's `-t` (name[:tag][@sha256:digest]); blank is the default image."""
    if not value:
        return
    if len(value) > 255:
        raise ValidationError("an image reference is at most 255 characters", code="image")
    if _has_control(value) or any(ch.isspace() for ch in value):
        raise ValidationError(f"{value!r} contains whitespace or a control character", code="image")
    if not IMAGE_RE.match(value):
        raise ValidationError(
            f"{value!r} is not a docker image reference (name[:tag][@sha256:digest], lower-case name)", code="image"
        )


MOD_RE = re.compile(r"^[A-Za-z0-9._+@%=/-]+$")
MAX_MODS = 32


def validate_mods(value: object) -> None:
    """`--apply-mod` paths: absolute, or relative to the launcher's directory (`mods/fix-xyz`); one safe word each."""
    if not isinstance(value, list):
        raise ValidationError("mods must be a list of paths", code="mods")
    if len(value) > MAX_MODS:
        raise ValidationError(f"at most {MAX_MODS} mods", code="mods")
    problems: list[str] = []
    for index, mod in enumerate(value, start=1):
        if not isinstance(mod, str) or not mod:
            problems.append(f"mod {index} is not a non-empty string")
            continue
        if len(mod) > 1024:
            problems.append(f"mod {index} is longer than 1024 characters")
        elif _has_control(mod) or any(ch.isspace() for ch in mod):
            problems.append(f"mod {index} ({mod!r}) contains whitespace or a control character")
        elif mod.startswith("-"):
            problems.append(f"mod {index} ({mod!r}) starts with '-'")
        elif not MOD_RE.match(mod):
            problems.append(f"mod {index} ({mod!r}) contains a character the launcher's shell commands cannot carry")
        elif ".." in mod.split("/"):
            problems.append(f"mod {index} ({mod!r}) has a '..' part")
        elif "" in mod.split("/")[1:]:
            problems.append(f"mod {index} ({mod!r}) has an empty part ('//' or a trailing '/')")
    if problems:
        raise ValidationError([ValidationError(p, code="mods") for p in problems])


ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What launch-cluster.sh sets itself, per node, in get_env_flags (2026-08-10); `docker run` takes the last `-e` of a
# name, and the catalog's come after these, so one value would be given to both nodes.
LAUNCHER_ENV_NAMES = frozenset(
    {
        "VLLM_HOST_IP",
        "RAY_NODE_IP_ADDRESS",
        "RAY_OVERRIDE_NODE_IP_ADDRESS",
        "MN_IF_NAME",
        "UCX_NET_DEVICES",
        "NCCL_SOCKET_IFNAME",
        "NCCL_IB_HCA",
        "NCCL_IB_DISABLE",
        "OMPI_MCA_btl_tcp_if_include",
        "GLOO_SOCKET_IFNAME",
        "TP_SOCKET_IFNAME",
        "RAY_memory_monitor_refresh_ms",
        "RAY_num_prestart_python_workers",
        "RAY_object_store_memory",
    }
)
SECRET_ENV_NAMES = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})
MAX_ENV = 64
MAX_ENV_VALUE = 4096


def validate_env_name(name: object, *, secret: bool = False) -> None:
    """A container variable name the catalog may set: shell syntax, not one the launcher sets per node."""
    if not isinstance(name, str) or not ENV_NAME_RE.match(name) or len(name) > 128:
        raise ValidationError(f"{name!r} is not a variable name (letters, digits, _; not starting with a digit)")
    if name in LAUNCHER_ENV_NAMES:
        raise ValidationError(f"{name} is set by the launcher itself on each node")
    if name == "HF_HOME":
        raise ValidationError("HF_HOME: the launcher mounts the Hugging Face cache at the container's default place")
    if not secret and name in SECRET_ENV_NAMES:
        raise ValidationError(f"{name} is a secret: give it as a secret variable, not in the container environment")


# Characters a shell gives meaning to: the launcher's `-e NAME=value` reaches the worker's `docker run` through
# `ssh worker "docker run ... -e NAME=value ..."`, unquoted.
ENV_VALUE_SHELL_CHARS = frozenset("$`'\"\\;&|<>()*?[]{}!#~")


def validate_env_value(value: object, *, secret: bool = False) -> None:
    """A value for one container variable: a string, bounded, no control characters (and, unless secret, no
    whitespace: the launcher word-splits its `-e` values)."""
    if not isinstance(value, str):
        raise ValidationError("the value must be a string")
    if len(value) > MAX_ENV_VALUE:
        raise ValidationError(f"the value is longer than {MAX_ENV_VALUE} characters")
    if _has_control(value):
        raise ValidationError("the value contains a control character (NUL, newline...)")
    if not secret and any(ch.isspace() for ch in value):
        raise ValidationError("the value contains whitespace, which the launcher's -e would split")
    if not secret and (bad := sorted(set(value) & ENV_VALUE_SHELL_CHARS)):
        raise ValidationError(
            f"the value contains {' '.join(bad)}: the launcher hands a worker's docker run to the worker's shell "
            "unquoted, which would interpret it (store such a value as a secret)"
        )


def validate_container_env(value: object) -> None:
    """A mapping {NAME: value} of non-secret container variables."""
    if not isinstance(value, dict):
        raise ValidationError("the container environment must be a mapping of NAME to value", code="container_env")
    if len(value) > MAX_ENV:
        raise ValidationError(f"at most {MAX_ENV} variables", code="container_env")
    problems: list[str] = []
    for name, item in value.items():
        for check, arg in ((validate_env_name, name), (validate_env_value, item)):
            try:
                check(arg)
            except ValidationError as exc:
                problems.append(f"{name}: {exc.messages[0]}")
                break
    if problems:
        raise ValidationError([ValidationError(p, code="container_env") for p in problems])


# --- the launcher: extra options -------------------------------------------------------------------------------------

IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
INT_RE = re.compile(r"^[1-9][0-9]{0,6}$")
EARLYOOM_ARGS_RE = re.compile(r"^[A-Za-z0-9 ,.=_%-]{1,256}$")
VOLUME_RE = re.compile(r"^(/[A-Za-z0-9._+@%=/-]*):(/[A-Za-z0-9._+@%=/-]*)(?::([A-Za-z,]+))?$")
VOLUME_OPTIONS = {"ro", "rw", "z", "Z", "shared", "slave", "private", "rshared", "rslave", "rprivate", "nocopy"}
NCCL_DEBUG_LEVELS = ("VERSION", "WARN", "INFO", "TRACE")


def _check_iface(value: str) -> str | None:
    return None if IFACE_RE.match(value) else "is not a network interface name"


def _check_int(value: str) -> str | None:
    return None if INT_RE.match(value) else "is not a positive whole number"


def _check_earlyoom(value: str) -> str | None:
    if not EARLYOOM_ARGS_RE.match(value):
        return "may hold only letters, digits, spaces and , . = _ % - (the launcher word-splits it)"
    return None


def _check_volume(value: str) -> str | None:
    match = VOLUME_RE.match(value)
    if not match:
        return "is not HOST_PATH:CONTAINER_PATH[:OPTIONS] with absolute paths and no shell characters"
    if any(".." in part.split("/") for part in match.group(1, 2)):
        return "has a '..' part"
    options = match.group(3)
    if options and not set(options.split(",")) <= VOLUME_OPTIONS:
        return f"has unknown mount options (known: {', '.join(sorted(VOLUME_OPTIONS))})"
    return None


@dataclass(frozen=True)
class LauncherOption:
    """One option of launch-cluster.sh the catalog may pass: how many words it takes and how to check them."""

    names: tuple[str, ...]
    arity: str  # "0", "1" or "?" (one value only when it is one of `choices`)
    check: Callable[[str], str | None] | None = None
    choices: tuple[str, ...] = ()
    equals_form: bool = False  # the launcher also parses OPTION=VALUE as one word
    non_privileged_only: bool = False


# Read from the newest launcher (2026-08-10) argument loop; every one of these exists there.
LAUNCHER_OPTIONS: tuple[LauncherOption, ...] = (
    LauncherOption(("--eth-if",), "1", _check_iface),
    LauncherOption(("--ib-if",), "1", _check_iface),
    LauncherOption(("--nccl-debug",), "?", choices=NCCL_DEBUG_LEVELS),
    LauncherOption(("-j",), "1", _check_int),
    LauncherOption(("-v", "--volume"), "1", _check_volume, equals_form=True),
    LauncherOption(("--no-cache-dirs",), "0"),
    LauncherOption(("--keep-entrypoint",), "0"),
    LauncherOption(("--earlyoom",), "0"),
    LauncherOption(("--earlyoom-args",), "1", _check_earlyoom, equals_form=True),
    LauncherOption(("--non-privileged",), "0"),
    LauncherOption(("--mem-limit-gb",), "1", _check_int, non_privileged_only=True),
    LauncherOption(("--mem-swap-limit-gb",), "1", _check_int, non_privileged_only=True),
    LauncherOption(("--pids-limit",), "1", _check_int, non_privileged_only=True),
    LauncherOption(("--shm-size-gb",), "1", _check_int, non_privileged_only=True),
)
_LAUNCHER_BY_NAME = {name: option for option in LAUNCHER_OPTIONS for name in option.names}

# Options the swap engine owns, with the catalog field (or the reason) to give instead.
ENGINE_LAUNCHER_OPTIONS: dict[str, str] = {
    "-n": "the nodes are chosen by Spark Control from the model's nodes field and the cluster settings",
    "--nodes": "the nodes are chosen by Spark Control from the model's nodes field and the cluster settings",
    "--solo": "the nodes are chosen by Spark Control from the model's nodes field",
    "-d": "Spark Control always starts the launcher in daemon mode",
    "--name": "the container name is a cluster setting",
    "--config": "the launcher's .env file is a cluster setting",
    "-t": "use the image field",
    "-e": "use the container environment (container_env) or a secret variable",
    "--env": "use the container environment (container_env) or a secret variable",
    "--apply-mod": "use the mods field",
    "--launch-script": "Spark Control runs the model's vLLM command itself",
    "--ray": "Spark Control chooses Ray or no-Ray from the launcher's capabilities",
    "--no-ray": "Spark Control chooses Ray or no-Ray from the launcher's capabilities",
    "--check-config": "it only checks the configuration and launches nothing",
    "--setup": "autodiscovery prompts and rewrites the launcher's .env",
    "--discover": "autodiscovery prompts and rewrites the launcher's .env",
    "-p": "Spark Control serves on the host network; publishing ports is solo-only and hides the port",
    "--publish": "Spark Control serves on the host network; publishing ports is solo-only and hides the port",
    "-h": "it prints the help and exits",
    "--help": "it prints the help and exits",
    "--master-port": "the coordination port is Spark Control's (engine-owned)",
    "--head-port": "the coordination port is Spark Control's (engine-owned)",
    "start": "Spark Control chooses the launcher's action",
    "stop": "Spark Control chooses the launcher's action",
    "status": "Spark Control chooses the launcher's action",
    "exec": "Spark Control chooses the launcher's action",
}


def validate_launcher_flags(value: object) -> None:
    """Extra launcher options as argv words: each one on the allowlist, with its values, checked."""
    if not isinstance(value, list):
        raise ValidationError("launcher flags must be a list of strings", code="launcher_flags")
    if len(value) > MAX_ARGS:
        raise ValidationError(f"at most {MAX_ARGS} launcher arguments", code="launcher_flags")
    problems: list[str] = []
    seen: set[str] = set()
    words = list(value)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not isinstance(word, str):
            problems.append(f"argument {index} is not a string")
            continue
        if _has_control(word) or len(word) > MAX_ARG_LENGTH:
            problems.append(f"argument {index} contains a control character or is too long")
            continue
        name, has_equals, attached = word.partition("=")
        if name in ENGINE_LAUNCHER_OPTIONS:
            problems.append(f"{name} cannot be given as a launcher flag: {ENGINE_LAUNCHER_OPTIONS[name]}")
            continue
        option = _LAUNCHER_BY_NAME.get(name)
        if option is None:
            problems.append(f"{word!r} is not a launcher option Spark Control passes through")
            continue
        seen.add(option.names[0])
        if has_equals and not option.equals_form:
            problems.append(f"{name} takes its value as the next argument, not {word!r}")
            continue
        values: list[str] = []
        if has_equals:
            values = [attached]
        elif option.arity == "1":
            if index >= len(words) or not isinstance(words[index], str):
                problems.append(f"{name} needs a value")
                continue
            values = [words[index]]
            index += 1
        elif option.arity == "?" and index < len(words) and words[index] in option.choices:
            values = [words[index]]
            index += 1
        elif option.arity == "?" and index < len(words) and str(words[index]).upper() in option.choices:
            problems.append(f"{name}: the level must be written in capitals ({', '.join(option.choices)})")
            index += 1
            continue
        for item in values:
            if _has_control(item):
                problems.append(f"{name}: its value contains a control character")
            elif option.check is not None and (problem := option.check(item)) is not None:
                problems.append(f"{name}: {item!r} {problem}")
    if "--earlyoom" in seen or "--earlyoom-args" in seen:
        if "--keep-entrypoint" in seen:
            problems.append("--earlyoom cannot be combined with --keep-entrypoint (the launcher refuses it)")
    limited = sorted(o.names[0] for o in LAUNCHER_OPTIONS if o.non_privileged_only and o.names[0] in seen)
    if limited and "--non-privileged" not in seen:
        problems.append(f"{', '.join(limited)} only take effect with --non-privileged")
    if problems:
        raise ValidationError([ValidationError(p, code="launcher_flags") for p in problems])


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)
