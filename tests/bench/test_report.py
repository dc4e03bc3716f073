"""The bench's table judges each row against round two's targets (shared PERFORMANCE.md), M8 included.

Built from a real run's results (`bench/results.json`, the last `--repeat` run committed), with single figures
moved across each target to see the verdict follow."""

from __future__ import annotations

import copy
import json

import pytest

from bench.common import ROOT
from bench.report import build_table, markdown


@pytest.fixture
def results() -> dict:
    stored = json.loads((ROOT / "bench" / "results.json").read_text())
    run = copy.deepcopy(stored["runs"][-1] if "runs" in stored else stored)
    run["gateway"] = {
        "streams": 64,
        "seconds_per_phase": 8.0,
        "rounds": 2,
        "results": {
            "direct": {"requests": 900, "errors": 0, "ttft_p50_ms": 52.0, "ttft_p99_ms": 80.0},
            "gateway-aiohttp": {
                "requests": 890,
                "errors": 0,
                "ttft_p50_ms": 54.5,
                "ttft_p99_ms": 85.0,
                "added_ttft_p50_ms": 2.5,
                "added_ttft_p99_ms": 5.0,
                "throughput_loss_pct": 0.4,
            },
        },
    }
    return run


def _row(table: list[dict], number: str, start: str) -> dict:
    return next(row for row in table if row["id"] == number and row["metric"].strip().startswith(start))


def test_round_two_targets_are_the_ones_judged(results):
    table = build_table(results)
    assert _row(table, "M1", "readiness")["target"] == "p50 <= 30, p99 <= 10"
    assert _row(table, "M2", "of which")["target"] == "p50 <= 3"
    assert _row(table, "M3", "sweep of 50 healthy")["target"] == "<= 30"
    assert _row(table, "M6", "of which")["target"] == "p50 <= 40"
    assert _row(table, "M7", "memory per dashboard socket")["target"] == "<= 20"
    assert _row(table, "mem", "RSS")["target"] == "idle <= 100, 10,000 swaps <= 1.1 x idle"
    assert _row(table, "M8", "gateway")["target"] == "p50 <= +3 ms, loss <= 1 %, 0 errors"


def test_a_share_over_its_target_is_missed(results):
    swaps = results["service"]["swaps"]
    swaps["m6"]["share"]["median"] = 39.0
    assert _row(build_table(results), "M6", "of which")["met"] is True
    swaps["m6"]["share"]["median"] = 41.0
    assert _row(build_table(results), "M6", "of which")["met"] is False
    floor = results["service"]["ssh"]["nodelay_warm"]["median"]
    swaps["m2_warm"]["median"] = floor + 2.9
    assert _row(build_table(results), "M2", "of which")["met"] is True
    swaps["m2_warm"]["median"] = floor + 3.1
    assert _row(build_table(results), "M2", "of which")["met"] is False


def test_memory_is_judged_idle_and_after_the_run(results):
    service = results["service"]
    service["rss_idle_kib"], service["rss_10k_history_kib"] = 98 * 1024, 107 * 1024
    assert _row(build_table(results), "mem", "RSS")["met"] is True
    service["rss_10k_history_kib"] = 108.5 * 1024  # 1.107 x idle
    assert _row(build_table(results), "mem", "RSS")["met"] is False
    service["rss_idle_kib"], service["rss_10k_history_kib"] = 101 * 1024, 102 * 1024
    assert _row(build_table(results), "mem", "RSS")["met"] is False


def test_the_gateway_row_needs_latency_loss_and_no_errors(results):
    row = _row(build_table(results), "M8", "gateway")
    assert row["met"] is True and row["median"] == "+2.50 ms; 0.40 %"
    ours = results["gateway"]["results"]["gateway-aiohttp"]
    for key, value in (("added_ttft_p50_ms", 3.2), ("throughput_loss_pct", 1.5), ("errors", 1)):
        changed = copy.deepcopy(results)
        changed["gateway"]["results"]["gateway-aiohttp"][key] = value
        assert _row(build_table(changed), "M8", "gateway")["met"] is False, key
    assert ours["added_ttft_p50_ms"] == 2.5  # the copies above left the fixture alone


def test_a_run_without_the_gateway_still_makes_a_table(results):
    del results["gateway"]
    table = build_table(results)
    assert not [row for row in table if row["id"] == "M8"]
    results["table"], results["runtime_s"] = table, 1.0
    assert "M6" in markdown(results)
