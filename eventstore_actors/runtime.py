"""The running parts of one store: settings, connections, supervisor, writer, publisher.

`start` resolves the settings, checks the schema, opens the pool and starts the supervised
writer and publisher; `Runtime.stop` ends them all in order, and `lifetime` stops a store its
application forgot at interpreter exit. The services (`writes`, `reads`, `stream_admin`,
`snapshots`, `subscriptions.service`) work on a `Runtime`; nothing here knows them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import pykka

from . import hints, lifetime, logs
from .actors.registry import Registry
from .actors.supervised import on_own_thread
from .actors.supervisor import ChildSpec, Supervisor
from .actors.ticker import Ticker
from .config import Settings, redact, resolve_dsn, resolve_session_dsn, scrub
from .errors import ConfigError, StoreUnavailableError
from .lifecycle import scavenger
from .lifecycle.encryption import Encryption, SealedSerializer, keyring_of
from .lifecycle.forgetting import attach_keyring
from .lifecycle.masterkey import check_master_key
from .metrics import Metrics, metric_key
from .notifications.listener import Listening
from .notifications.publisher import PublisherActor
from .options import StartOptions
from .serialization import JsonSerializer
from .storage import schema as schema_ops
from .storage.connection import check_session_dsn, connect
from .storage.pool import ReadPool
from .storage.replica import LsnTracker, ReplicaReads
from .writer import Leader, WriterActor

__all__ = ["Runtime", "settings_from", "start", "stop_actor"]

log = logs.get_logger("eventstore_actors.store")

_T = TypeVar("_T")


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Stoppable)

#: The seed's keys, merged over the DSN (the other start options are Settings fields).
_SEED = ("username", "password", "database", "hostname", "port")


def settings_from(dsn: str | None, options: StartOptions) -> Settings:
    """The Settings of `EventStore.start(dsn, **options)` (every option given)."""
    given: dict[str, Any] = dict(options)
    seed = {key: given.pop(key) for key in _SEED}
    serializer = given.pop("serializer")
    if serializer is None:
        serializer = JsonSerializer()
    encryption = given.pop("encryption", None)
    if encryption is not None:
        if not isinstance(encryption, Encryption):
            raise ConfigError("encryption must be an Encryption or None")
        # Checks the master key's length now (ConfigError; `start` then checks that it opens
        # the schema's data keys); events and snapshots with a subject are sealed and opened
        # by the store's keyring, carried by its serializer.
        serializer = SealedSerializer(serializer, encryption.keyring())
    return Settings(
        dsn=resolve_dsn(dsn, **seed),
        serializer=serializer,
        **{**given, "session_dsn": resolve_session_dsn(given["session_dsn"])},
    )


def start(dsn: str | None, options: StartOptions, make: Callable[[Runtime], _S]) -> _S:
    """Check the database, open the pool, make the store (`make`) and start its actors; a
    failure stops what was started."""
    settings = settings_from(dsn, options)
    logs.quiet_third_party()  # psycopg.pool, unless the application set its level
    _check_installed(settings)
    pool = ReadPool(settings)
    pool.open()
    keyring = keyring_of(settings.serializer)
    if keyring is not None:
        attach_keyring(keyring, pool)
    runtime = Runtime(settings, pool)
    store = make(runtime)
    lifetime.track(store)  # stopped at interpreter exit if the application forgets to
    try:
        runtime.start_children()
    except BaseException:
        store.stop()
        raise
    runtime.log.info(
        "event store started",
        dsn=redact(settings.dsn),
        replica=None if settings.replica_dsn is None else redact(settings.replica_dsn),
        **({"session_dsn": redact(settings.session_dsn)} if settings.session_dsn else {}),
    )
    return store


class Runtime:
    """One store's settings, pools, registry, supervisor and ticker."""

    def __init__(self, settings: Settings, pool: ReadPool) -> None:
        self.settings = settings
        self.pool = pool
        # Reads go to `reads`: the pool itself, or with replica_dsn the standby (see
        # storage/replica.py), which then needs the position of every write (`tracker`).
        self.tracker: LsnTracker | None = None
        self.replica: ReplicaReads | None = None
        self.reads: ReadPool | ReplicaReads = pool
        if settings.replica_dsn is not None:
            self.tracker = LsnTracker()
            self.replica = self.reads = ReplicaReads(settings, pool, self.tracker)
        self.origin = uuid.uuid4().hex  # names this instance's commits in notifications
        self.registry = Registry(Metrics(settings.metrics))
        #: Lets a caller commit on the writer's connection while the writer is idle.
        self.leader = Leader()
        #: Whether the store listens yet (from its first subscription on, or its start).
        self.listening = Listening(wanted=keyring_of(settings.serializer) is not None)
        pool.metrics = self.registry.metrics
        self.supervisor = Supervisor.start(
            self.registry, settings.max_restarts, settings.restart_window
        )
        self.ticker = Ticker(self.registry, "subscription:", settings.tick_interval)
        self.scavenger_ticker = Ticker(self.registry, scavenger.CHILD_ID, scavenger.INTERVAL)
        self._stop_lock = threading.Lock()
        self.stopped = False
        self.log = log.bind(schema=settings.schema)

    def start_children(self) -> None:
        """The writer and the publisher (critical: the store stops if they give up), the
        retention scavenger (restarted when it fails), then the tickers."""
        settings, registry, origin, tracker, leader, listening = (
            self.settings,
            self.registry,
            self.origin,
            self.tracker,
            self.leader,
            self.listening,
        )
        self.ask_supervisor(
            "start_child",
            ChildSpec(
                "writer",
                lambda sup, cid, _: WriterActor.start(
                    sup, cid, settings, registry, origin, leader, tracker
                ),
                critical=True,
            ),
        )
        self.ask_supervisor(
            "start_child",
            ChildSpec(
                "publisher",
                lambda sup, cid, _: PublisherActor.start(
                    sup, cid, settings, registry, origin, listening
                ),
                critical=True,
            ),
        )
        self.ask_supervisor(
            "start_child",
            ChildSpec(
                scavenger.CHILD_ID,
                lambda sup, cid, _: scavenger.ScavengerActor.start(sup, cid, settings, registry),
            ),
        )
        self.ticker.start()
        self.scavenger_ticker.start()
        if keyring_of(settings.serializer) is not None:
            # Its key cache is trusted for hand-outs once the listener listens (see
            # lifecycle/eviction.py): waited for here, as a subscribe waits for it.
            listening.want(settings.connect_timeout)

    def stop(self, owner: _Stoppable, leave: Callable[[], Callable[[], None]]) -> None:
        """Stop every actor and close every connection, once. `leave()` runs first (before
        the registry closes) and returns what to run once the actors are stopped, before
        the pool closes."""
        with self._stop_lock:
            if self.stopped:
                return
            self.stopped = True
        lifetime.forget(owner)
        then = leave()
        self.registry.close("stopped by store.stop()")
        self.ticker.stop()
        self.scavenger_ticker.stop()
        try:
            refs = self.supervisor.proxy().begin_shutdown().get(timeout=10.0)
        except (pykka.ActorDeadError, pykka.Timeout):
            refs = []
        for ref in refs:
            stop_actor(ref)
        stop_actor(self.supervisor)
        if self.replica is not None:
            self.replica.close()
        then()
        self.pool.close()
        self.log.info("event store stopped")

    def ask_supervisor(self, method: str, *args: Any) -> Any:
        """Call the supervisor (StoreUnavailableError once stopped or if it is not running)."""
        self.refuse_stopped()
        try:
            return getattr(self.supervisor.proxy(), method)(*args).get(
                timeout=self.settings.call_timeout
            )
        except (pykka.ActorDeadError, pykka.Timeout):
            raise StoreUnavailableError("the event store's supervisor is not running") from None

    def refuse_stopped(self) -> None:
        """StoreUnavailableError once the store is stopped."""
        if self.registry.closed_reason is not None:
            raise StoreUnavailableError(
                f"the event store is stopped: {self.registry.closed_reason}"
            )

    def written(self, work: Callable[[Any], _T]) -> Callable[[Any], _T]:
        """`work`, a write through the pool, with its WAL position recorded for replica reads
        (read-your-writes); `work` itself without replica_dsn."""
        return work if self.tracker is None else self.tracker.tracked(work)

    def metrics(self, lags: Callable[[], Iterable[Any]]) -> dict[str, float]:
        """The registry's metrics, plus the subscription lags of `lags()` (SubscriptionInfo)."""
        out = self.registry.metrics.snapshot()
        if not out:
            return out
        out["subscriptions_running"] = float(len(self.registry.members("subscription:")))
        if self.replica is not None:
            out["replica_reads_total"] = float(self.replica.replica_reads)
            out["replica_primary_reads_total"] = float(self.replica.primary_reads)
        try:
            found = lags()
        except StoreUnavailableError:
            out["subscription_lag_error"] = 1.0
            return out
        out["subscription_lag_error"] = 0.0
        for info in found:
            labels = {"stream": info.stream_uuid, "name": info.subscription_name}
            if info.partition is not None:
                labels["partition"] = str(info.partition)
            out[metric_key("subscription_lag", **labels)] = float(info.lag)
            out[metric_key("subscription_lag_seconds", **labels)] = info.lag_seconds or 0.0
            out[metric_key("subscription_stalled", **labels)] = float(info.state == "stalled")
        out["subscriptions_stalled"] = float(sum(i.state == "stalled" for i in found))
        out["subscriptions_stopped"] = float(sum(i.state == "stopped" for i in found))
        return out


