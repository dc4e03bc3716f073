"""The one module that probes services: HTTP per service kind, TCP ports, and SSH reachability of the Sparks.

Every probe runs under an overall deadline (`asyncio.timeout`): a timeout per phase (connect, each read, ...)
would let a server that drips one byte every half second hold a probe for many times its timeout. HTTP goes
through the probes' own client (`cluster.probe_http`: HTTP/1.1 on asyncio streams, connections kept per
origin). Probes take plain values (`ProbeTarget`), never model instances, and touch no database: sweeps read
the database before and write it after the network phase.

A probe never raises: it returns a `ProbeOutcome` whose detail is short and carries no URL (URLs may hold
credentials) and no response body beyond a few words.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import ssl
import time
import wave
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from cluster.models import ProbeStatus, ServiceKind, SparkHost
from cluster.probe_http import ProbeHttpClient, ProbeHttpError, ProbeResponse, default_tls_context, kept_client

UP = ProbeStatus.UP.value
DEGRADED = ProbeStatus.DEGRADED.value
DOWN = ProbeStatus.DOWN.value
UNKNOWN = ProbeStatus.UNKNOWN.value
DETAIL_MAX = 200


@dataclass(frozen=True)
class ProbeOutcome:
    """What one probe found: up | degraded | down | unknown, how long it took, and a short reason."""

    status: str
    latency_ms: float | None
    detail: str


@dataclass(frozen=True)
class ProbeTarget:
    """What a probe needs to know about a service, read from the database before any I/O."""

    key: str
    kind: str
    base_url: str
    health_path: str = ""
    expected_status: int = 200
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineMetrics:
    """The two vLLM counters that tell a wedged engine: requests in the batch, tokens generated so far."""

    requests_running: float
    generation_tokens: float


class _Progress:
    """How far a probe got: a timeout after the service answered its cheap check reads as degraded, not down."""

    def __init__(self) -> None:
        self.step = "connect"
        self.answered = False


Work = Callable[[_Progress], Awaitable[tuple[str, str]]]


def _short(text: str, limit: int = DETAIL_MAX) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _os_error(exc: BaseException) -> OSError | None:
    """The operating-system error of a failure, or under its causes."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _error_detail(exc: BaseException) -> str:
    if isinstance(exc, ProbeHttpError):
        return f"connection broke: {_short(str(exc) or type(exc).__name__, 80)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {_short(exc.verify_message or 'certificate not trusted', 80)}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {_short(exc.reason or type(exc).__name__, 80)}"
    os_error = _os_error(exc)
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(os_error, socket.gaierror):
        return "host name not resolved"
    if isinstance(os_error, ConnectionResetError | BrokenPipeError):
        return f"connection broke: {_short(os_error.strerror or type(os_error).__name__, 80)}"
    if isinstance(exc, OSError):
        reason = (os_error.strerror if os_error is not None else None) or str(exc) or type(exc).__name__
        return f"cannot connect: {_short(reason, 80)}"
    return f"{type(exc).__name__}: {_short(str(exc), 80)}"


# The instant (event-loop time) by which every probe of the running sweep must end. Set once per sweep, so probes
# that start a few milliseconds late (scheduling dozens of them takes time) still end with the first ones.
_sweep_deadline: ContextVar[float | None] = ContextVar("sweep_deadline", default=None)


@contextmanager
def sweep_deadline(timeout: float) -> Iterator[None]:
    """Within this block (in a running loop), no probe outlives `timeout` seconds from now."""
    token = _sweep_deadline.set(asyncio.get_running_loop().time() + timeout)
    try:
        yield
    finally:
        _sweep_deadline.reset(token)


def _deadline(timeout: float) -> float:
    own = asyncio.get_running_loop().time() + timeout
    shared = _sweep_deadline.get()
    return own if shared is None else min(own, shared)


async def _bounded(work: Work, *, timeout: float) -> ProbeOutcome:
    """Run one probe under an overall deadline and turn every failure into an outcome."""
    progress = _Progress()
    started = time.perf_counter()
    try:
        async with asyncio.timeout_at(_deadline(timeout)):
            status, detail = await work(progress)
    except TimeoutError:
        status = DEGRADED if progress.answered else DOWN
        detail = f"{progress.step}: no answer within {timeout:g} s"
    except OSError as exc:
        status = DEGRADED if progress.answered else DOWN
        detail = f"{progress.step}: {_error_detail(exc)}"
    except Exception as exc:  # noqa: BLE001 - a probe reports, it never takes the sweep down
        status = UNKNOWN
        detail = f"{progress.step}: probe error {_error_detail(exc)}"
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    return ProbeOutcome(status=status, latency_ms=latency_ms, detail=_short(detail))


