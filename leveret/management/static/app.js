// leveret's management UI: RabbitMQ's pages over RabbitMQ's HTTP API, plus the
// routing view (leveret's /api/leveret/trace). No build step: plain ES2020,
// uPlot draws the charts and cytoscape lays out the topology graph.
// Live numbers come from polling, every POLL_MS, only while the tab is visible.
"use strict";

const POLL_MS = 5000;
const HISTORY_POINTS = 120; // 10 minutes of 5 s samples
const main = document.getElementById("main");
let csrf = "";
let timers = [];
let charts = [];

// ------------------------------------------------------------ helpers
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const enc = encodeURIComponent;
const fmt = (n) => (n === undefined || n === null ? "" : typeof n === "number" ? (Number.isInteger(n) ? n.toLocaleString("en") : n.toFixed(1)) : String(n));
const bytes = (n) => { if (!n) return "0 B"; const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return `${n.toFixed(i ? 1 : 0)} ${u[i]}`; };
function dig(o, path) { for (const p of path.split(".")) { if (o == null) return undefined; o = o[p]; } return o; }

class ApiError extends Error {
  constructor(status, body) { super(body.reason || body.error || `HTTP ${status}`); this.status = status; this.body = body; }
}

async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["x-csrf-token"] = csrf;
  if (body !== undefined) headers["content-type"] = "application/json";
  const reply = await fetch("/api/" + path, {method, headers, credentials: "same-origin",
                                             body: body === undefined ? undefined : JSON.stringify(body)});
  if (reply.status === 401 && !reply.headers.get("content-type")) { location.href = "/login.html"; throw new ApiError(401, {}); }
  const text = await reply.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = {reason: text}; }
  if (!reply.ok) throw new ApiError(reply.status, data || {});
  return data;
}

function every(fn) {
  const tick = async () => { if (!document.hidden) { try { await fn(); } catch (e) { console.warn(e); } } };
  timers.push(setInterval(tick, POLL_MS));
  return tick();
}

function errorBox() { return h("p", {class: "error", role: "alert", hidden: true}); }
function showError(box, error) { box.className = "error"; box.textContent = error.message; box.hidden = false; }
function showOk(box, text) { box.className = "ok"; box.textContent = text; box.hidden = false; }

async function action(box, fn, done) {
  box.hidden = true;
  try { const result = await fn(); if (done) done(result); } catch (e) { showError(box, e); }
}

function field(label, input) { return h("label", {}, label, input); }

// Arguments typed as RabbitMQ's UI types them: "key = value", numbers and booleans as such.
function parseArgs(text) {
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 0) throw new ApiError(400, {reason: `argument '${line}' is not 'name = value'`});
    const key = line.slice(0, at).trim();
    const raw = line.slice(at + 1).trim();
    let value = raw;
    if (/^-?\d+$/.test(raw)) value = Number(raw);
    else if (raw === "true" || raw === "false") value = raw === "true";
    else if (/^[[{]/.test(raw)) { try { value = JSON.parse(raw); } catch (e) { value = raw; } }
    out[key] = value;
  }
  return out;
}

// ------------------------------------------------------------ charts
function chart(container, series, title) {
  const opts = {
    title, width: Math.max(300, container.clientWidth || 560), height: 200,
    series: [{}, ...series.map((s, i) => ({label: s, stroke: ["#2a6f97", "#e07a1f", "#1b7f3b", "#b00020"][i % 4], width: 2}))],
    axes: [{}, {size: 60}], scales: {x: {time: true}},
  };
  const data = [[], ...series.map(() => [])];
  const plot = new uPlot(opts, data, container);
  charts.push(plot);
  return {
    push(values) {
      data[0].push(Date.now() / 1000);
      values.forEach((v, i) => data[i + 1].push(v ?? 0));
      if (data[0].length > HISTORY_POINTS) data.forEach((d) => d.shift());
      plot.setData(data);
    },
  };
}

