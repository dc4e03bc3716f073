"""A real `manage.py serve` (daphne, the edge checks, the HTTP pool) in a subprocess with a data directory of its
own, for tests that must see what the server does with a connection rather than what Django does with a request."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from testkit.service import Service


class ServeProcess:
    """One `manage.py serve --no-worker` on a free port, on SQLite in `data_dir`."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.service = Service(
            data_dir, data_dir=data_dir, env={"SPARKCONTROL_ADMIN_PASSWORD": "pw-edge-test-123", **env}
        )
        try:
            self.web = self.service.serve(worker=False)
        except BaseException:
            self.service.stop()
            raise
        self.port = self.web.port
        self.url = self.web.url

    def manage(self, *argv: str) -> str:
        """Run a management command against this server's database; its stdout."""
        return self.service.manage(*argv)

    def token(self, name: str, scope: str) -> str:
        return self.service.token(name, scope)

    def stop(self) -> None:
        self.service.stop()


def raw_exchange(port: int, head: bytes, body: bytes = b"", *, timeout: float = 3.0) -> tuple[bytes, float]:
    """Send a request head and the first body bytes, never the rest; return what came back and how long the
    first byte of the answer took (the connection stays open from the client's side)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(head + body)
        received = b""
        first = None
        sock.settimeout(timeout)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                if first is None:
                    first = time.monotonic() - started
                received += chunk
                if b"\r\n\r\n" in received and _complete(received):
                    break
        except TimeoutError:
            pass
        return received, first if first is not None else float("inf")


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False
