"""Fake HTTP services of every kind Spark Control watches, with failure modes by name (stdlib only).

::

    from sparksim.fake_services import FakeServiceFarm

    with FakeServiceFarm() as farm:
        llm = farm.add("vllm", mode="wedged", model="sim/tiny-model")
        llm.url        # "http://127.0.0.1:PORT"
        llm.requests   # HTTP requests received so far (connections: TCP connections accepted)
        llm.set_mode("ok")

Kinds (what each answers):

- ``vllm``: ``/health``, ``/v1/models``, ``POST /v1/completions`` and ``/v1/chat/completions``, ``/metrics``
  (``vllm:num_requests_running``, ``vllm:generation_tokens_total``).
- ``embeddings``: ``/health``, ``/v1/models``, ``POST /v1/embeddings``.
- ``qdrant``: ``/readyz``, ``/healthz``, ``/``, ``/collections``.
- ``stt``: ``/health``, ``/v1/models``, ``POST /v1/audio/transcriptions`` (multipart with a WAV file).
- ``tts``: ``/health``, ``/v1/models``, ``POST /v1/audio/speech`` (answers a WAV as long as the text would take to
  say, see `speech_wav`).
- ``http``: any ``GET`` answers ``status`` (default 200).

Modes:

- ``ok``: answers as above.
- ``refuse``: the port is reserved (bound, not listening), so connections are refused.
- ``hang``: accepts and reads the request, never answers (until the client goes away).
- ``slow-drip``: answers one byte every ``DRIP_INTERVAL`` seconds, for ``DRIP_SECONDS``; never a full head.
- ``error``: every request gets ``500``.
- ``wrong-model``: ``/v1/models`` lists ``sim/other-model`` instead of the configured model.
- ``wedged``: health paths and ``/v1/models`` are fine, real work (any ``POST``, Qdrant's ``/collections``) never
  finishes; a vllm's ``/metrics`` shows a request running while the generated-token counter stays frozen.

All servers share one asyncio loop in one daemon thread, so a farm of hundreds is cheap. On a simulated node a
fake service can also run as a container's command (``sparksim-service``, see :func:`container_main` and
``SimCluster.run_service``), so the fake docker stops, starts and restarts it like a real one.
``python -m sparksim.fake_services vllm:ok qdrant:hang ...`` runs a farm from the command line.
This module imports nothing from the apps.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
import threading
import time
import wave
from collections.abc import Callable
from typing import Any

KINDS = ("vllm", "embeddings", "qdrant", "stt", "tts", "http")
MODES = ("ok", "refuse", "hang", "slow-drip", "error", "wrong-model", "wedged")
DEFAULT_MODELS = {
    "vllm": "sim/tiny-model",
    "embeddings": "sim/embed",
    "stt": "sim/parakeet",
    "tts": "sim/kokoro",
    "qdrant": "",
    "http": "",
}
WRONG_MODEL = "sim/other-model"
DRIP_INTERVAL = 0.5
DRIP_SECONDS = 300.0
MAX_BODY = 16 * 1024 * 1024


def tiny_wav(seconds: float = 0.05, rate: int = 16000) -> bytes:
    """A short mono 16-bit WAV of silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


SPEECH_CHARS_PER_SECOND = 15.0  # about the pace of read-aloud English
SPEECH_RATE = 24000  # Kokoro's sample rate
_RAMP = b"".join(sample.to_bytes(2, "little") for sample in range(32768))  # one period of the samples counting up


