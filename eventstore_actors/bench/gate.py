"""`--check`: this run's ratios to raw psycopg against stored ones, so that a loss is seen the
day it lands.

Ratios, not absolute figures: each is measured against the raw baseline in the same run on
the same machine, so a slower or busier machine moves both sides. The stored file maps each
preset (quick, full, smoke) to result name -> ratio, plus a relative tolerance: a result
regresses when its ratio falls below stored x (1 - tolerance). Results the file does not
know, and stored ones this run did not measure (`--only`), are reported, never failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import Result

__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_TOLERANCE",
    "Baseline",
    "Comparison",
    "compare",
    "format_comparison",
    "load_baseline",
    "save_baseline",
]

#: Where a checkout keeps the stored ratios (not in the wheel: pass a path there).
DEFAULT_BASELINE = Path(__file__).resolve().parents[2] / "bench" / "baseline-ratios.json"

#: A ratio may fall this much (relative) below the stored one before it counts as a loss.
DEFAULT_TOLERANCE = 0.25


@dataclass(frozen=True)
class Baseline:
    """Stored ratios: preset -> result name -> ratio, and the file's tolerance."""

    presets: dict[str, dict[str, float]]
    tolerance: float = DEFAULT_TOLERANCE


@dataclass(frozen=True)
class Comparison:
    """One result against its stored ratio."""

    name: str
    workload: str
    ratio: float | None
    stored: float | None
    floor: float | None

    @property
    def regressed(self) -> bool:
        return self.ratio is not None and self.floor is not None and self.ratio < self.floor


def load_baseline(path: Path) -> Baseline:
    """The stored ratios; ValueError naming the file when it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the stored ratios {path}: {exc}") from None
    presets = document.get("presets") if isinstance(document, dict) else None
    tolerance = document.get("tolerance", DEFAULT_TOLERANCE) if isinstance(document, dict) else 0
    if (
        not isinstance(presets, dict)
        or not all(
            isinstance(ratios, dict)
            and all(isinstance(v, (int, float)) and v > 0 for v in ratios.values())
            for ratios in presets.values()
        )
        or not isinstance(tolerance, (int, float))
        or not 0 <= tolerance < 1
    ):
        raise ValueError(
            f"{path} is not a file of stored ratios: expected "
            '{"tolerance": 0..1, "presets": {"quick": {"<result name>": <ratio>, ...}}}'
        )
    return Baseline(
        {p: {n: float(v) for n, v in r.items()} for p, r in presets.items()}, float(tolerance)
    )


def compare(
    results: list[Result], baseline: Baseline, preset: str, tolerance: float | None = None
) -> list[Comparison]:
    """Each result of this run against the stored ratio of its preset (None: none stored)."""
    stored = baseline.presets.get(preset, {})
    allowed = baseline.tolerance if tolerance is None else tolerance
    out = []
    for r in results:
        ratio = stored.get(r.name)
        floor = None if ratio is None else ratio * (1 - allowed)
        out.append(Comparison(r.name, r.workload, r.ratio, ratio, floor))
    return out


def format_comparison(comparisons: list[Comparison], tolerance: float) -> str:
    """The check's verdict, one line per result; regressions first."""
    lines = []
    for c in sorted(comparisons, key=lambda c: not c.regressed):
        if c.stored is None:
            lines.append(
                f"  not stored   {c.name} (ratio {_ratio(c.ratio)}): add it with --save-ratios"
            )
        elif c.ratio is None:
            lines.append(f"  no ratio     {c.name}")
        elif c.regressed:
            lines.append(
                f"  REGRESSED    {c.name} [{c.workload}]: {c.ratio:.2f}x raw, below "
                f"{c.floor:.2f} (stored {c.stored:.2f} - {tolerance:.0%})"
            )
        else:
            lines.append(f"  ok           {c.name}: {c.ratio:.2f}x raw (stored {c.stored:.2f})")
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def save_baseline(path: Path, results: list[Result], preset: str) -> None:
    """Store this run's ratios for `preset` (other presets and unmeasured results kept)."""
    document: dict[str, Any] = {"tolerance": DEFAULT_TOLERANCE, "presets": {}}
    if path.exists():
        document = json.loads(path.read_text(encoding="utf-8"))
    ratios = document.setdefault("presets", {}).setdefault(preset, {})
    for r in results:
        if r.ratio is not None:
            ratios[r.name] = round(r.ratio, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
