"""`eventstore-actors ARGS` in a child process, for the tests of the command line.

The child imports this checkout (``PYTHONPATH``), runs without ``EVENTSTORE_DSN`` unless the
test passes one in ``env``, and never waits on a terminal (stdin is /dev/null by default).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "cli"]

#: The checkout the tests run from.
ROOT = Path(__file__).resolve().parent.parent.parent


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the command line with `args`; its exit code, stdout and stderr (text)."""
    environment = {k: v for k, v in os.environ.items() if k != "EVENTSTORE_DSN"}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "eventstore_actors.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=environment,
        stdin=stdin,
        check=False,
    )
