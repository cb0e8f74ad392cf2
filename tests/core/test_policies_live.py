"""Policies applied to a virtual host's queues and exchanges, live: what a
queue acts on when a policy meets its x-arguments (rabbit_amqqueue_process /
rabbit_quorum_queue's resolution per key), and what changes at once when a
policy is set, changed or cleared."""

from __future__ import annotations

from typing import Any

from leveret.broker.policies import parse_policy
from tests.core.core_support import FakeConsumer, World, error_of


def set_policy(world: World, name: str, pattern: str, definition: dict[str, Any], *,
               priority: int = 0, apply_to: str = "all", operator: bool = False) -> None:
    body = {"pattern": pattern, "definition": definition, "priority": priority, "apply-to": apply_to}
    world.vhost.set_policy(parse_policy("/", name, body, operator=operator), world.now, operator=operator)


def test_a_plain_redeclare_of_a_queue_under_a_policy_is_equivalent() -> None:
    world = World()
    set_policy(world, "ttl", "^bob\\.", {"message-ttl": 60000})
    queue = world.queue("bob.q", durable=True)
    assert queue.arguments == {} and queue.args.message_ttl == 60000
    assert (queue.policy, queue.policy_definition) == ("ttl", {"message-ttl": 60000})
    assert world.queue("bob.q", durable=True) is queue
    # equivalence still compares the queue's own arguments, never the policy's
    assert error_of(lambda: world.queue("bob.q", durable=True, arguments={"x-message-ttl": 60000}))[0] == 406


def test_classic_resolution_limits_take_the_lower_the_dead_letter_exchange_the_argument() -> None:
    world = World()
    set_policy(world, "p", "^q", {"max-length": 5, "message-ttl": 1000, "expires": 9000,
                                   "dead-letter-exchange": "poldlx", "overflow": "reject-publish"})
    own = world.queue("q1", arguments={"x-max-length": 10, "x-message-ttl": 500, "x-expires": 20000,
                                       "x-dead-letter-exchange": "argdlx", "x-overflow": "drop-head"})
    assert (own.args.max_length, own.args.message_ttl, own.args.expires) == (5, 500, 9000)
    assert (own.args.dead_letter_exchange, own.args.overflow) == ("argdlx", "drop-head")
    bare = world.queue("q2")
    assert (bare.args.dead_letter_exchange, bare.args.overflow) == ("poldlx", "reject-publish")


def test_quorum_resolution_overflow_and_expires_come_from_the_policy() -> None:
    world = World()
    set_policy(world, "p", "^q", {"overflow": "reject-publish", "expires": 9000, "max-length": 7,
                                   "delivery-limit": 2, "dead-letter-exchange": "poldlx"})
    queue = world.queue("q", durable=True, arguments={
        "x-queue-type": "quorum", "x-overflow": "drop-head", "x-expires": 1000, "x-max-length": 3,
        "x-delivery-limit": 5, "x-dead-letter-exchange": "argdlx"})
    assert (queue.args.overflow, queue.args.expires, queue.args.max_length) == ("reject-publish", 9000, 3)
    assert (queue.args.delivery_limit, queue.args.dead_letter_exchange) == (2, "argdlx")
    set_policy(world, "p", "^q", {"dead-letter-strategy": "at-least-once", "overflow": "reject-publish"})
    assert (queue.args.dead_letter_strategy, queue.args.overflow) == ("at-least-once", "reject-publish")


def test_a_policy_with_a_key_the_queue_type_lacks_passes_over_it() -> None:
    world = World()
    set_policy(world, "limit", ".", {"delivery-limit": 1}, priority=5)
    set_policy(world, "fallback", ".", {"max-length": 9})
    classic = world.queue("c")
    quorum = world.queue("qq", durable=True, arguments={"x-queue-type": "quorum"})
    assert (classic.policy, classic.args.delivery_limit, classic.args.max_length) == ("fallback", None, 9)
    assert (quorum.policy, quorum.args.delivery_limit) == ("limit", 1)


def test_a_lower_max_length_trims_at_once_and_dead_letters_the_head() -> None:
    world = World()
    world.exchange("dlx", "fanout")
    world.queue("dead")
    world.bind("dlx", "dead")
    world.queue("work", arguments={"x-dead-letter-exchange": "dlx"})
    for body in (b"1", b"2", b"3", b"4"):
        world.publish("", "work", body)
    set_policy(world, "cap", "^work$", {"max-length": 2})
    assert world.drain("dead") == [b"1", b"2"]
    set_policy(world, "cap", "^work$", {"max-length": 10})  # changed: nothing more to drop
    world.publish("", "work", b"5")
    world.vhost.clear_policy("cap", world.now)
    assert world.vhost.queues["work"].args.max_length is None
    assert world.drain("work") == [b"3", b"4", b"5"]


