"""`manage.py catalog import-recipes DIR`: the launcher's `recipes/*.yaml` as catalog entries.

A recipe (read by the launcher's `run-recipe.py`) is a YAML mapping: `name`, `container` (the image), `command` (a
`vllm serve MODEL ...` template whose `{placeholders}` are filled from `defaults` with Python's `str.format`),
optional `model`, `mods`, `env`, `defaults`, `cluster_only` / `solo_only`, `build_args`, `description`,
`recipe_version`. `run-recipe.py` forces `tensor_parallel` to 1 in solo mode, and drops
`--distributed-executor-backend` unless Ray is asked for; the import does the same.

The flags Spark Control owns become fields (`--served-model-name`, `-tp`, the knobs) or are dropped (`--port`,
`--host`, `--distributed-executor-backend`); everything else stays in `vllm_args`, in order.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from catalog.services import CatalogImportError, ImportReport, catalog_import, catalog_import_plan
from catalog.validators import vllm_option_name

KNOWN_KEYS = {
    "recipe_version",
    "name",
    "description",
    "model",
    "container",
    "build_args",
    "mods",
    "defaults",
    "env",
    "command",
    "cluster_only",
    "solo_only",
}
MAX_NODES = 2
# Long options that take one value and become (or are dropped from) catalog fields, by canonical name.
DROPPED = {"port", "host", "distributed-executor-backend"}
KNOBS = {"gpu-memory-utilization": float, "max-model-len": int, "max-num-seqs": int}
PARALLEL = {"-tp": "tensor-parallel-size", "-pp": "pipeline-parallel-size", "-dp": "data-parallel-size"}
HUMAN_INT_RE = re.compile(r"^(\d+)([kKmMgG]?)$")


class RecipeError(ValueError):
    """One problem with one recipe field."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")


@dataclass
class RecipeImport:
    """What an import-recipes run did, and the recipes it found."""

    report: ImportReport
    files: list[str] = field(default_factory=list)


def recipe_key(path: Path) -> str:
    """The catalog key of a recipe file: its name without `.yaml`, dots made dashes (keys are slugs)."""
    return path.stem.replace(".", "-").lower()


def _human_int(text: str) -> int:
    match = HUMAN_INT_RE.match(text)
    if not match:
        raise ValueError(text)
    number, suffix = int(match.group(1)), match.group(2)
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}[suffix]
    return number * scale


