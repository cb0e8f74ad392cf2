"""Policies and operator policies, as RabbitMQ 3.10's rabbit_policy keeps them.

A policy is a vhost's named rule: queues and/or exchanges whose name matches
`pattern` (a regular expression, searched anywhere in the name as Erlang's `re`
does) take the settings of its `definition`. Of the policies that match an
object the one with the highest `priority` applies, alone (ties: the lower
name, where RabbitMQ's order is its table's); the same goes for operator
policies, whose definitions may only set limits. A policy applies to a queue
only if the queue's type supports every key in it (rabbit_queue_type's
`unsupported_policies`): a policy with `delivery-limit` passes over classic
queues, one with `queue-mode` over quorum queues, and the next match applies.

Validation follows rabbit_policy and rabbit_policies (and the mirroring and
queue-location validators, whose keys leveret accepts and ignores: `ha-*`,
`queue-master-locator`), with RabbitMQ's texts: `PolicyError.reason` is the
`Validation failed` text the management API and rabbitmqctl show.

How a policy value meets an x-argument is the queue's business
(leveret.queues.arguments.resolve_policy); how a policy meets an operator
policy is here (`effective_definition`): limits take the lower value.

One difference: `apply-to` also takes `classic_queues`, `quorum_queues` and
`streams`, which RabbitMQ has from 3.12 (3.10 refuses them), so newer exports load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from leveret.broker.erlang_text import Charlist, format_error

APPLY_TO = ("all", "exchanges", "queues", "classic_queues", "quorum_queues", "streams")

# rabbit_policies: the keys an operator policy may set; two values merge to the lower.
OPERATOR_KEYS = (
    "expires", "message-ttl", "max-length", "max-length-bytes", "max-in-memory-length",
    "max-in-memory-bytes", "delivery-limit",
)
# Policy keys RabbitMQ knows that mean nothing in leveret: accepted, stored, shown, ignored.
IGNORED_KEYS = (
    "ha-mode", "ha-params", "ha-sync-mode", "ha-sync-batch-size", "ha-promote-on-shutdown",
    "ha-promote-on-failure", "queue-master-locator", "queue-version", "max-in-memory-length",
    "max-in-memory-bytes", "queue-leader-locator", "initial-cluster-size",
)
_HA_KEYS = ("ha-mode", "ha-params", "ha-sync-mode", "ha-sync-batch-size",
            "ha-promote-on-shutdown", "ha-promote-on-failure")

# rabbit_classic_queue / rabbit_quorum_queue capabilities(): keys that keep a policy off a queue.
UNSUPPORTED: dict[str, frozenset[str]] = {
    "classic": frozenset({
        "max-age", "stream-max-segment-size-bytes", "queue-leader-locator", "initial-cluster-size",
        "delivery-limit", "dead-letter-strategy",
    }),
    "quorum": frozenset({
        "max-priority", "queue-mode", "single-active-consumer", "ha-mode", "ha-params",
        "ha-sync-mode", "ha-promote-on-shutdown", "ha-promote-on-failure", "queue-master-locator",
        "max-age", "stream-max-segment-size-bytes", "initial-cluster-size",
    }),
    "stream": frozenset({
        "expires", "message-ttl", "dead-letter-exchange", "dead-letter-routing-key", "max-length",
        "max-in-memory-length", "max-in-memory-bytes", "max-priority", "overflow", "queue-mode",
        "single-active-consumer", "delivery-limit", "ha-mode", "ha-params", "ha-sync-mode",
        "ha-promote-on-shutdown", "ha-promote-on-failure", "queue-master-locator", "dead-letter-strategy",
    }),
}

_MAX_STREAM_SEGMENT = 3_000_000_000
_MAX_AGE = re.compile(r"^[0-9]+[YMDhms]$")


class PolicyError(ValueError):
    """A policy RabbitMQ would refuse; `reason` is its text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------ patterns
class PatternError(ValueError):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at {offset}")
        self.message = message
        self.offset = offset


_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")
_NAMED_REF = re.compile(r"\\k<([A-Za-z_][A-Za-z0-9_]*)>")
_QUOTED = re.compile(r"\\Q(.*?)(\\E|$)", re.S)
_OPEN_MIN = re.compile(r"(?<!\\)\{(?=,)")
_QUANTIFIER = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def _to_python(pattern: str) -> str:
    """PCRE syntax Python's re spells differently: (?<n>...), \\k<n>, \\Q...\\E."""
    pattern = _QUOTED.sub(lambda m: re.escape(m.group(1)), pattern)
    pattern = _NAMED_GROUP.sub("(?P<", pattern)
    pattern = _OPEN_MIN.sub(r"\\{", pattern)  # PCRE reads "{," as text, Python as {0,n}
    return _NAMED_REF.sub(r"(?P=\1)", pattern)


