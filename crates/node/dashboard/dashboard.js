// The Limes dashboard. Plain browser JavaScript, no library and nothing fetched from outside
// the node: every figure comes from this node's API (see /v1/openapi.json) with the operator's
// token, which is kept in this tab's session storage and sent in the Authorization header only.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 1000;
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem("limes-token");
let view = "functions";
let timer = null;

// ---- API ------------------------------------------------------------------------------------

class ApiError extends Error {}

// Calls the API; a non-2xx answer becomes an ApiError with the node's own message.
async function api(method, path, body, contentType) {
  const headers = { Authorization: "Bearer " + token };
  if (contentType) headers["Content-Type"] = contentType;
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (e) {
    throw new ApiError("the node cannot be reached: " + e.message);
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { /* a function's plain result */ }
  if (!response.ok) {
    const message = json && json.error ? json.error.message : text || response.statusText;
    if (response.status === 401) logout("The token was refused: " + message);
    throw new ApiError(response.status + " " + message);
  }
  return { json, text, headers: response.headers };
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// Runs an action, showing its error instead of failing silently.
async function guarded(action) {
  try {
    await action();
    showError("");
  } catch (e) {
    showError(e instanceof ApiError ? e.message : "error: " + e.message);
  }
}

// ---- log in ---------------------------------------------------------------------------------

async function login(candidate) {
  token = candidate;
  const { json } = await api("GET", "/v1/stats");
  sessionStorage.setItem("limes-token", token);
  $("whoami").textContent = "node " + json.node;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  show(view);
}

function logout(message) {
  token = null;
  sessionStorage.removeItem("limes-token");
  clearInterval(timer);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("whoami").textContent = "";
  showError(message || "");
}

// ---- views ----------------------------------------------------------------------------------

const REFRESH = {
  functions: refreshFunctions,
  load: refreshLoad,
  cluster: refreshCluster,
  workflows: refreshWorkflows,
  emergency: refreshEmergency,
  invoke: refreshInvoke,
};

function show(name) {
  view = name;
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.view === name);
  }
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== "view-" + name;
  }
  clearInterval(timer);
  const refresh = () => guarded(REFRESH[name]);
  refresh();
  // The invoke form is not redrawn under the operator's hands.
  if (name !== "invoke") timer = setInterval(refresh, REFRESH_MS);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

const ms = (us) => (us / 1000).toFixed(us < 10000 ? 3 : 1) + " ms";
const pair = (p) => (p && p.p50 ? ms(p.p50) + " / " + ms(p.p99) : "–");

// Functions: the registry joined with the live figures.
async function refreshFunctions() {
  const [{ json: listed }, { json: stats }] = await Promise.all([
    api("GET", "/v1/functions"),
    api("GET", "/v1/stats"),
  ]);
  const figures = new Map(stats.functions.map((f) => [f.name, f]));
  // Each store a function declares, with what it holds ("@shared" owns the shared ones).
  const usage = new Map((stats.kv || []).map((u) => [u.function + "/" + u.store, u]));
  const stores = (f) => [
    ...(f.kv || []).map((s) => [s, usage.get(f.name + "/" + s)]),
    ...(f.kv_shared || []).map((s) => [s + " (shared)", usage.get("@shared/" + s)]),
  ].map(([s, u]) => s + ": " + (u ? u.keys + (u.keys === 1 ? " key, " : " keys, ") + u.bytes + " B" : "empty"))
    .join("; ") || "–";
  const body = $("functions").querySelector("tbody");
  body.replaceChildren();
  for (const f of listed.functions) {
    const s = figures.get(f.name) || { invocations: 0, errors: 0 };
    const rollback = el("button", { type: "button", class: "rollback" }, "Roll back");
    rollback.disabled = f.version < 2;
    rollback.title = "make version " + (f.version - 1) + " active";
    rollback.onclick = () => guarded(async () => {
      await api("POST", "/v1/functions/" + f.name + "/rollback?version=" + (f.version - 1));
      await refreshFunctions();
    });
    const remove = el("button", { type: "button", class: "remove danger" }, "Remove");
    remove.onclick = () => guarded(async () => {
      if (!confirm("Remove " + f.name + " and all its versions?")) return;
      await api("DELETE", "/v1/functions/" + f.name);
      await refreshFunctions();
    });
    body.append(el("tr", { "data-function": f.name },
      el("td", {}, f.name),
      el("td", {}, f.kind),
      el("td", {}, f.priority + (f.public ? ", public" : "")),
      el("td", { class: "number" }, f.version + " of " + f.versions),
      el("td", { class: "digest", title: f.digest }, f.digest.slice(0, 19) + "…"),
      el("td", { class: "number invocations" }, String(s.invocations)),
      el("td", { class: "number errors" }, String(s.errors)),
      el("td", { class: "number" }, pair(s.cold_start_us)),
      el("td", { class: "number" }, pair(s.execution_us)),
      el("td", { class: "state" }, stores(f)),
      el("td", {}, rollback, " ", remove)));
  }
  $("functions-empty").hidden = listed.functions.length > 0;
}

