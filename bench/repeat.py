"""`python -m bench --repeat N`: the whole table N times, then per figure the median of the N medians, their spread,
and a verdict only when every repetition agrees. On a shared machine one run can be lucky or unlucky; a target
counts as met here only when it was met N times out of N.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

from bench.common import steadiness_text

NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def primary(text: str) -> float | None:
    """The first figure of a cell ("756 req/s; 1,629" -> 756.0; "1.01 / 1.03 / 1.21" -> 1.01); None for "-"."""
    match = NUMBER.search(text or "")
    if match is None:
        return None
    try:
        return float(match.group().replace(",", ""))
    except ValueError:
        return None


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def combine(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per figure of the first run's table, with every repetition's medians, p99s and verdicts."""
    rows = []
    for index, first in enumerate(runs[0]["table"]):
        same = [run["table"][index] for run in runs if len(run["table"]) > index]
        same = [row for row in same if row["id"] == first["id"] and row["metric"] == first["metric"]]
        medians = [value for value in (primary(row["median"]) for row in same) if value is not None]
        p99s = [value for value in (primary(row["p99"]) for row in same) if value is not None]
        verdicts = [row["met"] for row in same]
        if all(v is None for v in verdicts):
            verdict = "-"
        elif all(v is True for v in verdicts):
            verdict = f"met ({len(verdicts)}/{len(verdicts)})"
        elif all(v is False for v in verdicts):
            verdict = f"MISSED ({len(verdicts)}/{len(verdicts)})"
        else:
            verdict = f"no verdict: met in {sum(1 for v in verdicts if v)}/{len(verdicts)}"
        rows.append(
            {
                "id": first["id"],
                "metric": first["metric"],
                "target": first["target"],
                "medians": [row["median"] for row in same],
                "median_of_medians": _fmt(statistics.median(medians)) if medians else "-",
                "spread": f"{_fmt(min(medians))}–{_fmt(max(medians))}" if len(medians) > 1 else "-",
                "p99_median": _fmt(statistics.median(p99s)) if p99s else "-",
                "verdict": verdict,
            }
        )
    return rows


HEADERS = ["#", "metric", "median of medians", "spread (min–max)", "p99 (median)", "target", "verdict"]


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        row["id"],
        row["metric"],
        row["median_of_medians"],
        row["spread"],
        row["p99_median"],
        row["target"],
        row["verdict"],
    ]


def print_rows(rows: list[dict[str, Any]], *, repeat: int) -> None:
    table = [HEADERS] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    print(f"\nSpark Control bench, {repeat} repetitions (first figure of each cell; the table's own cells below)")
    for index, line in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()


def markdown(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> str:
    info = runs[0]["machine"]
    loads = "; ".join(
        f"{', '.join(str(v) for v in run['machine']['load_before'])} → "
        f"{', '.join(str(v) for v in run['machine'].get('load_after', []))}"
        for run in runs
    )
    lines = [
        f"{len(runs)} repetitions from {runs[0]['date']} ({runs[0]['mode']} mode) on {info['cores']} cores "
        f"({info['cpu'] or 'unknown CPU'}), Python {info['python']}; load average before → after each: {loads}.",
        *(
            [f"Processor steadiness, before each: {steady}."]
            if (steady := "; ".join(filter(None, (steadiness_text(run["machine"]) for run in runs))))
            else []
        ),
        "The first figure of each cell is combined; a verdict is given only when every repetition agrees.",
        "",
        "| " + " | ".join(HEADERS) + " | each run |",
        "| " + " | ".join("---" for _ in HEADERS) + " | --- |",
    ]
    for row in rows:
        cells = [cell.replace("|", "\\|") for cell in _cells(row)]
        each = " · ".join(text.replace("|", "\\|") for text in row["medians"])
        lines.append("| " + " | ".join(cells) + f" | {each} |")
    return "\n".join(lines)
