"""Spark Control running as its operators run it, for the tests and the bench: `manage.py serve` (or web processes
and `manage.py db_worker`s of a scaled-out set-up) in child processes of their own, on a data directory, database
and Redis of their own, reached over HTTP like any client.

One `Service` is one installation: it picks the ports, builds the environment, runs management commands and
Django code against the installation's database, starts the processes and waits until they answer, keeps each
process's output in a log file (shown when a start fails, and by the pytest plugin in `testkit.pytest_plugin`
when a test fails) and, in `stop()`, stops everything it started — processes, the simulator it started, and
whatever was handed to `on_stop` — even when a step before failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HEALTH_PATH = "/api/health"
WORKER_STARTED = "Starting worker"  # what `manage.py db_worker` logs once it takes tasks
# What in the caller's environment would point a child at another installation, database, Redis or simulator.
FOREIGN_ENV = ("DATABASE_", "REDIS_", "SPARKCONTROL_", "DJANGO_SETTINGS_MODULE", "SPARKSIM_")
LOG_TAIL = 4000
RESULT_MARK = "@@RESULT@@"

_running: list[Service] = []
_created: list[Service] = []


class ServiceError(RuntimeError):
    """A process of the service did not start, or a command against its database failed; the message has the
    output that says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would point a child elsewhere, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(FOREIGN_ENV)}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def running() -> list[Service]:
    """The services started and not yet stopped."""
    return list(_running)


def created_count() -> int:
    """How many services this process has made so far (a mark for `created_since`)."""
    return len(_created)


def created_since(mark: int) -> list[Service]:
    """The services made after `created_count()` returned `mark`, stopped or not."""
    return _created[mark:]


@dataclass
class Process:
    """One child process in a session (process group) of its own, its output in a log file."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, tail: int | None = None) -> str:
        """What the process wrote so far (the last `tail` characters when given)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:] if tail else text

    def ready(self) -> bool:
        """Serving: `/api/health` answers 200; a worker (no port): it said it takes tasks."""
        if self.port is None:
            return WORKER_STARTED in self.output()
        try:
            return httpx.get(f"{self.url}{HEALTH_PATH}", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10) -> None:
        """Send `sig` to the process alone (not its group) and wait for it to end."""
        os.kill(self.process.pid, sig)
        self.process.wait(timeout=timeout)

    def terminate(self) -> None:
        """SIGTERM to the whole group, without waiting."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the group; SIGKILL to it when it is not gone after `timeout` seconds."""
        self.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def spawn(name: str, argv: Sequence[str], *, env: Mapping[str, str], log_dir: Path, port: int | None = None) -> Process:
    """Start `argv` from the repository root in a session of its own, output to `<log_dir>/<name>.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    handle = log.open("ab")
    try:
        process = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=dict(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # stopped as a whole: nothing it forks is left behind
        )
    finally:
        handle.close()
    return Process(name=name, argv=list(argv), log=log, process=process, port=port)


def wait_ready(*procs: Process, timeout: float = 90, context: Callable[[], str] | None = None) -> None:
    """Wait until every process in `procs` is ready; `ServiceError` with their output when one exits or time is up."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        while not proc.ready():
            if not proc.alive():
                raise ServiceError(
                    f"{proc.name} exited with {proc.process.returncode} before it was ready:\n"
                    f"{context() if context else proc.output(LOG_TAIL)}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{proc.name} was not ready after {timeout:.0f} s:\n"
                    f"{context() if context else proc.output(LOG_TAIL)}"
                )
            time.sleep(0.1)


