"""pika's BlockingConnection against leveret: the core paths, as a pika program sees them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from tests.e2e.conftest import Names

Delivery = tuple[Basic.Deliver, BasicProperties, bytes]


def pump(connection: pika.BlockingConnection, until: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Run pika's I/O until `until()` holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not until():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        connection.process_data_events(time_limit=min(left, 0.05))
    return True


def settle(connection: pika.BlockingConnection, seconds: float = 0.3) -> None:
    """Give the broker time to send anything more it (wrongly) would."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.05)


def collect(channel: BlockingChannel, queue: str, **consume_args: Any) -> tuple[str, list[Delivery]]:
    """Start a consumer that records every delivery without acking it."""
    received: list[Delivery] = []

    def on_message(ch: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes) -> None:
        received.append((method, properties, body))

    tag = channel.basic_consume(queue, on_message, **consume_args)
    return tag, received


def ready_count(channel: BlockingChannel, queue: str) -> int:
    count: int = channel.queue_declare(queue, passive=True).method.message_count
    return count


def test_declare_bind_publish_get_and_consume(pika_connection: pika.BlockingConnection, names: Names) -> None:
    channel = pika_connection.channel()
    exchange, queue = names.exchange("orders"), names.queue("orders")
    channel.exchange_declare(exchange, "direct")
    declared = channel.queue_declare(queue)
    channel.queue_bind(queue, exchange, routing_key="new")
    properties = BasicProperties(
        content_type="application/json", message_id="m-1", headers={"tenant": "acme", "n": 7}, delivery_mode=2
    )
    channel.basic_publish(exchange, "new", b'{"id": 1}', properties)
    channel.basic_publish(exchange, "other", b"dropped")
    channel.basic_publish(exchange, "new", b'{"id": 2}')

    method, got_properties, body = channel.basic_get(queue, auto_ack=True)
    tag, received = collect(channel, queue, auto_ack=True)
    pump(pika_connection, lambda: len(received) == 1)
    settle(pika_connection, 0.1)

    assert declared.method.queue == queue
    assert isinstance(method, Basic.GetOk)
    assert (method.exchange, method.routing_key, method.redelivered, method.message_count) == (exchange, "new", False, 1)
    assert body == b'{"id": 1}'
    assert (got_properties.content_type, got_properties.message_id) == ("application/json", "m-1")
    assert got_properties.headers == {"tenant": "acme", "n": 7}
    assert got_properties.delivery_mode == 2
    assert [(m.consumer_tag, m.routing_key, b) for m, _, b in received] == [(tag, "new", b'{"id": 2}')]
    assert channel.basic_get(queue) == (None, None, None)


def test_reject_and_nack_with_requeue_redeliver(pika_connection: pika.BlockingConnection, names: Names) -> None:
    channel = pika_connection.channel()
    queue = names.queue("work")
    channel.queue_declare(queue)
    for body in (b"a", b"b", b"c"):
        channel.basic_publish("", queue, body)

    first, _, _ = channel.basic_get(queue)
    channel.basic_reject(first.delivery_tag, requeue=True)
    again, _, again_body = channel.basic_get(queue)
    second, _, _ = channel.basic_get(queue)
    third, _, _ = channel.basic_get(queue)
    channel.basic_nack(third.delivery_tag, multiple=True, requeue=True)  # again, second, third
    bodies = []
    flags = []
    while True:
        method, _, body = channel.basic_get(queue)
        if method is None:
            break
        bodies.append(body)
        flags.append(method.redelivered)
        channel.basic_ack(method.delivery_tag)

    assert (again.redelivered, again_body) == (True, b"a")
    assert second.redelivered is False
    assert bodies == [b"a", b"b", b"c"]  # requeued messages keep their place
    assert flags == [True, True, True]
    assert ready_count(channel, queue) == 0


