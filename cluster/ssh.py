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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko
from django.conf import settings

from cluster.models import SparkHost

CONNECT_TIMEOUT = 10.0
# Prefixed to a command that gets no input: its shell (and everything it runs) reads /dev/null.
STDIN_CLOSED = "exec </dev/null; "
OUTPUT_CHUNK = 65536  # bytes asked of a channel per read


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
    """An SSH connection to a Spark, safe to share between threads: every command opens its own channel.

    Made directly (`SparkConnection(host)`), it owns one SSH connection and `close()` ends it. From the pool
    (`spark_connect`), it is a handle on the host's pooled connections: each `run` or `stream_lines` leases a channel
    on one of them for its own duration, so `close()` ends nothing that others use, and a connection the server
    dropped is replaced when a session is opened.
    """

    def __init__(self, host: SparkHost, *, timeout: float = CONNECT_TIMEOUT) -> None:
        self.host = host
        self.pooled = False
        self._slot: _HostSlot | None = None
        self.client: paramiko.SSHClient | None = _connect(host, timeout)

    @classmethod
    def _pooled(cls, slot: _HostSlot) -> SparkConnection:
        connection = cls.__new__(cls)
        connection.host = slot.host
        connection.pooled = True
        connection._slot = slot
        connection.client = None
        return connection

    @property
    def is_active(self) -> bool:
        if self._slot is not None:
            return self._slot.alive()
        return _alive(self.client)

    def close(self) -> None:
        """End an own connection; on a pooled handle nothing to do (each command returned its channel)."""
        if self._slot is None and self.client is not None:
            self.client.close()

    def discard(self) -> None:
        if self._slot is not None:
            self._slot.close_idle()
        elif self.client is not None:
            self.client.close()

    def __enter__(self) -> SparkConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _channel(self, timeout: float) -> Iterator[paramiko.Channel]:
        """A new session channel, closed (and its pooled connection's place given back) afterwards."""
        if self._slot is not None:
            with self._slot.session(timeout) as channel:
                yield channel
            return
        transport = self.client.get_transport() if self.client is not None else None
        try:
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("the SSH connection is closed")
            channel = transport.open_session(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SshError(f"{self.host.name}: cannot open an SSH session: {exc}") from exc
        try:
            yield channel
        finally:
            _close_quietly(channel)

    def run(
        self,
        command: str,
        *,
        stdin: str | None = None,
        timeout: float = 60.0,
        answering: threading.Event | None = None,
    ) -> CommandResult:
        """Run a command to completion; `stdin` (e.g. a secret) is written to it and closed. `answering` is set once
        the command's first output arrives or it ends (or the attempt failed)."""
        try:
            return self._run(command, stdin=stdin, timeout=timeout, answering=answering)
        finally:
            if answering is not None:
                answering.set()

    def _run(
        self,
        command: str,
        *,
        stdin: str | None,
        timeout: float,
        answering: threading.Event | None,
    ) -> CommandResult:
        with self._channel(timeout) as channel:
            try:
                channel.settimeout(timeout)
                if stdin is None:
                    # No end-of-input is sent: it could race the server's close of a command that already ended
                    # (paramiko builds the EOF under the channel's lock but sends it after releasing it), and OpenSSH
                    # drops the whole connection, every other session on it included, on an EOF for a channel it has
                    # freed. The command reads /dev/null instead.
                    channel.exec_command(STDIN_CLOSED + command)
                else:
                    # The command reads its input to the end before it ends, so the EOF comes first.
                    channel.exec_command(command)
                    channel.sendall(stdin.encode())
                    channel.shutdown_write()
                first = b""
                if answering is not None:
                    first = channel.recv(OUTPUT_CHUNK)  # blocks until the first output (b"" once it ended)
                    answering.set()
                stdout = (first + channel.makefile("rb").read()).decode(errors="replace")
                stderr = _read_all(channel.makefile_stderr("rb"))
                exit_code = channel.recv_exit_status()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise SshError(f"{self.host.name}: command failed to run: {_reason(exc)}") from exc
        return CommandResult(exit_code, stdout, stderr)

    def stream_lines(self, command: str, *, stop: threading.Event, poll: float = 0.05) -> Iterator[str]:
        """Yield output lines of a long-running command (e.g. `docker logs -f`) until it ends or `stop` is set."""
        with self._channel(CONNECT_TIMEOUT) as channel:
            try:
                channel.set_combine_stderr(True)
                channel.settimeout(poll)
                channel.exec_command(command)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise SshError(f"{self.host.name}: command failed to run: {_reason(exc)}") from exc
            buffer = b""
            while not stop.is_set():
                try:
                    chunk = channel.recv(OUTPUT_CHUNK)
                except TimeoutError:
                    continue
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    raise SshError(f"{self.host.name}: the output stopped: {_reason(exc)}") from exc
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace").rstrip("\r")
            if buffer and not stop.is_set():
                yield buffer.decode(errors="replace")


def _connect(host: SparkHost, timeout: float) -> paramiko.SSHClient:
    """A new authenticated connection with the pinned host key checked."""
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
        client.close()
        sock.close()
        raise HostKeyError(
            f"{host.name}: the host key changed (got {exc.key.get_name()} {exc.key.get_base64()[:16]}...); "
            f"if the box was reinstalled, check and re-pin it with `manage.py spark trust {host.name}`"
        ) from exc
    except paramiko.SSHException as exc:
        client.close()
        sock.close()
        if "not found in known_hosts" in str(exc):
            raise HostKeyError(f"{host.name}: the server's key type is not the pinned one: {exc}") from exc
        raise SshError(f"{host.name}: SSH failed: {exc}") from exc
    except (OSError, EOFError) as exc:
        client.close()
        sock.close()
        raise SshError(f"{host.name}: SSH failed: {_reason(exc)}") from exc
    return client


def _close_quietly(channel: paramiko.Channel) -> None:
    """Close a channel; on a connection that just died, sending the close fails, and there is nothing left to close."""
    try:
        channel.close()
    except (paramiko.SSHException, EOFError, OSError):
        pass


def _reason(exc: BaseException) -> str:
    """An exception's message, or its type when it has none (paramiko's EOFError: the server closed the connection)."""
    if isinstance(exc, EOFError) and not str(exc):
        return "the server closed the connection (EOF)"
    return str(exc) or type(exc).__name__


def _alive(client: paramiko.SSHClient | None) -> bool:
    transport = client.get_transport() if client is not None else None
    return transport is not None and transport.is_active()


class _Pooled:
    """One pooled SSH connection and the channels open on it right now."""

    def __init__(self, client: paramiko.SSHClient, capacity: int) -> None:
        self.client = client
        self.capacity = capacity
        self.channels = 0
        self.last_used = time.monotonic()
        self.closing = False

    @property
    def alive(self) -> bool:
        return not self.closing and _alive(self.client)


class _HostSlot:
    """The pooled connections of one Spark (one identity: address, port, user, key file, pinned key).

    At most `pool.max_per_host` connections, each carrying at most `pool.sessions_per_connection` channels at once
    (OpenSSH refuses more than MaxSessions, 10 by default). A command that finds every place taken waits for one,
    up to its own timeout. A connection is closed only when no channel is open on it, or when it is already dead.
    """

    def __init__(self, pool: ConnectionPool, host: SparkHost, identity: tuple) -> None:
        self.pool = pool
        self.host = host
        self.identity = identity
        self.connections: list[_Pooled] = []
        self.connecting = 0
        self.retired = False
        self.handle = SparkConnection._pooled(self)

    # All state below is guarded by pool.cond.
    def _prune_locked(self, now: float) -> list[paramiko.SSHClient]:
        """Drop dead connections, and idle ones past max_idle (or any but one idle past spare_idle)."""
        doomed = []
        idle = 0
        for pooled in list(self.connections):
            stale = pooled.channels == 0 and now - pooled.last_used >= self.pool.max_idle
            spare = pooled.channels == 0 and idle >= 1 and now - pooled.last_used >= self.pool.spare_idle
            if pooled.channels == 0:
                idle += 1
            if not _alive(pooled.client) or stale or spare or (self.retired and pooled.channels == 0):
                self.connections.remove(pooled)
                pooled.closing = True
                doomed.append(pooled.client)
        return doomed

    def alive(self) -> bool:
        with self.pool.cond:
            return any(pooled.alive for pooled in self.connections)

    def _connect_new(self, *, take: bool = False) -> _Pooled:
        """Open one more connection (the caller has counted it in `connecting`); `take` leases a channel place."""
        cond = self.pool.cond
        try:
            client = _connect(self.host, CONNECT_TIMEOUT)
        except BaseException:
            with cond:
                self.connecting -= 1
                cond.notify_all()
            raise
        pooled = _Pooled(client, self.pool.sessions_per_connection)
        pooled.channels = int(take)
        with cond:
            self.connecting -= 1
            self.connections.append(pooled)
            cond.notify_all()
        return pooled

    def warm(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Make sure one live connection exists (waiting for one being opened rather than opening a second)."""
        cond = self.pool.cond
        deadline = time.monotonic() + timeout
        doomed: list[paramiko.SSHClient] = []
        try:
            with cond:
                while True:
                    doomed += self._prune_locked(time.monotonic())
                    if any(pooled.alive for pooled in self.connections):
                        return
                    if self.connecting == 0:
                        self.connecting += 1
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise SshError(f"{self.host.name}: the SSH connection took over {timeout:.0f} s to open")
                    cond.wait(left)
        finally:
            _close_all(doomed)  # outside the lock: closing joins the transport's thread
        self._connect_new()

    def _lease(self, deadline: float, timeout: float) -> _Pooled:
        """A connection with a free channel place (taken), opening a new one within the bound, else waiting."""
        cond = self.pool.cond
        doomed: list[paramiko.SSHClient] = []
        try:
            with cond:
                while True:
                    doomed += self._prune_locked(time.monotonic())
                    for pooled in self.connections:
                        if pooled.alive and pooled.channels < pooled.capacity:
                            pooled.channels += 1
                            pooled.last_used = time.monotonic()
                            return pooled
                    if len(self.connections) + self.connecting < self.pool.max_per_host:
                        self.connecting += 1
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise SshError(
                            f"{self.host.name}: no free SSH session within {timeout:.0f} s "
                            f"({self.pool.max_per_host} connections busy)"
                        )
                    cond.wait(min(left, 1.0))
        finally:
            _close_all(doomed)
        return self._connect_new(take=True)

    def _give_back(self, pooled: _Pooled) -> None:
        cond = self.pool.cond
        with cond:
            pooled.channels -= 1
            pooled.last_used = time.monotonic()
            doomed = []
            gone = self.retired or pooled.closing or not _alive(pooled.client)
            if pooled.channels == 0 and gone and pooled in self.connections:
                self.connections.remove(pooled)
                pooled.closing = True
                doomed.append(pooled.client)
            cond.notify_all()
        _close_all(doomed)

    @contextmanager
    def session(self, timeout: float) -> Iterator[paramiko.Channel]:
        """A channel on one of the pooled connections. A dead connection is dropped and the open retried on
        another (or a new) one; the server refusing one more channel lowers that connection's share."""
        deadline = time.monotonic() + timeout
        dead = 0
        while True:
            pooled = self._lease(deadline, timeout)
            try:
                channel = pooled.client.get_transport().open_session(timeout=max(deadline - time.monotonic(), 1.0))
                break
            except paramiko.ChannelException as exc:
                # Refused (MaxSessions) on a live connection: use fewer channels on it and wait for a place.
                with self.pool.cond:
                    pooled.capacity = max(1, pooled.channels - 1)
                self._give_back(pooled)
                if time.monotonic() >= deadline:
                    raise SshError(f"{self.host.name}: cannot open an SSH session: {exc}") from exc
            except (paramiko.SSHException, EOFError, OSError, AttributeError) as exc:
                if isinstance(exc, EOFError | OSError):
                    # The server dropped it (the transport's thread may not have noticed yet): nobody gets it again.
                    pooled.closing = True
                self._give_back(pooled)
                if pooled.alive or dead >= 2 or time.monotonic() >= deadline:
                    raise SshError(f"{self.host.name}: cannot open an SSH session: {_reason(exc)}") from exc
                dead += 1  # the connection died under us: the next lease drops it and opens another
        try:
            yield channel
        finally:
            _close_quietly(channel)
            self._give_back(pooled)

    def close_idle(self) -> None:
        with self.pool.cond:
            doomed = [pooled for pooled in self.connections if pooled.channels == 0]
            for pooled in doomed:
                self.connections.remove(pooled)
                pooled.closing = True
        _close_all([pooled.client for pooled in doomed])


def _close_all(clients: list[paramiko.SSHClient]) -> None:
    for client in clients:
        client.close()


MAX_CONNECTIONS_PER_HOST = 4
SESSIONS_PER_CONNECTION = 8


class ConnectionPool:
    """SSH connections kept per Spark and shared by every thread of the process, so a swap's first command needs no
    new handshake and concurrent work (a swap, API validates) neither opens a connection per caller nor closes one
    another uses.

    Bounded per host (`max_per_host` connections of `sessions_per_connection` channels each). A connection is reused
    only while the host's address, port, user, key file and pinned key are unchanged, it is alive, and it was used
    within `max_idle` seconds; extra connections opened for a burst close after `spare_idle` seconds unused.
    """

    def __init__(
        self,
        *,
        max_idle: float = 600.0,
        spare_idle: float = 5.0,
        max_per_host: int = MAX_CONNECTIONS_PER_HOST,
        sessions_per_connection: int = SESSIONS_PER_CONNECTION,
    ) -> None:
        self.max_idle = max_idle
        self.spare_idle = spare_idle
        self.max_per_host = max_per_host
        self.sessions_per_connection = sessions_per_connection
        self.cond = threading.Condition()
        self._slots: dict[int, _HostSlot] = {}

    @staticmethod
    def _identity(host: SparkHost) -> tuple:
        return (host.address, host.ssh_port, host.ssh_user, key_path_for(host), host.host_key.strip())

    def _slot(self, host: SparkHost) -> _HostSlot:
        identity = self._identity(host)
        doomed: list[paramiko.SSHClient] = []
        with self.cond:
            slot = self._slots.get(host.pk)
            if slot is None or slot.identity != identity:
                if slot is not None:
                    # Changed in the admin: new users get new connections; the old ones close once unused.
                    slot.retired = True
                    doomed = slot._prune_locked(time.monotonic())
                slot = self._slots[host.pk] = _HostSlot(self, host, identity)
        _close_all(doomed)
        return slot

    def get(self, host: SparkHost) -> SparkConnection:
        """The host's shared handle, with one live connection (opened now if there is none). SshError if not."""
        slot = self._slot(host)
        slot.warm()
        return slot.handle

    def get_all(self, hosts: list[SparkHost]) -> dict[str, SparkConnection | SshError]:
        """`get` for several Sparks; those without a live connection are connected at once, not in turn.

        Returns each host's connection, or the SshError that stopped it, by host name.
        """
        out: dict[str, SparkConnection | SshError] = {}

        def connect(host: SparkHost) -> None:
            try:
                out[host.name] = self.get(host)
            except SshError as exc:
                out[host.name] = exc

        threads = [threading.Thread(target=connect, args=(host,), daemon=True) for host in hosts[1:]]
        for thread in threads:
            thread.start()
        if hosts:
            connect(hosts[0])
        for thread in threads:
            thread.join()
        return {host.name: out[host.name] for host in hosts}

    def transports(self, host: SparkHost) -> list[paramiko.Transport]:
        """The live pooled transports of `host` (diagnostics and tests)."""
        with self.cond:
            slot = self._slots.get(host.pk)
            clients = [pooled.client for pooled in slot.connections] if slot else []
        return [transport for client in clients if (transport := client.get_transport()) is not None]

    def clear(self) -> None:
        with self.cond:
            slots, self._slots = list(self._slots.values()), {}
            clients = []
            for slot in slots:
                slot.retired = True
                clients += [pooled.client for pooled in slot.connections]
                for pooled in slot.connections:
                    pooled.closing = True
                slot.connections = []
            self.cond.notify_all()
        _close_all(clients)


# One pool per process (like Django's persistent database connections); workers are where SSH happens.
connection_pool = ConnectionPool()


def spark_connect(host: SparkHost) -> SparkConnection:
    """A shared connection to `host` from the pool (host key pinned, TCP_NODELAY set); safe from many threads."""
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
