"""The wheel: only the `eventstore_actors` package (no top-level `bench`), with py.typed and
its SQL files, and `eventstore-actors bench` working from the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel here (no build backend?): {built.stderr[-500:]}")
    [path] = out.glob("eventstore_actors-*.whl")
    yield path


def test_wheel_has_no_top_level_bench_and_ships_py_typed(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"eventstore_actors"}, top
    assert "eventstore_actors/py.typed" in names
    assert "eventstore_actors/bench/__init__.py" in names
    assert "eventstore_actors/bench/workloads/__init__.py" in names
    assert any(n.startswith("eventstore_actors/_sql/") for n in names)


def test_installed_bench_command_runs_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Outside the source tree, with only the installed copy on the path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import eventstore_actors, eventstore_actors.bench; print(eventstore_actors.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.startswith(str(target)), probe.stdout
    # `import bench` in a user's project is theirs, not ours (this test's own environment
    # may hold an editable checkout, so look at what the wheel installed).
    assert sorted(
        p.name
        for p in target.iterdir()
        if p.is_dir() and p.name not in ("bin", "__pycache__") and not p.name.endswith(".dist-info")
    ) == ["eventstore_actors"]
    helped = subprocess.run(
        [sys.executable, "-m", "eventstore_actors.cli", "bench", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    assert "--quick" in helped.stdout


def test_python_m_bench_still_works_from_a_checkout() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    helped = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    assert "eventstore-actors bench" in helped.stdout
