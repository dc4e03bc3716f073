"""A fake ``vllm`` CLI: ``vllm serve MODEL ...`` parses, logs and fails like vLLM 0.11, then serves an OpenAI API.

Arguments are parsed as vLLM's ``FlexibleArgumentParser`` does (see :func:`parse_serve_args`): an unknown
option prints the top-level usage and ``vllm: error: unrecognized arguments: ...`` on stderr and exits 2
with no traceback (the container, whose PID 1 is ``sleep infinity``, stays up).

Start-up, in vLLM's order and paced by the load time ``L`` (``SPARKSIM_LOAD_SECONDS``): version and
non-default args, the port reserved (bound, not listening: a port in use fails early), config resolution,
engine config, distributed initialisation (every rank must join: the head waits quietly for missing
ones), the start-up memory check, weight shards progress (0.4 L, tqdm lines after a carriage return),
torch.compile (0.1 L), the profiling run and the KV cache (0.03 L), CUDA graph capture (0.22 L: two tqdm
bars updated after carriage returns, each ending in one newline), "init engine ... took", the API server
process (0.05 L), then "Starting vLLM API server 0 on ...", the routes and uvicorn's "Application startup
complete.". A failed engine start ends with the root cause, then the API
server's traceback ending in "Engine core initialization failed. See root cause above".

Memory: the start-up check compares ``MemFree`` of the node's meminfo (what ``cudaMemGetInfo`` reports on
the GB10's unified memory, page cache counted as used) with ``gpu_memory_utilization`` x total and fails
with vLLM's ``ValueError: Free memory on device ...``; a running engine holds about that much; it comes
back gradually when the process or its container ends (:mod:`sparksim.meminfo`).

Worker ranks log in their own container: with the launcher's no-Ray rank flags (``--headless``) the worker
node's container runs its rank; with ``--distributed-executor-backend ray`` the head starts its ranks in the
containers where ``ray start`` ran on the other nodes.

Failure modes (``sim/<mode>`` repo ids, ``SPARKSIM_FAIL`` or ``<root>/fail_mode``): see ``FAIL_MODES`` in
:mod:`sparksim.common`. ``worker-crash``: a worker rank dies with a traceback in its container, the head
waits; ``gated-model``: every rank needs ``HF_TOKEN`` (or ``$HF_HOME/token`` in the container) else
fails with the Hub's gated-repo error.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid

from sparksim import meminfo
from sparksim.common import DEFAULT_LOAD_SECONDS, DEFAULT_SILENT_SECONDS, FAIL_MODES, Node

VERSION = "0.11.1"

# -- the command line, parsed as vLLM's FlexibleArgumentParser (argparse) does ----------------------------------------
# Kinds: "v" a string value, "i" int, "f" float, "j" JSON (a dict-valued config), "+" one or more values,
# "b" a boolean with a --no- twin (BooleanOptionalAction), "t" a plain switch (store_true), "c:a,b" choices.
OPTIONS: dict[str, str] = {
    "--model": "v",
    "--served-model-name": "+",
    "--host": "v",
    "--port": "i",
    "--uvicorn-log-level": "c:critical,debug,error,info,trace,warning",
    "--api-key": "v",
    "--config": "v",
    "--tensor-parallel-size": "i",
    "--pipeline-parallel-size": "i",
    "--data-parallel-size": "i",
    "--data-parallel-size-local": "i",
    "--data-parallel-rank": "i",
    "--data-parallel-start-rank": "i",
    "--data-parallel-address": "v",
    "--data-parallel-rpc-port": "i",
    "--data-parallel-backend": "v",
    "--decode-context-parallel-size": "i",
    "--dcp-kv-cache-interleave-size": "i",
    "--distributed-executor-backend": "c:external_launcher,mp,ray,uni",
    "--nnodes": "i",
    "--node-rank": "i",
    "--master-addr": "v",
    "--master-port": "i",
    "--headless": "t",
    "--api-server-count": "i",
    "--gpu-memory-utilization": "f",
    "--kv-cache-memory-bytes": "v",
    "--swap-space": "f",
    "--cpu-offload-gb": "f",
    "--max-model-len": "v",
    "--max-num-seqs": "i",
    "--max-num-batched-tokens": "i",
    "--long-prefill-token-threshold": "i",
    "--max-parallel-loading-workers": "i",
    "--max-cudagraph-capture-size": "i",
    "--cudagraph-capture-sizes": "+",
    "--block-size": "i",
    "--dtype": "c:auto,bfloat16,float,float16,float32,half",
    "--quantization": "v",
    "--kv-cache-dtype": "v",
    "--mamba-ssm-cache-dtype": "v",
    "--mamba-cache-mode": "v",
    "--tokenizer": "v",
    "--tokenizer-mode": "v",
    "--revision": "v",
    "--code-revision": "v",
    "--download-dir": "v",
    "--load-format": "v",
    "--seed": "i",
    "--chat-template": "v",
    "--chat-template-content-format": "v",
    "--tool-call-parser": "v",
    "--tool-parser-plugin": "v",
    "--reasoning-parser": "v",
    "--reasoning-parser-plugin": "v",
    "--generation-config": "v",
    "--attention-backend": "v",
    "--moe-backend": "v",
    "--linear-backend": "v",
    "--mm-encoder-tp-mode": "v",
    "--max-logprobs": "i",
    "--response-role": "v",
    "--root-path": "v",
    "--ssl-keyfile": "v",
    "--ssl-certfile": "v",
    "--allowed-origins": "v",
    "--lora-modules": "+",
    "--max-lora-rank": "i",
    "--compilation-config": "j",
    "--speculative-config": "j",
    "--hf-overrides": "j",
    "--limit-mm-per-prompt": "j",
    "--override-generation-config": "j",
    "--default-chat-template-kwargs": "j",
    "--reasoning-config": "j",
    "--kv-transfer-config": "j",
    "--kv-events-config": "j",
    "--model-loader-extra-config": "j",
    "--mm-processor-kwargs": "j",
    "--diffusion-config": "j",
    "--trust-remote-code": "b",
    "--enable-prefix-caching": "b",
    "--enable-chunked-prefill": "b",
    "--async-scheduling": "b",
    "--enforce-eager": "b",
    "--enable-expert-parallel": "b",
    "--enable-lora": "b",
    "--disable-custom-all-reduce": "b",
    "--disable-log-stats": "b",
    "--enable-log-requests": "b",
    "--enable-flashinfer-autotune": "b",
    "--scheduler-reserve-full-isl": "b",
    "--disable-cascade-attn": "b",
    "--skip-tokenizer-init": "b",
    "--enable-sleep-mode": "b",
    "--enable-auto-tool-choice": "t",
    "--disable-uvicorn-access-log": "t",
    "--disable-fastapi-docs": "t",
    "--disable-log-requests": "t",
    "--enable-prompt-tokens-details": "t",
    "--enable-force-include-usage": "t",
    "--enable-server-load-tracking": "t",
    "--return-tokens-as-token-ids": "t",
}
SHORT_OPTIONS = {
    "-tp": "--tensor-parallel-size",
    "-pp": "--pipeline-parallel-size",
    "-dp": "--data-parallel-size",
    "-dpl": "--data-parallel-size-local",
    "-dpn": "--data-parallel-rank",
    "-dpr": "--data-parallel-start-rank",
    "-dpa": "--data-parallel-address",
    "-dpp": "--data-parallel-rpc-port",
    "-dpb": "--data-parallel-backend",
    "-q": "--quantization",
    "-O": "--compilation-config",
    "-cc": "--compilation-config",
}
TOP_USAGE = "usage: vllm [-h] [-v] {chat,complete,serve,bench,collect-env,run-batch} ..."
SERVE_USAGE = "usage: vllm serve [model_tag] [options]"


class UsageError(Exception):
    """An argparse error: ``top`` ones come from the ``vllm`` parser (unrecognized arguments)."""

    def __init__(self, message: str, top: bool = False):
        super().__init__(message)
        self.message = message
        self.top = top


def _long_names() -> list[str]:
    names = list(OPTIONS)
    names += [f"--no-{n[2:]}" for n, kind in OPTIONS.items() if kind == "b"]
    return names


def _normalise(arg: str) -> str:
    """``_`` -> ``-`` in a long option's name (up to ``=`` and the first ``.``), as vLLM does before argparse."""
    if not arg.startswith("--"):
        return arg
    key, eq, value = arg.partition("=")
    head, dot, tail = key[2:].partition(".")
    return "--" + head.replace("_", "-") + dot + tail + eq + value


