"""The swap runner: pre-flight, stop, launch, follow the log until vLLM serves the model, or fail fast.

It runs inside a task worker, reloads the Swap row by id, refuses terminal swaps, checks the cooperative
cancel flag between steps and while loading, and keeps a heartbeat so a dead worker's swap is reaped.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import close_old_connections
from django.utils import timezone

from catalog.models import ModelEntry
from cluster.models import ClusterSettings
from cluster.services import cluster_settings_get
from cluster.ssh import SparkConnection, SshError, spark_connect_all
from swaps.drain import drain_timeout_s, drain_wait
from swaps.launch import (
    CLOCK_COMMAND,
    MEMINFO_COMMAND,
    MemInfo,
    build_container_list_command,
    build_launch_command,
    build_logs_command,
    build_secrets_remove_command,
    build_secrets_write_command,
    build_stop_command,
    build_top_command,
    launcher_errors,
    secrets_file_text,
    vllm_running,
)
from swaps.models import ACTIVE_STATES, EventKind, Swap, SwapState
from swaps.preflight import (
    Check,
    LauncherProbe,
    PreflightReport,
    launcher_probe_start,
    memory_check,
    preflight_nodes,
    preflight_run,
)
from swaps.progress import terminal_text
from swaps.progress_feed import ProgressFeed
from swaps.secrets import swap_secrets
from swaps.services import (
    SwapCancelled,
    SwapSuperseded,
    serving_clear,
    swap_events_append,
    swap_finish,
    swap_heartbeat,
    swap_record,
    swap_transition,
)
from swaps.watch import PortWatch, ProcessLook, ProcessLookout, ProcessWatch

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
# What the loading loop reads from its queue: a node's log line ((node, None) when its follow ends), a look for the
# vLLM processes, or SERVED: the head's port accepts and the model is listed.
SERVED = object()
Feed = tuple[str, str | None] | ProcessLook | object

DEATH_SIGNS = re.compile(
    r"EngineDeadError|Traceback \(most recent call last\)|out of memory|OutOfMemoryError|"
    r"(?:^|\s)error: (?:unrecognized arguments|argument |the following arguments are required)",
    re.I,
)
# An exception line (`ValueError: ...`, `torch.OutOfMemoryError: ...`) or argparse's `prog: error: ...`.
CAUSE_LINE = re.compile(r"\b[\w.]*(?:Error|Exception)\b:|out of memory|(?:^|\s)error: ", re.I)
# What vLLM's API server prints after an engine start-up failure: it points above, at the real cause.
GENERIC_CAUSE = re.compile(r"Engine core initialization failed|See root cause above|EngineDeadError", re.I)
ARGPARSE_ERROR = re.compile(r"(?:^|\s)error: (.+)$", re.I)
DEATH_GRACE_SECONDS = 0.5
# The engine's last lines and the API server's first: the port listens within seconds, so it is watched closely.
READY_HINTS = re.compile(
    r"init engine|Graph capturing finished|Supported_tasks|Starting vLLM API server|Application startup complete|"
    r"Uvicorn running on",
    re.I,
)
# Earlier steps of the engine's start-up: the port is watched more often than before them.
NEAR_READY_HINTS = re.compile(r"Capturing CUDA graph|torch.compile takes|Available KV cache memory", re.I)
# How long a swap waits for the head to start the launcher's capabilities command before its own database work
# (a new SSH connection takes longer; that work then overlaps with the handshake instead).
PROBE_DISPATCH_WAIT_SECONDS = 0.1
# Readiness (swaps.watch.PortWatch): a TCP connect to the vLLM port every 50 ms, then one GET /v1/models once it
# accepts; closer after a hint in the log.
NEAR_READY_WATCH = (0.005, 60.0)  # every 5 ms, for up to 60 s after a near-ready line
READY_WATCH = (0.002, 10.0)  # every 2 ms, for up to 10 s after the engine's last line or the API server's first
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
CAUSE_LINES = 400  # per node: a failed start's root cause can be far above its last line
HEARTBEAT_SECONDS = 1.0


class SwapFailed(Exception):
    """The swap cannot go on; the message is the cause shown to people."""


class SwapRunner:
    """Carries one swap from queued to a terminal state."""

    def __init__(
        self,
        swap: Swap,
        *,
        worker: str = "worker",
        cluster: ClusterSettings | None = None,
        launcher_probe: LauncherProbe | None = None,
    ) -> None:
        self.swap = swap
        self.worker = worker
        self.entry: ModelEntry | None = swap.model
        self.cluster: ClusterSettings = cluster or cluster_settings_get()
        self.launcher_probe = launcher_probe  # asked already (swap_run), or asked first thing by _run_steps
        self.report: PreflightReport | None = None
        self.secrets: dict[str, str] = {}
        self.launched = False
        self.secrets_written: list[str] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        # Per node, the recent lines of its container log: where a dying rank's cause is looked for.
        self.node_lines: dict[str, deque[str]] = {}
        self.log_events = 0
        self.last_beat = 0.0
        self.deadline = time.monotonic() + self.cluster.swap_timeout_s
        # The container logs being followed: (node, line) items, (node, None) when a node's follow ends.
        self.log_lines: queue.Queue[Feed] | None = None
        self.log_stop = threading.Event()
        self.progress: ProgressFeed | None = None  # from loading on: phase, fraction and ETA from the head's log
        # What a passed pre-flight found (fields of the swap, check events), saved with the `stopping` state.
        self.preflight_found: tuple[dict[str, Any], list[tuple[str, str]]] = ({}, [])
        self.ready_lines: list[tuple[str, str]] = []  # log lines seen last, recorded with the ready state

    # --- the run ---------------------------------------------------------------------------------------------
    def run(self) -> Swap:
        try:
            state, error, message = self._outcome()
            lines = self.ready_lines if state == SwapState.READY else []
            swap_finish(swap=self.swap, state=state, error=error, message=message, lines=lines)
            if state == SwapState.READY:
                self._log_after_ready()
        except SwapSuperseded as exc:
            # Reaped or cancelled elsewhere: the slot may belong to a newer swap now; touch neither row nor nodes.
            logger.warning("swap %s stopped: %s", self.swap.id, exc)
        finally:
            self.log_stop.set()
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
        # The launcher's capabilities are asked of the head first; the state write and the preparations run while
        # it answers (it changes nothing on the node).
        probe = self.launcher_probe or launcher_probe_dispatch(cluster=self.cluster)
        swap_transition(swap=self.swap, state=SwapState.PREFLIGHT, started_at=timezone.now(), worker=self.worker)
        self._preflight(probe)
        if self.swap.dry_run:
            return
        # A cancel requested meanwhile is heeded by the next state change itself (one transaction, no check of its own).
        self._stop_current()
        self._launch()
        self._wait_ready()

    def _ready_message(self) -> str:
        if self.swap.dry_run:
            return "ready (dry run: nothing was changed on the nodes)"
        return f"ready: {self.entry.effective_served_name} is served on port {self.cluster.effective_vllm_port}"

    # --- steps -----------------------------------------------------------------------------------------------
    def _preflight(self, probe: LauncherProbe | None = None) -> None:
        self.secrets = swap_secrets(entry=self.entry)
        _connect_all(entry=self.entry)
        self.report = preflight_run(
            entry=self.entry,
            cluster=self.cluster,
            with_secrets=bool(self.secrets),
            keep_connections=not self.swap.dry_run,
            force=self.swap.forced,
            launcher_probe=probe,
        )
        found: dict[str, Any] = {
            "checks": [check.as_dict() for check in self.report.checks],
            "commands": list(self.report.commands),
        }
        if self.report.container:
            found["launcher"] = self.report.launcher_record(entry=self.entry)
        lines = [_check_event(check) for check in self.report.checks]
        if self.report.ok and not self.swap.dry_run:
            # Saved with the `stopping` state, in its transaction: one write between the checks and the stop.
            self.preflight_found = (found, lines)
            return
        if self.swap.dry_run:
            lines += [(EventKind.PROGRESS, f"would run: {command}") for command in self.report.commands]
        self._record(found, lines)
        if not self.report.ok:
            raise SwapFailed("pre-flight failed: " + "; ".join(f"{c.name}: {c.detail}" for c in self.report.failures))

    def _record(self, found: dict[str, Any], lines: list[tuple[str, str]]) -> None:
        for name, value in found.items():
            setattr(self.swap, name, value)
        swap_record(swap=self.swap, fields=list(found), items=lines)

    def _connection(self, name: str) -> SparkConnection:
        return self.report.connections[name]

    @property
    def head(self) -> SparkConnection:
        return self._connection(self.report.nodes[0].name)

    @property
    def container(self) -> str:
        return self.report.container

    def _stop_command(self) -> str:
        return build_stop_command(
            cluster=self.cluster, nodes=self.report.stop_nodes, capabilities=self.report.capabilities
        )

    def _stop_current(self) -> None:
        found, lines = self.preflight_found
        try:
            swap_transition(
                swap=self.swap,
                state=SwapState.STOPPING,
                message="stopping: stopping the current container",
                items=lines,
                heed_cancel=True,
                **found,
            )
        except SwapCancelled:
            self._record(found, lines)  # cancelled during the pre-flight: what it found is still kept
            raise
        # The gateway refuses the outgoing model from here on; let its requests in flight finish before the stop. With
        # no container of ours on any node there is no vLLM for a request to be in flight to: nothing to wait for.
        if self.report.container_running:
            drain_wait(model_key=None, timeout_s=drain_timeout_s(), skip=self.swap.forced, swap=self.swap)
        serving_clear(reason=f"swap {self.swap.id} is stopping the current model")
        # Always stop first: an `exec` while a container of that name runs would reuse it ("Skipping launch").
        result = self.head.run(self._stop_command(), timeout=STOP_WAIT_SECONDS)
        if not result.ok:
            raise SwapFailed(
                f"the launcher's stop failed (exit {result.exit_code}): "
                + ("; ".join(launcher_errors(result.output)) or result.output[-300:])
            )
        self._wait_container_gone()
        if self.report.container_running or not self.report.memory_checked:
            # After any stop that stopped something, and whenever memory looked short: a stopped model's memory
            # comes back over seconds, and a launch before then fails vLLM's start-up check.
            self._wait_memory_settled()
        if not self.report.memory_checked:
            checks_before = len(self.report.checks)
            memory_check(self.report, entry=self.entry, force=self.swap.forced)
            checks = self.report.checks[checks_before:]
            self.swap.checks = [check.as_dict() for check in self.report.checks]
            swap_record(swap=self.swap, fields=["checks"], items=[_check_event(check) for check in checks])
            failed = [c for c in checks if not c.ok]
            if failed:
                raise SwapFailed("; ".join(f"{c.name}: {c.detail}" for c in failed))

    def _wait_container_gone(self) -> None:
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        command = build_container_list_command(container=self.container)
        while True:
            listed = _on_each(self.report.connections, lambda connection: connection.run(command, timeout=20))
            still = [name for name, result in listed.items() if self.container in result.stdout.split()]
            if not still:
                return
            if time.monotonic() > deadline:
                raise SwapFailed(f"container {self.container} is still running on {', '.join(still)}")
            self._beat()
            time.sleep(0.2)

    def _wait_memory_settled(self, *, cancellable: bool = True) -> None:
        # Unified memory keeps coming back for seconds after `docker stop`; vLLM's start-up check fails if we
        # launch too early. Wait for two samples a second apart within 0.5 GiB, bounded.
        deadline = time.monotonic() + MEMORY_SETTLE_MAX_SECONDS
        last: dict[str, int] = {}
        while time.monotonic() < deadline:
            settled = True
            for name, connection in self.report.connections.items():
                info = MemInfo.parse(connection.run(MEMINFO_COMMAND, timeout=10).stdout)
                value = info.available_kb if info else None
                if value is None or name not in last or abs(value - last[name]) > MEMORY_SETTLE_TOLERANCE_KB:
                    settled = False
                if value is not None:
                    last[name] = value
            if settled:
                swap_events_append(swap=self.swap, items=[(EventKind.PROGRESS, "memory settled after stop")])
                return
            self._beat(cancellable=cancellable)
            time.sleep(1.0)
        swap_events_append(
            swap=self.swap, items=[(EventKind.PROGRESS, "memory still moving after 20 s; launching anyway")]
        )

    def _rank_nodes(self) -> list[str]:
        """The nodes where the launch runs a vLLM process: every node without Ray, only the head with Ray (its
        workers run Ray actors, started from the head)."""
        names = [node.name for node in self.report.nodes]
        if len(names) > 1 and self.report.capabilities.backend == "ray":
            return names[:1]
        return names

    def _write_secrets(self) -> None:
        """The secrets file on every node that starts a vLLM rank, over stdin; each rank reads and deletes it."""
        if not self.secrets:
            return
        text = secrets_file_text(self.secrets)
        command = build_secrets_write_command(cluster=self.cluster)
        nodes = {name: self._connection(name) for name in self._rank_nodes()}
        self.secrets_written = list(nodes)
        results = _on_each(nodes, lambda connection: connection.run(command, stdin=text, timeout=20))
        failed = [name for name, result in results.items() if not result.ok]
        if failed:
            raise SwapFailed(f"could not write the launch's secrets on {', '.join(failed)}")
        swap_events_append(
            swap=self.swap,
            items=[(EventKind.PROGRESS, f"secrets ({', '.join(sorted(self.secrets))}) handed to {', '.join(nodes)}")],
        )

    def _launch(self) -> None:
        connections = {name: self._connection(name) for name in self.report.connections}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="swap-clock") as pool:
            # Each node's log is read from the node's own clock: this machine's may be off by minutes. The clocks
            # are read (nothing changes on the nodes) while the state is written and the secrets handed over.
            clocks = pool.submit(_on_each, connections, lambda connection: connection.run(CLOCK_COMMAND, timeout=10))
            swap_transition(
                swap=self.swap,
                state=SwapState.LAUNCHING,
                message="launching: dispatching the launcher",
                heed_cancel=True,
            )
            launch = build_launch_command(
                entry=self.entry,
                cluster=self.cluster,
                nodes=self.report.nodes,
                capabilities=self.report.capabilities,
                with_secrets=bool(self.secrets),
            )
            self.launched = True  # from here on a failure or cancel stops the container
            self._write_secrets()
            self.since = {name: _clock(result.stdout) for name, result in clocks.result().items()}
        self.dispatched_at = time.monotonic()
        result = self.head.run(launch.command, stdin=launch.stdin, timeout=120)
        for line in result.output.splitlines()[-5:]:
            self.tail.append(line)
        if not result.ok:
            errors = launcher_errors(result.output)
            raise SwapFailed(f"the launcher exited {result.exit_code}" + (f": {'; '.join(errors)}" if errors else ""))
        # Exit 0 means only "dispatched"; loading is watched next.

    def _follower(self, node: str) -> threading.Thread:
        command = build_logs_command(container=self.container, since=self.since.get(node) or "1s")
        thread = threading.Thread(
            target=self._follow_log,
            args=(node, command, self.log_lines, self.log_stop),
            daemon=True,
            name=f"swap-log-{self.swap.id}-{node}",
        )
        thread.start()
        return thread

    def _wait_ready(self) -> None:
        swap_transition(swap=self.swap, state=SwapState.LOADING, message="loading: following the container log")
        self.progress = ProgressFeed(swap=self.swap)
        lines: queue.Queue[Feed] = queue.Queue()
        self.log_lines, stop = lines, self.log_stop
        nodes = [node.name for node in self.report.nodes]
        for node in nodes:
            self.node_lines[node] = deque(maxlen=CAUSE_LINES)
            self._follower(node)
        # The port and the processes are watched on threads of their own, which report through the same queue as
        # the log: the moment vLLM serves is seen whatever this loop is busy with.
        port = PortWatch(
            host=self.report.nodes[0].address,
            port=self.cluster.effective_vllm_port,
            served_name=self.entry.effective_served_name,
            on_ready=lambda: lines.put(SERVED),
            name=f"swap-port-{self.swap.id}",
        )
        ranks = {name: self._connection(name) for name in self._rank_nodes()}
        command = build_top_command(container=self.container)
        lookout = ProcessLookout(
            look=lambda: _on_each(ranks, lambda connection: connection.run(command, timeout=10)),
            deliver=lines.put,
            started=self.dispatched_at,
            name=f"swap-processes-{self.swap.id}",
        )
        watch = ProcessWatch(started=self.dispatched_at)
        port.start()
        lookout.start()
        pending: list[tuple[str, str]] = []
        last_flush = time.monotonic()
        dying: tuple[str, float] | None = None  # (node, since when)
        try:
            while True:
                ended: list[str] = []
                served = False
                try:
                    item: Feed | None = lines.get(timeout=LOG_WAIT_SECONDS)
                except queue.Empty:
                    item = None
                while item is not None:
                    if item is SERVED:
                        served = True
                    elif isinstance(item, ProcessLook):
                        self._judge_processes(watch, item, pending)
                    else:
                        node, line = item
                        if line is None:
                            ended.append(node)
                        elif line:
                            self._take_line(node, line, pending)
                            if DEATH_SIGNS.search(line) and dying is None:
                                # The cause comes at the end of a traceback: read on briefly before failing.
                                dying = (node, time.monotonic())
                            if node == nodes[0]:
                                if READY_HINTS.search(line):
                                    port.closer(*READY_WATCH)
                                elif NEAR_READY_HINTS.search(line):
                                    port.closer(*NEAR_READY_WATCH)
                    try:
                        item = lines.get_nowait()
                    except queue.Empty:
                        break
                if dying is not None and time.monotonic() - dying[1] >= DEATH_GRACE_SECONDS:
                    self._flush(pending)
                    raise SwapFailed(f"vLLM failed while loading{self._on(dying[0])}: {self._cause(dying[0])}")
                if served:
                    # The lines still pending go in the write that makes the swap ready: one transaction between
                    # vLLM answering and the row saying so, not two.
                    self.ready_lines = self._batch(pending)
                    self.progress.ready()
                    return
                now = time.monotonic()
                if pending and (now - last_flush >= LOG_FLUSH_SECONDS or len(pending) >= LOG_FLUSH_MAX_LINES):
                    self._flush(pending)
                    last_flush = now
                for node in ended:
                    self._flush(pending)
                    if not self._container_running(node):
                        raise SwapFailed(f"the container {self.container} disappeared{self._on(node)} while loading")
                    self._follower(node)
                if time.monotonic() > self.deadline:
                    self._flush(pending)
                    raise SwapFailed(f"not ready after the swap timeout of {self.cluster.swap_timeout_s} s")
                self.progress.tick()
                self._beat()
        except BaseException:
            stop.set()
            raise
        finally:
            port.close()
            lookout.close()

    def _judge_processes(self, watch: ProcessWatch, look: ProcessLook, pending: list[tuple[str, str]]) -> None:
        """Fail the swap when a node's vLLM process is gone while its container stays (no traceback to see)."""
        if look.error is not None:
            raise look.error
        for node, result in look.results.items():
            if not result.ok:
                self._flush(pending)
                if self._container_running(node):
                    continue  # a passing docker error: look again next time
                raise SwapFailed(f"the container {self.container} disappeared{self._on(node)} while loading")
            if vllm_running(result.stdout):
                watch.seen(node)
            elif watch.dead(node, look.at):
                # Give the log follower a moment to deliver the last lines (argparse's error comes just before exit).
                self._drain_log(pending, DEATH_GRACE_SECONDS)
                self._flush(pending)
                raise SwapFailed(
                    f"vLLM exited{self._on(node)} while loading (its container {self.container} is still up): "
                    f"{self._cause(node)}"
                )

    def _drain_log(self, pending: list[tuple[str, str]], seconds: float, *, until: re.Pattern | None = None) -> None:
        """Take the lines the log followers deliver for up to `seconds`, or until one matches `until`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.log_lines.get(timeout=left)
            except queue.Empty:
                return
            if not isinstance(item, tuple):
                continue  # a watch's report: the swap's outcome is being decided already
            node, line = item
            if line:
                self._take_line(node, line, pending)
                if until is not None and until.search(line):
                    return

    def _take_line(self, node: str, line: str, pending: list[tuple[str, str]]) -> None:
        raw = line
        if "\r" in line:
            line = terminal_text(line) or line  # a tqdm bar's updates: keep what a terminal would show
        shown = line if node == self.report.nodes[0].name else f"[{node}] {line}"
        self.tail.append(shown)
        self.node_lines.setdefault(node, deque(maxlen=CAUSE_LINES)).append(line)
        pending.append(self._classify(shown))
        if self.progress is not None and node == self.report.nodes[0].name:
            # The lines that moved the progress go into the event log before the progress event they caused.
            self.progress.line(raw, before_send=lambda: self._flush(pending))

    def _on(self, node: str) -> str:
        """' on spark2 (worker)' for a worker; nothing for the head of a one-node swap."""
        if len(self.report.nodes) == 1 and node == self.report.nodes[0].name:
            return ""
        role = "head" if node == self.report.nodes[0].name else "worker"
        return f" on {node} ({role})"

    def _cause(self, node: str) -> str:
        return _death_cause(self.node_lines.get(node) or self.tail)

    def _log_after_ready(self) -> None:
        """Record the start-up lines still on their way: readiness is often seen (the port accepts) before the log
        follower has delivered the API server's last lines. Bounded, after the row is ready; never fails the swap."""
        if self.log_lines is None or any(STARTED_LINE.search(line) for line in self.tail):
            return  # the last start-up line is in already: what follows is request logs, not start-up
        pending: list[tuple[str, str]] = []
        try:
            self._drain_log(pending, LOG_AFTER_READY_SECONDS, until=STARTED_LINE)
            self._flush(pending)
        except Exception:  # noqa: BLE001 - the swap is ready; a lost log line must not change that
            logger.exception("swap %s: could not record the last start-up lines", self.swap.id)

    # --- helpers ---------------------------------------------------------------------------------------------
    def _follow_log(self, node: str, command: str, lines: queue.Queue, stop: threading.Event) -> None:
        try:
            for line in self._connection(node).stream_lines(command, stop=stop):
                lines.put((node, line))
        except SshError as exc:
            lines.put((node, f"[spark control] log follow failed: {exc}"))
        finally:
            lines.put((node, None))

    def _classify(self, line: str) -> tuple[str, str]:
        kind = EventKind.PROGRESS if PROGRESS_HINTS.search(line) else EventKind.LOG
        return kind, line[:2000]

    def _flush(self, pending: list[tuple[str, str]]) -> None:
        batch = self._batch(pending)
        if batch:
            swap_events_append(swap=self.swap, items=batch)

    def _batch(self, pending: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Take the pending log lines to record, within the swap's limit (a note says how many were left out)."""
        if not pending:
            return []
        room = LOG_EVENTS_MAX - self.log_events
        batch = pending[: max(room, 0)]
        if len(pending) > len(batch) and room >= 0:
            batch.append((EventKind.PROGRESS, f"log limit reached: {len(pending) - len(batch)} more line(s) not kept"))
        self.log_events += len(batch)
        pending.clear()
        return batch

    def _container_running(self, node: str) -> bool:
        result = self._connection(node).run(build_container_list_command(container=self.container), timeout=20)
        return self.container in result.stdout.split()

    def _beat(self, *, cancellable: bool = True) -> None:
        """Keep the heartbeat (so the reaper leaves the swap alone); a requested cancel stops a cancellable step."""
        now = time.monotonic()
        if now - self.last_beat < HEARTBEAT_SECONDS:
            return
        self.last_beat = now
        if swap_heartbeat(swap=self.swap, worker=self.worker).cancel_requested and cancellable:
            raise SwapCancelled()

    def _stop_after_launch(self, why: str) -> None:
        """Stop what this swap launched, take back secrets no rank read, and let the memory settle: a failed launch
        followed at once by the next one is the tight loop that can wedge a Spark."""
        if not self.launched or self.report is None or not self.report.connections:
            return
        if not Swap.objects.filter(pk=self.swap.pk, state__in=ACTIVE_STATES).exists():
            raise SwapSuperseded(f"swap {self.swap.id} ended elsewhere; leaving the nodes to whoever owns them")
        try:
            swap_events_append(
                swap=self.swap, items=[(EventKind.PROGRESS, f"{why}: stopping the container it launched")]
            )
            self.log_stop.set()
            self.head.run(self._stop_command(), timeout=STOP_WAIT_SECONDS)
            if self.secrets_written:
                remove = build_secrets_remove_command(cluster=self.cluster)
                _on_each({name: self._connection(name) for name in self.secrets_written}, lambda c: c.run(remove))
            self._wait_memory_settled(cancellable=False)  # a cancelled swap's memory settles too
        except SshError as exc:
            logger.warning("swap %s: could not stop the container after %s: %s", self.swap.id, why, exc)

    def _with_tail(self, message: str) -> str:
        if not self.tail:
            return message
        return message + "\nlast log lines:\n" + "\n".join(self.tail)


def _check_event(check: Check) -> tuple[str, str]:
    flag = "ok" if check.ok else "FAILED"
    return EventKind.PROGRESS, f"{flag}{' (warning)' if check.warning else ''}: {check.name}: {check.detail}"


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


def _death_cause(lines: deque[str]) -> str:
    """The most telling line of a dying rank's log: argparse's error, else the root cause above vLLM's generic
    "Engine core initialization failed" line (the last specific exception), else the first death sign."""
    stripped = [line.strip() for line in lines if line.strip()]
    for line in reversed(stripped):
        match = ARGPARSE_ERROR.search(line)
        if match and "Error" not in line.split(":", 1)[0]:
            return line[:300]
    for line in reversed(stripped):
        if CAUSE_LINE.search(line) and not GENERIC_CAUSE.search(line):
            return line[:300]
    for line in stripped:
        if DEATH_SIGNS.search(line) and not GENERIC_CAUSE.search(line):
            return line[:300]
    return stripped[-1][:300] if stripped else "the engine died"


def _clock(text: str) -> str | None:
    """A node's `date -u +%s` as docker's --since value (a second earlier, for a container started this second)."""
    value = text.strip().splitlines()[-1] if text.strip() else ""
    return str(int(value) - 1) if value.isdigit() else None


def launcher_probe_dispatch(*, cluster: ClusterSettings) -> LauncherProbe | None:
    """`launcher_probe_start`, returning once the launcher answers: its first output (at most
    PROBE_DISPATCH_WAIT_SECONDS).

    Until then the calling thread keeps off the interpreter and the processors: Python hands its lock to a thread
    woken by I/O only after up to 5 ms, and each step of the dispatch (open a channel, exec) waited that long behind
    the runner's database work; and once the command ran, that work (the claim, the `preflight` state) took
    processor time from the launcher's own start on a head that shares the processors with this service. The work
    cannot end the pre-flight any sooner than the launcher's whole answer, so it is done while the rest of the
    answer comes."""
    probe = launcher_probe_start(cluster=cluster)
    if probe is not None:
        probe.answering.wait(PROBE_DISPATCH_WAIT_SECONDS)
    return probe


# Launcher probes sent by a worker of this process before it claimed the swap's task (`swap_prepare`), by swap id,
# until the run takes them. One nobody takes (another process claimed the task) is dropped after PREPARED_KEEP_SECONDS.
PREPARED_KEEP_SECONDS = 60.0
_prepared: dict[str, tuple[LauncherProbe, float]] = {}
_prepared_lock = threading.Lock()


def swap_prepare(*, swap_id: str) -> None:
    """Send the swap's first remote command (the launcher's capabilities probe: `--help`, it changes nothing on the
    node) before the task is claimed, for this process's run of the swap to take: the claim, an exclusive write, then
    happens while the head answers instead of before it is asked. Returns once the launcher's answer begins."""
    probe = launcher_probe_dispatch(cluster=cluster_settings_get())
    now = time.monotonic()
    with _prepared_lock:
        for key in [key for key, (_, at) in _prepared.items() if now - at > PREPARED_KEEP_SECONDS]:
            del _prepared[key]
        if probe is not None:
            _prepared[swap_id] = (probe, now)


def _prepared_probe(swap_id: str) -> LauncherProbe | None:
    with _prepared_lock:
        entry = _prepared.pop(swap_id, None)
    return entry[0] if entry else None


def swap_run(*, swap_id: str, worker: str = "worker") -> Swap | None:
    """Run one swap by id; a swap already terminal (or unknown) is left alone.

    The launcher's capabilities command goes to the head before the swap's own row is read (or went before its task
    was claimed: `swap_prepare`): it only reads (the launcher's `--help`), so a swap found not runnable has cost one
    harmless command, and every runnable one starts its first remote step sooner. Should the head or the launcher
    settings have changed meanwhile, the pre-flight does not use the answer and asks again."""
    close_old_connections()
    cluster = cluster_settings_get()
    probe = _prepared_probe(swap_id) or launcher_probe_dispatch(cluster=cluster)
    swap = Swap.objects.select_related("model").filter(pk=swap_id).first()
    if swap is None or swap.is_terminal:
        return swap
    if swap.state != SwapState.QUEUED:
        # Claimed twice (a retried task after a worker died): never relaunch, leave it to the reaper.
        logger.warning("swap %s is already %s; not running it again", swap.id, swap.state)
        return swap
    return SwapRunner(swap, worker=worker, cluster=cluster, launcher_probe=probe).run()
