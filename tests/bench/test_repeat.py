"""`python -m bench --repeat N` combines the tables: median of medians, spread, and a verdict only on agreement."""

from __future__ import annotations

from bench.repeat import combine, markdown, primary


def _run(median: str, met: bool | None, load: float = 1.0) -> dict:
    row = {"id": "M4", "metric": "lock reads", "median": median, "p99": "12.5", "target": ">= 1,000", "met": met}
    machine = {"cores": 2, "cpu": "x", "python": "3.11", "load_before": [load], "load_after": [load]}
    return {"table": [row], "machine": machine, "date": "2026-11-30 13:00 UTC", "mode": "quick"}


def test_the_first_figure_of_a_cell_is_read_with_thousands_separators():
    assert primary("1,734 req/s; 9.74") == 1734.0
    assert primary("1.01 / 1.03 / 1.21") == 1.01
    assert primary("-") is None


def test_a_verdict_is_given_only_when_every_repetition_agrees():
    agreed = combine([_run("1,200 req/s", True), _run("1,100 req/s", True), _run("1,050 req/s", True)])[0]
    assert agreed["verdict"] == "met (3/3)"
    assert agreed["median_of_medians"] == "1,100" and agreed["spread"] == "1,050–1,200"
    mixed = combine([_run("1,200 req/s", True), _run("900 req/s", False), _run("1,050 req/s", True)])[0]
    assert mixed["verdict"] == "no verdict: met in 2/3"
    missed = combine([_run("700 req/s", False), _run("800 req/s", False)])[0]
    assert missed["verdict"] == "MISSED (2/2)"


def test_the_markdown_shows_every_runs_cell_and_the_loads():
    runs = [_run("1,200 req/s", True, load=0.5), _run("1,100 req/s", True, load=3.0)]
    text = markdown(combine(runs), runs)
    assert "1,200 req/s · 1,100 req/s" in text and "0.5 → 0.5" in text and "3.0 → 3.0" in text


def test_the_markdown_shows_each_runs_processor_steadiness_when_it_was_taken():
    steady = [_run("1,200 req/s", True), _run("1,100 req/s", True)]
    steady[0]["machine"]["steadiness"] = {"loops": 400, "p10_ms": 10.0, "median_ms": 11.0, "p90_ms": 17.0}
    steady[1]["machine"]["steadiness"] = {"loops": 420, "p10_ms": 10.0, "median_ms": 10.2, "p90_ms": 10.5}
    text = markdown(combine(steady), steady)
    assert "a fixed loop took 10.0–17.0 ms (p10–p90 of 400, ×1.70)" in text
    assert "10.0–10.5 ms (p10–p90 of 420, ×1.05)" in text
    without = [_run("1,200 req/s", True)]
    assert "steadiness" not in markdown(combine(without), without)
