"""Retry with exponential back-off through a delayed-message exchange, then park.

    worker --fails--> retry exchange (x-delayed-message, x-delay = 1s, 2s, 4s) --> work queue
    worker --fails a 4th time--> parking queue

The code a user of the rabbitmq-delayed-message-exchange plugin writes:
declare an exchange of type `x-delayed-message` with `x-delayed-type: direct`,
and publish a failed job back to it with an `x-delay` header in milliseconds.
Each delay is the message's own: a job waiting 1s is not held up by one
waiting 4s, as it would be behind it in a TTL queue. The attempt number
travels in a header of our own; the exchange sets `x-delay` to minus the
delay when it routes, so a consumer can tell a retried message.

aio-pika publishes with mandatory=True by default; a delayed message is
unroutable at the moment it is published (the plugin routes it later), so
publishes to the delayed exchange say mandatory=False.

    python samples/plugins_delayed_retry.py [AMQP_URL]
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

import aio_pika
import aiormq

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
RETRY = "sample.plugins.retry"  # the x-delayed-message exchange
WORK = "sample.plugins.work"
PARKING = "sample.plugins.parking"
BACK_OFF_MS = (1000, 2000, 4000)  # before attempts 2, 3 and 4
# How many attempts each job needs to succeed; None: it never does.
JOBS: dict[str, int | None] = {"job-ok": 1, "job-flaky": 3, "job-bad": None}


def broker_url() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", DEFAULT_URL)


async def declare(channel: aio_pika.abc.AbstractChannel) -> tuple[aio_pika.abc.AbstractExchange,
                                                                    aio_pika.abc.AbstractQueue,
                                                                    aio_pika.abc.AbstractQueue]:
    retry = await channel.declare_exchange(RETRY, "x-delayed-message", arguments={"x-delayed-type": "direct"})
    work = await channel.declare_queue(WORK)
    parking = await channel.declare_queue(PARKING)
    await work.bind(retry, "job")
    for queue in (work, parking):
        await queue.purge()
    return retry, work, parking


EXIT_NO_PLUGIN = 2
NO_PLUGIN = ("this sample needs the x-delayed-message exchange type: run it against leveret, "
             "or a RabbitMQ with rabbitmq_delayed_message_exchange enabled "
             "(rabbitmq-plugins enable rabbitmq_delayed_message_exchange)")


async def main() -> int:
    connection = await aio_pika.connect(broker_url(), timeout=5)
    async with connection:
        channel = await connection.channel()
        # aiormq logs the connection close a missing plugin causes with a
        # traceback; the sample says what happened itself.
        logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
        try:
            retry, work, parking = await declare(channel)
        except aiormq.exceptions.ConnectionCommandInvalid as error:
            if "x-delayed-message" not in str(error):
                raise
            print(f"{NO_PLUGIN}\n(the broker said: {error})", file=sys.stderr)
            return EXIT_NO_PLUGIN
        started = time.monotonic()
        finished: dict[str, str] = {}
        waited: dict[str, list[float]] = {}
        last_seen: dict[str, float] = {}
        all_done = asyncio.Event()

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            job = message.body.decode()
            attempt = int(message.headers.get("x-attempt", 1))  # type: ignore[call-overload]
            now = time.monotonic()
            if job in last_seen:
                waited.setdefault(job, []).append(now - last_seen[job])
            last_seen[job] = now
            needed = JOBS[job]
            elapsed = f"(t={now - started:.1f}s, x-delay={message.headers.get('x-delay')})"
            if needed is not None and attempt >= needed:
                print(f"{job:<9} attempt {attempt}: ok  {elapsed}")
                finished[job] = "ok"
            elif attempt <= len(BACK_OFF_MS):
                delay = BACK_OFF_MS[attempt - 1]
                print(f"{job:<9} attempt {attempt}: failed, retry in {delay // 1000}s  {elapsed}")
                await retry.publish(
                    aio_pika.Message(message.body, headers={"x-delay": delay, "x-attempt": attempt + 1}),
                    routing_key="job", mandatory=False,
                )
            else:
                print(f"{job:<9} attempt {attempt}: failed, parked in {PARKING}  {elapsed}")
                await channel.default_exchange.publish(
                    aio_pika.Message(message.body, headers={"x-attempt": attempt}), routing_key=PARKING,
                )
                finished[job] = "parked"
            await message.ack()
            if len(finished) == len(JOBS):
                all_done.set()

        consumer_tag = await work.consume(handle)
        for job in JOBS:
            await retry.publish(aio_pika.Message(job.encode()), routing_key="job", mandatory=False)
        try:
            await asyncio.wait_for(all_done.wait(), timeout=20)
        except TimeoutError:
            print(f"timed out; finished: {finished}")
            return 1

        parked = await parking.get(timeout=5, no_ack=True)
        waits = [round(seconds, 1) for seconds in waited.get("job-bad", [])]
        print(f"{parked.body.decode()} parked after attempt {parked.headers['x-attempt']}; "
              f"it waited {', '.join(f'{w}s' for w in waits)} between attempts")
        ok = (
            finished == {"job-ok": "ok", "job-flaky": "ok", "job-bad": "parked"}
            and len(waits) == len(BACK_OFF_MS)
            and all(measured >= wanted / 1000 - 0.05 for measured, wanted in zip(waits, BACK_OFF_MS, strict=True))
        )
        await work.cancel(consumer_tag)
        for queue in (work, parking):
            await queue.delete(if_unused=False, if_empty=False)
        await retry.delete()
        print("retries backed off 1s, 2s, 4s, then parked" if ok else "unexpected outcome")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
