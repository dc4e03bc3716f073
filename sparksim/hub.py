"""A simulated Hugging Face Hub on loopback, for the real ``huggingface_hub`` client (``hf download``) on the nodes.

Every session on a simulated node has ``HF_ENDPOINT`` pointing here. What it serves, as the real Hub does for what
``snapshot_download`` asks:

- ``GET /api/models/<repo>`` and ``/api/models/<repo>/revision/<rev>``: the model's info (``sha``, ``siblings``);
- ``GET /api/models/<repo>/tree/<rev>``: the file list with sizes (``lfs`` for the weights);
- ``HEAD|GET /<repo>/resolve/<rev>/<file>``: the file, with ``X-Repo-Commit``, ``ETag`` and, for LFS files,
  ``X-Linked-Etag`` / ``X-Linked-Size``; ``Range: bytes=N-`` answers 206 (resumable downloads).

Any repo under ``sim/`` exists; others are 404 ``RepoNotFound``. Each has ``config.json`` (a small decoder config
whose numbers are those of the fit estimate), ``tokenizer.json`` and ``model.safetensors`` of ``weights_bytes`` (or
``shards`` files ``model-0000i-of-0000n.safetensors`` sharing it).
``sim/fail-download`` breaks its weights halfway: the connection is cut at half the file, and a request that starts
at or past half gets a 500, so the client fails after its retries.

Knobs, re-read on every request from ``<root>/hub.json`` (see :meth:`SimCluster.set_hub`): ``speed`` (bytes/s of
each file transfer, 0 = as fast as possible), ``weights_bytes`` (default 4 MiB), and ``repos``: per repo overrides of
``weights_bytes``, ``shards`` and ``config``. Every request is appended to ``<root>/hub.jsonl`` (method, path,
range, status, and a hash of its Authorization header).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

DEFAULT_WEIGHTS_BYTES = 4 * 1024 * 1024
FAIL_REPO = "sim/fail-download"
CHUNK = 64 * 1024
HASHED_UP_TO = 256 * 1024 * 1024
PORT_FILE = "hub.port"
SETTINGS_FILE = "hub.json"
LOG_FILE = "hub.jsonl"

DEFAULT_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "num_hidden_layers": 16,
    "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16",
}


class HubFile:
    """One file of a simulated repo: its bytes are a pattern derived from its name, so no file is kept in memory."""

    def __init__(self, repo: str, path: str, size: int, *, text: bytes | None = None, lfs: bool = False) -> None:
        self.repo = repo
        self.path = path
        self.size = size if text is None else len(text)
        self.text = text
        self.lfs = lfs
        seed = hashlib.sha256(f"{repo}/{path}".encode()).digest()
        self.block = (seed * (4096 // len(seed)))[:4096]
        self._sha256: str | None = None

    def read(self, start: int, length: int) -> bytes:
        if self.text is not None:
            return self.text[start : start + length]
        out = bytearray()
        offset = start
        end = min(start + length, self.size)
        while offset < end:
            pos = offset % len(self.block)
            take = min(len(self.block) - pos, end - offset)
            out += self.block[pos : pos + take]
            offset += take
        return bytes(out)

    @property
    def git_sha1(self) -> str:
        if self.size > HASHED_UP_TO:
            return hashlib.sha1(f"{self.repo}/{self.path}/{self.size}".encode()).hexdigest()  # noqa: S324
        digest = hashlib.sha1(f"blob {self.size}\0".encode())  # noqa: S324 - git's object id, not security
        for offset in range(0, self.size, 1 << 20):
            digest.update(self.read(offset, 1 << 20))
        return digest.hexdigest()

    @property
    def sha256(self) -> str:
        if self._sha256 is None and self.size > HASHED_UP_TO:
            # Too big to read here (a "does not fit" test's terabytes): a stable id that is never downloaded.
            self._sha256 = hashlib.sha256(f"{self.repo}/{self.path}/{self.size}".encode()).hexdigest()
        if self._sha256 is None:
            digest = hashlib.sha256()
            for offset in range(0, self.size, 1 << 20):
                digest.update(self.read(offset, 1 << 20))
            self._sha256 = digest.hexdigest()
        return self._sha256

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_sha1


class HubRepo:
    """A simulated repo at its one revision."""

    def __init__(self, repo: str, settings: dict) -> None:
        own = settings.get("repos", {}).get(repo, {})
        weights = int(own.get("weights_bytes", settings.get("weights_bytes", DEFAULT_WEIGHTS_BYTES)))
        shards = own.get("shards", settings.get("shards", 1))
        # `shards`: how many weight files share weights_bytes, or the list of their sizes.
        sizes = [int(size) for size in shards] if isinstance(shards, list) else None
        shards = len(sizes) if sizes else max(1, int(shards))
        config = {**DEFAULT_CONFIG, **own.get("config", {}), "_name_or_path": repo}
        self.repo = repo
        files = [
            HubFile(repo, "config.json", 0, text=json.dumps(config, indent=2).encode()),
            HubFile(repo, "tokenizer.json", 0, text=json.dumps({"version": "1.0", "model": repo}).encode()),
        ]
        if shards == 1:
            files.append(HubFile(repo, "model.safetensors", weights, lfs=True))
        else:
            for index in range(shards):
                name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
                files.append(HubFile(repo, name, sizes[index] if sizes else weights // shards, lfs=True))
        self.files = {file.path: file for file in files}
        identity = json.dumps([repo, weights, shards, sizes, config], sort_keys=True).encode()
        self.sha = hashlib.sha1(identity).hexdigest()  # noqa: S324 - a commit id, not security


class Hub:
    """The state shared by the request handlers: the settings file and a cache of the repos built from it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.lock = threading.Lock()
        self._repos: dict[tuple[str, str], HubRepo] = {}

    def settings(self) -> dict:
        try:
            with open(os.path.join(self.root, SETTINGS_FILE), encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def repo(self, name: str) -> HubRepo | None:
        if not re.fullmatch(r"sim/[A-Za-z0-9][A-Za-z0-9._-]*", name):
            return None
        settings = self.settings()
        key = (name, json.dumps(settings, sort_keys=True))
        with self.lock:
            if key not in self._repos:
                self._repos[key] = HubRepo(name, settings)
            return self._repos[key]

    def log(self, record: dict) -> None:
        line = json.dumps({"t": time.time(), **record}) + "\n"
        with self.lock, open(os.path.join(self.root, LOG_FILE), "a", encoding="utf-8") as fh:
            fh.write(line)


class HubHandler(BaseHTTPRequestHandler):
    server_version = "sparksim-hub"
    protocol_version = "HTTP/1.1"
    hub: Hub

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(head=False)

    # -- routing -------------------------------------------------------------------------------------------
    def _dispatch(self, *, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        status = 500
        try:
            if path.startswith("/api/models/"):
                status = self._api(path.removeprefix("/api/models/"), head=head)
            elif "/resolve/" in path:
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                _rev, _, filename = rest.partition("/")
                status = self._resolve(repo, filename, head=head)
            else:
                status = self._error(404, "Not found", code="EntryNotFound", head=head)
        except (BrokenPipeError, ConnectionResetError):
            status = 499
        finally:
            auth = self.headers.get("Authorization")
            self.hub.log(
                {
                    "method": self.command,
                    "path": path,
                    "range": self.headers.get("Range"),
                    "status": status,
                    # Which token came, without writing it down: the first 12 hex of its header's sha256.
                    "auth": hashlib.sha256(auth.encode()).hexdigest()[:12] if auth else None,
                }
            )

    def _api(self, rest: str, *, head: bool) -> int:
        tree = None
        if "/tree/" in rest:
            rest, _, tree = rest.partition("/tree/")
        elif "/revision/" in rest:
            rest, _, _rev = rest.partition("/revision/")
        repo = self.hub.repo(rest)
        if repo is None:
            return self._error(404, "Repository not found", code="RepoNotFound", head=head)
        if tree is not None:
            body = [self._tree_entry(file) for file in repo.files.values()]
        else:
            body = {
                "id": repo.repo,
                "modelId": repo.repo,
                "sha": repo.sha,
                "private": False,
                "gated": False,
                "disabled": False,
                "siblings": [{"rfilename": path, "size": file.size} for path, file in repo.files.items()],
                "usedStorage": sum(file.size for file in repo.files.values()),
            }
        return self._json(body, head=head)

    @staticmethod
    def _tree_entry(file: HubFile) -> dict:
        entry = {
            "type": "file",
            "oid": file.git_sha1 if not file.lfs else hashlib.sha1(file.sha256.encode()).hexdigest(),
        }
        entry.update({"size": file.size, "path": file.path})
        if file.lfs:
            entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": 134}
        return entry

    def _resolve(self, repo_name: str, filename: str, *, head: bool) -> int:
        repo = self.hub.repo(repo_name)
        if repo is None:
            return self._error(404, "Repository not found", code="RepoNotFound", head=head)
        file = repo.files.get(filename)
        if file is None:
            return self._error(404, "Entry not found", code="EntryNotFound", head=head)
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if match:
            start = int(match.group(1))
        failing = repo.repo == FAIL_REPO and file.lfs and not head
        half = file.size // 2
        if failing and start >= half:
            return self._error(500, "Internal Error - the simulated Hub fails this file halfway", head=head)
        if start > file.size:
            return self._error(416, "Range not satisfiable", head=head)
        status = 206 if match else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", f'"{file.etag}"')
        if file.lfs:
            self.send_header("X-Linked-Etag", f'"{file.sha256}"')
            self.send_header("X-Linked-Size", str(file.size))
        if match:
            self.send_header("Content-Range", f"bytes {start}-{max(file.size - 1, start)}/{file.size}")
        self.send_header("Content-Length", str(file.size - start))
        self.end_headers()
        if head:
            return status
        stop_at = half if failing else file.size
        self._send_body(file, start, stop_at)
        if failing:
            self.close_connection = True
            self.connection.shutdown(2)
        return status

    def _send_body(self, file: HubFile, start: int, stop_at: int) -> None:
        speed = float(self.hub.settings().get("speed", 0) or 0)
        began = time.monotonic()
        offset = start
        while offset < stop_at:
            chunk = file.read(offset, min(CHUNK, stop_at - offset))
            self.wfile.write(chunk)
            offset += len(chunk)
            if speed > 0:
                due = began + (offset - start) / speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        self.wfile.flush()

    # -- answers -------------------------------------------------------------------------------------------
    def _json(self, body: object, *, head: bool) -> int:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)
        return 200

    def _error(self, status: int, message: str, *, code: str | None = None, head: bool) -> int:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        self.end_headers()
        if not head:
            self.wfile.write(data)
        return status


def make_server(root: str, port: int = 0) -> ThreadingHTTPServer:
    """A Hub server bound on 127.0.0.1 (``port`` 0: any free port), not yet serving."""
    handler = type("BoundHubHandler", (HubHandler,), {"hub": Hub(root)})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def serve(root: str, port: int = 0) -> None:
    """Serve until killed; the bound port is written to ``<root>/hub.port`` once the socket listens."""
    server = make_server(root, port)
    tmp = os.path.join(root, PORT_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"{server.server_address[1]}\n")
    os.replace(tmp, os.path.join(root, PORT_FILE))
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