def speech_wav(text: str) -> bytes:
    """What the fake TTS answers for `text`: a mono 16-bit WAV at 24 kHz as long as the text takes to say (so a long
    text gives a body of megabytes), whose samples count up, so bytes lost, repeated or reordered on the way show."""
    frames = max(1, int(len(text) / SPEECH_CHARS_PER_SECOND * SPEECH_RATE))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SPEECH_RATE)
        out.writeframes((_RAMP * (frames * 2 // len(_RAMP) + 1))[: frames * 2])
    return buffer.getvalue()


class FakeService:
    """One fake server: its port, URL, mode and what it received."""

    def __init__(self, farm: FakeServiceFarm, kind: str, mode: str, model: str, status: int) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self.farm = farm
        self.kind = kind
        self.mode = mode
        self.model = model
        self.status = status
        self.port = 0
        self.requests = 0
        self.connections = 0
        self.log: list[str] = []
        self.generation_tokens = 0
        self.running = 0
        self._sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def reset_counts(self) -> None:
        self.requests = 0
        self.connections = 0
        self.log.clear()

    def wait_for_connections(self, count: int, timeout: float = 2.0) -> int:
        """The connection count once it reaches `count` (or the timeout passes): connections are counted on the
        farm's own loop, a moment after the client's connect has returned."""
        deadline = time.monotonic() + timeout
        while self.connections < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.connections

    def set_mode(self, mode: str) -> None:
        """Switch the failure mode; going to or from ``refuse`` opens or closes the listening socket."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self.farm._call(self._apply_mode(mode))

    def __repr__(self) -> str:
        return f"<FakeService {self.kind} {self.mode} {self.url}>"

    # --- on the farm's loop -----------------------------------------------------------------------------------

    async def _bind(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        if self.mode != "refuse":
            await self._listen()

    async def _listen(self) -> None:
        assert self._sock is not None
        self._sock.listen(256)
        self._sock.setblocking(False)
        self._server = await asyncio.start_server(self._handle, sock=self._sock, limit=MAX_BODY)

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        elif self._sock is not None:
            self._sock.close()
        self._sock = None

    def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def _apply_mode(self, mode: str) -> None:
        was_refusing = self.mode == "refuse"
        self.mode = mode
        if mode == "refuse" and not was_refusing:
            await self._unlisten()
            self._drop_connections()  # a kept-alive connection must not outlive the listener
            await self._bind()  # re-reserve the port, not listening
        elif was_refusing and mode != "refuse":
            await self._unlisten()
            await self._bind()

    async def _close(self) -> None:
        await self._unlisten()
        self._drop_connections()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self.farm._tasks.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, headers, body = request
                self.requests += 1
                self.log.append(f"{method} {path}")
                keep_alive = headers.get("connection", "").lower() != "close"
                handled = await self._respond(method, path, headers, body, reader, writer)
                if not handled or not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        except asyncio.CancelledError:
            return  # the farm is stopping; ending quietly keeps asyncio's stream callback from logging it
        finally:
            self._writers.discard(writer)
            if task is not None:
                self.farm._tasks.discard(task)
            writer.close()

    async def _respond(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; False when the connection must end afterwards."""
        mode = self.mode
        if mode == "hang":
            await _wait_for_disconnect(reader)
            return False
        if mode == "slow-drip":
            await _drip(writer)
            return False
        if mode == "error":
            await _send(writer, 500, {"error": {"message": "simulated failure", "type": "server_error"}})
            return True
        route = path.split("?", 1)[0]
        if mode == "wedged" and (method == "POST" or route == "/collections"):
            self.running += 1
            try:
                await _wait_for_disconnect(reader)
            finally:
                self.running -= 1
            return False
        status, payload, content_type = self._answer(method, route, headers, body)
        await _send(writer, status, payload, content_type=content_type)
        return True

    def _served_model(self) -> str:
        return WRONG_MODEL if self.mode == "wrong-model" else self.model

    def _models(self) -> dict[str, Any]:
        model = self._served_model()
        return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "sparksim", "root": model}]}

    def _answer(self, method: str, route: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, str | None]:
        handlers: dict[tuple[str, str], Callable[[dict[str, str], bytes], tuple[int, Any, str | None]]]
        handlers = {
            ("GET", "/health"): lambda h, b: (200, {"status": "ok"}, None),
            ("GET", "/v1/models"): lambda h, b: (200, self._models(), None),
        }
        if self.kind == "vllm":
            handlers.update(
                {
                    ("GET", "/health"): lambda h, b: (200, b"", "text/plain"),
                    ("GET", "/metrics"): lambda h, b: (200, self._metrics().encode(), "text/plain; version=0.0.4"),
                    ("POST", "/v1/completions"): self._completion,
                    ("POST", "/v1/chat/completions"): self._completion,
                }
            )
        elif self.kind == "embeddings":
            handlers[("POST", "/v1/embeddings")] = self._embeddings
        elif self.kind == "qdrant":
            handlers = {
                ("GET", "/readyz"): lambda h, b: (200, b"all shards are ready", "text/plain"),
                ("GET", "/healthz"): lambda h, b: (200, b"healthz check passed", "text/plain"),
                ("GET", "/livez"): lambda h, b: (200, b"healthz check passed", "text/plain"),
                ("GET", "/"): lambda h, b: (200, {"title": "qdrant - vector search engine", "version": "1.12.0"}, None),
                ("GET", "/collections"): lambda h, b: (
                    200,
                    {"result": {"collections": [{"name": "docs"}]}, "status": "ok", "time": 0.00001},
                    None,
                ),
            }
        elif self.kind == "stt":
            handlers[("POST", "/v1/audio/transcriptions")] = self._transcription
        elif self.kind == "tts":
            handlers[("POST", "/v1/audio/speech")] = self._speech
        elif self.kind == "http":
            if method == "GET":
                return self.status, b"ok", "text/plain"
        handler = handlers.get((method, route))
        if handler is None:
            return 404, {"detail": "Not Found"}, None
        return handler(headers, body)

    def _metrics(self) -> str:
        model = self._served_model()
        running = max(self.running, 1 if self.mode == "wedged" else 0)
        return (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{engine="0",model_name="{model}"}} {float(running)}\n'
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{engine="0",model_name="{model}"}} 0.0\n'
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            f'vllm:generation_tokens_total{{engine="0",model_name="{model}"}} {float(self.generation_tokens)}\n'
        )

    def _completion(self, headers: dict[str, str], body: bytes) -> tuple[int, Any, str | None]:
        request = _json_body(body)
        if request is None:
            return 400, {"error": {"message": "body must be JSON", "type": "BadRequestError"}}, None
        if request.get("model") != self._served_model():
            message = f"The model `{request.get('model')}` does not exist."
            return 404, {"error": {"message": message, "type": "NotFoundError"}}, None
        tokens = max(1, int(request.get("max_tokens") or 1))
        self.generation_tokens += tokens
        return (
            200,
            {
                "id": f"cmpl-{self.requests}",
                "object": "text_completion",
                "model": self._served_model(),
                "choices": [{"index": 0, "text": " pong", "finish_reason": "length"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1},
            },
            None,
        )

    def _embeddings(self, headers: dict[str, str], body: bytes) -> tuple[int, Any, str | None]:
        request = _json_body(body)
        if request is None or not request.get("input"):
            return 400, {"error": {"message": "input is required"}}, None
        inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.125] * 8} for i in range(len(inputs))]
        return 200, {"object": "list", "data": data, "model": self._served_model()}, None

    def _transcription(self, headers: dict[str, str], body: bytes) -> tuple[int, Any, str | None]:
        if not headers.get("content-type", "").startswith("multipart/form-data") or b"RIFF" not in body:
            return 400, {"detail": "expected a multipart upload with an audio file"}, None
        return 200, {"text": ""}, None

    def _speech(self, headers: dict[str, str], body: bytes) -> tuple[int, Any, str | None]:
        request = _json_body(body)
        if request is None or not request.get("input"):
            return 400, {"detail": "input is required"}, None
        return 200, speech_wav(str(request["input"])), "audio/wav"


