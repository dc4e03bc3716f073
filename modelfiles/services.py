"""Writes for model files: request, run, cancel and resume downloads of catalog models into the nodes' HF caches;
the fit-in-memory estimate of a model on its nodes."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record
from catalog.models import ModelEntry
from cluster.models import ClusterSettings, SparkHost
from cluster.selectors import spark_head, spark_workers
from cluster.services import cluster_settings_get
from cluster.ssh import SparkConnection, SshError, spark_connect
from modelfiles import remote
from modelfiles.fit import FitEstimate, fit_estimate, human_bytes
from modelfiles.models import ACTIVE_DOWNLOAD_STATES, DownloadState, ModelDownload
from realtime.broadcast import broadcast_on_commit

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class DownloadRefused(Exception):
    """A download request or cancel that cannot be accepted; `status` is the HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class DownloadFailed(Exception):
    """Stops a running download; the message is its error."""


def download_out(download: ModelDownload) -> dict[str, Any]:
    """The one shape of a download: `GET /api/downloads/{id}` and the dashboard's messages."""
    return {
        "id": str(download.id),
        "model": download.model.key,
        "repo": download.repo,
        "revision": download.revision,
        "state": download.state,
        "bytes_done": download.bytes_done,
        "bytes_total": download.bytes_total,
        "fraction": download.fraction,
        "nodes": list(download.nodes),
        "progress": dict(download.progress),
        "error": download.error or None,
        "requested_by": download.requested_by,
        "cancel_requested": download.cancel_requested,
        "created_at": download.created_at.isoformat() if download.created_at else None,
        "started_at": download.started_at.isoformat() if download.started_at else None,
        "finished_at": download.finished_at.isoformat() if download.finished_at else None,
    }


def _push(download: ModelDownload) -> None:
    broadcast_on_commit({"kind": "download", "download": download_out(download)})


def entry_revision(entry: ModelEntry) -> str:
    """The revision vLLM would load: its `--revision` flag if the catalog sets one, else main."""
    args = list(entry.vllm_args or [])
    for index, arg in enumerate(args):
        if arg == "--revision" and index + 1 < len(args):
            return str(args[index + 1])
        if arg.startswith("--revision="):
            return arg.split("=", 1)[1]
    return "main"


def download_nodes(*, entry: ModelEntry) -> list[SparkHost]:
    """The nodes that run a rank of the model (the swap's rule: the head, plus the first worker for two nodes)."""
    head = spark_head()
    if head is None:
        raise DownloadRefused(409, "no enabled head Spark is configured (add one in the admin, Spark hosts)")
    nodes = [head]
    if entry.nodes == 2:
        workers = spark_workers()
        if not workers:
            raise DownloadRefused(409, f"{entry.key} needs 2 nodes but no enabled worker Spark is configured")
        nodes.append(workers[0])
    return nodes


def download_request(*, entry: ModelEntry, requested_by: str) -> ModelDownload:
    """Create a download of the model's repo to its nodes and queue it (after commit); one active per model."""
    from modelfiles.tasks import download_execute

    if entry.is_local:
        raise DownloadRefused(409, "model: a local model has no repo to download")
    nodes = download_nodes(entry=entry)
    active = ModelDownload.objects.filter(model=entry, state__in=ACTIVE_DOWNLOAD_STATES).first()
    if active is not None:
        raise DownloadRefused(409, f"a download of {entry.key} is already {active.state} ({active.id})")
    download = ModelDownload(
        model=entry,
        repo=entry.repo,
        revision=entry_revision(entry),
        nodes=[node.name for node in nodes],
        requested_by=requested_by[:150],
        progress={node.name: {"bytes_done": 0, "bytes_total": 0, "state": "queued", "detail": ""} for node in nodes},
    )
    # The one-active-download constraint is the database's (a concurrent request gets the IntegrityError below).
    download.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            download.save()
            audit_record(
                actor=requested_by,
                action="modelfiles.download",
                target=entry.key,
                detail={"download": str(download.id), "nodes": download.nodes},
            )
            transaction.on_commit(partial(download_execute.enqueue, str(download.id), download.attempt))
            _push(download)
    except IntegrityError:
        active = ModelDownload.objects.filter(model=entry, state__in=ACTIVE_DOWNLOAD_STATES).first()
        raise DownloadRefused(
            409,
            f"a download of {entry.key} is already {active.state if active else 'active'}"
            + (f" ({active.id})" if active else ""),
        ) from None
    return download


