"""The web UI in a real headless Chromium against a real leveret (pika on the AMQP side).

One broker and one browser per module (see conftest); each test has its own
browser context (cookies) and its own uniquely named queues and exchanges.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from leveret.exchanges.router import ExchangeHop

from leveret.playground.cli import run_test_file
from leveret.playground.render import make_console
from tests.ui.conftest import Page, Ui, expect, log_in


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def channel(ui: Ui) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(ui.amqp_url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def needs(ui: Ui, method: str, path: str) -> None:
    if not ui.has_endpoint(method, path):
        pytest.skip(f"the API has no {method} /api/{path} yet (issue 17)")


def broker_verdicts(ui: Ui, exchange: str, routing_key: str, headers: dict[str, object] | None = None) -> dict[str, tuple[bool, str]]:
    """destination -> (matched, reason), from the broker's own trace, every hop."""
    def run(server: object) -> dict[str, tuple[bool, str]]:
        traced = server.vhosts["/"].trace(exchange, [routing_key], headers)  # type: ignore[attr-defined]
        out: dict[str, tuple[bool, str]] = {}

        def walk(hop: ExchangeHop) -> None:
            for item in hop.matched + hop.unmatched:
                out[item.binding.destination.name] = (item.verdict.matched, item.verdict.reason)
            for child in hop.hops:
                walk(child)
            if hop.alternate is not None:
                walk(hop.alternate)
        walk(traced.root)
        return out
    return ui.call(run)


def page_verdicts(page: Page) -> dict[str, tuple[bool, str]]:
    out: dict[str, tuple[bool, str]] = {}
    for item in page.locator("#trace > .hop li").all():
        out[item.get_attribute("data-dest") or ""] = (item.get_attribute("class") == "match",
                                                      item.locator(".why").inner_text())
    return out


def trace_in_page(page: Page, ui: Ui, exchange: str, routing_key: str, headers: str = "") -> None:
    page.goto(f"{ui.url}/#/exchanges/%2F/{exchange}")
    page.fill("#trace-key", routing_key)
    page.fill("#trace-headers", headers)
    # the trace follows the keystrokes: wait until the page shows this key's answer
    page.wait_for_function("([k, h]) => { const t = document.querySelector('#trace');"
                           " return t.dataset.key === k && t.dataset.headers === h; }", arg=[routing_key, headers])


# ------------------------------------------------------------ login and sessions
def test_no_page_or_asset_without_login(ui: Ui) -> None:
    status, headers, _ = ui.http("GET", "/")
    assert (status, headers.get("location")) == (303, "/login.html")
    assert ui.http("GET", "/app.js")[0] == 401
    assert ui.http("GET", "/vendor/cytoscape.min.js")[0] == 401
    assert ui.http("GET", "/session")[0] == 401
    assert ui.http("GET", "/api/queues")[0] == 401
    assert ui.http("GET", "/login.html")[0] == 200
    assert ui.http("GET", "/login.js")[0] == 200


def test_a_wrong_password_shows_the_login_error(anonymous: Page, ui: Ui) -> None:
    log_in(anonymous, ui.url, password="not-the-password")
    expect(anonymous.locator("#login-error")).to_have_text("Login failed")
    assert anonymous.url.endswith("/login.html")
    assert anonymous.context.cookies() == []


def test_the_session_cookie_is_httponly_and_samesite(page: Page, ui: Ui) -> None:
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # the page's own script cannot read it


def test_a_cross_site_post_is_refused_and_changes_nothing(page: Page, ui: Ui) -> None:
    [cookie] = page.context.cookies()
    session = {"cookie": f"{cookie['name']}={cookie['value']}"}
    name = unique("csrf")
    csrf = json.loads(ui.http("GET", "/session", headers=session)[2])["csrf"]
    # The cookie alone (what a cross-site form would carry) is not enough ...
    no_token = ui.http("PUT", f"/api/queues/%2F/{name}", {}, headers=session)
    # ... nor is the token from another origin.
    other_origin = ui.http("PUT", f"/api/queues/%2F/{name}", {},
                           headers={**session, "x-csrf-token": csrf, "origin": "http://evil.example"})
    assert (no_token[0], json.loads(no_token[2])["reason"]) == (403, "missing or wrong CSRF token")
    assert (other_origin[0], json.loads(other_origin[2])["reason"]) == (403, "cross-site request refused")
    assert ui.call(lambda s: name in s.vhosts["/"].queues) is False
    # the same request from the page itself goes through
    same_site = ui.http("PUT", f"/api/queues/%2F/{name}", {"durable": False},
                        headers={**session, "x-csrf-token": csrf, "origin": ui.url})
    assert same_site[0] == 201
    ui.http("DELETE", f"/api/queues/%2F/{name}", headers={**session, "x-csrf-token": csrf})


