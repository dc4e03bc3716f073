"""What the serving process does once at start, before and after migrations, and the light housekeeping loop it
runs.

Before anything else `serve` claims its listening port (`port_claim`) and, on the embedded default, its data
directory (`data_dir_claim`): a second `serve` on the same port or the same data directory is refused before it
touches the database. The data directory claim is an advisory lock the kernel drops when its process dies, however
it dies, so a claim left by a crashed process is never obeyed; the pid it records tells the next process whose
swaps were orphaned.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from django.db import close_old_connections

logger = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 5.0
DATA_DIR_LOCK = "serve.lock"


class StartRefused(Exception):
    """`serve` cannot start; the message says why and what to do."""


def port_claim(*, host: str, port: int, shared: bool = False) -> socket.socket:
    """Bind and listen on host:port now, so a port in use is found before anything else is touched.

    `shared`: the socket has SO_REUSEPORT, so that `port_share` can open more listening sockets on its address. Two
    sockets that both have it may share a port, so the port is first taken by a plain socket (which any listener
    refuses) and handed over at once: a second `serve --workers N` on the same port is refused like any other."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = host.strip("[]")
    try:
        if not shared:
            return socket.create_server((address, port), family=family, backlog=1024)
        with socket.create_server((address, port), family=family, backlog=1) as plain:
            port = plain.getsockname()[1]
        return socket.create_server((address, port), family=family, backlog=1024, reuse_port=True)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartRefused(
                f"port {port} on {host} is already in use (another Spark Control or another program); "
                f"stop it or choose another port with --port"
            ) from exc
        raise StartRefused(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def port_share(listener: socket.socket) -> socket.socket:
    """Another listening socket on the address of `listener` (made by `port_claim(shared=True)`).

    With one socket shared by the serving processes, whichever process wakes first accepts every connection waiting
    (Twisted accepts up to 100 at a time): 64 keep-alive clients connecting together could land on one process while
    the other idled. With a socket each (SO_REUSEPORT), the kernel spreads new connections across them."""
    host, port = listener.getsockname()[:2]
    return socket.create_server((host, port), family=listener.family, backlog=1024, reuse_port=True)


@dataclass
class DataDirClaim:
    """The data directory held by this process; `previous_pid` is the last process that held it (now gone)."""

    path: Path
    fd: int
    previous_pid: int | None

    def release(self) -> None:
        # The pid stays in the file: whatever swap this process leaves running is the next process's to reap.
        os.close(self.fd)


def data_dir_claim(*, data_dir: Path) -> DataDirClaim:
    """Hold the data directory for this process (an flock on `serve.lock`, with this pid in it) or refuse."""
    path = Path(data_dir) / DATA_DIR_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _pid_in(fd)
        os.close(fd)
        who = f"process {holder}" if holder else "another process"
        raise StartRefused(
            f"another Spark Control ({who}) is already serving from the data directory {data_dir}. Two processes "
            "on one data directory without REDIS_URL do not see each other's swaps: open the running one, "
            "stop it first, or set SPARKCONTROL_DATA_DIR to another directory; to run several processes, scale out "
            "(DATABASE_URL and REDIS_URL, see docs/OPERATIONS.md)"
        ) from None
    previous = _pid_in(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DataDirClaim(path=path, fd=fd, previous_pid=previous if previous != os.getpid() else None)


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def on_serve_start(*, previous_pid: int | None = None) -> threading.Event:
    """Reload the service list, start the periodic probe sweeps, reap swaps orphaned by a dead worker, and start
    periodic housekeeping.

    `previous_pid` is the process that served from this data directory before (known gone): its swaps are marked
    interrupted at once rather than when their heartbeat goes stale.

    Returns an Event that stops the housekeeping thread when set.
    """
    from cluster.services import ServicesConfigError, services_sync

    try:
        services_sync()
    except ServicesConfigError as exc:
        for error in exc.errors:
            logger.error("services configuration refused, keeping the previous one: %s", error)
    from cluster.schedule import probes_schedule_start

    probes_schedule_start()
    from telemetry.schedule import load_sampling_start

    load_sampling_start()
    _reap_gone_workers(previous_pid=previous_pid)
    from actions.services import actions_schedule_start

    actions_schedule_start()
    _resume_downloads(previous_pid=previous_pid, at_start=True)
    _housekeeping_once()
    stop = threading.Event()
    threading.Thread(target=_housekeeping_loop, args=(stop,), name="housekeeping", daemon=True).start()
    return stop


def _resume_downloads(*, previous_pid: int | None = None, at_start: bool = False) -> None:
    """Model downloads whose runner is gone are taken up again: at start, those of a process of this machine that no
    longer exists at once; otherwise once their heartbeat is stale."""
    from modelfiles.services import downloads_resume

    host = socket.gethostname()

    def gone(worker: str) -> bool:
        worker_host, _, pid = worker.rpartition(":")
        if not at_start or worker_host != host or not pid.isdigit():
            return False
        return int(pid) == previous_pid or not _pid_alive(int(pid))

    try:
        for download in downloads_resume(gone=gone):
            logger.warning("download %s (%s) resumed, attempt %s", download.id, download.repo, download.attempt)
    except Exception:  # noqa: BLE001 - start-up goes on; the housekeeping loop tries again
        logger.exception("could not resume the model downloads")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_gone_workers(*, previous_pid: int | None = None) -> None:
    """Interrupt at once the swaps whose worker ran on this machine in a process that no longer exists."""
    from swaps.services import swaps_reap_gone_workers

    host = socket.gethostname()

    def gone(worker: str) -> bool:
        worker_host, _, pid = worker.rpartition(":")
        if worker_host != host or not pid.isdigit():
            return False
        return int(pid) == previous_pid or not _pid_alive(int(pid))

    try:
        for swap in swaps_reap_gone_workers(gone=gone):
            logger.warning("swap %s (%s) was interrupted: %s", swap.id, swap.model_key, swap.error)
        from actions.services import actions_reap_gone_workers

        for run in actions_reap_gone_workers(gone=gone):
            logger.warning("scheduled action %s (run %s) was interrupted", run.action.name, run.id)
    except Exception:  # noqa: BLE001 - housekeeping must never stop the server
        logger.exception("could not reap the swaps of workers that are gone")
    finally:
        close_old_connections()


def _housekeeping_once() -> None:
    from cluster.schedule import probes_schedule_revive
    from swaps.services import swaps_reap_stale
    from telemetry.schedule import load_sampling_revive

    try:
        for swap in swaps_reap_stale():
            logger.warning("swap %s (%s) was interrupted: %s", swap.id, swap.model_key, swap.error)
        probes_schedule_revive()
        load_sampling_revive()
        from actions.services import actions_reap_stale, actions_schedule_revive

        actions_reap_stale()
        actions_schedule_revive()
        _resume_downloads()
    except Exception:  # noqa: BLE001 - housekeeping must never stop the server
        logger.exception("housekeeping failed")
    finally:
        close_old_connections()


def _housekeeping_loop(stop: threading.Event) -> None:
    while not stop.wait(HOUSEKEEPING_SECONDS):
        _reap_gone_workers()
        _housekeeping_once()