def download_cancel(*, download: ModelDownload, actor: str) -> ModelDownload:
    """Ask a download to stop: a queued one ends now; a running one is stopped by its runner (which kills the
    download on the nodes) at its next poll."""
    with transaction.atomic():
        fresh = ModelDownload.objects.select_for_update().get(pk=download.pk)
        if fresh.is_terminal:
            raise DownloadRefused(409, f"the download is already {fresh.state}")
        fresh.cancel_requested = True
        fields = ["cancel_requested"]
        if fresh.state == DownloadState.QUEUED:
            fresh.state, fresh.finished_at, fresh.error = DownloadState.CANCELLED, timezone.now(), "cancelled"
            fields += ["state", "finished_at", "error"]
        fresh.save(update_fields=fields)
        audit_record(
            actor=actor, action="modelfiles.download_cancel", target=fresh.model.key, detail={"download": str(fresh.id)}
        )
        _push(fresh)
    return fresh


def _finish(download: ModelDownload, *, state: str, error: str = "") -> ModelDownload:
    with transaction.atomic():
        fresh = ModelDownload.objects.select_for_update().get(pk=download.pk)
        if fresh.is_terminal:
            return fresh
        fresh.state, fresh.error, fresh.finished_at = state, error, timezone.now()
        fresh.progress, fresh.bytes_done, fresh.bytes_total = (
            download.progress,
            download.bytes_done,
            download.bytes_total,
        )
        if state == DownloadState.DONE:
            fresh.bytes_done = fresh.bytes_total
        fresh.save(update_fields=["state", "error", "finished_at", "progress", "bytes_done", "bytes_total"])
        _push(fresh)
    return fresh