def _bad_status(response: ProbeResponse, what: str) -> tuple[str, str]:
    """A 5xx means the service is broken (down); any other surprise means it answers, but wrongly."""
    status = DOWN if response.status_code >= 500 else DEGRADED
    return status, f"{what}: HTTP {response.status_code}"


def _json(response: ProbeResponse) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _model_ids(document: Any) -> list[str]:
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        return []
    return [str(item["id"]) for item in document["data"] if isinstance(item, dict) and item.get("id")]


def _expected(expected: str | Sequence[str] | None) -> tuple[str, ...]:
    if not expected:
        return ()
    return (expected,) if isinstance(expected, str) else tuple(expected)


async def _get_ok(client: ProbeHttpClient, progress: _Progress, url: str, path: str, expected: int = 200):  # type: ignore[no-untyped-def]
    """GET a health path; returns the response when it is the expected status, else the (status, detail) pair."""
    progress.step = f"GET {path}"
    response = await client.get(url + path)
    if response.status_code != expected:
        return None, _bad_status(response, f"GET {path}")
    progress.answered = True
    return response, None


async def _served_models(client: ProbeHttpClient, progress: _Progress, base_url: str) -> tuple[list[str] | None, Any]:
    response, failure = await _get_ok(client, progress, base_url, "/v1/models")
    if failure:
        return None, failure
    names = _model_ids(_json(response))
    if not names:
        return None, (DEGRADED, "GET /v1/models: no model listed")
    return names, None


def _pick_model(names: Sequence[str], wanted: Sequence[str]) -> str:
    for name in wanted:
        if name in names:
            return name
    return names[0]


async def probe_vllm_endpoint(
    client: ProbeHttpClient,
    base_url: str,
    *,
    expected_model: str | Sequence[str] | None = None,
    timeout: float,
    deep: bool = False,
) -> ProbeOutcome:
    """vLLM (or any OpenAI-style completion server): `/v1/models` lists the expected served name; deep: one token.

    `/health` can stay green while the engine is wedged, so the deep check sends a one-token completion and a
    failure or a timeout there reads as degraded.
    """
    wanted = _expected(expected_model)

    async def work(progress: _Progress) -> tuple[str, str]:
        names, failure = await _served_models(client, progress, base_url)
        if failure:
            return failure
        if wanted and not set(wanted) & set(names):
            return DEGRADED, f"wrong model: serves {', '.join(names)}, expected {', '.join(wanted)}"
        model = _pick_model(names, wanted)
        if not deep:
            return UP, f"serves {', '.join(names)}"
        progress.step = "one-token completion"
        response = await client.post(
            f"{base_url}/v1/completions", json={"model": model, "prompt": "ping", "max_tokens": 1, "temperature": 0}
        )
        if response.status_code != 200:
            return DEGRADED, f"one-token completion: HTTP {response.status_code}"
        document = _json(response)
        if not isinstance(document, dict) or not document.get("choices"):
            return DEGRADED, "one-token completion: no choices in the answer"
        return UP, f"{model} completes a token"

    return await _bounded(work, timeout=timeout)


_METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)")


