"""GET /api/connections[/NAME[/channels]], DELETE /api/connections/NAME, /api/channels[/NAME], /api/consumers[/VHOST]."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pamqp import exceptions

from leveret.broker.definitions import json_value
from leveret.broker.vhost import VirtualHost
from leveret.management.core import LiveConnection, Management
from leveret.management.http import Response
from leveret.management.routes import Call, Route, not_found
from leveret.management.values import with_rates

if TYPE_CHECKING:
    from leveret.server.channel import Channel
    from leveret.server.channel_state import ChannelConsumer


def connection_info(m: Management, live: LiveConnection) -> dict[str, Any]:
    connection = live.connection
    properties = json_value(connection.client_properties)
    vhost = connection.vhost
    state = connection.state.name.lower()
    if state.startswith("await"):
        state = "starting"
    elif state == "open":
        state = "blocked" if connection.reading_paused else "running"
    return {
        "auth_mechanism": connection.auth_mechanism,
        "channel_max": connection.channel_max,
        "channels": len(connection.channels),
        "client_properties": properties,
        "connected_at": connection.connected_at,
        "frame_max": connection.frame_max,
        "host": live.host,
        "name": connection.name,
        "node": m.node,
        "peer_cert_issuer": None,
        "peer_cert_subject": None,
        "peer_cert_validity": None,
        "peer_host": live.peer_host,
        "peer_port": live.peer_port,
        "port": live.port,
        "protocol": "AMQP 0-9-1",
        "ssl": False,
        "ssl_cipher": None,
        "ssl_hash": None,
        "ssl_key_exchange": None,
        "ssl_protocol": None,
        "state": state,
        "timeout": connection.heartbeat,
        "type": "network",
        "user": connection.user,
        "user_provided_name": properties.get("connection_name"),
        "vhost": vhost.name if vhost is not None else None,
    }


def find_connection(m: Management, name: str) -> LiveConnection:
    for live in m.connections():
        if live.connection.name == name:
            return live
    raise not_found()


def connections(call: Call) -> list[dict[str, Any]]:
    return [connection_info(call.m, c) for c in call.m.connections()]


def connection(call: Call, name: str) -> dict[str, Any]:
    return connection_info(call.m, find_connection(call.m, name))


def connection_channels(call: Call, name: str) -> list[dict[str, Any]]:
    live = find_connection(call.m, name)
    return [channel_info(call.m, c, ch) for c, ch in call.m.channels() if c.connection is live.connection]


def close_connection(call: Call, name: str) -> Response:
    live = find_connection(call.m, name)
    reason = call.request.header("x-reason") or "Closed via management plugin"
    call.run(lambda: live.connection.close_with(exceptions.AMQPConnectionForced(reason)))
    return Response(204)


def channel_info(m: Management, live: LiveConnection, channel: Channel) -> dict[str, Any]:
    connection = live.connection
    name = f"{connection.name} ({channel.number})"

    def rate(field: str) -> float:
        return m.rate("channel", connection.name, channel.number, field)

    stats = {
        "publish": channel.published, "confirm": channel.publish_seq if channel.confirm else 0,
        "return_unroutable": channel.returned_unroutable, "drop_unroutable": channel.dropped_unroutable,
        "deliver_get": channel.delivery_tag,
    }
    return {
        "acks_uncommitted": len(channel.tx_settled),
        "confirm": channel.confirm,
        "connection_details": {"name": connection.name, "peer_host": live.peer_host,
                               "peer_port": live.peer_port},
        "consumer_count": len(channel.consumers),
        "global_prefetch_count": channel.global_prefetch,
        "message_stats": with_rates(stats, rate),
        "messages_unacknowledged": len(channel.unacked),
        "messages_uncommitted": len(channel.tx) if channel.tx is not None else 0,
        "messages_unconfirmed": 0,
        "name": name,
        "node": m.node,
        "number": channel.number,
        "prefetch_count": channel.consumer_prefetch,
        "state": "running",
        "transactional": channel.tx is not None,
        "user": connection.user,
        "vhost": channel.vhost.name,
    }


def channels(call: Call) -> list[dict[str, Any]]:
    return [channel_info(call.m, c, ch) for c, ch in call.m.channels()]


def channel(call: Call, name: str) -> dict[str, Any]:
    for live, found in call.m.channels():
        if f"{live.connection.name} ({found.number})" == name:
            return channel_info(call.m, live, found)
    raise not_found()


def consumer_info(m: Management, live: LiveConnection, channel: Channel,
                  consumer: ChannelConsumer) -> dict[str, Any]:
    connection = live.connection
    queue = consumer.queue
    status = "up"
    if queue.args.single_active_consumer:
        status = "single_active" if queue.consumers and queue.consumers[0] is consumer else "waiting"
    return {
        "arguments": {"x-priority": consumer.priority} if consumer.priority else {},
        "ack_required": not consumer.no_ack,
        "active": status != "waiting",
        "activity_status": status,
        "channel_details": {
            "connection_name": connection.name, "name": f"{connection.name} ({channel.number})",
            "node": m.node, "number": channel.number, "peer_host": live.peer_host,
            "peer_port": live.peer_port, "user": connection.user,
        },
        "consumer_tag": consumer.consumer_tag,
        "exclusive": consumer.exclusive,
        "prefetch_count": consumer.prefetch,
        "queue": {"name": queue.name, "vhost": queue.vhost},
    }


def consumers_in(m: Management, vhost: VirtualHost | None) -> list[dict[str, Any]]:
    return [
        consumer_info(m, live, channel, consumer)
        for live, channel in m.channels() for consumer in channel.consumers.values()
        if vhost is None or channel.vhost is vhost
    ]


def consumers(call: Call) -> list[dict[str, Any]]:
    return consumers_in(call.m, None)


def vhost_consumers(call: Call, vhost: str) -> list[dict[str, Any]]:
    return consumers_in(call.m, call.vhost(vhost))


ROUTES = (
    Route("GET", "connections", connections),
    Route("GET", "connections/{name}", connection),
    Route("GET", "connections/{name}/channels", connection_channels),
    Route("DELETE", "connections/{name}", close_connection),
    Route("GET", "channels", channels),
    Route("GET", "channels/{name}", channel),
    Route("GET", "consumers", consumers),
    Route("GET", "consumers/{vhost}", vhost_consumers),
)
