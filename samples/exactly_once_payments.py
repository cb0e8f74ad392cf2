"""Exactly-once processing on an at-least-once broker: a payment consumer.

The broker guarantees at-least-once: a message not acked when its consumer
dies is delivered again (with `redelivered` set). Charging a card twice is not
an option, so the consumer makes the *effect* happen once:

1. every payment carries a `message_id` chosen by the publisher;
2. the consumer records the charge and the message id in ONE transaction of
   its own store (sqlite): a unique key on the id makes a second charge for
   the same payment impossible;
3. it acks only after that transaction committed.

A crash before the commit: nothing was charged, the redelivery charges. A
crash between the commit and the ack: the redelivery finds the id and is
acked without charging. `redelivered` alone proves nothing (a message can be
redelivered without ever having been processed); the store decides.

    python samples/exactly_once_payments.py [AMQP_URL]        # the whole demo
    python samples/exactly_once_payments.py [AMQP_URL] --publish 6
    python samples/exactly_once_payments.py [AMQP_URL] --consume --store pay.db [--crash-after 3]

The demo publishes payments, runs a consumer that SIGKILLs itself after
recording its third charge (before the ack), runs a second consumer, and
checks the ledger: every payment charged exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import aio_pika

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
QUEUE = "sample.payments"
ACCOUNTS = ("alice", "bob", "carol")

SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    message_id TEXT PRIMARY KEY,      -- the dedup key: one charge per payment
    account TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    pid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, charged_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (  -- what the consumers saw, for the proof
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    redelivered INTEGER NOT NULL,
    outcome TEXT NOT NULL,            -- 'charged' or 'duplicate'
    pid INTEGER NOT NULL
);
"""


def default_url() -> str:
    return os.environ.get("AMQP_URL", DEFAULT_URL)


class Store:
    """The consumer's own database: charges, balances and the dedup key in one transaction."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript(SCHEMA)

    def record(self, message_id: str, account: str, amount_cents: int, redelivered: bool) -> str:
        """Charge unless this payment was charged before; returns the outcome. Atomic."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            inserted = self.db.execute(
                "INSERT OR IGNORE INTO charges VALUES (?, ?, ?, ?)", (message_id, account, amount_cents, os.getpid())
            ).rowcount
            if inserted:
                self.db.execute(
                    "INSERT INTO balances VALUES (?, ?) "
                    "ON CONFLICT(account) DO UPDATE SET charged_cents = charged_cents + excluded.charged_cents",
                    (account, amount_cents),
                )
            outcome = "charged" if inserted else "duplicate"
            self.db.execute(
                "INSERT INTO deliveries (message_id, redelivered, outcome, pid) VALUES (?, ?, ?, ?)",
                (message_id, int(redelivered), outcome, os.getpid()),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return outcome

    def charged(self) -> int:
        count: int = self.db.execute("SELECT count(*) FROM charges").fetchone()[0]
        return count

    def close(self) -> None:
        self.db.close()


def payment(i: int) -> tuple[str, dict[str, object]]:
    return f"pay-{i:04d}", {"account": ACCOUNTS[i % len(ACCOUNTS)], "amount_cents": 100 * i + 99}


async def publish(url: str, queue_name: str, count: int) -> None:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue_name, durable=True)
        for i in range(1, count + 1):
            message_id, body = payment(i)
            await channel.default_exchange.publish(  # returns once the broker confirmed it
                aio_pika.Message(
                    json.dumps(body).encode(), message_id=message_id, content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue_name,
            )
    print(f"published {count} payments to {queue_name}", flush=True)


def die() -> None:
    """Crash like a power cut: no ack, no connection.close, no cleanup."""
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)


