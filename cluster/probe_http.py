"""The HTTP client of probes: HTTP/1.1 on asyncio streams, keep-alive connections per origin (decision 0046).

A probe asks one small question (a health path, a model list, one token), so the client does only what that
needs: one request at a time per connection, `Content-Length`, chunked and read-to-close bodies, TLS with a
verifying context for `https`, no redirects, no proxies, no compression. Every request is bounded by the client's
timeout (per request, covering the connect) and callers add their overall deadline around it; a failure is an
`OSError` (`ProbeHttpError` for a broken exchange, `TimeoutError`, the socket's or TLS's own error).

Idle connections are kept per origin and reused by the next request to it: on the probe loop (`run_on_probe_loop`,
one event loop in a thread of its own for the whole process) they outlive a sweep, so a sweep of healthy services
costs one request each, not a connect and a request. A kept connection the server has closed is dropped before
use; when one fails before any byte of the answer arrives, the request is sent once more on a new connection.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
import ssl
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

USER_AGENT = "sparkcontrol-probe"
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
IDLE_PER_ORIGIN = 4
IDLE_SECONDS = 60.0

T = TypeVar("T")


class ProbeHttpError(OSError):
    """The exchange broke: a malformed or oversized answer, or the connection ended in the middle of it."""


@dataclass(frozen=True)
class ProbeResponse:
    """One answer: status, headers (names in lower case) and the whole body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip('"')
        return self.content.decode(charset)

    def json(self) -> Any:
        return jsonlib.loads(self.content)


@dataclass(frozen=True)
class _Target:
    origin: tuple[str, str, int]
    host_header: str
    target: str


@lru_cache(maxsize=4096)
def _parse(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ProbeHttpError(f"unsupported scheme {scheme!r}")
    host = parts.hostname
    if not host:
        raise ProbeHttpError("no host in the URL")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise ProbeHttpError("bad port in the URL") from exc
    default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if default else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target((scheme, host, port), host_header, target)


def _multipart(files: Mapping[str, tuple[str, bytes, str]], data: Mapping[str, str]) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in data.items():
        chunks.append(f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content, content_type) in files.items():
        head = (
            f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"content-type: {content_type}\r\n\r\n"
        )
        chunks += [head.encode(), content, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)


class _Connection:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof() and now - self.idle_since < IDLE_SECONDS

    def abort(self) -> None:
        self.writer.transport.abort()


class _Stale(Exception):
    """A kept connection failed before any byte of the answer: the server had closed it."""


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bool]:
    """Status, headers and whether the connection may be kept (HTTP/1.1 unless `close`; 1.0 with keep-alive)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ProbeHttpError("response head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProbeHttpError("not an HTTP/1.x answer")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return int(code), headers, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise ProbeHttpError("bad chunk size") from exc
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the empty line
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise ProbeHttpError("response body too large")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise ProbeHttpError("bad chunk end")


async def _read_to_close(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while chunk := await reader.read(65536):
        body += chunk
        if len(body) > MAX_BODY:
            raise ProbeHttpError("response body too large")
    return bytes(body)


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[ProbeResponse, bool]:
    while True:
        status, headers, keep = await _read_head(reader)
        if status >= 200 or status == 101:
            break  # 1xx interim answers are skipped
    if method == "HEAD" or status in (204, 304) or status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError as exc:
            raise ProbeHttpError("bad content-length") from exc
        if length < 0 or length > MAX_BODY:
            raise ProbeHttpError("response body too large")
        body = await reader.readexactly(length)
    else:
        body, keep = await _read_to_close(reader), False
    return ProbeResponse(status, headers, body), keep


class ProbeHttpClient:
    """Requests with kept connections per origin; use on one event loop (the one its first request ran on)."""

    def __init__(self, *, timeout: float, tls: ssl.SSLContext | None = None, idle_per_origin: int = IDLE_PER_ORIGIN):
        self.timeout = timeout
        self._tls = tls
        self._idle_per_origin = max(1, idle_per_origin)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._owns_idle = True

    def sharing(self, *, timeout: float) -> ProbeHttpClient:
        """A client with another timeout on this one's connections (closing it leaves them open)."""
        other = ProbeHttpClient(timeout=timeout, tls=self._tls, idle_per_origin=self._idle_per_origin)
        other._idle, other._owns_idle = self._idle, False
        return other

    async def get(self, url: str) -> ProbeResponse:
        return await self.request("GET", url)

    async def post(self, url: str, **body: Any) -> ProbeResponse:
        return await self.request("POST", url, **body)

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        data: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ProbeResponse:
        """One request, answered in full within `timeout` (default the client's) or `TimeoutError`."""
        target = _parse(url)
        payload = self._encode(method, target, json=json, files=files, data=data)
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            connection = self._take(target.origin)
            if connection is not None:
                try:
                    return await self._exchange(connection, target.origin, method, payload, reused=True)
                except _Stale:
                    pass
            connection = await self._connect(target.origin)
            return await self._exchange(connection, target.origin, method, payload, reused=False)

    def _encode(self, method: str, target: _Target, *, json: Any, files: Any, data: Any) -> bytes:
        content_type, body = None, b""
        if files or data:
            content_type, body = _multipart(files or {}, data or {})
        elif json is not None:
            content_type, body = "application/json", jsonlib.dumps(json, separators=(",", ":")).encode()
        head = f"{method} {target.target} HTTP/1.1\r\nhost: {target.host_header}\r\nuser-agent: {USER_AGENT}\r\n"
        head += "accept: */*\r\n"
        if content_type is not None:
            head += f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            head += "content-length: 0\r\n"
        return (head + "\r\n").encode("latin-1") + body

    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now):
                return connection
            connection.abort()
        return None

    def _give_back(self, origin: tuple[str, str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._idle_per_origin:
            connection.abort()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        if scheme == "https":
            tls = self._tls if self._tls is not None else default_tls_context()
            reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=host, limit=MAX_HEAD)
        else:
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, origin: tuple[str, str, int], method: str, payload: bytes, *, reused: bool
    ) -> ProbeResponse:
        kept = False
        try:
            connection.writer.write(payload)
            try:
                await connection.writer.drain()
                response, kept = await _read_response(connection.reader, method)
            except asyncio.IncompleteReadError as exc:
                if reused and not exc.partial and connection.reader.at_eof():
                    raise _Stale from exc
                raise ProbeHttpError("the server closed the connection in the middle of the answer") from exc
            except (ConnectionResetError, BrokenPipeError) as exc:
                if reused:
                    raise _Stale from exc
                raise
            except asyncio.LimitOverrunError as exc:
                raise ProbeHttpError("a line of the answer is too long") from exc
            return response
        finally:
            if kept:
                self._give_back(origin, connection)
            else:
                connection.abort()

    async def aclose(self) -> None:
        if not self._owns_idle:
            return
        for connections in self._idle.values():
            for connection in connections:
                connection.abort()
        self._idle.clear()

    async def __aenter__(self) -> ProbeHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_tls_lock = threading.Lock()
