"""A real `manage.py serve` (daphne, the edge checks, the HTTP pool) in a subprocess with a data directory of its
own, for tests that must see what the server does with a connection rather than what Django does with a request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """One `manage.py serve --no-worker` on a free port, on SQLite in `data_dir`."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKCONTROL_", "DJANGO_"))}
        self.env.update(
            {
                "SPARKCONTROL_DATA_DIR": str(data_dir),
                "SPARKCONTROL_ENV_FILE": str(data_dir / "none.env"),
                "DATABASE_URL": "",
                "REDIS_URL": "",
                "DJANGO_SETTINGS_MODULE": "sparkcontrol.settings",
                "SPARKCONTROL_ADMIN_PASSWORD": "pw-edge-test-123",
                "PYTHONPATH": str(ROOT),
                **env,
            }
        )
        self.log_path = data_dir / f"serve-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--no-worker", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"serve did not start: {self.tail()}")

    def manage(self, *argv: str) -> str:
        """Run a management command against this server's database; its stdout."""
        done = subprocess.run(
            [sys.executable, "manage.py", *argv], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def token(self, name: str, scope: str) -> str:
        return self.manage("apitoken", "create", name, "--scope", scope).strip().splitlines()[-1]

    def tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


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
