"""Who may do what: users with salted password hashes, and per-vhost permissions.

This is RabbitMQ's internal auth backend (rabbit_auth_backend_internal,
rabbit_password, rabbit_access_control), with its formats, so that a
definitions export moves over as it is.

Theory of operation. `AccessControl` holds users (name -> `User`, whose
password is kept only as RabbitMQ's hash: base64 of a 4-byte salt followed by
H(salt + password), H one of sha256 (the default), sha512 or md5) and
permissions ((user, vhost) -> `Permissions`, three regular expressions for
configure, write and read). A connection authenticates once (`authenticate`),
is let into a vhost once (`vhost_access`, 530 when the user has no permissions
there), and from then on its channels ask the returned `VhostAccess` before
each operation (`check`): a 403 ACCESS_REFUSED with RabbitMQ's text when the
resource name does not match the user's expression for that permission.

Which operation needs which permission (rabbit_channel, checked on 3.10):
- configure: queue.declare (non-passive, on the actual name, so a server-named
  queue is checked as `amq.gen-...`), queue.delete, exchange.declare
  (non-passive), exchange.delete;
- write: basic.publish on the exchange (the default exchange is checked as
  `amq.default`), queue.bind/unbind on the queue, exchange.bind/unbind on the
  destination; a new queue with a dead-letter exchange needs write on it, a new
  exchange with an alternate exchange needs write on that one;
- read: basic.get, basic.consume and queue.purge on the queue, the source
  exchange of any bind/unbind; the new queue (or exchange) itself when it names
  a dead-letter (alternate) exchange.
Passive declares need nothing. Matching is a search, not a full match, as
Erlang's re:run does; the empty expression means '^$'.

Topic permissions (RabbitMQ's topic authorisation) add, per user, vhost and
exchange, a write and a read expression on routing keys, with `{username}`
and `{vhost}` replaced by the user's and the vhost's names. They apply to
exchanges of type `topic` only, and only where the user has them for that
exchange (none means any key). Publishing needs the routing key to match
the write expression (after write on the exchange, a 404 and the internal
exchange's 403, and CC/BCC keys are not checked: 3.10 as observed); a
queue.bind/unbind or exchange.bind/unbind needs the binding key to match the
read expression of the source exchange, after read on it. The refusal is a
403: "access to topic 'KEY' in exchange 'X' in vhost 'V' refused for user 'U'".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pamqp import exceptions

from leveret.broker.limits import NO_USER_LIMITS, UserLimits

SHA256 = "rabbit_password_hashing_sha256"
SHA512 = "rabbit_password_hashing_sha512"
MD5 = "rabbit_password_hashing_md5"
HASHES = {SHA256: hashlib.sha256, SHA512: hashlib.sha512, MD5: hashlib.md5}
DEFAULT_HASHING = SHA256

FULL_ACCESS = ".*"
PERMISSIONS = ("configure", "write", "read")
# Exports older than 3.6.1 carry no hashing_algorithm; RabbitMQ reads those as md5.
_MD5_ERA = re.compile(r"^3\.[0-5]\.")
_CACHE_LIMIT = 256


def hash_password(password: str, algorithm: str = DEFAULT_HASHING, salt: bytes | None = None) -> str:
    """RabbitMQ's password_hash: base64(salt ++ H(salt ++ utf-8 password)), 4 random salt bytes."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + _digest(algorithm, salt, password)).decode("ascii")


