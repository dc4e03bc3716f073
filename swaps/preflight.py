"""The pre-flight: what must hold on the nodes before a swap touches anything. Also `validate` on its own."""

from __future__ import annotations

import errno
import posixpath
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from catalog.models import ModelEntry
from catalog.validators import local_model_roots
from cluster.models import ClusterSettings, SparkHost
from cluster.probe_http import ProbeHttpClient, run_on_probe_loop_soon
from cluster.selectors import spark_head, spark_workers
from cluster.ssh import CommandResult, SparkConnection, SshError, spark_connect
from modelfiles.services import model_fit_check
from swaps.launch import (
    LAUNCHER_MISSING,
    MEMINFO_COMMAND,
    CommandBuildError,
    LauncherCapabilities,
    MemInfo,
    build_capabilities_command,
    build_check_config_command,
    build_container_list_command,
    build_hf_cache_check_command,
    build_launch_command,
    build_logs_command,
    build_realpath_command,
    build_stop_command,
    effective_container_name,
    gib,
    launcher_errors,
)

# vLLM's own default when the catalog leaves gpu_memory_utilization blank.
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
PORT_CHECK_TIMEOUT = 2.0

R = TypeVar("R")


def _on_nodes(nodes: list[str], call: Callable[[str], R]) -> list[R]:
    """`call` for every node at once (each is a different Spark: one thread per extra node); results in order."""
    if len(nodes) < 2:
        return [call(node) for node in nodes]
    with ThreadPoolExecutor(max_workers=len(nodes) - 1, thread_name_prefix="preflight-node") as pool:
        futures = [pool.submit(call, node) for node in nodes[1:]]
        first = call(nodes[0])
        return [first, *(future.result() for future in futures)]


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
    # Every node a container of ours may run on: the swap's nodes plus any other enabled worker. `stop` selects them.
    stop_nodes: list[SparkHost] = field(default_factory=list)
    connections: dict[str, SparkConnection] = field(default_factory=dict)
    capabilities: LauncherCapabilities = field(default_factory=LauncherCapabilities)
    container: str = ""
    running_on: list[str] = field(default_factory=list)
    memory_checked: bool = False

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    @property
    def container_running(self) -> bool:
        return bool(self.running_on)

    def add(self, name: str, ok: bool, detail: str, *, warning: bool = False) -> Check:
        check = Check(name, ok, detail, warning)
        self.checks.append(check)
        return check

    def launcher_record(self, *, entry: ModelEntry) -> dict[str, Any]:
        """What the swap records about the launcher it drove, for people reading the swap later."""
        selection = "--solo" if len(self.nodes) == 1 else "-n " + ",".join(node.launcher_ip for node in self.nodes)
        record: dict[str, Any] = {
            "capabilities": self.capabilities.as_dict(),
            "selection": selection,
            "container": self.container,
        }
        if entry.nodes > 1:
            record["backend"] = self.capabilities.describe_backend()
        return record

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        self.connections.clear()


@dataclass
class LauncherProbe:
    """The head's launcher capabilities, asked before the pre-flight starts (`launcher_probe_start`)."""

    host: SparkHost
    command: str
    result: Future[CommandResult]
    answering: threading.Event = field(default_factory=threading.Event)  # its first output came (or it ended/failed)

    def take(self, *, head: SparkHost, command: str) -> CommandResult | None:
        """The answer, if it was asked of this very head (same row, same SSH identity) with this command; None
        otherwise or when it could not run (the pre-flight then runs the command itself and reports what fails)."""
        if command != self.command or _host_identity(head) != _host_identity(self.host):
            return None
        try:
            return self.result.result()
        except Exception:  # noqa: BLE001 - any failure here is met again, and reported, by running the command
            return None


def _host_identity(host: SparkHost) -> tuple:
    return (host.pk, host.address, host.ssh_port, host.ssh_user, host.key_path, host.host_key)


