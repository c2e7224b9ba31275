"""Entry points run in a separate process (`python -m eventstore_actors.bench.children.<name>`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["emit", "finish_child", "spawn"]

#: The folder holding the `eventstore_actors` package (a checkout, or site-packages).
_ROOT = Path(__file__).resolve().parents[3]


def spawn(name: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    """Start `eventstore_actors.bench.children.<name>` with this interpreter; stdout piped
    (and stdin, if asked)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", f"{__name__}.{name}", *args],
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish_child(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Wait for the child; the JSON object it printed last, or RuntimeError with its stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(
            f"child {proc.args!r} timed out after {timeout:.0f} s: {err[-500:]}"
        ) from None
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {proc.args!r} exited {proc.returncode}: {err[-1000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def emit(result: dict[str, Any]) -> None:
    """A child's answer: one JSON line on stdout."""
    print(json.dumps(result), flush=True)
