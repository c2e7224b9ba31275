"""Settings and the one place a DSN is resolved: argument, seed keys, EVENTSTORE_DSN, embedded."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from dataclasses import dataclass, field, fields, replace
from typing import Any

import psycopg.conninfo

from .errors import ConfigError
from .serialization import JsonSerializer, Serializer

__all__ = [
    "MAX_IDENTIFIER_BYTES",
    "SEED_KEYS",
    "Settings",
    "check_url_credentials",
    "redact",
    "redact_url",
    "resolve_dsn",
    "resolve_session_dsn",
    "scrub",
    "validate_schema",
]

#: The Elixir seed's connection keys and their libpq names.
SEED_KEYS = {
    "username": "user",
    "password": "password",
    "database": "dbname",
    "hostname": "host",
    "port": "port",
}

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: PostgreSQL identifiers, channel names included, hold at most 63 bytes (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63


def validate_schema(schema: str) -> str:
    """A schema name we can quote safely and use in channel and lock names."""
    if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
        raise ConfigError(
            f"invalid schema name {schema!r}: use lowercase letters, digits and underscores "
            "(at most 63, not starting with a digit)"
        )
    if schema.startswith("pg_") or schema == "information_schema":
        raise ConfigError(
            f"invalid schema name {schema!r}: names starting with 'pg_' and "
            "'information_schema' are reserved by PostgreSQL"
        )
    return schema


def _channel(schema: str, suffix: str) -> str:
    """``eventstore_actors.<schema>.<suffix>`` when it fits in an identifier, else a short
    stable hash of the schema stands in for it (a readable prefix kept for pg_stat_activity).

    The long form is what earlier releases used, so processes of both share a channel
    wherever it fits; '~' cannot occur in a schema name, so a hashed name never equals the
    plain name of another schema.
    """
    plain = f"eventstore_actors.{schema}.{suffix}"
    if len(plain.encode()) <= MAX_IDENTIFIER_BYTES:
        return plain
    digest = hashlib.blake2b(schema.encode(), digest_size=8).hexdigest()
    return f"eventstore_actors.{schema[:12]}~{digest}.{suffix}"


#: Connection parameters whose values are secrets.
_SECRET_KEYS = ("password", "sslpassword")
#: URI schemes libpq understands.
_SCHEMES = ("postgresql", "postgres")
_SCHEME_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://")
#: The password of a URI's authority: scheme://user:PASSWORD@host (up to the last '@').
_URI_PASSWORD_RE = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*:([^/?#]*)@")
#: password=VALUE in key/value form or a URI query ('quoted values' included).
_KEY_PASSWORD_RE = re.compile(r"(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)", re.I)
#: A URI's user:PASSWORD@ anywhere in a text (a URI inside another parameter's value).
_EMBEDDED_USERINFO_RE = re.compile(r"(://[^:/@?#\s]*:)([^/?#\s]*)@")


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***``, safe to print or log."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    for key, value in params.items():
        if key in _SECRET_KEYS:
            params[key] = "***"
        elif isinstance(value, str):
            # A password inside another value: "dbname=x?password=..." (a URI's query appended
            # to a key/value DSN), a URI given as dbname, options='-c password=...'.
            params[key] = _hide_inner_passwords(value)
    return psycopg.conninfo.make_conninfo("", **params)


def _hide_value(found: re.Match[str]) -> str:
    """password=VALUE with VALUE as ***; one already hidden is kept whole (an unquoted match
    also takes the quote that closes a quoted DSN around it: 'host=h password=***')."""
    if found.group(1).rstrip("'") == "***":
        return found.group(0)
    return found.group(0)[: found.start(1) - found.start(0)] + "***"


def _hide_inner_passwords(text: str) -> str:
    text = _EMBEDDED_USERINFO_RE.sub(lambda m: f"{m.group(1)}***@", text)
    return _KEY_PASSWORD_RE.sub(_hide_value, text)


def _secrets(dsn: str) -> set[str]:
    """Every form in which `dsn`'s passwords may show up in a message (even an unparseable DSN)."""
    found: set[str] = set()
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        found.update(str(params[k]) for k in _SECRET_KEYS if params.get(k))
    except psycopg.ProgrammingError:
        pass
    match = _URI_PASSWORD_RE.match(dsn)
    if match and match.group(1):
        found.add(match.group(1))
    found.update(m.group(1) for m in _KEY_PASSWORD_RE.finditer(dsn))
    found.update(m.group(2) for m in _EMBEDDED_USERINFO_RE.finditer(dsn))
    for secret in list(found):
        found.add(secret.strip("'"))
        found.add(urllib.parse.unquote(secret))
        found.add(urllib.parse.quote(secret, safe=""))
    return {s for s in found if s}


