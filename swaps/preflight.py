"""The pre-flight: what must hold on the nodes before a swap touches anything. Also `validate` on its own."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

import httpx

from catalog.models import ModelEntry
from catalog.validators import local_model_roots
from cluster.models import ClusterSettings, SparkHost
from cluster.selectors import spark_head, spark_workers
from cluster.ssh import SparkConnection, SshError, spark_connect
from swaps.launch import (
    CommandBuildError,
    build_container_list_command,
    build_help_command,
    build_hf_cache_check_command,
    build_launch_command,
    build_logs_command,
    build_realpath_command,
    build_stop_command,
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "warning": self.warning}


@dataclass
class PreflightReport:
    """Every check, the commands a swap would run, and the open connections (the caller closes them)."""

    checks: list[Check] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    nodes: list[SparkHost] = field(default_factory=list)
    connections: dict[str, SparkConnection] = field(default_factory=dict)
    launcher_has_ray_flag: bool = False
    container_running: bool = False

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def add(self, name: str, ok: bool, detail: str, *, warning: bool = False) -> Check:
        check = Check(name, ok, detail, warning)
        self.checks.append(check)
        return check

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        self.connections.clear()


def preflight_nodes(*, entry: ModelEntry) -> tuple[list[SparkHost], str | None]:
    """The hosts that run a rank of this model (head first), or an explanation of what is missing."""
    head = spark_head()
    if head is None:
        return [], "no enabled head Spark is configured (add one in the admin, Spark hosts)"
    nodes = [head]
    if entry.nodes == 2:
        workers = spark_workers()
        if not workers:
            return nodes, f"{entry.key} needs 2 nodes but no enabled worker Spark is configured"
        nodes.append(workers[0])
    return nodes, None


def _inside_roots(path: str, roots: list[str]) -> bool:
    return any(path.startswith(root.rstrip("/") + "/") for root in roots)


def preflight_run(
    *,
    entry: ModelEntry,
    cluster: ClusterSettings,
    secrets: dict[str, str] | None = None,
    keep_connections: bool = False,
) -> PreflightReport:
    """Run every check over SSH. Nothing on the nodes changes. Connections stay open if `keep_connections`."""
    report = PreflightReport()
    nodes, problem = preflight_nodes(entry=entry)
    report.nodes = nodes
    if problem:
        report.add("topology", False, problem)
        return report
    report.add("topology", True, ", ".join(f"{node.name} ({node.role})" for node in nodes))
    try:
        launch = build_launch_command(entry=entry, cluster=cluster, nodes=nodes, secrets=secrets)
    except CommandBuildError as exc:
        report.add("command", False, str(exc))
        return report
    report.commands = [
        build_stop_command(cluster=cluster),
        launch.command,
        build_logs_command(cluster=cluster, since="<launch time>"),
    ]
    try:
        for node in nodes:
            try:
                report.connections[node.name] = spark_connect(node)
            except SshError as exc:
                report.add(f"ssh {node.name}", False, str(exc))
        if report.failures:
            return report
        report.add("ssh", True, "connected with pinned host keys: " + ", ".join(node.name for node in nodes))
        head = report.connections[nodes[0].name]
        _check_launcher(report, head, cluster)
        _check_container(report, cluster)
        if entry.is_local:
            _check_local_path(report, entry)
        else:
            _check_hf_cache(report, entry, cluster)
        _check_port(report, nodes[0], cluster)
    except SshError as exc:
        report.add("ssh", False, str(exc))
    finally:
        if not keep_connections or not report.ok:
            report.close()
    return report


def _check_launcher(report: PreflightReport, head: SparkConnection, cluster: ClusterSettings) -> None:
    result = head.run(build_help_command(cluster=cluster), timeout=20)
    if "__launcher_missing__" in result.stdout:
        report.add("launcher", False, f"{cluster.launcher_path} is missing or not executable on {head.host.name}")
        return
    if "--launch-script" not in result.output:
        report.add(
            "launcher",
            False,
            f"{cluster.launcher_path} is too old: its --help has no --launch-script (daemon mode needs a launcher "
            "from late February 2026 or newer); update spark-vllm-docker on the head",
        )
        return
    report.launcher_has_ray_flag = "--ray" in result.output
    report.add("launcher", True, f"{cluster.launcher_path} supports daemon mode")


def _check_container(report: PreflightReport, cluster: ClusterSettings) -> None:
    running = []
    for name, connection in report.connections.items():
        result = connection.run(build_container_list_command(cluster=cluster), timeout=20)
        if cluster.effective_container in result.stdout.split():
            running.append(name)
    report.container_running = bool(running)
    detail = (
        f"container {cluster.effective_container} runs on {', '.join(running)}: it is stopped first"
        if running
        else f"no container {cluster.effective_container} is running"
    )
    report.add("container", True, detail)


def _check_local_path(report: PreflightReport, entry: ModelEntry) -> None:
    roots = local_model_roots()
    if any(ch.isspace() for ch in entry.local_path):
        report.add(
            "local path",
            False,
            f"{entry.local_path!r} contains whitespace; the launcher word-splits VLLM_SPARK_EXTRA_DOCKER_ARGS",
        )
        return
    for name, connection in report.connections.items():
        result = connection.run(build_realpath_command(path=entry.local_path), timeout=20)
        resolved = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        if not result.ok or not resolved:
            report.add(f"local path on {name}", False, f"{entry.local_path} is not a directory on {name}")
        elif posixpath.normpath(resolved) != resolved or not _inside_roots(resolved, roots):
            report.add(
                f"local path on {name}",
                False,
                f"{entry.local_path} resolves to {resolved} on {name}, outside the allowed roots {', '.join(roots)}",
            )
        else:
            report.add(f"local path on {name}", True, f"{entry.local_path} is a directory on {name}")


def _check_hf_cache(report: PreflightReport, entry: ModelEntry, cluster: ClusterSettings) -> None:
    for name, connection in report.connections.items():
        result = connection.run(build_hf_cache_check_command(repo=entry.repo, cluster=cluster), timeout=20)
        if result.ok:
            report.add(f"HF cache on {name}", True, f"{entry.repo} is in the HF cache on {name}")
        else:
            report.add(
                f"HF cache on {name}",
                True,
                f"{entry.repo} is not in the HF cache on {name}: vLLM downloads it at start (slow)",
                warning=True,
            )


def _check_port(report: PreflightReport, head: SparkHost, cluster: ClusterSettings) -> None:
    url = f"http://{head.address}:{cluster.effective_vllm_port}/v1/models"
    try:
        response = httpx.get(url, timeout=2.0)
        names = [item.get("id") for item in response.json().get("data", [])]
        detail = f"port {cluster.effective_vllm_port} on {head.name} serves {', '.join(map(str, names)) or 'nothing'}"
    except httpx.ConnectError:
        detail = f"port {cluster.effective_vllm_port} on {head.name} is free"
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        detail = f"port {cluster.effective_vllm_port} on {head.name} answers but not as vLLM ({type(exc).__name__})"
    report.add("port", True, detail)