def test_reject_publish_from_a_policy_refuses_what_would_go_over() -> None:
    world = World()
    world.queue("q")
    set_policy(world, "cap", "^q$", {"max-length": 1, "overflow": "reject-publish"})
    assert not world.publish("", "q", b"1").rejected
    assert world.publish("", "q", b"2").rejected
    world.vhost.clear_policy("cap", world.now)
    assert not world.publish("", "q", b"3").rejected


def test_a_new_dead_letter_exchange_serves_the_next_dead_letter() -> None:
    world = World()
    for name in ("first", "second"):
        world.exchange(name, "fanout")
        world.queue(f"{name}.dead")
        world.bind(name, f"{name}.dead")
    world.queue("q")
    consumer = world.consume("q", FakeConsumer("c"))
    set_policy(world, "dl", "^q$", {"dead-letter-exchange": "first"})
    world.publish("", "q", b"a")
    world.reject(consumer)
    set_policy(world, "dl", "^q$", {"dead-letter-exchange": "second"})
    world.publish("", "q", b"b")
    world.reject(consumer)
    world.vhost.clear_policy("dl", world.now)
    world.publish("", "q", b"c")
    world.reject(consumer)  # no dead-letter exchange any more: dropped
    assert (world.drain("first.dead"), world.drain("second.dead")) == ([b"a"], [b"b"])


def test_message_ttl_from_a_policy_applies_to_new_messages_old_ones_keep_theirs() -> None:
    world = World()
    world.queue("q")
    world.publish("", "q", b"old")
    set_policy(world, "ttl", "^q$", {"message-ttl": 100})
    world.publish("", "q", b"new")
    world.advance(150)
    assert world.drain("q") == [b"old"]


def test_expires_from_a_policy_deletes_the_unused_queue() -> None:
    world = World()
    world.queue("q")
    world.advance(1000)
    set_policy(world, "exp", "^q$", {"expires": 500})  # the timer starts now
    world.advance(400)
    assert "q" in world.vhost.queues
    world.advance(200)
    assert "q" not in world.vhost.queues


def test_alternate_exchange_from_a_policy_takes_the_next_unroutable_publish() -> None:
    world = World()
    world.exchange("ae", "fanout")
    world.queue("unrouted")
    world.bind("ae", "unrouted")
    world.exchange("x", "direct")
    world.exchange("own", "direct", arguments={"alternate-exchange": "elsewhere"})
    assert not world.publish("x", "nowhere", b"1").routed
    set_policy(world, "ae", "^(x|own)$", {"alternate-exchange": "ae"}, apply_to="exchanges")
    assert world.publish("x", "nowhere", b"2").queues == ["unrouted"]
    assert world.vhost.exchanges["own"].alternate_exchange == "elsewhere"  # its argument wins
    assert world.vhost.exchanges["x"].policy == "ae"
    world.vhost.clear_policy("ae", world.now)
    assert not world.publish("x", "nowhere", b"3").routed
    assert world.drain("unrouted") == [b"2"]
    # the default exchange takes the policy's name, never its alternate exchange
    set_policy(world, "all", "", {"alternate-exchange": "ae"}, apply_to="exchanges")
    assert world.vhost.exchanges[""].policy == "all"
    assert not world.publish("", "no-such-queue", b"4").routed
    assert world.publish("amq.direct", "nothing", b"5").queues == ["unrouted"]


def test_operator_policy_caps_below_the_policy_and_both_show() -> None:
    world = World()
    set_policy(world, "p", "^q", {"max-length": 5, "dead-letter-exchange": "d"}, priority=1)
    set_policy(world, "op", "^q", {"max-length": 3, "expires": 100000}, operator=True, apply_to="queues")
    queue = world.queue("q")
    assert (queue.policy, queue.operator_policy) == ("p", "op")
    assert queue.policy_definition == {"dead-letter-exchange": "d", "expires": 100000, "max-length": 3}
    assert queue.args.max_length == 3
    world.vhost.clear_policy("op", world.now, operator=True)
    assert (queue.operator_policy, queue.args.max_length) == (None, 5)
    assert not world.vhost.clear_policy("op", world.now, operator=True)


def test_higher_priority_policy_replaces_the_one_in_force() -> None:
    world = World()
    set_policy(world, "low", "^q$", {"max-length": 5})
    queue = world.queue("q")
    set_policy(world, "high", "^q$", {"message-ttl": 10}, priority=2)
    assert (queue.policy, queue.args.max_length, queue.args.message_ttl) == ("high", None, 10)
    world.vhost.clear_policy("high", world.now)
    assert (queue.policy, queue.args.max_length, queue.args.message_ttl) == ("low", 5, None)


def test_queue_mode_lazy_from_a_policy_pages_as_the_argument_does() -> None:
    world = World()
    queue = world.queue("q")
    set_policy(world, "lazy", "^q$", {"queue-mode": "lazy"})
    assert queue.lazy
    world.vhost.clear_policy("lazy", world.now)
    assert not queue.lazy
    own = world.queue("own", arguments={"x-queue-mode": "default"})
    set_policy(world, "lazy", "^own$", {"queue-mode": "lazy"})
    assert not own.lazy  # the queue's own argument wins