def launcher_probe_start(*, cluster: ClusterSettings) -> LauncherProbe | None:
    """Send the launcher's capabilities command (`--help` and its markers; read-only) to the head now, on a thread.

    A swap's first remote command needs nothing that its first database writes produce (the `preflight` state and
    its event, the other nodes' connections), so it goes out first and those writes are made while the launcher
    answers; `preflight_run` takes the answer. None when no head is configured."""
    head = spark_head()
    if head is None:
        return None
    command = build_capabilities_command(cluster=cluster)
    answering = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight-launcher")
    try:
        future = pool.submit(_probe_run, head, command, answering)
    finally:
        pool.shutdown(wait=False)
    return LauncherProbe(host=head, command=command, result=future, answering=answering)


def _probe_run(head: SparkHost, command: str, answering: threading.Event) -> CommandResult:
    try:
        return spark_connect(head).run(command, timeout=20, answering=answering)
    finally:
        answering.set()


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
    with_secrets: bool = False,
    keep_connections: bool = False,
    force: bool = False,
    launcher_probe: LauncherProbe | None = None,
) -> PreflightReport:
    """Run every check over SSH. Nothing on the nodes changes. Connections stay open if `keep_connections`.
    `launcher_probe`: the head's launcher capabilities, already asked (`launcher_probe_start`)."""
    report = PreflightReport()
    nodes, problem = preflight_nodes(entry=entry)
    report.nodes = nodes
    if problem:
        report.add("topology", False, problem)
        return report
    report.add("topology", True, ", ".join(f"{node.name} ({node.role})" for node in nodes))
    report.stop_nodes = list(nodes)
    port = _start_port_check(nodes[0], cluster)  # answers while the SSH checks run
    try:
        for node in nodes:
            try:
                report.connections[node.name] = spark_connect(node)
            except SshError as exc:
                report.add(f"ssh {node.name}", False, str(exc))
        if report.failures:
            return report
        report.add("ssh", True, "connected with pinned host keys: " + ", ".join(node.name for node in nodes))
        _connect_other_workers(report)
        head = report.connections[nodes[0].name]
        if not _check_launcher(report, head, entry, cluster, probe=launcher_probe):
            return report
        if not _check_launcher_config(report, head, entry, cluster):
            return report
        try:
            launch = build_launch_command(
                entry=entry, cluster=cluster, nodes=nodes, capabilities=report.capabilities, with_secrets=with_secrets
            )
        except CommandBuildError as exc:
            report.add("command", False, str(exc))
            return report
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight-fit") as fit_pool:
            # The fit estimate's commands (the cached config and weights, each node's memory) need nothing the other
            # checks find: they run on the nodes meanwhile instead of after them. Its check keeps its place.
            fit = fit_pool.submit(_fit_detail, report, entry, cluster)
            _check_container(report)
            report.commands = [
                build_stop_command(cluster=cluster, nodes=report.stop_nodes, capabilities=report.capabilities),
                launch.command,
                build_logs_command(container=report.container, since="<the Spark's clock at launch>"),
            ]
            if entry.is_local:
                _check_local_path(report, entry)
            else:
                _check_hf_cache(report, entry, cluster)
            detail, warning = fit.result()
        report.add("fit", True, detail, warning=warning)
        if report.container_running:
            report.add("memory", True, "checked after the running container is stopped")
        else:
            memory_check(report, entry=entry, force=force, final=not keep_connections)
        report.add("port", True, port.result())
    except SshError as exc:
        report.add("ssh", False, str(exc))
    finally:
        if not keep_connections or not report.ok:
            report.close()
    return report


def _connect_other_workers(report: PreflightReport) -> None:
    """Workers this swap does not use may still run our container (a two-node model before a one-node one): they
    are checked, and stop selects those that run it. One that cannot be reached is a warning, not a failure of a swap
    that does not need it."""
    for worker in spark_workers():
        if worker.name in report.connections:
            continue
        try:
            report.connections[worker.name] = spark_connect(worker)
        except SshError as exc:
            report.add(f"ssh {worker.name}", True, f"{exc} (not needed by this model)", warning=True)


