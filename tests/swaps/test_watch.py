"""The loading swap's watches on their own threads: the port against a real socket and HTTP server, the lookout
with a look that answers or fails."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cluster.ssh import CommandResult
from swaps.watch import PortWatch, ProcessLook, ProcessLookout, ProcessWatch, model_listed, port_accepts


class _Models(BaseHTTPRequestHandler):
    served: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"object": "list", "data": [{"id": name} for name in self.served]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class BoundPort:
    """A port bound but not listening, as vLLM holds it while the engine loads; `listen` serves /v1/models."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handler = type("Models", (_Models,), {"served": []})
        self.server: ThreadingHTTPServer | None = None

    def listen(self, *served: str) -> None:
        self.handler.served = list(served)
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler, bind_and_activate=False)
        server.socket.close()
        server.socket = self.sock
        server.daemon_threads = True
        server.server_activate()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        self.server = server

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        else:
            self.sock.close()


@pytest.fixture
def bound():
    port = BoundPort()
    yield port
    port.close()


def _watch(port: int, served: str, seen: threading.Event) -> PortWatch:
    return PortWatch(host="127.0.0.1", port=port, served_name=served, on_ready=seen.set, name="test-port")


def test_the_port_is_refused_while_bound_and_accepts_once_listening(bound):
    assert not port_accepts("127.0.0.1", bound.port)
    bound.listen("m")
    assert port_accepts("127.0.0.1", bound.port)
    assert model_listed("127.0.0.1", bound.port, "m")
    assert not model_listed("127.0.0.1", bound.port, "other")


def test_the_watch_calls_ready_once_the_port_listens_with_the_model(bound):
    seen = threading.Event()
    watch = _watch(bound.port, "m", seen)
    watch.closer(0.002, 10.0)
    watch.start()
    try:
        assert not seen.wait(0.3), "ready before anything listened"
        bound.listen("m")
        assert seen.wait(5.0)
        watch.join(timeout=5.0)
        assert not watch.is_alive(), "the watch goes on after ready"
    finally:
        watch.close()


def test_a_listening_port_without_the_model_is_not_ready(bound):
    bound.listen("the-old-model")
    seen = threading.Event()
    watch = _watch(bound.port, "m", seen)
    watch.start()
    try:
        assert not seen.wait(0.6)
        bound.handler.served = ["m"]  # the list changes: the next repoll sees it
        assert seen.wait(5.0)
    finally:
        watch.close()


def test_a_closed_watch_stops_without_calling_ready(bound):
    seen = threading.Event()
    watch = _watch(bound.port, "m", seen)
    watch.start()
    watch.close()
    watch.join(timeout=2.0)
    assert not watch.is_alive()
    bound.listen("m")
    time.sleep(0.1)
    assert not seen.is_set()


def test_a_hint_makes_the_watch_look_closer():
    """Counted by looks at a port nothing listens on (every connect refused at once)."""
    attempts: list[float] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens: every connect is refused at once
    seen = threading.Event()
    watch = _watch(port, "m", seen)
    real = PortWatch._pause

    def counting(self: PortWatch) -> float:
        attempts.append(time.monotonic())
        return real(self)

    watch._pause = counting.__get__(watch)  # type: ignore[method-assign]
    watch.start()
    try:
        time.sleep(0.3)
        slow = len(attempts)
        watch.closer(0.002, 10.0)
        time.sleep(0.3)
        fast = len(attempts) - slow
    finally:
        watch.close()
    assert slow <= 8, attempts  # every 50 ms: ~6 in 0.3 s
    assert fast >= 3 * slow, (slow, fast)


def _top(*processes: str) -> CommandResult:
    table = "UID PID PPID C STIME TTY TIME CMD\n" + "".join(
        f"root {i} 0 0 10:00 ? 00:00:00 {p}\n" for i, p in enumerate(processes, 1)
    )
    return CommandResult(exit_code=0, stdout=table, stderr="")


def test_the_lookout_delivers_a_look_a_second_and_stops_when_closed():
    looks: list[ProcessLook] = []
    lookout = ProcessLookout(
        look=lambda: {"spark1": _top("sleep infinity", "vllm serve m")},
        deliver=looks.append,
        started=time.monotonic() - 0.9,
        name="test-lookout",
    )
    lookout.start()
    time.sleep(1.3)
    lookout.close()
    lookout.join(timeout=2.0)
    assert not lookout.is_alive()
    assert len(looks) == 2, looks  # at started + 1 s and one second after the first
    assert all(look.error is None and "vllm serve" in look.results["spark1"].stdout for look in looks)


def test_a_look_that_raises_is_delivered_and_ends_the_lookout():
    looks: list[ProcessLook] = []

    def broken() -> dict[str, CommandResult]:
        raise OSError("the connection dropped")

    lookout = ProcessLookout(look=broken, deliver=looks.append, started=time.monotonic() - 1.0, name="test-lookout")
    lookout.start()
    lookout.join(timeout=2.0)
    assert not lookout.is_alive()
    assert len(looks) == 1 and isinstance(looks[0].error, OSError)


def test_a_missing_process_is_death_once_seen_or_after_the_grace():
    watch = ProcessWatch(started=100.0)
    assert not watch.dead("spark1", 101.0)
    watch.seen("spark1")
    assert watch.dead("spark1", 101.0)
    assert watch.dead("spark2", 105.0)
