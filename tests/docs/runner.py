"""Run the code blocks of a Markdown document the way a reader would, in order, in one shell session.

Fenced blocks tagged `sh`, `bash`, `shell`, `console` or `python` run; other tags (`json`, `yaml`, ...) are shown
output or configuration and do not. A block that cannot run here is marked just before its fence with
`<!-- not run: why -->`. A fence without a tag is an error: every block says what it is.

- `sh`/`bash`/`shell`: the block is sourced into the document's bash session (`set -euo pipefail`), so variables
  it sets are there for the next blocks, an unset variable is an error, and any failing command fails the block.
- `console`: `$ ` starts a command, continued on lines that start with `> ` (or after a line ending in `\\`); the
  lines after a command are its expected output, where `...` matches any text (also across lines). A command
  without lines after it is only required to succeed.
- `python`: run as a script by this interpreter, inside the session (it sees the variables the document exported).

`substitutions` rewrite text in the blocks before they run (the address the documents give for Spark Control
becomes the test instance's).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

RUN_TAGS = {"sh": "sh", "bash": "sh", "shell": "sh", "console": "console", "python": "python", "py": "python"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<tag>[^\s`]*)")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<why>.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    tag: str
    text: str
    not_run: str | None = None  # the reason, when marked

    @property
    def kind(self) -> str | None:
        return RUN_TAGS.get(self.tag.lower())

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


@dataclass
class Command:
    text: str
    expected: list[str] = field(default_factory=list)


class DocError(AssertionError):
    """A document that cannot be run as written (its fences, markers or console blocks)."""


def blocks(path: Path) -> list[Block]:
    """Every fenced block of the document, with its not-run reason if it has one."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, tag = match["indent"], match["fence"], match["tag"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence[0] * len(fence)) and not lines[i].strip().strip(fence[0])
        ):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        if i >= len(lines):
            raise DocError(f"{path.name}:{start + 1}: the fence is never closed")
        i += 1
        if not tag:
            raise DocError(f"{path.name}:{start + 1}: a fence without a language tag (sh, console, python, json, ...)")
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(previous)
        if marker and not marker["why"]:
            raise DocError(f"{path.name}:{start + 1}: `not run:` without a reason")
        found.append(Block(path, start + 1, tag, "\n".join(body) + "\n", marker["why"] if marker else None))
    return found


def console_commands(block: Block) -> list[Command]:
    """The commands of a console block and the output shown after each."""
    commands: list[Command] = []
    continued = False
    for line in block.text.splitlines():
        if continued or (line.startswith("> ") and commands and not commands[-1].expected):
            commands[-1].text += "\n" + line.removeprefix("> ")
        elif line.startswith("$ "):
            commands.append(Command(line[2:]))
        elif not commands:
            raise DocError(f"{block.where}: a console block starts with a `$ ` command, not {line!r}")
        else:
            commands[-1].expected.append(line)
        continued = bool(commands) and line.rstrip().endswith("\\") and not commands[-1].expected
    return commands


def output_matches(expected: str, actual: str) -> bool:
    """`expected` with `...` matching any text (a line of just `...`: any lines, or none); trailing spaces and
    blank edges ignored."""

    def tidy(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip()

    # A line of its own `...` stands for any number of lines, none included.
    shown = re.sub(r"(^|\n)\.\.\.(\n|$)", lambda m: "..." if not (m[1] and m[2]) else "\n...", tidy(expected))
    pattern = ".*?".join(re.escape(piece) for piece in shown.split("..."))
    return re.fullmatch(pattern, tidy(actual), flags=re.DOTALL) is not None


@dataclass
class Unit:
    """One thing the session runs: a shell block, one console command, or a Python block."""

    block: Block
    name: str
    kind: str
    text: str
    expected: str | None = None


@dataclass
class Result:
    ran: list[Unit]
    failures: list[str]
    seconds: dict[str, float] = field(default_factory=dict)  # per unit, for finding what is slow


def run_document(
    path: Path,
    *,
    workdir: Path,
    cwd: Path,
    env: dict[str, str],
    substitutions: dict[str, str],
    timeout: float = 600,
) -> Result:
    """Run every unmarked block of `path` in order in one bash session; a failure stops the document."""
    units: list[Unit] = []
    for block in blocks(path):
        if block.not_run is not None or block.kind is None:
            continue
        text = block.text
        for old, new in substitutions.items():
            text = text.replace(old, new)
        number = len(units)
        if block.kind == "console":
            fake = Block(block.path, block.line, block.tag, text)
            for k, command in enumerate(console_commands(fake)):
                expected = "\n".join(command.expected) if command.expected else None
                units.append(Unit(block, f"u{number}_{k}", "sh", command.text + "\n", expected))
        else:
            units.append(Unit(block, f"u{number}", block.kind, text))
    workdir.mkdir(parents=True, exist_ok=True)
    script = [
        "set -euo pipefail",
        f"cd {shlex.quote(str(cwd))}",
        f"echo start $EPOCHREALTIME > {shlex.quote(str(workdir / 'done'))}",
    ]
    for unit in units:
        source = workdir / f"{unit.name}.{'py' if unit.kind == 'python' else 'sh'}"
        source.write_text(unit.text)
        out, err = workdir / f"{unit.name}.out", workdir / f"{unit.name}.err"
        if unit.kind == "python":
            run = f"{shlex.quote(sys.executable)} {shlex.quote(str(source))}"
        else:
            run = f"source {shlex.quote(str(source))}"
        script.append(f"{run} > {shlex.quote(str(out))} 2> {shlex.quote(str(err))} < /dev/null")
        script.append(f"echo {unit.name} $EPOCHREALTIME >> {shlex.quote(str(workdir / 'done'))}")
    (workdir / "session.sh").write_text("\n".join(script) + "\n")
    done_file = workdir / "done"
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", str(workdir / "session.sh")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    stamps = [line.split() for line in done_file.read_text().splitlines() if line.strip()] if done_file.exists() else []
    done = {name for name, _ in stamps}
    ran = [unit for unit in units if unit.name in done]
    durations = {b[0]: float(b[1]) - float(a[1]) for a, b in zip(stamps, stamps[1:], strict=False)}
    failures: list[str] = []
    for unit in units:
        out = (workdir / f"{unit.name}.out").read_text(errors="replace") if unit.name in done else ""
        if unit.name not in done:
            out_path, err_path = workdir / f"{unit.name}.out", workdir / f"{unit.name}.err"
            stdout = out_path.read_text(errors="replace")[-1500:] if out_path.exists() else ""
            stderr = err_path.read_text(errors="replace")[-1500:] if err_path.exists() else proc.stderr[-1500:]
            failures.append(
                f"{unit.block.where}: {unit.text.strip()[:300]!r} failed (session exit {proc.returncode})\n"
                f"--- stdout:\n{stdout}\n--- stderr:\n{stderr}"
            )
            break
        if unit.expected is not None and not output_matches(unit.expected, out):
            failures.append(
                f"{unit.block.where}: {unit.text.strip()[:300]!r} printed something else than the document shows\n"
                f"--- document:\n{unit.expected}\n--- printed:\n{out[-2000:]}"
            )
    return Result(ran, failures, {unit.block.where + " " + unit.name: durations.get(unit.name, 0.0) for unit in ran})