class FakeServiceFarm:
    """Many fake services on 127.0.0.1, all served by one asyncio loop running in a daemon thread."""

    def __init__(self) -> None:
        self.services: list[FakeService] = []
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeServiceFarm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FakeServiceFarm:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="sparksim-fake-services", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            for service in self.services:
                await service._close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()

    def add(
        self, kind: str, mode: str = "ok", *, model: str | None = None, status: int = 200, port: int = 0
    ) -> FakeService:
        """Start one fake service of `kind` in `mode` on `port` (default: a free one) and return it."""
        self.start()
        service = FakeService(self, kind, mode, DEFAULT_MODELS[kind] if model is None else model, status)
        service.port = port
        self._call(service._bind())
        self.services.append(service)
        return service

    def _call(self, coroutine: Any) -> Any:
        if self._loop is None:
            raise RuntimeError("the farm is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError("bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_BODY:
            raise ValueError("body too large")
        body = await reader.readexactly(length)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    return parts[0].upper(), parts[1], headers, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if len(body) > MAX_BODY:
            raise ValueError("body too large")


async def _send(writer: asyncio.StreamWriter, status: int, payload: Any, *, content_type: str | None = None) -> None:
    if isinstance(payload, bytes | bytearray):
        data = bytes(payload)
        content_type = content_type or "application/octet-stream"
    else:
        data = json.dumps(payload).encode()
        content_type = content_type or "application/json"
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Status")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {len(data)}\r\n"
        "server: sparksim\r\n\r\n"
    )
    writer.write(head.encode() + data)
    await writer.drain()


