"""The cluster's topology: Spark hosts, the cluster-wide settings row, and the services on the boxes."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import BaseValidator, MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q


def _between(low: float, high: float) -> list[BaseValidator]:
    """The validators of a number setting that must lie within [low, high]."""
    return [MinValueValidator(low), MaxValueValidator(high)]


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
    ssh_port = models.PositiveIntegerField(default=22, validators=_between(1, 65535))
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
        validators=_between(1, 65535),
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
    probe_status_interval_s = models.PositiveIntegerField(
        "status sweep every (s)", default=15, validators=_between(1, 86400)
    )
    probe_deep_interval_s = models.PositiveIntegerField(
        "deep health sweep every (s)", default=300, validators=_between(10, 86400)
    )
    probe_connectivity_interval_s = models.PositiveIntegerField(
        "connectivity sweep every (s)", default=60, validators=_between(5, 86400)
    )
    probe_timeout_s = models.FloatField(
        "probe timeout (s)",
        default=5.0,
        validators=_between(0.1, 120),
        help_text="Overall deadline of one status or connectivity probe.",
    )
    probe_deep_timeout_s = models.FloatField(
        "deep probe timeout (s)",
        default=15.0,
        validators=_between(0.1, 600),
        help_text="Overall deadline of one deep probe (a one-token completion, an embedding, a synthesis...).",
    )
    engine_wedged_after_s = models.PositiveIntegerField(
        "engine wedged after (s)",
        default=60,
        validators=_between(1, 86400),
        help_text="vLLM is degraded when requests run but no token is generated for this long.",
    )
    probe_history = models.PositiveIntegerField(
        "probe history kept",
        default=100,
        validators=_between(1, 10000),
        help_text="Results kept per service and sweep kind; older ones are pruned on write.",
    )

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


def validate_link(value: str) -> None:
    """An http:// or https:// URL with a host (LAN names without a dot too), no spaces or control characters."""
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationError("a link has no spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValidationError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("give an http:// or https:// URL with a host")


CONTAINER_NAME = RegexValidator(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", "a docker container name")


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
        validators=_between(1, 65535),
        help_text="Blank for the head vLLM: the cluster's vLLM port.",
    )
    health_path = models.CharField(max_length=256, blank=True)
    expected_status = models.PositiveSmallIntegerField(default=200)
    models_served = models.JSONField(default=list, blank=True, help_text="Model names this service answers for.")
    read_only = models.BooleanField(default=False, help_text="Monitored only; Spark Control never changes it.")
    enabled = models.BooleanField(default=True, help_text="Off: no tile, never probed.")
    max_in_flight = models.PositiveIntegerField(default=0, help_text="Gateway cap; 0 means no cap.")
    container = models.CharField(
        max_length=128,
        blank=True,
        validators=[CONTAINER_NAME],
        help_text="Docker container on its node that a restart restarts; blank: not restartable.",
    )
    gpu = models.BooleanField(default=False, help_text="Uses the GPU: a restart waits while the swap lock is held.")
    link = models.CharField(
        max_length=512,
        blank=True,
        validators=[validate_link],
        help_text="Optional http(s) link-out shown on its page.",
    )
    source = models.CharField(max_length=16, default="builtin", editable=False)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    @property
    def is_head_vllm(self) -> bool:
        """The vLLM Spark Control swaps: changed only by a swap, never restarted on its own."""
        return self.key == "vllm" and self.kind == ServiceKind.VLLM

    @property
    def on_gpu(self) -> bool:
        """The GPU's: any vLLM (it holds the GPU's memory) or a service marked `gpu: true`."""
        return self.gpu or self.kind == ServiceKind.VLLM


class ProbeStatus(models.TextChoices):
    UP = "up", "up"
    DEGRADED = "degraded", "degraded"
    DOWN = "down", "down"
    UNKNOWN = "unknown", "unknown"


class SweepKind(models.TextChoices):
    STATUS = "status", "status"
    DEEP = "deep", "deep health"
    CONNECTIVITY = "connectivity", "connectivity"


class ProbeResult(models.Model):
    """One probe of a service (or of a Spark's SSH reachability) by one sweep; a bounded history per target."""

    service = models.ForeignKey(Service, null=True, blank=True, on_delete=models.CASCADE, related_name="probe_results")
    host = models.ForeignKey(SparkHost, null=True, blank=True, on_delete=models.CASCADE, related_name="probe_results")
    sweep = models.CharField(max_length=16, choices=SweepKind.choices)
    status = models.CharField(max_length=16, choices=ProbeStatus.choices)
    latency_ms = models.FloatField(null=True, blank=True)
    detail = models.CharField(max_length=200, blank=True)
    checked_at = models.DateTimeField()

    class Meta:
        ordering = ["-checked_at", "-id"]
        constraints = [
            models.CheckConstraint(
                name="probe_result_one_target",
                condition=Q(service__isnull=False, host__isnull=True) | Q(service__isnull=True, host__isnull=False),
            ),
        ]
        indexes = [
            models.Index(fields=["service", "sweep", "-checked_at"], name="probe_result_service_latest"),
            models.Index(fields=["host", "sweep", "-checked_at"], name="probe_result_host_latest"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id or self.host_id} {self.sweep} {self.status}"


class ServiceStatus(models.Model):
    """The latest result of one sweep kind for one service: what tiles and /api/endpoints show."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="statuses")
    sweep = models.CharField(max_length=16, choices=SweepKind.choices)
    status = models.CharField(max_length=16, choices=ProbeStatus.choices)
    latency_ms = models.FloatField(null=True, blank=True)
    detail = models.CharField(max_length=200, blank=True)
    checked_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "service statuses"
        constraints = [models.UniqueConstraint(fields=["service", "sweep"], name="one_status_per_service_sweep")]

    def __str__(self) -> str:
        return f"{self.service_id} {self.sweep} {self.status}"


class HostStatus(models.Model):
    """The latest SSH reachability of a Spark (connect and authenticate with its pinned host key)."""

    host = models.OneToOneField(SparkHost, on_delete=models.CASCADE, related_name="reachability")
    status = models.CharField(max_length=16, choices=ProbeStatus.choices)
    latency_ms = models.FloatField(null=True, blank=True)
    detail = models.CharField(max_length=200, blank=True)
    checked_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "host statuses"

    def __str__(self) -> str:
        return f"{self.host_id} {self.status}"


class EngineSample(models.Model):
    """The last `/metrics` sample of a vLLM service, to tell a wedged engine from a busy or idle one."""

    service = models.OneToOneField(Service, on_delete=models.CASCADE, related_name="engine_sample")
    requests_running = models.FloatField()
    generation_tokens = models.FloatField()
    sampled_at = models.DateTimeField()
    stalled_since = models.DateTimeField(
        null=True, blank=True, help_text="Since when requests run without the token counter moving."
    )

    def __str__(self) -> str:
        return f"{self.service_id} running={self.requests_running} tokens={self.generation_tokens}"


class SweepLease(models.Model):
    """The next due time of a periodic sweep: claimed by one conditional UPDATE, so one worker wins each period."""

    sweep = models.CharField(max_length=16, choices=SweepKind.choices, primary_key=True)
    next_due = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=128, blank=True)

    def __str__(self) -> str:
        return f"{self.sweep} due {self.next_due:%Y-%m-%d %H:%M:%S}"


class ServiceSample(models.Model):
    """One status-sweep result of a service, kept for a day (the service page's chart and its last errors).

    Written in one bulk insert per sweep and pruned by age in the same transaction (one indexed range delete),
    apart from ProbeResult, whose per-target count bound would cost a ranking of a whole day on every sweep.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="samples")
    status = models.CharField(max_length=16, choices=ProbeStatus.choices)
    latency_ms = models.FloatField(null=True, blank=True)
    detail = models.CharField(max_length=200, blank=True, help_text="Kept only when not up.")
    checked_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["service", "checked_at"], name="service_sample_by_service"),
            models.Index(fields=["checked_at"], name="service_sample_by_age"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id} {self.status} {self.checked_at:%H:%M:%S}"


class RestartState(models.TextChoices):
    QUEUED = "queued", "queued"
    STOPPING = "stopping", "stopping"
    STARTING = "starting", "starting"
    UP = "up", "up"
    FAILED = "failed", "failed"


RESTART_ACTIVE_STATES = (RestartState.QUEUED, RestartState.STOPPING, RestartState.STARTING)
RESTART_TERMINAL_STATES = (RestartState.UP, RestartState.FAILED)


class ServiceRestart(models.Model):
    """One restart of a service's container over SSH: the row the task follows and the dashboard shows.

    queued -> stopping (`docker restart` sent) -> starting (the container runs again) -> up (its probe passes)
    or failed (SSH or docker refused, or the probe did not pass in time). One active restart per service.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="restarts")
    state = models.CharField(max_length=16, choices=RestartState.choices, default=RestartState.QUEUED)
    container = models.CharField(max_length=128, validators=[CONTAINER_NAME])
    host = models.CharField(max_length=64, help_text="The Spark it runs on.")
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField()
    stopping_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When the container ran again.")
    finished_at = models.DateTimeField(null=True, blank=True)
    downtime_s = models.FloatField(
        null=True, blank=True, help_text="From the stop until the probe passed again (up only)."
    )
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["service"],
                condition=Q(state__in=["queued", "stopping", "starting"]),
                name="one_active_restart_per_service",
                violation_error_message="This service is already being restarted.",
            ),
        ]

    def __str__(self) -> str:
        return f"restart {self.pk} of {self.service_id}: {self.state}"

    @property
    def is_terminal(self) -> bool:
        return self.state in RESTART_TERMINAL_STATES