def _digest(algorithm: str, salt: bytes, password: str) -> bytes:
    hasher = HASHES.get(algorithm)
    if hasher is None:
        raise ValueError(f"unknown hashing algorithm '{algorithm}'")
    return hasher(salt + password.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password_hash: bytes  # decoded: 4-byte salt + digest; b"" means no password login
    hashing_algorithm: str = DEFAULT_HASHING
    tags: tuple[str, ...] = ()
    limits: UserLimits = NO_USER_LIMITS

    def check_password(self, password: str) -> bool:
        stored = self.password_hash
        if len(stored) <= 4 or self.hashing_algorithm not in HASHES:
            return False  # a passwordless user cannot log in with a password
        return hmac.compare_digest(stored[4:], _digest(self.hashing_algorithm, stored[:4], password))

    @property
    def encoded_hash(self) -> str:
        return base64.b64encode(self.password_hash).decode("ascii")


def _compile(expression: str) -> re.Pattern[str]:
    return re.compile(expression or "^$")


@dataclass(frozen=True, slots=True)
class TopicPermissions:
    """A user's write/read expressions on the routing keys of one topic exchange."""

    exchange: str
    write: str = FULL_ACCESS
    read: str = FULL_ACCESS

    def compile(self, user: str, vhost: str) -> TopicRules:
        """The expressions with the variables RabbitMQ fills in for AMQP 0-9-1
        (not `{client_id}`, which stays as written), compiled; None is any key."""

        def expand(expression: str) -> re.Pattern[str] | None:
            if expression == FULL_ACCESS:
                return None
            return _compile(expression.replace("{username}", user).replace("{vhost}", vhost))

        return TopicRules(expand(self.write), expand(self.read))


@dataclass(frozen=True, slots=True)
class TopicRules:
    write: re.Pattern[str] | None
    read: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class Permissions:
    """A user's configure/write/read expressions in one vhost."""

    configure: str = FULL_ACCESS
    write: str = FULL_ACCESS
    read: str = FULL_ACCESS
    _patterns: dict[str, re.Pattern[str] | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # None stands for ".*": every name matches, so the hot path skips the search.
        patterns = {
            name: None if expression == FULL_ACCESS else _compile(expression)
            for name, expression in (("configure", self.configure), ("write", self.write), ("read", self.read))
        }
        object.__setattr__(self, "_patterns", patterns)

    def allows(self, permission: str, name: str) -> bool:
        pattern = self._patterns[permission]
        return pattern is None or pattern.search(name) is not None

    def unrestricted(self, permission: str) -> bool:
        return self._patterns[permission] is None


# What a connection holds once its user's permissions in its vhost are cleared.
NO_ACCESS = Permissions("(?!)", "(?!)", "(?!)")


class VhostAccess:
    """One connection's rights in the vhost it opened; channels call `check`."""

    __slots__ = ("user", "vhost", "permissions", "_cache", "write_all", "topics", "last_write", "__weakref__")

    def __init__(
        self,
        user: str,
        vhost: str,
        permissions: Permissions,
        topics: Iterable[TopicPermissions] = (),
    ) -> None:
        self.user = user
        self.vhost = vhost
        self.permissions = permissions
        # exchange -> rules; empty for nearly every user, so callers test it first.
        self.topics = {topic.exchange: topic.compile(user, vhost) for topic in topics}
        self._cache: dict[tuple[str, str, str], bool] = {}
        # The publish path asks this first: most users may write anywhere. Then it
        # checks nothing, and only notes the exchange, for `refresh`.
        self.write_all = permissions.unrestricted("write")
        self.last_write: str | None = None

    def refresh(self, permissions: Permissions) -> None:
        """New permissions for an open connection, as RabbitMQ applies them: what
        its channels were already allowed stays allowed (their permission
        cache), every other name is checked against the new expressions."""
        cache: dict[tuple[str, str, str], bool] = {key: allowed for key, allowed in self._cache.items() if allowed}
        if self.write_all and self.last_write is not None:
            cache[("write", "exchange", self.last_write or "amq.default")] = True
        self.permissions = permissions
        self.write_all = permissions.unrestricted("write")
        self._cache = cache

    def check(self, permission: str, kind: str, name: str) -> None:
        """403 ACCESS_REFUSED unless `permission` covers the `kind` ('queue' or 'exchange') `name`."""
        if kind == "exchange" and not name:
            name = "amq.default"  # rabbit_access_control checks the default exchange by this name
        key = (permission, kind, name)
        allowed = self._cache.get(key)
        if allowed is None:
            allowed = self.permissions.allows(permission, name)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = allowed
        if not allowed:
            raise exceptions.AMQPAccessRefused(
                f"access to {kind} '{name}' in vhost '{self.vhost}' refused for user '{self.user}'"
            )

    def check_topic(self, permission: str, exchange: str, routing_key: str) -> None:
        """403 unless the user's topic `permission` ('write' or 'read') on the
        topic exchange `exchange` admits `routing_key`; callers check the type."""
        rules = self.topics.get(exchange)
        if rules is None:
            return
        pattern = rules.write if permission == "write" else rules.read
        if pattern is not None and pattern.search(routing_key) is None:
            raise exceptions.AMQPAccessRefused(
                f"access to topic '{routing_key}' in exchange '{exchange}' in vhost "
                f"'{self.vhost}' refused for user '{self.user}'"
            )


@dataclass(slots=True)
class AccessLoad:
    """What `AccessControl.load_definitions` took from a definitions file."""

    users: int = 0
    vhosts: list[str] = field(default_factory=list)
    permissions: int = 0
    topic_permissions: int = 0
    warnings: list[str] = field(default_factory=list)


class AccessControl:
    """The users of a broker and their permissions per vhost."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permissions] = {}
        self.topic_permissions: dict[tuple[str, str], dict[str, TopicPermissions]] = {}
        # The open connections' rights, refreshed when permissions change.
        self._live: weakref.WeakSet[VhostAccess] = weakref.WeakSet()

    @classmethod
    def with_passwords(
        cls, passwords: Mapping[str, str], vhosts: Iterable[str] = ("/",), tags: tuple[str, ...] = ("administrator",)
    ) -> AccessControl:
        """Users given as name -> password (BrokerSettings.users), with full access to `vhosts`,
        as RabbitMQ's default user has on its default vhost."""
        access = cls()
        for name, password in passwords.items():
            access.add_user(name, password, tags=tags)
            for vhost in vhosts:
                access.set_permissions(name, vhost)
        return access

    # ------------------------------------------------------------ users
    def add_user(
        self, name: str, password: str | None = None, *, password_hash: str | bytes | None = None,
        hashing_algorithm: str = DEFAULT_HASHING, tags: Iterable[str] = (), limits: UserLimits = NO_USER_LIMITS,
    ) -> User:
        """Add (or replace) a user, from a clear password or an existing hash (base64 or raw)."""
        if hashing_algorithm not in HASHES:
            raise ValueError(f"unknown hashing algorithm '{hashing_algorithm}'")
        if password is not None:
            raw = base64.b64decode(hash_password(password, hashing_algorithm))
        elif isinstance(password_hash, str):
            raw = base64.b64decode(password_hash, validate=True) if password_hash else b""
        else:
            raw = password_hash or b""
        user = User(name, raw, hashing_algorithm, tuple(tags), limits)
        self.users[name] = user
        return user

    def delete_user(self, name: str) -> None:
        self.users.pop(name, None)
        for key in [key for key in self.permissions if key[0] == name]:
            del self.permissions[key]
        for key in [key for key in self.topic_permissions if key[0] == name]:
            del self.topic_permissions[key]

    def set_permissions(
        self, user: str, vhost: str, configure: str = FULL_ACCESS, write: str = FULL_ACCESS, read: str = FULL_ACCESS,
    ) -> Permissions:
        permissions = Permissions(configure, write, read)  # re.error for a bad expression
        self.permissions[(user, vhost)] = permissions
        self._refresh(user, vhost, permissions)
        return permissions

    def clear_permissions(self, user: str, vhost: str) -> bool:
        """False when the user had none there. Open connections keep what their
        channels were allowed already; nothing else (RabbitMQ 3.10, observed)."""
        if self.permissions.pop((user, vhost), None) is None:
            return False
        self._refresh(user, vhost, NO_ACCESS)
        return True

    def clear_topic_permissions(self, user: str, vhost: str, exchange: str | None = None) -> bool:
        """Clear one exchange's topic permissions, or all the user's in `vhost`; False if none."""
        topics = self.topic_permissions.get((user, vhost))
        if not topics or (exchange is not None and exchange not in topics):
            return False
        if exchange is None:
            topics.clear()
        else:
            del topics[exchange]
        if not topics:
            del self.topic_permissions[(user, vhost)]
        return True

    def delete_vhost(self, vhost: str) -> None:
        for key in [key for key in self.permissions if key[1] == vhost]:
            del self.permissions[key]
        for key in [key for key in self.topic_permissions if key[1] == vhost]:
            del self.topic_permissions[key]

    def _refresh(self, user: str, vhost: str, permissions: Permissions) -> None:
        for access in list(self._live):
            if access.user == user and access.vhost == vhost:
                access.refresh(permissions)

    def set_topic_permissions(
        self, user: str, vhost: str, exchange: str, write: str = FULL_ACCESS, read: str = FULL_ACCESS
    ) -> TopicPermissions:
        """Replace the user's topic permissions on `exchange` in `vhost`; taken
        up by connections opened from then on, as RabbitMQ's are."""
        topic = TopicPermissions(exchange, write, read)
        topic.compile(user, vhost)  # re.error for a bad expression
        self.topic_permissions.setdefault((user, vhost), {})[exchange] = topic
        return topic

    def authenticate(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        if user is None or not user.check_password(password):
            return None
        return user

    def vhost_access(self, user: str, vhost: str) -> VhostAccess:
        """The user's rights in `vhost`; 530 NOT_ALLOWED (as on connection.open) without any."""
        permissions = self.permissions.get((user, vhost))
        if permissions is None:
            raise exceptions.AMQPNotAllowed(f"access to vhost '{vhost}' refused for user '{user}'")
        topics = self.topic_permissions.get((user, vhost), {}).values()
        access = VhostAccess(user, vhost, permissions, topics)
        self._live.add(access)
        return access

    # ------------------------------------------------------ definitions
    def load_definitions(self, data: Mapping[str, Any], *, replace: bool = True) -> AccessLoad:
        """Take users, vhost names and permissions from a RabbitMQ definitions export.

        At boot (`replace`), when the file lists users, they replace the ones
        held so far (an export is the whole user base: a default guest that is
        not in it does not stay); an import into a running broker adds and
        updates, as RabbitMQ's does. A bad entry is a warning, the rest still loads.
        """
        result = AccessLoad()
        version = str(data.get("rabbit_version") or data.get("rabbitmq_version") or "")
        users = [item for item in data.get("users") or [] if isinstance(item, Mapping)]
        if users and replace:
            self.users.clear()
            self.permissions.clear()
            self.topic_permissions.clear()
        for item in users:
            try:
                self._load_user(item, version)
                result.users += 1
            except (ValueError, binascii.Error) as error:
                result.warnings.append(f"user {item.get('name')!r}: {error}")
        for item in data.get("vhosts") or []:
            if isinstance(item, Mapping) and isinstance(item.get("name"), str):
                result.vhosts.append(item["name"])
        for item in data.get("permissions") or []:
            if not isinstance(item, Mapping):
                continue
            name, vhost = str(item.get("user", "")), str(item.get("vhost", ""))
            if name not in self.users:
                result.warnings.append(f"permissions of unknown user {name!r} in vhost {vhost!r}")
                continue
            try:
                self.set_permissions(name, vhost, *(str(item.get(key, "")) for key in PERMISSIONS))
                result.permissions += 1
            except re.error as error:
                result.warnings.append(f"permissions of {name!r} in vhost {vhost!r}: bad expression ({error})")
        for item in data.get("topic_permissions") or []:
            if not isinstance(item, Mapping):
                continue
            name, vhost = str(item.get("user", "")), str(item.get("vhost", ""))
            exchange = str(item.get("exchange", ""))
            if name not in self.users:
                result.warnings.append(f"topic permissions of unknown user {name!r} in vhost {vhost!r}")
                continue
            try:
                self.set_topic_permissions(
                    name, vhost, exchange, str(item.get("write", "")), str(item.get("read", ""))
                )
                result.topic_permissions += 1
            except re.error as error:
                result.warnings.append(
                    f"topic permissions of {name!r} on exchange {exchange!r} in vhost {vhost!r}:"
                    f" bad expression ({error})"
                )
        return result

    def _load_user(self, item: Mapping[str, Any], version: str) -> None:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("no name")
        tags = _tags(item.get("tags"))
        limits = UserLimits.from_json(item.get("limits") or {})
        if "password" in item and "password_hash" in item:
            raise ValueError("both password and password_hash are given")
        algorithm = item.get("hashing_algorithm")
        if not algorithm:
            algorithm = MD5 if _MD5_ERA.match(version) else DEFAULT_HASHING
        if "password" in item:
            self.add_user(name, str(item["password"]), hashing_algorithm=str(algorithm), tags=tags, limits=limits)
        else:
            self.add_user(name, password_hash=str(item.get("password_hash") or ""),
                          hashing_algorithm=str(algorithm), tags=tags, limits=limits)

    def export(self) -> dict[str, list[dict[str, Any]]]:
        """Users and permissions in the definitions format (`rabbitmqctl export_definitions`)."""
        return {
            "users": [
                {"name": user.name, "password_hash": user.encoded_hash, "hashing_algorithm": user.hashing_algorithm,
                 "tags": list(user.tags), "limits": user.limits.to_json()}
                for user in sorted(self.users.values(), key=lambda u: u.name)
            ],
            "permissions": [
                {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read}
                for (user, vhost), p in sorted(self.permissions.items())
            ],
            "topic_permissions": [
                {"user": user, "vhost": vhost, "exchange": t.exchange, "write": t.write, "read": t.read}
                for (user, vhost), topics in sorted(self.topic_permissions.items())
                for t in sorted(topics.values(), key=lambda t: t.exchange)
            ],
        }


def _tags(value: Any) -> tuple[str, ...]:
    """Tags as 3.10 exports them (a list) or as older ones did ("a,b")."""
    if isinstance(value, str):
        return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(tag) for tag in value)
    return ()