def _convert(name: str, kind: str, value: str):
    if kind == "i":
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"argument {name}: invalid int value: {value!r}") from None
    if kind == "f":
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"argument {name}: invalid float value: {value!r}") from None
    if kind == "j":
        try:
            return json.loads(value)
        except ValueError:
            raise UsageError(f"argument {name}: Value {value} cannot be converted to <function loads>.") from None
    if kind.startswith("c:"):
        choices = kind[2:].split(",")
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices)
            raise UsageError(f"argument {name}: invalid choice: {value!r} (choose from {shown})")
    return value


def parse_serve_args(argv: list[str]) -> tuple[str | None, dict, list[str]]:
    """``vllm serve`` arguments -> (model_tag, {option: value}, warnings); raises UsageError like argparse.

    Facts imitated: long options are normalised ``_`` -> ``-``; ``--opt=value`` works; unique prefixes
    of long options are accepted (argparse's default abbreviations) and ambiguous ones are errors; the
    short aliases ``-tp -pp -dp -q -O ...``; ``--no-<flag>`` for boolean options; dict-valued options
    take JSON; ``--served-model-name`` takes one or more names; ``--model`` is moved to the front with a
    warning; anything left over is reported by the top-level parser as unrecognized arguments.
    """
    warnings: list[str] = []
    args = [_normalise(a) for a in argv]
    for i, arg in enumerate(args):
        if arg == "--model" or arg.startswith("--model="):
            warnings.append(
                "With `vllm serve`, you should provide the model as a positional argument or in a config file "
                "instead of via the `--model` option. The `--model` option will be removed in v0.13."
            )
            if arg == "--model":
                tag = args[i + 1] if i + 1 < len(args) else ""
                args = [tag, *args[:i], *args[i + 2 :]]
            else:
                args = [arg.split("=", 1)[1], *args[:i], *args[i + 1 :]]
            break
    names = _long_names()
    model: str | None = None
    values: dict = {}
    extras: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            raise UsageError("help", top=False)
        if not arg.startswith("-") or arg == "-" or re.fullmatch(r"-\d+(\.\d+)?", arg):
            if model is None:
                model = arg
            else:
                extras.append(arg)
            i += 1
            continue
        key, eq, inline = arg.partition("=")
        base = key.split(".", 1)[0]
        if key.startswith("--"):
            if base in names:
                name = base
            else:
                matches = [n for n in names if n.startswith(base)]
                if len(matches) > 1:
                    raise UsageError(f"ambiguous option: {base} could match {', '.join(matches)}")
                if not matches:
                    extras.append(arg)
                    i += 1
                    continue
                name = matches[0]
        elif base in SHORT_OPTIONS:
            name = SHORT_OPTIONS[base]
        else:
            extras.append(arg)
            i += 1
            continue
        negative = name.startswith("--no-") and name not in OPTIONS
        canonical = f"--{name[5:]}" if negative else name
        kind = OPTIONS[canonical]
        if kind in ("b", "t"):
            if eq:
                raise UsageError(f"argument {name}: ignored explicit argument {inline!r}")
            values[canonical] = not negative
            i += 1
            continue
        if "." in key and kind == "j":
            # --compilation-config.level 3: one key of a JSON option
            path = key.split(".")[1:]
            if eq:
                raw = inline
                i += 1
            else:
                raw = args[i + 1] if i + 1 < len(args) else ""
                i += 2
            try:
                leaf = json.loads(raw)
            except ValueError:
                leaf = raw
            node = values.setdefault(canonical, {})
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = leaf
            continue
        if kind == "+":
            items = [inline] if eq else []
            j = i + 1
            if not eq:
                while j < len(args) and not args[j].startswith("-"):
                    items.append(args[j])
                    j += 1
            if not items:
                raise UsageError(f"argument {name}: expected at least one argument")
            values[canonical] = items
            i = j
            continue
        if eq:
            value = inline
            i += 1
        else:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or (nxt.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", nxt)):
                raise UsageError(f"argument {name}: expected one argument")
            value = nxt
            i += 2
        values[canonical] = _convert(name, kind, value)
    if extras:
        raise UsageError(f"unrecognized arguments: {' '.join(extras)}", top=True)
    return model, values, warnings


class Logger:
    """Writes vLLM-style lines to stdout (the container log) and flushes each one."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def line(self, text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def log(self, level: str, where: str, message: str, prefix: str | None = None) -> None:
        stamp = time.strftime("%m-%d %H:%M:%S")
        pfx = self.prefix if prefix is None else prefix
        self.line(f"{pfx}{level} {stamp} [{where}] {message}")

    def info(self, where: str, message: str, prefix: str | None = None) -> None:
        self.log("INFO", where, message, prefix)

    def warning(self, where: str, message: str, prefix: str | None = None) -> None:
        self.log("WARNING", where, message, prefix)

    def error(self, where: str, message: str, prefix: str | None = None) -> None:
        self.log("ERROR", where, message, prefix)


# ---------------------------------------------------------------------------------------------
# the model server
# ---------------------------------------------------------------------------------------------
# vLLM's default batch size (--max-num-seqs): requests beyond it wait for a place in the batch.
DEFAULT_MAX_NUM_SEQS = 256


class EngineState:
    def __init__(
        self,
        served_names: list[str],
        max_model_len: int,
        root_model: str,
        max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
        activity_path: str | None = None,
    ):
        self.served_names = served_names
        self.max_model_len = max_model_len
        self.root_model = root_model
        self.max_num_seqs = max(1, max_num_seqs)
        self.activity_path = activity_path
        self.dead = False
        self.wedged = False
        self.lock = threading.Lock()
        self.slot_free = threading.Condition(self.lock)
        self.running = 0
        self.waiting = 0
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.requests_total = 0
        self.finished_early: set[int] = set()
        self.created = int(time.time())
        self.publish()

    def admit(self) -> None:
        """Wait for a place in the batch (counted as waiting meanwhile), then count as running. Holds the lock."""
        self.waiting += 1
        self.publish()
        while self.running >= self.max_num_seqs:
            self.slot_free.wait()
        self.waiting -= 1
        self.running += 1
        self.publish()

    def finish(self) -> None:
        """One running request left the batch. Holds the lock."""
        self.running -= 1
        self.slot_free.notify()
        self.publish()

    def publish(self) -> None:
        """Write the engine's batch to the node's GPU activity file (what the node's fake nvidia-smi reads)."""
        if self.activity_path is None:
            return
        tmp = f"{self.activity_path}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(f"{self.running} {self.waiting}\n")
            os.replace(tmp, self.activity_path)
        except OSError:
            pass


WORDS = (
    "the",
    "spark",
    "simulated",
    "model",
    "answers",
    "with",
    "a",
    "few",
    "plain",
    "words",
    "about",
    "unified",
    "memory",
    "and",
    "tokens",
    "streamed",
    "over",
    "loopback",
    "quickly",
    "today",
)


def _make_handler(engine: EngineState, log: Logger):
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "uvicorn"
        sys_version = ""

        def log_message(self, fmt, *args):  # access log in uvicorn style
            pass

        def _access(self, code: int) -> None:
            log.line(
                f'{log.prefix}INFO:     127.0.0.1:{self.client_address[1]} - "{self.command} {self.path} '
                f'HTTP/1.1" {code} {self.responses.get(code, ("",))[0]}'
            )

        def _send_json(self, code: int, payload) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self._access(code)

        def _send_text(self, code: int, text: str, ctype: str = "text/plain; charset=utf-8") -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: int, message: str, kind: str) -> None:
            self._send_json(code, {"object": "error", "message": message, "type": kind, "param": None, "code": code})

        def do_GET(self):  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            if path == "/health":
                if engine.dead:
                    self._send_text(503, "")
                else:
                    self._send_text(200, "")
                self._access(503 if engine.dead else 200)
            elif path == "/v1/models":
                data = [
                    {
                        "id": name,
                        "object": "model",
                        "created": engine.created,
                        "owned_by": "vllm",
                        "root": engine.root_model,
                        "parent": None,
                        "max_model_len": engine.max_model_len,
                        "permission": [
                            {
                                "id": f"modelperm-{uuid.uuid4().hex}",
                                "object": "model_permission",
                                "created": engine.created,
                                "allow_create_engine": False,
                                "allow_sampling": True,
                                "allow_logprobs": True,
                                "allow_search_indices": False,
                                "allow_view": True,
                                "allow_fine_tuning": False,
                                "organization": "*",
                                "group": None,
                                "is_blocking": False,
                            }
                        ],
                    }
                    for name in engine.served_names
                ]
                self._send_json(200, {"object": "list", "data": data})
            elif path == "/metrics":
                self._send_text(200, _metrics(engine), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/version":
                self._send_json(200, {"version": VERSION})
            elif path == "/ping":
                self._send_json(200 if not engine.dead else 503, {})
            else:
                self._send_json(404, {"detail": "Not Found"})

        def do_POST(self):  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            if path not in ("/v1/chat/completions", "/v1/completions"):
                self._send_json(404, {"detail": "Not Found"})
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body must be an object")
            except ValueError as exc:
                self._error(400, f"JSON decode error: {exc}", "BadRequestError")
                return
            model = body.get("model")
            if model is not None and model not in engine.served_names:
                self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
                return
            if engine.dead:
                self._error(
                    500,
                    "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                    "InternalServerError",
                )
                return
            self._complete(path == "/v1/chat/completions", body, model or engine.served_names[0])

        def _complete(self, chat: bool, body: dict, model: str) -> None:
            try:
                max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
            except (TypeError, ValueError):
                self._error(400, "max_tokens must be an integer", "BadRequestError")
                return
            n_tokens = max(1, min(max_tokens, 64))
            prompt = json.dumps(body.get("messages") if chat else body.get("prompt", ""))
            prompt_tokens = max(1, len(prompt.split()))
            with engine.lock:
                engine.admit()
                engine.requests_total += 1
                engine.prompt_tokens += prompt_tokens
            try:
                if engine.wedged:
                    # A wedged engine accepts the request and never produces a token.
                    while True:
                        time.sleep(3600)
                if body.get("stream"):
                    self._stream(chat, model, n_tokens, prompt_tokens, body)
                else:
                    time.sleep(0.002 * n_tokens)
                    with engine.lock:
                        engine.generation_tokens += n_tokens
                    text = " ".join(WORDS[i % len(WORDS)] for i in range(n_tokens))
                    self._send_json(200, _completion(chat, model, text, n_tokens, prompt_tokens))
            finally:
                with engine.lock:
                    if threading.get_ident() in engine.finished_early:
                        engine.finished_early.discard(threading.get_ident())
                    else:
                        engine.finish()

        def _stream(self, chat: bool, model: str, n_tokens: int, prompt_tokens: int, body: dict) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
            created = int(time.time())

            def send(payload: str) -> None:
                data = f"data: {payload}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            if chat:
                send(
                    json.dumps(
                        {
                            "id": rid,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [
                                {
                                    "index": 0,
                                    "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None,
                                    "finish_reason": None,
                                }
                            ],
                        }
                    )
                )
            for i in range(n_tokens):
                time.sleep(0.05)
                piece = ("" if i == 0 else " ") + WORDS[i % len(WORDS)]
                last = i == n_tokens - 1
                finish = "length" if last else None
                if chat:
                    choice = {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": finish}
                    chunk = {
                        "id": rid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [choice],
                    }
                else:
                    chunk = {
                        "id": rid,
                        "object": "text_completion",
                        "created": created,
                        "model": model,
                        "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}],
                    }
                send(json.dumps(chunk))
                with engine.lock:
                    engine.generation_tokens += 1
            if (body.get("stream_options") or {}).get("include_usage"):
                send(
                    json.dumps(
                        {
                            "id": rid,
                            "object": "chat.completion.chunk" if chat else "text_completion",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": {
                                "prompt_tokens": prompt_tokens,
                                "completion_tokens": n_tokens,
                                "total_tokens": prompt_tokens + n_tokens,
                            },
                        }
                    )
                )
            # The request is finished before its last chunk leaves, as in vLLM.
            with engine.lock:
                engine.finish()
                engine.finished_early.add(threading.get_ident())
            send("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self._access(200)

    return Handler


def _completion(chat: bool, model: str, text: str, n_tokens: int, prompt_tokens: int) -> dict:
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens, "total_tokens": prompt_tokens + n_tokens}
    if chat:
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "tool_calls": []},
                    "logprobs": None,
                    "finish_reason": "length",
                    "stop_reason": None,
                }
            ],
            "usage": usage,
        }
    return {
        "id": "cmpl-" + uuid.uuid4().hex,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None}],
        "usage": usage,
    }


