"""Unit tests of the subscription handles (no database, no threads): what each kind checks
and what it tells its port (`subscriptions.handles`), so that a handle never needs anyone to
reach into it."""

from __future__ import annotations

from typing import Any

import pytest

from eventstore_actors import Subscription, TransientSubscription
from eventstore_actors.subscriptions.handles import MemberSubscription


class _Port:
    """Records what a handle tells it."""

    def __init__(self) -> None:
        self.told: list[tuple[Any, ...]] = []

    def ack(self, position: int) -> None:
        self.told.append(("ack", position))

    def ack_in(self, position: int, conn: Any, acked: Any = None) -> None:
        self.told.append(("ack_in", position, conn, acked))

    def ack_each(self, positions: list[int]) -> None:
        self.told.append(("ack_each", positions))

    def nack(self, position: int, action: str, reason: str | None) -> None:
        self.told.append(("nack", position, action, reason))

    def detach(self) -> None:
        self.told.append(("detach",))


def test_a_durable_handle_tells_its_port_cumulative_acks_nacks_and_its_unsubscribe() -> None:
    port = _Port()
    handle = Subscription("s-1", "projection", port)
    conn = object()
    handle.ack(3)
    handle.ack([1, 2, 7])  # cumulative: the last one
    handle.ack(9, conn=conn)
    handle.nack(10, "park", "bad")
    handle.unsubscribe()
    assert port.told == [
        ("ack", 3),
        ("ack", 7),
        ("ack_in", 9, conn, None),  # a position: no event object to say which batch
        ("nack", 10, "park", "bad"),
        ("detach",),
    ]
    assert repr(handle) == "Subscription(stream_uuid='s-1', subscription_name='projection')"


def test_a_handle_refuses_bad_input_before_telling_anything() -> None:
    port = _Port()
    handle = Subscription("$all", "projection", port)
    with pytest.raises(TypeError):
        handle.ack(True)
    with pytest.raises(ValueError):
        handle.ack(-1)
    with pytest.raises(ValueError):
        handle.ack([])
    with pytest.raises(ValueError):
        handle.nack(1, "later")
    with pytest.raises(TypeError):
        handle.nack([1, 2])  # type: ignore[arg-type]
    assert port.told == []


def test_a_competing_consumers_handle_acks_each_event_and_never_in_a_transaction() -> None:
    port = _Port()
    handle = MemberSubscription("$all", "workers", port)
    handle.ack([4, 2])
    handle.ack(5)
    with pytest.raises(ValueError, match="concurrency_limit=1"):
        handle.ack(6, conn=object())
    handle.nack(4, "retry")
    assert isinstance(handle, Subscription)
    assert port.told == [("ack_each", [4, 2]), ("ack_each", [5]), ("nack", 4, "retry", None)]


def test_a_transient_handle_takes_no_acks_nor_nacks_and_unsubscribes() -> None:
    stopped: list[bool] = []
    handle = TransientSubscription.make("$all", lambda: stopped.append(True))
    with pytest.raises(TypeError, match="no acks"):
        handle.ack(1)
    with pytest.raises(TypeError, match="no nacks"):
        handle.nack(1)
    handle.unsubscribe()
    assert stopped == [True]
    assert handle.subscription_name == ""
