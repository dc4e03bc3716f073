"""The table: one row per figure with its median, p99, target, same-run baseline, ratio and verdict; printed,
kept in `bench/results.json`, and written between markers in `docs/PERFORMANCE.md`."""

from __future__ import annotations

import math
import re
from typing import Any

from bench.common import ROOT, steadiness_text

DOCS = ROOT / "docs" / "PERFORMANCE.md"
BEGIN = "<!-- bench:table:begin (written by `python -m bench`; edit the text around it, not this block) -->"
END = "<!-- bench:table:end -->"
HEADERS = ["#", "metric", "median", "p99", "target", "baseline (same run)", "ratio", "verdict"]


def _num(value: float | None, digits: int | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}"


def _ratio(ours: float | None, base: float | None) -> float | None:
    if ours is None or base is None or base == 0 or math.isnan(ours) or math.isnan(base):
        return None
    return ours / base


def _row(
    number: str,
    metric: str,
    median: str,
    p99: str,
    target: str,
    baseline: str,
    ratio: float | None,
    met: bool | None,
    note: str = "",
) -> dict[str, Any]:
    return {
        "id": number,
        "metric": metric,
        "median": median,
        "p99": p99,
        "target": target,
        "baseline": baseline,
        "ratio": None if ratio is None else round(ratio, 3),
        "met": met,
        "note": note,
    }


