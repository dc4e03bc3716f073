"""A fake ``vllm`` CLI: ``vllm serve MODEL ...`` logs like vLLM, waits, then serves an OpenAI API.

Timeline of a normal start (``L`` = load seconds): start-up lines, weight loading (0.5 L),
``Loading weights took ...``, CUDA graph capture (0.3 L), ``Graph capturing finished``, then the API
server binds ``--port`` on 127.0.0.1, logs ``Uvicorn running on ...`` and
``Application startup complete.``. The port is reserved (bound, not listening) at start, so a port
already in use fails early with ``Address already in use`` while a loading server refuses
connections, as the real one does.

A worker rank (``--headless``, added by the launcher on workers) loads and binds nothing.

Failure modes (``sim/<mode>`` repo ids, ``SPARKSIM_FAIL`` or ``<root>/fail_mode``): see
``FAIL_MODES`` in :mod:`sparksim.common` and the package README in ``__init__``.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid

from sparksim import meminfo
from sparksim.common import DEFAULT_LOAD_SECONDS, DEFAULT_SILENT_SECONDS, FAIL_MODES, Node

VERSION = "0.11.1"
VALUE_OPTS = {
    "--served-model-name",
    "--host",
    "--port",
    "-tp",
    "--tensor-parallel-size",
    "-pp",
    "--pipeline-parallel-size",
    "-dp",
    "--data-parallel-size",
    "--gpu-memory-utilization",
    "--max-model-len",
    "--max-num-seqs",
    "--dtype",
    "--quantization",
    "-q",
    "--kv-cache-dtype",
    "--nnodes",
    "--node-rank",
    "--master-addr",
    "--master-port",
    "--distributed-executor-backend",
    "--tokenizer",
    "--revision",
    "--download-dir",
    "--load-format",
    "--max-num-batched-tokens",
    "--chat-template",
    "--tool-call-parser",
    "--reasoning-parser",
    "--api-key",
    "--uvicorn-log-level",
    "--swap-space",
    "--seed",
    "--model",
    "--config",
    "--generation-config",
    "--limit-mm-per-prompt",
    "--compilation-config",
    "-O",
    "--hf-overrides",
    "--speculative-config",
}


class Args:
    def __init__(self, argv: list[str]):
        self.model: str | None = None
        self.opts: dict[str, str] = {}
        self.flags: set[str] = set()
        self.served_names: list[str] = []
        i = 0
        while i < len(argv):
            arg = argv[i]
            if arg.startswith("--served-model-name="):
                self.served_names.append(arg.split("=", 1)[1])
            elif arg == "--served-model-name":
                # nargs="+" in vLLM: every following word up to the next option is a name.
                while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    self.served_names.append(argv[i + 1])
                    i += 1
            elif arg.startswith("-") and "=" in arg and arg.startswith("--"):
                key, value = arg.split("=", 1)
                self.opts[key] = value
            elif arg in VALUE_OPTS:
                self.opts[arg] = argv[i + 1] if i + 1 < len(argv) else ""
                i += 1
            elif arg.startswith("-"):
                if i + 1 < len(argv) and not argv[i + 1].startswith("-") and arg not in _BOOL_OPTS:
                    self.opts[arg] = argv[i + 1]
                    i += 1
                else:
                    self.flags.add(arg)
            elif self.model is None:
                self.model = arg
            i += 1
        self.model = self.model or self.opts.get("--model")

    def get(self, *names: str, default: str | None = None) -> str | None:
        for name in names:
            if name in self.opts:
                return self.opts[name]
        return default

    def int(self, *names: str, default: int) -> int:
        try:
            return int(self.get(*names, default=str(default)))
        except ValueError:
            return default


_BOOL_OPTS = {
    "--headless",
    "--enforce-eager",
    "--trust-remote-code",
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--disable-log-requests",
    "--disable-log-stats",
    "--enable-auto-tool-choice",
    "--enable-chunked-prefill",
    "--async-scheduling",
    "--enable-expert-parallel",
    "--disable-custom-all-reduce",
    "--enable-log-requests",
}


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
class EngineState:
    def __init__(self, served_names: list[str], max_model_len: int, root_model: str):
        self.served_names = served_names
        self.max_model_len = max_model_len
        self.root_model = root_model
        self.dead = False
        self.wedged = False
        self.lock = threading.Lock()
        self.running = 0
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.requests_total = 0
        self.created = int(time.time())


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
                engine.running += 1
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
                    engine.running -= 1

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


def _metrics(engine: EngineState) -> str:
    with engine.lock:
        running, gen, prompt, total = (
            engine.running,
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
        f"vllm:num_requests_waiting{{{labels}}} 0.0\n"
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f"vllm:kv_cache_usage_perc{{{labels}}} {min(1.0, running * 0.01):.2f}\n"
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


def serve(node: Node, argv: list[str]) -> int:
    args = Args(argv)
    pid = os.getpid()
    api = f"(APIServer pid={pid}) "
    core = f"(EngineCore_DP0 pid={pid + 1}) "
    log = Logger(api)
    if not args.model:
        log.line("usage: vllm serve [model_tag] [options]")
        log.line("vllm serve: error: the following arguments are required: model_tag")
        return 2
    container = _container_state(node)
    headless = "--headless" in args.flags
    port = args.int("--port", default=8000)
    host = args.get("--host", default="0.0.0.0") or "0.0.0.0"
    served = args.served_names or [args.model]
    tp = args.int("-tp", "--tensor-parallel-size", default=1)
    pp = args.int("-pp", "--pipeline-parallel-size", default=1)
    nnodes = args.int("--nnodes", default=1)
    rank = args.int("--node-rank", default=0)
    max_len = args.int("--max-model-len", default=32768)
    try:
        gpu_util = float(args.get("--gpu-memory-utilization", default="0.9"))
    except ValueError:
        gpu_util = 0.9
    load = node.float_setting("SPARKSIM_LOAD_SECONDS", "load_seconds", DEFAULT_LOAD_SECONDS)
    silent = node.float_setting("SPARKSIM_SILENT_SECONDS", "silent_seconds", DEFAULT_SILENT_SECONDS)
    model = args.model
    is_path = model.startswith(("/", "./", "../", "~"))
    mode = node.fail_mode()
    if mode is None and not is_path and model.startswith("sim/") and model[4:] in FAIL_MODES:
        mode = model[4:]
    cid = os.environ.get("SPARKSIM_CID", f"host-{pid}")
    mem_key = f"{cid}:vllm:{pid}"

    if headless:
        log = Logger(f"(EngineCore_DP0 pid={pid}) ")
        log.info("__init__.py:216", "Automatically detected platform cuda.")
        log.info(
            "launcher.py:121",
            f"Headless mode: node rank {rank} of {nnodes}, master "
            f"{args.get('--master-addr')}:{args.get('--master-port')}",
        )
    else:
        log.info("__init__.py:216", "Automatically detected platform cuda.", prefix="")
        log.info("api_server.py:1839", f"vLLM API server version {VERSION}")
        shown = {"model_tag": model, **{k.lstrip("-").replace("-", "_"): v for k, v in args.opts.items()}}
        if args.served_names:
            shown["served_model_name"] = args.served_names
        log.info("utils.py:233", f"non-default args: {shown!r}")

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

    # Resolve the model.
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
        hub = _hf_hub_dir(node, container)
        if not model.startswith("sim/") and ensure_repo_in_cache(hub, model):
            log.info("weight_utils.py:280", f"Downloading {model} into the Hugging Face cache ...")
            _sleep(0.2 * load)
        else:
            ensure_repo_in_cache(hub, model)

    log.info("model.py:547", "Resolved architecture: LlamaForCausalLM")
    log.info("model.py:1510", f"Using max model len {max_len}")
    ray = args.get("--distributed-executor-backend") == "ray"
    if not headless and not ray and nnodes == 1 and tp * pp > 1:
        _traceback(
            log,
            api,
            [
                ("/usr/local/bin/vllm", 10, "<module>", "sys.exit(main())"),
                (f"{SITE}/vllm/config/parallel.py", 440, "__post_init__", "raise ValueError("),
            ],
            f"ValueError: World size ({tp * pp}) is larger than the number of available GPUs (1) in this node. "
            f"If this is intentional and you are using: - ray, set '--distributed-executor-backend ray'. "
            f"- multiprocessing, set '--nnodes' and '--node-rank'.",
        )
        return 1
    if nnodes > 1:
        log.info(
            "parallel_state.py:1208",
            f"world_size={tp * pp} rank={rank} local_rank=0 "
            f"distributed_init_method=tcp://{args.get('--master-addr')}:"
            f"{args.get('--master-port')} backend=nccl",
            prefix=core,
        )
    log.info(
        "core.py:93",
        f"Initializing a V1 LLM engine (v{VERSION}) with config: model={model!r}, "
        f"served_model_name={served[0]}, max_seq_len={max_len}, tensor_parallel_size={tp}",
        prefix=core,
    )
    log.info("gpu_model_runner.py:2338", f"Starting to load model {model}...", prefix=core)

    weight_gib = round(gpu_util * meminfo.USABLE_GIB * (0.5 if nnodes > 1 else 0.75), 1)
    try:
        meminfo.set_usage(node, mem_key, weight_gib * 0.3)
    except OSError:
        pass

    if mode == "oom":
        _sleep(0.3 * load)
        _traceback(
            log,
            core,
            [
                (
                    f"{SITE}/vllm/v1/engine/core.py",
                    699,
                    "run_engine_core",
                    "engine_core = EngineCoreProc(*args, **kwargs)",
                ),
                (
                    f"{SITE}/vllm/model_executor/model_loader/base_loader.py",
                    49,
                    "load_model",
                    "model = initialize_model(vllm_config=vllm_config,",
                ),
                (f"{SITE}/torch/nn/modules/module.py", 1355, "to", "return self._apply(convert)"),
            ],
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.75 GiB. GPU 0 has a total capacity "
            "of 119.70 GiB of which 412.00 MiB is free. Including non-PyTorch memory, this process has 117.20 GiB "
            "memory in use. Of the allocated memory 115.91 GiB is allocated by PyTorch, and 612.33 MiB is reserved "
            "by PyTorch but unallocated.",
        )
        log.error("core_client.py:564", "Engine core proc EngineCore_DP0 died unexpectedly, shutting down client.")
        log.line(
            f"{api}RuntimeError: Engine core initialization failed. See root cause above. "
            f"Failed core proc(s): {{'EngineCore_DP0': 1}}"
        )
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

    _sleep(0.5 * load)
    load_time = round(0.5 * load + random.uniform(0.01, 0.05), 2)
    log.info("default_loader.py:267", f"Loading weights took {load_time:.2f} seconds", prefix=core)
    log.info(
        "gpu_model_runner.py:2392",
        f"Model loading took {weight_gib:.4f} GiB and {load_time + 0.3:.6f} seconds",
        prefix=core,
    )
    try:
        meminfo.set_usage(node, mem_key, weight_gib)
    except OSError:
        pass

    if mode == "silent-compile":
        # Nothing is logged during this phase: silence is not death.
        _sleep(silent)
        log.info("backends.py:215", f"Compiling a graph for dynamic shape takes {silent:.2f} s", prefix=core)
    log.info("monitor.py:34", "torch.compile takes 0.00 s in total", prefix=core)
    log.info("gpu_worker.py:298", f"Available KV cache memory: {weight_gib * 0.3:.2f} GiB", prefix=core)
    log.info(
        "gpu_model_runner.py:3118",
        "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|##########| 67/67",
        prefix=core,
    )
    _sleep(0.3 * load)
    log.info("gpu_model_runner.py:3294", "Graph capturing finished in 1 secs, took 0.52 GiB", prefix=core)
    log.info(
        "core.py:210",
        f"init engine (profile, create kv cache, warmup model) took {0.3 * load + 0.1:.2f} seconds",
        prefix=core,
    )

    if headless:
        log.info("core.py:752", f"Worker rank {rank} ready; waiting for the head node.", prefix=core)
        _hold_forever()

    if mode == "never-ready":
        log.info("api_server.py:1634", "Waiting for the engine core to report ready ...")
        _hold_forever()

    engine = EngineState(served, max_len, model)
    if mode == "wedged":
        engine.wedged = True
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(engine, log), bind_and_activate=False)
    server.daemon_threads = True
    server.socket.close()
    server.socket = sock
    log.info("api_server.py:1870", f"Starting vLLM API server 0 on http://{host}:{port}")
    for route in ("/health", "/v1/models", "/v1/chat/completions", "/v1/completions", "/metrics"):
        log.info("launcher.py:37", f"Route: {route}")
    server.server_activate()
    node.record("vllm", argv, "port_open", port=port, served_model_name=served[0])
    log.line(f"{api}INFO:     Started server process [{pid}]")
    log.line(f"{api}INFO:     Waiting for application startup.")
    log.line(f"{api}INFO:     Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)")
    log.line(f"{api}INFO:     Application startup complete.")
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
    try:
        meminfo.set_usage(node, key, 0)
    except OSError:
        pass


def main(node: Node, argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: vllm [-h] [-v] {chat,complete,serve,bench,collect-env,run-batch} ...")
        return 0
    if argv[0] in ("-v", "--version"):
        print(VERSION)
        return 0
    if argv[0] != "serve":
        print(f"vllm: error: argument subparser: invalid choice: '{argv[0]}'", file=sys.stderr)
        return 2
    return serve(node, argv[1:])