def _check_launcher(
    report: PreflightReport,
    head: SparkConnection,
    entry: ModelEntry,
    cluster: ClusterSettings,
    *,
    probe: LauncherProbe | None = None,
) -> bool:
    command = build_capabilities_command(cluster=cluster)
    result = probe.take(head=head.host, command=command) if probe is not None else None
    if result is None:
        result = head.run(command, timeout=20)
    if LAUNCHER_MISSING in result.stdout:
        report.add("launcher", False, f"{cluster.launcher_path} is missing or not executable on {head.host.name}")
        return False
    capabilities = LauncherCapabilities.parse(result.stdout)
    report.capabilities = capabilities
    gaps = capabilities.missing(nodes=entry.nodes, needs_config=bool(cluster.launcher_config))
    if gaps:
        report.add(
            "launcher",
            False,
            f"{cluster.launcher_path} on {head.host.name} lacks what a swap needs: " + "; ".join(gaps) + ". "
            "Update spark-vllm-docker on the head (git pull).",
        )
        return False
    detail = f"{cluster.launcher_path}: daemon exec, re-quoted exec"
    if entry.nodes > 1:
        detail += f"; multi-node backend: {capabilities.describe_backend()}"
    report.add("launcher", True, detail)
    return True


def _check_launcher_config(
    report: PreflightReport, head: SparkConnection, entry: ModelEntry, cluster: ClusterSettings
) -> bool:
    """The launcher resolves the launch's node selection itself: its local IP must be the head's, the workers must
    answer its SSH, and its `.env` may rename the container; all of it is read here, before anything changes."""
    command = build_check_config_command(
        entry=entry, cluster=cluster, nodes=report.nodes, capabilities=report.capabilities
    )
    result = head.run(command, timeout=60)
    errors = launcher_errors(result.output)
    if not result.ok or errors:
        shown = "; ".join(errors) or result.output[-300:] or f"exit {result.exit_code}"
        report.add("launcher config", False, f"the launcher refuses this launch's configuration: {shown}")
        return False
    container = effective_container_name(result.output)
    if not container:
        report.add("launcher config", False, "the launcher's --check-config did not say which container it would use")
        return False
    report.container = container
    detail = f"nodes as the launcher resolves them: OK; container {container}"
    if container != cluster.effective_container:
        detail += f" (the launcher's .env renames it from {cluster.effective_container})"
    report.add("launcher config", True, detail, warning=container != cluster.effective_container)
    return True


def _check_container(report: PreflightReport) -> None:
    command = build_container_list_command(container=report.container)
    names = list(report.connections)
    results = _on_nodes(names, lambda name: report.connections[name].run(command, timeout=20))
    running = [name for name, result in zip(names, results, strict=True) if report.container in result.stdout.split()]
    report.running_on = running
    # The stop selects the swap's nodes plus any other worker where the container runs (a two-node model before).
    used = {node.name for node in report.stop_nodes}
    for worker in spark_workers():
        if worker.name in running and worker.name not in used:
            report.stop_nodes.append(worker)
    detail = (
        f"container {report.container} runs on {', '.join(running)}: it is stopped first"
        if running
        else f"no container {report.container} is running"
    )
    report.add("container", True, detail)


def memory_check(report: PreflightReport, *, entry: ModelEntry, force: bool, final: bool = True) -> bool:
    """Each node of the swap has the memory vLLM's start-up check will ask for: gpu_memory_utilization x total.

    vLLM compares that with the free memory the GPU reports, which on the Spark's unified memory is MemFree: the page
    cache counts as used. A shortfall is refused with the numbers unless the swap is forced. Not `final` (a swap's
    pre-flight, before its stop): a shortfall is only noted, and the check runs again once memory has settled."""
    fraction = entry.gpu_memory_utilization or VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
    all_ok = True
    outputs = _on_nodes(
        [node.name for node in report.nodes],
        lambda name: report.connections[name].run(MEMINFO_COMMAND, timeout=10).stdout,
    )
    for node, output in zip(report.nodes, outputs, strict=True):
        info = MemInfo.parse(output)
        if info is None:
            report.add(f"memory on {node.name}", True, "cannot read /proc/meminfo; not checked", warning=True)
            continue
        needed = fraction * info.total_kb
        numbers = (
            f"vLLM will ask for {fraction:g} x {gib(info.total_kb)} = {gib(needed)}; "
            f"{gib(info.free_kb)} free, {gib(info.available_kb)} available"
        )
        if info.free_kb >= needed:
            report.add(f"memory on {node.name}", True, numbers)
            continue
        all_ok = False
        hint = "stop what uses it, or lower gpu_memory_utilization"
        if info.available_kb >= needed:
            hint = (
                f"the page cache ({gib(info.cached_kb)}) counts as used on the Spark's unified memory: drop caches "
                "on the node (sync; echo 3 | sudo tee /proc/sys/vm/drop_caches)"
            )
        if not final:
            report.add(
                f"memory on {node.name}",
                True,
                f"short now: {numbers}; checked again after the stop, once memory has settled",
                warning=True,
            )
        elif force:
            report.add(f"memory on {node.name}", True, f"short: {numbers} (forced: launching anyway)", warning=True)
        else:
            report.add(f"memory on {node.name}", False, f"not enough memory: {numbers}; {hint}; or force the swap")
    report.memory_checked = final or all_ok
    return all_ok


