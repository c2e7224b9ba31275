"""A small typed user program: the bank account service of the guides, checked with
`mypy --strict` against the installed package (tests/project/test_typing.py) and run for real.

An aggregate rebuilt from its stream with optimistic retries, a projection actor fed by a
subscription, Decimal amounts under stable type names, and a plain `Subscriber`.
"""

from __future__ import annotations

import queue
import sys
from dataclasses import dataclass
from decimal import Decimal

import pykka

from eventstore_actors import (
    EventData,
    Events,
    EventStore,
    JsonSerializer,
    RecordedEvent,
    StreamNotFoundError,
    Subscribed,
    Subscriber,
    SubscriptionMessage,
    SubscriptionStopped,
    WrongExpectedVersionError,
)


@dataclass(frozen=True)
class AccountOpened:
    account_id: str
    owner: str


@dataclass(frozen=True)
class MoneyDeposited:
    account_id: str
    amount: Decimal


@dataclass(frozen=True)
class MoneyWithdrawn:
    account_id: str
    amount: Decimal


SERIALIZER = JsonSerializer(
    types={
        "bank.AccountOpened": AccountOpened,
        "bank.MoneyDeposited": MoneyDeposited,
        "bank.MoneyWithdrawn": MoneyWithdrawn,
    }
)


class Account:
    """The aggregate: its state is a fold over its stream."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.version = 0
        self.balance = Decimal("0")

    def apply(self, event: RecordedEvent) -> None:
        data = event.data
        if isinstance(data, MoneyDeposited):
            self.balance += data.amount
        elif isinstance(data, MoneyWithdrawn):
            self.balance -= data.amount
        self.version = event.stream_version


def load(store: EventStore, account_id: str) -> Account:
    account = Account(account_id)
    try:
        for event in store.stream_forward(f"account-{account_id}"):
            account.apply(event)
    except StreamNotFoundError:
        pass
    return account


def open_account(store: EventStore, account_id: str, owner: str) -> None:
    store.append_to_stream(
        f"account-{account_id}", 0, [EventData(AccountOpened(account_id, owner))]
    )


def withdraw(store: EventStore, account_id: str, amount: Decimal) -> bool:
    """Optimistic concurrency: reload and retry when another writer got there first."""
    for _ in range(10):
        account = load(store, account_id)
        if account.balance < amount:
            return False
        event = EventData(MoneyWithdrawn(account_id, amount))
        try:
            store.append_to_stream(f"account-{account_id}", account.version, [event])
            return True
        except WrongExpectedVersionError:
            continue
    raise RuntimeError("too much contention")


def deposit(store: EventStore, account_id: str, amount: Decimal) -> None:
    for _ in range(10):
        account = load(store, account_id)
        event = EventData(MoneyDeposited(account_id, amount))
        try:
            store.append_to_stream(f"account-{account_id}", account.version, [event])
            return
        except WrongExpectedVersionError:
            continue
    raise RuntimeError("too much contention")


class Balances(pykka.ThreadingActor):
    """A projection: every account's balance, from an all-streams subscription."""

    def __init__(self, seen: queue.Queue[int]) -> None:
        super().__init__()
        self.balances: dict[str, Decimal] = {}
        self.seen = seen

    def on_receive(self, message: SubscriptionMessage) -> None:
        if isinstance(message, Events):
            for event in message.events:  # RecordedEvent: no mapper
                data = event.data
                if isinstance(data, MoneyDeposited):
                    self.balances[data.account_id] = (
                        self.balances.get(data.account_id, Decimal("0")) + data.amount
                    )
                elif isinstance(data, MoneyWithdrawn):
                    self.balances[data.account_id] -= data.amount
            message.subscription.ack(message.events)
            self.seen.put(message.events[-1].event_id)
        elif isinstance(message, SubscriptionStopped):
            print(f"projection stopped: {message.reason}", file=sys.stderr)

    def balance(self, account_id: str) -> Decimal:
        return self.balances.get(account_id, Decimal("0"))


class Audit:
    """Not an actor: any object with tell(message) is a Subscriber."""

    def __init__(self) -> None:
        self.messages: queue.Queue[SubscriptionMessage] = queue.Queue()

    def tell(self, message: SubscriptionMessage) -> None:
        self.messages.put(message)


def wait_for(seen: queue.Queue[int], event_id: int) -> None:
    last = 0
    while last < event_id:
        last = seen.get(timeout=10.0)


def main(dsn: str, schema: str) -> Decimal:
    with EventStore.start(dsn, schema=schema, serializer=SERIALIZER, call_timeout=10.0) as store:
        seen: queue.Queue[int] = queue.Queue()
        balances = Balances.start(seen)
        audit = Audit()
        subscriber: Subscriber = balances  # a pykka ActorRef is a Subscriber
        try:
            store.subscribe_to_all_streams("balances", subscriber)
            audit_sub = store.subscribe_to_stream("account-1", "audit", audit)
            open_account(store, "1", "Ada")
            deposit(store, "1", Decimal("100.10"))
            assert withdraw(store, "1", Decimal("0.10"))
            assert not withdraw(store, "1", Decimal("1000"))
            head = store.read_all_streams_backward(count=1)[0].event_id
            wait_for(seen, head)
            first = audit.messages.get(timeout=10.0)
            assert isinstance(first, Subscribed)
            assert first.subscription.subscription_name == audit_sub.subscription_name
            balance: Decimal = balances.proxy().balance("1").get(timeout=10.0)
            assert balance == load(store, "1").balance == Decimal("100.00")
            return balance
        finally:
            balances.stop()


if __name__ == "__main__":
    print(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "public"))