def test_a_post_from_another_site_in_the_browser_carries_no_session(page: Page, ui: Ui) -> None:
    """A script on another site (localhost is another site than 127.0.0.1) posting a
    definitions import to the logged-in broker: SameSite=Strict keeps the cookie home,
    so the import is refused and nothing is declared."""
    name = unique("xsite")
    page.goto(ui.url.replace("127.0.0.1", "localhost") + "/login.html")
    body = json.dumps({"queues": [{"name": name, "vhost": "/", "durable": False, "auto_delete": False,
                                   "arguments": {}}]})
    result = page.evaluate("""async ([url, body]) => {
        const r = await fetch(url + '/api/definitions', {method: 'POST', mode: 'no-cors', credentials: 'include',
                                                         body, headers: {'content-type': 'text/plain'}});
        return r.type; }""", [ui.url, body])
    assert result == "opaque"  # sent; its answer is hidden from the other site
    assert page.context.cookies(ui.url)  # the session is there, it just did not go along
    assert ui.call(lambda s: name in s.vhosts["/"].queues) is False


# ------------------------------------------------------------ lists, live numbers
def test_a_queue_declared_over_amqp_appears_and_its_count_updates_live(page: Page, ui: Ui, channel: object) -> None:
    name = unique("amqp-made")
    channel.queue_declare(name, auto_delete=True)  # type: ignore[attr-defined]
    page.goto(f"{ui.url}/#/queues")
    page.fill("[aria-label=filter]", name)
    row = page.locator("table.list tbody tr", has_text=name)
    expect(row).to_have_count(1)
    channel.basic_publish("", name, b"one")  # type: ignore[attr-defined]
    page.click(f"text={name}")
    expect(page.locator("[data-field=Ready]")).to_have_text("1", timeout=15_000)  # no reload: polling