async def consume(url: str, queue_name: str, store_path: Path, crash_after: int | None, expect: int | None,
                  idle: float, prefetch: int) -> int:
    store = Store(store_path)
    name = f"consumer {os.getpid()}"
    charged_here = 0
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(queue_name, durable=True)
        inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(inbox.put)
        while expect is None or store.charged() < expect:
            try:
                message = await asyncio.wait_for(inbox.get(), timeout=idle)
            except TimeoutError:
                break  # nothing more to do
            body = json.loads(message.body)
            message_id = message.message_id or ""
            outcome = store.record(message_id, body["account"], body["amount_cents"], bool(message.redelivered))
            seen = " (redelivered)" if message.redelivered else ""
            if outcome == "charged":
                charged_here += 1
                print(f"{name}: charged {message_id}{seen}: {body['account']} {body['amount_cents']} cents",
                      flush=True)
                if crash_after is not None and charged_here == crash_after:
                    print(f"{name}: crashing after recording {message_id}, before its ack", flush=True)
                    die()
            else:
                print(f"{name}: {message_id}{seen} was charged already: ack without charging", flush=True)
            await message.ack()  # only now: the charge is committed
    store.close()
    return 0


def run_consumer(url: str, store: Path, *extra: str) -> int:
    command = [sys.executable, __file__, url, "--consume", "--store", str(store), *extra]
    return subprocess.run(command, timeout=30).returncode


async def demo(url: str, count: int) -> int:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=True)
        await queue.purge()
    await publish(url, QUEUE, count)

    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "payments.db"
        first = run_consumer(url, store_path, "--crash-after", "3")
        print(f"first consumer died (exit status {first}); starting another", flush=True)
        second = run_consumer(url, store_path, "--expect", str(count))
        db = sqlite3.connect(store_path)
        charges = dict(db.execute("SELECT message_id, count(*) FROM deliveries WHERE outcome = 'charged' "
                                  "GROUP BY message_id").fetchall())
        duplicates = [row[0] for row in db.execute(
            "SELECT message_id FROM deliveries WHERE outcome = 'duplicate' AND redelivered = 1")]
        balances = dict(db.execute("SELECT account, charged_cents FROM balances ORDER BY account").fetchall())
        db.close()

    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(QUEUE)

    expected_ids = [payment(i)[0] for i in range(1, count + 1)]
    expected_balances: dict[str, int] = {}
    for i in range(1, count + 1):
        _, body = payment(i)
        account, amount = str(body["account"]), int(str(body["amount_cents"]))
        expected_balances[account] = expected_balances.get(account, 0) + amount
    once = sorted(charges) == expected_ids and set(charges.values()) == {1}
    print(f"{len(charges)} payments, each charged {'once' if once else 'NOT once'}; "
          f"redelivered and skipped: {', '.join(duplicates) or 'none'}")
    print("balances: " + ", ".join(f"{account}={cents / 100:.2f}" for account, cents in balances.items()))
    ok = once and balances == dict(sorted(expected_balances.items())) and bool(duplicates) and second == 0
    print("exactly once: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", nargs="?", default=default_url(), help="broker URL (default: $AMQP_URL or %(default)s)")
    parser.add_argument("--queue", default=QUEUE)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--publish", type=int, metavar="N", help="publish N payments and exit")
    mode.add_argument("--consume", action="store_true", help="run the payment consumer")
    parser.add_argument("--store", type=Path, help="the consumer's sqlite file")
    parser.add_argument("--crash-after", type=int, metavar="N", help="SIGKILL self after recording the Nth charge")
    parser.add_argument("--expect", type=int, metavar="N", help="stop once N payments are charged in the store")
    parser.add_argument("--idle", type=float, default=1.0, help="stop after this many idle seconds")
    parser.add_argument("--prefetch", type=int, default=3)
    args = parser.parse_args(argv)
    if args.publish is not None:
        asyncio.run(publish(args.url, args.queue, args.publish))
        return 0
    if args.consume:
        if args.store is None:
            parser.error("--consume needs --store")
        return asyncio.run(consume(args.url, args.queue, args.store, args.crash_after, args.expect, args.idle,
                                   args.prefetch))
    return asyncio.run(demo(args.url, 6))


if __name__ == "__main__":
    sys.exit(main())
