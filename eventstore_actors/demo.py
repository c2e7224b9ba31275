"""`eventstore-actors demo`: append, read back and subscribe, printing each step."""

from __future__ import annotations

import queue
import signal
import threading
from dataclasses import dataclass
from typing import Any

import pykka

from . import admin
from .config import redact
from .events import EventData, RecordedEvent
from .serialization import JsonSerializer
from .store import EventStore
from .subscriptions.messages import Events, Subscribed, SubscriptionStopped

__all__ = ["run_demo"]


@dataclass(frozen=True)
class AccountOpened:
    account_id: str
    owner: str


@dataclass(frozen=True)
class MoneyDeposited:
    account_id: str
    amount: int


class Printer(pykka.ThreadingActor):
    """A subscriber actor: prints each batch, acks it, and reports to the demo's queue."""

    def __init__(self, done: queue.Queue[int]) -> None:
        super().__init__()
        self._done = done

    def on_receive(self, message: Any) -> None:
        if isinstance(message, Subscribed):
            print(f"  subscriber: subscribed to {message.subscription.subscription_name!r}")
        elif isinstance(message, Events):
            for event in message.events:
                print(f"  subscriber: got #{event.event_id} {_describe(event)}")
            message.subscription.ack(message.events)
            self._done.put(message.events[-1].event_id)
        elif isinstance(message, SubscriptionStopped):
            print(f"  subscriber: subscription stopped: {message.reason}")


def _describe(event: RecordedEvent) -> str:
    name = event.event_type.rsplit(".", 1)[-1]
    return f"{event.stream_uuid} v{event.stream_version} {name} {event.data}"


def run_demo(
    dsn: str, schema: str = "demo", *, embedded: bool = False, follow: bool = False
) -> None:
    """Append, read back and subscribe in `schema` (created if missing, emptied first),
    printing each step; with `follow`, then print new events until Ctrl-C (or SIGTERM).

    `embedded`: `dsn` is the embedded server's, so say where it lives and how to stop it.
    Every actor it starts is stopped before it returns or raises, Ctrl-C included.
    """
    if embedded:
        from .embedded import default_data_dir

        print(f"server: the embedded PostgreSQL in {default_data_dir()} ({redact(dsn)})")
    else:
        print(f"server: {redact(dsn)}")
    print(f"schema: {schema} (emptied first)")
    try:
        _run(dsn, schema, follow)
    finally:
        if embedded:
            print(
                "the embedded PostgreSQL keeps running for the next run: "
                "`eventstore-actors embedded status` shows it, "
                "`eventstore-actors embedded stop` stops it"
            )


def _run(dsn: str, schema: str, follow: bool) -> None:
    admin.create(dsn, schema)
    admin.reset(dsn, schema)
    serializer = JsonSerializer(types=[AccountOpened, MoneyDeposited])
    with EventStore.start(dsn, schema=schema, serializer=serializer) as store:
        print("appending 3 events to stream account-1 (expected version 0: a new stream)")
        store.append_to_stream(
            "account-1",
            0,
            [
                EventData(AccountOpened("account-1", "Ada")),
                EventData(MoneyDeposited("account-1", 100), metadata={"user": "ada"}),
                EventData(MoneyDeposited("account-1", 50)),
            ],
        )
        print("reading stream account-1 back:")
        for event in store.read_stream_forward("account-1"):
            print(f"  #{event.event_id} {_describe(event)}")
        print("appending again with a stale expected version 0 is refused:")
        try:
            store.append_to_stream("account-1", 0, [EventData(MoneyDeposited("account-1", 1))])
        except Exception as exc:
            print(f"  {type(exc).__name__}: {exc}")

        done: queue.Queue[int] = queue.Queue()
        printer = Printer.start(done)
        try:
            print("subscribing an actor to all streams from the origin:")
            store.subscribe_to_all_streams("demo-printer", printer)
            _wait_for(done, 3)
            print("appending 2 events to stream account-2 while subscribed:")
            store.append_to_stream(
                "account-2",
                0,
                [
                    EventData(AccountOpened("account-2", "Grace")),
                    EventData(MoneyDeposited("account-2", 7)),
                ],
            )
            _wait_for(done, 5)
            if follow:
                _follow(schema)
            store.unsubscribe_from_all_streams("demo-printer")
        finally:
            printer.stop()  # the application's own actors first, then the store
        total = sum(1 for _ in store.stream_all_forward())
        print(f"all streams hold {total} events; the subscriber received and acked all of them")


def _follow(schema: str) -> None:
    """Block until Ctrl-C or SIGTERM; the subscriber prints what others append meanwhile."""
    print(
        f"following schema {schema!r}: events appended by other processes are printed; "
        "press Ctrl-C to stop",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        # A second Ctrl-C must not interrupt the cleanup that follows.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("stopping")


def _wait_for(done: queue.Queue[int], event_id: int) -> None:
    last = 0
    while last < event_id:
        last = done.get(timeout=10.0)
