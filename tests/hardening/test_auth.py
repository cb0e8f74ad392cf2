"""Users, password hashes and permissions (leveret.broker.auth), without a connection."""

from __future__ import annotations

import base64
import hashlib

import pytest
from pamqp import exceptions

from leveret.broker.auth import MD5, SHA256, SHA512, AccessControl, Permissions, User, hash_password

# Exported by the reference RabbitMQ 3.10.8 (GET /api/definitions) for a user
# created with the password "s3cret".
RABBITMQ_SHA256_HASH = "SNl0/bG8W89otrTYaATF8iJx7Vw2m5F8vW2MkaIolhV3wh1u"


def test_a_hash_exported_by_rabbitmq_checks_its_password() -> None:
    access = AccessControl()
    access.add_user("bob", password_hash=RABBITMQ_SHA256_HASH, hashing_algorithm=SHA256)
    assert access.authenticate("bob", "s3cret") is not None
    assert access.authenticate("bob", "s3cret ") is None
    assert access.authenticate("alice", "s3cret") is None


@pytest.mark.parametrize(("algorithm", "hasher", "size"), [
    (SHA256, hashlib.sha256, 32), (SHA512, hashlib.sha512, 64), (MD5, hashlib.md5, 16),
])
def test_hashes_are_base64_of_salt_and_digest_of_salt_and_password(algorithm: str, hasher, size: int) -> None:
    encoded = hash_password("pässword", algorithm, salt=b"\x01\x02\x03\x04")
    raw = base64.b64decode(encoded)
    assert raw[:4] == b"\x01\x02\x03\x04"
    assert raw[4:] == hasher(b"\x01\x02\x03\x04" + "pässword".encode()).digest()
    assert len(raw) == 4 + size
    assert User("u", raw, algorithm).check_password("pässword")
    assert not User("u", raw, algorithm).check_password("password")


def test_each_hash_gets_its_own_salt() -> None:
    assert hash_password("same") != hash_password("same")


def test_a_user_without_a_password_hash_cannot_log_in() -> None:
    access = AccessControl()
    access.add_user("nopass", password_hash="")
    assert access.authenticate("nopass", "") is None


def test_permissions_search_like_erlang_re_run_and_empty_means_nothing() -> None:
    permissions = Permissions(configure="^cfg", write="w", read="")
    assert permissions.allows("configure", "cfg-1")
    assert not permissions.allows("configure", "x-cfg")
    assert permissions.allows("write", "x-w-y")  # a search, not a full match
    assert not permissions.allows("read", "anything")
    assert permissions.allows("read", "")  # '' means '^$'


def test_vhost_access_refusals_carry_rabbitmqs_texts() -> None:
    access = AccessControl()
    access.add_user("bob", "pw")
    access.set_permissions("bob", "v1", configure="^cfg", write="^w", read="^r")
    with pytest.raises(exceptions.AMQPNotAllowed) as no_vhost:
        access.vhost_access("bob", "v2")
    rights = access.vhost_access("bob", "v1")
    rights.check("configure", "queue", "cfg-q")
    with pytest.raises(exceptions.AMQPAccessRefused) as no_queue:
        rights.check("read", "queue", "cfg-q")
    with pytest.raises(exceptions.AMQPAccessRefused) as default_exchange:
        rights.check("write", "exchange", "")
    assert str(no_vhost.value) == "access to vhost 'v2' refused for user 'bob'"
    assert str(no_queue.value) == "access to queue 'cfg-q' in vhost 'v1' refused for user 'bob'"
    assert str(default_exchange.value) == "access to exchange 'amq.default' in vhost 'v1' refused for user 'bob'"


def test_definitions_replace_the_seed_users_and_keep_rabbitmqs_formats() -> None:
    access = AccessControl.with_passwords({"guest": "guest"})
    data = {
        "rabbit_version": "3.10.8",
        "users": [
            {"name": "bob", "password_hash": RABBITMQ_SHA256_HASH,
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"], "limits": {}},
            {"name": "carol", "password_hash": hash_password("c", SHA512),
             "hashing_algorithm": SHA512, "tags": "monitoring,management"},
            {"name": "dave", "password": "clear"},
            {"name": "eve", "password": "x", "password_hash": "eA=="},
        ],
        "vhosts": [{"name": "/"}, {"name": "orders"}],
        "permissions": [
            {"user": "bob", "vhost": "orders", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": "carol", "vhost": "/", "configure": "(", "write": "", "read": ".*"},
            {"user": "mallory", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
        ],
    }
    result = access.load_definitions(data)
    assert sorted(access.users) == ["bob", "carol", "dave"]
    assert access.authenticate("guest", "guest") is None
    assert access.authenticate("bob", "s3cret") is not None
    assert access.authenticate("carol", "c") is not None
    assert access.authenticate("dave", "clear") is not None
    assert access.users["carol"].tags == ("monitoring", "management")
    assert result.vhosts == ["/", "orders"]
    assert result.permissions == 1
    assert [w.split(":")[0] for w in result.warnings] == [
        "user 'eve'", "permissions of 'carol' in vhost '/'", "permissions of unknown user 'mallory' in vhost '/'"
    ]
    exported = access.export()
    assert exported["users"][0] == {
        "name": "bob", "password_hash": RABBITMQ_SHA256_HASH,
        "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"], "limits": {},
    }
    assert exported["permissions"] == [
        {"user": "bob", "vhost": "orders", "configure": ".*", "write": ".*", "read": ".*"}
    ]


def test_exports_older_than_3_6_without_an_algorithm_are_md5() -> None:
    old = AccessControl()
    old.load_definitions({"rabbit_version": "3.5.7", "users": [
        {"name": "u", "password_hash": hash_password("p", MD5), "tags": ""}]})
    new = AccessControl()
    new.load_definitions({"rabbit_version": "3.8.0", "users": [
        {"name": "u", "password_hash": hash_password("p", SHA256), "tags": ""}]})
    assert old.authenticate("u", "p") is not None
    assert new.authenticate("u", "p") is not None


def test_definitions_without_users_keep_the_users_there_are() -> None:
    access = AccessControl.with_passwords({"guest": "guest"})
    access.load_definitions({"queues": [], "vhosts": [{"name": "/"}]})
    assert access.authenticate("guest", "guest") is not None
