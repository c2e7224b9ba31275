"""A throwaway PgBouncer in transaction pooling mode in front of the tests' PostgreSQL.

The binary is the Debian package ``pgbouncer`` (``/usr/sbin/pgbouncer``). PgBouncer refuses to
run as root, so as root it runs as the ``postgres`` OS user (``runuser``), with its config,
pid file and log in a temporary directory that user owns. It listens on 127.0.0.1 on a free
port, trusts every client (the users are those of the server, which trusts them too) and
forwards every database name to the server of `server_dsn`.

Each new server connection runs ``SET search_path TO pgbouncer_nowhere`` (an empty, absent
schema): a statement of the store that relied on a search_path of its own instead of naming
its schema fails loudly here instead of finding a table of another schema. `stop()` always
stops PgBouncer and deletes the directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg
import psycopg.conninfo

from .pgserver import OS_USER, free_port, root_problem

__all__ = [
    "BINARY",
    "PACKAGE",
    "PgBouncer",
    "drop_suite_clients",
    "missing",
    "suite_clients",
    "suite_server_ports",
]

BINARY = os.environ.get("PGBOUNCER", "/usr/sbin/pgbouncer")
PACKAGE = "pgbouncer"
#: What every server connection's search_path is (see the module docstring).
NOWHERE = "pgbouncer_nowhere"
_OS_USER = OS_USER
#: The PgBouncer every `make_store` store goes through in PgBouncer mode (set by conftest).
SUITE: PgBouncer | None = None


def suite_server_ports() -> set[int]:
    """The local ports of the suite PgBouncer's server connections (none outside that mode):
    the backends serving this process's stores through it."""
    if SUITE is None:
        return set()
    try:
        rows = SUITE.admin("SHOW SERVERS")
    except psycopg.Error:
        return set()
    return {int(row["local_port"]) for row in rows if row.get("local_port")}


def suite_clients(application_name: str) -> int:
    """How many clients of the suite PgBouncer have this application_name (0 outside that
    mode): the store's connections to PgBouncer, whose server connections are PgBouncer's."""
    if SUITE is None:
        return 0
    rows = SUITE.admin("SHOW CLIENTS")
    return sum(1 for row in rows if row.get("application_name") == application_name)


def drop_suite_clients(database: str) -> bool:
    """Drop every client (and server) connection of `database` at the suite PgBouncer, as a
    lost network path to it would (False outside that mode). Behind PgBouncer, terminating
    the server backends is no fault of the store's connections: PgBouncer replaces them
    unseen, so this is how a test breaks a pooled connection of the store."""
    if SUITE is None:
        return False
    SUITE.admin(f"KILL {database}")  # new clients would wait for the RESUME
    SUITE.admin(f"RESUME {database}")
    return True


def missing() -> str | None:
    """Why PgBouncer cannot be started here (a skip message naming the package), or None."""
    binary = BINARY if os.path.exists(BINARY) else shutil.which("pgbouncer")
    if binary is None:
        return (
            f"PgBouncer is not installed ({BINARY} not found): install the {PACKAGE!r} package "
            f"(apt-get install {PACKAGE}) to run the PgBouncer tests"
        )
    return root_problem("pgbouncer")


class PgBouncer:
    """`PgBouncer(server_dsn, pool_size=3).start()`; `.dsn(direct_dsn)`, `.stop()`."""

    def __init__(self, server_dsn: str, *, pool_size: int = 3, max_clients: int = 1000) -> None:
        params = psycopg.conninfo.conninfo_to_dict(server_dsn)
        self.server_host = str(params.get("host") or "127.0.0.1")
        self.server_port = int(params.get("port") or 5432)
        self.pool_size = pool_size
        self.max_clients = max_clients
        self.root = Path(tempfile.mkdtemp(prefix="eventstore-pgbouncer-"))
        self.port = free_port()
        self.logfile = self.root / "pgbouncer.log"
        self.pidfile = self.root / "pgbouncer.pid"
        self._proc: subprocess.Popen[bytes] | None = None

    def dsn(self, direct_dsn: str) -> str:
        """`direct_dsn` (same user, database and options) through this PgBouncer."""
        return psycopg.conninfo.make_conninfo(direct_dsn, host="127.0.0.1", port=str(self.port))

    def admin(self, command: str) -> list[dict[str, str]]:
        """A SHOW command of PgBouncer's admin console (it speaks the simple protocol only)."""
        admin = f"host=127.0.0.1 port={self.port} dbname=pgbouncer user={_OS_USER}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            result = conn.pgconn.exec_(command.encode())
            names = [(result.fname(i) or b"").decode() for i in range(result.nfields)]
            return [
                {name: (result.get_value(r, i) or b"").decode() for i, name in enumerate(names)}
                for r in range(result.ntuples)
            ]

    def _write_config(self) -> Path:
        (self.root / "userlist.txt").write_text(f'"{_OS_USER}" ""\n')
        server = f"host={self.server_host} port={self.server_port}"
        config = self.root / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = {server} connect_query='SET search_path TO {NOWHERE}'",
                    "",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {self.root / 'userlist.txt'}",
                    # other roles (tests create some) are looked up in the server
                    f"auth_user = {_OS_USER}",
                    "pool_mode = transaction",
                    f"default_pool_size = {self.pool_size}",
                    "min_pool_size = 0",
                    "reserve_pool_size = 0",
                    f"max_client_conn = {self.max_clients}",
                    f"logfile = {self.logfile}",
                    f"pidfile = {self.pidfile}",
                    "admin_users = postgres",
                    # a client waiting for a server connection longer than this fails
                    "query_wait_timeout = 60",
                    "server_login_retry = 1",
                    "",
                ]
            )
        )
        return config

    def start(self) -> PgBouncer:
        reason = missing()
        if reason is not None:
            raise RuntimeError(reason)
        try:
            config = self._write_config()
            command = [BINARY if os.path.exists(BINARY) else "pgbouncer", str(config)]
            if os.geteuid() == 0:
                user = pwd.getpwnam(_OS_USER)
                for path in (self.root, *self.root.iterdir()):
                    os.chown(path, user.pw_uid, user.pw_gid)
                command = ["runuser", "-u", _OS_USER, "--", *command]
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not listen:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop PgBouncer (SIGINT: at once) and delete its directory. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:  # the whole session: runuser and the pgbouncer it started
                os.killpg(proc.pid, signal.SIGINT)
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
