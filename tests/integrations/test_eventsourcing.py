"""The `eventsourcing` library's own recorder test cases, run unchanged against this store.

Each case runs in its own schema (the `dsn`/`schema` fixtures); every factory a test builds,
the example application's included, is closed at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("eventsourcing")

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    ProcessRecorder,
    StoredEvent,
    TrackingRecorder,
)

# Imported as modules: names of TestCase classes at module level would be collected as tests.
from eventsourcing.tests import application as cases_app
from eventsourcing.tests import persistence as cases
from eventsourcing.utils import Environment

from eventstore_actors import eventsourcing as module

MODULE = "eventstore_actors.eventsourcing"


class InSchema:
    """Points the module at this test's schema and closes every factory built meanwhile."""

    dsn: str
    env_dsns: dict[str, str]
    schema: str
    factories: list[module.Factory]

    @pytest.fixture(autouse=True)
    def _in_schema(
        self, dsn: str, schema: str, store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[None]:
        self.dsn, self.schema, self.factories = dsn, schema, []
        self.env_dsns = store_env  # in PgBouncer mode: through PgBouncer (see conftest)
        monkeypatch.setenv("PERSISTENCE_MODULE", MODULE)
        for key, value in store_env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("EVENTSTORE_SCHEMA", schema)
        built = self.factories
        init = module.Factory.__init__

        def tracked(factory: module.Factory, *args: Any, **kwargs: Any) -> None:
            init(factory, *args, **kwargs)
            built.append(factory)

        monkeypatch.setattr(module.Factory, "__init__", tracked)
        try:
            yield
        finally:
            for factory in built:
                factory.close()

    def factory(self) -> module.Factory:
        return module.Factory(Environment(env={**self.env_dsns, "EVENTSTORE_SCHEMA": self.schema}))


class TestAggregateRecorder(InSchema, cases.AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.factory().aggregate_recorder()


class TestSnapshotRecorder(InSchema, cases.AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.factory().aggregate_recorder("snapshots")


class TestApplicationRecorder(InSchema, cases.ApplicationRecorderTestCase[ApplicationRecorder]):
    def create_recorder(self) -> ApplicationRecorder:
        return self.factory().application_recorder()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()

    def test_subscribe_concurrent_reading_and_writing(self) -> None:
        """Ported from the library's PostgreSQL module tests: a subscription keeps up with
        a writer, then catches up on what was written before it started."""
        recorder = self.create_recorder()
        num_batches, batch_size = 20, 100
        num_events = num_batches * batch_size

        def read(last_notification_id: int | None) -> int:
            count = 0
            with recorder.subscribe(last_notification_id) as subscription:
                for i, _ in enumerate(subscription):
                    count = i + 1
                    if count == num_events:
                        break
            return count

        def write() -> None:
            for _ in range(num_batches):
                recorder.insert_events(
                    [
                        StoredEvent(self.new_originator_id(), self.INITIAL_VERSION, "t1", b"s1")
                        for _ in range(batch_size)
                    ]
                )

        with ThreadPoolExecutor(max_workers=2) as pool:
            last = recorder.max_notification_id()
            write_job = pool.submit(write)
            read_job = pool.submit(read, last)
            write_job.result(timeout=60)
            assert read_job.result(timeout=60) == num_events

            last = recorder.max_notification_id()
            pool.submit(write).result(timeout=60)
            assert pool.submit(read, last).result(timeout=60) == num_events


class TestTrackingRecorder(InSchema, cases.TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return self.factory().tracking_recorder()


class TestProcessRecorder(InSchema, cases.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.factory().process_recorder()


class TestNonInterleavingNotificationIDs(InSchema, cases.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.factory().application_recorder()


class TrackingRecorderSubclass(module.EventStoreTrackingRecorder):
    pass


class TestInfrastructureFactory(InSchema, cases.InfrastructureFactoryTestCase[module.Factory]):
    def setUp(self) -> None:
        self.env = Environment("TestCase")
        self.env["PERSISTENCE_MODULE"] = MODULE
        for key, value in self.env_dsns.items():
            self.env[key] = value
        self.env["EVENTSTORE_SCHEMA"] = self.schema
        super().setUp()

    def expected_factory_class(self) -> type[module.Factory]:
        return module.Factory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return module.EventStoreAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return module.EventStoreApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return module.EventStoreTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return TrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return module.EventStoreProcessRecorder


class TestExampleApplication(InSchema, cases_app.ExampleApplicationTestCase):
    expected_factory_topic = f"{MODULE}:Factory"


# The module's own checks, beyond the library's cases ---------------------------------------


@pytest.fixture
def es_factory(store_env: dict[str, str], schema: str) -> Iterator[module.Factory]:
    factory = module.Factory(Environment(env={**store_env, "EVENTSTORE_SCHEMA": schema}))
    try:
        yield factory
    finally:
        factory.close()


def test_aggregate_is_a_stream_and_notification_ids_are_event_ids(
    es_factory: module.Factory,
) -> None:
    from uuid import uuid4

    recorder = es_factory.application_recorder()
    a, b = uuid4(), uuid4()
    ids = recorder.insert_events(
        [
            StoredEvent(a, 1, "t1", b"x"),
            StoredEvent(b, 1, "t2", b"y"),
            StoredEvent(a, 2, "t1", b"z"),
        ]
    )
    store = es_factory.datastore.store
    by_id = {e.event_id: e for e in store.read_all_streams_forward()}
    assert ids is not None and sorted(ids) == sorted(by_id)
    assert [by_id[i].stream_uuid for i in ids] == [str(a), str(b), str(a)]
    assert [e.stream_version for e in store.read_stream_forward(str(a))] == [1, 2]
    assert store.stream_info("$all").stream_version == recorder.max_notification_id() == 3
    assert [n.id for n in recorder.select_notifications(1, 10, topics=["t2"])] == [ids[1]]
    assert [n.id for n in recorder.select_notifications(1, 10, stop=ids[0])] == [1]


def test_tracking_is_not_recorded_when_its_events_conflict(es_factory: module.Factory) -> None:
    from uuid import uuid4

    from eventsourcing.persistence import IntegrityError, Tracking

    recorder = es_factory.process_recorder()
    a = uuid4()
    recorder.insert_events([StoredEvent(a, 1, "t", b"x")], tracking=Tracking("up", 1))
    with pytest.raises(IntegrityError):
        recorder.insert_events([StoredEvent(a, 1, "t", b"again")], tracking=Tracking("up", 2))
    assert recorder.max_tracking_id("up") == 1
    assert len(recorder.select_events(a)) == 1


def test_aggregate_numbered_from_zero_with_tracking(es_factory: module.Factory) -> None:
    """A stream whose first originator_version is 0: later inserts find its offset, inside
    the tracking transaction too."""
    from uuid import uuid4

    from eventsourcing.persistence import Tracking

    recorder = es_factory.process_recorder()
    a = uuid4()
    recorder.insert_events([StoredEvent(a, 0, "t", b"0")], tracking=Tracking("up", 1))
    other = es_factory.process_recorder()  # no cached offset
    other.insert_events([StoredEvent(a, 1, "t", b"1")], tracking=Tracking("up", 2))
    recorder.insert_events([StoredEvent(a, 2, "t", b"2")])
    assert [e.originator_version for e in recorder.select_events(a)] == [0, 1, 2]
    assert [e.originator_version for e in recorder.select_events(a, gt=0, lte=1)] == [1]
    assert recorder.max_tracking_id("up") == 2
    assert es_factory.datastore.store.stream_info(str(a)).stream_version == 3


def test_snapshots_keep_their_history(es_factory: module.Factory) -> None:
    from uuid import uuid4

    snapshots = es_factory.aggregate_recorder("snapshots")
    a = uuid4()
    snapshots.insert_events([StoredEvent(a, 3, "s", b"3")])
    snapshots.insert_events([StoredEvent(a, 7, "s", b"7")])
    assert [s.originator_version for s in snapshots.select_events(a)] == [3, 7]
    assert snapshots.select_events(a, lte=5, desc=True, limit=1)[0].state == b"3"


def test_retention_hides_events_from_the_recorders(es_factory: module.Factory) -> None:
    """Notifications are $all reads and aggregates are stream reads: both skip events that
    the stream's retention hides (docs/retention.md)."""
    from uuid import uuid4

    recorder = es_factory.application_recorder()
    a, b = uuid4(), uuid4()
    recorder.insert_events([StoredEvent(a, v, "t", b"x") for v in (1, 2, 3)])
    recorder.insert_events([StoredEvent(b, 1, "t", b"y")])
    es_factory.datastore.store.truncate_stream(str(a), 3)
    assert [n.id for n in recorder.select_notifications(1, 10)] == [3, 4]
    assert [e.originator_version for e in recorder.select_events(a)] == [3]