class _Runner:
    """Carries one attempt of a download: prepare each node, start or re-attach its downloader, poll until done."""

    def __init__(self, download: ModelDownload, cluster: ClusterSettings, stop: threading.Event | None) -> None:
        self.download = download
        self.cluster = cluster
        self.stop = stop or threading.Event()
        self.token = settings.SPARKCONTROL.get("HF_TOKEN", "") or ""
        self.connections: dict[str, SparkConnection] = {}
        self.id = str(download.id)

    def node_progress(self, name: str) -> dict[str, Any]:
        return self.download.progress.setdefault(
            name, {"bytes_done": 0, "bytes_total": 0, "state": "queued", "detail": ""}
        )

    def connect(self) -> None:
        hosts = {host.name: host for host in SparkHost.objects.filter(name__in=self.download.nodes, enabled=True)}
        for name in self.download.nodes:
            if name not in hosts:
                raise DownloadFailed(f"{name} is not an enabled Spark host any more")
            self.connections[name] = spark_connect(hosts[name])

    def poll(self, name: str) -> remote.PollResult:
        command = remote.build_poll_command(download_id=self.id, repo=self.download.repo, cluster=self.cluster)
        return remote.parse_poll(self.connections[name].run(command, timeout=30).stdout)

    def prepare_and_start(self, name: str) -> None:
        """Check the node (downloader, size, free disk), then start its download."""
        connection = self.connections[name]
        found = connection.run(remote.build_downloader_command(), timeout=20).stdout.strip().splitlines()
        downloader = found[-1].strip() if found else remote.NO_DOWNLOADER
        if downloader == remote.NO_DOWNLOADER:
            raise DownloadFailed(
                f"{name} has no model downloader (neither `hf` nor `huggingface-cli` is on its PATH): "
                "install huggingface_hub on the node (pip install -U huggingface_hub)"
            )
        total = hub_repo_size(
            connection=connection, repo=self.download.repo, revision=self.download.revision, token=self.token
        )
        avail, cached = remote.parse_disk(
            connection.run(remote.build_disk_command(repo=self.download.repo, cluster=self.cluster), timeout=30).stdout
        )
        progress = self.node_progress(name)
        progress["bytes_total"] = total or 0
        progress["bytes_done"] = min(cached, total) if total else cached
        if total and avail is not None and total - cached > avail:
            raise DownloadFailed(
                f"{self.download.repo} does not fit on {name}: it needs {human_bytes(total - cached)} more "
                f"({human_bytes(total)} in all, {human_bytes(cached)} already in the cache) and "
                f"{remote.hf_home(self.cluster)} has {human_bytes(avail)} free"
            )
        command = remote.build_start_command(
            download_id=self.id,
            repo=self.download.repo,
            revision=self.download.revision,
            downloader=downloader,
            cluster=self.cluster,
        )
        result = connection.run(command, stdin=remote.token_stdin(self.token), timeout=30)
        if not result.ok or "started=" not in result.stdout:
            raise DownloadFailed(f"{name}: the download did not start: {result.output[-300:]}")
        progress["state"] = "running"
        progress["detail"] = f"{posix_name(downloader)} download {self.download.repo}"

    def kill_all(self) -> None:
        for name, connection in self.connections.items():
            try:
                connection.run(remote.build_kill_command(download_id=self.id, cluster=self.cluster), timeout=20)
            except SshError as exc:
                logger.warning("could not stop the download on %s: %s", name, exc)

    def cleanup(self) -> None:
        for connection in self.connections.values():
            try:
                connection.run(remote.build_cleanup_command(download_id=self.id, cluster=self.cluster), timeout=20)
            except SshError:
                pass

    def save_progress(self) -> None:
        self.download.bytes_done = sum(int(p.get("bytes_done", 0)) for p in self.download.progress.values())
        self.download.bytes_total = sum(int(p.get("bytes_total", 0)) for p in self.download.progress.values())
        self.download.heartbeat_at = timezone.now()
        with transaction.atomic():
            updated = ModelDownload.objects.filter(
                pk=self.download.pk, attempt=self.download.attempt, state=DownloadState.RUNNING
            ).update(
                progress=self.download.progress,
                bytes_done=self.download.bytes_done,
                bytes_total=self.download.bytes_total,
                heartbeat_at=self.download.heartbeat_at,
            )
            if updated:
                _push(self.download)

    def row_now(self) -> str:
        """`cancel` (asked to stop), `taken` (another attempt owns it, or it ended elsewhere) or `go`."""
        row = ModelDownload.objects.filter(pk=self.download.pk).values("cancel_requested", "state", "attempt").first()
        if row is None or row["attempt"] != self.download.attempt or row["state"] != DownloadState.RUNNING:
            return "taken"
        return "cancel" if row["cancel_requested"] else "go"

    def run(self) -> ModelDownload | None:
        poll_every = float(settings.SPARKCONTROL.get("DOWNLOAD_POLL_SECONDS", 2.0))
        try:
            self.connect()
            for name in self.download.nodes:
                state = self.poll(name)
                progress = self.node_progress(name)
                if state.exit_code == 0:
                    progress["state"] = "done"
                elif state.exit_code is None and state.alive:
                    progress["state"] = "running"  # a download of an earlier attempt still runs: watch it
                else:
                    self.prepare_and_start(name)  # the HF client resumes the partial files it finds
                self.save_progress()
            while True:
                now = self.row_now()
                if now == "taken":
                    return None
                if now == "cancel":
                    self.kill_all()
                    self.cleanup()
                    return _finish(self.download, state=DownloadState.CANCELLED, error="cancelled")
                failed = []
                for name in self.download.nodes:
                    progress = self.node_progress(name)
                    if progress["state"] in ("done", "failed"):
                        continue
                    state = self.poll(name)
                    total = int(progress.get("bytes_total") or 0)
                    progress["bytes_done"] = min(state.bytes_on_disk, total) if total else state.bytes_on_disk
                    if state.exit_code == 0:
                        progress["state"], progress["detail"] = "done", "in the HF cache"
                        if not total:
                            progress["bytes_total"] = progress["bytes_done"]
                        else:
                            progress["bytes_done"] = total
                    elif state.exit_code is not None or not state.alive:
                        tail = self.connections[name].run(
                            remote.build_log_tail_command(download_id=self.id, cluster=self.cluster), timeout=20
                        )
                        why = f"exit {state.exit_code}" if state.exit_code is not None else "the downloader was killed"
                        progress["state"], progress["detail"] = "failed", f"{why}: {last_error_line(tail.stdout)}"
                        failed.append(f"{name}: {progress['detail']}")
                self.save_progress()
                if failed:
                    self.kill_all()
                    return _finish(self.download, state=DownloadState.FAILED, error="; ".join(failed))
                if all(self.node_progress(name)["state"] == "done" for name in self.download.nodes):
                    self.cleanup()
                    return _finish(self.download, state=DownloadState.DONE)
                if self.stop.wait(poll_every):
                    return None  # the worker is stopping: the download runs on, a later attempt takes it up
        except DownloadFailed as exc:
            self.save_progress()
            self.kill_all()
            return _finish(self.download, state=DownloadState.FAILED, error=str(exc))
        except SshError as exc:
            return _finish(self.download, state=DownloadState.FAILED, error=str(exc))
        except Exception as exc:
            # Anything unforeseen ends the download with its reason rather than leaving it running for a later
            # attempt to fail the same way.
            logger.exception("download %s failed", self.id)
            self.kill_all()
            return _finish(self.download, state=DownloadState.FAILED, error=f"{type(exc).__name__}: {exc}")


