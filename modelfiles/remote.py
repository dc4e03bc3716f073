"""The commands a model download runs on a node, and the parsing of what they print.

The download is `hf download <repo> --revision <rev>` (huggingface_hub's CLI; `huggingface-cli download` on older
installs), started detached in a session of its own (`setsid`) so that it outlives the SSH command that started it
and the worker that watches it. What it leaves in `<HF_HOME>/spark-control/downloads/<id>/`: `pid` (its process group),
`log` (its output) and `exit` (its exit status, once it ended). The HF token reaches it on stdin, read into its
environment; it is never on an argv.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

from cluster.models import ClusterSettings

DOWNLOADERS = ("hf", "huggingface-cli")
NO_DOWNLOADER = "__no_downloader__"
STATE_DIR = posixpath.join("spark-control", "downloads")
HUB_DEFAULT = "https://huggingface.co"


def hf_home(cluster: ClusterSettings) -> str:
    return cluster.hf_home or "~/.cache/huggingface"


def remote_path(path: str) -> str:
    """A path for the remote shell: `~/x` keeps its home expansion, everything else is quoted."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def repo_cache_dir(*, repo: str, cluster: ClusterSettings) -> str:
    """Where the HF cache keeps a repo: <HF_HOME>/hub/models--org--name."""
    return posixpath.join(hf_home(cluster), "hub", "models--" + repo.replace("/", "--"))


def state_dir(*, download_id: str, cluster: ClusterSettings) -> str:
    return posixpath.join(hf_home(cluster), STATE_DIR, download_id)


def build_downloader_command() -> str:
    """Print the path of the first downloader the node has, or NO_DOWNLOADER. Commands run in a non-login shell, so
    `pip install --user`'s ~/.local/bin may be off the PATH: it is looked in too."""
    probes = []
    for name in DOWNLOADERS:
        probes += [f"command -v {name}", f'{{ [ -x "$HOME/.local/bin/{name}" ] && echo "$HOME/.local/bin/{name}"; }}']
    return " || ".join(probes) + f" || echo {NO_DOWNLOADER}"


def build_file_list_command(*, repo: str, revision: str) -> str:
    """The Hub's file list of the repo (JSON), fetched by the node with its own endpoint (`HF_ENDPOINT`, else the
    public Hub); an `Authorization` header, if any, comes on stdin (`-H @-`)."""
    url = f"/api/models/{repo}/tree/{revision}?recursive=true"
    return f'curl -fsS --max-time 30 -H @- "${{HF_ENDPOINT:-{HUB_DEFAULT}}}"{shlex.quote(url)}'


def build_hub_file_command(*, repo: str, revision: str, filename: str) -> str:
    url = f"/{repo}/resolve/{revision}/{filename}"
    return f'curl -fsSL --max-time 30 -H @- "${{HF_ENDPOINT:-{HUB_DEFAULT}}}"{shlex.quote(url)}'


def build_cached_file_command(*, repo: str, cluster: ClusterSettings, filename: str) -> str:
    """Print a file of the repo's cached snapshot (the one `refs/main` names, else any)."""
    cache = remote_path(repo_cache_dir(repo=repo, cluster=cluster))
    name = shlex.quote(filename)
    return (
        f'c={cache}; r=$(cat "$c/refs/main" 2>/dev/null); '
        f'if [ -n "$r" ] && [ -f "$c/snapshots/$r/"{name} ]; then cat "$c/snapshots/$r/"{name}; '
        f'else for f in "$c"/snapshots/*/{name}; do [ -f "$f" ] && cat "$f" && break; done; fi'
    )


def build_cached_weights_command(*, repo: str, cluster: ClusterSettings, suffixes: tuple[str, ...]) -> str:
    """Print the bytes of the weight files of the repo's cached snapshot (refs/main, else any), or nothing."""
    cache = remote_path(repo_cache_dir(repo=repo, cluster=cluster))
    patterns = " ".join(f'"$s"/*{suffix}' for suffix in suffixes)
    return (
        f'c={cache}; r=$(cat "$c/refs/main" 2>/dev/null); s="$c/snapshots/$r"; '
        '[ -n "$r" ] && [ -d "$s" ] || s=$(ls -d "$c"/snapshots/*/ 2>/dev/null | head -n 1); '
        f'[ -n "$s" ] && du -cbL {patterns} 2>/dev/null | tail -n 1 | cut -f1'
    )


def build_local_file_command(*, path: str, filename: str) -> str:
    return f"cat {shlex.quote(posixpath.join(path, filename))} 2>/dev/null"


def build_local_weights_command(*, path: str, suffixes: tuple[str, ...]) -> str:
    patterns = " ".join(f"{shlex.quote(path.rstrip('/'))}/*{suffix}" for suffix in suffixes)
    return f"du -cbL {patterns} 2>/dev/null | tail -n 1 | cut -f1"


def build_disk_command(*, repo: str, cluster: ClusterSettings) -> str:
    """`avail=<bytes free where the HF cache is>` and `cached=<bytes of the repo's blobs already there>`."""
    home = remote_path(hf_home(cluster))
    cache = remote_path(repo_cache_dir(repo=repo, cluster=cluster))
    return (
        f"mkdir -p {home}/hub && echo avail=$(df -B1 --output=avail {home} | tail -n 1) && "
        f"echo cached=$(du -sb {cache}/blobs 2>/dev/null | cut -f1)"
    )


