"""`leveret ctl`'s rabbitmqctl verbs (add_user, set_permissions, ...) against a running leveret."""

from __future__ import annotations

import pika
import pika.exceptions
import pytest

from leveret.management import ManagementServer
from tests.management.conftest import Http
from tests.management.test_ctl import Ctl, ctl  # noqa: F401 (fixture)


def _login(management: ManagementServer, user: str, password: str, vhost: str = "/") -> pika.BlockingConnection:
    thread = management.broker_thread
    assert thread is not None
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", thread.port, vhost, pika.PlainCredentials(user, password)))


def test_users_vhosts_and_permissions_as_rabbitmqctl_names_them(ctl: Ctl, http: Http,  # noqa: F811
                                                                leveret_management: ManagementServer) -> None:
    assert ctl("add_user", "alice", "secret")[:2] == (0, 'Adding user "alice" ...\n')
    status, _, err = ctl("add_user", "alice", "again")
    assert status == 1 and err == 'leveret ctl: User "alice" already exists\n'
    assert ctl("set_user_tags", "alice", "monitoring", "custom")[0] == 0
    assert ctl("add_vhost", "shop")[0] == 0
    assert ctl("set_permissions", "--vhost", "shop", "alice", "^a", ".*", ".*")[0] == 0
    assert ctl("set_topic_permissions", "--vhost", "shop", "alice", "amq.topic", "^x", ".*")[0] == 0
    assert ctl("set_vhost_limits", "--vhost", "shop", '{"max-queues": 4}')[0] == 0
    assert ctl("set_user_limits", "alice", '{"max-channels": 2}')[0] == 0
    assert ctl("set_global_parameter", "colour", '"blue"')[0] == 0
    assert ctl("set_cluster_name", "warren")[0] == 0

    user = http.get("/api/users/alice")
    assert user["tags"] == ["monitoring", "custom"] and user["limits"] == {"max-channels": 2}
    assert http.get("/api/permissions/shop/alice") == {
        "user": "alice", "vhost": "shop", "configure": "^a", "write": ".*", "read": ".*"}
    assert http.get("/api/topic-permissions/shop/alice")[0]["write"] == "^x"
    assert http.get("/api/vhost-limits/shop") == [{"vhost": "shop", "value": {"max-queues": 4}}]
    assert http.get("/api/global-parameters/colour") == {"name": "colour", "value": "blue"}
    assert http.get("/api/cluster-name") == {"name": "warren"}
    status, out, _ = ctl("list_users")
    assert status == 0 and "alice\tmonitoring,custom" in out.splitlines()
    status, out, _ = ctl("list_permissions", "--vhost", "shop")
    assert "alice\t^a\t.*\t.*" in out.splitlines()

    connection = _login(leveret_management, "alice", "secret", "shop")
    connection.channel().queue_declare("allowed")
    connection.close()
    assert ctl("change_password", "alice", "better")[0] == 0
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        _login(leveret_management, "alice", "secret", "shop")
    _login(leveret_management, "alice", "better", "shop").close()
    assert http.get("/api/users/alice")["tags"] == ["monitoring", "custom"]  # kept by change_password

    assert ctl("clear_permissions", "--vhost", "shop", "alice")[0] == 0
    assert http.request("GET", "/api/permissions/shop/alice").status == 404
    assert ctl("clear_user_limits", "alice", "all")[0] == 0
    assert http.get("/api/users/alice")["limits"] == {}
    assert ctl("delete_vhost", "shop")[0] == 0
    assert ctl("delete_user", "alice")[0] == 0
    status, _, err = ctl("delete_user", "alice")
    assert status == 1 and err == 'leveret ctl: User "alice" does not exist\n'
    assert [v["name"] for v in http.get("/api/vhosts")] == ["/"]
