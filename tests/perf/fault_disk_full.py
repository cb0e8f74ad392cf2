"""A full disk under --data-dir (issue 19): publishers block, nothing confirmed is lost.

A script, not a test (it needs a small filesystem, which needs root to mount):

    mount -t tmpfs -o size=200m tmpfs /mnt/small
    .venv/bin/python tests/perf/fault_disk_full.py /mnt/small [--disk-free-limit 50MB]

`leveret serve --data-dir DIR/data` with a lazy durable queue; a raw publisher
sends 1 KiB persistent messages with confirms until confirms stop coming (the
disk alarm blocked it) and counts what was confirmed. A consumer then takes
and acks half of them: space comes back, the alarm clears and the publisher
goes on (AS OF THIS COMMIT IT DOES NOT: the run blocks correctly and frees
space, then hangs after the alarm should clear; open, see the paging report).
Then the broker gets kill -9, starts again on the same directory,
and every message is drained: each confirmed number must be there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import struct
import sys
import time
from pathlib import Path

from pamqp import commands, frame, header

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.perf.bench_paging import SIZE, Client, Leveret, body_frame  # noqa: E402

_SEQ = struct.Struct(">Q")


def publish_until_blocked(client: Client, queue: str, start: int, stall: float = 3.0) -> tuple[int, set[int]]:
    """Publish numbered messages until no confirm comes for `stall` seconds: (sent, confirmed numbers)."""
    head = (frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1)
            + frame.marshal(header.ContentHeader(0, SIZE, commands.Basic.Properties(delivery_mode=2)), 1))
    filler = b"." * (SIZE - 8)
    sent = 0
    confirmed_tag = 0
    nacked: set[int] = set()
    last_progress = time.monotonic()
    while time.monotonic() - last_progress < stall:
        if sent - confirmed_tag < 2000:
            client.sock.sendall(b"".join(head + body_frame(1, _SEQ.pack(start + sent + i) + filler)
                                         for i in range(200)))
            sent += 200
        value = client.read(0.05)
        while value is not None:
            if isinstance(value, commands.Basic.Ack | commands.Basic.Nack):
                tag = value.delivery_tag
                if isinstance(value, commands.Basic.Nack):
                    nacked.update(range(confirmed_tag + 1, tag + 1) if value.multiple else (tag,))
                confirmed_tag = max(confirmed_tag, tag)
                last_progress = time.monotonic()
            value = client.read(0.0)
    confirmed = {start + tag - 1 for tag in range(1, confirmed_tag + 1) if tag not in nacked}
    return sent, confirmed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mount", type=Path, help="a small filesystem (tmpfs or loop device)")
    args = parser.parse_args()
    data = args.mount / "data"
    shutil.rmtree(data, ignore_errors=True)
    leveret = Leveret(data)
    publisher = Client(leveret.url)
    publisher.declare("full")
    publisher.send(1, commands.Confirm.Select())
    publisher.expect(commands.Confirm.SelectOk)
    sent, confirmed = publish_until_blocked(publisher, "full", 0)
    usage = shutil.disk_usage(args.mount)
    print(f"blocked after {sent} sent, {len(confirmed)} confirmed; {usage.free / 1e6:.0f} MB free of "
          f"{usage.total / 1e6:.0f} MB")
    consumer = Client(leveret.url)
    took, _, ordered = consumer.consume_checked("full", len(confirmed) // 2)
    consumer.close()
    print(f"consumed and acked {len(confirmed) // 2} in {took:.1f} s (in order: {ordered}); "
          f"{shutil.disk_usage(args.mount).free / 1e6:.0f} MB free")
    more_sent, more = publish_until_blocked(publisher, "full", sent)
    print(f"after space came back: {len(more)} more confirmed")
    os.kill(leveret.process.pid, signal.SIGKILL)
    leveret.process.wait()
    leveret = Leveret(data)
    client = Client(leveret.url)
    left = client.declare("full", passive=True)
    client.send(1, commands.Basic.Qos(prefetch_count=2000))
    client.expect(commands.Basic.QosOk)
    client.send(1, commands.Basic.Consume(queue="full", consumer_tag="drain", no_ack=True))
    client.expect(commands.Basic.ConsumeOk)
    seen: set[int] = set()
    while len(seen) < left:
        value = client.read(10.0)
        if value is None:
            break
        if type(value).__name__ == "ContentBody":
            seen.add(_SEQ.unpack_from(value.value)[0])  # type: ignore[attr-defined]
    client.close()
    leveret.stop()
    expected = {n for n in confirmed if n >= len(confirmed) // 2} | more
    missing = expected - seen
    print(f"after kill -9: {left} messages back; confirmed and not consumed: {len(expected)}, "
          f"missing {len(missing)}")
    shutil.rmtree(data, ignore_errors=True)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
