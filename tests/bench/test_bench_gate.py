"""The bench gate (`--check`): a ratio to raw that fell more than the tolerance below the
stored one fails the run naming its workload; anything else passes. Checks the gate's logic
on a tiny run, not the speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventstore_actors.bench.gate import Baseline, compare, load_baseline, save_baseline
from eventstore_actors.bench.results import Result

ROOT = Path(__file__).resolve().parents[2]
_BENCH = [sys.executable, "-m", "bench", "--smoke", "--only", "read-all", "--no-progress", "--dsn"]


def _result(name: str, api: float, raw: float = 100.0) -> Result:
    return Result(workload="w-" + name, name=name, unit="events/s", api=api, raw=raw)


def test_a_ratio_below_stored_minus_tolerance_regresses_and_others_pass() -> None:
    baseline = Baseline({"quick": {"a": 1.0, "b": 0.8, "gone": 0.5}}, tolerance=0.2)
    results = [_result("a", 79.0), _result("b", 65.0), _result("new", 10.0)]
    by_name = {c.name: c for c in compare(results, baseline, "quick")}
    assert by_name["a"].regressed  # 0.79 < 1.0 x 0.8
    assert not by_name["b"].regressed  # 0.65 >= 0.8 x 0.8: above the floor passes
    assert not by_name["new"].regressed and by_name["new"].stored is None
    assert "gone" not in by_name  # not measured this run: not failed
    # Another preset's ratios do not apply; a tolerance given overrides the file's.
    assert not any(c.regressed for c in compare(results, baseline, "full"))
    assert not compare(results, baseline, "quick", tolerance=0.25)[0].regressed


def test_stored_ratios_round_trip_and_bad_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ratios.json"
    save_baseline(path, [_result("a", 90.0), _result("b", 50.0)], "quick")
    save_baseline(path, [_result("a", 95.0)], "smoke")
    loaded = load_baseline(path)
    assert loaded.presets == {"quick": {"a": 0.9, "b": 0.5}, "smoke": {"a": 0.95}}
    for text in ("not json", '{"presets": {"quick": {"a": -1}}}', '{"presets": 1}'):
        path.write_text(text)
        with pytest.raises(ValueError, match="ratios"):
            load_baseline(path)


def _bench(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [*_BENCH, dsn, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )


def test_check_fails_naming_the_regressed_workload_and_passes_otherwise(
    dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "ratios.json"
    saved = _bench(dsn, "--save-ratios", str(path))
    assert saved.returncode == 0, saved.stderr[-3000:]
    document = json.loads(path.read_text())
    ratios = document["presets"]["smoke"]
    assert len(ratios) == 2 and all(v > 0 for v in ratios.values()), ratios
    pages = next(name for name in ratios if "pages" in name)

    # A stored ratio this run cannot reach: the check fails with status 3, naming it.
    ratios[pages] = 1000.0
    path.write_text(json.dumps(document))
    failed = _bench(dsn, "--check", str(path))
    assert failed.returncode == 3, failed.stderr[-3000:]
    assert f"regressed: {pages} [read-all]" in failed.stderr
    assert "REGRESSED" in failed.stdout

    # Ratios any run reaches: it passes.
    document["presets"]["smoke"] = {name: 0.001 for name in ratios}
    path.write_text(json.dumps(document))
    passed = _bench(dsn, "--check", str(path))
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-3000:]
    assert "REGRESSED" not in passed.stdout


def test_check_refuses_a_missing_file_before_running(tmp_path: Path) -> None:
    from eventstore_actors.bench import main

    with pytest.raises(SystemExit) as exc:
        main(["--check", str(tmp_path / "missing.json")])
    assert exc.value.code == 2
