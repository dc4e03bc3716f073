"""The watches that run beside a loading swap, each on its own thread, so that none waits for another's work.

`PortWatch` looks at the head's vLLM port and tells the runner the moment the model is served; `ProcessLookout`
looks for the vLLM process in each node's container (an exit without a traceback leaves the container up and the
log silent). Before, both ran in the runner's loop between its log and database work: a look for the processes
(two SSH commands, 40-80 ms) that overlapped vLLM starting to listen delayed readiness by as much.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.ssh import CommandResult

# A TCP connect to the port (refused until vLLM listens, ~0.1 ms) this often, unless a hint asks for closer watching.
PORT_WATCH_SECONDS = 0.05
MODELS_REPOLL_SECONDS = 0.25  # the port answers but the model is not listed yet
MODELS_BODY_MAX = 1 << 20  # a model list is a few hundred bytes; more is not vLLM's answer
CONNECT_TIMEOUT_SECONDS = 0.5
MODELS_TIMEOUT_SECONDS = 2.0
# The vLLM process on each node is looked for this often (`docker top`).
PROCESS_WATCH_SECONDS = 1.0
# A node whose vLLM process was never seen counts as dead only after this long from the dispatch.
PROCESS_START_GRACE_SECONDS = 5.0


def port_accepts(host: str, port: int) -> bool:
    """The port takes a TCP connection (vLLM binds it early but listens only once its API server runs)."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def model_listed(host: str, port: int, served_name: str) -> bool:
    """vLLM lists `served_name` at `/v1/models`. The port is vLLM's own plain-HTTP one, so the standard library's
    client asks: an httpx client would build a TLS context and load the CA bundle (~15 ms, ~1 MiB) for nothing."""
    connection = http.client.HTTPConnection(host, port, timeout=MODELS_TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/v1/models", headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(MODELS_BODY_MAX)
        if response.status != 200:
            return False
        ids = [item.get("id") for item in json.loads(body).get("data", [])]
    except (OSError, http.client.HTTPException, ValueError, AttributeError, TypeError):
        return False
    finally:
        connection.close()
    return served_name in ids


class PortWatch(threading.Thread):
    """Calls `on_ready` once the head's port accepts and `/v1/models` lists the served name, then ends.

    It looks every PORT_WATCH_SECONDS; `closer(every, seconds)` (a hint in the log: the API server is near) makes
    it look every `every` for the next `seconds`, at once."""

    def __init__(self, *, host: str, port: int, served_name: str, on_ready: Callable[[], None], name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.host = host
        self.port = port
        self.served_name = served_name
        self.on_ready = on_ready
        self._closer: list[tuple[float, float]] = []  # (every, until), monotonic
        self._lock = threading.Lock()
        self._woken = threading.Event()
        self._closed = False

    def closer(self, every: float, seconds: float) -> None:
        with self._lock:
            self._closer.append((every, time.monotonic() + seconds))
        self._woken.set()

    def close(self) -> None:
        self._closed = True
        self._woken.set()

    def _pause(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._closer = [(every, until) for every, until in self._closer if until > now]
            return min([every for every, _ in self._closer], default=PORT_WATCH_SECONDS)

    def run(self) -> None:
        while not self._closed:
            if port_accepts(self.host, self.port):
                if model_listed(self.host, self.port, self.served_name):
                    if not self._closed:
                        self.on_ready()
                    return
                pause = MODELS_REPOLL_SECONDS
            else:
                pause = self._pause()
            self._woken.wait(pause)
            self._woken.clear()


@dataclass
class ProcessLook:
    """One look for the vLLM process on every rank node: each node's `docker top`, or what stopped the look."""

    results: dict[str, CommandResult] = field(default_factory=dict)
    at: float = 0.0  # monotonic
    error: Exception | None = None


class ProcessWatch:
    """Whether a node's missing vLLM process means it died: once seen, or never seen within the start grace."""

    def __init__(self, *, started: float) -> None:
        self.started = started
        self.seen_on: set[str] = set()

    def seen(self, node: str) -> None:
        self.seen_on.add(node)

    def dead(self, node: str, now: float) -> bool:
        return node in self.seen_on or now - self.started >= PROCESS_START_GRACE_SECONDS


class ProcessLookout(threading.Thread):
    """Hands `deliver` a `ProcessLook` every PROCESS_WATCH_SECONDS from `started` (the first one second after it),
    until closed; a look that raises is delivered as its error and ends the lookout."""

    def __init__(
        self,
        *,
        look: Callable[[], dict[str, CommandResult]],
        deliver: Callable[[ProcessLook], None],
        started: float,
        name: str,
    ) -> None:
        super().__init__(daemon=True, name=name)
        self.look = look
        self.deliver = deliver
        self.started = started
        self._stop_event = threading.Event()

    def close(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        due = self.started + PROCESS_WATCH_SECONDS
        while not self._stop_event.wait(max(0.0, due - time.monotonic())):
            try:
                item = ProcessLook(results=self.look(), at=time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the runner decides what an SSH failure means for the swap
                item = ProcessLook(at=time.monotonic(), error=exc)
            if self._stop_event.is_set():
                return
            self.deliver(item)
            if item.error is not None:
                return
            due = time.monotonic() + PROCESS_WATCH_SECONDS
