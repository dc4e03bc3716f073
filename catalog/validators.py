"""Validation of what people and files put into the catalog: HF repo ids, local paths, vLLM flags."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# Flags Spark Control sets itself on every launch; a catalog entry must not override them.
OWNED_FLAGS = ("--port", "--host", "--served-model-name")
MAX_ARG_LENGTH = 4096
MAX_ARGS = 128


def validate_repo(value: str) -> None:
    """A Hugging Face repo id `org/name`."""
    if not REPO_RE.match(value) or ".." in value:
        raise ValidationError(f"{value!r} is not a Hugging Face repo id of the form org/name", code="repo")


def local_model_roots() -> list[str]:
    """The allowed roots for local models, normalised, from LOCAL_MODEL_ROOTS."""
    return [posixpath.normpath(root) for root in settings.SPARKCONTROL["LOCAL_MODEL_ROOTS"] if root.startswith("/")]


def validate_local_path(value: str, roots: Iterable[str] | None = None) -> None:
    """An absolute, normalised path strictly inside one of the allowed roots, with no control characters.

    The remote checks (the directory exists on each node, symlinks resolve inside a root) belong to the
    swap pre-flight; this is the part that can be decided without SSH.
    """
    if not value:
        raise ValidationError("the local path is empty", code="local_path")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationError("the local path contains a control character or newline", code="local_path")
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


def validate_vllm_args(value: object) -> None:
    """A list of strings without the flags Spark Control owns (in either `--flag v` or `--flag=v` form)."""
    if not isinstance(value, list):
        raise ValidationError("vLLM flags must be a list of strings", code="vllm_args")
    if len(value) > MAX_ARGS:
        raise ValidationError(f"at most {MAX_ARGS} vLLM arguments", code="vllm_args")
    for index, arg in enumerate(value):
        if not isinstance(arg, str):
            raise ValidationError(f"vLLM argument {index} is not a string", code="vllm_args")
        if len(arg) > MAX_ARG_LENGTH or "\x00" in arg:
            raise ValidationError(f"vLLM argument {index} is too long or contains a NUL byte", code="vllm_args")
        flag = arg.split("=", 1)[0]
        if flag in OWNED_FLAGS:
            raise ValidationError(
                f"{flag} is set by Spark Control itself and cannot be given as a vLLM flag", code="vllm_args"
            )
        if flag in ("-tp", "--tensor-parallel-size"):
            raise ValidationError(
                f"{flag}: use the tensor_parallel_size knob (it must match the node count)", code="vllm_args"
            )
