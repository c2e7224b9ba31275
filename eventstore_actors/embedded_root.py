"""The embedded server when this process runs as root: PostgreSQL refuses to run as root,
so a system user (`SERVER_OS_USER`) runs it, and the data directory must be reachable by and
owned by that user. Nothing is made more permissive than it was; what is created is said.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from . import logs
from .errors import ConfigError

__all__ = [
    "ROOT_HOME",
    "SERVER_OS_USER",
    "as_root",
    "blocked",
    "check_owner",
    "created",
    "prepare_parent",
    "server_user",
]

_log = logs.get_logger("eventstore_actors.embedded")

#: The OS user the embedded server runs as when this process is root.
SERVER_OS_USER = "embedded_postgres"
#: Where the data directory lives by default when run as root.
ROOT_HOME = Path("/var/lib") / "eventstore-actors"
#: The environment variable naming the data directory (see embedded.DIR_ENV).
_DIR_ENV = "EVENTSTORE_EMBEDDED_DIR"


def as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def created(sentence: str) -> None:
    """Something the embedded server's set-up created on this machine: a WARNING (printed by
    the command line), since nobody asked for it by name."""
    _log.warning(f"embedded PostgreSQL run as root: {sentence}")


def server_user() -> Any:
    """The OS user the server runs as (root only), created as a system account if missing."""
    import pwd

    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        pass
    command = ["useradd", "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SERVER_OS_USER]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        with contextlib.suppress(KeyError):  # another process made it meanwhile
            return pwd.getpwnam(SERVER_OS_USER)
        said = getattr(exc, "stderr", "") or exc
        raise ConfigError(
            f"PostgreSQL does not run as root, and the OS user {SERVER_OS_USER!r} for the "
            f"embedded server could not be created ({' '.join(str(said).split())}): create it, "
            "or run as another user"
        ) from None
    created(f"created the OS user {SERVER_OS_USER} (system account, no login) to run the server")
    return pwd.getpwnam(SERVER_OS_USER)


def blocked(path: Path, user: Any) -> Path | None:
    """The first of `path` and its parents that `user` cannot traverse, or None."""
    groups = {user.pw_gid}
    with contextlib.suppress(Exception):
        groups.update(os.getgrouplist(user.pw_name, user.pw_gid))
    for folder in (path, *path.parents):
        mode = folder.stat()
        if mode.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif mode.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not mode.st_mode & bit:
            return folder
    return None


def prepare_parent(path: Path) -> None:
    """The folder of the data directory exists and the server's user can traverse it all the
    way from ``/``: made (0755) only when it is the default ``/var/lib/eventstore-actors``,
    never made more permissive."""
    user = server_user()
    if path.parent == ROOT_HOME and not ROOT_HOME.exists():
        with contextlib.suppress(FileExistsError):
            ROOT_HOME.mkdir(mode=0o755)
            ROOT_HOME.chmod(0o755)  # whatever the umask
            created(f"created the directory {ROOT_HOME}")
    existing = next((p for p in (path.parent, *path.parents) if p.exists()), Path("/"))
    stuck = blocked(existing, user)
    if stuck is not None:
        raise ConfigError(
            f"the embedded PostgreSQL runs as the OS user {user.pw_name} (PostgreSQL does not "
            f"run as root), which cannot reach {path}: {stuck} is not traversable by it (mode "
            f"{stat.S_IMODE(stuck.stat().st_mode):04o}); nothing was changed: set {_DIR_ENV} "
            f"to a directory it can reach, e.g. {ROOT_HOME / 'pgdata'}"
        )


def check_owner(path: Path) -> None:
    user = server_user()
    if path.stat().st_uid != user.pw_uid:
        raise ConfigError(
            f"the embedded data directory {path} is not owned by {user.pw_name}, the OS user the "
            "server runs as when run as root: use a new directory, or chown it to that user"
        )