// ------------------------------------------------------------ lists
// RabbitMQ's list pages: page / page_size / name / use_regex / sort / sort_reverse, server side.
function listPage(title, path, columns, opts = {}) {
  const state = {page: 1, page_size: 100, name: "", use_regex: false, sort: opts.sort || "name", sort_reverse: false};
  const body = h("tbody");
  const head = h("tr");
  const info = h("span", {class: "hint"});
  const box = errorBox();
  for (const col of columns) {
    const th = h("th", {class: (col.num ? "num " : "") + (col.sort !== false ? "sortable" : "")}, col.title);
    if (col.sort !== false) th.addEventListener("click", () => {
      if (state.sort === col.key) state.sort_reverse = !state.sort_reverse; else { state.sort = col.key; state.sort_reverse = false; }
      load();
    });
    col.th = th;
    head.append(th);
  }
  const filter = h("input", {placeholder: "Filter by name", "aria-label": "filter", oninput: () => { state.name = filter.value; state.page = 1; load(); }});
  const regex = h("input", {type: "checkbox", onchange: () => { state.use_regex = regex.checked; load(); }});
  const size = h("select", {onchange: () => { state.page_size = Number(size.value); state.page = 1; load(); }},
    ...[100, 500].map((n) => h("option", {value: n}, n)));
  const prev = h("button", {class: "secondary", onclick: () => { state.page = Math.max(1, state.page - 1); load(); }}, "‹");
  const next = h("button", {class: "secondary", onclick: () => { state.page += 1; load(); }}, "›");
  async function load() {
    const q = new URLSearchParams({page: state.page, page_size: state.page_size, name: state.name,
                                   use_regex: state.use_regex, sort: state.sort, sort_reverse: state.sort_reverse});
    let data;
    try { data = await api("GET", `${path}?${q}`); box.hidden = true; } catch (e) { showError(box, e); return; }
    if (state.page > data.page_count) { state.page = data.page_count; return load(); }
    body.replaceChildren(...data.items.map((item) => h("tr", {}, ...columns.map((col) => {
      const v = col.value ? col.value(item) : dig(item, col.key);
      return h("td", {class: col.num ? "num" : ""}, v instanceof Node ? v : fmt(v));
    }))));
    if (!data.items.length) body.append(h("tr", {}, h("td", {colspan: columns.length, class: "hint"}, "... no items ...")));
    for (const col of columns) col.th.className = (col.num ? "num " : "") + (col.sort !== false ? "sortable" : "") + (state.sort === col.key ? " sorted" + (state.sort_reverse ? " reverse" : "") : "");
    info.textContent = `Page ${data.page} of ${data.page_count} · ${data.filtered_count} shown of ${data.total_count}`;
  }
  const section = h("section", {class: "card"}, h("h2", {}, title),
    h("div", {class: "toolbar"}, field("Filter", filter), field("Regex", regex), field("Page size", size)),
    box, h("table", {class: "list", "data-list": path}, h("thead", {}, head), body),
    h("div", {class: "pager"}, prev, next, info));
  main.append(section);
  every(load);
  return {load};
}

const link = (href, text) => h("a", {href}, text);
const vhostOf = (item) => item.vhost;
const queueLink = (q) => link(`#/queues/${enc(q.vhost)}/${enc(q.name)}`, q.name);
const exchangeLink = (e) => link(`#/exchanges/${enc(e.vhost)}/${enc(e.name || "amq.default")}`, e.name || "(AMQP default)");

// ------------------------------------------------------------ pages
async function overviewPage() {
  const totals = h("div", {class: "totals"});
  const rates = h("div");
  const queued = h("div");
  const memory = h("div");
  const alarms = h("div");
  main.append(h("section", {class: "card"}, h("h2", {}, "Overview"), totals),
    h("div", {class: "grid"}, h("section", {class: "card"}, h("h3", {}, "Message rates"), rates),
      h("section", {class: "card"}, h("h3", {}, "Queued messages"), queued)),
    h("div", {class: "grid"}, h("section", {class: "card"}, h("h3", {}, "Node memory"), memory),
      h("section", {class: "card"}, h("h3", {}, "Alarms"), alarms)));
  const rateChart = chart(rates, ["publish/s", "deliver/s", "ack/s"], "");
  const queuedChart = chart(queued, ["ready", "unacked"], "");
  await every(async () => {
    const [o, nodes, alarm] = await Promise.all([api("GET", "overview"), api("GET", "nodes"),
      api("GET", "health/checks/alarms").catch((e) => e.body)]);
    const ot = o.object_totals || {}, qt = o.queue_totals || {}, ms = o.message_stats || {};
    totals.replaceChildren(...[["Connections", ot.connections], ["Channels", ot.channels], ["Exchanges", ot.exchanges],
      ["Queues", ot.queues], ["Consumers", ot.consumers], ["Ready", qt.messages_ready], ["Unacked", qt.messages_unacknowledged],
      ["Version", o.rabbitmq_version]].map(([k, v]) => h("div", {class: "total", "data-total": k}, h("b", {}, fmt(v)), h("span", {}, k))));
    rateChart.push([dig(ms, "publish_details.rate"), dig(ms, "deliver_get_details.rate"), dig(ms, "ack_details.rate")]);
    queuedChart.push([qt.messages_ready, qt.messages_unacknowledged]);
    const node = nodes[0] || {};
    const share = node.mem_limit ? Math.min(100, (100 * node.mem_used) / node.mem_limit) : 0;
    memory.replaceChildren(h("div", {class: "bar" + (node.mem_alarm ? " alarm" : "")}, h("div", {style: `width:${share}%`})),
      h("p", {class: "hint"}, `${bytes(node.mem_used)} used of a ${bytes(node.mem_limit)} high watermark` + (node.mem_alarm ? " (memory alarm)" : "")));
    const on = [node.mem_alarm && "memory", node.disk_free_alarm && "disk"].filter(Boolean);
    alarms.replaceChildren(on.length ? h("p", {class: "error"}, `Alarm in effect: ${on.join(", ")}`) : h("p", {class: "ok"}, (alarm && alarm.status === "ok") ? "No alarms" : "No alarms in effect"));
  });
}