def _check_local_path(report: PreflightReport, entry: ModelEntry) -> None:
    roots = local_model_roots()
    if any(ch.isspace() or ch in ":," for ch in entry.local_path):
        report.add(
            "local path",
            False,
            f"{entry.local_path!r} contains whitespace, ':' or ','; the launcher passes the mount through "
            "VLLM_SPARK_EXTRA_DOCKER_ARGS unquoted",
        )
        return
    command = build_realpath_command(path=entry.local_path)
    names = [node.name for node in report.nodes]
    results = _on_nodes(names, lambda name: report.connections[name].run(command, timeout=20))
    for name, result in zip(names, results, strict=True):
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
    command = build_hf_cache_check_command(repo=entry.repo, cluster=cluster)
    names = [node.name for node in report.nodes]
    results = _on_nodes(names, lambda name: report.connections[name].run(command, timeout=20))
    for name, result in zip(names, results, strict=True):
        if result.ok:
            report.add(f"HF cache on {name}", True, f"{entry.repo} is in the HF cache on {name}")
        else:
            report.add(
                f"HF cache on {name}",
                True,
                f"{entry.repo} is not (wholly) in the HF cache on {name}: vLLM would download it at start (slow); "
                f"download it first: POST /api/models/{entry.key}/download (or the dashboard's Download)",
                warning=True,
            )


def _fit_detail(report: PreflightReport, entry: ModelEntry, cluster: ClusterSettings) -> tuple[str, bool]:
    """Weights plus the KV cache at max_model_len against gpu_memory_utilization x memory: a warning, not a refusal
    (the estimate ignores activations and CUDA graphs, and vLLM's own check decides). The fit check's (detail,
    warning); it only reads the report's nodes and connections, so it may run beside the other checks."""
    estimate = model_fit_check(
        entry=entry,
        connections=report.connections,
        nodes=report.nodes,
        cluster=cluster,
        default_utilization=VLLM_DEFAULT_GPU_MEMORY_UTILIZATION,
    )
    if isinstance(estimate, str):
        return f"not estimated: {estimate}", False
    return f"{entry.key} {estimate.detail()}", not estimate.fits


def _start_port_check(head: SparkHost, cluster: ClusterSettings) -> Future[str]:
    """What listens on the vLLM port of the head: a TCP connect (refused: free), then one `GET /v1/models` on it.

    Started before the SSH checks and read after them, on the probe loop: no thread, no client to build."""
    return run_on_probe_loop_soon(_port_detail(head.name, head.address, cluster.effective_vllm_port))


async def _port_detail(name: str, address: str, port: int) -> str:
    async with ProbeHttpClient(timeout=PORT_CHECK_TIMEOUT) as client:
        try:
            response = await client.get(f"http://{address}:{port}/v1/models")
        except ConnectionRefusedError:
            return f"port {port} on {name} is free"
        except OSError as exc:  # TimeoutError among them: something holds the port without answering
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return f"port {port} on {name} is free"
            return f"port {port} on {name} answers but not as vLLM ({type(exc).__name__})"
    try:
        document = response.json()
        names = [item.get("id") for item in document.get("data", [])]
    except (ValueError, AttributeError, TypeError) as exc:
        return f"port {port} on {name} answers but not as vLLM ({type(exc).__name__})"
    return f"port {port} on {name} serves {', '.join(map(str, names)) or 'nothing'}"