def build_table(results: dict[str, Any]) -> list[dict[str, Any]]:  # noqa: PLR0915 - one row per figure, in order
    svc, base, sw = results["service"], results["baselines"], results["sweeps"]
    swaps = svc["swaps"]
    rows = []

    m1 = swaps["m1"]
    ours, ls, gs = m1["ours"], m1["llama_swap"], m1["gpustack"]
    rows.append(
        _row(
            "M1",
            "readiness lag: port open -> row ready (ms)",
            _num(ours["median"]),
            _num(ours["p99"]),
            "p50 <= 30, p99 <= 10",
            f"llama-swap {_num(ls['median'])} / GPUStack {_num(gs['median'])}",
            _ratio(ours["median"], ls["median"]),
            ours["median"] <= 30 and ours["p99"] <= 10,
            f"{ours['n']} swaps; ratio to the llama-swap style median",
        )
    )

    ssh = svc["ssh"]
    warm = swaps["m2_warm"]
    rows.append(
        _row(
            "M2",
            "dispatch warm: POST answered -> launcher's 1st line (ms)",
            _num(warm["median"]),
            _num(warm["p99"]),
            "p50 <= 10",
            f"paramiko default: exec {_num(ssh['default_warm']['median'])}",
            _ratio(warm["median"], ssh["default_warm"]["median"]),
            warm["median"] <= 10,
            f"floor: exec -> first line with TCP_NODELAY alone {_num(ssh['nodelay_warm']['median'])} ms",
        )
    )
    dispatch_share = warm["median"] - ssh["nodelay_warm"]["median"]
    rows.append(
        _row(
            "M2",
            "  of which Spark Control: minus the exec floor (ms)",
            _num(dispatch_share),
            "-",
            "p50 <= 3",
            f"floor {_num(ssh['nodelay_warm']['median'])}",
            None,
            dispatch_share <= 3,
            "the floor: SSH exec -> the launcher's first line, TCP_NODELAY, measured from the bench (sshd, a shell, "
            "and the simulated launcher's Python start)",
        )
    )
    cold = svc["m2_cold"]
    rows.append(
        _row(
            "M2",
            "dispatch cold: new SSH connections to both nodes (ms)",
            _num(cold["median"]),
            _num(cold["p99"]),
            "p50 <= 120",
            f"paramiko default: connect+exec {_num(ssh['default_cold']['median'])}",
            _ratio(cold["median"], ssh["default_cold"]["median"]),
            cold["median"] <= 120,
            f"floor: connect + exec with TCP_NODELAY alone {_num(ssh['nodelay_cold']['median'])} ms (one node)",
        )
    )

    mixed = sw["m3_mixed_ratio"]
    per_phase = f"{'>= ' if sw['m3_per_phase_capped'] else ''}{_num(sw['m3_per_phase_s'] / sw['timeout_s'])}"
    rows.append(
        _row(
            "M3",
            "sweep of 50, 10 hung/3 drip/5 refused (x timeout)",
            _num(mixed["median"], 2),
            _num(mixed["p99"], 2),
            "<= 1.10",
            f"sequential {_num(sw['m3_sequential_s'] / sw['timeout_s'])}; httpx per-phase {per_phase}",
            _ratio(mixed["median"], sw["m3_sequential_s"] / sw["timeout_s"]),
            mixed["median"] <= 1.10,
            "T = 1 s; ratio to sequential",
        )
    )
    healthy = sw["m3_healthy_ms"]
    rows.append(
        _row(
            "M3",
            "sweep of 50 healthy (ms)",
            _num(healthy["median"]),
            _num(healthy["p99"]),
            "<= 30",
            f"sequential {_num(sw['m3_healthy_sequential_ms']['median'])}",
            _ratio(healthy["median"], sw["m3_healthy_sequential_ms"]["median"]),
            healthy["median"] <= 30,
        )
    )

    hello, ninja = base["m4"]["hello"], base["m4"]["ninja_daphne"]
    for processes, m4 in sorted(svc["m4"].items()):
        label = "1 process (embedded default)" if processes == "1" else f"serve --workers {processes} + Redis"
        short = "1 proc" if processes == "1" else f"{processes} procs+Redis"
        reads, at = m4["reads"], m4["reads_at_target"]
        errors = reads["errors"] + at["errors"]
        rows.append(
            _row(
                "M4",
                f"lock reads, 64 clients [{short}]: max; at 1,000/s (ms)",
                f"{_num(reads['rate'], 0)} req/s; {_num(at['latency_ms']['median'])}",
                _num(at["latency_ms"]["p99"]),
                ">= 1,000 req/s, p99 <= 50, 0 errors",
                f"hello {_num(hello['rate'], 0)}; ninja/daphne {_num(ninja['rate'], 0)}",
                _ratio(reads["rate"], ninja["rate"]),
                reads["rate"] >= 1000 and at["latency_ms"]["p99"] <= 50 and errors == 0,
                f"{label}: {errors} errors; {_num(reads['cpu_ms_per_request'], 2)} ms of service CPU per request "
                f"(load generator {_num(reads['client_cpu_ms_per_request'], 2)} ms); "
                f"closed-loop latency p50 {_num(reads['latency_ms']['median'])} / "
                f"p99 {_num(reads['latency_ms']['p99'])} ms; ratio to ninja/daphne; "
                f"{_num(_ratio(reads['rate'], hello['rate']), 2)} of hello",
            )
        )
        lock, at = m4["lock"], m4["lock_at_target"]
        errors = lock["errors"] + at["errors"]
        doubles = m4["double_grants"] + lock["duplicate_epochs"] + at["duplicate_epochs"]
        rows.append(
            _row(
                "M4",
                f"lock cycles, 64 clients [{short}]: max; at 400/s (ms)",
                f"{_num(lock['rate'], 0)} ops/s; {_num(at['latency_ms']['median'])}",
                _num(at["latency_ms"]["p99"]),
                ">= 400 ops/s, p99 <= 100, 0 errors, 0 double grants",
                "-",
                None,
                lock["rate"] >= 400 and at["latency_ms"]["p99"] <= 100 and errors == 0 and doubles == 0,
                f"{label}: {lock['grants'] + at['grants']} grants, {errors} errors, {doubles} double grants; "
                f"closed-loop latency p50 {_num(lock['latency_ms']['median'])} / "
                f"p99 {_num(lock['latency_ms']['p99'])} ms",
            )
        )

    for size, limit in (("50", 20), ("200", 50)):
        ours, theirs = svc["m5"][size]["latency_ms"], base["m5"][size]["latency_ms"]
        rows.append(
            _row(
                "M5",
                f"push: worker event -> {size} sockets (ms)",
                _num(ours["median"]),
                _num(ours["p99"]),
                f"p99 <= {limit}",
                f"Channels/daphne {_num(theirs['median'])} (p99 {_num(theirs['p99'])})",
                _ratio(ours["median"], theirs["median"]),
                ours["p99"] <= limit,
                f"{ours['n']} deliveries",
            )
        )

    m6 = swaps["m6"]
    ours, ls, gs = m6["ours"], m6["llama_swap"], m6["gpustack"]
    rows.append(
        _row(
            "M6",
            "swap overhead: wall - engine load, 2 nodes (ms)",
            _num(ours["median"]),
            _num(ours["p99"]),
            "p50 <= 60, p99 <= 150",
            f"llama-swap {_num(ls['median'])} / GPUStack {_num(gs['median'])}",
            _ratio(ours["median"], ls["median"]),
            ours["median"] <= 60 and ours["p99"] <= 150,
            f"engine load {_num(m6['load_s']['median'], 2)} s subtracted; see the phase breakdown",
        )
    )

    floor, share = m6["floor"], m6["share"]
    rows.append(
        _row(
            "M6",
            "  of which Spark Control: minus the replay floor (ms)",
            _num(share["median"]),
            _num(share["p99"]),
            "p50 <= 40",
            f"floor {_num(floor['median'])} (p99 {_num(floor['p99'])})",
            None,
            share["median"] <= 40,
            f"the floor: the same remote commands replayed back to back from the bench on open connections, "
            f"no HTTP, queue, database or events, 1 ms port watch; {share['n']} replays, each paired with the swap "
            "just before it",
        )
    )

    fleet, healthy = sw["m7_sweep_ratio"], sw["m7_sweep_healthy_ms"]
    sizes = ("10", "100", "500")
    rows.append(
        _row(
            "M7",
            "sweep of 10 / 100 / 500, M3's mix (x timeout)",
            " / ".join(_num(fleet[size]["median"], 2) for size in sizes),
            " / ".join(_num(fleet[size]["p99"], 2) for size in sizes),
            "flat: each <= 1.10",
            "-",
            _ratio(fleet["500"]["median"], fleet["10"]["median"]),
            all(fleet[size]["median"] <= 1.10 for size in sizes),
            "M3's proportions at every size (20% hung, 6% slow-drip, 10% refused, rounded); ratio 500 / 10",
        )
    )
    rows.append(
        _row(
            "M7",
            "sweep of 10 / 100 / 500, all healthy (ms)",
            " / ".join(_num(healthy[size]["median"]) for size in sizes),
            " / ".join(_num(healthy[size]["p99"]) for size in sizes),
            "-",
            "-",
            _ratio(healthy["500"]["median"], healthy["10"]["median"]),
            None,
            f"what each probe costs: {_num((healthy['500']['median'] - healthy['100']['median']) / 400, 2)} ms "
            "per added service",
        )
    )
    small, big, deep = svc["m7_list_small"], svc["m7_list_10k"], svc["m7_list_10k_deep"]
    flat_list = big["median"] <= 1.5 * small["median"] and deep["median"] <= 1.5 * small["median"]
    rows.append(
        _row(
            "M7",
            "history page: few / 10,000 / deep (ms)",
            f"{_num(small['median'])} / {_num(big['median'])} / {_num(deep['median'])}",
            f"{_num(small['p99'])} / {_num(big['p99'])} / {_num(deep['p99'])}",
            "flat (10,000 <= 1.5 x few)",
            "-",
            _ratio(big["median"], small["median"]),
            flat_list,
            "ratio: 10,000 / few",
        )
    )
    per_socket = (svc["rss_200_sockets_kib"] - svc["rss_before_200_sockets_kib"]) / 200
    rows.append(
        _row(
            "M7",
            "memory per dashboard socket (KiB)",
            _num(per_socket),
            "-",
            "<= 20",
            "-",
            None,
            per_socket <= 20,
            "RSS with 200 sockets open minus RSS just before, / 200",
        )
    )
    idle, after = svc["rss_idle_kib"] / 1024, svc["rss_10k_history_kib"] / 1024
    rows.append(
        _row(
            "mem",
            "RSS: idle / 200 sockets / 10,000 swaps (MiB)",
            " / ".join(_num(svc[key] / 1024) for key in ("rss_idle_kib", "rss_200_sockets_kib", "rss_10k_history_kib")),
            "-",
            "idle <= 100, 10,000 swaps <= 1.1 x idle",
            "-",
            after / idle,
            idle <= 100 and after <= 1.1 * idle,
            "ratio: after the 10,000 swaps (and everything before them in the run) / idle",
        )
    )
    gateway = results.get("gateway")
    if gateway:
        rows.append(_gateway_row(gateway))
    return rows