function connectionsPage() {
  listPage("Connections", "connections", [
    {title: "Name", key: "name"}, {title: "User", key: "user"}, {title: "Vhost", key: "vhost"},
    {title: "State", key: "state"}, {title: "Channels", key: "channels", num: true},
    {title: "Client", key: "client_properties.product", sort: false, value: (c) => dig(c, "client_properties.product")},
  ]);
}

function channelsPage() {
  listPage("Channels", "channels", [
    {title: "Channel", key: "name"}, {title: "User", key: "user"}, {title: "Vhost", key: "vhost"},
    {title: "Consumers", key: "consumer_count", num: true}, {title: "Prefetch", key: "prefetch_count", num: true},
    {title: "Unacked", key: "messages_unacknowledged", num: true},
  ]);
}

function exchangesPage() {
  listPage("Exchanges", "exchanges", [
    {title: "Virtual host", key: "vhost"}, {title: "Name", key: "name", value: exchangeLink}, {title: "Type", key: "type"},
    {title: "Durable", key: "durable"}, {title: "Internal", key: "internal"},
    {title: "Arguments", key: "arguments", sort: false, value: (e) => JSON.stringify(e.arguments)},
  ]);
  const box = errorBox();
  const vhost = h("input", {name: "vhost", value: "/"});
  const name = h("input", {name: "name", required: true});
  const type = h("select", {name: "type"}, ...["direct", "fanout", "topic", "headers", "x-consistent-hash", "x-delayed-message"].map((t) => h("option", {}, t)));
  const durable = h("select", {name: "durable"}, h("option", {value: "true"}, "Durable"), h("option", {value: "false"}, "Transient"));
  const args = h("textarea", {name: "arguments", rows: 2, placeholder: "alternate-exchange = ae"});
  main.append(h("section", {class: "card"}, h("h3", {}, "Add a new exchange"),
    h("form", {class: "inline", id: "add-exchange", onsubmit: (ev) => { ev.preventDefault(); action(box, async () => {
      await api("PUT", `exchanges/${enc(vhost.value)}/${enc(name.value)}`, {type: type.value, durable: durable.value === "true", auto_delete: false, internal: false, arguments: parseArgs(args.value)});
    }, () => { showOk(box, `Exchange ${name.value} declared`); }); }},
    field("Virtual host", vhost), field("Name", name), field("Type", type), field("Durability", durable), field("Arguments", args),
    h("button", {type: "submit"}, "Add exchange")), box));
}

function queuesPage() {
  listPage("Queues", "queues", [
    {title: "Virtual host", key: "vhost"}, {title: "Name", key: "name", value: queueLink}, {title: "Type", key: "type"},
    {title: "State", key: "state"}, {title: "Ready", key: "messages_ready", num: true},
    {title: "Unacked", key: "messages_unacknowledged", num: true}, {title: "Total", key: "messages", num: true},
    {title: "Consumers", key: "consumers", num: true},
    {title: "incoming/s", key: "message_stats.publish_details.rate", num: true},
  ]);
  const box = errorBox();
  const vhost = h("input", {name: "vhost", value: "/"});
  const name = h("input", {name: "name", required: true});
  const durable = h("select", {name: "durable"}, h("option", {value: "true"}, "Durable"), h("option", {value: "false"}, "Transient"));
  const args = h("textarea", {name: "arguments", rows: 2, placeholder: "x-message-ttl = 60000\nx-dead-letter-exchange = dlx"});
  main.append(h("section", {class: "card"}, h("h3", {}, "Add a new queue"),
    h("form", {class: "inline", id: "add-queue", onsubmit: (ev) => { ev.preventDefault(); action(box, async () => {
      await api("PUT", `queues/${enc(vhost.value)}/${enc(name.value)}`, {durable: durable.value === "true", auto_delete: false, arguments: parseArgs(args.value)});
    }, () => showOk(box, `Queue ${name.value} declared`)); }},
    field("Virtual host", vhost), field("Name", name), field("Durability", durable), field("Arguments", args),
    h("button", {type: "submit"}, "Add queue")), box));
}

