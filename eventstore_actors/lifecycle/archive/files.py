"""Where archive files live: a local directory (a path or file:// URL) or any fsspec URL
(s3://, gs://, ...), and the Parquet layout of one file. pyarrow (and fsspec for remote
URLs) are optional dependencies, imported only when an archive is written or read."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...config import redact_url
from ...errors import ConfigError

__all__ = ["COLUMNS", "Target", "open_parquet", "pyarrow_modules", "schema"]

#: The columns of every archive file, in this order: one row per event.
COLUMNS = (
    "event_id",
    "stream_uuid",
    "stream_version",
    "event_uuid",
    "event_type",
    "correlation_id",
    "causation_id",
    "data",
    "metadata",
    "subject",
    "created_at",
)

_INSTALL = (
    "archiving needs pyarrow: pip install pyarrow (from a checkout: pip install '.[archive]')"
)


def pyarrow_modules() -> tuple[Any, Any]:
    """(pyarrow, pyarrow.parquet), or ConfigError saying what to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ConfigError(_INSTALL) from None
    return pyarrow, pyarrow.parquet


def schema() -> Any:
    """The Arrow schema of an archive file."""
    pa, _ = pyarrow_modules()
    return pa.schema(
        [
            ("event_id", pa.int64()),
            ("stream_uuid", pa.string()),
            ("stream_version", pa.int64()),
            ("event_uuid", pa.string()),
            ("event_type", pa.string()),
            ("correlation_id", pa.string()),
            ("causation_id", pa.string()),
            ("data", pa.binary()),
            ("metadata", pa.binary()),
            ("subject", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def _local(url: str) -> Path | None:
    """The local path of `url` (a plain path or file://), or None for other schemes."""
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url:
        return None
    return Path(url)


def _fs(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ConfigError(
            f"archive URL {redact_url(url)!r} needs fsspec: pip install fsspec (from a checkout: "
            "pip install '.[archive]')"
        ) from None
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def open_parquet(url: str) -> Any:
    """A pyarrow ParquetFile of the archive file at `url` (the caller closes it)."""
    _, pq = pyarrow_modules()
    path = _local(url)
    if path is not None:
        return pq.ParquetFile(str(path))
    fs, remote = _fs(url)
    return pq.ParquetFile(fs.open(remote, "rb"))


class Target:
    """A directory that archive files are written to."""

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ValueError(f"target must be a directory path or URL, got {url!r}")
        self.url = url
        local = _local(url)
        self._path = None if local is None else local.expanduser().resolve()

    def check_writable(self) -> None:
        """Create the directory if needed and write, fsync and remove a probe file in it:
        ConfigError naming the target and the reason when that fails (before any change)."""
        probe = f".eventstore-actors-probe-{uuid.uuid4().hex}"
        try:
            if self._path is not None:
                self._path.mkdir(parents=True, exist_ok=True)
                _write_new(self._path / probe, b"probe", 0o600)
                os.unlink(self._path / probe)
            else:
                fs, root = _fs(self.url)
                fs.makedirs(root, exist_ok=True)
                with fs.open(f"{root.rstrip('/')}/{probe}", "wb") as f:
                    f.write(b"probe")
                fs.rm(f"{root.rstrip('/')}/{probe}")
        except ConfigError:
            raise
        except Exception as exc:  # OSError locally; any error of an fsspec backend
            why = getattr(exc, "strerror", None) or type(exc).__name__
            shown = redact_url(f"{self.url!r} is not writable: {why}", self.url)
            raise ConfigError(f"archive target {shown}") from None

    def remove_unlisted(self, done: int) -> int:
        """Remove what a crashed archive of this schema left here: files of ranges after
        `done` (the end of the manifest's ranges: no listed file starts after it) and
        temporary files. Run under the schema's archive lock (no other archive of it runs);
        a target directory belongs to one store (`owner.claim`, before this). How many were
        removed."""
        names = self._names()
        gone = [
            n
            for n in names
            if _TEMP.match(n) or ((m := _NAME.match(n)) is not None and int(m.group(1)) > done)
        ]
        for name in gone:
            if self._path is not None:
                (self._path / name).unlink(missing_ok=True)
            else:
                fs, root = _fs(self.url)
                fs.rm(f"{root.rstrip('/')}/{name}")
        return len(gone)

    def _names(self) -> list[str]:
        if self._path is not None:
            return [p.name for p in self._path.iterdir()] if self._path.is_dir() else []
        fs, root = _fs(self.url)
        if not fs.exists(root):
            return []
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]

    def archive_files(self) -> list[str]:
        """The names of the archive files here (complete ones, listed in a manifest or not)."""
        return sorted(n for n in self._names() if _NAME.match(n))

    def url_of(self, name: str) -> str:
        """The URL that `write` returns (and the manifest holds) for the file `name`."""
        if self._path is not None:
            return str(self._path / name)
        return f"{self.url.rstrip('/')}/{name}"

    def read_small(self, name: str) -> bytes | None:
        """The bytes of the small file `name` here, or None when there is none."""
        if self._path is not None:
            try:
                return (self._path / name).read_bytes()
            except (FileNotFoundError, NotADirectoryError):  # no file, or no directory yet
                return None
        fs, root = _fs(self.url)
        try:
            return bytes(fs.cat_file(f"{root.rstrip('/')}/{name}"))
        except FileNotFoundError:
            return None

    def create_once(self, name: str, data: bytes) -> bool:
        """Create the small file `name` here holding `data`, durably, unless it exists: False
        then (left as it is). Atomic for a local directory (written aside and hard-linked in
        place); for an fsspec URL a file that appears meanwhile is replaced (the caller reads
        it back)."""
        if self._path is not None:
            self._path.mkdir(parents=True, exist_ok=True)
            temp = self._path / f".{name}.{uuid.uuid4().hex}.tmp"
            try:
                _write_new(temp, data, 0o644)
                os.link(temp, self._path / name)
            except FileExistsError:
                return False
            finally:
                temp.unlink(missing_ok=True)
            _fsync_dir(self._path)
            return True
        fs, root = _fs(self.url)
        path = f"{root.rstrip('/')}/{name}"
        if fs.exists(path):
            return False
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(path, data)
        return True

    def write(self, batches: Iterable[list[Any]], name: str) -> tuple[str, int]:
        """Write one Parquet file `name` from row batches (one row group each), durably:
        to a temporary name, fsynced, renamed, the directory fsynced. Its URL (an absolute
        path for a local directory) and the number of rows written; no rows: no file, ("", 0)."""
        pa, pq = pyarrow_modules()
        arrow_schema = schema()
        tmp = f".{name}.{uuid.uuid4().hex}.tmp"
        count = 0
        if self._path is not None:
            final, temp = self._path / name, self._path / tmp
            with open(temp, "wb") as sink:
                try:
                    count = _write(pa, pq, arrow_schema, sink, batches)
                    sink.flush()
                    os.fsync(sink.fileno())
                except BaseException:
                    temp.unlink(missing_ok=True)
                    raise
            if count == 0:
                temp.unlink(missing_ok=True)
                return "", 0
            os.replace(temp, final)
            _fsync_dir(self._path)
            return str(final), count
        fs, root = _fs(self.url)
        remote_tmp, remote = f"{root.rstrip('/')}/{tmp}", f"{root.rstrip('/')}/{name}"
        with fs.open(remote_tmp, "wb") as sink:
            count = _write(pa, pq, arrow_schema, sink, batches)
        if count == 0:
            fs.rm(remote_tmp)
            return "", 0
        fs.mv(remote_tmp, remote)
        return f"{self.url.rstrip('/')}/{name}", count


#: An archive file's name (see writer.py): its first and last event_id.
_NAME = re.compile(r"^events-(\d{20})-(\d{20})\.parquet$")
#: A file being written (renamed to its name once complete).
_TEMP = re.compile(r"^\.events-\d{20}-\d{20}\.parquet\.[0-9a-f]{32}\.tmp$")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create the file `path` (FileExistsError if it is there) holding `data`, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make the entries just created or renamed in the directory `path` durable."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write(pa: Any, pq: Any, arrow_schema: Any, sink: Any, batches: Iterable[list[Any]]) -> int:
    count = 0
    writer = None
    try:
        for rows in batches:
            columns: list[Any] = list(zip(*rows, strict=True))
            columns[3] = [str(u) for u in columns[3]]  # event_uuid as text
            table = pa.Table.from_arrays(
                [
                    pa.array(list(c), type=f.type)
                    for c, f in zip(columns, arrow_schema, strict=True)
                ],
                schema=arrow_schema,
            )
            if writer is None:
                writer = pq.ParquetWriter(sink, arrow_schema, compression="zstd")
            writer.write_table(table, row_group_size=len(rows))
            count += len(rows)
    finally:
        if writer is not None:
            writer.close()
    return count
