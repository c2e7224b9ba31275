"""The table on stdout, the JSON file and the plot of throughput against concurrency."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from .results import Result

__all__ = ["format_seed_table", "format_table", "write_json", "write_plot"]


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3f}"
    if unit == "x":
        return f"{value:.2f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _verdict(result: Result) -> str:
    passed = result.passed
    return "-" if passed is None else ("PASS" if passed else "FAIL")


def _render(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_table(results: list[Result]) -> str:
    """workload | unit | API | raw | API/raw | target | result."""
    rows = [
        [
            r.name,
            r.unit,
            _num(r.api, r.unit),
            _num(r.raw, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.2f}",
            r.target.label if r.target else "-",
            _verdict(r),
        ]
        for r in results
    ]
    header = ["workload", "unit", "API", "raw", "API/raw", "target", "result"]
    return _render(header, rows, right={2, 3, 4})


def format_seed_table(results: list[Result]) -> str:
    """The seed README's figures in µs/op next to ours (empty if no seed workload ran)."""
    rows = [
        [
            r.name,
            _num(r.extra["api_us_per_op"], "us"),
            _num(r.extra["raw_us_per_op"], "us"),
            _num(r.extra.get("seed_us_per_op"), "us"),
            str(r.extra["ops"]),
        ]
        for r in results
        if "seed_us_per_op" in r.extra
    ]
    if not rows:
        return ""
    header = ["seed benchmark", "API µs/op", "raw µs/op", "Elixir v0.10 µs/op", "ops"]
    return _render(header, rows, right={1, 2, 3, 4})


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")


_LABELS = {
    "seed-append": "100-event appends",
    "seed-read": "100-event stream reads",
    "single-append": "single-event appends",
}


def _series(results: list[Result], key: str) -> dict[str, list[tuple[int, float, float]]]:
    """workload -> [(concurrency, api, raw)] for rows that carry a concurrency."""
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in results:
        n = r.extra.get(key)
        if n is not None and r.api is not None and r.raw is not None:
            series.setdefault(r.workload, []).append((int(n), r.api, r.raw))
    return series


def write_plot(path: Path, results: list[Result], title: str, err: TextIO) -> bool:
    """PNG of events/s against writers/readers, API solid and raw dashed, log-log."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib: pip install 'eventstore-actors[bench]'", file=err)
        return False
    series = _series(results, "writers") | _series(results, "readers")
    if not series:
        print("--plot: no concurrency workload ran, nothing to plot", file=err)
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (workload, points) in enumerate(sorted(series.items())):
        points.sort()
        xs = [p[0] for p in points]
        color = f"C{i}"
        label = _LABELS.get(workload, workload)
        ax.plot(xs, [p[1] for p in points], "o-", color=color, label=f"{label}, API")
        ax.plot(xs, [p[2] for p in points], "s--", color=color, label=f"{label}, raw psycopg")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted({p[0] for points in series.values() for p in points})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("concurrent writers / readers")
    ax.set_ylabel("events/s")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