function bindingsTable(rows, unbind) {
  return h("table", {class: "bindings"}, h("thead", {}, h("tr", {}, h("th", {}, "From"), h("th", {}, "To"), h("th", {}, "Routing key"), h("th", {}, "Arguments"), h("th", {}, ""))),
    h("tbody", {}, rows.map((b) => h("tr", {}, h("td", {}, b.source || "(AMQP default)"), h("td", {}, `${b.destination_type} ${b.destination}`),
      h("td", {}, b.routing_key), h("td", {}, JSON.stringify(b.arguments)),
      h("td", {}, b.source ? h("button", {class: "secondary", onclick: () => unbind(b)}, "Unbind") : "")))));
}

async function unbindWith(box, b, reload) {
  const kind = b.destination_type === "queue" ? "q" : "e";
  await action(box, () => api("DELETE", `bindings/${enc(b.vhost)}/e/${enc(b.source)}/${kind}/${enc(b.destination)}/${b.properties_key}`), reload);
}

function publishForm(vhost, exchange, fixedKey) {
  const box = errorBox();
  const key = h("input", {name: "routing_key", value: fixedKey ?? ""});
  const headers = h("textarea", {name: "headers", rows: 2, placeholder: "name = value"});
  const props = h("textarea", {name: "properties", rows: 2, placeholder: "content_type = text/plain\ndelivery_mode = 2"});
  const payload = h("textarea", {name: "payload", rows: 3});
  const encoding = h("select", {name: "payload_encoding"}, h("option", {value: "string"}, "String"), h("option", {value: "base64"}, "Base64"));
  return h("section", {class: "card"}, h("h3", {}, "Publish message"),
    h("form", {class: "inline", id: "publish", onsubmit: (ev) => { ev.preventDefault(); action(box, async () => {
      const properties = parseArgs(props.value);
      const hdrs = parseArgs(headers.value);
      if (Object.keys(hdrs).length) properties.headers = hdrs;
      return api("POST", `exchanges/${enc(vhost)}/${enc(exchange || "amq.default")}/publish`,
        {routing_key: key.value, properties, payload: payload.value, payload_encoding: encoding.value});
    }, (r) => showOk(box, r && r.routed ? "Message published." : "Message published, but not routed.")); }},
    field("Routing key", key), field("Headers", headers), field("Properties", props), field("Payload", payload), field("Encoding", encoding),
    h("button", {type: "submit"}, "Publish message")), box);
}

function bindForm(vhost, fixed, side, reload) {
  // side "source": this exchange binds to a destination; "destination": a queue bound from an exchange.
  const box = errorBox();
  const other = h("input", {name: side === "source" ? "destination" : "source", required: true});
  const kind = h("select", {name: "destination_type"}, h("option", {value: "q"}, "queue"), h("option", {value: "e"}, "exchange"));
  const key = h("input", {name: "routing_key"});
  const args = h("textarea", {name: "arguments", rows: 2, placeholder: "x-match = all"});
  return h("section", {class: "card"}, h("h3", {}, side === "source" ? "Add binding from this exchange" : "Add binding to this queue"),
    h("form", {class: "inline", id: "bind", onsubmit: (ev) => { ev.preventDefault(); action(box, async () => {
      const path = side === "source" ? `bindings/${enc(vhost)}/e/${enc(fixed)}/${kind.value}/${enc(other.value)}` : `bindings/${enc(vhost)}/e/${enc(other.value)}/q/${enc(fixed)}`;
      await api("POST", path, {routing_key: key.value, arguments: parseArgs(args.value)});
    }, () => { showOk(box, "Bound"); reload(); }); }},
    side === "source" ? field("To", h("span", {}, kind, other)) : field("From exchange", other),
    field("Routing key", key), field("Arguments", args), h("button", {type: "submit"}, "Bind")), box);
}

