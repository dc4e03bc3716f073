"""Loopback clients light enough not to be the bottleneck: raw HTTP/1.1 keep-alive and raw websockets on asyncio.

Both parse only what a benchmark needs (status, headers, body length; text frames), so a client costs tens of
microseconds per request or frame and leaves the CPU to the server being measured.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


class HttpError(Exception):
    """The connection broke or the response could not be parsed."""


def build_request(
    method: str,
    path: str,
    *,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> bytes:
    """One HTTP/1.1 keep-alive request; a dict body is sent as JSON."""
    data = b""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    elif method in ("POST", "PUT", "PATCH", "DELETE"):
        lines.append("Content-Length: 0")
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class HttpConnection:
    """One keep-alive connection; `request` sends and reads one whole response."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            headers = {}
            for line in header_lines:
                if ":" in line:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
            if "content-length" in headers:
                body = await self.reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = await self._chunked()
            elif status in (204, 304):
                body = b""
            else:
                body = await self.reader.read()
                await self.close()
            if headers.get("connection", "").lower() == "close":
                await self.close()
            return status, headers, body
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            await self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


@dataclass
class LoadResult:
    """What a closed-loop load run saw inside its measuring window."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


Step = Callable[[HttpConnection, "Recorder"], Awaitable[None]]


class Recorder:
    """Records the latency and status of requests that end inside the measuring window."""

    def __init__(self, result: LoadResult, start: float, end: float) -> None:
        self.result = result
        self.start = start
        self.end = end

    def in_window(self, at: float) -> bool:
        return self.start <= at <= self.end

    async def timed(self, connection: HttpConnection, raw: bytes) -> tuple[int, dict[str, str], bytes] | None:
        began = time.perf_counter()
        try:
            status, headers, body = await connection.request(raw)
        except HttpError:
            if self.in_window(time.perf_counter()):
                self.result.errors += 1
            return None
        ended = time.perf_counter()
        if self.in_window(ended) and began >= self.start:
            self.result.latencies.append(ended - began)
            self.result.statuses[status] = self.result.statuses.get(status, 0) + 1
        return status, headers, body


async def closed_loop(
    port: int, step_for: Callable[[int], Step], *, clients: int = 64, seconds: float = 10.0, warmup: float = 1.0
) -> LoadResult:
    """`clients` connections, client i running `step_for(i)` back to back; only the window after `warmup` counts."""
    result = LoadResult(seconds=seconds)
    begin = time.perf_counter()
    recorder = Recorder(result, begin + warmup, begin + warmup + seconds)

    async def client(index: int) -> None:
        step = step_for(index)
        connection = HttpConnection("127.0.0.1", port)
        try:
            while time.perf_counter() < recorder.end:
                await step(connection, recorder)
        finally:
            await connection.close()

    await asyncio.gather(*(client(index) for index in range(clients)))
    return result


async def open_loop(
    port: int,
    step_for: Callable[[int], Step],
    *,
    rate: float,
    clients: int = 64,
    seconds: float = 10.0,
    warmup: float = 1.0,
) -> LoadResult:
    """`clients` connections that together offer `rate` requests per second on a fixed schedule.

    A latency is measured from the moment the request was due, not from when it could be sent, so a server that
    falls behind is charged for the queue it builds (no coordinated omission).
    """
    result = LoadResult(seconds=seconds)
    begin = time.perf_counter()
    window = Recorder(result, begin + warmup, begin + warmup + seconds)
    gap = clients / rate

    class DueRecorder(Recorder):
        due = 0.0

        async def timed(self, connection: HttpConnection, raw: bytes) -> tuple[int, dict[str, str], bytes] | None:
            try:
                answer = await connection.request(raw)
            except HttpError:
                if self.in_window(time.perf_counter()):
                    self.result.errors += 1
                return None
            ended = time.perf_counter()
            if self.in_window(self.due):
                self.result.latencies.append(ended - self.due)
                self.result.statuses[answer[0]] = self.result.statuses.get(answer[0], 0) + 1
            return answer

    async def client(index: int) -> None:
        step = step_for(index)
        recorder = DueRecorder(result, window.start, window.end)
        connection = HttpConnection("127.0.0.1", port)
        due = begin + gap * index / clients
        try:
            while due < window.end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                recorder.due = due
                await step(connection, recorder)
                due += gap
        finally:
            await connection.close()

    await asyncio.gather(*(client(index) for index in range(clients)))
    result.extra["offered_rate"] = rate
    return result


def get_steps(path: str, headers: dict[str, str] | None = None) -> Callable[[int], Step]:
    """Every client GETs `path` back to back."""
    raw = build_request("GET", path, headers=headers)

    async def step(connection: HttpConnection, recorder: Recorder) -> None:
        answer = await recorder.timed(connection, raw)
        if answer is None:
            await asyncio.sleep(0.01)

    return lambda index: step


# --- websockets -----------------------------------------------------------------------------------------------------


class WebSocketClient:
    """A websocket client that only reads: each text frame is handed to `on_message(received_at, text)`."""

    def __init__(self, port: int, path: str, *, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.path = path
        self.headers = headers or {}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.closed = asyncio.Event()

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Origin: http://127.0.0.1:{self.port}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise HttpError(f"websocket upgrade refused: {status.decode(errors='replace')}")

    async def read_forever(self, on_message: Callable[[float, str], None]) -> None:
        assert self.reader is not None
        fragments: list[bytes] = []
        try:
            while True:
                first, second = await self.reader.readexactly(2)
                opcode = first & 0x0F
                length = second & 0x7F
                if length == 126:
                    length = int.from_bytes(await self.reader.readexactly(2), "big")
                elif length == 127:
                    length = int.from_bytes(await self.reader.readexactly(8), "big")
                mask = await self.reader.readexactly(4) if second & 0x80 else b""
                payload = await self.reader.readexactly(length) if length else b""
                if mask:
                    payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
                if opcode == 0x8:
                    return
                if opcode == 0x9:
                    self._send(0xA, payload)
                    continue
                if opcode in (0x1, 0x2, 0x0):
                    fragments.append(payload)
                    if first & 0x80:
                        text = b"".join(fragments).decode(errors="replace")
                        fragments = []
                        on_message(time.time(), text)
        except (asyncio.IncompleteReadError, OSError):
            return
        finally:
            self.closed.set()

    def _send(self, opcode: int, payload: bytes) -> None:
        assert self.writer is not None
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        length = len(payload)
        if length < 126:
            header = bytes([0x80 | opcode, 0x80 | length])
        else:
            header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
        self.writer.write(header + mask + masked)

    async def close(self) -> None:
        if self.writer is None:
            return
        try:
            self._send(0x8, (1000).to_bytes(2, "big"))
            self.writer.close()
            await self.writer.wait_closed()
        except OSError:
            pass
        self.writer = None