def scrub(text: str, *dsns: str | None) -> str:
    """`text` with the passwords of `dsns` (and any password=... it holds) replaced by ``***``.

    For messages that may echo a DSN: libpq quotes a DSN it cannot parse in full.
    """
    for dsn in dsns:
        if not dsn:
            continue
        for secret in sorted(_secrets(dsn), key=len, reverse=True):
            text = text.replace(secret, "***")
    return _KEY_PASSWORD_RE.sub(_hide_value, text)


#: A URL's query parameter (name=value), anywhere in a text (fsspec chains URLs with '::').
_QUERY_PARAM_RE = re.compile(r"([?&;])([^=&;#\s]*)=([^&;#\s]*)")
#: Query parameter names whose values are secrets: password=, token=, sig= (a signed URL's
#: signature), X-Amz-Credential=, access_key=, secret= ...
_SECRET_NAME_RE = re.compile(r"pass|pwd|secret|token|sig|cred|key|auth", re.I)


def _url_secrets(url: str) -> set[str]:
    """The secrets `url` carries: the password of each user:password@ in it (a chained URL
    has several), the values of its query parameters named like secrets; each also decoded."""
    found = {m.group(2) for m in _EMBEDDED_USERINFO_RE.finditer(url)}
    if "://" in url:  # a local path has no query: '?' is part of a directory's name
        found.update(
            m.group(3) for m in _QUERY_PARAM_RE.finditer(url) if _SECRET_NAME_RE.search(m.group(2))
        )
    found.update([urllib.parse.unquote(s) for s in found])
    return {s for s in found if s}