async function queuePage(vhost, name) {
  const top = h("section", {class: "card"});
  const stats = h("div");
  const rates = h("div");
  const consumers = h("div");
  const bindings = h("div");
  const box = errorBox();
  main.append(top, h("div", {class: "grid"}, h("section", {class: "card"}, h("h3", {}, "Details"), stats),
    h("section", {class: "card"}, h("h3", {}, "Message rates"), rates)),
    h("section", {class: "card"}, h("h3", {}, "Consumers"), consumers),
    h("section", {class: "card"}, h("h3", {}, "Bindings"), box, bindings));
  const rateChart = chart(rates, ["publish/s", "deliver/s", "ack/s"], "");
  const load = async () => {
    let q;
    try { q = await api("GET", `queues/${enc(vhost)}/${enc(name)}`); } catch (e) { top.replaceChildren(h("p", {class: "error"}, e.message)); return; }
    top.replaceChildren(h("h2", {}, `Queue ${q.name}`), h("p", {class: "hint"}, `Virtual host ${q.vhost} · ${q.type} · ${q.durable ? "durable" : "transient"}`));
    stats.replaceChildren(h("table", {}, h("tbody", {}, [["Ready", q.messages_ready], ["Unacked", q.messages_unacknowledged], ["Total", q.messages],
      ["Bytes", bytes(q.message_bytes)], ["Policy", q.policy || ""], ["Effective policy", JSON.stringify(q.effective_policy_definition || {})],
      ["Arguments", JSON.stringify(q.arguments)], ["Consumers", q.consumers]].map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {"data-field": k}, fmt(v)))))));
    const ms = q.message_stats || {};
    rateChart.push([dig(ms, "publish_details.rate"), dig(ms, "deliver_get_details.rate"), dig(ms, "ack_details.rate")]);
    consumers.replaceChildren((q.consumer_details || []).length ? h("table", {}, h("tbody", {}, q.consumer_details.map((c) => h("tr", {}, h("td", {}, c.consumer_tag), h("td", {}, dig(c, "channel_details.name")), h("td", {}, `ack required: ${c.ack_required}`), h("td", {}, `prefetch ${c.prefetch_count}`))))) : h("p", {class: "hint"}, "... no consumers ..."));
    const rows = await api("GET", `queues/${enc(vhost)}/${enc(name)}/bindings`);
    bindings.replaceChildren(bindingsTable(rows, (b) => unbindWith(box, b, load)));
  };
  await every(load);
  main.append(bindForm(vhost, name, "destination", load), getForm(vhost, name), publishForm(vhost, "", name), queueActions(vhost, name));
}

function getForm(vhost, name) {
  const box = errorBox();
  const out = h("div", {id: "got"});
  const ackmode = h("select", {name: "ackmode"}, h("option", {value: "ack_requeue_true"}, "Nack message requeue true"),
    h("option", {value: "ack_requeue_false"}, "Automatic ack"), h("option", {value: "reject_requeue_true"}, "Reject requeue true"),
    h("option", {value: "reject_requeue_false"}, "Reject requeue false"));
  const encoding = h("select", {name: "encoding"}, h("option", {value: "auto"}, "Automatic string/base64"), h("option", {value: "base64"}, "base64"));
  const count = h("input", {name: "count", value: "1", size: 3});
  return h("section", {class: "card"}, h("h3", {}, "Get messages"),
    h("form", {class: "inline", id: "get", onsubmit: (ev) => { ev.preventDefault(); action(box, () => api("POST", `queues/${enc(vhost)}/${enc(name)}/get`,
      {count: Number(count.value), ackmode: ackmode.value, encoding: encoding.value, truncate: 50000}), (messages) => {
      out.replaceChildren(...(messages.length ? messages.map((m, i) => h("div", {class: "message"},
        h("b", {}, `Message ${i + 1}`), h("p", {class: "hint"}, `Exchange ${m.exchange || "(AMQP default)"} · routing key ${m.routing_key} · redelivered ${m.redelivered} · ${m.message_count} left`),
        h("p", {class: "hint"}, `Properties ${JSON.stringify(m.properties)}`),
        h("p", {class: "hint"}, `Payload ${m.payload_bytes} bytes, encoding ${m.payload_encoding}`), h("pre", {class: "payload"}, m.payload))) : [h("p", {class: "hint"}, "Queue is empty")]));
    }); }}, field("Ack mode", ackmode), field("Encoding", encoding), field("Messages", count), h("button", {type: "submit"}, "Get message(s)")), box, out);
}

