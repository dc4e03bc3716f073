"""Request and response shapes of the catalog API."""

from __future__ import annotations

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


class ModelIn(Schema):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=128)
    repo: str | None = Field(default=None, max_length=200)
    local_path: str | None = Field(default=None, max_length=1024)
    served_model_name: str = Field(default="", max_length=128)
    nodes: int = Field(default=1, ge=1, le=2)
    vllm_args: list[str] = Field(default_factory=list, max_length=128)
    knobs: Knobs = Field(default_factory=Knobs)
    enabled: bool = True


class KnobsIn(Schema):
    model_config = ConfigDict(extra="forbid")

    knobs: Knobs = Field(default_factory=Knobs)
    vllm_args: list[str] | None = Field(default=None, max_length=128)