async function deploy(event) {
  event.preventDefault();
  const name = $("deploy-name").value.trim();
  const file = $("deploy-file").files[0];
  if (!file) throw new Error("choose a .wasm file");
  const query = new URLSearchParams({ priority: $("deploy-priority").value });
  if ($("deploy-public").checked) query.set("public", "true");
  const memory = $("deploy-memory").value.trim();
  if (memory) query.set("memory", memory);
  $("deploy-status").textContent = "uploading and compiling…";
  try {
    const { json } = await api("PUT", "/v1/functions/" + encodeURIComponent(name) + "?" + query,
      await file.arrayBuffer(), "application/wasm");
    $("deploy-status").textContent = "deployed " + name + " version " + json.version;
  } catch (e) {
    $("deploy-status").textContent = "";
    throw e;
  }
  await refreshFunctions();
}

// Live load: the last five minutes, one sample a second.
async function refreshLoad() {
  const { json } = await api("GET", "/v1/stats");
  const seconds = json.seconds;
  const last = (n) => seconds.slice(-n);
  const sum = (list, key) => list.reduce((a, s) => a + s[key], 0);
  const recent = last(10);
  $("load-rps").textContent = recent.length ? (sum(recent, "requests") / recent.length).toFixed(1) : "0";
  $("load-inflight").textContent = json.in_flight + " / " + json.capacity;
  $("load-shed").textContent = String(sum(last(60), "shed"));
  const p99 = Math.max(0, ...recent.map((s) => s.latency_us.p99));
  $("load-p99").textContent = p99 ? ms(p99) : "–";
  drawLoad(seconds);
}

function line(points, cls) {
  const path = document.createElementNS(SVG, "polyline");
  path.setAttribute("points", points.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" "));
  path.setAttribute("class", cls);
  return path;
}

function text(x, y, content, anchor) {
  const t = document.createElementNS(SVG, "text");
  t.setAttribute("x", x);
  t.setAttribute("y", y);
  if (anchor) t.setAttribute("text-anchor", anchor);
  t.textContent = content;
  return t;
}

function drawLoad(seconds) {
  const svg = $("load-chart");
  svg.replaceChildren();
  const [w, h, left, right, top, bottom] = [900, 260, 50, 60, 10, 30];
  const span = 300;
  const now = seconds.length ? seconds[seconds.length - 1].at : 0;
  const x = (at) => left + ((at - (now - span)) / span) * (w - left - right);
  const maxRate = Math.max(1, ...seconds.map((s) => Math.max(s.requests, s.shed)));
  const maxP99 = Math.max(1, ...seconds.map((s) => s.latency_us.p99 / 1000));
  const y = (v, max) => h - bottom - (v / max) * (h - top - bottom);
  const axis = document.createElementNS(SVG, "path");
  axis.setAttribute("d", `M${left},${top} V${h - bottom} H${w - right} V${top}`);
  axis.setAttribute("class", "axis");
  axis.setAttribute("fill", "none");
  svg.append(axis,
    text(left - 6, top + 10, maxRate.toFixed(0) + "/s", "end"),
    text(left - 6, h - bottom, "0", "end"),
    text(w - right + 6, top + 10, maxP99.toFixed(1) + " ms"),
    text(left, h - 8, "−5 min"),
    text(w - right, h - 8, "now", "end"));
  if (!seconds.length) return;
  svg.append(
    line(seconds.map((s) => [x(s.at), y(s.requests, maxRate)]), "rps"),
    line(seconds.map((s) => [x(s.at), y(s.shed, maxRate)]), "shed"),
    line(seconds.map((s) => [x(s.at), y(s.latency_us.p99 / 1000, maxP99)]), "p99"));
}

