"""The cluster's topology: Spark hosts, the cluster-wide settings row, and the services on the boxes."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q


class Role(models.TextChoices):
    HEAD = "head", "head"
    WORKER = "worker", "worker"


def validate_host_key(value: str) -> None:
    """A pinned host key in known_hosts form: `<type> <base64>`."""
    parts = value.split()
    if len(parts) != 2 or not parts[0].startswith(("ssh-", "ecdsa-")) or not parts[1].startswith("AAAA"):
        raise ValidationError("a host key looks like 'ssh-ed25519 AAAA...' (type and base64 key)")


class SparkHost(models.Model):
    """One DGX Spark box reached over SSH, with its host key pinned."""

    name = models.SlugField(max_length=64, unique=True)
    address = models.CharField(max_length=255, help_text="Host name or IP that Spark Control SSHes to.")
    cluster_ip = models.GenericIPAddressField(
        null=True, blank=True, help_text="IP in the launcher's node list (-n); blank: the address."
    )
    ssh_port = models.PositiveIntegerField(default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    ssh_user = models.CharField(max_length=64, default="root")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.HEAD)
    key_path = models.CharField(max_length=1024, blank=True, help_text="Private key file; blank: SPARKCONTROL_SSH_KEY.")
    host_key = models.TextField(
        blank=True, validators=[validate_host_key], help_text="Pinned host key; set with `manage.py spark trust NAME`."
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["role", "name"]
        constraints = [
            models.UniqueConstraint(fields=["role"], condition=Q(role="head", enabled=True), name="one_enabled_head"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.role})"

    @property
    def launcher_ip(self) -> str:
        return self.cluster_ip or self.address


class ClusterSettings(models.Model):
    """The single row of cluster-wide knobs edited at run time; environment variables give first values."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    vllm_port = models.PositiveIntegerField(
        "vLLM port",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
        help_text="Blank: 8888.",
    )
    vllm_container = models.CharField(
        "vLLM container",
        max_length=64,
        blank=True,
        help_text="Blank: vllm_node.",
        validators=[RegexValidator(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", "a docker container name")],
    )
    launcher_path = models.CharField(max_length=1024, default="~/spark-vllm-docker/launch-cluster.sh")
    launcher_config = models.CharField(max_length=1024, blank=True, help_text="Optional --config .env file.")
    disabled_services = models.CharField(
        max_length=1024, blank=True, help_text="Comma-separated service keys to hide and never probe."
    )
    swap_timeout_s = models.PositiveIntegerField("swap timeout (s)", default=1800, validators=[MinValueValidator(10)])
    hf_home = models.CharField("HF home", max_length=1024, blank=True, help_text="Blank: ~/.cache/huggingface.")

    DEFAULT_VLLM_PORT = 8888
    DEFAULT_CONTAINER = "vllm_node"

    class Meta:
        verbose_name = "cluster settings"
        verbose_name_plural = "cluster settings"
        constraints = [models.CheckConstraint(name="cluster_settings_singleton", condition=Q(id=1))]

    def __str__(self) -> str:
        return "Cluster settings"

    @property
    def effective_vllm_port(self) -> int:
        return self.vllm_port or self.DEFAULT_VLLM_PORT

    @property
    def effective_container(self) -> str:
        return self.vllm_container or self.DEFAULT_CONTAINER

    @property
    def disabled_service_keys(self) -> set[str]:
        return {key.strip() for key in self.disabled_services.split(",") if key.strip()}


class ServiceKind(models.TextChoices):
    VLLM = "vllm", "vLLM"
    EMBEDDINGS = "embeddings", "OpenAI-style embeddings"
    QDRANT = "qdrant", "Qdrant"
    STT = "stt", "speech-to-text"
    TTS = "tts", "text-to-speech"
    HTTP = "http", "plain HTTP"


class Service(models.Model):
    """A service on the boxes shown as a tile and probed; built-in or from services-overrides.yaml."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=128)
    kind = models.CharField(max_length=16, choices=ServiceKind.choices)
    node = models.CharField(max_length=64, blank=True, help_text="Role (head/worker) or host name it runs on.")
    url = models.CharField(max_length=512, blank=True, help_text="Base URL; blank: http://<node address>:<port>.")
    port = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
        help_text="Blank for the head vLLM: the cluster's vLLM port.",
    )
    health_path = models.CharField(max_length=256, blank=True)
    expected_status = models.PositiveSmallIntegerField(default=200)
    models_served = models.JSONField(default=list, blank=True, help_text="Model names this service answers for.")
    read_only = models.BooleanField(default=False, help_text="Monitored only; Spark Control never changes it.")
    enabled = models.BooleanField(default=True, help_text="Off: no tile, never probed.")
    max_in_flight = models.PositiveIntegerField(default=0, help_text="Gateway cap; 0 means no cap.")
    source = models.CharField(max_length=16, default="builtin", editable=False)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key