def test_reject_and_nack_without_requeue_dead_letter_with_x_death(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    channel = pika_connection.channel()
    dlx, work, dead = names.exchange("dlx"), names.queue("work"), names.queue("dead")
    channel.exchange_declare(dlx, "fanout")
    channel.queue_declare(dead)
    channel.queue_bind(dead, dlx)
    channel.queue_declare(work, arguments={"x-dead-letter-exchange": dlx})
    channel.basic_publish("", work, b"rejected", BasicProperties(headers={"attempt": 1}))
    channel.basic_publish("", work, b"nacked")
    channel.basic_publish("", work, b"kept")

    rejected, _, _ = channel.basic_get(work)
    channel.basic_reject(rejected.delivery_tag, requeue=False)
    nacked, _, _ = channel.basic_get(work)
    channel.basic_nack(nacked.delivery_tag, requeue=False)

    dead_letters = []
    for _ in range(2):
        method, properties, body = channel.basic_get(dead, auto_ack=True)
        assert method is not None, "a dead letter is missing"
        dead_letters.append((method, properties, body))
    left_in_work = ready_count(channel, work)

    (m1, p1, b1), (m2, p2, b2) = dead_letters
    assert (b1, b2) == (b"rejected", b"nacked")
    assert (m1.exchange, m1.routing_key) == (dlx, work)  # the original routing key is kept
    death = p1.headers["x-death"]
    assert len(death) == 1
    assert death[0]["count"] == 1
    assert death[0]["reason"] == "rejected"
    assert death[0]["queue"] == work
    assert death[0]["exchange"] == ""
    assert death[0]["routing-keys"] == [work]
    assert p1.headers["attempt"] == 1
    assert p1.headers["x-first-death-reason"] == "rejected"
    assert p1.headers["x-first-death-queue"] == work
    assert p1.headers["x-first-death-exchange"] == ""
    assert p2.headers["x-death"][0]["reason"] == "rejected"  # a nack is a rejection too
    assert left_in_work == 1


def test_publisher_confirms_ack_and_nack_on_reject_publish_overflow(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    channel = pika_connection.channel()
    queue = names.queue("bounded")
    channel.queue_declare(queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"fits")  # returns only once acked
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", queue, b"overflows")
    channel.basic_publish("", names.queue("nowhere"), b"unroutable, still acked")
    _, _, body = channel.basic_get(queue, auto_ack=True)

    assert body == b"fits"
    assert ready_count(channel, queue) == 0


def test_mandatory_unroutable_publish_is_returned(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    channel = pika_connection.channel()
    exchange = names.exchange("routes")
    channel.exchange_declare(exchange, "direct")
    returned: list[tuple[Basic.Return, bytes]] = []
    channel.add_on_return_callback(lambda ch, method, properties, body: returned.append((method, body)))
    channel.basic_publish(exchange, "nobody", b"first", mandatory=True)
    pump(pika_connection, lambda: len(returned) == 1)

    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as raised:
        channel.basic_publish(exchange, "nobody", b"second", mandatory=True)

    method, body = returned[0]
    assert (method.reply_code, method.reply_text, method.exchange, method.routing_key) == (
        312, "NO_ROUTE", exchange, "nobody"
    )
    assert body == b"first"
    (message,) = raised.value.messages
    assert (message.method.reply_code, message.method.reply_text, message.body) == (312, "NO_ROUTE", b"second")


def test_qos_prefetch_count_limits_unacked_deliveries(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    channel = pika_connection.channel()
    queue = names.queue("prefetch")
    channel.queue_declare(queue)
    for i in range(10):
        channel.basic_publish("", queue, str(i).encode())
    channel.basic_qos(prefetch_count=3)
    _, received = collect(channel, queue)
    pump(pika_connection, lambda: len(received) >= 3)
    settle(pika_connection)
    first_wave = len(received)

    channel.basic_ack(received[0][0].delivery_tag)
    channel.basic_ack(received[1][0].delivery_tag)
    pump(pika_connection, lambda: len(received) >= 5)
    settle(pika_connection)
    second_wave = len(received)

    channel.basic_ack(0, multiple=True)
    pump(pika_connection, lambda: len(received) >= 8)
    settle(pika_connection)

    assert first_wave == 3
    assert second_wave == 5
    assert len(received) == 8
    assert [body for _, _, body in received] == [str(i).encode() for i in range(8)]


def test_qos_per_consumer_and_global_limits_combine(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    # RabbitMQ: global=false limits each consumer created afterwards,
    # global=true limits the channel as a whole; both apply at once.
    channel = pika_connection.channel()
    first, second = names.queue("left"), names.queue("right")
    for queue in (first, second):
        channel.queue_declare(queue)
        for i in range(6):
            channel.basic_publish("", queue, str(i).encode())
    channel.basic_qos(prefetch_count=2)
    _, left = collect(channel, first)
    _, right = collect(channel, second)
    pump(pika_connection, lambda: len(left) + len(right) >= 4)
    settle(pika_connection)
    per_consumer = (len(left), len(right))

    other = pika_connection.channel()
    other.basic_qos(prefetch_count=3, global_qos=True)
    _, left2 = collect(other, first)
    _, right2 = collect(other, second)
    pump(pika_connection, lambda: len(left2) + len(right2) >= 3)
    settle(pika_connection)

    assert per_consumer == (2, 2)
    assert len(left2) + len(right2) == 3


def test_a_later_per_consumer_qos_lifts_the_channel_wide_limit(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    # RabbitMQ (rabbit_channel: unlimit_prefetch): global, then per-consumer,
    # leaves only the per-consumer limit; the other order keeps both.
    channel = pika_connection.channel()
    queue = names.queue("lifted")
    channel.queue_declare(queue)
    for i in range(12):
        channel.basic_publish("", queue, str(i).encode())
    channel.basic_qos(prefetch_count=3, global_qos=True)
    channel.basic_qos(prefetch_count=1)
    got = [collect(channel, queue)[1] for _ in range(6)]
    pump(pika_connection, lambda: sum(map(len, got)) >= 6)
    settle(pika_connection)

    assert [len(deliveries) for deliveries in got] == [1] * 6


def test_server_cancels_consumer_when_its_queue_is_deleted(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    channel = pika_connection.channel()
    queue = names.queue("doomed")
    channel.queue_declare(queue)
    cancels: list[Basic.Cancel] = []
    channel.add_on_cancel_callback(lambda frame: cancels.append(frame.method))
    tag, _ = collect(channel, queue)

    pika_connection.channel().queue_delete(queue)
    pump(pika_connection, lambda: bool(cancels))
    settle(pika_connection, 0.1)

    assert [cancel.consumer_tag for cancel in cancels] == [tag]
    assert channel.is_open
    assert channel.consumer_tags == []


def test_exclusive_queue_goes_away_with_its_connection(broker_url: str, names: Names) -> None:
    owner = pika.BlockingConnection(pika.URLParameters(broker_url))
    other = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        queue = names.queue("mine")
        owner.channel().queue_declare(queue, exclusive=True)
        probe = other.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as locked:
            probe.queue_declare(queue, passive=True)
        owner.close()
        probe = other.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
            probe.queue_declare(queue, passive=True)
    finally:
        if owner.is_open:
            owner.close()
        other.close()

    assert locked.value.reply_code == 405
    assert locked.value.reply_text.startswith(f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue}'")
    assert (gone.value.reply_code, gone.value.reply_text) == (404, f"NOT_FOUND - no queue '{queue}' in vhost '/'")


def test_transactions_commit_and_rollback_publishes_and_acks(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    channel = pika_connection.channel()
    queue = names.queue("tx")
    channel.queue_declare(queue)
    channel.tx_select()
    channel.basic_publish("", queue, b"rolled back")
    before_commit = ready_count(channel, queue)
    channel.tx_rollback()
    after_rollback = ready_count(channel, queue)
    channel.basic_publish("", queue, b"committed")
    channel.tx_commit()
    after_commit = ready_count(channel, queue)

    method, _, body = channel.basic_get(queue)
    channel.basic_ack(method.delivery_tag)
    channel.tx_rollback()  # the ack is discarded: the message stays unacked
    channel.close()  # ... and comes back when the channel goes
    requeued = ready_count(pika_connection.channel(), queue)

    channel = pika_connection.channel()
    channel.tx_select()
    method2, _, _ = channel.basic_get(queue)
    channel.basic_ack(method2.delivery_tag)
    channel.tx_commit()
    channel.close()
    finally_left = ready_count(pika_connection.channel(), queue)

    assert (before_commit, after_rollback, after_commit) == (0, 0, 1)
    assert body == b"committed"
    assert requeued == 1
    assert method2.redelivered is True
    assert finally_left == 0


def test_user_id_must_be_the_authenticated_user(pika_connection: pika.BlockingConnection, names: Names) -> None:
    channel = pika_connection.channel()
    queue = names.queue("validated")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"mine", BasicProperties(user_id="guest"))
    _, properties, _ = channel.basic_get(queue, auto_ack=True)
    channel.basic_publish("", queue, b"forged", BasicProperties(user_id="bob"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_declare(queue, passive=True)

    assert properties.user_id == "guest"
    assert (closed.value.reply_code, closed.value.reply_text) == (
        406, "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'"
    )
    assert ready_count(pika_connection.channel(), queue) == 0


def test_large_message_round_trip(pika_connection: pika.BlockingConnection, names: Names) -> None:
    channel = pika_connection.channel()
    queue = names.queue("large")
    channel.queue_declare(queue)
    body = bytes(range(256)) * 8192  # 2 MiB: many frames of frame_max
    channel.basic_publish("", queue, body)
    _, _, got = channel.basic_get(queue, auto_ack=True)

    assert got == body


def test_basic_recover_requeues_unacked(pika_connection: pika.BlockingConnection, names: Names) -> None:
    channel = pika_connection.channel()
    queue = names.queue("recover")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"x")
    first, _, _ = channel.basic_get(queue)
    channel.basic_recover(requeue=True)
    again, _, body = channel.basic_get(queue, auto_ack=True)

    assert (first.redelivered, again.redelivered, body) == (False, True, b"x")
    assert again.delivery_tag == first.delivery_tag + 1


def test_auto_delete_queue_goes_with_its_last_consumer(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    channel = pika_connection.channel()
    queue = names.queue("auto")
    channel.queue_declare(queue, auto_delete=True)
    first, _ = collect(channel, queue)
    second, _ = collect(channel, queue)
    channel.basic_cancel(first)
    consumers_left = pika_connection.channel().queue_declare(queue, passive=True).method.consumer_count
    channel.basic_cancel(second)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
        pika_connection.channel().queue_declare(queue, passive=True)

    assert consumers_left == 1
    assert gone.value.reply_code == 404


def test_exclusive_consumer_keeps_others_out(pika_connection: pika.BlockingConnection, names: Names) -> None:
    channel = pika_connection.channel()
    queue = names.queue("solo")
    channel.queue_declare(queue)
    collect(channel, queue, exclusive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        collect(pika_connection.channel(), queue)

    assert (refused.value.reply_code, refused.value.reply_text) == (
        403, f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"
    )


def test_a_single_active_consumer_queue_takes_no_exclusive_consumer(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    channel = pika_connection.channel()
    queue = names.queue("sac-exclusive")
    channel.queue_declare(queue, arguments={"x-single-active-consumer": True})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        collect(channel, queue, exclusive=True)

    assert (refused.value.reply_code, refused.value.reply_text) == (
        403, f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"
    )


def test_the_next_single_active_consumer_gets_the_returned_messages_first(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    first_channel, second_channel = pika_connection.channel(), pika_connection.channel()
    queue = names.queue("sac-handover")
    first_channel.queue_declare(queue, arguments={"x-single-active-consumer": True})
    first_channel.basic_qos(prefetch_count=3)
    _, first = collect(first_channel, queue)
    _, second = collect(second_channel, queue)
    for i in range(1, 6):
        first_channel.basic_publish("", queue, str(i).encode())
    pump(pika_connection, lambda: len(first) >= 3)
    settle(pika_connection)
    held = [body for _, _, body in first]
    first_channel.close()
    pump(pika_connection, lambda: len(second) >= 5)

    assert held == [b"1", b"2", b"3"]
    assert [(body, method.redelivered) for method, _, body in second] == [
        (b"1", True), (b"2", True), (b"3", True), (b"4", False), (b"5", False)
    ]


def test_ack_of_unknown_delivery_tag_closes_the_channel(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    channel = pika_connection.channel()
    queue = names.queue("acked")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"x")
    method, _, _ = channel.basic_get(queue)
    channel.basic_ack(method.delivery_tag)
    channel.basic_ack(method.delivery_tag)  # twice
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_declare(queue, passive=True)

    assert (closed.value.reply_code, closed.value.reply_text) == (406, "PRECONDITION_FAILED - unknown delivery tag 1")
    assert pika_connection.is_open


def test_quorum_queue_counts_deliveries_in_a_header(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    channel = pika_connection.channel()
    queue = names.queue("quorum")
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"x", BasicProperties(headers={"kept": "yes"}))
    counts = []
    for settle_with in (channel.basic_reject, channel.basic_nack, channel.basic_ack):
        method, properties, _ = channel.basic_get(queue)
        assert method is not None, "the message went missing"
        counts.append((method.redelivered, properties.headers))
        settle_with(method.delivery_tag)

    assert counts == [
        (False, {"kept": "yes", "x-delivery-count": 0}),
        (True, {"kept": "yes", "x-delivery-count": 1}),
        (True, {"kept": "yes", "x-delivery-count": 2}),
    ]


def test_quorum_queue_first_consumer_delivery_has_no_delivery_count(
    pika_connection: pika.BlockingConnection, names: Names
) -> None:
    # RabbitMQ 3.10.8: basic.get says x-delivery-count 0, basic.consume leaves it
    # out until the message has been returned (nack, recover, channel close).
    channel = pika_connection.channel()
    queue = names.queue("quorum-consume")
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"x", BasicProperties(headers={"kept": "yes"}))
    seen = []
    for _ in range(2):
        consumer = pika_connection.channel()
        for method, properties, _ in consumer.consume(queue, inactivity_timeout=2):
            assert method is not None, "the message went missing"
            seen.append((method.redelivered, properties.headers))
            break
        consumer.close()  # returns the unacked message

    assert seen == [(False, {"kept": "yes"}), (True, {"kept": "yes", "x-delivery-count": 1})]


def test_quorum_queue_refuses_global_qos(broker_url: str, names: Names) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        queue = names.queue("quorum-qos")
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.basic_qos(prefetch_count=2, global_qos=True)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            collect(channel, queue)
    finally:
        if connection.is_open:
            connection.close()

    assert (closed.value.reply_code, closed.value.reply_text) == (
        540, f"NOT_IMPLEMENTED - queue '{queue}' in vhost '/' does not support global qos"
    )


def test_basic_recover_without_requeue_is_not_implemented(broker_url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            channel.basic_recover(requeue=False)
    finally:
        if connection.is_open:
            connection.close()

    assert (closed.value.reply_code, closed.value.reply_text) == (540, "NOT_IMPLEMENTED - requeue=false")


def test_connection_update_secret_is_answered(pika_connection: pika.BlockingConnection) -> None:
    # RabbitMQ's extension for refreshing credentials (OAuth 2 tokens) on a live connection.
    pika_connection.update_secret("guest", "token refreshed")
    queue = pika_connection.channel().queue_declare("", exclusive=True).method.queue

    assert pika_connection.is_open
    assert queue.startswith("amq.gen-")