def _gateway_row(gateway: dict[str, Any]) -> dict[str, Any]:
    """M8: what the gateway (the default HTTP client) adds to time to first token over the fake vLLM called directly."""
    direct = gateway["results"]["direct"]
    name = next(key for key in gateway["results"] if key.startswith("gateway-"))
    ours = gateway["results"][name]
    return _row(
        "M8",
        f"gateway, {gateway['streams']} streams: TTFT added; throughput loss",
        f"+{_num(ours['added_ttft_p50_ms'], 2)} ms; {_num(ours['throughput_loss_pct'], 2)} %",
        f"+{_num(ours['added_ttft_p99_ms'], 2)}",
        "p50 <= +3 ms, loss <= 1 %, 0 errors",
        f"direct TTFT {_num(direct['ttft_p50_ms'])} (p99 {_num(direct['ttft_p99_ms'])})",
        _ratio(ours["ttft_p50_ms"], direct["ttft_p50_ms"]),
        ours["added_ttft_p50_ms"] <= 3 and ours["throughput_loss_pct"] <= 1 and ours["errors"] == 0,
        f"{name[len('gateway-') :]} client; {ours['requests']} requests, {ours['errors']} errors; "
        f"{gateway['rounds']} rounds of {_num(gateway['seconds_per_phase'])} s per phase, direct and gateway "
        "alternating; ratio: TTFT through the gateway / direct",
    )