def test_the_list_pages_sort_and_filter_on_the_server(page: Page, ui: Ui, channel: object) -> None:
    prefix = unique("sorted")
    for suffix in ("b", "a", "c"):
        channel.queue_declare(f"{prefix}-{suffix}", auto_delete=True)  # type: ignore[attr-defined]
    page.goto(f"{ui.url}/#/queues")
    page.fill("[aria-label=filter]", prefix)
    cells = page.locator("table.list tbody tr td:nth-child(2)")
    expect(cells).to_have_text([f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"])
    page.click("table.list th:has-text('Name')")  # the second click on the sorted column reverses it
    expect(cells).to_have_text([f"{prefix}-c", f"{prefix}-b", f"{prefix}-a"])


# ------------------------------------------------------------ actions
def test_declare_a_queue_from_the_ui(page: Page, ui: Ui) -> None:
    name = unique("ui-made")
    page.goto(f"{ui.url}/#/queues")
    page.fill("#add-queue [name=name]", name)
    page.fill("#add-queue [name=arguments]", "x-max-length = 5")
    page.click("#add-queue button")
    expect(page.locator("#add-queue + .ok")).to_have_text(f"Queue {name} declared")
    assert ui.call(lambda s: s.vhosts["/"].queues[name].args.max_length) == 5
    ui.call(lambda s: s.vhosts["/"].delete_queue(name))


def test_a_malformed_argument_shows_the_brokers_error_and_changes_nothing(page: Page, ui: Ui) -> None:
    name = unique("bad-arg")
    direct = ui.http("PUT", f"/api/queues/%2F/{name}-direct", {"arguments": {"x-max-length": "five"}},
                     headers={"authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    assert direct[0] == 400
    page.goto(f"{ui.url}/#/queues")
    page.fill("#add-queue [name=name]", name)
    page.fill("#add-queue [name=arguments]", "x-max-length = five")
    page.click("#add-queue button")
    shown = page.locator("#add-queue + .error")
    expect(shown).to_be_visible()
    assert shown.inner_text() == json.loads(direct[2])["reason"].replace(f"{name}-direct", name)
    assert ui.call(lambda s: name in s.vhosts["/"].queues) is False


def test_an_unknown_vhost_shows_not_found_and_changes_nothing(page: Page, ui: Ui) -> None:
    name = unique("no-vhost")
    page.goto(f"{ui.url}/#/queues")
    page.fill("#add-queue [name=vhost]", "no-such-vhost")
    page.fill("#add-queue [name=name]", name)
    page.click("#add-queue button")
    expect(page.locator("#add-queue + .error")).to_have_text("Not Found")  # RabbitMQ's 404 reason
    assert ui.call(lambda s: "no-such-vhost" in s.vhosts) is False


def test_publish_from_the_ui_and_get_it_with_pika(page: Page, ui: Ui, channel: object) -> None:
    needs(ui, "POST", "exchanges/%2F/amq.default/publish")
    name = unique("ui-published")
    channel.queue_declare(name, auto_delete=True)  # type: ignore[attr-defined]
    page.goto(f"{ui.url}/#/exchanges/%2F/amq.default")
    page.fill("#publish [name=routing_key]", name)
    page.fill("#publish [name=headers]", "origin = browser")
    page.fill("#publish [name=properties]", "content_type = text/plain")
    page.fill("#publish [name=payload]", "hello from the browser")
    page.click("#publish button")
    expect(page.locator("#publish + .ok")).to_have_text("Message published.")
    method, properties, body = channel.basic_get(name, auto_ack=True)  # type: ignore[attr-defined]
    assert body == b"hello from the browser"
    assert properties.headers == {"origin": "browser"} and properties.content_type == "text/plain"


def test_get_from_the_ui_a_message_published_with_pika(page: Page, ui: Ui, channel: object) -> None:
    needs(ui, "POST", "queues/%2F/q/get")
    name = unique("pika-published")
    channel.queue_declare(name, auto_delete=True)  # type: ignore[attr-defined]
    channel.basic_publish("", name, b"\xff\x00binary")  # type: ignore[attr-defined]
    channel.basic_publish("", name, b"plain text")  # type: ignore[attr-defined]
    page.goto(f"{ui.url}/#/queues/%2F/{name}")
    page.select_option("#get [name=ackmode]", "ack_requeue_false")
    page.fill("#get [name=count]", "2")
    page.click("#get button")
    payloads = page.locator("#got .payload")
    expect(payloads).to_have_count(2)
    assert payloads.nth(0).inner_text() == base64.b64encode(b"\xff\x00binary").decode()  # not UTF-8: base64
    assert payloads.nth(1).inner_text() == "plain text"
    assert ui.call(lambda s: s.vhosts["/"].queues[name].message_count) == 0


def test_a_body_too_large_shows_the_error_and_publishes_nothing(page: Page, ui: Ui, channel: object) -> None:
    needs(ui, "POST", "exchanges/%2F/amq.default/publish")
    name = unique("too-large")
    channel.queue_declare(name, auto_delete=True)  # type: ignore[attr-defined]
    # A small limit: a browser form holding 128 MiB (the default) would be a test of Chromium.
    limit = 4096
    previous = ui.call(lambda s: s.settings.max_message_size)
    ui.call(lambda s: setattr(s.settings, "max_message_size", limit))
    page.goto(f"{ui.url}/#/exchanges/%2F/amq.default")
    page.fill("#publish [name=routing_key]", name)
    page.evaluate("n => { document.querySelector('#publish [name=payload]').value = 'x'.repeat(n + 1); }", limit)
    page.click("#publish button")
    try:
        expect(page.locator("#publish + .error")).to_contain_text(f"larger than configured max size {limit}")
        assert ui.call(lambda s: s.vhosts["/"].queues[name].message_count) == 0
    finally:
        ui.call(lambda s: setattr(s.settings, "max_message_size", previous))


# ------------------------------------------------------------ the routing view
def test_the_routing_view_explains_a_topic_route_as_the_broker_traces_it(page: Page, ui: Ui, channel: object) -> None:
    exchange, errors, everything = unique("logs"), unique("errors"), unique("all")
    channel.exchange_declare(exchange, "topic", auto_delete=True)  # type: ignore[attr-defined]
    for queue, key in ((errors, "*.error"), (everything, "app.#")):
        channel.queue_declare(queue, auto_delete=True)  # type: ignore[attr-defined]
        channel.queue_bind(queue, exchange, key)  # type: ignore[attr-defined]
    trace_in_page(page, ui, exchange, "db.warning")
    expected = broker_verdicts(ui, exchange, "db.warning")
    expect(page.locator("#landing")).to_have_text("Routed to no queue (unroutable)")
    assert page_verdicts(page) == expected
    assert expected[errors][0] is False and "error" in expected[errors][1]

    trace_in_page(page, ui, exchange, "app.error")
    expect(page.locator("#landing")).to_have_text(f"Lands in: {', '.join(ui.call(lambda s: s.vhosts['/'].trace(exchange, ['app.error'], None).queues))}")
    assert page_verdicts(page) == broker_verdicts(ui, exchange, "app.error")


def test_the_routing_view_explains_a_headers_route(page: Page, ui: Ui, channel: object) -> None:
    exchange, queue = unique("by-headers"), unique("eu-pdf")
    channel.exchange_declare(exchange, "headers", auto_delete=True)  # type: ignore[attr-defined]
    channel.queue_declare(queue, auto_delete=True)  # type: ignore[attr-defined]
    channel.queue_bind(queue, exchange, "", arguments={"x-match": "all", "region": "eu", "format": "pdf"})  # type: ignore[attr-defined]
    trace_in_page(page, ui, exchange, "", "region = eu\nformat = csv")
    expect(page.locator("#landing")).to_have_text("Routed to no queue (unroutable)")
    assert page_verdicts(page) == broker_verdicts(ui, exchange, "", {"region": "eu", "format": "csv"})
    trace_in_page(page, ui, exchange, "", "region = eu\nformat = pdf")
    expect(page.locator("#landing")).to_have_text(f"Lands in: {queue}")
    assert page_verdicts(page) == broker_verdicts(ui, exchange, "", {"region": "eu", "format": "pdf"})


def test_the_routing_view_follows_a_dead_letter_route(page: Page, ui: Ui, channel: object) -> None:
    exchange, work, dlx, parked = unique("jobs"), unique("work"), unique("dlx"), unique("parked")
    channel.exchange_declare(exchange, "direct", auto_delete=True)  # type: ignore[attr-defined]
    channel.exchange_declare(dlx, "fanout", auto_delete=True)  # type: ignore[attr-defined]
    channel.queue_declare(work, auto_delete=True, arguments={"x-dead-letter-exchange": dlx,  # type: ignore[attr-defined]
                                                               "x-message-ttl": 60_000})
    channel.queue_declare(parked, auto_delete=True)  # type: ignore[attr-defined]
    channel.queue_bind(work, exchange, "job")  # type: ignore[attr-defined]
    channel.queue_bind(parked, dlx, "")  # type: ignore[attr-defined]
    trace_in_page(page, ui, exchange, "job")
    expect(page.locator("#landing")).to_have_text(f"Lands in: {work}")
    following = page.locator(f"#trace .next > li[data-queue='{work}']")
    expect(following).to_contain_text(f"to dead-letter exchange {dlx}")
    dead_lettered = ui.call(lambda s: s.vhosts["/"].trace(dlx, ["job"], None).queues)
    expect(following).to_contain_text(f"landing in {', '.join(dead_lettered)}")
    assert dead_lettered == [parked]
    # the graph draws the dead-letter edge as an edge of its own kind
    kinds = page.evaluate("window.leveretGraph.edges().map(e => e.data('kind'))")
    assert sorted(kinds) == ["binding", "binding", "dead-letter"]
    on_path = page.evaluate("window.leveretGraph.edges('.hit').map(e => e.data('kind'))")
    assert sorted(on_path) == ["binding", "binding", "dead-letter"]  # publish, dead-letter, then on to parked


def test_bind_from_the_ui_and_the_routing_view_changes(page: Page, ui: Ui, channel: object) -> None:
    needs(ui, "POST", "bindings/%2F/e/x/q/q")
    exchange, queue = unique("bind-me"), unique("bound")
    channel.exchange_declare(exchange, "topic", auto_delete=True)  # type: ignore[attr-defined]
    channel.queue_declare(queue, auto_delete=True)  # type: ignore[attr-defined]
    trace_in_page(page, ui, exchange, "a.b")
    expect(page.locator("#landing")).to_have_text("Routed to no queue (unroutable)")
    expect(page.locator("#graph")).to_have_attribute("data-edges", "0")
    page.fill("#bind [name=destination]", queue)
    page.fill("#bind [name=routing_key]", "a.*")
    page.click("#bind button")
    expect(page.locator("#graph")).to_have_attribute("data-edges", "1")
    expect(page.locator("#landing")).to_have_text(f"Lands in: {queue}")
    assert ui.call(lambda s: s.vhosts["/"].trace(exchange, ["a.b"], None).queues) == [queue]


# ------------------------------------------------------------ route files
ROUTE_FILE = """\
exchange logs topic
queue errors
bind logs -> errors *.error
publish logs db.error "disk full"
expect errors has 1 message
expect errors has 2 messages
"""


def test_a_route_file_runs_in_the_browser_with_leveret_tests_report(page: Page, ui: Ui, tmp_path: Path) -> None:
    path = tmp_path / "logs.route"
    path.write_text(ROUTE_FILE)
    out = io.StringIO()
    cli = run_test_file(str(path), make_console(100, color=False, file=out))
    page.goto(f"{ui.url}/#/routes")
    page.set_input_files("input[type=file]", str(path))
    expect(page.locator("#route-text")).to_have_value(ROUTE_FILE)
    page.click("#run-route")
    expect(page.locator("#route-verdict")).to_have_text("failed")
    assert cli.passed is False
    assert page.locator("#route-report pre").inner_text().strip() == out.getvalue().replace(str(path), "logs.route").strip()


def test_the_pages_load_without_script_errors(page: Page, ui: Ui) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    for hash_ in ("#/", "#/connections", "#/channels", "#/exchanges", "#/queues", "#/admin", "#/routes",
                  "#/exchanges/%2F/amq.topic"):
        page.goto(f"{ui.url}/{hash_}")
        page.wait_for_load_state("networkidle")
    assert errors == []