def _pcre_error(pattern: str, error: re.error) -> PatternError:
    """Python's complaint as PCRE's message and offset (the ones Erlang's re gives)."""
    msg, pos = error.msg, error.pos if error.pos is not None else len(pattern)
    end = len(pattern)
    if msg.startswith("missing ), unterminated comment"):
        return PatternError("missing ) after comment", end)
    if msg.startswith("missing ), unterminated subpattern"):
        return PatternError("missing )", end)
    if msg.startswith("unbalanced parenthesis"):
        return PatternError("unmatched parentheses", pos)
    if msg.startswith("unterminated character set"):
        return PatternError("missing terminating ] for character class", end)
    if msg in ("nothing to repeat", "multiple repeat"):
        return PatternError("nothing to repeat", pos)
    if msg.startswith("min repeat greater than max repeat"):
        close = pattern.find("}", pos)
        return PatternError("numbers out of order in {} quantifier", close if close >= 0 else pos)
    if msg.startswith("bad escape (end of pattern)"):
        return PatternError("\\ at end of pattern", end)
    if msg.startswith("bad character range"):
        return PatternError("range out of order in character class", pos + 2)
    if msg.startswith("redefinition of group name"):
        name = msg.split("'")[1]
        return PatternError("two named subpatterns have the same name", pos + len(name))
    if msg.startswith("invalid group reference"):
        digits = len(pattern[pos:]) - len(pattern[pos:].lstrip("0123456789"))
        return PatternError("reference to non-existent subpattern", pos + digits)
    if msg.startswith("look-behind requires fixed-width pattern"):
        close = pattern.find(")", pattern.find("(?<"))
        return PatternError("lookbehind assertion is not fixed length", close if close >= 0 else end)
    if msg.startswith(("unknown extension", "unexpected end of pattern")) and pattern[pos - 1:pos + 1] in ("(?", "?"):
        return PatternError("unrecognized character after (? or (?-", pos + 1 if pattern[pos:pos + 1] == "?" else pos)
    if msg.startswith("unknown extension ?<") or (msg.startswith("unexpected end") and pattern.endswith("(?<")):
        return PatternError("unrecognized character after (?<", pos + 2 if msg.startswith("unknown") else pos)
    if msg.startswith(("unknown extension", "unexpected end of pattern")):
        return PatternError("unrecognized character after (? or (?-", pos + 1 if pattern[pos:pos + 1] == "?" else pos)
    return PatternError(msg, pos)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The pattern compiled, or PatternError as Erlang's re:compile reports it."""
    for match in _QUANTIFIER.finditer(pattern):
        if any(part and int(part) > 65535 for part in match.groups()):
            raise PatternError("number too big in {} quantifier", match.end() - 1)
    try:
        return re.compile(_to_python(pattern))
    except re.error as error:
        raise _pcre_error(pattern, error) from None


# --------------------------------------------------------------- validation
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _key_error(key: str, value: Any) -> str | None:
    """rabbit_policies:validate_policy0 for one key (None: valid)."""
    def unless(ok: Any, template: str) -> str | None:
        return None if ok else format_error(template, value)

    if key == "alternate-exchange":
        return unless(isinstance(value, str), "~p is not a valid alternate exchange name")
    if key == "dead-letter-exchange":
        return unless(isinstance(value, str), "~p is not a valid dead letter exchange name")
    if key == "dead-letter-routing-key":
        return unless(isinstance(value, str), "~p is not a valid dead letter routing key")
    if key == "dead-letter-strategy":
        return unless(value in ("at-most-once", "at-least-once"), "~p is not a valid dead letter strategy")
    if key == "message-ttl":
        return unless(_is_int(value) and value >= 0, "~p is not a valid message TTL")
    if key == "expires":
        return unless(_is_int(value) and value >= 1, "~p is not a valid queue expiry")
    if key == "max-length":
        return unless(_is_int(value) and value >= 0, "~p is not a valid maximum length")
    if key == "max-length-bytes":
        return unless(_is_int(value) and value >= 0, "~p is not a valid maximum length in bytes")
    if key in ("max-in-memory-length", "max-in-memory-bytes"):
        return unless(_is_int(value) and value >= 0, "~p is not a valid maximum memory in bytes")
    if key == "queue-mode":
        return unless(value in ("default", "lazy"), "~p is not a valid queue-mode value")
    if key == "queue-version":
        return unless(_is_int(value) and value in (1, 2), "~p is not a valid queue-version value")
    if key == "overflow":
        return unless(value in ("drop-head", "reject-publish", "reject-publish-dlx"),
                      "~p is not a valid overflow value")
    if key == "delivery-limit":
        return unless(_is_int(value) and value >= 0, "~p is not a valid delivery limit")
    if key == "max-age":
        return unless(isinstance(value, str) and _MAX_AGE.match(value) is not None, "~p is not a valid max age")
    if key == "queue-leader-locator":
        return unless(value in ("client-local", "balanced", "random", "least-leaders"),
                      "~p is not a valid queue leader locator value")
    if key == "initial-cluster-size":
        return unless(_is_int(value) and value >= 0, "~p is not a valid cluster size")
    assert key == "stream-max-segment-size-bytes"
    return unless(_is_int(value) and 0 <= value <= _MAX_STREAM_SEGMENT, "~p is not a valid segment size")