// Calls forwarded between nodes at the previous refresh, by "from>to", to mark the pairs that
// are forwarding now.
let forwardedBefore = new Map();

// The cluster: every member at its location, marked by its role in the emergency plan, with an
// arrow for each pair of nodes that forwarded calls.
async function refreshCluster() {
  const { json } = await api("GET", "/v1/cluster");
  const svg = $("cluster-map");
  const body = $("cluster-nodes").querySelector("tbody");
  svg.replaceChildren();
  body.replaceChildren();
  if (json.mode !== "cluster") {
    $("cluster-state").textContent = "This node runs alone (start it with --cluster to join one).";
    return;
  }
  const plan = json.emergency && json.emergency.active ? json.emergency.plan : null;
  const released = new Set(plan ? plan.released : []);
  $("cluster-state").textContent = "NATS " + json.state + " · " + json.members.length + " nodes" +
    (plan ? " · emergency: " + released.size + " released" : "") +
    (json.last_error ? " · last error: " + json.last_error : "");
  const xs = json.members.map((m) => m.location[0]);
  const ys = json.members.map((m) => m.location[1]);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const scale = (v, lo, hi, size) => 50 + (hi > lo ? ((v - lo) / (hi - lo)) * (size - 100) : (size - 100) / 2);
  const at = new Map(json.members.map((m) => [m.id, {
    x: scale(m.location[0], minX, maxX, 600),
    y: 400 - scale(m.location[1], minY, maxY, 400),
    r: 12 + Math.min(18, m.capacity / 4),
  }]));
  drawForwarded(svg, json.members, at);
  for (const m of json.members) {
    const role = released.has(m.id) ? "released" : "keeper";
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "node " + role + (m.id === json.node ? " self" : "") +
      (json.state === "connected" ? "" : " disconnected"));
    g.setAttribute("data-node", m.id);
    const { x: cx, y: cy, r } = at.get(m.id);
    const circle = document.createElementNS(SVG, "circle");
    circle.setAttribute("cx", cx);
    circle.setAttribute("cy", cy);
    circle.setAttribute("r", r);
    g.append(circle, text(cx, cy - 26, m.id, "middle"),
      text(cx, cy + 40, m.in_flight + "/" + m.capacity + " · " + role, "middle"));
    svg.append(g);
    const sent = Object.entries(m.forwarded || {}).map(([to, n]) => to + ": " + n).join(", ");
    body.append(el("tr", { "data-node": m.id, class: role },
      el("td", {}, m.id + (m.id === json.node ? " (this node)" : "")),
      el("td", {}, "(" + m.location.join(", ") + ")"),
      el("td", { class: "number" }, m.in_flight + " / " + m.capacity),
      el("td", { class: "role" }, role),
      el("td", { class: "forwarded" }, sent || "–"),
      el("td", {}, m.listen || "–")));
  }
}

