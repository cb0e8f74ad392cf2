"""The vhost part that keeps policies in force: setting or clearing one
re-matches every exchange and queue (rabbit_policy:update_matched_objects),
and a new exchange or queue takes the policy that matches it when declared.

What an object acts on is recomputed here, once per change: a queue's settings
(Queue.apply_policy) and an exchange's alternate exchange
(Exchange.apply_policy). Publishing never looks at a policy.
"""

from __future__ import annotations

from leveret.broker.policies import Policy, effective_definition
from leveret.broker.publishing import Publishing
from leveret.broker.vhost_state import VhostState
from leveret.exchanges.base import Exchange
from leveret.queues.queue import DeadLetter, Queue


def _names(policy: Policy | None, operator: Policy | None) -> tuple[str | None, str | None]:
    return (None if policy is None else policy.name, None if operator is None else operator.name)


def apply_exchange_policy(state: VhostState, exchange: Exchange) -> None:
    policy, operator = state.policies.match("exchange", exchange.name)
    names = _names(policy, operator)
    definition = effective_definition(policy, operator)
    if (exchange.policy, exchange.operator_policy, exchange.policy_definition) != (*names, definition):
        exchange.apply_policy(*names, definition)


def apply_queue_policy(state: VhostState, queue: Queue, now_ms: int) -> list[DeadLetter]:
    """The policy in force on `queue` now; what it drops on the way (to dead-letter)."""
    policy, operator = state.policies.match("queue", queue.name, queue.args.queue_type)
    names = _names(policy, operator)
    definition = effective_definition(policy, operator)
    if (queue.policy, queue.operator_policy, queue.policy_definition) == (*names, definition):
        return []
    dead = queue.apply_policy(*names, definition, now_ms)
    if queue.args.message_ttl is not None or queue.args.expires is not None:
        state.timed.add(queue)
    return dead


class PolicyTable:
    def __init__(self, state: VhostState, publishing: Publishing) -> None:
        self.state = state
        self.publishing = publishing

    def set_policy(self, policy: Policy, now_ms: int, *, operator: bool = False) -> None:
        """Add or replace a (validated) policy; everything it now concerns changes at once."""
        state = self.state
        state.policies.table(operator)[policy.name] = policy
        if state.journal is not None:
            state.journal.policy_set(state.name, policy.name, operator, policy.to_parameter_value())
        self._reapply(now_ms)

    def clear_policy(self, name: str, now_ms: int, *, operator: bool = False) -> bool:
        """False when there is no such policy."""
        state = self.state
        if state.policies.table(operator).pop(name, None) is None:
            return False
        if state.journal is not None:
            state.journal.policy_cleared(state.name, name, operator)
        self._reapply(now_ms)
        return True

    def _reapply(self, now_ms: int) -> None:
        state = self.state
        for exchange in list(state.exchanges.values()):
            apply_exchange_policy(state, exchange)
        for queue in list(state.queues.values()):
            dead = apply_queue_policy(state, queue, now_ms)
            if dead:
                self.publishing.dead_letter(dead, now_ms)