def posix_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def last_error_line(log: str) -> str:
    """The line of a downloader's output that says why it failed (the last non-empty one)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1][-400:] if lines else "no output"


def download_run(
    *, download_id: str, attempt: int, worker: str, stop: threading.Event | None = None
) -> ModelDownload | None:
    """Run one attempt of a download to its end. Returns None when another attempt owns it, or when `stop` was set
    (the worker stops; the download goes on on the nodes and is taken up again at the next start)."""
    with transaction.atomic():
        download = ModelDownload.objects.select_for_update().select_related("model").filter(pk=download_id).first()
        if download is None or download.is_terminal or download.attempt != attempt:
            return None
        if download.cancel_requested:
            download.state, download.finished_at, download.error = DownloadState.CANCELLED, timezone.now(), "cancelled"
            download.save(update_fields=["state", "finished_at", "error"])
            _push(download)
            return download
        download.state = DownloadState.RUNNING
        download.started_at = download.started_at or timezone.now()
        download.worker, download.heartbeat_at = worker[:200], timezone.now()
        download.save(update_fields=["state", "started_at", "worker", "heartbeat_at"])
        _push(download)
    return _Runner(download, cluster_settings_get(), stop).run()


def downloads_resume(
    *, stale_seconds: float | None = None, gone: Callable[[str], bool] | None = None
) -> list[ModelDownload]:
    """Take up again the running downloads whose runner is gone: known gone (`gone(worker)`), or silent for
    `stale_seconds` (default three polls and 30 s at least). A new attempt is queued; it follows a downloader still
    running on a node, or starts it again (files already in the cache are kept)."""
    if stale_seconds is None:
        stale_seconds = max(30.0, 3 * float(settings.SPARKCONTROL.get("DOWNLOAD_POLL_SECONDS", 2.0)))
    cutoff = timezone.now() - timedelta(seconds=stale_seconds)
    resumed = []
    for candidate in ModelDownload.objects.filter(state=DownloadState.RUNNING).only("pk", "worker", "heartbeat_at"):
        silent = candidate.heartbeat_at is None or candidate.heartbeat_at < cutoff
        if silent or (gone is not None and bool(candidate.worker) and gone(candidate.worker)):
            resumed.append(download_resume(download=candidate))
    return [download for download in resumed if download is not None]


def download_resume(*, download: ModelDownload) -> ModelDownload | None:
    """Queue a new attempt of a running download (its previous runner is gone)."""
    from modelfiles.tasks import download_execute

    with transaction.atomic():
        fresh = ModelDownload.objects.select_for_update().select_related("model").get(pk=download.pk)
        if fresh.is_terminal:
            return None
        fresh.attempt += 1
        fresh.worker, fresh.heartbeat_at = "", timezone.now()
        fresh.save(update_fields=["attempt", "worker", "heartbeat_at"])
        transaction.on_commit(partial(download_execute.enqueue, str(fresh.id), fresh.attempt))
    logger.warning("download %s (%s) is taken up again, attempt %s", fresh.id, fresh.repo, fresh.attempt)
    return fresh


# --- sizes and the fit estimate ----------------------------------------------------------------------------------


def hub_file_list(*, connection: SparkConnection, repo: str, revision: str, token: str) -> list[dict[str, Any]] | None:
    """The Hub's file list of a repo as the node sees it (its HF_ENDPOINT), or None when it cannot be read."""
    command = remote.build_file_list_command(repo=repo, revision=revision)
    result = connection.run(command, stdin=remote.header_stdin(token), timeout=40)
    if not result.ok:
        return None
    try:
        entries = json.loads(result.stdout)
    except ValueError:
        return None
    return [entry for entry in entries if isinstance(entry, dict) and entry.get("type") == "file"]