def gpu_activity_path(node: Node, pid: int) -> str:
    """`<node>/gpu/<pid>`: this engine's running and waiting requests; the node's nvidia-smi sums the files of
    engines that are still alive (a killed engine's file is ignored, then removed)."""
    directory = os.path.join(node.dir, "gpu")
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, str(pid))


def _metrics(engine: EngineState) -> str:
    with engine.lock:
        running, waiting, gen, prompt, total = (
            engine.running,
            engine.waiting,
            engine.generation_tokens,
            engine.prompt_tokens,
            engine.requests_total,
        )
    labels = f'engine="0",model_name="{engine.served_names[0]}"'
    return (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f"vllm:num_requests_running{{{labels}}} {float(running)}\n"
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f"vllm:num_requests_waiting{{{labels}}} {float(waiting)}\n"
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f"vllm:kv_cache_usage_perc{{{labels}}} {min(1.0, running / engine.max_num_seqs):.4f}\n"
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n"
        "# TYPE vllm:prompt_tokens_total counter\n"
        f"vllm:prompt_tokens_total{{{labels}}} {float(prompt)}\n"
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
        "# TYPE vllm:generation_tokens_total counter\n"
        f"vllm:generation_tokens_total{{{labels}}} {float(gen)}\n"
        "# HELP vllm:request_success_total Count of successfully processed requests.\n"
        "# TYPE vllm:request_success_total counter\n"
        f'vllm:request_success_total{{{labels},finished_reason="length"}} {float(total - running)}\n'
    )