// One arrow per pair of members that forwarded calls, from the edge of one circle to the edge
// of the other, labelled with the count; pairs whose count grew since the last refresh are drawn
// as active.
function drawForwarded(svg, members, at) {
  const defs = document.createElementNS(SVG, "defs");
  const marker = document.createElementNS(SVG, "marker");
  for (const [k, v] of [["id", "arrow"], ["viewBox", "0 0 10 10"], ["refX", "9"], ["refY", "5"],
    ["markerWidth", "7"], ["markerHeight", "7"], ["orient", "auto-start-reverse"]]) {
    marker.setAttribute(k, v);
  }
  const head = document.createElementNS(SVG, "path");
  head.setAttribute("d", "M 0 0 L 10 5 L 0 10 z");
  marker.append(head);
  defs.append(marker);
  svg.append(defs);
  const now = new Map();
  for (const m of members) {
    for (const [to, count] of Object.entries(m.forwarded || {})) {
      const [a, b] = [at.get(m.id), at.get(to)];
      const key = m.id + ">" + to;
      now.set(key, count);
      if (!a || !b) continue; // the target left the view
      const [dx, dy] = [b.x - a.x, b.y - a.y];
      const length = Math.hypot(dx, dy) || 1;
      const [ux, uy] = [dx / length, dy / length];
      const line = document.createElementNS(SVG, "line");
      const active = count > (forwardedBefore.get(key) || 0);
      line.setAttribute("class", "forward" + (active ? " active" : ""));
      line.setAttribute("data-from", m.id);
      line.setAttribute("data-to", to);
      line.setAttribute("x1", a.x + ux * a.r);
      line.setAttribute("y1", a.y + uy * a.r);
      line.setAttribute("x2", b.x - ux * (b.r + 2));
      line.setAttribute("y2", b.y - uy * (b.r + 2));
      line.setAttribute("marker-end", "url(#arrow)");
      // Labels sit beside the line, on the sender's side, so that a pair forwarding both ways
      // shows two readable counts.
      const label = text((a.x + b.x) / 2 - uy * 10, (a.y + b.y) / 2 + ux * 10, count + " fwd", "middle");
      label.setAttribute("class", "forward-count");
      svg.append(line, label);
    }
  }
  forwardedBefore = now;
}

async function refreshEmergency() {
  const { json } = await api("GET", "/v1/emergency");
  const status = $("emergency-status");
  status.classList.toggle("active", json.active);
  if (!json.active) {
    status.textContent = "No emergency is declared.";
    return;
  }
  const p = json.plan;
  const d = p.declaration;
  status.replaceChildren(
    el("strong", {}, "Emergency in force"),
    el("div", {}, "urgent: " + d.urgent.join(", ")),
    el("div", {}, "latency bound: " + d.max_added_ms + " ms" + (d.area ? " · area " + d.area.join(", ") : "")),
    el("div", { id: "emergency-released" }, "released: " + (p.released.join(", ") || "none")),
    el("div", {}, "keepers: " + p.keepers.join(", ") + " · worst added " + p.worst_added_ms.toFixed(1) + " ms"),
    el("div", { id: "emergency-declared-by" }, "declared by " + (d.declared_by || "?") +
      ", decided by node " + p.decided_by + " at " + new Date(p.decided_at_ms).toLocaleString()));
}

async function declare(event) {
  event.preventDefault();
  const urgent = $("emergency-urgent").value.split(",").map((s) => s.trim()).filter(Boolean);
  const request = { urgent, max_added_ms: Number($("emergency-bound").value) };
  const area = $("emergency-area").value.trim();
  if (area) request.area = area.split(",").map(Number);
  await api("POST", "/v1/emergency", JSON.stringify(request), "application/json");
  await refreshEmergency();
}

async function endEmergency() {
  await api("DELETE", "/v1/emergency");
  await refreshEmergency();
}

async function refreshInvoke() {
  const { json } = await api("GET", "/v1/functions");
  const select = $("invoke-name");
  const chosen = select.value;
  select.replaceChildren(...json.functions.map((f) => el("option", {}, f.name)));
  if (chosen) select.value = chosen;
}

async function invoke(event) {
  event.preventDefault();
  const name = $("invoke-name").value;
  if (!name) throw new Error("deploy a function first");
  const started = performance.now();
  const { text: result, headers } = await api("POST", "/v1/functions/" + encodeURIComponent(name) + "/invoke",
    $("invoke-args").value, "text/plain");
  const total = performance.now() - started;
  $("invoke-result").textContent = result;
  const us = (h) => (headers.get(h) ? ms(Number(headers.get(h))) : "–");
  $("invoke-timings").textContent = "cold start " + us("x-limes-cold-start-us") +
    " · execution " + us("x-limes-execution-us") + " · round trip " + total.toFixed(1) + " ms" +
    " · ran on node " + (headers.get("x-limes-node") || "this one") +
    (headers.get("x-limes-version") ? " · version " + headers.get("x-limes-version") : "");
}