def hub_repo_size(*, connection: SparkConnection, repo: str, revision: str, token: str) -> int | None:
    files = hub_file_list(connection=connection, repo=repo, revision=revision, token=token)
    if files is None:
        return None
    return sum(_file_size(entry) for entry in files)


def _file_size(entry: dict[str, Any]) -> int:
    lfs = entry.get("lfs") or {}
    size = lfs.get("size", entry.get("size", 0))
    return int(size) if isinstance(size, int | float) else 0


SEPARATOR = "__spark_control_fit__"


def _cached_fit_inputs(
    *, connection: SparkConnection, entry: ModelEntry, cluster: ClusterSettings
) -> tuple[dict | None, int | None, int | None]:
    """One command on the node: the model's config.json and its weight files' bytes (the cached snapshot, or the
    local model's directory), and MemTotal."""
    if entry.is_local:
        read_config = remote.build_local_file_command(path=entry.local_path, filename="config.json")
        read_weights = remote.build_local_weights_command(path=entry.local_path, suffixes=WEIGHT_SUFFIXES)
    else:
        read_config = remote.build_cached_file_command(repo=entry.repo, cluster=cluster, filename="config.json")
        read_weights = remote.build_cached_weights_command(repo=entry.repo, cluster=cluster, suffixes=WEIGHT_SUFFIXES)
    command = (
        f"{read_config}; echo; echo {SEPARATOR}; {read_weights}; echo {SEPARATOR}; grep -E '^MemTotal:' /proc/meminfo"
    )
    parts = connection.run(command, timeout=30).stdout.split(SEPARATOR)
    config = weights = memory = None
    if len(parts) == 3:
        try:
            loaded = json.loads(parts[0]) if parts[0].strip() else None
            config = loaded if isinstance(loaded, dict) else None
        except ValueError:
            config = None
        value = parts[1].strip()
        weights = int(value) if value.isdigit() and int(value) > 0 else None
        match = re.search(r"MemTotal:\s+(\d+)\s*kB", parts[2])
        memory = int(match.group(1)) * 1024 if match else None
    return config, weights, memory


def _hub_config(*, connection: SparkConnection, entry: ModelEntry, token: str) -> dict | None:
    command = remote.build_hub_file_command(repo=entry.repo, revision=entry_revision(entry), filename="config.json")
    result = connection.run(command, stdin=remote.header_stdin(token), timeout=40)
    try:
        config = json.loads(result.stdout) if result.ok else None
    except ValueError:
        return None
    return config if isinstance(config, dict) else None


def _memory_total(connection: SparkConnection) -> int | None:
    match = re.search(
        r"MemTotal:\s+(\d+)\s*kB", connection.run("grep -E '^MemTotal:' /proc/meminfo", timeout=10).stdout
    )
    return int(match.group(1)) * 1024 if match else None


def _text_numbers(config: dict) -> bool:
    """Whether the config gives what the KV cache estimate needs (itself or its text_config)."""
    for part in (config, config.get("text_config"), config.get("llm_config"), config.get("language_config")):
        if isinstance(part, dict) and part.get("num_hidden_layers") and part.get("num_attention_heads"):
            return True
    return False