_tls: ssl.SSLContext | None = None


def default_tls_context() -> ssl.SSLContext:
    """The verifying TLS context of probes, the one httpx builds (its CA bundle, hostname checks): the trust of
    probes did not change with their client. Built once per process (~15 ms), on first use."""
    global _tls
    with _tls_lock:
        if _tls is None:
            import httpx

            _tls = httpx.create_ssl_context()
        return _tls


# --- the probe loop -------------------------------------------------------------------------------------------------

_loop_lock = threading.Lock()
_loop: tuple[int, asyncio.AbstractEventLoop, ProbeHttpClient] | None = None


def _probe_loop() -> tuple[asyncio.AbstractEventLoop, ProbeHttpClient]:
    global _loop
    with _loop_lock:
        if _loop is None or _loop[0] != os.getpid():  # a forked child starts its own
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="probe-loop", daemon=True).start()
            ready.wait()
            _loop = (os.getpid(), loop, ProbeHttpClient(timeout=60.0))
        return _loop[1], _loop[2]


def run_on_probe_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the process's probe loop from synchronous code and return its result."""
    loop, _ = _probe_loop()
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


def run_on_probe_loop_soon(coroutine: Coroutine[Any, Any, T]) -> Future[T]:
    """Start a coroutine on the probe loop from synchronous code; its result is read later from the future."""
    loop, _ = _probe_loop()
    return asyncio.run_coroutine_threadsafe(coroutine, loop)


def kept_client() -> ProbeHttpClient | None:
    """The client whose connections outlive a sweep, when running on the probe loop; else None."""
    current = _loop
    if current is None or current[0] != os.getpid():
        return None
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return current[2] if running is current[1] else None
