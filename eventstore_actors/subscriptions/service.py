"""The subscriptions of one store: durable ones (single subscriber, competing consumers,
consumer groups), transient ones, acks, unsubscribes and deletes.

A subscription is a supervised actor (`actor.SubscriptionActor`, one class for a single
subscriber, competing consumers and a group's partitions: see `delivery`) started here with its
`Control` (what callers' threads and the actor share) and its handle; a consumer group is a
`group.Group` whose partitions are subscriptions started here too.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pykka

from ..actors.supervised import on_own_thread
from ..actors.supervisor import ChildSpec
from ..errors import (
    StoreUnavailableError,
    StreamDeletedError,
    SubscriptionAlreadyExistsError,
)
from ..runtime import Runtime, stop_actor
from ..storage import checkpoints, outbox, reader
from ..validation import check_count, check_name, check_start_from
from . import group as groups
from . import info as sub_info
from . import options as sub_options
from .acks import SingleAcks, member_handle
from .actor import SubscriptionActor
from .arguments import Checked, Request, check_flag, registry_id
from .control import Control
from .delivery import subscriber_alive, tell_stopped
from .health import HealthMonitor, SubscriptionHealth
from .hub import LockHub
from .inbox import Attach
from .messages import Subscription, TransientSubscription
from .spec import SubscriptionSpec
from .transient import TransientActor, TransientControl, TransientSpec

__all__ = ["Subscriptions"]

#: Seconds a subscribe waits for an ending subscription of the same name to let go of it.
_ENDING_WAIT = 1.0


class Subscriptions:
    """Every subscription of one store."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._pool = runtime.pool
        self._registry = runtime.registry
        self._replica = runtime.replica
        self._holder = sub_info.holder_text(runtime.origin)
        self._groups: dict[str, groups.Group] = {}  # consumer groups joined here, by name
        # shared_lock_session: one connection for every subscription's lock and checkpoints.
        self._hub = LockHub(runtime.settings) if runtime.settings.shared_lock_session else None
        self._acks_lock = threading.Lock()
        self._acks_in_transaction: checkpoints.InTransaction | None = None
        self.log = runtime.log
        registry = runtime.registry
        self._health = HealthMonitor(
            runtime.pool,
            registry.metrics,
            self._holder,
            runtime.settings.schema,
            lambda: registry.closed_reason is not None,
        )

    def leave_groups(self) -> Callable[[], None]:
        """The store stops: close the consumer groups joined here (their partitions stop with
        the other actors); returns what to do once the actors are stopped."""
        self._health.stop()  # stopping cleanly: its subscriptions become idle, not stopped
        joined = list(self._groups.values())
        for group in joined:  # its partitions stop with the others
            group.close(silent=False, partitions=False)

        def stopped() -> None:
            if self._hub is not None:
                self._hub.close()
            for group in joined:  # told by a partition already, unless it held none
                group.tell_stopped("the event store stopped")

        return stopped

    def durable(
        self,
        stream_uuid: Any,
        subscription_name: Any,
        subscriber: Any,
        start_from: Any,
        mapper: Any,
        max_size: Any,
        options: Mapping[str, Any],
        *,
        all_streams: bool = False,
    ) -> Subscription:
        """`EventStore.subscribe_to_stream`, or with `all_streams` (`stream_uuid` "$all")
        `subscribe_to_all_streams` (with `partitions`: a consumer group's member)."""
        count = None
        if all_streams:
            given = sub_options.resolve(options, "subscribe_to_all_streams")
            count = groups.check_partitions(given["partitions"])
        else:
            given = sub_options.resolve(options, "subscribe_to_stream")
            check_name(stream_uuid, "stream_uuid")
            if given["partitions"] is not None:
                raise ValueError(
                    "partitions (consumer groups) apply to all-streams subscriptions only"
                )
            if given["mixed_batches"] is not False:
                check_flag(given["mixed_batches"], "mixed_batches")
                raise ValueError("mixed_batches applies to all-streams subscriptions only")
            if given["stream_prefix"] is not None:
                raise ValueError("stream_prefix applies to all-streams subscriptions only")
        checked = Checked.of(given)
        request = Request(
            stream_uuid, subscription_name, subscriber, start_from, mapper, max_size, checked
        )
        # A stopped store's listener never listens: refused now, not after connect_timeout.
        self._runtime.refuse_stopped()
        self._runtime.listening.want(self._settings.connect_timeout)
        if count is not None:
            return self._subscribe_group(request, count)
        return self._subscribe(request)

    def _subscribe(self, request: Request) -> Subscription:
        stream_uuid, name, subscriber = request.stream_uuid, request.name, request.subscriber
        options = request.options
        size = self._checked_size(request)
        self._refuse_deleted(stream_uuid)
        child_id = registry_id(stream_uuid, name)
        registry = self._registry
        concurrent = options.concurrency_limit > 1
        if concurrent:
            attached = self._attach(child_id, request)
            if attached is not None:
                return attached
        control = Control(size, subscriber)
        control.keeps_sent = options.partition is not None  # see GroupSubscription.nack
        acks = SingleAcks(
            self, self._registry, child_id, stream_uuid, name, control, options.partition
        )
        if concurrent:
            handle = member_handle(
                self,
                self._registry,
                child_id,
                stream_uuid,
                acks.shown,
                control,
                self._settings.call_timeout,
            )
        else:
            handle = Subscription(stream_uuid, acks.shown, acks)
        acks.handle = handle
        health = SubscriptionHealth(stream_uuid, name, options.stall_after)
        spec = dataclasses.replace(self._spec(request, size, control), health=health)
        ready: pykka.ThreadingFuture[Subscription] = pykka.ThreadingFuture()
        settings = self._settings

        def factory(sup: pykka.ActorRef[Any], cid: str, generation: int) -> pykka.ActorRef[Any]:
            first = ready if generation == 0 else None
            return SubscriptionActor.start(sup, cid, settings, spec, handle, first, registry)

        def on_give_up(reason: str) -> None:
            health.ended(reason)
            told = control.close(reason)
            if told is not None:  # no actor left to tell it; not from the supervisor's thread
                for member, member_handle, _ in control.members or [(subscriber, handle, 1)]:
                    threading.Thread(
                        target=tell_stopped, args=(member, member_handle, told), daemon=True
                    ).start()

        child = acks.child = ChildSpec(child_id, factory, on_give_up=on_give_up, attachment=control)
        try:
            self._start_subscription(child, stream_uuid, name)
        except SubscriptionAlreadyExistsError:
            if not concurrent:
                raise
            # Another subscribe of the name started it meanwhile: join it.
            attached = self._attach(child_id, request)
            if attached is None:
                raise
            return attached
        try:
            subscription: Subscription = ready.get(timeout=self._settings.call_timeout)
            self._health.watch(health)  # started: looked after until it ends
            return subscription
        except pykka.Timeout:
            self.forget_and_stop(child_id, child)
            raise StoreUnavailableError("the subscription did not start in time") from None
        except BaseException:
            self.forget_and_stop(child_id, child)
            raise

    def _checked_size(self, request: Request) -> int:
        """The subscribe arguments checked (TypeError, ValueError); the buffer's size."""
        subscriber, max_size = request.subscriber, request.max_size
        partition = request.options.partition is not None
        _check_name_and_subscriber(request.name, subscriber, partition=partition)
        check_start_from(request.start_from)
        if request.mapper is not None and not callable(request.mapper):
            raise TypeError("mapper must be callable or None")
        size = (
            self._settings.subscription_max_size
            if max_size is None
            else check_count(max_size, "max_size")
        )
        if not subscriber_alive(subscriber):
            raise ValueError("the subscriber is not running (a stopped actor?)")
        return size

    def _spec(self, request: Request, size: int, control: Control) -> SubscriptionSpec:
        """What the subscription's actor runs with (every restart of it)."""
        options = request.options
        return SubscriptionSpec(
            request.stream_uuid,
            request.name,
            request.subscriber,
            request.start_from,
            request.mapper,
            size,
            control,
            holder=self._holder,
            standby=options.standby,
            max_batch=options.max_batch,
            mixed=options.mixed_batches,
            selector=options.selector,
            event_types=options.event_types,
            stream_prefix=options.stream_prefix,
            checkpoint_threshold=options.checkpoint_threshold,
            checkpoint_after=options.checkpoint_after,
            max_retries=options.max_retries,
            retry_delay=options.retry_delay,
            replica=self._replica,
            partition=options.partition,
            concurrency_limit=options.concurrency_limit,
            partition_by=options.partition_by,
            buffer_size=options.buffer_size,
            hub=self._hub,
            pool=self._pool,  # catch-up reads ahead (and with a hub, all of them)
        )

    def _subscribe_group(self, request: Request, count: int) -> Subscription:
        """Join the consumer group `request.name` of `count` partitions (see
        subscriptions.group): each partition a subscription of its own."""
        name, subscriber, options = request.name, request.subscriber, request.options
        _check_name_and_subscriber(name, subscriber, partition=False)
        if not subscriber_alive(subscriber):
            raise ValueError("the subscriber is not running (a stopped actor?)")
        # Competing consumers within a partition would break its per-stream order.
        if options.concurrency_limit > 1:
            raise ValueError("partitions cannot be combined with concurrency_limit > 1")
        if name in self._groups:
            raise SubscriptionAlreadyExistsError(
                f"consumer group {name!r} is already subscribed in this store"
            )
        start = functools.partial(self._start_position, request.start_from)
        schema = self._settings.schema
        self._pool.run(lambda c: groups.prepare(c, schema, name, count, start))
        partition_options = dataclasses.replace(options, standby=True)

        def start_partition(index: int, relay: Any) -> Subscription:
            row = groups.partition_row_name(name, index, count)
            part = dataclasses.replace(partition_options, partition=(index, count))
            return self._subscribe(
                dataclasses.replace(request, name=row, subscriber=relay, options=part)
            )

        def stop_partition(index: int) -> None:
            row = groups.partition_row_name(name, index, count)
            self.forget_and_stop(registry_id(checkpoints.ALL_STREAMS, row))

        def control(index: int) -> Any:
            row = groups.partition_row_name(name, index, count)
            return self._registry.attachment(registry_id(checkpoints.ALL_STREAMS, row))

        def on_end(group: groups.Group) -> None:
            if self._groups.get(name) is group:
                del self._groups[name]

        group = groups.Group(
            self._settings,
            name,
            count,
            subscriber,
            start_partition,
            stop_partition,
            control,
            on_end,
        )
        self._groups[name] = group
        try:
            group.start()
        except BaseException:
            group.close()
            raise
        return group.handle

    def _start_position(self, start_from: str | int, conn: Any) -> int:
        """Where a new consumer group starts (its partitions all start there)."""
        if check_start_from(start_from) == "origin":
            return 0
        if start_from == "current":
            return reader.last_event_id(conn)
        return int(start_from)

    def _attach(self, child_id: str, request: Request) -> Subscription | None:
        """Competing consumers: join the subscription of that name running here. None when
        none runs (or it is ending: the caller starts it anew); SubscriptionAlreadyExistsError
        when it takes no more subscribers."""
        stream_uuid, name = request.stream_uuid, request.name
        ref = self._registry.peek(child_id)
        control = self._registry.attachment(child_id)
        if ref is None or not isinstance(control, Control) or control.closed:
            return None
        handle = member_handle(
            self,
            self._registry,
            child_id,
            stream_uuid,
            name,
            control,
            self._settings.call_timeout,
        )
        if on_own_thread(ref):
            raise SubscriptionAlreadyExistsError(
                f"subscription {name!r} on {stream_uuid!r}: subscribe from outside its "
                "subscribers' tell() to add a subscriber"
            )
        try:
            reply = ref.ask(
                Attach(request.subscriber, handle, request.options.buffer_size),
                timeout=self._settings.call_timeout,
            )
        except pykka.ActorDeadError:
            return None
        except pykka.Timeout:
            raise StoreUnavailableError("the subscription did not answer in time") from None
        if reply == "dead":
            raise ValueError("the subscriber is not running (a stopped actor?)")
        if reply == "full" or (reply is None and not control.closed):
            raise SubscriptionAlreadyExistsError(
                f"subscription {name!r} on {stream_uuid!r} already has its "
                "concurrency_limit of subscribers (or takes only one)"
            )
        return handle if reply is handle else None

    def _refuse_deleted(self, stream_uuid: str) -> None:
        """StreamDeletedError for a soft-deleted stream (one deleted while the subscription
        starts ends it with SubscriptionStopped instead)."""
        if stream_uuid == checkpoints.ALL_STREAMS:
            return
        state = self._pool.run(lambda c: reader.stream_state(c, stream_uuid))
        if state is not None and state[3] is not None:
            raise StreamDeletedError(stream_uuid)

    def _start_subscription(self, child: ChildSpec, stream_uuid: str, name: str) -> None:
        """Start the child; a subscription of that name that is ending (its subscriber died,
        it failed, it was unsubscribed from inside its tell()) is waited for briefly, so that
        a resubscribe right after works."""
        deadline = time.monotonic() + _ENDING_WAIT
        while True:
            try:
                self._runtime.ask_supervisor("start_child", child)
                return
            except KeyError:
                current = self._registry.peek(child.child_id)
                control = self._registry.attachment(child.child_id)
                ending = current is None or not current.is_alive()
                if isinstance(control, Control):
                    # Closed, or its subscriber died and the next tick will notice.
                    ending = ending or control.closed or not subscriber_alive(control.subscriber)
                if not ending or time.monotonic() >= deadline:
                    raise SubscriptionAlreadyExistsError(
                        f"subscription {name!r} on {stream_uuid!r} already has a subscriber"
                    ) from None
                time.sleep(0.01)

    def group(self, name: str) -> groups.Group | None:
        """The consumer group `name` joined here, if any."""
        return self._groups.get(name)

    def ack(self, subscription: Any, acked: Any, conn: Any) -> None:
        """`EventStore.ack`: the handle's own ack."""
        if not isinstance(subscription, Subscription) or isinstance(
            subscription, TransientSubscription
        ):
            raise TypeError("ack takes the Subscription returned by subscribe_*")
        subscription.ack(acked, conn=conn)

    def store_late_ack(self, stream_uuid: str, name: str, position: int) -> None:
        """An ack told after its subscription stopped (e.g. on an event it cannot rebuild,
        right after the batch before it) and made its final checkpoint write: stored here,
        forward only, unless a later run of the name holds its lock (then those events are
        its own to ack). Lost only if the store is stopped or unreachable: then those events
        are delivered again."""
        if self._runtime.stopped:
            return
        key = sub_info.lock_key(self._settings.schema, stream_uuid, name)
        try:
            self._pool.run(
                lambda c: checkpoints.advance_unheld(c, stream_uuid, name, position, key)
            )
        except Exception as exc:
            self.log.warning(
                "could not store an ack told after its subscription stopped",
                subscription=name,
                stream=stream_uuid,
                error=str(exc),
            )

    def in_transaction(self, conn: Any) -> checkpoints.InTransaction:
        """The writer of acks in callers' transactions, once `conn` is checked (TypeError,
        ValueError); made on first use (it needs one query to identify the database)."""
        checkpoints.InTransaction.check(conn)
        with self._acks_lock:
            if self._acks_in_transaction is None:
                found = self._pool.run(outbox.fingerprint)
                self._acks_in_transaction = checkpoints.InTransaction(self._settings.schema, found)
            return self._acks_in_transaction

    # Transient subscriptions ------------------------------------------------------------------
    def subscribe(
        self, stream_uuid: Any, subscriber: Any, selector: Any, mapper: Any
    ) -> TransientSubscription:
        """`EventStore.subscribe`: a transient subscription's actor, started from the
        last event_id now."""
        check_name(stream_uuid, "stream_uuid")
        if not callable(getattr(subscriber, "tell", None)):
            raise TypeError("subscriber must be a pykka ActorRef or have a tell(message) method")
        if selector is not None and not callable(selector):
            raise TypeError("selector must be callable or None")
        if mapper is not None and not callable(mapper):
            raise TypeError("mapper must be callable or None")
        if not subscriber_alive(subscriber):
            raise ValueError("the subscriber is not running (a stopped actor?)")
        self._runtime.refuse_stopped()
        self._runtime.listening.want(self._settings.connect_timeout)  # before the head is read
        child_id = f"subscription:transient:{uuid.uuid4().hex}"
        head = self._pool.run(reader.last_event_id)
        control = TransientControl(self._settings.subscription_max_size, subscriber, head)
        handle = TransientSubscription.make(stream_uuid, lambda: self.forget_and_stop(child_id))
        spec = TransientSpec(stream_uuid, subscriber, selector, mapper, control)
        settings, pool, registry = self._settings, self._pool, self._registry

        def factory(sup: pykka.ActorRef[Any], cid: str, generation: int) -> pykka.ActorRef[Any]:
            return TransientActor.start(sup, cid, settings, pool, spec, handle, registry)

        def on_give_up(reason: str) -> None:
            told = control.close(reason)
            if told is not None:
                threading.Thread(
                    target=tell_stopped, args=(subscriber, handle, told), daemon=True
                ).start()

        self._runtime.ask_supervisor(
            "start_child",
            ChildSpec(child_id, factory, on_give_up=on_give_up, attachment=control),
        )
        return handle

    def unsubscribe(self, handle: Any) -> None:
        """`EventStore.unsubscribe`."""
        if not isinstance(handle, TransientSubscription):
            raise TypeError("unsubscribe takes the handle returned by subscribe()")
        handle.unsubscribe()

    def unsubscribe_from_stream(self, stream_uuid: Any, subscription_name: Any) -> None:
        """`EventStore.unsubscribe_from_stream`."""
        self.forget_and_stop(registry_id(check_name(stream_uuid, "stream_uuid"), subscription_name))

    def unsubscribe_from_all_streams(self, subscription_name: Any) -> None:
        """`EventStore.unsubscribe_from_all_streams` (a group: this store leaves it)."""
        group = self._groups.get(subscription_name)
        if group is not None:
            group.close()
            return
        self.forget_and_stop(registry_id(checkpoints.ALL_STREAMS, subscription_name))

    def delete_subscription(self, stream_uuid: Any, subscription_name: Any) -> None:
        """`EventStore.delete_subscription`."""
        check_name(stream_uuid, "stream_uuid")
        check_name(subscription_name, "subscription_name")
        self.forget_and_stop(registry_id(stream_uuid, subscription_name))
        self._pool.run(lambda c: checkpoints.delete(c, stream_uuid, subscription_name))

    def delete_all_streams_subscription(self, subscription_name: Any) -> None:
        """`EventStore.delete_all_streams_subscription` (a group's rows too)."""
        group = self._groups.get(check_name(subscription_name, "subscription_name"))
        if group is not None:
            group.close()
        self._pool.run(lambda c: groups.delete_rows(c, subscription_name))
        self.delete_subscription(checkpoints.ALL_STREAMS, subscription_name)

    def forget_and_stop(self, child_id: str, only: ChildSpec | None = None) -> None:
        """Unsubscribe: nothing more is told to the subscriber once this returns (or, called
        from inside the subscriber's own tell(), once that tell returns)."""
        ref, control = self._runtime.ask_supervisor("forget_child", child_id, only)
        if isinstance(control, Control):
            control.close(None)
        if ref is not None:
            stop_actor(ref)


def _check_name_and_subscriber(name: Any, subscriber: Any, *, partition: bool) -> None:
    """A subscription's name (one with the groups' mark only for a group's partition, named
    by the group) and its subscriber's type: TypeError or ValueError."""
    check_name(name, "subscription_name")
    if groups.MARK in name and not partition:
        raise ValueError(r"subscription_name must not contain '\x1f' (used by groups)")
    if not callable(getattr(subscriber, "tell", None)):
        raise TypeError("subscriber must be a pykka ActorRef or have a tell(message) method")
