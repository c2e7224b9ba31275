"""A throwaway primary and a real streaming hot standby of it, from the machine's binaries.

The primary is a `PgServer` with WAL for replication (initdb's default pg_hba.conf already
trusts replication connections from 127.0.0.1); the standby is made with
``pg_basebackup -R`` (standby.signal and primary_conninfo written for us) and started on its
own free port. Both run as the ``postgres`` OS user when we are root, like `PgServer`.
`stop()` always stops both and deletes their directories.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import TracebackType

import psycopg

from .pgserver import PgServer
from .pgserver import missing_binaries as server_missing

__all__ = ["ReplicaPair", "Standby", "missing_binaries"]

_PRIMARY_OPTIONS = (
    "-c wal_level=replica",
    "-c max_wal_senders=10",
    "-c hot_standby=on",
    "-c wal_keep_size=256MB",
    # Standby queries are never cancelled by replay conflicts in these tests: a replica read
    # that fails falls back to the primary, which would hide what a test wants to see.
    "-c max_standby_streaming_delay=-1",
    "-c hot_standby_feedback=on",
)


def missing_binaries() -> str | None:
    """Why a primary and standby cannot be started here (naming the package), or None."""
    why = server_missing()
    if why is not None:
        return f"{why} (install the Debian package postgresql-15)"
    if shutil.which("pg_basebackup") is None:
        return "pg_basebackup is not on PATH (install the Debian package postgresql-client-15)"
    return None


def lsn(conn: psycopg.Connection[tuple[object, ...]], function: str) -> int:
    row = conn.execute(f"SELECT ({function}() - '0/0'::pg_lsn)::bigint").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class Standby(PgServer):
    """A streaming hot standby of `primary` (``pg_basebackup -R``)."""

    def __init__(self, primary: PgServer, name: str = "standby1") -> None:
        super().__init__(_PRIMARY_OPTIONS)
        self.primary = primary
        self.name = name

    def start(self) -> Standby:
        try:
            self._as_postgres_owner(self.root)
            conninfo = (
                f"host=127.0.0.1 port={self.primary.port} user=postgres "
                f"application_name={self.name}"
            )
            self._run(
                "pg_basebackup", "-d", conninfo, "-D", str(self.data), "-R", "-X", "stream",
                "-c", "fast", "--no-sync",
            )  # fmt: skip
            self.pg_ctl_start()
        except BaseException:
            self.stop()
            raise
        return self

    def _as_postgres_owner(self, path: Path) -> None:
        if self._as_root:
            import os
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(path, user.pw_uid, user.pw_gid)

    def promote(self) -> None:
        """`pg_ctl promote`, waiting until it accepts writes."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")

    def pause_replay(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")


class ReplicaPair:
    """A primary and one standby: `.primary`, `.standby`, `.multi_host_dsn(...)`."""

    def __init__(self, synchronous: bool = False) -> None:
        self.primary = PgServer(_PRIMARY_OPTIONS)
        self.standby = Standby(self.primary)
        self.synchronous = synchronous

    def start(self) -> ReplicaPair:
        try:
            self.primary.start()
            self.standby.start()
            self.wait_streaming()
            if self.synchronous:
                with psycopg.connect(self.primary.dsn, autocommit=True) as conn:
                    conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                    conn.execute("SELECT pg_reload_conf()")
                    deadline = time.monotonic() + 30
                    while True:
                        row = conn.execute(
                            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
                        ).fetchone()
                        if row and row[0]:
                            break
                        if time.monotonic() > deadline:
                            raise RuntimeError("the standby never became synchronous")
                        time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_streaming(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.primary.dsn, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                ).fetchone()
                if row and row[0]:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the standby is not streaming\n{self.standby.log_tail()}")
                time.sleep(0.05)

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written now."""
        with psycopg.connect(self.primary.dsn, autocommit=True) as conn:
            target = lsn(conn, "pg_current_wal_lsn")
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.standby.dsn, autocommit=True) as conn:
            while lsn(conn, "pg_last_wal_replay_lsn") < target:
                if time.monotonic() > deadline:
                    raise RuntimeError("the standby did not replay in time")
                time.sleep(0.01)

    def multi_host_dsn(self, dbname: str = "postgres") -> str:
        """Both servers, the writable one chosen at each connect."""
        return (
            f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby.port} "
            f"user=postgres dbname={dbname} target_session_attrs=read-write"
        )

    def stop(self) -> None:
        self.standby.stop()
        self.primary.stop()

    def __enter__(self) -> ReplicaPair:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