def _kv_cache_dtype(entry: ModelEntry) -> str | None:
    args = [str(arg) for arg in entry.vllm_args or []]
    for index, arg in enumerate(args):
        if re.fullmatch(r"--kv[-_]cache[-_]dtype", arg) and index + 1 < len(args):
            return args[index + 1]
        if re.match(r"--kv[-_]cache[-_]dtype=", arg):
            return arg.split("=", 1)[1]
    return None


def model_fit_check(
    *,
    entry: ModelEntry,
    connections: dict[str, SparkConnection],
    nodes: list[SparkHost],
    cluster: ClusterSettings,
    default_utilization: float,
) -> FitEstimate | str:
    """Estimate whether the model fits the memory vLLM may use on its nodes; a string says why it cannot be told."""
    token = settings.SPARKCONTROL.get("HF_TOKEN", "") or ""
    head = connections[nodes[0].name]
    # The cache answers in one command when the model is downloaded (the usual case before a swap); the Hub, as the
    # node sees it, fills in what the cache lacks.
    config, weights, head_memory = _cached_fit_inputs(connection=head, entry=entry, cluster=cluster)
    if config is None and not entry.is_local:
        config = _hub_config(connection=head, entry=entry, token=token)
    if config is None:
        where = entry.local_path if entry.is_local else f"the HF cache of {nodes[0].name} nor from the Hub"
        return f"no config.json of {entry.source} in {where}"
    if not _text_numbers(config):
        return f"the config.json of {entry.source} does not give its layers and attention sizes"
    if weights is None and not entry.is_local:
        files = hub_file_list(connection=head, repo=entry.repo, revision=entry_revision(entry), token=token)
        if files is not None:
            weights = sum(_file_size(item) for item in files if str(item.get("path", "")).endswith(WEIGHT_SUFFIXES))
    if not weights:
        return f"the size of {entry.source}'s weights is unknown (no weight files found, and no Hub file list)"
    memory = [head_memory] + [_memory_total(connections[node.name]) for node in nodes[1:]]
    known = [value for value in memory if value]
    if not known:
        return "cannot read MemTotal on the nodes"
    memory = known
    return fit_estimate(
        config=config,
        weights_bytes=weights,
        max_model_len=entry.max_model_len,
        gpu_memory_utilization=entry.gpu_memory_utilization or default_utilization,
        memory_bytes=min(memory),
        nodes=len(nodes),
        kv_cache_dtype=_kv_cache_dtype(entry),
    )


def node_disk_report(*, cluster: ClusterSettings | None = None) -> list[dict[str, Any]]:
    """Per enabled node: free bytes where the HF cache is, and each catalog HF model's bytes in it (or an error)."""
    cluster = cluster or cluster_settings_get()
    entries = list(ModelEntry.objects.exclude(repo="").order_by("key"))
    hosts = list(SparkHost.objects.filter(enabled=True).order_by("name"))
    report = []
    home = remote.remote_path(remote.hf_home(cluster))
    for host in hosts:
        row: dict[str, Any] = {"node": host.name, "free_bytes": None, "models": {}, "error": None}
        try:
            connection = spark_connect(host)
            dirs = " ".join(
                remote.remote_path(remote.repo_cache_dir(repo=entry.repo, cluster=cluster)) for entry in entries
            )
            command = (
                f"mkdir -p {home}/hub; df -B1 --output=avail {home} | tail -n 1; for d in {dirs}; do "
                'if [ -d "$d" ]; then du -sb "$d" | cut -f1; else echo 0; fi; done'
            )
            lines = connection.run(command, timeout=60).stdout.split()
            row["free_bytes"] = int(lines[0]) if lines and lines[0].isdigit() else None
            for entry, value in zip(entries, lines[1:], strict=False):
                row["models"][entry.key] = int(value) if value.isdigit() else 0
        except SshError as exc:
            row["error"] = str(exc)
        report.append(row)
    return report


__all__ = [
    "DownloadRefused",
    "download_cancel",
    "download_out",
    "download_request",
    "download_resume",
    "download_run",
    "downloads_resume",
    "model_fit_check",
    "node_disk_report",
]