function queueActions(vhost, name) {
  const box = errorBox();
  return h("section", {class: "card"}, h("h3", {}, "Purge / delete"), h("div", {class: "toolbar"},
    h("button", {id: "purge", onclick: () => action(box, () => api("DELETE", `queues/${enc(vhost)}/${enc(name)}/contents`), () => showOk(box, "Queue purged"))}, "Purge messages"),
    h("button", {id: "delete", class: "danger", onclick: () => action(box, () => api("DELETE", `queues/${enc(vhost)}/${enc(name)}`), () => { location.hash = "#/queues"; })}, "Delete queue")), box);
}

async function exchangePage(vhost, name) {
  const real = name === "amq.default" ? "" : name;
  const top = h("section", {class: "card"});
  const bindings = h("div");
  const box = errorBox();
  main.append(top, h("section", {class: "card"}, h("h3", {}, "Bindings from this exchange"), box, bindings));
  const view = routingView(vhost, name);
  const load = async () => {
    let x;
    try { x = await api("GET", `exchanges/${enc(vhost)}/${enc(name)}`); } catch (e) { top.replaceChildren(h("p", {class: "error"}, e.message)); return; }
    top.replaceChildren(h("h2", {}, `Exchange ${x.name || "(AMQP default)"}`), h("p", {class: "hint"}, `Virtual host ${x.vhost} · ${x.type} · ${x.durable ? "durable" : "transient"} · arguments ${JSON.stringify(x.arguments)}`));
    if (real) bindings.replaceChildren(bindingsTable(await api("GET", `exchanges/${enc(vhost)}/${enc(name)}/bindings/source`), (b) => unbindWith(box, b, reload)));
    else bindings.replaceChildren(h("p", {class: "hint"}, "The default exchange is bound to every queue by its name."));
  };
  const reload = async () => { await load(); await view.refresh(); };
  await every(load);
  if (real) main.append(bindForm(vhost, real, "source", reload));
  main.append(publishForm(vhost, real));
  if (real) {
    const dbox = errorBox();
    main.append(h("section", {class: "card"}, h("h3", {}, "Delete this exchange"), h("button", {class: "danger", id: "delete", onclick: () => action(dbox, () => api("DELETE", `exchanges/${enc(vhost)}/${enc(name)}`), () => { location.hash = "#/exchanges"; })}, "Delete"), dbox));
  }
}

// ------------------------------------------------------------ the routing view
const EDGE_STYLE = {binding: {color: "#555", style: "solid"}, "alternate-exchange": {color: "#e07a1f", style: "dashed"}, "dead-letter": {color: "#b00020", style: "dotted"}};

