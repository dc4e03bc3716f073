"""A loading model's progress, read from vLLM's start-up log: which phase it is in, how far, and how long is left.

Pure: no database, no clock of its own. The runner feeds it the head node's container log lines and the time
(`swaps/progress_feed.py`); what it returns is the `progress` object a swap carries.

vLLM starts in this order (0.8 to 0.2x; older and newer spellings are both read):

- starting     config, engine and distributed set-up, the start-up memory check (no progress lines)
- weights      `Loading safetensors checkpoint shards:  40% Completed | 2/5 [00:04<00:06,  2.10s/it]` (tqdm
               with a bar format ending in a newline, so each update is a line of its own, after a carriage
               return), ended by `Loading weights took 19.62 seconds` / `Model loading took 3.88 GiB and ...`
- compile      `... for vLLM's torch.compile`, `Dynamo bytecode transform time: 3.29 s`, `Compiling a graph for
               dynamic shape takes 10.00 s` (or `Directly load the compiled graph(s) ...` from the cache), ended
               by `torch.compile takes 13.29 s in total` (newer: `torch.compile took ...`)
- kv_cache     `Available KV cache memory: 102.56 GiB`, `GPU KV cache size: 840,160 tokens`, ended by
               `Maximum concurrency for 32,768 tokens per request: 25.64x`
- cuda_graphs  `Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|...| 67/67 [...]` then
               `(decode, FULL)` (older: `Capturing CUDA graph shapes: ...`): tqdm's own carriage-return updates,
               which docker's log keeps as one line until the bar's final newline; ended by `Graph capturing
               finished in 18 secs`
- api_server   `init engine (profile, create kv cache, warmup model) took 81.30 seconds`, `Starting vLLM API
               server 0 on http://...` (newer: `Starting vLLM server on`), ended by uvicorn's
               `Application startup complete.`

A line that ends a phase starts the next one at once (vLLM goes straight on), so a phase's duration is the time
vLLM spent in it even when the next phase prints nothing for a while (CUDA-graph capture prints its bars only when
done). With `enforce_eager=True` in the engine's config line there is neither compile nor capture.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

PHASES = ("starting", "weights", "compile", "kv_cache", "cuda_graphs", "api_server")
LABELS = {
    "starting": "starting the engine",
    "weights": "loading weights",
    "compile": "compiling (torch.compile)",
    "kv_cache": "setting up the KV cache",
    "cuda_graphs": "capturing CUDA graphs",
    "api_server": "starting the API server",
}
# What a slow phase is called in "compile is taking 3× longer than usual".
NOUNS = {
    "starting": "engine start-up",
    "weights": "weight loading",
    "compile": "compile",
    "kv_cache": "KV-cache set-up",
    "cuda_graphs": "CUDA-graph capture",
    "api_server": "API server start",
}
# Shares of the whole load before a model has a history (a typical cold start on a Spark).
DEFAULT_SHARES = {
    "starting": 0.10,
    "weights": 0.45,
    "compile": 0.15,
    "kv_cache": 0.05,
    "cuda_graphs": 0.15,
    "api_server": 0.10,
}
HISTORY_LOADS = 5  # the estimate is the median of this many previous successful loads of the model
SLOW_FACTOR = 2.0  # a phase is flagged when it runs this many times its median ...
SLOW_MIN_SECONDS = 30.0  # ... and longer than this
FIRST_LOAD = "first load of this model"
MESSAGE_PREFIX = "progress: "

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# tqdm's "NN% Completed | n/N" bar format (vLLM's weight loaders: safetensors, pt, fastsafetensors, multi-thread).
SHARDS_BAR = re.compile(r"(?:Loading|loading)[^:|]*:\s*(\d{1,3})% Completed \|\s*(\d+)/(\d+)")
# tqdm's default bar: "desc:  40%|████      | 2/5 [...]".
GRAPHS_BAR = re.compile(r"Capturing CUDA graph(?:s| shapes)(?:\s*\(([^)]*)\))?:\s*(\d{1,3})%\|[^|]*\|\s*(\d+)/(\d+)")
EAGER = re.compile(r"enforce_eager=True")

# (pattern, phase, done): the first match wins; `done` lines end their phase.
RULES: tuple[tuple[re.Pattern[str], str, bool], ...] = (
    (re.compile(r"Loading weights took|Loading model weights took|Model loading took"), "weights", True),
    (re.compile(r"Starting to load model|Loading model from scratch"), "weights", False),
    (
        re.compile(
            r"for vLLM's torch\.compile|Dynamo bytecode transform time|Compiling a graph for|"
            r"Directly load the compiled graph|Cache the graph (?:for|of)|Start compiling"
        ),
        "compile",
        False,
    ),
    (re.compile(r"torch\.compile (?:takes|took|and initial profiling run took) [\d.]+ ?s"), "compile", True),
    (
        re.compile(r"Memory profiling takes|Available KV cache memory|GPU KV cache size|# GPU blocks:"),
        "kv_cache",
        False,
    ),
    (re.compile(r"Maximum concurrency for [\d,]+ tokens per request"), "kv_cache", True),
    (re.compile(r"Graph capturing finished"), "cuda_graphs", True),
    (
        re.compile(
            r"init engine \(profile, create kv cache, warmup model\) took|Starting vLLM (?:API )?server|"
            r"Supported_?tasks|Started server process|Waiting for application startup"
        ),
        "api_server",
        False,
    ),
    (re.compile(r"Application startup complete"), "api_server", True),
)


@dataclass(frozen=True)
class Signal:
    """What one log line says: the phase it belongs to, how far a bar in it is, whether it ends the phase."""

    phase: str
    fraction: float | None = None
    done: bool = False
    bar: str | None = None  # which of several bars of the phase (CUDA-graph capture has one per mode)


def terminal_text(line: str) -> str:
    """The line as a terminal shows it: the last carriage-return segment with text, without colour codes."""
    segments = [segment for segment in ANSI.sub("", line).split("\r") if segment.strip()]
    return segments[-1].rstrip() if segments else ""


def progress_line_parse(line: str) -> Signal | None:
    """The progress signal in one container log line (None for the many lines that carry none)."""
    text = terminal_text(line)
    if not text:
        return None
    match = SHARDS_BAR.search(text)
    if match:
        done, total = int(match.group(2)), int(match.group(3))
        return Signal("weights", _ratio(done, total))
    match = GRAPHS_BAR.search(text)
    if match:
        done, total = int(match.group(3)), int(match.group(4))
        return Signal("cuda_graphs", _ratio(done, total), bar=(match.group(1) or "").strip())
    for pattern, phase, done in RULES:
        if pattern.search(text):
            return Signal(phase, 1.0 if done else None, done=done)
    return None


def _ratio(done: int, total: int) -> float:
    return min(1.0, max(0.0, done / total)) if total > 0 else 0.0


def phase_medians(history: list[dict[str, float]]) -> dict[str, float]:
    """Per phase, the median of its durations over the loads given (a phase a load skipped counts 0 s)."""
    if not history:
        return {}
    return {phase: float(statistics.median(float(load.get(phase, 0.0)) for load in history)) for phase in PHASES}


def eta_text(eta_seconds: float | None) -> str:
    """ "about 3 min left", "less than a minute left", or the first-load note when there is no estimate."""
    if eta_seconds is None:
        return FIRST_LOAD
    if eta_seconds < 1:
        return "almost done"
    if eta_seconds < 60:
        return "less than a minute left"
    return f"about {max(1, round(eta_seconds / 60))} min left"


class LoadProgress:
    """One load's progress: fed log lines and times (seconds on one monotonic clock), it answers the progress
    object; the phases' durations once it is finished."""

    def __init__(self, *, history: list[dict[str, float]], started: float) -> None:
        self.history = history[:HISTORY_LOADS]
        self.medians = phase_medians(self.history)
        self.index = 0
        self.started_at = {PHASES[0]: started}
        self.durations: dict[str, float] = {}
        self.phase_fraction: float | None = None
        self.bars: dict[str, float] = {}
        self.eager = False
        self.finished = False
        self.fraction = 0.0

    @property
    def phase(self) -> str:
        return PHASES[self.index]

    def feed(self, line: str, now: float) -> bool:
        """Take one log line; True when it moved the progress."""
        if self.finished:
            return False
        if not self.eager and EAGER.search(line):
            self.eager = True
        signal = progress_line_parse(line)
        if signal is None:
            return False
        target = PHASES.index(signal.phase)
        if target < self.index:
            return False  # a late line of a phase already over (another rank, a draft model's weights)
        before = (self.index, self.phase_fraction)
        if target > self.index:
            self._enter(target, now)
        if signal.bar is not None:
            self.bars[signal.bar] = max(self.bars.get(signal.bar, 0.0), signal.fraction or 0.0)
            self._raise(self._bars_fraction())
        elif signal.fraction is not None:
            self._raise(signal.fraction)
        if signal.done:
            following = self._next_after(self.index)
            if following is None:
                self.finish(now)
            else:
                self._enter(following, now)
        return (self.index, self.phase_fraction) != before or self.finished

    def finish(self, now: float) -> None:
        """The model is served: the current phase ends now and the whole load is done."""
        if self.finished:
            return
        self._close(now)
        self.index = len(PHASES) - 1
        self.phase_fraction = 1.0
        self.fraction = 1.0
        self.finished = True

    def snapshot(self, now: float) -> dict[str, Any]:
        """The progress object (CONTRACT.md: phase, fraction 0..1 of the whole load, eta_seconds or null)."""
        phase = self.phase
        elapsed = max(0.0, now - self.started_at.get(phase, now))
        if not self.finished:
            self.fraction = max(self.fraction, min(0.99, self._overall(elapsed)))
        eta = self._eta(elapsed)
        slow = self._slow(elapsed)
        return {
            "phase": phase,
            "label": LABELS[phase],
            "fraction": round(self.fraction, 3),
            "phase_fraction": None if self.phase_fraction is None else round(self.phase_fraction, 3),
            "eta_seconds": eta,
            "note": self._note(),
            "loads": len(self.history),
            "slow": slow,
        }

    def phase_durations(self) -> dict[str, float]:
        """Seconds spent in each phase that ran (rounded to ms)."""
        return {phase: round(seconds, 3) for phase, seconds in self.durations.items()}

    # --- inside ------------------------------------------------------------------------------------------------
    def _enter(self, target: int, now: float) -> None:
        self._close(now)
        self.index = target
        self.started_at[PHASES[target]] = now
        self.phase_fraction = None
        self.bars = {}

    def _close(self, now: float) -> None:
        phase = self.phase
        self.durations[phase] = self.durations.get(phase, 0.0) + max(0.0, now - self.started_at.get(phase, now))

    def _raise(self, fraction: float) -> None:
        self.phase_fraction = max(self.phase_fraction or 0.0, min(1.0, fraction))

    def _next_after(self, index: int) -> int | None:
        for candidate in range(index + 1, len(PHASES)):
            if self.eager and PHASES[candidate] in ("compile", "cuda_graphs"):
                continue
            return candidate
        return None

    def _bars_fraction(self) -> float:
        # vLLM 0.11's default mode captures a "mixed prefill-decode" bar, then a "decode" one: count both halves.
        expected = len(self.bars)
        first = next(iter(self.bars), "")
        if first.startswith("mixed") and expected < 2:
            expected = 2
        return sum(self.bars.values()) / max(1, expected)

    def _shares(self) -> dict[str, float]:
        total = sum(self.medians.values())
        if total > 0:
            return {phase: self.medians[phase] / total for phase in PHASES}
        return DEFAULT_SHARES

    def _overall(self, elapsed: float) -> float:
        shares = self._shares()
        done = sum(shares[phase] for phase in PHASES[: self.index])
        within = self.phase_fraction
        if within is None:
            median = self.medians.get(self.phase, 0.0)
            # No bar: with a history, time in the phase against its usual length (never quite reaching its end).
            within = min(0.9, elapsed / median) if median > 0 else 0.0
        return done + shares[self.phase] * within

    def _eta(self, elapsed: float) -> float | None:
        if self.finished:
            return 0.0
        if not self.history:
            return None
        median = self.medians.get(self.phase, 0.0)
        if self.phase_fraction is not None:
            left = median * (1.0 - self.phase_fraction)
        else:
            left = max(0.0, median - elapsed)
        later = sum(self.medians.get(phase, 0.0) for phase in PHASES[self.index + 1 :])
        return round(left + later, 1)

    def _slow(self, elapsed: float) -> dict[str, Any] | None:
        median = self.medians.get(self.phase, 0.0)
        if self.finished or median <= 0 or elapsed <= SLOW_FACTOR * median or elapsed <= SLOW_MIN_SECONDS:
            return None
        factor = elapsed / median
        return {
            "phase": self.phase,
            "factor": round(factor, 1),
            "message": f"{NOUNS[self.phase]} is taking {factor:.0f}× longer than usual",
        }

    def _note(self) -> str:
        if not self.history:
            return FIRST_LOAD
        loads = len(self.history)
        return f"estimated from the last {loads} load{'s' if loads != 1 else ''} of this model"


def progress_message(progress: dict[str, Any]) -> str:
    """The progress as one line of the swap's event log."""
    parts = [progress.get("label") or progress["phase"]]
    if progress.get("phase_fraction") is not None and progress["phase"] != "api_server":
        parts[0] += f" {round(100 * progress['phase_fraction'])}%"
    parts.append(f"{round(100 * progress['fraction'])}% overall")
    parts.append(eta_text(progress.get("eta_seconds")))
    if progress.get("slow"):
        parts.append(progress["slow"]["message"])
    return MESSAGE_PREFIX + " · ".join(parts)


def progress_bar_text(progress: dict[str, Any], *, width: int = 30) -> str:
    """A one-line terminal progress bar: `[#########.........]  42% compiling · about 3 min left`."""
    fraction = min(1.0, max(0.0, float(progress.get("fraction") or 0.0)))
    filled = round(fraction * width)
    text = f"[{'#' * filled}{'.' * (width - filled)}] {round(100 * fraction):3d}% {progress.get('label') or ''}"
    text += f" · {eta_text(progress.get('eta_seconds'))}"
    if progress.get("slow"):
        text += f" · {progress['slow']['message']}"
    return text
