"""The benchmark suite runs end to end in its smoke mode and writes sane JSON and a plot.

This checks the harness (every workload, both sides, the report), not the speed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")


def test_bench_smoke_writes_sane_json(dsn: str, tmp_path: Path) -> None:
    from eventstore_actors.bench.workloads import WORKLOADS

    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--dsn",
            dsn,
            "--json",
            str(json_path),
            "--plot",
            str(plot_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(json_path.read_text())
    assert report["preset"] == "smoke"
    assert report["failed"] == {}
    assert report["workloads"] == list(WORKLOADS)
    results = report["results"]
    assert {r["workload"] for r in results} == set(WORKLOADS)
    names = [r["name"] for r in results]
    assert len(names) == len(set(names))
    for r in results:
        for side in ("api", "raw"):
            value = r[side]
            assert isinstance(value, float) and math.isfinite(value), (r["name"], side, value)
            assert value >= 0, (r["name"], side, value)
        if r["unit"] == "events/s":
            assert r["api"] > 0 and r["raw"] > 0, r
            assert r["ratio"] == pytest.approx(r["api"] / r["raw"])
        if r["target"] is not None:
            assert r["passed"] in (True, False), r
    assert report["machine"]["postgresql_settings"]["fsync"]

    # The table on stdout names every result; the plot is a PNG.
    for name in names:
        assert name in done.stdout
    assert plot_path.read_bytes().startswith(b"\x89PNG")


def test_bench_rejects_an_unknown_workload() -> None:
    from eventstore_actors.bench import main

    with pytest.raises(SystemExit) as exc:
        main(["--only", "no-such-workload"])
    assert exc.value.code == 2
