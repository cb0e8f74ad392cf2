"""The connection handshake: protocol header, start/start-ok and login, tune/tune-ok, open.

Theory of operation. Each step moves `state` one on (connection.State); the
dispatcher (connection) lets through only the method the state expects. Login
is PLAIN or AMQPLAIN against the broker's users; a refused one is closed with
a frame only for clients that asked (authentication_failure_close), else the
socket is dropped later, as RabbitMQ does. tune-ok must stay within what we
offered; open checks the node's, vhost's and user's connection limits, the
vhost, and the user's access to it, in RabbitMQ's order.
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
from typing import TYPE_CHECKING, Any

from pamqp import commands, decode, exceptions

from leveret.amqp_wire import framing
from leveret.broker.limits import NO_USER_LIMITS, NO_VHOST_LIMITS
from leveret.server.connection_state import FRAME_MIN_SIZE, ConnectionState, State, log
from leveret.version import RABBITMQ_VERSION

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}



def _version() -> str:
    try:
        return importlib.metadata.version("leveret")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


# Clients branch on product and version to pick RabbitMQ's semantics (kombu
# and Celery choose the basic.qos `global` flag this way). leveret implements
# RabbitMQ 3.10's semantics, so it says so there and names itself elsewhere.
COMPATIBLE_PRODUCT = "RabbitMQ"



def server_properties() -> dict[str, Any]:
    return {
        "capabilities": CAPABILITIES,
        "cluster_name": f"leveret@{socket.gethostname()}",
        "copyright": "Copyright (c) the leveret authors",
        "information": f"leveret {_version()}: a RabbitMQ-compatible AMQP 0-9-1 broker in Python",
        "platform": f"leveret {_version()} on Python {platform.python_version()}",
        "product": COMPATIBLE_PRODUCT,
        "version": RABBITMQ_VERSION,
    }



class Handshake(ConnectionState):
    if TYPE_CHECKING:  # from connection_closing
        def close_with(
            self, error: exceptions.AMQPError, class_id: int = 0, method_id: int = 0, *, with_frame: bool = False,
        ) -> None: ...

        def _drop_later(self) -> None: ...

    def _read_protocol_header(self) -> bool:
        header = self.reader.take(8)
        if header is None:
            return False
        if header != framing.PROTOCOL_HEADER:
            # RabbitMQ answers an unsupported header with the one it speaks, then closes.
            self.send(framing.PROTOCOL_HEADER)
            self.want_close = True
            return False
        self.state = State.AWAIT_START_OK
        self.send_method(
            0,
            commands.Connection.Start(
                version_major=0,
                version_minor=9,
                server_properties=server_properties(),
                mechanisms="PLAIN AMQPLAIN",
                locales="en_US",
            ),
        )
        return True

    def _start_ok(self, method: commands.Connection.StartOk) -> None:
        self.client_properties = dict(method.client_properties or {})
        mechanism = method.mechanism
        user, password = _credentials(mechanism, method.response)
        if user is None or password is None:
            # An unknown mechanism or a response it cannot read: RabbitMQ sends no
            # frame, whatever the client's capabilities (observed).
            self.close_reason = f"cannot read a {mechanism} login"
            self._drop_later()
            return
        if self.broker.access.authenticate(user, password) is None:
            self._refuse_login(mechanism)
            return
        if user in self.broker.settings.loopback_users and not _is_loopback(self.peer_host):
            self._refuse_login(mechanism, loopback=user)
            return
        self.user = user
        self.auth_mechanism = mechanism
        self.state = State.AWAIT_TUNE_OK
        settings = self.broker.settings
        self.send_method(
            0,
            commands.Connection.Tune(
                channel_max=settings.channel_max, frame_max=settings.frame_max, heartbeat=settings.heartbeat
            ),
        )

    def _refuse_login(self, mechanism: str, loopback: str | None = None) -> None:
        if loopback is not None:
            text = f"User '{loopback}' can only connect via localhost"
        else:
            text = (
                f"Login was refused using authentication mechanism {mechanism}. "
                "For details see the broker logfile."
            )
        self.close_reason = text
        if self.capabilities.get("authentication_failure_close"):
            self.close_with(exceptions.AMQPAccessRefused(text), with_frame=True)
        else:
            self._drop_later()  # without the capability RabbitMQ drops the socket, 3 s on

    def _tune_ok(self, method: commands.Connection.TuneOk) -> None:
        settings = self.broker.settings
        if method.frame_max and method.frame_max < FRAME_MIN_SIZE:
            raise exceptions.AMQPNotAllowed(
                f"frame_max={method.frame_max} < {FRAME_MIN_SIZE} min size"
            )
        # 0 ("no limit") is over any limit the server has (rabbit_reader's
        # validate_negotiated_integer_value): RabbitMQ refuses it too.
        if method.frame_max == 0 or method.frame_max > settings.frame_max:
            raise exceptions.AMQPNotAllowed(
                f"frame_max={method.frame_max} > {settings.frame_max} max size"
            )
        if method.channel_max == 0 or method.channel_max > settings.channel_max:
            raise exceptions.AMQPNotAllowed(
                f"channel_max={method.channel_max} > {settings.channel_max} max"
            )
        self.frame_max = method.frame_max
        self.channel_max = method.channel_max
        self.heartbeat = method.heartbeat
        self.reader.frame_max = self.frame_max
        self.state = State.AWAIT_OPEN
        self._tuned = True

    def _open(self, method: commands.Connection.Open) -> None:
        # RabbitMQ's order: the node's connection limit, the vhost's and the
        # user's, the vhost, the user's access to it.
        name = method.virtual_host
        known = self.broker.vhosts.get(name)
        user = self.broker.access.users.get(self.user)
        self._resources.connection_opening(
            self.broker.settings.connection_max, name, self.user,
            known.limits if known is not None else NO_VHOST_LIMITS,
            user.limits if user is not None else NO_USER_LIMITS,
        )
        vhost = self.broker.vhost(name)
        self.access = self.broker.access.vhost_access(self.user, name)
        self.vhost = vhost
        self.user_limits = user.limits if user is not None else NO_USER_LIMITS
        self._resources.connection_opened(name, self.user)
        self._open_vhost = name
        self._counted_open = True
        self.state = State.OPEN
        self.send_method(0, commands.Connection.OpenOk())
        log.info("connection opened", extra={
            "event": "connection_opened", "connection": self.name, "user": self.user,
            "vhost": method.virtual_host, "client": _client_name(self.client_properties),
        })


def _client_name(properties: dict[str, Any]) -> str:
    """What the client calls itself: its connection_name, else its product."""
    for key in ("connection_name", "product"):
        value = properties.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and value:
            return value
    return ""


def _credentials(mechanism: str, response: Any) -> tuple[str | None, str | None]:
    raw = response.encode("latin-1") if isinstance(response, str) else bytes(response or b"")
    if mechanism == "PLAIN":
        parts = raw.split(b"\x00")
        if len(parts) != 3 or parts[0]:  # RabbitMQ takes no authorization identity
            return None, None
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        table = decode_amqplain(raw)
        login, password = table.get("LOGIN"), table.get("PASSWORD")
        if isinstance(login, bytes):
            login = login.decode("utf-8", "replace")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        return (login if isinstance(login, str) else None), (password if isinstance(password, str) else None)
    return None, None


def decode_amqplain(raw: bytes) -> dict[str, Any]:
    """AMQPLAIN's response is a field table without its length prefix."""
    try:
        return decode.field_table(len(raw).to_bytes(4, "big") + raw)[1]
    except Exception:
        return {}


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.") or host.startswith("::ffff:127.")

