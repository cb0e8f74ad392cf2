"""`leveret serve` with a RabbitMQ definitions file, TLS and limits, as a user runs it."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
from pathlib import Path

import pika
import pika.exceptions
import pytest

from leveret.broker.auth import hash_password
from tests.hardening.conftest import NEEDS_OPENSSL, Pki, client_context
from tests.hardening.test_auth import RABBITMQ_SHA256_HASH
from tests.server.test_server_cli import first_line, leveret

DEFINITIONS = {
    "rabbit_version": "3.10.8",
    "users": [
        # bob's hash as RabbitMQ 3.10 exported it (password "s3cret"); no guest in this setup.
        {"name": "bob", "password_hash": RABBITMQ_SHA256_HASH,
         "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"], "limits": {}},
        {"name": "viewer", "password_hash": hash_password("v", "rabbit_password_hashing_sha512"),
         "hashing_algorithm": "rabbit_password_hashing_sha512", "tags": ["monitoring"], "limits": {}},
    ],
    "vhosts": [{"name": "/"}, {"name": "orders"}],
    "permissions": [
        {"user": "bob", "vhost": "orders", "configure": ".*", "write": ".*", "read": ".*"},
        {"user": "viewer", "vhost": "orders", "configure": "^$", "write": "^$", "read": ".*"},
    ],
    "queues": [{"name": "invoices", "vhost": "orders", "durable": True, "auto_delete": False, "arguments": {}}],
    "exchanges": [], "bindings": [],
}


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=10)


@NEEDS_OPENSSL
def test_serve_moves_a_rabbitmq_setup_over_and_speaks_tls(tmp_path: Path, pki: Pki) -> None:
    definitions = tmp_path / "definitions.json"
    definitions.write_text(json.dumps(DEFINITIONS))
    process = leveret("serve", "--port", "0", "--http-port", "off", "--tls-port", "0",
                      "--cert", str(pki.server_cert), "--key", str(pki.server_key),
                      "--definitions", str(definitions), "--max-connections", "10",
                      "--memory-high-watermark", "4GiB", "--consumer-timeout", "60000")
    try:
        plain = first_line(process, timeout=5.0)
        assert process.stdout is not None
        secure = process.stdout.readline()  # printed right after (may already be buffered: no select)
        assert "listening on amqp://" in plain, plain
        assert secure.startswith("leveret listening on amqps://127.0.0.1:"), secure
        port = int(secure.split(":")[-1].split(" ")[0])
        tls = pika.SSLOptions(client_context(pki), "localhost")
        bob = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", port, "orders", pika.PlainCredentials("bob", "s3cret"), ssl_options=tls))
        channel = bob.channel()
        declared = channel.queue_declare("invoices", durable=True, passive=True)
        channel.basic_publish("", "invoices", b"paid")
        bob.close()
        viewer = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", port, "orders", pika.PlainCredentials("viewer", "v"), ssl_options=tls))
        channel = viewer.channel()
        _, _, body = channel.basic_get("invoices", auto_ack=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_purge("invoices")
            channel.queue_declare("mine")
        viewer.close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", port, "/", pika.PlainCredentials("guest", "guest"), ssl_options=tls))
    finally:
        out, err = stop(process)
    assert declared.method.message_count == 0
    assert body == b"paid"
    assert refused.value.args == (
        403, "ACCESS_REFUSED - access to queue 'mine' in vhost 'orders' refused for user 'viewer'")
    assert process.returncode == 0, err


@pytest.mark.parametrize(("args", "message"), [
    (["--memory-high-watermark", "lots"], "leveret: --memory-high-watermark: not a memory watermark: 'lots'"),
    (["--tls-port", "0"], "leveret: --tls-port needs --cert and --key"),
    (["--cert", "x.pem"], "leveret: --cert and --key go with --tls-port"),
    (["--tls-port", "0", "--cert", "/nonexistent.pem", "--key", "/nonexistent.key"], "leveret: cannot set up TLS:"),
])
def test_serve_says_what_is_wrong_with_its_options(args: list[str], message: str) -> None:
    process = leveret("serve", "--port", "0", "--http-port", "off", *args)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 1
    assert err.startswith(message), err
    assert out == ""


def test_tls_context_requires_a_ca_to_require_client_certificates(pki: Pki) -> None:
    from leveret.server.shell import tls_context

    with pytest.raises(ValueError):
        tls_context(str(pki.server_cert), str(pki.server_key), fail_if_no_peer_cert=True)
    context = tls_context(str(pki.server_cert), str(pki.server_key), str(pki.ca))
    assert context.verify_mode == ssl.CERT_OPTIONAL