// Workflows: each a graph of its steps, columns by how far a step is from the first, with this
// node's counters on each step.
async function refreshWorkflows() {
  const { json: stats } = await api("GET", "/v1/stats");
  const workflows = stats.workflows || [];
  $("workflows-empty").hidden = workflows.length > 0;
  $("workflows").replaceChildren(...workflows.map(drawWorkflow));
}

function drawWorkflow(w) {
  // A step's column: the longest path to it from a step nothing goes to.
  const depth = new Map(w.steps.map((s) => [s.name, 0]));
  for (let pass = 0; pass < w.steps.length; pass++) {
    for (const s of w.steps) {
      for (const t of s.to) depth.set(t.step, Math.max(depth.get(t.step), depth.get(s.name) + 1));
    }
  }
  const columns = new Map();
  const at = new Map();
  const [boxW, boxH, gapX, gapY] = [170, 64, 70, 24];
  for (const s of w.steps) {
    const d = depth.get(s.name);
    const row = columns.get(d) || 0;
    columns.set(d, row + 1);
    at.set(s.name, { x: 10 + d * (boxW + gapX), y: 10 + row * (boxH + gapY) });
  }
  const width = 20 + (Math.max(...depth.values()) + 1) * (boxW + gapX) - gapX;
  const height = 20 + Math.max(...columns.values()) * (boxH + gapY) - gapY;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("class", "workflow-graph");
  svg.style.maxWidth = width + "px";
  for (const s of w.steps) {
    for (const t of s.to) {
      const [a, b] = [at.get(s.name), at.get(t.step)];
      const edge = document.createElementNS(SVG, "line");
      edge.setAttribute("class", "edge");
      edge.setAttribute("x1", a.x + boxW);
      edge.setAttribute("y1", a.y + boxH / 2);
      edge.setAttribute("x2", b.x);
      edge.setAttribute("y2", b.y + boxH / 2);
      svg.append(edge);
      if (t.output) {
        svg.append(text((a.x + boxW + b.x) / 2, (a.y + b.y + boxH) / 2 - 4, t.output, "middle"));
      }
    }
  }
  for (const s of w.steps) {
    const { x, y } = at.get(s.name);
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "step" + (s.dead_lettered > 0 ? " dead" : ""));
    g.setAttribute("data-step", s.name);
    const box = document.createElementNS(SVG, "rect");
    box.setAttribute("x", x);
    box.setAttribute("y", y);
    box.setAttribute("width", boxW);
    box.setAttribute("height", boxH);
    box.setAttribute("rx", 6);
    const counters = text(x + 8, y + 54, s.acked + " acked · " + s.retried + " retried · " +
      s.dead_lettered + " dead" + (s.lag > 0 ? " · " + s.lag + " waiting" : ""), "start");
    counters.setAttribute("class", "counters");
    g.append(box, text(x + 8, y + 18, s.name, "start"), text(x + 8, y + 36, "[" + s.function + "]", "start"), counters);
    svg.append(g);
  }
  const title = el("h3", {}, w.name + " · " + w.priority + (w.trigger ? " · on " + w.trigger : ""));
  return el("div", { class: "workflow", "data-workflow": w.name }, title, svg);
}

// ---- wiring ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").onsubmit = (e) => {
    e.preventDefault();
    guarded(() => login($("token").value.trim()));
  };
  $("logout").onclick = () => logout("");
  for (const button of document.querySelectorAll("nav button")) {
    button.onclick = () => show(button.dataset.view);
  }
  $("deploy").onsubmit = (e) => guarded(() => deploy(e));
  $("emergency-form").onsubmit = (e) => guarded(() => declare(e));
  $("emergency-end").onclick = () => guarded(endEmergency);
  $("invoke-form").onsubmit = (e) => guarded(() => invoke(e));
  if (token) guarded(() => login(token));
});
