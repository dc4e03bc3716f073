"""The model catalog: what vLLM can be asked to serve."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from catalog.validators import (
    validate_container_env,
    validate_env_name,
    validate_env_value,
    validate_image,
    validate_launcher_flags,
    validate_local_path,
    validate_mods,
    validate_repo,
    validate_served_model_name,
    validate_vllm_args,
)


class ModelEntry(models.Model):
    """One servable model: a Hugging Face repo or a local directory, with the flags vLLM gets for it."""

    key = models.SlugField(max_length=64, unique=True, help_text="Catalog key; the default served model name.")
    name = models.CharField("display name", max_length=128)
    repo = models.CharField(
        max_length=200, blank=True, default="", validators=[validate_repo], help_text="Hugging Face id org/name."
    )
    local_path = models.CharField(
        max_length=1024,
        blank=True,
        default="",
        help_text="Absolute directory on the nodes, inside an allowed local-model root; mounted read-only.",
    )
    served_model_name = models.CharField(
        max_length=128, blank=True, default="", validators=[validate_served_model_name], help_text="Blank: the key."
    )
    nodes = models.PositiveSmallIntegerField(choices=[(1, "1 (head only)"), (2, "2 (head + worker)")], default=1)
    vllm_args = models.JSONField("vLLM flags", default=list, blank=True, validators=[validate_vllm_args])
    gpu_memory_utilization = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.05), MaxValueValidator(1.0)]
    )
    max_model_len = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(16)])
    tensor_parallel_size = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(2)], help_text="Blank: = nodes."
    )
    max_num_seqs = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    image = models.CharField(
        max_length=255,
        blank=True,
        default="",
        validators=[validate_image],
        help_text="Docker image for the launcher's -t (name[:tag][@sha256:digest]). Blank: the launcher's default.",
    )
    mods = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_mods],
        help_text="The launcher's --apply-mod paths, in order: absolute, or relative to the launcher's directory.",
    )
    container_env = models.JSONField(
        "container environment",
        default=dict,
        blank=True,
        validators=[validate_container_env],
        help_text="Non-secret container variables {NAME: value} (the launcher's -e NAME=value).",
    )
    launcher_flags = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_launcher_flags],
        help_text="Extra launcher options as argv words, from an allowlist (e.g. --non-privileged, --eth-if IF).",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    LAUNCHER_FIELDS = ("image", "mods", "container_env", "launcher_flags")
    KNOB_FIELDS = ("gpu_memory_utilization", "max_model_len", "tensor_parallel_size", "max_num_seqs")

    class Meta:
        ordering = ["key"]
        verbose_name = "model"
        constraints = [
            models.CheckConstraint(
                name="model_repo_xor_local_path",
                condition=(Q(repo="") & ~Q(local_path="")) | (~Q(repo="") & Q(local_path="")),
                violation_error_message="Give exactly one of a Hugging Face repo or a local path.",
            ),
            models.CheckConstraint(name="model_nodes_1_or_2", condition=Q(nodes__in=[1, 2])),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def is_local(self) -> bool:
        return bool(self.local_path)

    @property
    def source(self) -> str:
        """What `vllm serve` is given: the repo id or the local path."""
        return self.local_path or self.repo

    @property
    def effective_served_name(self) -> str:
        return self.served_model_name or self.key

    @property
    def effective_tensor_parallel_size(self) -> int:
        return self.tensor_parallel_size or self.nodes

    @property
    def knobs(self) -> dict[str, float | int | None]:
        return {field: getattr(self, field) for field in self.KNOB_FIELDS}

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if bool(self.repo) == bool(self.local_path):
            message = "Give exactly one of a Hugging Face repo or a local path."
            errors["repo" if not self.repo and not self.local_path else "local_path"] = message
        if self.local_path:
            try:
                validate_local_path(self.local_path)
            except ValidationError as exc:
                errors["local_path"] = exc.messages[0]
        if self.tensor_parallel_size and self.tensor_parallel_size > self.nodes:
            errors["tensor_parallel_size"] = (
                f"tensor parallel size {self.tensor_parallel_size} needs {self.tensor_parallel_size} nodes;"
                f" the model has {self.nodes}"
            )
        if self.pk is not None and isinstance(self.container_env, dict) and self.container_env:
            both = sorted(set(self.secrets.values_list("name", flat=True)) & set(self.container_env))
            if both:
                errors["container_env"] = f"{', '.join(both)} also set as secret variable(s); give each in one place"
        if errors:
            raise ValidationError(errors)


class ModelSecret(models.Model):
    """A secret container variable of one model (e.g. a gated model's token); write-only once saved."""

    model = models.ForeignKey(ModelEntry, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=128)
    # Kept in clear: the swap engine must hand it to the containers. Never shown, exported, logged or put on an argv.
    value = models.TextField()

    class Meta:
        ordering = ["model", "name"]
        verbose_name = "secret variable"
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="model_secret_unique_name")]

    def __str__(self) -> str:
        # Never the value: the admin, audit entries and logs print this.
        return f"{self.model.key}: {self.name}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        try:
            validate_env_name(self.name, secret=True)
        except ValidationError as exc:
            errors["name"] = exc.messages[0]
        try:
            validate_env_value(self.value, secret=True)
        except ValidationError as exc:
            errors["value"] = exc.messages[0]
        if not self.value:
            errors["value"] = "a secret needs a value"
        if not errors.get("name") and self.model_id is not None and self.name in (self.model.container_env or {}):
            errors["name"] = f"{self.name} is also in the container environment; give it in one place only"
        if errors:
            raise ValidationError(errors)