function routingView(vhost, name) {
  const graphBox = h("div", {id: "graph"});
  const key = h("input", {name: "trace_routing_key", id: "trace-key", placeholder: "routing key"});
  const headers = h("textarea", {name: "trace_headers", id: "trace-headers", rows: 2, placeholder: "x-match headers: name = value"});
  const result = h("div", {class: "trace", id: "trace"});
  const box = errorBox();
  main.append(h("section", {class: "card", id: "routing-view"}, h("h3", {}, "Routing view"),
    h("p", {class: "legend"}, h("span", {style: "color:#555"}, "── binding"), h("span", {style: "color:#e07a1f"}, "- - alternate exchange"),
      h("span", {style: "color:#b00020"}, "··· dead-letter exchange"), h("span", {style: "color:#1b7f3b"}, "green: this message's path")),
    graphBox, h("div", {class: "toolbar"}, field("Routing key", key), field("Headers", headers)), box, result));
  let cy = null;
  let lastTopology = "";
  async function drawTopology() {
    const t = await api("GET", `leveret/topology/${enc(vhost)}/${enc(name)}`);
    const signature = JSON.stringify([t.nodes.map((n) => n.id), t.edges]);
    if (signature === lastTopology) return;
    lastTopology = signature;
    graphBox.dataset.edges = String(t.edges.length);
    const elements = [
      ...t.nodes.map((n) => ({data: {id: n.id, label: (n.kind === "exchange" ? "⇄ " : "▤ ") + n.label + (n.missing ? " (missing)" : ""), kind: n.kind}})),
      ...t.edges.map((e, i) => ({data: {id: `e${i}`, source: e.source, target: e.target, kind: e.kind, key: e.routing_key ?? "", label: e.kind === "binding" ? (e.routing_key || (Object.keys(e.arguments || {}).length ? JSON.stringify(e.arguments) : "")) : e.kind + (e.routing_key ? ` (${e.routing_key})` : "")}})),
    ];
    if (cy) cy.destroy();
    cy = cytoscape({container: graphBox, elements, maxZoom: 1.6, minZoom: 0.2,
      layout: {name: "breadthfirst", directed: true, roots: [`exchange:${name === "amq.default" ? "" : name}`], spacingFactor: 1.1},
      style: [
        {selector: "node", style: {label: "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4, width: 22, height: 22}},
        {selector: "node[kind='exchange']", style: {shape: "round-rectangle", "background-color": "#2a6f97"}},
        {selector: "node[kind='queue']", style: {shape: "barrel", "background-color": "#888"}},
        {selector: "edge", style: {label: "data(label)", "font-size": 9, "curve-style": "bezier", "target-arrow-shape": "triangle", width: 1.5, "text-rotation": "autorotate"}},
        ...Object.entries(EDGE_STYLE).map(([kind, s]) => ({selector: `edge[kind='${kind}']`, style: {"line-color": s.color, "target-arrow-color": s.color, "line-style": s.style}})),
        {selector: "node.hit", style: {"background-color": "#1b7f3b"}},
        {selector: "edge.hit", style: {"line-color": "#1b7f3b", "target-arrow-color": "#1b7f3b", width: 3}},
        {selector: ".miss", style: {opacity: 0.35}},
      ]});
    window.leveretGraph = cy;
  }
  const edgesOf = (source, kind, target) => cy.edges().filter((e) => e.data("source") === source && e.data("kind") === kind && (target === undefined || e.data("target") === target));
  function highlight(trace) {
    if (!cy) return;
    cy.elements().removeClass("hit miss");
    if (!trace) return;
    const hit = new Set();
    const walk = (hop) => {
      const from = `exchange:${hop.exchange}`;
      hit.add(from);
      for (const m of hop.matched) {
        const to = `${m.destination_type}:${m.destination}`;
        hit.add(to);
        edgesOf(from, "binding", to).filter((e) => e.data("key") === m.routing_key).addClass("hit");
      }
      hop.hops.forEach(walk);
      if (hop.alternate) { edgesOf(from, "alternate-exchange").addClass("hit"); walk(hop.alternate); }
    };
    walk(trace.route);
    const dead = (next) => { for (const n of next || []) { if (!n.route) continue; edgesOf("queue:" + n.queue, "dead-letter").addClass("hit"); walk(n.route); dead(n.next); } };
    dead(trace.next);
    cy.nodes().forEach((n) => n.addClass(hit.has(n.id()) ? "hit" : "miss"));
    cy.edges().forEach((e) => { if (!e.hasClass("hit")) e.addClass("miss"); });
  }
  function hopList(hop) {
    const label = `${hop.exchange || "(AMQP default)"} (${hop.type || "?"}) via ${hop.arrived_via}` + (hop.missing ? ": does not exist" : "") + (hop.already_seen ? ": already visited" : "");
    const items = [...hop.matched.map((v) => h("li", {class: "match", "data-dest": v.destination}, `${v.destination_type} ${v.destination} [${v.routing_key}]: `, h("span", {class: "why"}, v.reason))),
      ...hop.unmatched.map((v) => h("li", {class: "nomatch", "data-dest": v.destination}, `${v.destination_type} ${v.destination} [${v.routing_key}]: `, h("span", {class: "why"}, v.reason)))];
    const children = [...hop.hops.map(hopList)];
    if (hop.alternate) children.push(h("div", {}, h("b", {}, "nothing matched, to the alternate exchange:"), hopList(hop.alternate)));
    return h("div", {class: "hop"}, h("b", {}, label), h("ul", {}, items), h("div", {style: "padding-left:18px"}, children));
  }
  function nextList(next) {
    return h("ul", {class: "next"}, (next || []).map((n) => h("li", {"data-queue": n.queue}, `on reject or expiry from ${n.queue}: `,
      n.route ? h("span", {}, `to dead-letter exchange ${n.dead_letter_exchange || "(AMQP default)"} with key ${n.routing_keys.join(", ")}, landing in ${n.queues.length ? n.queues.join(", ") : "no queue (dropped)"}`, hopList(n.route), nextList(n.next)) : h("span", {class: "why"}, n.why))));
  }
  let asked = 0; // answers can come back out of order: only the latest is drawn
  async function run() {
    const mine = ++asked;
    let hdrs;
    try { hdrs = parseArgs(headers.value); } catch (e) { showError(box, e); return; }
    try {
      const sent = [key.value, headers.value];
      const t = await api("POST", `leveret/trace/${enc(vhost)}/${enc(name)}`, {routing_key: sent[0], headers: hdrs});
      if (mine !== asked) return;
      box.hidden = true;
      result.replaceChildren(h("p", {id: "landing", class: t.queues.length ? "ok" : "error"}, t.queues.length ? `Lands in: ${t.queues.join(", ")}` : "Routed to no queue (unroutable)"),
        hopList(t.route), h("h3", {}, "Next, on reject or expiry"), nextList(t.next));
      result.dataset.key = sent[0];
      result.dataset.headers = sent[1];
      highlight(t);
    } catch (e) { showError(box, e); }
  }
  let pending = null;
  const soon = () => { clearTimeout(pending); pending = setTimeout(run, 150); };
  key.addEventListener("input", soon);
  headers.addEventListener("input", soon);
  const refresh = async () => { await drawTopology(); await run(); };
  every(refresh);
  return {refresh};
}

function routesPage() {
  const text = h("textarea", {id: "route-text", rows: 16, placeholder: "declare queue q\npublish to q \"hello\"\nexpect q has 1 message"});
  const file = h("input", {type: "file", accept: ".route,text/plain", onchange: async () => { if (file.files[0]) text.value = await file.files[0].text(); }});
  const out = h("div", {id: "route-report"});
  const box = errorBox();
  main.append(h("section", {class: "card"}, h("h2", {}, "Run a route file"),
    h("p", {class: "hint"}, "As `leveret test FILE` runs it: on a broker of its own, with a virtual clock; this broker is not touched."),
    text, h("div", {class: "toolbar"}, file, h("button", {id: "run-route", onclick: () => action(box, () => api("POST", "leveret/test", {text: text.value, name: file.files[0] ? file.files[0].name : "pasted.route"}),
      (r) => out.replaceChildren(h("p", {class: r.passed ? "ok" : "error", id: "route-verdict"}, r.passed ? `passed (${r.expectations} expectations)` : "failed"), h("pre", {}, r.report)))}, "Run")), box, out));
}

async function adminPage() {
  const sections = [["Users", "users", ["name", "tags"]], ["Virtual hosts", "vhosts", ["name", "messages"]],
    ["Permissions", "permissions", ["user", "vhost", "configure", "write", "read"]], ["Policies", "policies", ["vhost", "name", "pattern", "apply-to", "priority", "definition"]]];
  for (const [title, path, cols] of sections) {
    const card = h("section", {class: "card"}, h("h2", {}, title));
    main.append(card);
    try {
      const rows = await api("GET", path);
      card.append(h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
        h("tbody", {}, rows.map((r) => h("tr", {}, cols.map((c) => h("td", {}, typeof r[c] === "object" ? JSON.stringify(r[c]) : fmt(r[c]))))))));
    } catch (e) {
      card.append(h("p", {class: "hint"}, e.status === 404 ? `This broker's API has no /api/${path} yet.` : e.message));
    }
  }
}

// ------------------------------------------------------------ routing between pages
const PAGES = [
  [/^\/$/, overviewPage], [/^\/connections$/, connectionsPage], [/^\/channels$/, channelsPage],
  [/^\/exchanges$/, exchangesPage], [/^\/exchanges\/([^/]+)\/([^/]+)$/, exchangePage],
  [/^\/queues$/, queuesPage], [/^\/queues\/([^/]+)\/([^/]+)$/, queuePage],
  [/^\/routes$/, routesPage], [/^\/admin$/, adminPage],
];

function show() {
  timers.forEach(clearInterval);
  timers = [];
  charts.forEach((c) => c.destroy());
  charts = [];
  main.replaceChildren();
  const path = (location.hash || "#/").slice(1);
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === "#" + path.split("/").slice(0, 2).join("/") || (path === "/" && a.getAttribute("href") === "#/"));
  for (const [pattern, page] of PAGES) {
    const m = pattern.exec(path);
    if (m) { page(...m.slice(1).map(decodeURIComponent)); return; }
  }
  main.append(h("p", {class: "error"}, `No page ${path}`));
}

async function start() {
  const reply = await fetch("/session", {credentials: "same-origin"});
  if (!reply.ok) { location.href = "/login.html"; return; }
  const session = await reply.json();
  csrf = session.csrf;
  document.getElementById("who").textContent = session.user;
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/logout", {method: "POST", headers: {"x-csrf-token": csrf}, credentials: "same-origin"});
    location.href = "/login.html";
  });
  window.addEventListener("hashchange", show);
  show();
}

start();