def stop_actor(ref: pykka.ActorRef[Any]) -> None:
    """Stop `ref` and wait for it, unless called from its own thread (a subscriber's tell()
    unsubscribing or stopping the store): then it stops once the current message is done."""
    try:
        if on_own_thread(ref):
            ref.stop(block=False)
        else:
            ref.stop(block=True, timeout=10.0)
    except (pykka.ActorDeadError, pykka.Timeout):
        pass


def _check_installed(settings: Settings) -> None:
    """Fail fast: the database must answer and hold this release's schema, and a master key
    must open the schema's data keys (lifecycle/masterkey.py)."""
    try:
        conn = connect(settings)
    except StoreUnavailableError as exc:
        message = scrub(str(exc), settings.dsn)
        hint = hints.missing_database(message, settings.dsn, settings.schema)
        raise ConfigError(hint or message) from None
    with conn:
        version = schema_ops.installed_version(conn, settings.schema)
        if settings.pooled:
            check_session_dsn(settings, conn)
        if version is None:
            raise ConfigError(hints.not_initialised(settings.schema, settings.dsn))
        if version < schema_ops.SCHEMA_VERSION:
            raise ConfigError(schema_ops.outdated(settings.schema, version))
        if version > schema_ops.SCHEMA_VERSION:
            raise ConfigError(schema_ops.too_new(settings.schema, version))
        keyring = keyring_of(settings.serializer)
        if keyring is not None:
            check_master_key(conn, settings.schema, keyring)
