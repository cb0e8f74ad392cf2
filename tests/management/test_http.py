"""The HTTP layer: basic auth as RabbitMQ answers it, keep-alive, chunked bodies, limits.

Header names are case-insensitive (RFC 9110): raw answers are compared in lower case.
"""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest

from leveret.broker.broker import Broker, BrokerSettings
from leveret.management import ManagementServer, auth, static
from tests.management.conftest import Http

GUEST = "Basic " + base64.b64encode(b"guest:guest").decode()


def raw_exchange(port: int, data: bytes, *, until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if not until_close:
                break
        return b"".join(chunks)


def test_no_credentials_is_401_with_a_challenge(http: Http) -> None:
    reply = http.request("GET", "/api/overview", user=None)

    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith("Basic realm=")
    assert reply.body == b""


def test_wrong_password_is_rabbitmqs_login_failed(http: Http) -> None:
    reply = http.request("GET", "/api/overview", password="wrong")

    assert reply.status == 401
    assert reply.json == {"error": "not_authorized", "reason": "Login failed"}


@pytest.mark.parametrize(("header", "peer", "expected"), [
    (GUEST, "127.0.0.1", auth.User("guest")),
    (GUEST, "::1", auth.User("guest")),
    (GUEST, "10.1.2.3", auth.Refused("User can only log in via localhost")),
    ("Basic " + base64.b64encode(b"guest:nope").decode(), "127.0.0.1", auth.Refused("Login failed")),
    ("Basic " + base64.b64encode(b"ops:secret").decode(), "10.1.2.3", auth.User("ops")),
    ("Basic not-base64!", "127.0.0.1", None),
    ("Bearer abc", "127.0.0.1", None),
    (None, "127.0.0.1", None),
])
def test_authenticate(header: str | None, peer: str, expected: object) -> None:
    broker = Broker(settings=BrokerSettings(users={"guest": "guest", "ops": "secret"}))

    assert auth.authenticate(broker, header, peer) == expected


def test_keep_alive_serves_several_requests_on_one_socket(leveret_management: ManagementServer) -> None:
    request = (b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: " + GUEST.encode() + b"\r\n\r\n")
    last = request.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")

    answer = raw_exchange(leveret_management.port, request + request + last)

    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.count(b'{"name": "guest", "tags": ["administrator"]}') == 3


def test_chunked_body_with_expect_continue(leveret_management: ManagementServer) -> None:
    body = b'{"durable": false, "arguments": {"x-max-length": 3}}'
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    request = (b"PUT /api/queues/%2F/chunky HTTP/1.1\r\nHost: x\r\nAuthorization: " + GUEST.encode()
               + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
               b"Expect: 100-continue\r\nConnection: close\r\n\r\n" + chunked)

    answer = raw_exchange(leveret_management.port, request)

    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n")
    assert Http(leveret_management.url).get("/api/queues/%2F/chunky")["arguments"] == {"x-max-length": 3}


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"NONSENSE\r\n\r\n", b"400"),
    (b"GET /api HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
    (b"POST /api/definitions HTTP/1.1\r\nContent-Length: abc\r\n\r\n", b"400"),
    (b"GET /api HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
])
def test_malformed_requests_get_an_error_and_a_close(leveret_management: ManagementServer,
                                                     request_bytes: bytes, status: bytes) -> None:
    answer = raw_exchange(leveret_management.port, request_bytes)

    assert answer.split(b" ")[1] == status
    assert b"connection: close" in answer.lower()


def test_bad_json_body_is_400(http: Http) -> None:
    reply = http.request("POST", "/api/definitions", raw=b"{not json")

    assert reply.status == 400
    assert reply.json["error"] == "bad_request"
    assert reply.json["reason"] == "not_json"


def test_head_answers_without_a_body(leveret_management: ManagementServer) -> None:
    request = b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    answer = raw_exchange(leveret_management.port, request)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: " in head.lower()
    assert body == b""


def test_root_and_unknown_paths(http: Http) -> None:
    assert http.request("GET", "/", user=None).status == 200
    assert http.request("GET", "/elsewhere", user=None).status == 404


def test_a_body_over_the_limit_is_refused_before_100_continue(leveret_management: ManagementServer) -> None:
    request = (b"POST /api/definitions HTTP/1.1\r\nHost: x\r\nAuthorization: " + GUEST.encode()
               + b"\r\nContent-Length: 999999999999\r\nExpect: 100-continue\r\n\r\n")

    answer = raw_exchange(leveret_management.port, request)

    assert answer.startswith(b"HTTP/1.1 413 ")


def test_no_content_has_no_length(leveret_management: ManagementServer) -> None:
    request = (b"PUT /api/queues/%2F/q HTTP/1.1\r\nHost: x\r\nAuthorization: " + GUEST.encode()
               + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    again = request

    answer = raw_exchange(leveret_management.port, request) + raw_exchange(leveret_management.port, again)

    first, second = answer.lower().split(b"\r\n\r\n")[:2]
    assert first.startswith(b"http/1.1 201 created") and b"content-length: 0" in first
    assert second.startswith(b"http/1.1 204 no content") and b"content-length" not in second


def test_a_chunk_size_line_too_long_is_an_empty_400_and_a_close(leveret_management: ManagementServer,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    request = (b"POST /api/definitions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"1" * 70_000 + b"\r\n")

    answer = raw_exchange(leveret_management.port, request)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400" and b"connection: close" in head.lower()
    assert body == b""
    assert Http(leveret_management.url).get("/api/whoami")["name"] == "guest"  # still serving
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def test_routing_comes_before_credentials_as_in_rabbitmq(http: Http) -> None:
    unknown = http.request("GET", "/api/not-a-thing", user=None)
    wrong_method = http.request("POST", "/api/overview", user=None)
    known = http.request("GET", "/api/overview", user=None)

    assert (unknown.status, unknown.json) == (404, {"error": "Object Not Found", "reason": "Not Found"})
    assert wrong_method.status == 405 and wrong_method.headers["allow"] == "GET"
    assert known.status == 401


def test_static_files_are_served_under_the_root_after_login(leveret_management: ManagementServer, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "app.js").write_text("console.log(1)\n")
    (tmp_path / ".secret").write_text("no")
    (tmp_path / "index.html").write_text("<html></html>")
    (tmp_path / "login.html").write_text("<form></form>")
    monkeypatch.setattr(static, "ROOT", tmp_path)
    http = Http(leveret_management.url, user=None)

    assert http.request("GET", "/login.html").body == b"<form></form>"  # the one page before login
    assert http.request("GET", "/js/app.js").status == 401
    assert http.request("GET", "/").body == b"<form></form>"  # redirected (urllib follows) to the login page

    login = http.request("POST", "/login", {"username": "guest", "password": "guest"})
    assert login.status == 200, login.body
    cookie = {"Cookie": login.headers["set-cookie"].split(";")[0]}
    served = http.request("GET", "/js/app.js", headers=cookie)

    assert (served.status, served.body) == (200, b"console.log(1)\n")
    assert served.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert http.request("GET", "/.secret", headers=cookie).status == 404
    assert http.request("GET", "/js/%2E%2E/%2Esecret", headers=cookie).status == 404
    assert http.request("GET", "/", headers=cookie).body == b"<html></html>"