def recipe_to_entry(*, key: str, document: Any) -> tuple[dict[str, Any], list[RecipeError]]:
    """A recipe as a catalog entry mapping for `catalog_import`, and every problem found in it."""
    problems: list[RecipeError] = []
    if not isinstance(document, dict):
        return {}, [RecipeError("recipe", "must be a YAML mapping")]
    unknown = sorted(set(map(str, document)) - KNOWN_KEYS)
    if unknown:
        problems.append(RecipeError("recipe", f"unknown field(s): {', '.join(unknown)}"))
    for required in ("name", "container", "command"):
        if not document.get(required):
            problems.append(RecipeError(required, "this field is required"))
    entry: dict[str, Any] = {"key": key, "name": str(document.get("name") or key)[:128]}
    if document.get("container"):
        entry["image"] = str(document["container"])
    mods = document.get("mods") or []
    if not isinstance(mods, list):
        problems.append(RecipeError("mods", "must be a list"))
    else:
        entry["mods"] = [str(mod) for mod in mods]
    env = document.get("env") or {}
    if not isinstance(env, dict):
        problems.append(RecipeError("env", "must be a mapping"))
    else:
        # YAML reads `1` as a number; run-recipe.py writes every value into the environment as text.
        entry["container_env"] = {str(k): v if isinstance(v, str) else str(v) for k, v in env.items()}
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(RecipeError("defaults", "must be a mapping"))
        defaults = {}
    cluster_only = document.get("cluster_only") is True
    solo_only = document.get("solo_only") is True
    if cluster_only and solo_only:
        problems.append(RecipeError("cluster_only", "a recipe cannot be both cluster_only and solo_only"))
    params = dict(defaults)
    if solo_only:
        params["tensor_parallel"] = 1  # as run-recipe.py does in solo mode
    command = document.get("command")
    if not isinstance(command, str) or not command:
        return entry, problems
    try:
        text = command.format(**params)
    except KeyError as exc:
        problems.append(RecipeError("command", f"placeholder {{{exc.args[0]}}} has no value in defaults"))
        return entry, problems
    except (ValueError, IndexError) as exc:
        problems.append(RecipeError("command", f"cannot fill the placeholders: {exc}"))
        return entry, problems
    try:
        words = shlex.split(text.replace("\\\n", " "), comments=True)
    except ValueError as exc:
        problems.append(RecipeError("command", f"cannot split it into words: {exc}"))
        return entry, problems
    if words[:2] != ["vllm", "serve"] or len(words) < 3 or words[2].startswith("-"):
        problems.append(RecipeError("command", "must start with `vllm serve MODEL`"))
        return entry, problems
    entry["repo"] = words[2]
    sizes = {"tensor-parallel-size": 1, "pipeline-parallel-size": 1, "data-parallel-size": 1}
    knobs: dict[str, Any] = {"gpu_memory_utilization": None, "max_model_len": None, "max_num_seqs": None}
    served_name = ""
    rest: list[str] = []
    index = 3
    while index < len(words):
        word = words[index]
        index += 1
        name = vllm_option_name(word)
        if name is None and word.split("=", 1)[0].lower() in PARALLEL:
            name = PARALLEL[word.split("=", 1)[0].lower()]
        takes = name in DROPPED or name in KNOBS or name in sizes or name == "served-model-name"
        if not takes:
            rest.append(word)
            continue
        if "=" in word:
            value = word.split("=", 1)[1]
        elif index < len(words):
            value = words[index]
            index += 1
        else:
            problems.append(RecipeError("command", f"{word} has no value"))
            continue
        if name in DROPPED:
            continue
        if name == "served-model-name":
            served_name = value
        elif name in sizes:
            try:
                sizes[name] = int(value)
            except ValueError:
                problems.append(RecipeError("command", f"{word} {value!r} is not a whole number"))
        else:
            try:
                knobs[name.replace("-", "_")] = KNOBS[name](value) if KNOBS[name] is float else _human_int(value)
            except ValueError:
                # A value the knob cannot hold (`--max-model-len auto`) stays a vLLM flag, for vLLM to judge.
                rest.extend([word] if "=" in word else [word, value])
    needed = sizes["tensor-parallel-size"] * sizes["pipeline-parallel-size"] * sizes["data-parallel-size"]
    if needed > MAX_NODES:
        problems.append(
            RecipeError("command", f"needs {needed} nodes (tensor x pipeline x data parallel); at most {MAX_NODES}")
        )
    elif sizes["pipeline-parallel-size"] > 1 or sizes["data-parallel-size"] > 1:
        problems.append(RecipeError("command", "pipeline or data parallel: Spark Control runs tensor parallel only"))
    nodes = max(sizes["tensor-parallel-size"], 2 if cluster_only else 1)
    if solo_only and nodes > 1:
        problems.append(RecipeError("solo_only", "a solo-only recipe cannot need more than one node"))
    entry["nodes"] = min(nodes, MAX_NODES)
    entry["served_model_name"] = served_name
    entry["vllm_args"] = rest
    tp = sizes["tensor-parallel-size"]
    entry["knobs"] = {**knobs, "tensor_parallel_size": tp if tp != entry["nodes"] else None}
    entry["enabled"] = True
    return entry, problems


def recipes_read(*, directory: Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Every `*.yaml` / `*.yml` directly in `directory` as (entries, labels, errors)."""
    entries: list[dict[str, Any]] = []
    labels: list[str] = []
    errors: list[str] = []
    paths = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not paths:
        errors.append(f"{directory}: no recipe files (*.yaml) found")
    for path in paths:
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            errors.append(f"{path.name}: recipe: cannot read it: {exc}")
            continue
        entry, problems = recipe_to_entry(key=recipe_key(path), document=document)
        errors.extend(f"{path.name}: {problem}" for problem in problems)
        if not problems:
            entries.append(entry)
            labels.append(path.name)
    return entries, labels, errors


def catalog_import_recipes(*, directory: Path) -> RecipeImport:
    """Import every recipe of `directory`, all or nothing; CatalogImportError lists every problem (file, field)."""
    entries, labels, errors = recipes_read(directory=directory)
    _, invalid = catalog_import_plan(entries=entries, labels=labels)
    errors.extend(invalid)
    if errors:
        raise CatalogImportError(errors)
    return RecipeImport(report=catalog_import(entries=entries, labels=labels), files=labels)