class Service:
    """One Spark Control installation under test: its directories, environment, processes and clean-ups.

    `workdir` holds the logs (`logs/`), the data directory (`data/`, or `data/<process>/` for each process with
    `data_dir_per_process`, as separate machines of one scaled-out set-up would have) and the simulator it starts.
    `database_url` / `redis_url` empty: SQLite in the data directory and the in-memory channel layer.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str = "",
        redis_url: str = "",
        env: Mapping[str, str] | None = None,
        data_dir: Path | None = None,
        data_dir_per_process: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs_dir = self.workdir / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self.data_dir = Path(data_dir) if data_dir is not None else self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir_per_process = data_dir_per_process
        self.sim: Any = None  # the simulator `simulate()` started
        self.procs: dict[str, Process] = {}
        self._stops: list[Callable[[], Any]] = []
        self.env = clean_env(
            DJANGO_SETTINGS_MODULE="sparkcontrol.settings",
            SPARKCONTROL_ENV_FILE=str(self.workdir / "none.env"),  # never the developer's .env
            SPARKCONTROL_DATA_DIR=str(self.data_dir),
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
        )
        self.env.update(env or {})
        _running.append(self)
        _created.append(self)

    # --- the simulator ----------------------------------------------------------------------------------------
    def simulate(self, **options: Any) -> Any:
        """Start a sparksim cluster in `<workdir>/sim` that `stop()` stops; `options` go to `SimCluster`."""
        from sparksim import SimCluster

        cluster = SimCluster(root=self.workdir / "sim", **options)
        self.on_stop(cluster.stop)
        self.sim = cluster.start()
        return self.sim

    def on_stop(self, callback: Callable[[], Any]) -> None:
        """Run `callback` in `stop()`, after the processes are gone (last registered, first run)."""
        self._stops.append(callback)

    # --- commands against the installation's database ---------------------------------------------------------
    def data_dir_of(self, name: str) -> Path:
        """The data directory the process `name` uses."""
        if not self.data_dir_per_process:
            return self.data_dir
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env_of(self, name: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**self.env, "SPARKCONTROL_DATA_DIR": str(self.data_dir_of(name)), **dict(env or {})}

    def completed(
        self, argv: Sequence[str], *, timeout: float = 120, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run Python with `argv` against the installation (from the repository root), whatever its exit status."""
        return subprocess.run(
            [PYTHON, *argv],
            cwd=REPO,
            env=self.env_of("manage", env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def python(self, argv: Sequence[str], *, timeout: float = 120, env: Mapping[str, str] | None = None) -> str:
        """Run Python with `argv` against the installation; its stdout (`ServiceError` when it fails)."""
        done = self.completed(argv, timeout=timeout, env=env)
        if done.returncode != 0:
            raise ServiceError(f"python {' '.join(argv)[:200]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    def manage(self, *argv: str, timeout: float = 120, env: Mapping[str, str] | None = None) -> str:
        """`manage.py <argv>`; its stdout."""
        return self.python(["manage.py", *argv], timeout=timeout, env=env)

    def run(self, code: str, *args: str, timeout: float = 120) -> Any:
        """Run `code` in a fresh process with Django set up (and `json`, `sys` imported); returns what the code put
        in `result` (through JSON). `args` are the process's `sys.argv[1:]`."""
        script = "import django, json, sys\ndjango.setup()\nresult = None\n" + textwrap.dedent(code)
        script += f"\nprint({RESULT_MARK!r} + json.dumps(result, default=str))\n"
        out = self.python(["-c", script, *args], timeout=timeout)
        return json.loads(out.rpartition(RESULT_MARK)[2])

    def token(self, name: str, scope: str) -> str:
        """A new API token: `manage.py apitoken create` prints it alone on its last line."""
        return self.manage("apitoken", "create", name, "--scope", scope).strip().splitlines()[-1]

    # --- processes --------------------------------------------------------------------------------------------
    def spawn(
        self, name: str, argv: Sequence[str], *, port: int | None = None, env: Mapping[str, str] | None = None
    ) -> Process:
        """Start `python <argv>` as the process `name` (a name used before must belong to a stopped process)."""
        former = self.procs.get(name)
        if former is not None and former.alive():
            raise ServiceError(f"a process named {name} is still running")
        proc = spawn(name, [PYTHON, *argv], env=self.env_of(name, env), log_dir=self.logs_dir, port=port)
        self.procs[name] = proc
        return proc

    def serve(
        self,
        name: str = "web",
        *,
        worker: bool = True,
        port: int | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Process:
        """`manage.py serve` on 127.0.0.1 (a free port unless given); `worker=False`: `--no-worker`."""
        port = port or free_port()
        argv = ["manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
        if not worker:
            argv.append("--no-worker")
        proc = self.spawn(name, [*argv, *args], port=port, env=env)
        if wait:
            self.wait_ready(proc)
        return proc

    def uvicorn(self, name: str, *, env: Mapping[str, str] | None = None, wait: bool = True) -> Process:
        """The ASGI application on uvicorn (plain HTTP/1.1, no websockets of daphne's) on a free port."""
        port = free_port()
        argv = ["-m", "uvicorn", "sparkcontrol.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
        proc = self.spawn(name, [*argv, "--lifespan", "off", "--no-access-log"], port=port, env=env)
        if wait:
            self.wait_ready(proc)
        return proc

    def db_worker(self, name: str = "worker", *, env: Mapping[str, str] | None = None, wait: bool = True) -> Process:
        """`manage.py db_worker` taking every queue (swaps, default, webhooks), polling every 0.2 s."""
        argv = ["manage.py", "db_worker", "--queue-name", "*", "--interval", "0.2", "--no-startup-delay"]
        proc = self.spawn(name, argv, env=env)
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, *procs: Process, timeout: float = 90) -> None:
        """Wait until each of `procs` answers; `ServiceError` with every log when one exits or time is up."""
        wait_ready(*procs, timeout=timeout, context=self.logs)

    def logs(self, tail: int = LOG_TAIL) -> str:
        """The end of every process's output, named, with how it ended."""
        parts = []
        for proc in self.procs.values():
            code = proc.process.poll()
            state = "running" if code is None else f"exited {code}"
            parts.append(f"--- {proc.name} ({state}, {proc.log})\n{proc.output(tail)}")
        return "\n".join(parts) or "(no process started)"

    # --- tear-down --------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process (SIGTERM to each group at once, SIGKILL to what is left), then run the clean-ups
        (the simulator's stop among them); every step runs even when one before it failed."""
        if self in _running:
            _running.remove(self)
        errors: list[BaseException] = []
        procs = list(self.procs.values())
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001 - raised after the rest is stopped
                errors.append(exc)
        while self._stops:
            try:
                self._stops.pop()()
            except Exception as exc:  # noqa: BLE001 - raised after the rest is stopped
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