def _verdict(row: dict[str, Any]) -> str:
    return {True: "met", False: "MISSED", None: "-"}[row["met"]]


def _cells(row: dict[str, Any]) -> list[str]:
    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
    return [row["id"], row["metric"], row["median"], row["p99"], row["target"], row["baseline"], ratio, _verdict(row)]


def print_table(results: dict[str, Any]) -> None:
    rows = [HEADERS] + [_cells(row) for row in results["table"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    info = results["machine"]
    print()
    print(f"Spark Control bench, {results['date']}, {info['cores']} cores, Python {info['python']}, {results['mode']}")
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    lines = [
        f"Run of {results['date']} ({results['mode']} mode, {results['runtime_s']:.0f} s) on {info['cores']} cores "
        f"({info['cpu'] or 'unknown CPU'}), Python {info['python']}, Linux {info['kernel']}; "
        f"load average before the run {', '.join(str(v) for v in info['load_before'])}"
        + (f", after {', '.join(str(v) for v in info['load_after'])}" if info.get("load_after") else "")
        + (f"; {steady}." if (steady := steadiness_text(info)) else ".")
        + (f" `serve` arguments: `{' '.join(results['serve_args'])}`." if results["serve_args"] else ""),
        "",
        "| " + " | ".join(HEADERS) + " |",
        "| " + " | ".join("---" for _ in HEADERS) + " |",
    ]
    for row in results["table"]:
        cells = [cell.replace("|", "\\|") for cell in _cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    verdicts = [
        f"- {row['id']} {row['metric'].strip()}: **{_verdict(row)}** — {row['median']}"
        + (f" (p99 {row['p99']})" if row["p99"] != "-" else "")
        + f"; target {row['target']}"
        for row in results["table"]
        if row["met"] is not None
    ]
    lines += ["", "Targets, this run:", "", *verdicts]
    notes = [f"- {row['id']} {row['metric'].strip()}: {row['note']}" for row in results["table"] if row["note"]]
    phases = results["service"]["swaps"]["m6"]["phases_ms"]
    lines += ["", "Notes of this run:", "", *notes, "", "Where a swap's time goes (medians, ms):", ""]
    lines += [f"- {name}: {_num(value['median'])}" for name, value in phases.items()]
    replacing = results["service"]["swaps"]["m6"].get("replacing")
    if replacing:
        lines.append(
            f"- swap overhead when a model is running and must be stopped first (memory settle included): "
            f"{_num(replacing['median'])} (n = {replacing['n']})"
        )
    floor = results["service"]["swaps"]["m6"]["floor"].get("phases_ms", {})
    if floor:
        lines += ["", "The same steps in the floor replay (medians, ms):", ""]
        lines += [f"- {name}: {_num(value['median'])}" for name, value in floor.items()]
    return "\n".join(lines)


def update_docs(results: dict[str, Any], *, repeated: str = "") -> None:
    """Replace the table block of docs/PERFORMANCE.md (the text around it is kept); with `repeated`, the combined
    table of a `--repeat` run comes first and the last repetition's full table after it."""
    body = markdown(results)
    if repeated:
        body = f"{repeated}\n\nThe last repetition in full:\n\n{body}"
    block = f"{BEGIN}\n{body}\n{END}"
    if DOCS.exists():
        text = DOCS.read_text()
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
        if pattern.search(text):
            DOCS.write_text(pattern.sub(lambda _: block, text))
            return
        DOCS.write_text(text.rstrip() + "\n\n## Latest run\n\n" + block + "\n")
        return
    DOCS.write_text(
        "# Spark Control - performance\n\n"
        "The latest table of `python -m bench` (`make bench`). Targets and peer baselines: PERFORMANCE.md of the "
        "shared design.\n\n## Latest run\n\n" + block + "\n"
    )
