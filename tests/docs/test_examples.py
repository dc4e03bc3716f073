"""The documents a user follows run as written: every shell, console and Python block of README.md and docs/*.md.

One demo instance (`manage.py serve --demo`, a simulated two-node cluster) serves every document, on a free port
with a data directory of its own. Each document runs in its own bash session from the repository's root, with the
environment a reader has there: `SPARKCONTROL_DATA_DIR` points `manage.py` at the instance's data (a reader's
`./data`), and the address the documents give, http://127.0.0.1:9999, is rewritten to the instance's. Tokens and
lock tokens come from what the documented commands print, as a reader gets them. Blocks that cannot run here carry
`<!-- not run: why -->`; every other block must run and succeed, and a console block's shown output must match.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from testkit.service import Service
from tests.docs.runner import Block, DocError, blocks, console_commands, output_matches, run_document

ROOT = Path(__file__).resolve().parents[2]
ALL_DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A document without a shell, console or Python block has nothing to run (its other blocks are checked below).
DOCUMENTS = [path for path in ALL_DOCUMENTS if any(block.kind for block in blocks(path))]
DOC_ADDRESS = "http://127.0.0.1:9999"

pytestmark = pytest.mark.integration


class Demo:
    """`manage.py serve --demo` (a `testkit` service), with short simulated load times."""

    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        self.service = Service(tmp, data_dir=self.data, env={"SPARKCONTROL_WORKER_INTERVAL": "0.2"})
        # What a reader's shell has: no settings module or import path of the tests' choosing.
        self.env = {k: v for k, v in self.service.env.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
        if "PYTHONPATH" in os.environ:
            self.env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        try:
            self.server = self.service.serve(args=["--demo"], wait=False)
            deadline = time.monotonic() + 120
            while "Dashboard: " not in self.server.output() and self.server.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            self.service.wait_ready(self.server, timeout=max(deadline - time.monotonic(), 1))
            assert "Dashboard: " in self.server.output(), f"serve --demo did not start: {self.tail()}"
        except BaseException:
            self.service.stop()
            raise
        self.port = self.server.port
        self.url = self.server.url
        # The simulated vLLM loads in 0.2 s (sparksim reads it from its root at every start) and frees its memory
        # at once after a stop.
        sim_root = self.data / "sparksim"
        (sim_root / "load_seconds").write_text("0.2\n")
        for node in json.loads((sim_root / "cluster.json").read_text())["nodes"]:
            with open(Path(node["dir"]) / "sim.env", "a") as fh:
                fh.write("SPARKSIM_MEM_RELEASE_SECONDS=0\n")

    def tail(self) -> str:
        return self.server.output(4000)

    def stop(self) -> None:
        self.service.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):  # type: ignore[no-untyped-def]
    instance = Demo(tmp_path_factory.mktemp("docs-demo"))
    yield instance
    instance.stop()


@pytest.mark.parametrize("document", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_the_document_runs_as_written(document, demo, tmp_path):
    env = {**demo.env, "HOME": os.environ.get("HOME", str(tmp_path))}
    result = run_document(
        document,
        workdir=tmp_path / "session",
        cwd=ROOT,
        env=env,
        substitutions={DOC_ADDRESS: demo.url},
    )
    slowest = sorted(result.seconds.items(), key=lambda item: -item[1])[:8]
    print(f"{document.name}: {sum(result.seconds.values()):.1f} s; slowest:", slowest)
    assert not result.failures, "\n\n".join(result.failures) + f"\n--- serve log:\n{demo.tail()[-1500:]}"
    runnable = [b for b in blocks(document) if b.kind and b.not_run is None]
    assert runnable, f"{document.name}: every block is marked not run"
    assert {unit.block.line for unit in result.ran} == {b.line for b in runnable}


def test_every_document_has_runnable_blocks_or_says_why_not():
    for document in ALL_DOCUMENTS:
        for block in blocks(document):
            assert block.kind or block.tag in {"json", "yaml", "text", "toml", "ini", "nginx", "caddy"}, (
                f"{block.where}: unknown block language {block.tag!r}"
            )


# --- the runner itself: it must catch what it is there to catch ------------------------------------------------


def _doc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(text)
    return path


def _run(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    return run_document(
        _doc(tmp_path, text),
        workdir=tmp_path / "w",
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        substitutions={"ADDR": "substituted"},
    )


def test_runner_blocks_share_one_session_and_a_failure_names_the_block(tmp_path):
    ok = _run(tmp_path, "```sh\nexport A=1; B=2\n```\n\n```console\n$ echo $A$B ADDR\n12 substituted\n```\n")
    assert ok.failures == [] and len(ok.ran) == 2
    unset = _run(tmp_path, "```sh\nX=1\n```\n\n```sh\ncurl -s $API/swap/$SWAP_ID\n```\n")
    assert len(unset.ran) == 1 and "doc.md:5" in unset.failures[0] and "unbound variable" in unset.failures[0]
    failing = _run(tmp_path, "```bash\nfalse | cat\necho never\n```\n")
    assert failing.ran == [] and failing.failures


def test_runner_compares_shown_output_with_ellipsis(tmp_path):
    shown = '```console\n$ echo \'{"token": "sclk_abc", "epoch": 3}\'\n{"token": "sclk_...", "epoch": ...}\n```\n'
    assert _run(tmp_path, shown).failures == []
    wrong = '```console\n$ echo \'{"token": "sclk_abc"}\'\n{"lock": "sclk_..."}\n```\n'
    assert "printed something else" in _run(tmp_path, wrong).failures[0]


def test_runner_runs_python_blocks_with_the_session_environment(tmp_path):
    text = "```sh\nexport SC=here\n```\n\n```python\nimport os\nassert os.environ['SC'] == 'here'\n```\n"
    assert _run(tmp_path, text).failures == []
    assert _run(tmp_path, "```python\nraise SystemExit(3)\n```\n").failures


def test_runner_skips_only_marked_blocks_and_wants_a_reason_and_a_tag(tmp_path):
    marked = _run(tmp_path, "<!-- not run: needs root -->\n```sh\nexit 1\n```\n\n```json\n{}\n```\n")
    assert marked.failures == [] and marked.ran == []
    with pytest.raises(DocError, match="without a reason"):
        blocks(_doc(tmp_path, "<!-- not run: -->\n```sh\ntrue\n```\n"))
    with pytest.raises(DocError, match="language tag"):
        blocks(_doc(tmp_path, "```\ntrue\n```\n"))
    with pytest.raises(DocError, match="never closed"):
        blocks(_doc(tmp_path, "```sh\ntrue\n"))


def test_console_commands_continue_after_a_backslash():
    block = Block(Path("x.md"), 1, "console", "$ a \\\n>   b\nout\n$ c\n")
    commands = console_commands(block)
    assert [c.text for c in commands] == ["a \\\n  b", "c"] and commands[0].expected == ["out"]
    assert output_matches("a...c", "a\nb\nc") and not output_matches("a...c", "a\nb\nd")
    assert output_matches("...\nb\n...", "b") and output_matches("a\n...\nc", "a\nb\nb\nc")
    assert output_matches("a\n...", "a\nb") and not output_matches("a\n...", "x\na")
