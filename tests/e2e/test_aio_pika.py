"""aio-pika, our interoperability contract: every frontend feature through its own API."""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq
import pytest
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.exceptions import DeliveryError, PublishError

pytestmark = pytest.mark.asyncio


async def connect(url: str) -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect(url, timeout=5)


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


async def test_work_queue_round_trip_with_acks(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("tasks", durable=True)
        for i in range(10):
            await channel.default_exchange.publish(
                Message(f"task {i}".encode(), delivery_mode=DeliveryMode.PERSISTENT), routing_key="tasks")
        seen = []
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    seen.append(message.body.decode())
                if len(seen) == 10:
                    break
        assert seen == [f"task {i}" for i in range(10)]
        declared = await channel.declare_queue("tasks", passive=True)
        assert declared.declaration_result.message_count == 0


async def test_topic_and_fanout_and_headers_routing(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        logs = await channel.declare_exchange("logs", ExchangeType.TOPIC)
        errors = await channel.declare_queue("errors", exclusive=True)
        everything = await channel.declare_queue("all", exclusive=True)
        await errors.bind(logs, "*.error")
        await everything.bind(logs, "#")
        await logs.publish(Message(b"disk full"), routing_key="db.error")
        await logs.publish(Message(b"hello"), routing_key="web.info")
        assert (await errors.get(timeout=2)).body == b"disk full"
        assert await errors.get(fail=False) is None
        assert {(await everything.get()).body, (await everything.get()).body} == {b"disk full", b"hello"}

        headers = await channel.declare_exchange("docs", ExchangeType.HEADERS)
        pdfs = await channel.declare_queue("pdfs", exclusive=True)
        await pdfs.bind(headers, arguments={"x-match": "all", "format": "pdf", "type": "report"})
        await headers.publish(Message(b"r1", headers={"format": "pdf", "type": "report"}), routing_key="")
        await headers.publish(Message(b"r2", headers={"format": "zip", "type": "report"}), routing_key="")
        assert (await pdfs.get(timeout=2)).body == b"r1"
        assert await pdfs.get(fail=False) is None


async def test_exchange_to_exchange_and_alternate_exchange(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        unrouted = await channel.declare_exchange("unrouted", ExchangeType.FANOUT)
        front = await channel.declare_exchange("front", ExchangeType.DIRECT, arguments={"alternate-exchange": "unrouted"})
        back = await channel.declare_exchange("back", ExchangeType.DIRECT)
        await back.bind(front, "orders")
        orders = await channel.declare_queue("orders", exclusive=True)
        lost = await channel.declare_queue("lost", exclusive=True)
        await orders.bind(back, "orders")
        await lost.bind(unrouted)
        await front.publish(Message(b"o1"), routing_key="orders")
        await front.publish(Message(b"x1"), routing_key="nothing")
        assert (await orders.get(timeout=2)).body == b"o1"
        assert (await lost.get(timeout=2)).body == b"x1"


async def test_reject_and_nack_requeue_and_dead_letter(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        dlx = await channel.declare_exchange("dlx", ExchangeType.FANOUT)
        dead = await channel.declare_queue("dead", exclusive=True)
        await dead.bind(dlx)
        work = await channel.declare_queue("work", exclusive=True, arguments={"x-dead-letter-exchange": "dlx"})
        await channel.default_exchange.publish(Message(b"m", headers={"attempt": 1}), routing_key="work")
        first = await work.get(timeout=2)
        await first.nack(requeue=True)
        again = await work.get(timeout=2)
        assert again.redelivered is True
        await again.reject(requeue=False)
        died = await dead.get(timeout=2)
        death = died.headers["x-death"][0]
        assert death["queue"] == "work"
        assert death["reason"] == "rejected"
        assert death["count"] == 1
        assert death["exchange"] == ""
        assert death["routing-keys"] == ["work"]
        assert died.headers["x-first-death-reason"] == "rejected"
        assert died.headers["attempt"] == 1


async def test_ttl_expiry_dead_letters_in_real_time(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        dlx = await channel.declare_exchange("ttl-dlx", ExchangeType.FANOUT)
        expired = await channel.declare_queue("expired", exclusive=True)
        await expired.bind(dlx)
        await channel.declare_queue("wait", exclusive=True, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "ttl-dlx"})
        await channel.default_exchange.publish(Message(b"later", expiration=1), routing_key="wait")
        message = await expired.get(timeout=2, fail=False)
        for _ in range(40):
            if message is not None:
                break
            await asyncio.sleep(0.05)
            message = await expired.get(fail=False)
        assert message is not None and message.body == b"later"
        assert message.expiration is None
        assert message.headers["x-death"][0]["reason"] == "expired"
        assert message.headers["x-death"][0]["original-expiration"] == "1000"


async def test_publisher_confirms_and_nack_on_full_queue(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue("bounded", exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        confirmation = await channel.default_exchange.publish(Message(b"1"), routing_key="bounded")
        assert isinstance(confirmation, aiormq.spec.Basic.Ack)
        with pytest.raises(DeliveryError) as refused:
            await channel.default_exchange.publish(Message(b"2"), routing_key="bounded")
        assert isinstance(refused.value.frame, aiormq.spec.Basic.Nack)


async def test_mandatory_publish_is_returned(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        with pytest.raises(PublishError) as returned:
            await channel.default_exchange.publish(Message(b"x"), routing_key="no-such-queue", mandatory=True)
        assert returned.value.message.body == b"x"
        assert returned.value.frame.reply_code == 312


async def test_channel_errors_carry_rabbitmqs_code_and_text(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        await channel.declare_queue("typed", arguments={"x-message-ttl": 1000})
        # aiormq maps the reply code to the exception class and keeps the text
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as closed:
            await channel.declare_queue("typed", arguments={"x-message-ttl": 2000})
        assert closed.value.args == (
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'typed' in vhost '/': "
            "received '2000' but current is '1000'",)
        other = await connection.channel()
        assert (await other.declare_queue("typed", arguments={"x-message-ttl": 1000})).name == "typed"


async def test_prefetch_limits_unacked_deliveries_per_consumer(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=3)
        queue = await channel.declare_queue("prefetched", exclusive=True)
        for i in range(10):
            await channel.default_exchange.publish(Message(str(i).encode()), routing_key="prefetched")
        held: list[aio_pika.abc.AbstractIncomingMessage] = []
        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            held.append(message)

        await queue.consume(hold)
        await asyncio.sleep(0.2)
        assert len(held) == 3
        await held[0].ack()
        await asyncio.sleep(0.1)
        assert len(held) == 4


async def test_server_cancels_consumer_when_queue_is_deleted(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("doomed")
        tag = await queue.consume(ignore)
        underlay = await channel.get_underlay_channel()
        assert tag in underlay.consumers
        other = await connection.channel()
        await other.queue_delete("doomed")
        for _ in range(20):
            if tag not in underlay.consumers:
                break
            await asyncio.sleep(0.05)
        assert tag not in underlay.consumers


async def test_exclusive_and_auto_delete_queues_go_away(leveret_url: str) -> None:
    first = await connect(leveret_url)
    channel = await first.channel()
    await channel.declare_queue("mine", exclusive=True)
    temporary = await channel.declare_queue("temp", auto_delete=True)
    tag = await temporary.consume(ignore)
    await temporary.cancel(tag)
    await first.close()
    async with await connect(leveret_url) as second:
        probe = await second.channel()
        for name in ("mine", "temp"):
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as missing:
                await probe.declare_queue(name, passive=True)
            assert missing.value.args == (f"NOT_FOUND - no queue '{name}' in vhost '/'",)
            probe = await second.channel()


async def test_transactions_commit_and_rollback(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue("txq", exclusive=True)
        tx = channel.transaction()
        await tx.select()
        await channel.default_exchange.publish(Message(b"kept"), routing_key="txq")
        await tx.commit()
        await channel.default_exchange.publish(Message(b"dropped"), routing_key="txq")
        await tx.rollback()
        assert (await queue.get(timeout=2)).body == b"kept"
        assert await queue.get(fail=False) is None


async def test_rpc_with_direct_reply_to(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        server_channel = await connection.channel()
        requests = await server_channel.declare_queue("rpc", exclusive=True)

        async def serve(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                assert message.reply_to is not None
                assert message.reply_to.startswith("amq.rabbitmq.reply-to.")
                await server_channel.default_exchange.publish(
                    Message(message.body.upper(), correlation_id=message.correlation_id),
                    routing_key=message.reply_to,
                )

        await requests.consume(serve)
        client_channel = await connection.channel()
        replies: asyncio.Queue[bytes] = asyncio.Queue()
        reply_queue = await client_channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            replies.put_nowait(message.body)

        await reply_queue.consume(collect, no_ack=True)
        await client_channel.default_exchange.publish(
            Message(b"ping", reply_to="amq.rabbitmq.reply-to", correlation_id="1"), routing_key="rpc")
        assert await asyncio.wait_for(replies.get(), 3) == b"PING"


async def test_priority_queue_delivers_highest_first(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("prio", exclusive=True, arguments={"x-max-priority": 10})
        for body, priority in ((b"low", 1), (b"high", 9), (b"mid", 5)):
            await channel.default_exchange.publish(Message(body, priority=priority), routing_key="prio")
        bodies = [(await queue.get(timeout=2, no_ack=True)).body for _ in range(3)]
        assert bodies == [b"high", b"mid", b"low"]


async def test_large_message_crosses_many_frames(leveret_url: str) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("big", exclusive=True)
        body = bytes(range(256)) * 8192  # 2 MiB
        await channel.default_exchange.publish(Message(body), routing_key="big")
        assert (await queue.get(timeout=5, no_ack=True)).body == body


async def test_one_bad_client_does_not_disturb_another(leveret_url: str, leveret_broker: object) -> None:
    async with await connect(leveret_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("steady", exclusive=True)
        port = int(leveret_url.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"AMQP\x00\x00\x09\x01" + b"\x01\x00\x00\xff\xff\xff\xff garbage")
        await writer.drain()
        await reader.read(65536)
        writer.close()
        await channel.default_exchange.publish(Message(b"fine"), routing_key="steady")
        assert (await queue.get(timeout=2)).body == b"fine"