async def _wait_for_disconnect(reader: asyncio.StreamReader) -> None:
    """Hold the connection open without answering until the client closes it."""
    while await reader.read(65536):
        pass


async def _drip(writer: asyncio.StreamWriter) -> None:
    """A response head that never ends: one byte at a time, so no per-read timeout ever fires."""
    stream = b"HTTP/1.1 200 OK\r\nx-drip: "
    deadline = time.monotonic() + DRIP_SECONDS
    index = 0
    while time.monotonic() < deadline:
        byte = stream[index : index + 1] or b"a"
        index += 1
        writer.write(byte)
        await writer.drain()
        if writer.is_closing():
            return
        await asyncio.sleep(DRIP_INTERVAL)


def _json_body(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body or b"null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


START_SECONDS_KNOB = "SPARKSIM_SERVICE_START_SECONDS"
DEFAULT_START_SECONDS = 2.0


def container_main(node: Any, argv: list[str]) -> int:
    """One fake service as a container's command (``sparksim-service KIND [--port N] [--mode M] [--model NAME]
    [--start-seconds S]``), so the fake docker can stop, start and restart it.

    Like a real model server it loads first and only then listens: for ``--start-seconds`` (default the node
    setting SPARKSIM_SERVICE_START_SECONDS, else 2 s) its port refuses connections. SIGTERM ends it at once.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="sparksim-service")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--model")
    parser.add_argument("--start-seconds", type=float)
    args = parser.parse_args(argv)
    start_seconds = args.start_seconds
    if start_seconds is None:
        start_seconds = node.float_setting(START_SECONDS_KNOB, None, DEFAULT_START_SECONDS)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"loading {args.kind} service ({start_seconds:g} s)", flush=True)
    if stop.wait(max(0.0, start_seconds)):
        return 0
    with FakeServiceFarm() as farm:
        service = farm.add(args.kind, args.mode, model=args.model, port=args.port)
        print(f"{service.kind} listening on {service.url}", flush=True)
        stop.wait()
    return 0


def main(argv: list[str]) -> int:
    """Run a farm from the command line: each argument is `kind[:mode]`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m sparksim.fake_services KIND[:MODE] ...\n  kinds: {' '.join(KINDS)}")
        print(f"  modes: {' '.join(MODES)}")
        return 0 if argv else 2
    with FakeServiceFarm() as farm:
        for spec in argv:
            kind, _, mode = spec.partition(":")
            service = farm.add(kind, mode or "ok")
            print(f"{service.kind:<11} {service.mode:<11} {service.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
