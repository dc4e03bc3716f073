"""The swap runner: pre-flight, stop, launch, follow the log until vLLM serves the model, or fail fast.

It runs inside a task worker, reloads the Swap row by id, refuses terminal swaps, checks the cooperative
cancel flag between steps and while loading, and keeps a heartbeat so a dead worker's swap is reaped.
"""

from __future__ import annotations

import logging
import queue
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

import httpx
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from catalog.models import ModelEntry
from cluster.models import ClusterSettings
from cluster.services import cluster_settings_get
from cluster.ssh import SparkConnection, SshError, spark_connect_all
from swaps.drain import drain_timeout_s, drain_wait
from swaps.launch import (
    MEMINFO_COMMAND,
    build_container_list_command,
    build_launch_command,
    build_logs_command,
    build_stop_command,
)
from swaps.models import ACTIVE_STATES, EventKind, Swap, SwapState
from swaps.preflight import PreflightReport, preflight_nodes, preflight_run
from swaps.services import (
    SwapSuperseded,
    serving_clear,
    swap_events_append,
    swap_finish,
    swap_heartbeat,
    swap_transition,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

DEATH_SIGNS = re.compile(r"EngineDeadError|Traceback \(most recent call last\)|out of memory|OutOfMemoryError", re.I)
CAUSE_LINE = re.compile(r"\b\w+(Error|Exception)\b:|out of memory", re.I)
DEATH_GRACE_SECONDS = 0.5
READY_HINTS = re.compile(r"Application startup complete|Uvicorn running on|Starting vLLM API server", re.I)
# The last steps before vLLM's API server starts: from here the port is watched closely.
NEAR_READY_HINTS = re.compile(
    r"Capturing CUDA graph|Graph capturing finished|torch.compile takes|Available KV cache memory|init engine", re.I
)
# Readiness: a TCP connect to the vLLM port (refused until it listens, ~0.1 ms) every PORT_WATCH_SECONDS, then one
# GET /v1/models once it accepts. Closer watching for a while after a hint in the log.
PORT_WATCH_SECONDS = 0.05
NEAR_READY_WATCH = (0.005, 60.0)  # every 5 ms, for up to 60 s after a near-ready line
READY_WATCH = (0.002, 10.0)  # every 2 ms, for up to 10 s after the API server's start-up line
MODELS_REPOLL_SECONDS = 0.25  # the port answers but the model is not listed yet
LOG_WAIT_SECONDS = 0.05
# After ready: how long the log is still followed for the API server's last start-up lines, and the last of them.
LOG_AFTER_READY_SECONDS = 1.0
STARTED_LINE = re.compile(r"Application startup complete", re.I)
PROGRESS_HINTS = re.compile(
    r"Loading weights|Loading safetensors|Capturing CUDA graph|Graph capturing finished|torch.compile|"
    r"Compiling|Model loading took|Memory profiling",
    re.I,
)
STOP_WAIT_SECONDS = 60.0
MEMORY_SETTLE_MAX_SECONDS = 20.0
MEMORY_SETTLE_TOLERANCE_KB = 512 * 1024  # 0.5 GiB
LOG_FLUSH_SECONDS = 0.2
LOG_FLUSH_MAX_LINES = 200
LOG_EVENTS_MAX = 5000
TAIL_LINES = 15
HEARTBEAT_SECONDS = 1.0


class SwapFailed(Exception):
    """The swap cannot go on; the message is the cause shown to people."""


class SwapCancelled(Exception):
    """Someone asked the swap to stop."""


class SwapRunner:
    """Carries one swap from queued to a terminal state."""

    def __init__(self, swap: Swap, *, worker: str = "worker") -> None:
        self.swap = swap
        self.worker = worker
        self.entry: ModelEntry | None = swap.model
        self.cluster: ClusterSettings = cluster_settings_get()
        self.report: PreflightReport | None = None
        self.launched = False
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.log_events = 0
        self.last_beat = 0.0
        self.deadline = time.monotonic() + self.cluster.swap_timeout_s
        # Made when loading starts: a new client loads the CA bundle (~15 ms), which neither the swap's start nor the
        # moment vLLM answers should wait for.
        self.http: httpx.Client | None = None
        # The container log being followed: its lines, and the flag that stops the follower.
        self.log_lines: queue.Queue[str | None] | None = None
        self.log_stop = threading.Event()

    # --- the run ---------------------------------------------------------------------------------------------
    def run(self) -> Swap:
        try:
            state, error, message = self._outcome()
            swap_finish(swap=self.swap, state=state, error=error, message=message)
            if state == SwapState.READY:
                self._log_after_ready()
        except SwapSuperseded as exc:
            # Reaped or cancelled elsewhere: the slot may belong to a newer swap now; touch neither row nor nodes.
            logger.warning("swap %s stopped: %s", self.swap.id, exc)
        finally:
            self.log_stop.set()
            if self.http is not None:
                self.http.close()
            if self.report is not None:
                self.report.close()
        return self.swap

    def _outcome(self) -> tuple[str, str, str | None]:
        """Run the steps; the terminal (state, error, message) to record. SwapSuperseded passes through."""
        try:
            self._run_steps()
            return SwapState.READY, "", self._ready_message()
        except SwapCancelled:
            self._stop_after_launch("cancelled")
            return SwapState.CANCELLED, "", "cancelled"
        except SwapFailed as exc:
            self._stop_after_launch("failed")
            return SwapState.FAILED, self._with_tail(str(exc)), None
        except SwapSuperseded:
            raise
        except Exception as exc:  # noqa: BLE001 - any surprise must still end the swap and free the slot
            logger.exception("swap %s crashed", self.swap.id)
            self._stop_after_launch("failed")
            return SwapState.FAILED, f"internal error: {type(exc).__name__}: {exc}", None

    def _run_steps(self) -> None:
        if self.entry is None:
            raise SwapFailed(f"the catalog entry {self.swap.model_key!r} was deleted")
        swap_transition(swap=self.swap, state=SwapState.PREFLIGHT, started_at=timezone.now(), worker=self.worker)
        self._preflight()
        if self.swap.dry_run:
            return
        self._checkpoint()
        self._stop_current()
        self._checkpoint()
        self._launch()
        self._wait_ready()

    def _ready_message(self) -> str:
        if self.swap.dry_run:
            return "ready (dry run: nothing was changed on the nodes)"
        return f"ready: {self.entry.effective_served_name} is served on port {self.cluster.effective_vllm_port}"

    # --- steps -----------------------------------------------------------------------------------------------
    def _preflight(self) -> None:
        secrets = {"HF_TOKEN": settings.SPARKCONTROL.get("HF_TOKEN", "")}
        _connect_all(entry=self.entry)
        self.report = preflight_run(
            entry=self.entry, cluster=self.cluster, secrets=secrets, keep_connections=not self.swap.dry_run
        )
        self.swap.checks = [check.as_dict() for check in self.report.checks]
        self.swap.commands = list(self.report.commands)
        self.swap.save(update_fields=["checks", "commands"])
        lines = [
            (
                EventKind.PROGRESS,
                f"{'ok' if c.ok else 'FAILED'}{' (warning)' if c.warning else ''}: {c.name}: {c.detail}",
            )
            for c in self.report.checks
        ]
        if self.swap.dry_run:
            lines += [(EventKind.PROGRESS, f"would run: {command}") for command in self.report.commands]
        swap_events_append(swap=self.swap, items=lines)
        if not self.report.ok:
            raise SwapFailed("pre-flight failed: " + "; ".join(f"{c.name}: {c.detail}" for c in self.report.failures))

    def _connection(self, name: str) -> SparkConnection:
        return self.report.connections[name]

    @property
    def head(self) -> SparkConnection:
        return self._connection(self.report.nodes[0].name)

    def _stop_current(self) -> None:
        swap_transition(swap=self.swap, state=SwapState.STOPPING, message="stopping: stopping the current container")
        # The gateway refuses the outgoing model from here on; let its requests in flight finish before the stop.
        drain_wait(model_key=None, timeout_s=drain_timeout_s(), skip=self.swap.forced)
        serving_clear(reason=f"swap {self.swap.id} is stopping the current model")
        # Always stop first: an `exec` while a container of that name runs would reuse it ("Skipping launch").
        result = self.head.run(build_stop_command(cluster=self.cluster), timeout=STOP_WAIT_SECONDS)
        if not result.ok:
            raise SwapFailed(f"the launcher's stop failed (exit {result.exit_code}): {result.output[-300:]}")
        self._wait_container_gone()
        if self.report.container_running:
            self._wait_memory_settled()

    def _wait_container_gone(self) -> None:
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        command = build_container_list_command(cluster=self.cluster)
        while True:
            listed = _on_each(self.report.connections, lambda connection: connection.run(command, timeout=20))
            still = [
                name for name, result in listed.items() if self.cluster.effective_container in result.stdout.split()
            ]
            if not still:
                return
            if time.monotonic() > deadline:
                raise SwapFailed(f"container {self.cluster.effective_container} is still running on {', '.join(still)}")
            self._beat()
            time.sleep(0.2)

    def _wait_memory_settled(self) -> None:
        # Unified memory keeps coming back for seconds after `docker stop`; vLLM's start-up check fails if we
        # launch too early. Wait for two samples a second apart within 0.5 GiB, bounded.
        deadline = time.monotonic() + MEMORY_SETTLE_MAX_SECONDS
        last: dict[str, int] = {}
        while time.monotonic() < deadline:
            settled = True
            for name, connection in self.report.connections.items():
                value = _mem_available_kb(connection.run(MEMINFO_COMMAND, timeout=10).stdout)
                if value is None or name not in last or abs(value - last[name]) > MEMORY_SETTLE_TOLERANCE_KB:
                    settled = False
                if value is not None:
                    last[name] = value
            if settled:
                swap_events_append(swap=self.swap, items=[(EventKind.PROGRESS, "memory settled after stop")])
                return
            self._beat()
            time.sleep(1.0)
        swap_events_append(
            swap=self.swap, items=[(EventKind.PROGRESS, "memory still moving after 20 s; launching anyway")]
        )

    def _launch(self) -> None:
        swap_transition(swap=self.swap, state=SwapState.LAUNCHING, message="launching: dispatching the launcher")
        secrets = {"HF_TOKEN": settings.SPARKCONTROL.get("HF_TOKEN", "")}
        launch = build_launch_command(entry=self.entry, cluster=self.cluster, nodes=self.report.nodes, secrets=secrets)
        self.launch_started = datetime.now(UTC)
        self.launched = True  # from here on a failure or cancel stops the container
        result = self.head.run(launch.command, stdin=launch.stdin, timeout=120)
        for line in result.output.splitlines()[-5:]:
            self.tail.append(line)
        if not result.ok:
            raise SwapFailed(f"the launcher exited {result.exit_code}")
        # Exit 0 means only "dispatched"; loading is watched next.

    def _wait_ready(self) -> None:
        swap_transition(swap=self.swap, state=SwapState.LOADING, message="loading: following the container log")
        self.http = httpx.Client(timeout=httpx.Timeout(2.0, connect=0.5), trust_env=False)
        since = self.launch_started.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines: queue.Queue[str | None] = queue.Queue()
        self.log_lines, stop = lines, self.log_stop
        follower = threading.Thread(
            target=self._follow_log,
            args=(build_logs_command(cluster=self.cluster, since=since), lines, stop),
            daemon=True,
            name=f"swap-log-{self.swap.id}",
        )
        follower.start()
        pending: list[tuple[str, str]] = []
        last_flush = time.monotonic()
        next_check = time.monotonic()
        watches: list[tuple[float, float]] = []  # (every, until) after hints in the log
        log_ended = False
        dying_since: float | None = None
        try:
            while True:
                now = time.monotonic()
                wait = max(0.0, min(next_check - now, LOG_WAIT_SECONDS))
                try:
                    line = lines.get(timeout=wait)
                except queue.Empty:
                    line = ""
                while line is not None:
                    if line:
                        self.tail.append(line)
                        pending.append(self._classify(line))
                        if DEATH_SIGNS.search(line) and dying_since is None:
                            # The cause comes at the end of a traceback: read on briefly before failing.
                            dying_since = time.monotonic()
                        hint = READY_WATCH if READY_HINTS.search(line) else None
                        if hint is None and NEAR_READY_HINTS.search(line):
                            hint = NEAR_READY_WATCH
                        if hint is not None:
                            watches.append((hint[0], time.monotonic() + hint[1]))
                            next_check = 0.0
                    try:
                        line = lines.get_nowait()
                    except queue.Empty:
                        break
                if line is None:
                    log_ended = True
                if dying_since is not None and (log_ended or time.monotonic() - dying_since >= DEATH_GRACE_SECONDS):
                    self._flush(pending)
                    raise SwapFailed(f"vLLM failed while loading: {_death_cause(self.tail)}")
                now = time.monotonic()
                if now >= next_check:
                    if self._port_accepts():
                        if self._is_ready():
                            self._flush(pending)
                            return
                        next_check = now + MODELS_REPOLL_SECONDS
                    else:
                        watches = [(every, until) for every, until in watches if until > now]
                        next_check = now + min([every for every, _ in watches], default=PORT_WATCH_SECONDS)
                if pending and (now - last_flush >= LOG_FLUSH_SECONDS or len(pending) >= LOG_FLUSH_MAX_LINES):
                    self._flush(pending)
                    last_flush = now
                if log_ended:
                    self._flush(pending)
                    if not self._container_running():
                        raise SwapFailed(f"the container {self.cluster.effective_container} disappeared while loading")
                    log_ended = False
                    follower = threading.Thread(
                        target=self._follow_log,
                        args=(build_logs_command(cluster=self.cluster, since=since), lines, stop),
                        daemon=True,
                    )
                    follower.start()
                if time.monotonic() > self.deadline:
                    self._flush(pending)
                    raise SwapFailed(f"not ready after the swap timeout of {self.cluster.swap_timeout_s} s")
                self._beat()
        except BaseException:
            stop.set()
            raise

    def _log_after_ready(self) -> None:
        """Record the start-up lines still on their way: readiness is often seen (the port accepts) before the log
        follower has delivered the API server's last lines. Bounded, after the row is ready; never fails the swap."""
        if self.log_lines is None:
            return
        pending: list[tuple[str, str]] = []
        deadline = time.monotonic() + LOG_AFTER_READY_SECONDS
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    line = self.log_lines.get(timeout=left)
                except queue.Empty:
                    break
                if line is None:
                    break
                if line:
                    pending.append(self._classify(line))
                    if STARTED_LINE.search(line):
                        break
            self._flush(pending)
        except Exception:  # noqa: BLE001 - the swap is ready; a lost log line must not change that
            logger.exception("swap %s: could not record the last start-up lines", self.swap.id)

    # --- helpers ---------------------------------------------------------------------------------------------
    def _follow_log(self, command: str, lines: queue.Queue, stop: threading.Event) -> None:
        try:
            for line in self.head.stream_lines(command, stop=stop):
                lines.put(line)
        except SshError as exc:
            lines.put(f"[spark control] log follow failed: {exc}")
        finally:
            lines.put(None)

    def _classify(self, line: str) -> tuple[str, str]:
        kind = EventKind.PROGRESS if PROGRESS_HINTS.search(line) else EventKind.LOG
        return kind, line[:2000]

    def _flush(self, pending: list[tuple[str, str]]) -> None:
        if not pending:
            return
        room = LOG_EVENTS_MAX - self.log_events
        batch = pending[: max(room, 0)]
        if len(pending) > len(batch) and room >= 0:
            batch.append((EventKind.PROGRESS, f"log limit reached: {len(pending) - len(batch)} more line(s) not kept"))
        self.log_events += len(batch)
        swap_events_append(swap=self.swap, items=batch)
        pending.clear()

    def _port_accepts(self) -> bool:
        """The vLLM port takes a TCP connection (vLLM binds it early but listens only once its API server runs)."""
        try:
            with socket.create_connection(
                (self.report.nodes[0].address, self.cluster.effective_vllm_port), timeout=0.5
            ):
                return True
        except OSError:
            return False

    def _is_ready(self) -> bool:
        head = self.report.nodes[0]
        url = f"http://{head.address}:{self.cluster.effective_vllm_port}/v1/models"
        try:
            response = self.http.get(url)
            ids = [item.get("id") for item in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        return self.entry.effective_served_name in ids

    def _container_running(self) -> bool:
        result = self.head.run(build_container_list_command(cluster=self.cluster), timeout=20)
        return self.cluster.effective_container in result.stdout.split()

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self.last_beat < HEARTBEAT_SECONDS:
            return
        self.last_beat = now
        if swap_heartbeat(swap=self.swap, worker=self.worker).cancel_requested:
            raise SwapCancelled()

    def _checkpoint(self) -> None:
        self.last_beat = 0.0
        self._beat()

    def _stop_after_launch(self, why: str) -> None:
        if not self.launched or self.report is None or not self.report.connections:
            return
        if not Swap.objects.filter(pk=self.swap.pk, state__in=ACTIVE_STATES).exists():
            raise SwapSuperseded(f"swap {self.swap.id} ended elsewhere; leaving the nodes to whoever owns them")
        try:
            swap_events_append(
                swap=self.swap, items=[(EventKind.PROGRESS, f"{why}: stopping the container it launched")]
            )
            self.head.run(build_stop_command(cluster=self.cluster), timeout=STOP_WAIT_SECONDS)
        except SshError as exc:
            logger.warning("swap %s: could not stop the container after %s: %s", self.swap.id, why, exc)

    def _with_tail(self, message: str) -> str:
        if not self.tail:
            return message
        return message + "\nlast log lines:\n" + "\n".join(self.tail)


def _connect_all(*, entry: ModelEntry) -> None:
    """Take from the pool, or open at once, the SSH connection to every node of the swap, so a cold start pays one
    handshake instead of one per node in turn. Failures are left to the pre-flight, which connects again and
    reports them."""
    nodes, _ = preflight_nodes(entry=entry)
    if len(nodes) > 1:
        spark_connect_all(nodes)


def _on_each(items: dict[str, T], call: Callable[[T], R]) -> dict[str, R]:
    """`call` on every value at once (one thread per extra item: each is a different Spark); results by key."""
    if len(items) < 2:
        return {key: call(value) for key, value in items.items()}
    with ThreadPoolExecutor(max_workers=len(items) - 1, thread_name_prefix="swap-node") as pool:
        keys = list(items)
        futures = {key: pool.submit(call, items[key]) for key in keys[1:]}
        first = call(items[keys[0]])
        return {keys[0]: first, **{key: future.result() for key, future in futures.items()}}


def _death_cause(tail: deque[str]) -> str:
    """The most telling line of a dying engine's log: the exception line, else the first death sign."""
    lines = [line.strip() for line in tail]
    for line in reversed(lines):
        if CAUSE_LINE.search(line):
            return line[:300]
    for line in lines:
        if DEATH_SIGNS.search(line):
            return line[:300]
    return "the engine died"


def _mem_available_kb(text: str) -> int | None:
    match = re.search(r"MemAvailable:\s+(\d+)", text)
    return int(match.group(1)) if match else None


def swap_run(*, swap_id: str, worker: str = "worker") -> Swap | None:
    """Run one swap by id; a swap already terminal (or unknown) is left alone."""
    close_old_connections()
    swap = Swap.objects.select_related("model").filter(pk=swap_id).first()
    if swap is None or swap.is_terminal:
        return swap
    if swap.state != SwapState.QUEUED:
        # Claimed twice (a retried task after a worker died): never relaunch, leave it to the reaper.
        logger.warning("swap %s is already %s; not running it again", swap.id, swap.state)
        return swap
    return SwapRunner(swap, worker=worker).run()