_POLICY_KEYS = (
    "alternate-exchange", "dead-letter-exchange", "dead-letter-routing-key", "dead-letter-strategy",
    "message-ttl", "expires", "max-length", "max-length-bytes", "max-in-memory-length",
    "max-in-memory-bytes", "queue-mode", "queue-version", "overflow", "delivery-limit", "max-age",
    "stream-max-segment-size-bytes", "queue-leader-locator", "initial-cluster-size",
)


def _ha_error(definition: Mapping[str, Any]) -> str | None:
    """rabbit_mirror_queue_misc:validate_policy (mirroring is gone here; the checks stay)."""
    if not any(k in definition for k in _HA_KEYS):
        return None
    if "ha-mode" not in definition:
        return "ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown"
    mode, params = definition["ha-mode"], definition.get("ha-params")
    if mode not in ("all", "exactly", "nodes"):
        return format_error("~p is not a valid ha-mode value", mode)
    if mode == "all" and "ha-params" in definition:
        return 'ha-mode="all" does not take parameters'
    if mode == "exactly" and not (isinstance(params, int) and not isinstance(params, bool) and params > 0):
        given = "none" if params is None else format_error("~p", params)
        return f'ha-mode="exactly" takes an integer, {given} given'
    if mode == "nodes":
        if not isinstance(params, list):
            given = "none" if params is None else format_error("~p", params)
            return f'ha-mode="nodes" takes a list, {given} given'
        if not params:
            return 'ha-mode="nodes" list must be non-empty'
        invalid = [p for p in params if not isinstance(p, str)]
        if invalid:
            return format_error('ha-mode="nodes" takes a list of strings, ~p was not a string', invalid)
    sync = definition.get("ha-sync-mode")
    if sync is not None and sync not in ("automatic", "manual"):
        return format_error('ha-sync-mode must be "manual" or "automatic", got ~p', sync)
    batch = definition.get("ha-sync-batch-size")
    if batch is not None and not (_is_int(batch) and batch > 0):
        return format_error("ha-sync-batch-size takes an integer greater than 0, ~p given", batch)
    for key in ("ha-promote-on-shutdown", "ha-promote-on-failure"):
        value = definition.get(key)
        if value is not None and value not in ("always", "when-synced"):
            return format_error(f'{key} must be "always" or "when-synced", got ~p', value)
    return None


def _definition_error(definition: Any, operator: bool) -> str | None:
    """rabbit_policy:validation: each validator module on its keys, then the leftovers."""
    if not isinstance(definition, Mapping):
        return format_error("definition must be a dictionary: ~p", definition)
    if not definition:
        return "no policy provided"
    keys = sorted(definition, key=lambda k: str(k).encode("utf-8"))
    known = [k for k in keys if k in (OPERATOR_KEYS if operator else _POLICY_KEYS)]
    for key in known:
        error = _key_error(key, definition[key])
        if error is not None:
            return error
    handled = set(known)
    if not operator:
        error = _ha_error(definition)
        if error is not None:
            return error
        handled.update(k for k in keys if k in _HA_KEYS)
        if "queue-master-locator" in definition:
            value = definition["queue-master-locator"]
            if value not in ("min-masters", "client-local", "random"):
                return format_error("~p invalid queue-master-locator value", value)
            handled.add("queue-master-locator")
    rest = [(k, definition[k]) for k in keys if k not in handled]
    if rest:
        return format_error("~p are not recognised policy settings", rest)
    return None


def _pattern_error(pattern: Any) -> str | None:
    if not isinstance(pattern, str):
        return format_error("pattern should be a binary but was ~p", pattern)
    try:
        compile_pattern(pattern)
    except PatternError as error:
        return format_error("pattern should be regular expression but is invalid: ~p",
                            (Charlist(error.message), error.offset))
    return None


def _apply_to_error(apply_to: Any) -> str | None:
    if apply_to in APPLY_TO:
        return None
    return f"apply-to '{_erlang_s(apply_to)}' unrecognised; should be 'queues', 'exchanges' or 'all'"


