"""A throwaway PostgreSQL server from the machine's own binaries, for tests that restart it.

`initdb` and `pg_ctl` must be on PATH. As root they refuse to run, so they run as the
`postgres` user (``runuser``) on a data directory it owns under a temporary directory. The
server listens on 127.0.0.1 only, on a free port, with trust authentication and no unix
socket. `stop()` always stops it (immediate) and deletes the directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg

__all__ = ["OS_USER", "PgServer", "free_port", "missing_binaries", "root_problem"]

#: The OS user the servers run as when the tests run as root (they refuse to run as root).
OS_USER = _OS_USER = "postgres"


def root_problem(program: str) -> str | None:
    """Why `program` cannot be run as OS_USER when we are root (None: it can, or not root)."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        return f"running as root and runuser is not available to run {program} as {_OS_USER}"
    try:
        pwd.getpwnam(_OS_USER)
    except KeyError:
        return f"running as root and there is no {_OS_USER!r} OS user to run {program} as"
    return None


def missing_binaries() -> str | None:
    """Why a server cannot be started here, or None if it can."""
    for binary in ("initdb", "pg_ctl"):
        if shutil.which(binary) is None:
            return f"{binary} is not on PATH"
    return root_problem("initdb")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """`PgServer().start()` runs a fresh cluster; `.dsn`, `.restart(mode)`, `.stop()`."""

    def __init__(self, options: tuple[str, ...] = ()) -> None:
        self.extra_options = options  # more "-c name=value" server options
        self.root = Path(tempfile.mkdtemp(prefix="eventstore-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        command = list(args)
        if self._as_root:
            command = ["runuser", "-u", _OS_USER, "--", *command]
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{self.log_tail()}"
            )

    def start(self) -> PgServer:
        try:
            if self._as_root:
                user = pwd.getpwnam(_OS_USER)
                os.chown(self.root, user.pw_uid, user.pw_gid)
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                "--no-instructions",
            )  # fmt: skip
            self.pg_ctl_start()
        except BaseException:
            self.stop()
            raise
        return self

    def pg_ctl_start(self) -> None:
        """`pg_ctl start` on the existing data directory, waiting until it accepts queries."""
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                "-c unix_socket_directories=''",
                "-c fsync=off",  # a throwaway cluster: no need to survive an OS crash
                "-c max_connections=200",
                "-c shared_buffers=32MB",
                *self.extra_options,
            ]
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until the server accepts queries."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def restart(self, mode: str) -> None:
        """`pg_ctl restart -m mode` (fast or immediate), waiting until it is back."""
        # -l again: without it the new postmaster would keep our pipes open (and its log).
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-m", mode,
            "-w", "-t", "60", "restart",
        )  # fmt: skip
        self.wait_ready()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop at once (immediate) and delete everything. Idempotent; never raises."""
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired, OSError):
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
