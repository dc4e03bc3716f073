"""Request and response shapes of the catalog API."""

from __future__ import annotations

from typing import Any

from ninja import Schema
from pydantic import ConfigDict, Field


class Knobs(Schema):
    model_config = ConfigDict(extra="forbid")

    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    max_model_len: int | None = Field(default=None, ge=16)
    tensor_parallel_size: int | None = Field(default=None, ge=1, le=2)
    max_num_seqs: int | None = Field(default=None, ge=1)


class ModelOut(Schema):
    key: str
    name: str
    repo: str | None
    local_path: str | None
    local: bool
    served_model_name: str
    nodes: int
    vllm_args: list[str]
    knobs: Knobs
    enabled: bool
    image: str = Field(description="The launcher's -t; empty: the launcher's default image.")
    mods: list[str] = Field(description="The launcher's --apply-mod paths, in order.")
    env: dict[str, str] = Field(description="Non-secret container variables. Secret ones are never returned.")
    secret_names: list[str] = Field(description="Names of the model's secret container variables (write-only).")
    launcher_args: list[str] = Field(description="Extra launcher options, as argv words.")


class LauncherFieldsIn(Schema):
    """The launcher's fields, each optional: on create absent means empty, on update absent means unchanged.

    `env` values are strings, or `{"value": "...", "secret": true}` for a secret variable; `secrets` is the same for
    secret variables alone (`null` removes one). `container_env` and `launcher_flags` are accepted as the catalog's
    names for `env` and `launcher_args`."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(default=None, max_length=255)
    mods: list[str] | None = Field(default=None, max_length=32)
    env: dict[str, Any] | None = Field(default=None, max_length=64)
    container_env: dict[str, Any] | None = Field(default=None, max_length=64)
    secrets: dict[str, str | None] | None = Field(default=None, max_length=64)
    launcher_args: list[str] | None = Field(default=None, max_length=128)
    launcher_flags: list[str] | None = Field(default=None, max_length=128)


class ModelIn(LauncherFieldsIn):
    key: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=128)
    repo: str | None = Field(default=None, max_length=200)
    local_path: str | None = Field(default=None, max_length=1024)
    served_model_name: str = Field(default="", max_length=128)
    nodes: int = Field(default=1, ge=1, le=2)
    vllm_args: list[str] = Field(default_factory=list, max_length=128)
    knobs: Knobs = Field(default_factory=Knobs)
    enabled: bool = True


class KnobsIn(LauncherFieldsIn):
    knobs: Knobs = Field(default_factory=Knobs)
    vllm_args: list[str] | None = Field(default=None, max_length=128)
