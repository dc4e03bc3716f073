"""The one module that talks SSH to the Sparks (paramiko), behind a small interface.

Host keys are pinned: a host whose key is not recorded, or whose key changed, gets no command at all.
TCP_NODELAY is set on the socket: without it each exec on an open connection waits ~45 ms on Nagle's
algorithm plus delayed ACK. Commands run through the remote user's non-login shell, so no profile files
are read on each command.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
from django.conf import settings

from cluster.models import SparkHost

CONNECT_TIMEOUT = 10.0


class SshError(Exception):
    """Anything that stops a command from running on a Spark; the message says which host and why."""


class HostKeyError(SshError):
    """The host key is not pinned, or differs from the pinned one; nothing was sent."""


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


def _pinned_key(host: SparkHost) -> paramiko.PKey:
    if not host.host_key.strip():
        raise HostKeyError(f"{host.name}: no pinned host key; run `manage.py spark trust {host.name}` first")
    key_type, _, data = host.host_key.strip().partition(" ")
    try:
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(data.split()[0]))
    except Exception as exc:  # noqa: BLE001 - any decoding failure means the pinned key is unusable
        raise HostKeyError(f"{host.name}: the pinned host key cannot be read: {exc}") from exc


def _open_socket(address: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((address, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def key_path_for(host: SparkHost) -> str:
    return str(Path(host.key_path or settings.SPARKCONTROL["SSH_KEY"]).expanduser())


class SparkConnection:
    """One authenticated SSH connection to a Spark, reused for every command of a swap."""

    def __init__(self, host: SparkHost, *, timeout: float = CONNECT_TIMEOUT) -> None:
        self.host = host
        self.pooled = False
        self.client = self._connect(host, timeout)

    @staticmethod
    def _connect(host: SparkHost, timeout: float) -> paramiko.SSHClient:
        pinned = _pinned_key(host)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        host_id = host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"
        client.get_host_keys().add(host_id, pinned.get_name(), pinned)
        try:
            sock = _open_socket(host.address, host.ssh_port, timeout)
        except OSError as exc:
            raise SshError(f"{host.name}: cannot reach {host.address}:{host.ssh_port}: {exc}") from exc
        try:
            client.connect(
                host.address,
                port=host.ssh_port,
                username=host.ssh_user,
                key_filename=key_path_for(host),
                sock=sock,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                look_for_keys=False,
                allow_agent=False,
            )
        except paramiko.BadHostKeyException as exc:
            sock.close()
            raise HostKeyError(
                f"{host.name}: the host key changed (got {exc.key.get_name()} {exc.key.get_base64()[:16]}...); "
                f"if the box was reinstalled, check and re-pin it with `manage.py spark trust {host.name}`"
            ) from exc
        except paramiko.SSHException as exc:
            sock.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(f"{host.name}: the server's key type is not the pinned one: {exc}") from exc
            raise SshError(f"{host.name}: SSH failed: {exc}") from exc
        except OSError as exc:
            sock.close()
            raise SshError(f"{host.name}: SSH failed: {exc}") from exc
        return client

    @property
    def is_active(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        """Close the connection; a pooled one stays open for the next user."""
        if not self.pooled:
            self.client.close()

    def discard(self) -> None:
        self.pooled = False
        self.client.close()

    def __enter__(self) -> SparkConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _session(self, timeout: float) -> paramiko.Channel:
        """A new channel; a pooled connection the server dropped is re-established once."""
        for attempt in (1, 2):
            transport = self.client.get_transport()
            try:
                if transport is None or not transport.is_active():
                    raise paramiko.SSHException("the SSH connection is closed")
                return transport.open_session(timeout=timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not self.pooled or attempt == 2:
                    raise SshError(f"{self.host.name}: cannot open an SSH session: {exc}") from exc
                self.client.close()
                self.client = self._connect(self.host, CONNECT_TIMEOUT)
        raise AssertionError("unreachable")

    def run(self, command: str, *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        """Run a command to completion; `stdin` (e.g. a secret) is written to it and closed."""
        channel = self._session(timeout)
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin.encode())
            channel.shutdown_write()
            stdout = _read_all(channel.makefile("rb"))
            stderr = _read_all(channel.makefile_stderr("rb"))
            exit_code = channel.recv_exit_status()
            channel.close()
        except (paramiko.SSHException, OSError) as exc:
            raise SshError(f"{self.host.name}: command failed to run: {exc}") from exc
        return CommandResult(exit_code, stdout, stderr)

    def stream_lines(self, command: str, *, stop: threading.Event, poll: float = 0.05) -> Iterator[str]:
        """Yield output lines of a long-running command (e.g. `docker logs -f`) until it ends or `stop` is set."""
        channel = self._session(CONNECT_TIMEOUT)
        channel.set_combine_stderr(True)
        channel.settimeout(poll)
        channel.exec_command(command)
        buffer = b""
        try:
            while not stop.is_set():
                try:
                    chunk = channel.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace").rstrip("\r")
            if buffer and not stop.is_set():
                yield buffer.decode(errors="replace")
        finally:
            channel.close()


class ConnectionPool:
    """Open connections kept per Spark between swaps, so a swap's first command needs no new handshake.

    A connection is reused only while the host's address, port, user, key file and pinned key are unchanged,
    its transport is alive, and it was used within `max_idle` seconds.
    """

    def __init__(self, *, max_idle: float = 600.0) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[tuple, SparkConnection, float]] = {}

    @staticmethod
    def _identity(host: SparkHost) -> tuple:
        return (host.address, host.ssh_port, host.ssh_user, key_path_for(host), host.host_key.strip())

    def get(self, host: SparkHost) -> SparkConnection:
        identity = self._identity(host)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.pop(host.pk, None)
        if entry is not None:
            old_identity, connection, last_used = entry
            if old_identity == identity and connection.is_active and now - last_used < self.max_idle:
                with self._lock:
                    self._entries[host.pk] = (identity, connection, now)
                return connection
            connection.discard()
        connection = SparkConnection(host)
        connection.pooled = True
        with self._lock:
            self._entries[host.pk] = (identity, connection, now)
        return connection

    def get_all(self, hosts: list[SparkHost]) -> dict[str, SparkConnection | SshError]:
        """`get` for several Sparks; those without a usable pooled connection are connected at once, not in turn.

        Returns each host's connection, or the SshError that stopped it, by host name.
        """
        out: dict[str, SparkConnection | SshError] = {}
        missing = []
        for host in hosts:
            if self._usable(host):
                out[host.name] = self.get(host)
            else:
                missing.append(host)

        def connect(host: SparkHost) -> None:
            try:
                out[host.name] = self.get(host)
            except SshError as exc:
                out[host.name] = exc

        threads = [threading.Thread(target=connect, args=(host,), daemon=True) for host in missing[1:]]
        for thread in threads:
            thread.start()
        if missing:
            connect(missing[0])
        for thread in threads:
            thread.join()
        return out

    def _usable(self, host: SparkHost) -> bool:
        with self._lock:
            entry = self._entries.get(host.pk)
        if entry is None:
            return False
        identity, connection, last_used = entry
        return (
            identity == self._identity(host) and connection.is_active and time.monotonic() - last_used < self.max_idle
        )

    def clear(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for _, connection, _ in entries:
            connection.discard()


# One pool per process (like Django's persistent database connections); workers are where SSH happens.
connection_pool = ConnectionPool()


def spark_connect(host: SparkHost) -> SparkConnection:
    """An open connection to `host` from the pool (host key pinned, TCP_NODELAY set)."""
    return connection_pool.get(host)


def spark_connect_all(hosts: list[SparkHost]) -> dict[str, SparkConnection | SshError]:
    """Open connections to several Sparks from the pool; missing ones are connected concurrently."""
    return connection_pool.get_all(hosts)


def _read_all(stream) -> str:  # type: ignore[no-untyped-def]
    return stream.read().decode(errors="replace")


def fetch_host_key(*, address: str, port: int, timeout: float = CONNECT_TIMEOUT) -> paramiko.PKey:
    """The key a server presents, for showing its fingerprint before it is trusted (no command is run)."""
    sock = _open_socket(address, port, timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()


def fingerprint(key: paramiko.PKey) -> str:
    """SHA256 fingerprint as `ssh-keygen -l` prints it."""
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def measure_exec(connection: SparkConnection, repeats: int = 5) -> float:
    """Median seconds of a trivial exec on an open connection (used by benchmarks and diagnostics)."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        connection.run("true")
        samples.append(time.perf_counter() - started)
    samples.sort()
    return samples[len(samples) // 2]