def _erlang_s(value: Any) -> str:
    return value if isinstance(value, str) else format_error("~p", value)


# ------------------------------------------------------------------- values
@dataclass(frozen=True, slots=True)
class Policy:
    vhost: str
    name: str
    pattern: str
    apply_to: str
    priority: int | float
    definition: Mapping[str, Any]
    regex: re.Pattern[str] = field(compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """As /api/policies shows it (and a definitions export holds it)."""
        return {
            "vhost": self.vhost, "name": self.name, "pattern": self.pattern,
            "apply-to": self.apply_to, "definition": dict(self.definition), "priority": self.priority,
        }

    def to_parameter_value(self) -> dict[str, Any]:
        """The runtime parameter's value (an operator policy exports as a parameter)."""
        return {"pattern": self.pattern, "definition": dict(self.definition),
                "priority": self.priority, "apply-to": self.apply_to}

    def applies_to(self, kind: str, name: str, queue_type: str | None = None) -> bool:
        """`kind` is "exchange" or "queue"; a queue also names its type."""
        if kind == "exchange":
            if self.apply_to not in ("all", "exchanges"):
                return False
        else:
            own = "streams" if queue_type == "stream" else f"{queue_type}_queues"
            if self.apply_to not in ("all", "queues", own):
                return False
            unsupported = UNSUPPORTED.get(queue_type or "classic", frozenset())
            if any(key in unsupported for key in self.definition):
                return False
        return self.regex.search(name) is not None


def parse_policy(vhost: str, name: str, body: Mapping[str, Any], *, operator: bool = False) -> Policy:
    """A policy from its JSON fields (pattern, definition, priority, apply-to),
    or PolicyError with every complaint RabbitMQ makes, in its order."""
    pattern = body.get("pattern")
    definition = body.get("definition")
    priority = body.get("priority")
    apply_to = body.get("apply-to")
    priority = 0 if priority is None else priority
    apply_to = "all" if apply_to is None else apply_to
    errors = [
        _definition_error(definition, operator),
        _apply_to_error(apply_to),
        _pattern_error(pattern),
        None if isinstance(priority, (int, float)) and not isinstance(priority, bool)
        else format_error("priority should be a number, actually was ~p", priority),
    ]
    found = [e for e in errors if e is not None]
    if found:
        raise PolicyError("Validation failed\n\n" + "".join(e + "\n" for e in found))
    assert isinstance(pattern, str) and isinstance(definition, Mapping)
    ordered = {k: definition[k] for k in sorted(definition, key=lambda k: str(k).encode("utf-8"))}
    return Policy(vhost, name, pattern, str(apply_to), priority, ordered, compile_pattern(pattern))


def effective_definition(policy: Policy | None, operator: Policy | None) -> dict[str, Any] | None:
    """rabbit_policy:merge_operator_definitions: both definitions, limits the lower of two."""
    if policy is None and operator is None:
        return None
    if operator is None:
        assert policy is not None
        return dict(policy.definition)
    if policy is None:
        return dict(operator.definition)
    merged = dict(policy.definition)
    for key, value in operator.definition.items():
        if key not in merged:
            merged[key] = value
        elif key in OPERATOR_KEYS:
            merged[key] = min(merged[key], value)
        elif isinstance(value, bool) and isinstance(merged[key], bool):
            merged[key] = value
    return {k: merged[k] for k in sorted(merged, key=lambda k: k.encode("utf-8"))}


def _best(policies: Iterable[Policy], kind: str, name: str, queue_type: str | None) -> Policy | None:
    best: Policy | None = None
    for policy in policies:
        if not policy.applies_to(kind, name, queue_type):
            continue
        if best is None or policy.priority > best.priority or (
                policy.priority == best.priority and policy.name < best.name):
            best = policy
    return best


class PolicySet:
    """One vhost's policies and operator policies, by name."""

    def __init__(self) -> None:
        self.policies: dict[str, Policy] = {}
        self.operator_policies: dict[str, Policy] = {}

    def table(self, operator: bool) -> dict[str, Policy]:
        return self.operator_policies if operator else self.policies

    def __bool__(self) -> bool:
        return bool(self.policies or self.operator_policies)

    def listed(self, operator: bool = False) -> list[Policy]:
        """By ascending priority, as rabbit_policy:sort_by_priority lists them."""
        return sorted(self.table(operator).values(), key=lambda p: (p.priority, p.name))

    def match(self, kind: str, name: str, queue_type: str | None = None) -> tuple[Policy | None, Policy | None]:
        """(policy, operator policy) in force on the exchange or queue `name`."""
        if not self:
            return None, None
        return (_best(self.policies.values(), kind, name, queue_type),
                _best(self.operator_policies.values(), kind, name, queue_type))
