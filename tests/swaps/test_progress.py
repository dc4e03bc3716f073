"""The start-up log parser and the load progress it drives, on lines in vLLM's real formats (tqdm's carriage
returns, process prefixes, docker's one-line-per-newline log), with a clock of the test's own."""

from __future__ import annotations

import pytest

from swaps.progress import (
    FIRST_LOAD,
    PHASES,
    LoadProgress,
    Signal,
    eta_text,
    progress_bar_text,
    progress_line_parse,
    progress_message,
    terminal_text,
)

CORE = "(EngineCore_DP0 pid=164) "
API = "(APIServer pid=1) "


def _capture_line(desc: str, total: int, prefix: str = "") -> str:
    """What docker's log holds for one tqdm capture bar: every update after a carriage return, one newline at the
    end (the bar's own updates carry no newline)."""
    updates = [f"{desc}:   0%|          | 0/{total} [00:00<?, ?it/s]"]
    for done in range(1, total + 1):
        percent = int(100 * done / total)
        filled = "█" * (percent // 10)
        updates.append(f"{desc}: {percent:3d}%|{filled:<10}| {done}/{total} [00:0{done % 10}<00:00,  5.43it/s]")
    return prefix + "\r".join(updates)


# A vLLM 0.11 start (as in a real Spark container log), in order, with the phase each line should enter.
START_0_11 = [
    ("INFO 01-23 15:48:34 [__init__.py:216] Automatically detected platform cuda.", None),
    (CORE + "INFO 01-23 15:48:36 [core.py:644] Waiting for init message from front-end.", None),
    (
        CORE + "INFO 01-23 15:48:36 [core.py:77] Initializing a V1 LLM engine (v0.11.0) with config: "
        "model='/models/mistral-7b', enforce_eager=False, compilation_config={\"level\":3}",
        None,
    ),
    (CORE + "INFO 01-23 15:48:47 [gpu_model_runner.py:2602] Starting to load model /models/mistral-7b...", "weights"),
    ("\rLoading safetensors checkpoint shards:   0% Completed | 0/5 [00:00<?, ?it/s]", "weights"),
    ("\rLoading safetensors checkpoint shards:  40% Completed | 2/5 [00:07<00:11,  3.90s/it]", "weights"),
    ("  \rLoading safetensors checkpoint shards: 100% Completed | 5/5 [00:19<00:00,  3.89s/it]", "weights"),
    (CORE, None),
    (CORE + "INFO 01-23 15:49:07 [default_loader.py:267] Loading weights took 19.62 seconds", "compile"),
    (CORE + "INFO 01-23 15:49:08 [gpu_model_runner.py:2653] Model loading took 3.8844 GiB and 20.44 seconds", None),
    (
        CORE + "INFO 01-23 15:49:11 [backends.py:548] Using cache directory: /root/.cache/vllm/torch_compile_cache/"
        "d865434b5b/rank_0_0/backbone for vLLM's torch.compile",
        "compile",
    ),
    (CORE + "INFO 01-23 15:49:11 [backends.py:559] Dynamo bytecode transform time: 3.29 s", "compile"),
    (CORE + "INFO 01-23 15:49:22 [backends.py:218] Compiling a graph for dynamic shape takes 10.00 s", "compile"),
    (CORE + "INFO 01-23 15:49:41 [monitor.py:34] torch.compile takes 13.29 s in total", "kv_cache"),
    (CORE + "INFO 01-23 15:50:05 [gpu_worker.py:298] Available KV cache memory: 102.56 GiB", "kv_cache"),
    (CORE + "INFO 01-23 15:50:06 [kv_cache_utils.py:1087] GPU KV cache size: 840,160 tokens", "kv_cache"),
    (
        CORE + "INFO 01-23 15:50:06 [kv_cache_utils.py:1091] Maximum concurrency for 32,768 tokens per request: 25.64x",
        "cuda_graphs",
    ),
    (_capture_line("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE)", 67), "cuda_graphs"),
    (_capture_line("Capturing CUDA graphs (decode, FULL)", 35), "cuda_graphs"),
    (CORE + "INFO 01-23 15:50:29 [gpu_model_runner.py:3480] Graph capturing finished in 18 secs, took -0.03 GiB", None),
    (
        CORE + "INFO 01-23 15:50:29 [core.py:210] init engine (profile, create kv cache, warmup model) took 81.30 "
        "seconds",
        "api_server",
    ),
    (API + "INFO 01-23 15:50:32 [api_server.py:1637] Supported_tasks: ['generate']", "api_server"),
    (API + "INFO 01-23 15:50:32 [api_server.py:1915] Starting vLLM API server 0 on http://0.0.0.0:8000", "api_server"),
    (API + "INFO 01-23 15:50:32 [launcher.py:42] Route: /v1/models, Methods: GET", None),
    (API + "INFO:     Started server process [1]", "api_server"),
    (API + "INFO:     Application startup complete.", "api_server"),
]


def test_terminal_text_is_what_a_terminal_shows():
    line = _capture_line("Capturing CUDA graphs (decode, FULL)", 3, prefix="(Worker_TP0 pid=57) ")
    assert terminal_text(line).startswith("Capturing CUDA graphs (decode, FULL): 100%|")
    assert terminal_text("  \rLoading safetensors checkpoint shards:  40% Completed | 2/5 [00:07<00:11]\r") == (
        "Loading safetensors checkpoint shards:  40% Completed | 2/5 [00:07<00:11]"
    )
    assert terminal_text("\x1b[32mINFO\x1b[0m 01-23 Available KV cache memory: 1 GiB") == (
        "INFO 01-23 Available KV cache memory: 1 GiB"
    )
    assert terminal_text("\r \r") == ""


@pytest.mark.parametrize(
    ("line", "signal"),
    [
        ("\rLoading safetensors checkpoint shards:   0% Completed | 0/5 [00:00<?, ?it/s]", Signal("weights", 0.0)),
        ("\rLoading safetensors checkpoint shards:  40% Completed | 2/5 [00:07<00:11]", Signal("weights", 0.4)),
        (
            "(Worker_TP0 pid=57) Loading safetensors checkpoint shards:  50% Completed | 23/46 [00:10<00:10,  2.1it/s]",
            Signal("weights", 0.5),
        ),
        ("Loading pt checkpoint shards:  25% Completed | 1/4 [00:02<00:06,  2.00s/it]", Signal("weights", 0.25)),
        (
            "Capturing CUDA graph shapes:  57%|█████▋    | 20/35 [00:06<00:04,  3.31it/s]",
            Signal("cuda_graphs", 20 / 35, bar=""),
        ),
        (
            "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|██████████| 67/67 [00:12<00:00,  5.43it/s]",
            Signal("cuda_graphs", 1.0, bar="mixed prefill-decode, PIECEWISE"),
        ),
        (
            CORE + "INFO 02-22 06:35:26 [backends.py:267] Directly load the compiled graph(s) for compile range "
            "(1, 2048) from the cache, took 1.908 s",
            Signal("compile"),
        ),
        (CORE + "INFO 06-21 07:20:13 [monitor.py:53] torch.compile took 2.89 s in total", Signal("compile", 1.0, True)),
        (
            CORE + "INFO 03-09 12:57:31 [monitor.py:35] torch.compile and initial profiling run took 3.37 s in total",
            Signal("compile", 1.0, True),
        ),
        ("INFO 03-25 02:55:02 worker.py:267] Memory profiling takes 5.23 seconds", Signal("kv_cache")),
        ("INFO 02-23 21:38:49 model_runner.py:1115] Loading model weights took 14.99 GB", Signal("weights", 1.0, True)),
        (API + "INFO 06-21 07:20:50 [api_server.py:596] Starting vLLM server on http://h:80", Signal("api_server")),
        ("INFO 01-23 15:48:33 [scheduler.py:205] Chunked prefill is enabled with max_num_batched_tokens=2048.", None),
        (API + 'INFO:     127.0.0.1:50000 - "GET /v1/models HTTP/1.1" 200 OK', None),
        ("", None),
        ("\r", None),
    ],
)
def test_line_parse(line, signal):
    parsed = progress_line_parse(line)
    if signal is None or parsed is None:
        assert parsed == signal
        return
    assert (parsed.phase, parsed.done, parsed.bar) == (signal.phase, signal.done, signal.bar)
    assert parsed.fraction == pytest.approx(signal.fraction) if signal.fraction is not None else parsed.fraction is None


def _feed(progress: LoadProgress, lines: list[tuple[str, str | None]], *, step: float = 1.0, start: float = 0.0):
    """Feed the lines one `step` apart; the phase after each line."""
    now = start
    phases = []
    for line, _ in lines:
        now += step
        progress.feed(line, now)
        phases.append(progress.phase)
    return phases, now


def test_a_0_11_start_goes_through_every_phase_in_order():
    progress = LoadProgress(history=[], started=0.0)
    assert progress.snapshot(0.0)["phase"] == "starting"
    seen = ["starting"]
    now = 0.0
    for line, expected in START_0_11:
        now += 1.0
        progress.feed(line, now)
        if expected is not None:
            assert progress.phase == expected, line
        if progress.phase != seen[-1]:
            seen.append(progress.phase)
        snapshot = progress.snapshot(now)
        assert 0.0 <= snapshot["fraction"] <= 1.0
    assert seen == list(PHASES)
    assert progress.finished
    final = progress.snapshot(now)
    assert final["fraction"] == 1.0 and final["eta_seconds"] == 0.0 and final["phase"] == "api_server"
    durations = progress.phase_durations()
    assert set(durations) == set(PHASES)
    assert durations["starting"] == 4.0  # four lines before "Starting to load model", a second apart
    assert durations["weights"] == 5.0  # until "Loading weights took", which starts the compile at once


def test_fractions_only_go_forward_and_bars_fill_their_phase():
    progress = LoadProgress(history=[], started=0.0)
    fractions = []
    now = 0.0
    for line, _ in START_0_11:
        now += 1.0
        progress.feed(line, now)
        fractions.append(progress.snapshot(now)["fraction"])
        if "40% Completed" in line:
            assert progress.phase_fraction == pytest.approx(0.4)
        if "mixed prefill-decode" in line:
            # The default mode captures a second (decode) bar after this one: half of the phase is done.
            assert progress.phase_fraction == pytest.approx(0.5)
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0


def test_a_late_line_of_an_earlier_phase_is_ignored():
    progress = LoadProgress(history=[], started=0.0)
    progress.feed(CORE + "Available KV cache memory: 10 GiB", 5.0)
    assert progress.phase == "kv_cache"
    assert not progress.feed("Loading safetensors checkpoint shards:  50% Completed | 1/2 [00:01<00:01]", 6.0)
    assert progress.phase == "kv_cache"


def test_eager_engines_have_neither_compile_nor_capture():
    progress = LoadProgress(history=[], started=0.0)
    progress.feed(CORE + "Initializing a V1 LLM engine (v0.11.0) with config: enforce_eager=True, seed=0", 1.0)
    progress.feed(CORE + "Model loading took 3.88 GiB and 20.4 seconds", 2.0)
    assert progress.phase == "kv_cache"
    progress.feed(CORE + "Maximum concurrency for 32,768 tokens per request: 25.64x", 3.0)
    assert progress.phase == "api_server"


def test_first_load_has_no_eta_and_says_so():
    progress = LoadProgress(history=[], started=0.0)
    snapshot = progress.snapshot(10.0)
    assert snapshot["eta_seconds"] is None
    assert snapshot["note"] == FIRST_LOAD
    assert snapshot["slow"] is None
    assert eta_text(snapshot["eta_seconds"]) == "first load of this model"


HISTORY = [
    {"starting": 10, "weights": 100, "compile": 60, "kv_cache": 5, "cuda_graphs": 20, "api_server": 5},
    {"starting": 12, "weights": 120, "compile": 50, "kv_cache": 5, "cuda_graphs": 25, "api_server": 5},
    {"starting": 11, "weights": 500, "compile": 55, "kv_cache": 6, "cuda_graphs": 22, "api_server": 6},
]


def test_eta_is_the_median_of_previous_loads_per_phase():
    progress = LoadProgress(history=HISTORY, started=0.0)
    snapshot = progress.snapshot(0.0)
    # Medians: starting 11, weights 120 (the 500 s outlier does not move it), compile 55, kv 5, graphs 22, api 5.
    assert snapshot["eta_seconds"] == pytest.approx(11 + 120 + 55 + 5 + 22 + 5)
    assert snapshot["note"] == "estimated from the last 3 loads of this model"
    progress.feed("Starting to load model x...", 11.0)
    progress.feed("\rLoading safetensors checkpoint shards:  50% Completed | 2/4 [00:30<00:30]", 41.0)
    snapshot = progress.snapshot(41.0)
    assert snapshot["phase"] == "weights"
    assert snapshot["eta_seconds"] == pytest.approx(60 + 55 + 5 + 22 + 5)
    assert eta_text(snapshot["eta_seconds"]) == "about 2 min left"
    # Shares from the history: starting (11) done, weights (120) half done, of 218 s in all.
    assert snapshot["fraction"] == pytest.approx((11 + 60) / 218, abs=0.002)


def test_only_the_last_five_loads_count():
    old = [{"weights": 1000.0}] * 10
    recent = [{"weights": 10.0}] * 5
    progress = LoadProgress(history=recent + old, started=0.0)
    assert progress.snapshot(0.0)["loads"] == 5
    assert progress.snapshot(0.0)["eta_seconds"] == pytest.approx(10.0)


def test_a_phase_far_beyond_its_history_is_flagged():
    progress = LoadProgress(history=HISTORY, started=0.0)
    progress.feed(CORE + "Dynamo bytecode transform time: 3.29 s", 100.0)
    assert progress.phase == "compile"
    assert progress.snapshot(100.0 + 100.0)["slow"] is None  # 100 s of a 55 s median: under 2x
    slow = progress.snapshot(100.0 + 170.0)["slow"]
    assert slow == {"phase": "compile", "factor": 3.1, "message": "compile is taking 3× longer than usual"}
    progress.feed(CORE + "torch.compile takes 170.00 s in total", 270.0)
    assert progress.snapshot(271.0)["slow"] is None


def test_short_phases_are_never_flagged():
    history = [{"kv_cache": 2.0}]
    progress = LoadProgress(history=history, started=0.0)
    progress.feed(CORE + "Available KV cache memory: 10 GiB", 1.0)
    assert progress.snapshot(1.0 + 29.0)["slow"] is None  # 14x its median, but under 30 s


def test_texts():
    assert eta_text(0.4) == "almost done"
    assert eta_text(42) == "less than a minute left"
    assert eta_text(170) == "about 3 min left"
    progress = {
        "phase": "weights",
        "label": "loading weights",
        "fraction": 0.23,
        "phase_fraction": 0.4,
        "eta_seconds": 170.0,
        "slow": None,
    }
    assert progress_message(progress) == "progress: loading weights 40% · 23% overall · about 3 min left"
    assert progress_bar_text(progress, width=10) == "[##........]  23% loading weights · about 3 min left"
    first = {**progress, "eta_seconds": None, "phase_fraction": None}
    assert progress_message(first).endswith("· 23% overall · first load of this model")