def redact_url(text: str, url: str | None = None) -> str:
    """`text` (a URL, or a message naming URLs) with the password of each user:password@ in it
    and the values of query parameters named like secrets replaced by ``***``; with `url`,
    also wherever that URL's secrets show up in other forms (a backend's own message)."""
    text = _EMBEDDED_USERINFO_RE.sub(
        lambda m: f"{m.group(1)}***@" if m.group(2) else m.group(0), text
    )
    text = _QUERY_PARAM_RE.sub(
        lambda m: (
            f"{m.group(1)}{m.group(2)}=***"
            if m.group(3) and _SECRET_NAME_RE.search(m.group(2))
            else m.group(0)
        ),
        text,
    )
    for secret in sorted(_url_secrets(url or ""), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def check_url_credentials(url: str, what: str) -> None:
    """ConfigError when `url` carries a secret (see `_url_secrets`): an archive target's URL
    is stored in the schema's manifest and shown wherever its files are named."""
    if _url_secrets(url):
        raise ConfigError(
            f"{what} {redact_url(url)!r} carries a password (in user:password@ or its query): "
            "it would be stored in the schema's manifest and shown wherever the archive's files "
            "are named; leave it out of the URL and give it to fsspec through its own "
            "configuration (the filesystem's usual credentials, such as AWS_* variables or "
            "~/.aws for s3://; FSSPEC_<PROTOCOL>_<OPTION> environment variables such as "
            "FSSPEC_SFTP_PASSWORD; or a file in fsspec's config directory)"
        )


def _check_scheme(dsn: str) -> None:
    """A URI for another database (mysql://, sqlite://) is a clear ConfigError, not libpq's
    'missing "=" after ...' (which would also quote the whole DSN, password included)."""
    match = _SCHEME_RE.match(dsn)
    if match and match.group(1).lower() not in _SCHEMES:
        raise ConfigError(
            f"unsupported DSN scheme {match.group(1)!r}: eventstore-actors stores events in "
            "PostgreSQL; give a postgresql:// URI (postgresql://user@host:5432/dbname) or "
            "libpq key=value pairs"
        )


def resolve_dsn(dsn: str | None = None, **seed_keys: Any) -> str:
    """The DSN to use: `dsn`, else EVENTSTORE_DSN, else the embedded server.

    Seed keys (`username`, `password`, `database`, `hostname`, `port`) are merged over it.
    """
    unknown = set(seed_keys) - set(SEED_KEYS)
    if unknown:
        raise ConfigError(f"unknown connection option(s): {', '.join(sorted(unknown))}")
    for key, value in seed_keys.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise ConfigError(f"{key} must be a str, got {type(value).__qualname__}")
    given = {SEED_KEYS[k]: str(v) for k, v in seed_keys.items() if v is not None}
    if dsn is None and given.keys() & {"host", "dbname"}:
        dsn = ""
    if dsn is None:
        dsn = os.environ.get("EVENTSTORE_DSN") or None
    if dsn is None:
        from .embedded import embedded_dsn

        dsn = embedded_dsn()
    if not isinstance(dsn, str):
        raise ConfigError(f"dsn must be a string, got {type(dsn).__qualname__}")
    _check_scheme(dsn)
    try:
        return psycopg.conninfo.make_conninfo(dsn, **given)
    except psycopg.ProgrammingError as exc:
        why = scrub(str(exc), dsn)
    # Raised outside the handler: libpq's error may quote the password ("invalid
    # percent-encoded token"), and `from None` would still keep it as __context__.
    raise ConfigError(f"invalid DSN: {why}")


def _shown(name: str, value: Any) -> str:
    """A Settings field for repr: DSNs and the archive URL without their passwords."""
    if name in ("dsn", "session_dsn", "replica_dsn") and isinstance(value, str):
        return repr(redact(value))
    if name == "archive" and isinstance(value, str):
        return repr(redact_url(value))
    return repr(value)


def resolve_session_dsn(session_dsn: str | None) -> str | None:
    """`session_dsn` checked like a DSN (no seed keys, no fallback: None stays None)."""
    if session_dsn is None:
        return None
    if not isinstance(session_dsn, str):
        raise ConfigError(f"session_dsn must be a string, got {type(session_dsn).__qualname__}")
    try:
        return resolve_dsn(session_dsn)
    except ConfigError as exc:
        raise ConfigError(f"session_dsn: {exc}") from None


@dataclass(frozen=True)
class Settings:
    """Everything a running store needs; built once by EventStore.start."""

    dsn: str
    schema: str = "public"
    pool_size: int = 10
    pool_overflow: int = 0
    serializer: Serializer = field(default_factory=JsonSerializer)
    subscription_max_size: int = 1000
    #: Most events one group-commit transaction takes from the writer's queue.
    max_batch_events: int = 10_000
    #: Seconds a caller waits for an actor before StoreUnavailableError.
    call_timeout: float = 30.0
    #: Restart intensity: more than `max_restarts` within `restart_window` seconds stops the store.
    max_restarts: int = 3
    restart_window: float = 5.0
    #: Seconds between health checks of subscribers and lock connections.
    tick_interval: float = 0.2
    #: Shown in pg_stat_activity for every connection of the store.
    application_name: str = "eventstore-actors"
    #: Seconds to establish a connection (TCP, TLS and startup) before giving up; a server
    #: that accepts and never answers fails `start` with ConfigError after this long.
    connect_timeout: float = 5.0
    #: Seconds of silence after which a dedicated connection (listener, subscription locks)
    #: is probed, and seconds the probe may take before the connection is given up as dead.
    health_interval: float = 5.0
    health_timeout: float = 5.0
    #: Seconds one database call (an append, a catch-up read, a checkpoint write, a pool
    #: call: a read, delete, link...) may take before the connection is given up as dead: a
    #: server that still acknowledges packets but never answers would otherwise block for ever.
    io_timeout: float = 15.0
    #: Whether `delete_stream(..., hard=True)` may erase events for good (GDPR erasure);
    #: off by default, so that no call can destroy history by accident.
    enable_hard_deletes: bool = False
    #: A hot standby of `dsn` for reads, streams and subscription catch-up (None: all on the
    #: primary); reads still see this store's own appends (see `replica_max_lag`).
    replica_dsn: str | None = None
    #: Seconds a replica read waits for the standby to replay this store's last write before
    #: it reads from the primary instead.
    replica_max_lag: float = 5.0
    #: Whether the store records `store.metrics()` (counters and latency summaries).
    metrics: bool = True
    #: A direct (or session-pooled) connection for what needs a session of its own: LISTEN
    #: and the subscriptions' advisory locks. When given, `dsn` may point at PgBouncer in
    #: transaction pooling mode: the store then keeps no session state on `dsn` connections
    #: (no prepared statements, schema-qualified SQL, no startup `options`).
    session_dsn: str | None = None
    #: Whether all the store's subscriptions share one session connection (a `LockHub`) for
    #: their advisory locks and checkpoint writes, instead of one dedicated connection each;
    #: their catch-up reads then use the read pool. On by default, so a subscription costs
    #: memory, not a connection; False gives each one its own (see docs/scale-out.md).
    shared_lock_session: bool = True
    #: Where `store.archive()` writes Parquet files when it is given no `target`: a directory
    #: or an fsspec URL (file://, s3://...). Archived events are read back whether or not it
    #: is set (the manifest in the schema says where they are).
    archive: str | None = None

    def __repr__(self) -> str:
        """Like the dataclass repr, with the DSN's password hidden."""
        shown = ", ".join(f"{f.name}={_shown(f.name, getattr(self, f.name))}" for f in fields(self))
        return f"{type(self).__name__}({shown})"

    def __post_init__(self) -> None:
        validate_schema(self.schema)
        if self.archive is not None and (not isinstance(self.archive, str) or not self.archive):
            raise ConfigError(f"archive must be a directory or URL (str), got {self.archive!r}")
        if self.archive is not None:
            check_url_credentials(self.archive, "archive")
        if not isinstance(self.shared_lock_session, bool):
            raise ConfigError(
                f"shared_lock_session must be a bool, got {self.shared_lock_session!r}"
            )
        for name in ("pool_size", "subscription_max_size", "max_batch_events", "max_restarts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        overflow = self.pool_overflow
        if not isinstance(overflow, int) or isinstance(overflow, bool) or overflow < 0:
            raise ConfigError(f"pool_overflow must be an int >= 0, got {self.pool_overflow!r}")
        for name in (
            "connect_timeout",
            "health_interval",
            "health_timeout",
            "io_timeout",
            "call_timeout",
            "restart_window",
            "tick_interval",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
        if not isinstance(self.application_name, str):
            raise ConfigError(
                f"application_name must be a str, got {type(self.application_name).__qualname__}"
            )
        if not isinstance(self.enable_hard_deletes, bool):
            raise ConfigError(
                f"enable_hard_deletes must be True or False, got {self.enable_hard_deletes!r}"
            )
        if self.replica_dsn is not None:
            if not isinstance(self.replica_dsn, str):
                raise ConfigError(
                    f"replica_dsn must be a string, got {type(self.replica_dsn).__qualname__}"
                )
            _check_scheme(self.replica_dsn)
            why = None
            try:
                psycopg.conninfo.conninfo_to_dict(self.replica_dsn)
            except psycopg.ProgrammingError as exc:
                why = scrub(str(exc), self.replica_dsn)
            if why is not None:  # outside the handler: no __context__ quoting the password
                raise ConfigError(f"invalid replica_dsn: {why}")
        lag = self.replica_max_lag
        if not isinstance(lag, (int, float)) or isinstance(lag, bool) or not 0 <= lag < 1e9:
            raise ConfigError(f"replica_max_lag must be a number of seconds >= 0, got {lag!r}")
        if not isinstance(self.metrics, bool):
            raise ConfigError(f"metrics must be True or False, got {self.metrics!r}")
        if self.session_dsn is not None and not isinstance(self.session_dsn, str):
            raise ConfigError(
                f"session_dsn must be a str or None, got {type(self.session_dsn).__qualname__}"
            )
        if not isinstance(self.serializer, Serializer):
            raise ConfigError("serializer must have serialize(term) and deserialize(data, type)")

    @property
    def pooled(self) -> bool:
        """Whether `dsn` may be a transaction pooler (a `session_dsn` was given)."""
        return self.session_dsn is not None

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this schema's store (at most 63 bytes)."""
        return _channel(self.schema, "events")

    @property
    def control_channel(self) -> str:
        """The channel that wakes this schema's listeners for shutdown (at most 63 bytes)."""
        return _channel(self.schema, "events.control")

    @property
    def forgets_channel(self) -> str:
        """Where the listeners answer a forget once they evicted their cached keys."""
        return _channel(self.schema, "forgets")

    def probe_channel(self, tag: str) -> str:
        """A listener's own channel (`tag`: 8 hex digits of its instance): the notices it
        sends itself to confirm its key cache is current (lifecycle/eviction.py)."""
        return _channel(self.schema, f"probe.{tag}")

    def for_replica(self) -> Settings:
        """These settings with the replica as `dsn` (for its connections)."""
        assert self.replica_dsn is not None
        return replace(self, dsn=self.replica_dsn, replica_dsn=None)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for every connection of the store.

        Autocommit; search_path on the schema, then pg_temp (so that a temporary table never
        stands in for one of the store's); READ COMMITTED whatever the role, database or
        DSN default (the append and checkpoint logic relies on it, and a serializable default
        made concurrent stores fail); no idle-session timeout (it would silently end the
        listener and the subscription locks); a connect timeout and TCP keepalives, so a
        vanished server or a half-open socket is noticed instead of hanging for ever; and the
        same keepalives and user timeout on the server's side of the socket (startup options,
        ignored on a Unix socket), so a vanished client's backend is ended, with the locks it
        holds, within seconds rather than the server's default two hours. Values the DSN sets
        itself win, except the options the store depends on.
        """
        given = psycopg.conninfo.conninfo_to_dict(self.dsn)
        defaults = {
            "connect_timeout": str(max(1, round(self.connect_timeout))),
            "keepalives": "1",
            "keepalives_idle": "10",
            "keepalives_interval": "3",
            "keepalives_count": "3",
            "tcp_user_timeout": str(int(self.health_timeout * 1000 * 2)),
        }
        # The client's values (the DSN's own or ours) on the server's side too: before the
        # DSN's own options, so that a setting the DSN gives itself wins.
        client = {**defaults, **{k: str(v).strip() for k, v in given.items() if k in defaults}}
        mirrored = {"tcp_user_timeout": "tcp_user_timeout"}  # server setting: client key
        if client["keepalives"] != "0":
            for key in ("keepalives_idle", "keepalives_interval", "keepalives_count"):
                mirrored[f"tcp_{key}"] = key
        server = [
            f"-c {setting}={client[key]}"
            for setting, key in mirrored.items()
            if client[key].isdigit()  # anything else is libpq's to refuse, not the server's
        ]
        # Appended to any options the DSN sets itself (a keyword argument would replace them).
        parts = [
            *server,
            str(given.get("options") or "").strip(),
            f"-c search_path={self.schema},pg_temp",
            "-c TimeZone=UTC",
            r"-c default_transaction_isolation=read\ committed",
            "-c idle_session_timeout=0",
            "-c idle_in_transaction_session_timeout=0",
        ]
        options = " ".join(part for part in parts if part)
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "options": options,
            "application_name": self.application_name,
        }
        for key, value in defaults.items():
            if key not in given:
                kwargs[key] = value
        return kwargs