def build_start_command(
    *, download_id: str, repo: str, revision: str, downloader: str, cluster: ClusterSettings
) -> str:
    """Start the download detached; reads one line (the HF token, maybe empty) from stdin first."""
    directory = remote_path(state_dir(download_id=download_id, cluster=cluster))
    # The path the node reported (absolute, one of the known programs), else the name on its PATH.
    known = downloader.startswith("/") and posixpath.basename(downloader) in DOWNLOADERS and "\n" not in downloader
    program = downloader if known else "hf"
    inner = '"$4" download "$1" --revision "$2" >"$3/log" 2>&1; echo $? >"$3/exit"'
    cache = remote_path(repo_cache_dir(repo=repo, cluster=cluster))
    return (
        # A partial file named <etag>.<8 hex>.incomplete belongs to one process (huggingface_hub 1.x and later) and is
        # never taken up again once it died: it goes. <etag>.incomplete (older clients resume it) stays.
        f"find {cache}/blobs -maxdepth 1 -type f -name '*.{'[0-9a-f]' * 8}.incomplete' -delete "
        "2>/dev/null; "
        f'd={directory}; (umask 077 && mkdir -p "$d") && rm -f "$d/exit" && '
        'IFS= read -r HF_TOKEN; if [ -n "$HF_TOKEN" ]; then export HF_TOKEN; else unset HF_TOKEN; fi; '
        f"export HF_HOME={remote_path(hf_home(cluster))} HF_HUB_DISABLE_PROGRESS_BARS=1; "
        f'setsid sh -c {shlex.quote(inner)} sh {shlex.quote(repo)} {shlex.quote(revision)} "$d" {shlex.quote(program)} '
        '</dev/null >/dev/null 2>&1 & echo $! >"$d/pid"; echo started=$!'
    )


def build_poll_command(*, download_id: str, repo: str, cluster: ClusterSettings) -> str:
    """`exit=`, `alive=` and `bytes=` (the repo's blobs, its own partial files included) of a node's download."""
    directory = remote_path(state_dir(download_id=download_id, cluster=cluster))
    cache = remote_path(repo_cache_dir(repo=repo, cluster=cluster))
    return (
        f'd={directory}; p=$(cat "$d/pid" 2>/dev/null); [ -n "$p" ] || p=0; '
        # A zombie is not alive (a node's init may be slow to reap the detached shell). Alive is read before the exit
        # file: the shell writes that file before it ends, so a shell found ended has left its status.
        's=$(ps -o stat= -p "$p" 2>/dev/null); case "$s" in ""|Z*) echo alive=0 ;; *) echo alive=1 ;; esac; '
        'echo exit=$(cat "$d/exit" 2>/dev/null); '
        # Finished blobs, and the partial files written since this download started: a partial file that an earlier
        # process left behind is not progress (the client may start that file again).
        f"b={cache}/blobs; "
        'if [ -f "$d/pid" ]; then '
        'l=$(find "$b" -type f \\( ! -name "*.incomplete" -o -newer "$d/pid" \\) -printf "%s\\n" 2>/dev/null); '
        'else l=$(find "$b" -type f ! -name "*.incomplete" -printf "%s\\n" 2>/dev/null); fi; '
        "echo bytes=$(echo \"$l\" | awk '{s+=$1} END {print s+0}')"
    )


def build_log_tail_command(*, download_id: str, cluster: ClusterSettings, lines: int = 5) -> str:
    directory = remote_path(state_dir(download_id=download_id, cluster=cluster))
    return f"tail -n {int(lines)} {directory}/log 2>/dev/null"


def build_kill_command(*, download_id: str, cluster: ClusterSettings) -> str:
    """Stop the download's whole process group (the shell and the downloader), then forget its pid."""
    directory = remote_path(state_dir(download_id=download_id, cluster=cluster))
    return (
        f'd={directory}; p=$(cat "$d/pid" 2>/dev/null); '
        'if [ -n "$p" ]; then kill -TERM -- "-$p" 2>/dev/null; sleep 0.3; kill -KILL -- "-$p" 2>/dev/null; fi; '
        'rm -f "$d/pid"; true'
    )


def build_cleanup_command(*, download_id: str, cluster: ClusterSettings) -> str:
    return f"rm -rf -- {remote_path(state_dir(download_id=download_id, cluster=cluster))}"


def token_stdin(token: str) -> str:
    """The first line the start command reads: the token, or an empty line."""
    return (token if "\n" not in token else "") + "\n"


def header_stdin(token: str) -> str:
    """Headers for `curl -H @-`: the Authorization header when there is a token."""
    return f"Authorization: Bearer {token}\n" if token and "\n" not in token else ""


@dataclass(frozen=True)
class PollResult:
    exit_code: int | None
    alive: bool
    bytes_on_disk: int


def parse_keyed(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[a-z_]+", key.strip()):
            values[key.strip()] = value.strip()
    return values


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().lstrip("-").isdigit() else None


def parse_poll(text: str) -> PollResult:
    values = parse_keyed(text)
    return PollResult(
        exit_code=_int(values.get("exit")),
        alive=values.get("alive") == "1",
        bytes_on_disk=_int(values.get("bytes")) or 0,
    )


def parse_disk(text: str) -> tuple[int | None, int]:
    """(bytes available, bytes of the repo already cached)."""
    values = parse_keyed(text)
    return _int(values.get("avail")), _int(values.get("cached")) or 0