def parse_vllm_metrics(text: str) -> EngineMetrics | None:
    """The running-requests gauge and generated-token counter, summed over engines; None when either is absent."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        match = _METRIC_LINE.match(line)
        if match is None or match["name"] not in ("vllm:num_requests_running", "vllm:generation_tokens_total"):
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        totals[match["name"]] = totals.get(match["name"], 0.0) + value
    if len(totals) != 2:
        return None
    return EngineMetrics(
        requests_running=totals["vllm:num_requests_running"], generation_tokens=totals["vllm:generation_tokens_total"]
    )


async def probe_vllm_metrics(client: ProbeHttpClient, base_url: str, *, timeout: float) -> EngineMetrics | None:
    """One `/metrics` sample, or None when the server gives none (the wedge check then waits for the next)."""
    try:
        async with asyncio.timeout_at(_deadline(timeout)):
            response = await client.get(f"{base_url}/metrics")
            if response.status_code != 200:
                return None
            return parse_vllm_metrics(response.text)
    except (OSError, UnicodeDecodeError):  # TimeoutError is an OSError
        return None


def _silent_wav(seconds: float = 0.1, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


PROBE_WAV = _silent_wav()


@dataclass(frozen=True)
class WorkCheck:
    """A service kind probed as a health GET then, when deep, one request whose answer must hold the work done.

    `request` gives the keyword arguments of `ProbeHttpClient.request` (`json`, or `files` and `data`) for the
    model (None when none is named); `verdict` reads a 200 answer (with that model) and returns the detail of an
    up outcome, or None when the answer lacks what `missing` names.
    `model_from_server`: with no model named, the first one the server lists is used.
    """

    health_path: str
    step: str
    method: str
    path: str
    request: Callable[[str | None], dict[str, Any]]
    verdict: Callable[[ProbeResponse, str | None], str | None]
    missing: str
    model_from_server: bool = False


def _embedding_verdict(response: ProbeResponse, model: str | None) -> str | None:
    document = _json(response)
    data = document.get("data") if isinstance(document, dict) else None
    vector = data[0].get("embedding") if isinstance(data, list) and data and isinstance(data[0], dict) else None
    if not isinstance(vector, list) or not vector:
        return None
    return f"{model} embeds ({len(vector)} dimensions)"


def _collections_verdict(response: ProbeResponse, model: str | None) -> str | None:
    document = _json(response)
    result = document.get("result") if isinstance(document, dict) else None
    collections = result.get("collections") if isinstance(result, dict) else None
    if not isinstance(collections, list):
        return None
    return f"{len(collections)} collection{'s' if len(collections) != 1 else ''}"


def _transcription_verdict(response: ProbeResponse, model: str | None) -> str | None:
    document = _json(response)
    return "transcribes" if isinstance(document, dict) and "text" in document else None


def _synthesis_verdict(response: ProbeResponse, model: str | None) -> str | None:
    content_type = response.headers.get("content-type", "")
    if not response.content or content_type.startswith(("application/json", "text/")):
        return None
    return f"synthesises ({len(response.content)} bytes)"


EMBEDDINGS_CHECK = WorkCheck(
    health_path="/v1/models",
    step="one embedding",
    method="POST",
    path="/v1/embeddings",
    request=lambda model: {"json": {"model": model, "input": "ping"}},
    verdict=_embedding_verdict,
    missing="no vector in the answer",
    model_from_server=True,
)
QDRANT_CHECK = WorkCheck(
    health_path="/readyz",
    step="GET /collections",
    method="GET",
    path="/collections",
    request=lambda model: {},
    verdict=_collections_verdict,
    missing="no collection list in the answer",
)
STT_CHECK = WorkCheck(
    health_path="/health",
    step="one transcription",
    method="POST",
    path="/v1/audio/transcriptions",
    request=lambda model: {
        "files": {"file": ("probe.wav", PROBE_WAV, "audio/wav")},
        "data": {"model": model or "whisper-1", "response_format": "json"},
    },
    verdict=_transcription_verdict,
    missing="no text in the answer",
)
TTS_CHECK = WorkCheck(
    health_path="/health",
    step="one synthesis",
    method="POST",
    path="/v1/audio/speech",
    request=lambda model: {"json": {"model": model or "kokoro", "input": "ok", "response_format": "wav"}},
    verdict=_synthesis_verdict,
    missing="no audio in the answer",
)


WORK_CHECKS: dict[str, WorkCheck] = {
    ServiceKind.EMBEDDINGS.value: EMBEDDINGS_CHECK,
    ServiceKind.QDRANT.value: QDRANT_CHECK,
    ServiceKind.STT.value: STT_CHECK,
    ServiceKind.TTS.value: TTS_CHECK,
}


async def probe_work(
    client: ProbeHttpClient,
    base_url: str,
    check: WorkCheck,
    *,
    models: Sequence[str] = (),
    health_path: str = "",
    timeout: float,
    deep: bool = False,
) -> ProbeOutcome:
    """The health path (default the kind's); deep: the kind's one request of real work, its answer checked."""

    async def work(progress: _Progress) -> tuple[str, str]:
        path = health_path or check.health_path
        response, failure = await _get_ok(client, progress, base_url, path)
        if failure:
            return failure
        if not deep:
            return UP, f"GET {path}: 200"
        model = models[0] if models else None
        if model is None and check.model_from_server:
            names = _model_ids(_json(response)) if path == "/v1/models" else []
            if not names:
                names, failure = await _served_models(client, progress, base_url)
                if failure:
                    return failure
            model = names[0]
        progress.step = check.step
        response = await client.request(check.method, base_url + check.path, **check.request(model))
        if response.status_code != 200:
            return DEGRADED, f"{check.step}: HTTP {response.status_code}"
        detail = check.verdict(response, model)
        if detail is None:
            return DEGRADED, f"{check.step}: {check.missing}"
        return UP, detail

    return await _bounded(work, timeout=timeout)


# One probe per kind, for callers that name the kind (`probe_service` looks it up in WORK_CHECKS):
# embeddings (health default `/v1/models`; deep: one `POST /v1/embeddings`), Qdrant (`/readyz`; deep: `GET
# /collections` answers a collection list), speech-to-text (`/health`; deep: transcribe 0.1 s of silence as a
# multipart WAV) and text-to-speech (`/health`; deep: synthesise a two-letter input, expect audio bytes).
probe_embeddings = partial(probe_work, check=EMBEDDINGS_CHECK)
probe_qdrant = partial(probe_work, check=QDRANT_CHECK)
probe_stt = partial(probe_work, check=STT_CHECK)
probe_tts = partial(probe_work, check=TTS_CHECK)


async def probe_http(
    client: ProbeHttpClient, base_url: str, *, path: str = "/", expected_status: int = 200, timeout: float
) -> ProbeOutcome:
    """Plain HTTP: `GET path` answers the expected status."""

    async def work(progress: _Progress) -> tuple[str, str]:
        _, failure = await _get_ok(client, progress, base_url, path or "/", expected_status)
        if failure:
            return failure
        return UP, f"GET {path or '/'}: {expected_status}"

    return await _bounded(work, timeout=timeout)


async def probe_service(
    client: ProbeHttpClient, target: ProbeTarget, *, timeout: float, deep: bool = False
) -> ProbeOutcome:
    """The probe of the target's kind (status, or deep health when `deep`)."""
    url, path = target.base_url, target.health_path
    if target.kind == ServiceKind.VLLM:
        return await probe_vllm_endpoint(client, url, expected_model=target.models, timeout=timeout, deep=deep)
    check = WORK_CHECKS.get(target.kind)
    if check is not None:
        return await probe_work(client, url, check, models=target.models, health_path=path, timeout=timeout, deep=deep)
    if target.kind == ServiceKind.HTTP:
        return await probe_http(client, url, path=path, expected_status=target.expected_status, timeout=timeout)
    return ProbeOutcome(UNKNOWN, None, f"no probe for kind {target.kind!r}")


def probe_client(*, size: int, timeout: float, tls: ssl.SSLContext | None = None) -> ProbeHttpClient:
    """An HTTP client for probes keeping up to `size` idle connections per origin; close it (`async with`)."""
    return ProbeHttpClient(timeout=timeout, tls=tls, idle_per_origin=max(size, 1))


class ProbeClients:
    """The HTTP client of one sweep: on the probe loop, the kept client (its connections outlive the sweep);
    elsewhere, a client of its own, closed with the block.

    One client serves every origin: it keeps its idle connections in a dict by origin, so finding one costs the
    same for 5 services or 500.
    """

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        kept = kept_client()
        self._client = kept.sharing(timeout=timeout) if kept is not None else probe_client(size=2, timeout=timeout)

    def for_url(self, base_url: str) -> ProbeHttpClient:
        return self._client

    async def __aenter__(self) -> ProbeClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()


async def probe_tcp(host: str, port: int, *, timeout: float) -> ProbeOutcome:
    """The port accepts a TCP connection (nothing is sent)."""

    async def work(progress: _Progress) -> tuple[str, str]:
        progress.step = f"TCP {port}"
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        return UP, f"port {port} open"

    return await _bounded(work, timeout=timeout)


def _ssh_check(host: SparkHost, timeout: float) -> tuple[str, str]:
    from cluster.ssh import HostKeyError, SparkConnection, SshError

    try:
        with SparkConnection(host, timeout=timeout):
            return UP, "SSH connects and authenticates"
    except HostKeyError as exc:
        return DOWN, f"host key: {_short(str(exc), 150)}"
    except SshError as exc:
        return DOWN, _short(str(exc), 150)


async def probe_ssh(host: SparkHost, *, timeout: float, executor: Executor) -> ProbeOutcome:
    """SSH connect + authenticate with the pinned host key (paramiko, in a thread; nothing is run)."""
    loop = asyncio.get_running_loop()

    async def work(progress: _Progress) -> tuple[str, str]:
        progress.step = f"SSH {host.ssh_port}"
        # The thread cannot be cancelled: at the deadline the probe reports down and paramiko's own timeouts
        # (the same value) end the thread soon after.
        return await loop.run_in_executor(executor, _ssh_check, host, timeout)

    return await _bounded(work, timeout=timeout)


def tcp_address(base_url: str) -> tuple[str, int] | None:
    """Host and port of a base URL (default ports by scheme)."""
    parts = urlsplit(base_url)
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


__all__ = [
    "EngineMetrics",
    "PROBE_WAV",
    "ProbeClients",
    "ProbeOutcome",
    "ProbeTarget",
    "WORK_CHECKS",
    "WorkCheck",
    "parse_vllm_metrics",
    "probe_client",
    "probe_embeddings",
    "probe_http",
    "probe_qdrant",
    "probe_service",
    "probe_ssh",
    "probe_stt",
    "probe_tcp",
    "probe_tts",
    "probe_vllm_endpoint",
    "probe_vllm_metrics",
    "probe_work",
    "default_tls_context",
    "sweep_deadline",
    "tcp_address",
]