# ---------------------------------------------------------------------------------------------
# start-up sequence
# ---------------------------------------------------------------------------------------------
def _container_state(node: Node) -> dict | None:
    name = os.environ.get("SPARKSIM_CONTAINER")
    if not name:
        return None
    try:
        with open(os.path.join(node.containers_dir, name, "state.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return None


def _resolve_local_path(path: str, container: dict | None) -> str | None:
    """Map a path seen inside the container to the host path, or None if the container cannot see it."""
    path = os.path.normpath(path)
    if container is None:
        return path if os.path.exists(path) else None
    best = None
    for mount in container.get("mounts", []):
        dest = os.path.normpath(mount["Destination"])
        if mount.get("Type") != "bind":
            continue
        if (path == dest or path.startswith(dest.rstrip("/") + "/")) and (best is None or len(dest) > len(best[0])):
            best = (dest, mount["Source"])
    if best is None:
        return None
    host = os.path.normpath(best[1] + path[len(best[0]) :])
    return host if os.path.exists(host) else None


def _hf_hub_dir(node: Node, container: dict | None) -> str:
    if container is not None:
        for mount in container.get("mounts", []):
            if os.path.normpath(mount["Destination"]) == "/root/.cache/huggingface" and mount.get("Type") == "bind":
                return os.path.join(mount["Source"], "hub")
        return os.path.join(node.containers_dir, container["name"], "rootfs", "root", ".cache", "huggingface", "hub")
    return os.path.join(os.environ.get("HF_HOME") or node.hf_home, "hub")


def ensure_repo_in_cache(hub_dir: str, repo: str) -> bool:
    """Create ``models--ns--name`` like a finished download; returns False if it was already there."""
    repo_dir = os.path.join(hub_dir, "models--" + repo.replace("/", "--"))
    if os.path.isdir(repo_dir):
        return False
    commit = uuid.uuid5(uuid.NAMESPACE_URL, repo).hex + "00000000"
    snap = os.path.join(repo_dir, "snapshots", commit)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
    os.makedirs(os.path.join(repo_dir, "blobs"), exist_ok=True)
    with open(os.path.join(repo_dir, "refs", "main"), "w", encoding="utf-8") as fh:
        fh.write(commit)
    with open(os.path.join(snap, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "max_position_embeddings": 32768,
                "_name_or_path": repo,
            },
            fh,
        )
    return True


def _traceback(log: Logger, prefix: str, frames: list[tuple[str, int, str, str]], final: str) -> None:
    log.line(f"{prefix}Traceback (most recent call last):")
    for filename, lineno, func, code in frames:
        log.line(f'{prefix}  File "{filename}", line {lineno}, in {func}')
        log.line(f"{prefix}    {code}")
    log.line(f"{prefix}{final}")


SITE = "/usr/local/lib/python3.12/dist-packages"


def _sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def _hold_forever() -> None:
    while True:
        time.sleep(3600)


def _activity(directory: str) -> tuple[int, int]:
    """Running and waiting requests in a node's GPU activity files of engines still alive."""
    running = waiting = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0, 0
    for name in names:
        if not name.isdigit() or not os.path.isdir(f"/proc/{name}"):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as fh:
                fields = fh.read().split()
            running, waiting = running + int(fields[0]), waiting + int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    return running, waiting


def _mirror_head_activity(node: Node, head_ip: str | None, pid: int) -> None:
    """A rank on another node computes the same batch as the head's engine: its GPU is as busy. Copy the head's
    activity into this node's file for as long as the rank lives."""
    head = node.peer_by_ip(head_ip) if head_ip else None
    if head is None or os.path.realpath(head.dir) == os.path.realpath(node.dir):
        _hold_forever()
    own = gpu_activity_path(node, pid)
    shown = None
    while True:
        now = _activity(os.path.join(head.dir, "gpu"))
        if now != shown:
            tmp = f"{own}.tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(f"{now[0]} {now[1]}\n")
                os.replace(tmp, own)
                shown = now
            except OSError:
                pass
        time.sleep(0.25)


def _engine_failed(log: Logger, core: str, api: str, frames: list[tuple[str, int, str, str]], final: list[str]) -> None:
    """The end of a failed engine start: the root cause (logged by the engine core), then the API server's
    traceback whose last line points back at it."""
    err = f"{core}ERROR {time.strftime('%m-%d %H:%M:%S')} [core.py:708] "
    log.line(f"{err}EngineCore failed to start.")
    log.line(f"{err}Traceback (most recent call last):")
    for filename, lineno, func, code in frames:
        log.line(f'{err}  File "{filename}", line {lineno}, in {func}')
        log.line(f"{err}    {code}")
    for line in final:
        log.line(f"{err}{line}")
    log.line(f"{core}Process EngineCore_DP0:")
    _traceback(
        log,
        core,
        [
            ("/usr/lib/python3.12/multiprocessing/process.py", 314, "_bootstrap", "self.run()"),
            ("/usr/lib/python3.12/multiprocessing/process.py", 108, "run", "self._target(*self._args, **self._kwargs)"),
            *frames,
        ],
        final[0],
    )
    for line in final[1:]:
        log.line(f"{core}{line}")
    _traceback(
        log,
        api,
        [
            ("/usr/local/bin/vllm", 10, "<module>", "sys.exit(main())"),
            (f"{SITE}/vllm/entrypoints/cli/main.py", 54, "main", "args.dispatch_function(args)"),
            (f"{SITE}/vllm/entrypoints/cli/serve.py", 57, "cmd", "uvloop.run(run_server(args))"),
            (
                f"{SITE}/vllm/entrypoints/openai/api_server.py",
                1884,
                "run_server",
                "await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)",
            ),
            (
                f"{SITE}/vllm/entrypoints/openai/api_server.py",
                1902,
                "run_server_worker",
                "async with build_async_engine_client(",
            ),
            (
                f"{SITE}/vllm/entrypoints/openai/api_server.py",
                180,
                "build_async_engine_client",
                "async with build_async_engine_client_from_engine_args(",
            ),
            (
                f"{SITE}/vllm/entrypoints/openai/api_server.py",
                225,
                "build_async_engine_client_from_engine_args",
                "async_llm = AsyncLLM.from_vllm_config(",
            ),
            (
                f"{SITE}/vllm/v1/engine/async_llm.py",
                134,
                "__init__",
                "self.engine_core = EngineCoreClient.make_async_mp_client(",
            ),
            (
                f"{SITE}/vllm/v1/engine/core_client.py",
                448,
                "__init__",
                "with launch_core_engines(vllm_config, executor_class,",
            ),
            (f"{SITE}/vllm/v1/engine/utils.py", 732, "launch_core_engines", "wait_for_engine_startup("),
            (
                f"{SITE}/vllm/v1/engine/utils.py",
                785,
                "wait_for_engine_startup",
                'raise RuntimeError("Engine core initialization failed. "',
            ),
        ],
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
    )


def _container_file(node: Node, container: dict | None, path: str) -> str:
    """Where a file named inside the container lives on this machine (bind mounts, else the rootfs)."""
    if container is None:
        return path
    found = _resolve_local_path(path, container)
    if found is not None:
        return found
    norm = os.path.normpath(path)
    for mount in container.get("mounts", []):
        dest = os.path.normpath(mount["Destination"])
        if mount.get("Type") == "bind" and (norm == dest or norm.startswith(dest.rstrip("/") + "/")):
            return os.path.normpath(mount["Source"] + norm[len(dest) :])
    return os.path.join(node.containers_dir, container["name"], "rootfs", norm.lstrip("/"))


def _has_hf_token(node: Node, container: dict | None) -> bool:
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return True
    hf_home = os.environ.get("HF_HOME") or ("/root/.cache/huggingface" if container is not None else node.hf_home)
    token_path = os.environ.get("HF_TOKEN_PATH") or os.path.join(hf_home, "token")
    try:
        with open(_container_file(node, container, token_path), encoding="utf-8") as fh:
            return bool(fh.read().strip())
    except OSError:
        return False


def _gated_error(log: Logger, prefix: str, model: str) -> None:
    url = f"https://huggingface.co/{model}/resolve/main/config.json"
    _traceback(
        log,
        prefix,
        [
            (f"{SITE}/huggingface_hub/utils/_http.py", 409, "hf_raise_for_status", "response.raise_for_status()"),
            (f"{SITE}/requests/models.py", 1026, "raise_for_status", "raise HTTPError(http_error_msg, response=self)"),
        ],
        f"requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: {url}",
    )
    log.line(prefix)
    log.line(f"{prefix}The above exception was the direct cause of the following exception:")
    log.line(prefix)
    _traceback(
        log,
        prefix,
        [
            ("/usr/local/bin/vllm", 10, "<module>", "sys.exit(main())"),
            (
                f"{SITE}/vllm/transformers_utils/config.py",
                506,
                "get_config",
                "config_dict, _ = PretrainedConfig.get_config_dict(",
            ),
            (
                f"{SITE}/huggingface_hub/file_download.py",
                1533,
                "_get_metadata_or_catch_error",
                "metadata = get_hf_file_metadata(",
            ),
            (
                f"{SITE}/huggingface_hub/utils/_http.py",
                426,
                "hf_raise_for_status",
                "raise _format(GatedRepoError, message, response) from e",
            ),
        ],
        "huggingface_hub.errors.GatedRepoError: 401 Client Error. "
        f"(Request ID: Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]})",
    )
    log.line(prefix)
    log.line(f"{prefix}Cannot access gated repo for url {url}.")
    log.line(
        f"{prefix}Access to model {model} is restricted. You must have access to it and be authenticated to access it. "
        "Please log in."
    )


def _rendezvous_dir(node: Node, addr: str | None, port: str | None) -> str:
    return os.path.join(node.root, "rendezvous", f"{addr}_{port}")


def _process_identity(pid: int) -> str | None:
    """``pid:start-time`` of a running process, or None when it has exited (a zombie counts as exited). The start
    time tells a reused PID from the process that wrote a record."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None
    if not fields or fields[0] in ("Z", "X"):
        return None
    return f"{pid}:{fields[19]}"


def _own_identity() -> str:
    identity = _process_identity(os.getpid())
    if identity is None:
        raise RuntimeError("the fake vLLM needs /proc to tell its ranks apart")
    return identity


def _alive(identity: str) -> bool:
    pid, _, _ = identity.partition(":")
    return pid.isdigit() and _process_identity(int(pid)) == identity


def _open_store(node: Node, addr: str | None, port: str | None) -> str:
    """Rank 0 opens the rendezvous store, as torch.distributed's TCPStore listens on the master address: a store of
    this process's own, so a rank of an earlier run (whose store has gone with its rank 0) can never count as
    joined. Returns the store's directory."""
    base = _rendezvous_dir(node, addr, port)
    me = _own_identity()
    store = os.path.join(base, me.replace(":", "_"))
    os.makedirs(store, exist_ok=True)
    current = os.path.join(base, "current")
    with open(f"{current}.{os.getpid()}", "w", encoding="utf-8") as fh:
        fh.write(f"{me}\n{store}\n")
    os.replace(f"{current}.{os.getpid()}", current)
    return store


def _find_store(node: Node, addr: str | None, port: str | None, rank: int) -> str:
    """A worker rank connects to rank 0's store, retrying quietly until it listens (for ever if it never does). A
    store whose rank is already held by a live process belongs to another engine on the same master port."""
    current = os.path.join(_rendezvous_dir(node, addr, port), "current")
    while True:
        try:
            with open(current, encoding="utf-8") as fh:
                owner, store = fh.read().split("\n")[:2]
        except (OSError, ValueError):
            owner = store = ""
        if owner and _alive(owner) and not _rank_alive(store, rank):
            return store
        time.sleep(0.05)


def _join(store: str, rank: int) -> None:
    identity = _own_identity()
    with open(os.path.join(store, f"rank{rank}.{os.getpid()}"), "w", encoding="utf-8") as fh:
        fh.write(identity)
    os.replace(os.path.join(store, f"rank{rank}.{os.getpid()}"), os.path.join(store, f"rank{rank}"))


def _rank_alive(store: str, rank: int) -> bool:
    try:
        with open(os.path.join(store, f"rank{rank}"), encoding="utf-8") as fh:
            return _alive(fh.read().strip())
    except OSError:
        return False


def _wait_for_ranks(store: str, ranks: range) -> None:
    """Wait quietly until every rank has joined, as NCCL/Gloo initialisation does (for ever if one never comes)."""
    while not all(_rank_alive(store, r) for r in ranks):
        time.sleep(0.05)


def _ray_workers(node: Node) -> list[tuple[Node, str]]:
    """(node, container) of the Ray worker nodes: other nodes' containers where `ray start` ran."""
    found = []
    for entry in node.cluster.get("nodes", []):
        if entry.get("name") == node.name:
            continue
        peer = Node(entry["dir"])
        try:
            names = sorted(os.listdir(peer.containers_dir))
        except FileNotFoundError:
            continue
        for name in names:
            if os.path.exists(os.path.join(peer.containers_dir, name, "ray-started")):
                found.append((peer, name))
                break
    return found


def _spawn_ray_worker(peer: Node, container: str, argv: list[str], rank: int, world: int, head_ip: str) -> None:
    env = peer.login_env()
    for key in ("SPARKSIM_LOAD_SECONDS", "SPARKSIM_FAIL", "SPARKSIM_SILENT_SECONDS"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    subprocess.run(
        [
            os.path.join(peer.bin, "docker"),
            "exec",
            "-d",
            "-e",
            f"SPARKSIM_RAY_WORKER={rank},{world},{head_ip}",
            container,
            "bash",
            "-c",
            'exec vllm serve "$@" >> /proc/1/fd/1 2>&1',
            "vllm",
            *argv,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def _clock(seconds: float) -> str:
    """tqdm's elapsed/remaining format: MM:SS (H:MM:SS past an hour)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _rate(n: int, elapsed: float) -> str:
    """tqdm's rate: `?it/s` before the first step, `s/it` when slower than one a second."""
    if n == 0 or elapsed <= 0:
        return "?it/s"
    rate = n / elapsed
    return f"{rate:5.2f}it/s" if rate >= 1 else f"{1 / rate:5.2f}s/it"


def _shards_progress(log: Logger, shards: int, seconds: float) -> None:
    """tqdm's progress lines for the weight shards, as vLLM's loader writes them (written bare, without the process
    prefix): a bar format ending in a newline, each update after tqdm's carriage return, the last one shown twice
    (the update, then the refresh on close)."""
    start = time.time()

    def bar(k: int) -> str:
        elapsed = time.time() - start
        left = "?" if k == 0 else _clock(elapsed / k * (shards - k))
        return (
            f"\rLoading safetensors checkpoint shards: {int(100 * k / shards):>3}% Completed | {k}/{shards} "
            f"[{_clock(elapsed)}<{left}, {_rate(k, elapsed)}]"
        )

    log.line(bar(0))
    for k in range(1, shards + 1):
        _sleep(seconds / shards)
        log.line(bar(k))
    log.line(bar(shards))


def _tqdm_bar(desc: str, n: int, total: int, elapsed: float) -> str:
    """tqdm's default bar: `desc:  40%|████      | 2/5 [00:01<00:01,  1.88it/s]` (ten cells, eighth blocks)."""
    fraction = n / total if total else 1.0
    eighths = int(fraction * 10 * 8)
    cells = "█" * (eighths // 8) + (" ▏▎▍▌▋▊▉"[eighths % 8] if eighths // 8 < 10 else "")
    left = "?" if n == 0 else _clock(elapsed / n * (total - n))
    return f"{desc}: {int(100 * fraction):3d}%|{cells:<10}| {n}/{total} [{_clock(elapsed)}<{left}, {_rate(n, elapsed)}]"


def _capture_progress(descs: list[tuple[str, int]], seconds: float) -> None:
    """CUDA-graph capture as vLLM shows it: one tqdm bar per mode on stderr, its updates each after a carriage return
    and no newline until the bar closes (so docker's log holds a whole bar as one line, complete only at its end)."""
    steps = sum(total for _, total in descs)
    for desc, total in descs:
        start = time.time()
        sys.stderr.write("\r" + _tqdm_bar(desc, 0, total, 0.0))
        sys.stderr.flush()
        for n in range(1, total + 1):
            _sleep(seconds / steps)
            sys.stderr.write("\r" + _tqdm_bar(desc, n, total, time.time() - start))
            sys.stderr.flush()
        sys.stderr.write("\r" + _tqdm_bar(desc, total, total, time.time() - start) + "\n")
        sys.stderr.flush()


def serve(node: Node, argv: list[str]) -> int:
    pid = os.getpid()
    try:
        model, opts, warnings = parse_serve_args(argv)
    except UsageError as exc:
        if exc.message == "help":
            print(SERVE_USAGE)
            return 0
        print(TOP_USAGE if exc.top else SERVE_USAGE, file=sys.stderr)
        print(f"{'vllm' if exc.top else 'vllm serve'}: error: {exc.message}", file=sys.stderr, flush=True)
        return 2
    ray_worker = os.environ.get("SPARKSIM_RAY_WORKER")
    headless = bool(opts.get("--headless")) or bool(ray_worker)
    nnodes = int(opts.get("--nnodes", 1))
    rank = int(opts.get("--node-rank", 0))
    master = (opts.get("--master-addr"), str(opts.get("--master-port", 29501)))
    tp = int(opts.get("--tensor-parallel-size", 1))
    pp = int(opts.get("--pipeline-parallel-size", 1))
    world = tp * pp
    if ray_worker:
        r, w, head_ip = ray_worker.split(",")
        rank, world = int(r), int(w)
        master = (head_ip, "ray")
        api = core = f"(RayWorkerWrapper pid={pid}, ip={node.ip}) "
    elif headless:
        api = core = f"(Worker_TP{rank} pid={pid}) "
    else:
        api, core = f"(APIServer pid={pid}) ", f"(EngineCore_DP0 pid={pid + 1}) "
    log = Logger(api)
    if not model:
        print(SERVE_USAGE, file=sys.stderr)
        print("vllm serve: error: the following arguments are required: model_tag", file=sys.stderr, flush=True)
        return 2
    container = _container_state(node)
    port = int(opts.get("--port", 8000))
    host = opts.get("--host") or "0.0.0.0"
    served = opts.get("--served-model-name") or [model]
    max_len_text = str(opts.get("--max-model-len", "32768")).lower()
    try:
        max_len = int(float(max_len_text[:-1]) * 1024) if max_len_text.endswith("k") else int(max_len_text)
    except ValueError:
        max_len = 32768
    gpu_util = float(opts.get("--gpu-memory-utilization", 0.9))
    backend = opts.get("--distributed-executor-backend")
    load = node.float_setting("SPARKSIM_LOAD_SECONDS", "load_seconds", DEFAULT_LOAD_SECONDS)
    silent = node.float_setting("SPARKSIM_SILENT_SECONDS", "silent_seconds", DEFAULT_SILENT_SECONDS)
    is_path = model.startswith(("/", "./", "../", "~"))
    mode = node.fail_mode()
    if mode is None and not is_path and model.startswith("sim/") and model[4:] in FAIL_MODES:
        mode = model[4:]
    cid = os.environ.get("SPARKSIM_CID", f"host-{pid}")
    mem_key = f"{cid}:vllm:{pid}"

    if headless:
        log.info("__init__.py:216", "Automatically detected platform cuda.")
    else:
        log.info("__init__.py:216", "Automatically detected platform cuda.", prefix="")
        log.info("api_server.py:1839", f"vLLM API server version {VERSION}")
        shown = {"model_tag": model, **{k[2:].replace("-", "_"): v for k, v in opts.items()}}
        log.info("utils.py:233", f"non-default args: {shown!r}")
        for text in warnings:
            log.warning("argparse_utils.py:196", text)

    # Reserve the port now (bind without listen), as vLLM does before building the engine.
    sock = None
    if not headless:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            _traceback(
                log,
                api,
                [
                    ("/usr/local/bin/vllm", 10, "<module>", "sys.exit(main())"),
                    (
                        f"{SITE}/vllm/entrypoints/openai/api_server.py",
                        1950,
                        "run_server",
                        "sock = create_server_socket(sock_addr)",
                    ),
                    (f"{SITE}/vllm/entrypoints/openai/api_server.py", 1904, "create_server_socket", "sock.bind(addr)"),
                ],
                f"OSError: [Errno {exc.errno}] Address already in use",
            )
            return 1

    # Resolve the model (every rank reads its config).
    if is_path:
        host_path = _resolve_local_path(model, container)
        if host_path is None or not os.path.isdir(host_path):
            _traceback(
                log,
                api,
                [
                    ("/usr/local/bin/vllm", 10, "<module>", "sys.exit(main())"),
                    (
                        f"{SITE}/vllm/transformers_utils/config.py",
                        506,
                        "get_config",
                        "config_dict, _ = PretrainedConfig.get_config_dict(",
                    ),
                    (
                        f"{SITE}/huggingface_hub/utils/_validators.py",
                        154,
                        "validate_repo_id",
                        "raise HFValidationError(",
                    ),
                ],
                f"huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or "
                f"'namespace/repo_name': '{model}'. Use `repo_type` argument if needed.",
            )
            log.line(f"{api}OSError: {model} does not appear to have a file named config.json.")
            return 1
    else:
        if mode == "gated-model" and not _has_hf_token(node, container):
            _gated_error(log, api, model)
            return 1
        hub = _hf_hub_dir(node, container)
        if not model.startswith("sim/") and ensure_repo_in_cache(hub, model):
            log.info("weight_utils.py:280", f"Downloading {model} into the Hugging Face cache ...")
            _sleep(0.2 * load)
        else:
            ensure_repo_in_cache(hub, model)

    if not headless:
        log.info("model.py:547", "Resolved architecture: LlamaForCausalLM")
        log.info("model.py:1510", f"Using max model len {max_len}")
        if backend != "ray" and nnodes == 1 and world > 1:
            _traceback(
                log,
                api,
                [
                    ("/usr/local/bin/vllm", 10, "<module>", "sys.exit(main())"),
                    (f"{SITE}/vllm/config/parallel.py", 440, "__post_init__", "raise ValueError("),
                ],
                f"ValueError: World size ({world}) is larger than the number of available GPUs (1) in this node. "
                f"If this is intentional and you are using: - ray, set '--distributed-executor-backend ray'. "
                f"- multiprocessing, set '--nnodes' and '--node-rank'.",
            )
            return 1
        log.info("scheduler.py:205", "Chunked prefill is enabled with max_num_batched_tokens=8192.")
        log.info("core.py:644", "Waiting for init message from front-end.", prefix=core)
        log.info(
            "core.py:77",
            f"Initializing a V1 LLM engine (v{VERSION}) with config: model={model!r}, "
            f"served_model_name={served[0]}, max_seq_len={max_len}, tensor_parallel_size={tp}, "
            f"pipeline_parallel_size={pp}, distributed_executor_backend={backend or ('mp' if nnodes > 1 else None)}",
            prefix=core,
        )

    # Distributed initialisation: every rank must join; a missing rank keeps the others waiting quietly.
    if world > 1:
        if not headless and backend == "ray":
            workers = _ray_workers(node)
            if len(workers) + 1 < world:
                log.info(
                    "ray_utils.py:385",
                    f"No current placement group found. Creating a new placement group with {world} GPU bundles.",
                    prefix=core,
                )
                while True:
                    log.warning(
                        "ray_utils.py:244",
                        f"Waiting for creating a placement group of specs for 10 seconds. specs=[{{'GPU': 1.0, "
                        f"'node:{node.ip}': 0.001}}{', {{GPU: 1.0}}' * (world - 1)}]. Check `ray status` and "
                        f"`ray list nodes` to see if you have enough resources, and make sure the IP addresses "
                        f"used by ray cluster are the same as VLLM_HOST_IP environment variable specified in each "
                        f"node if you are running on a multi-node.",
                        prefix=core,
                    )
                    _sleep(max(1.0, 2 * load))
            for r, (peer, name) in enumerate(workers[: world - 1], start=1):
                _spawn_ray_worker(peer, name, argv, r, world, node.ip)
            master = (node.ip, "ray")
        if mode == "worker-crash" and headless:
            _sleep(0.2 * load)
            _traceback(
                log,
                core,
                [
                    (
                        f"{SITE}/vllm/v1/executor/multiproc_executor.py",
                        571,
                        "worker_main",
                        "worker = WorkerProc(*args, **kwargs)",
                    ),
                    (f"{SITE}/vllm/v1/worker/gpu_worker.py", 175, "init_device", "torch.cuda.set_device(self.device)"),
                    (f"{SITE}/torch/cuda/__init__.py", 567, "set_device", "torch._C._cuda_setDevice(device)"),
                ],
                "torch.AcceleratorError: CUDA error: unspecified launch failure",
            )
            log.line(
                f"{core}CUDA kernel errors might be asynchronously reported at some other API call, so the "
                "stacktrace below might be incorrect."
            )
            return 1
        store = _open_store(node, *master) if rank == 0 else _find_store(node, *master, rank)
        _join(store, rank)
        if rank == 0:
            _wait_for_ranks(store, range(1, world if backend == "ray" else nnodes))
        else:
            _wait_for_ranks(store, range(0, 1))
    log.info(
        "parallel_state.py:1208",
        f"rank {rank} in world size {world} is assigned as DP rank 0, PP rank 0, TP rank {rank}, EP rank {rank}",
        prefix=core,
    )

    # The start-up memory check (init_device): torch.cuda.mem_get_info() reports MemFree on the GB10.
    mem = meminfo.read_meminfo(os.environ.get("SPARKSIM_MEMINFO") or node.meminfo)
    total_gib = mem.get("MemTotal", meminfo.MEM_TOTAL_KB) / meminfo.KIB_PER_GIB
    free_gib = mem.get("MemFree", meminfo.MEM_TOTAL_KB) / meminfo.KIB_PER_GIB
    requested = gpu_util * total_gib
    init_frames = [
        (f"{SITE}/vllm/v1/engine/core.py", 699, "run_engine_core", "engine_core = EngineCoreProc(*args, **kwargs)"),
        (f"{SITE}/vllm/v1/engine/core.py", 498, "__init__", "super().__init__(vllm_config, executor_class, log_stats,"),
        (f"{SITE}/vllm/v1/engine/core.py", 83, "__init__", "self.model_executor = executor_class(vllm_config)"),
        (
            f"{SITE}/vllm/v1/worker/gpu_worker.py",
            205,
            "init_device",
            "self.requested_memory = request_memory(init_snapshot, self.cache_config)",
        ),
    ]
    if free_gib < requested:
        text = (
            f"ValueError: Free memory on device ({free_gib:.2f}/{total_gib:.2f} GiB) on startup is less than desired "
            f"GPU memory utilization ({gpu_util}, {requested:.2f} GiB). Decrease GPU memory utilization or reduce "
            "GPU memory used by other processes."
        )
        if headless:
            _traceback(log, core, init_frames, text)
        else:
            _engine_failed(log, core, api, init_frames, [text])
        return 1

    log.info("gpu_model_runner.py:2602", f"Starting to load model {model}...", prefix=core)
    log.info("gpu_model_runner.py:2634", "Loading model from scratch...", prefix=core)
    log.info("cuda.py:366", "Using Flash Attention backend on V1 engine.", prefix=core)
    share = 1.0 / max(1, world)
    weight_gib = round(min(requested * 0.7, 60.0 * share + 4.0), 2)
    try:
        meminfo.set_usage(node, mem_key, weight_gib * 0.3)
    except OSError:
        pass

    if mode == "oom":
        _sleep(0.3 * load)
        oom_frames = [
            *init_frames[:3],
            (
                f"{SITE}/vllm/model_executor/model_loader/base_loader.py",
                49,
                "load_model",
                "model = initialize_model(vllm_config=vllm_config,",
            ),
            (f"{SITE}/torch/nn/modules/module.py", 1355, "to", "return self._apply(convert)"),
        ]
        text = (
            f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.75 GiB. GPU 0 has a total capacity "
            f"of {total_gib:.2f} GiB of which 412.00 MiB is free. Including non-PyTorch memory, this process has "
            f"{total_gib - 2.5:.2f} GiB memory in use. Of the allocated memory {total_gib - 3.8:.2f} GiB is allocated "
            "by PyTorch, and 612.33 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is "
            "large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
        )
        if headless:
            _traceback(log, core, oom_frames, text)
        else:
            _engine_failed(log, core, api, oom_frames, [text])
        _release(node, mem_key)
        return 1

    if mode == "vanish" and not headless:
        _sleep(0.3 * load)
        name = os.environ.get("SPARKSIM_CONTAINER")
        if name:
            # Stop our own container from outside it, as if the daemon or the OOM killer had done it.
            subprocess.Popen(
                [os.path.join(node.bin, "docker"), "stop", name],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if k != "SPARKSIM_CID"},
            )
            _hold_forever()
        return 137

    started = time.time()
    _shards_progress(log, 4, 0.4 * load)
    log.line(core)
    load_time = time.time() - started
    log.info("default_loader.py:267", f"Loading weights took {load_time:.2f} seconds", prefix=core)
    log.info(
        "gpu_model_runner.py:2653",
        f"Model loading took {weight_gib:.4f} GiB and {load_time + 0.05:.6f} seconds",
        prefix=core,
    )
    try:
        meminfo.set_usage(node, mem_key, weight_gib)
    except OSError:
        pass

    compile_started = time.time()
    log.info(
        "backends.py:548",
        f"Using cache directory: /root/.cache/vllm/torch_compile_cache/{uuid.uuid5(uuid.NAMESPACE_URL, model).hex[:10]}"
        f"/rank_{rank}_0/backbone for vLLM's torch.compile",
        prefix=core,
    )
    _sleep(0.03 * load)
    log.info("backends.py:559", f"Dynamo bytecode transform time: {time.time() - compile_started:.2f} s", prefix=core)
    _sleep(0.07 * load)
    if mode == "silent-compile":
        # Nothing is logged during this phase: silence is not death.
        _sleep(silent)
    log.info(
        "backends.py:218",
        f"Compiling a graph for dynamic shape takes {time.time() - compile_started:.2f} s",
        prefix=core,
    )
    log.info("monitor.py:34", f"torch.compile takes {time.time() - compile_started:.2f} s in total", prefix=core)
    _sleep(0.03 * load)  # the profiling run that measures what is left for the KV cache
    kv_gib = max(0.5, requested - weight_gib - 1.5)
    log.info("gpu_worker.py:298", f"Available KV cache memory: {kv_gib:.2f} GiB", prefix=core)
    tokens = int(kv_gib * 1024 * 1024 * 1024 / (128 * 1024))
    if rank == 0:
        log.info("kv_cache_utils.py:1087", f"GPU KV cache size: {tokens:,} tokens", prefix=core)
        log.info(
            "kv_cache_utils.py:1091",
            f"Maximum concurrency for {max_len:,} tokens per request: {tokens / max_len:.2f}x",
            prefix=core,
        )
    try:
        meminfo.set_usage(node, mem_key, requested - 1.0)
    except OSError:
        pass
    graphs_started = time.time()
    _capture_progress(
        [("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE)", 67), ("Capturing CUDA graphs (decode, FULL)", 35)],
        0.22 * load,
    )
    log.info(
        "gpu_model_runner.py:3480",
        f"Graph capturing finished in {max(1, round(time.time() - graphs_started))} secs, took 0.52 GiB",
        prefix=core,
    )
    log.info(
        "core.py:210",
        f"init engine (profile, create kv cache, warmup model) took {time.time() - compile_started:.2f} seconds",
        prefix=core,
    )

    if headless:
        _mirror_head_activity(node, master[0], pid)

    if mode == "never-ready":
        _hold_forever()

    _sleep(0.05 * load)  # the API server process sets up once the engine is ready
    log.info(
        "loggers.py:147",
        f"Engine 000: vllm cache_config_info with initialization after num_gpu_blocks is: {tokens // 16}",
    )
    log.info("api_server.py:1634", "Supported_tasks: ['generate']")
    engine = EngineState(
        served,
        max_len,
        model,
        max_num_seqs=int(opts.get("--max-num-seqs") or DEFAULT_MAX_NUM_SEQS),
        activity_path=gpu_activity_path(node, pid),
    )
    if mode == "wedged":
        engine.wedged = True
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(engine, log), bind_and_activate=False)
    server.daemon_threads = True
    server.socket.close()
    server.socket = sock
    log.info("api_server.py:1912", f"Starting vLLM API server 0 on http://{host}:{port}")
    log.info("launcher.py:34", "Available routes are:")
    for route in ("/health", "/v1/models", "/v1/chat/completions", "/v1/completions", "/metrics", "/version"):
        log.info("launcher.py:42", f"Route: {route}, Methods: {'POST' if 'completions' in route else 'GET'}")
    # uvicorn's order: the lifespan start-up is logged, then the socket vLLM bound long ago starts listening.
    log.line(f"{api}INFO:     Started server process [{pid}]")
    log.line(f"{api}INFO:     Waiting for application startup.")
    log.line(f"{api}INFO:     Application startup complete.")
    server.server_activate()
    node.record("vllm", argv, "port_open", port=port, served_model_name=served[0])
    node.record("vllm", argv, "ready", port=port, served_model_name=served[0])

    if mode == "dies-after-ready":

        def die() -> None:
            time.sleep(1.0)
            engine.dead = True
            log.error("core.py:785", "EngineCore encountered a fatal error.", prefix=core)
            _traceback(
                log,
                core,
                [
                    (f"{SITE}/vllm/v1/engine/core.py", 776, "run_engine_core", "engine_core.run_busy_loop()"),
                    (f"{SITE}/vllm/v1/engine/core.py", 803, "run_busy_loop", "self._process_engine_step()"),
                ],
                "RuntimeError: CUDA error: an illegal memory access was encountered",
            )
            log.error("async_llm.py:480", "AsyncLLM output_handler failed.")
            log.line(
                f"{api}vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. "
                f"See stack trace (above) for the root cause."
            )

        threading.Thread(target=die, daemon=True).start()

    server.serve_forever(poll_interval=0.2)
    return 0


def _release(node: Node, key: str) -> None:
    """The memory of a process that ended comes back gradually, as on the GB10."""
    try:
        meminfo.release(node, key)
    except OSError:
        pass


def main(node: Node, argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(TOP_USAGE)
        return 0
    if argv[0] in ("-v", "--version"):
        print(VERSION)
        return 0
    if argv[0] != "serve":
        print(TOP_USAGE, file=sys.stderr)
        print(
            f"vllm: error: argument subparser: invalid choice: '{argv[0]}' (choose from 'chat', 'complete', "
            "'serve', 'bench', 'collect-env', 'run-batch')",
            file=sys.stderr,
        )
        return 2
    return serve(node, argv[1:])
