// The admin page: the route table once, then traffic, backends and
// readiness every two seconds from the REST admin API. No framework, no
// external assets; every value is set as text, never as HTML.
"use strict";

const POLL_MS = 2000;

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}

function td(className, text) {
  return el("td", { className: className || "", textContent: text == null ? "" : String(text) });
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  const body = await r.json();
  if (!r.ok && path !== "/readyz") throw new Error(path + ": HTTP " + r.status);
  return body;
}

function seconds(d) {
  // google.protobuf.Duration in JSON: "1.500s".
  return d ? parseFloat(d) : 0;
}

function latency(s) {
  if (!s) return "–";
  if (s < 0.01) return (s * 1000).toFixed(2) + " ms";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  return s.toFixed(2) + " s";
}

function span(s) {
  if (s < 90) return Math.round(s) + " s";
  return Math.round(s / 60) + " min";
}

function rateLimit(rl) {
  if (!rl || !rl.requests) return "none";
  return rl.requests + " / " + rl.period + " (burst " + rl.burst + ")";
}

function renderRoutes(routes) {
  const body = document.querySelector("#routes tbody");
  body.replaceChildren();
  for (const r of routes) {
    const p = r.policy || {};
    let access = p.access || "";
    if (p.scopes && p.scopes.length) access += " [" + p.scopes.join(", ") + "]";
    let credentials = "none needed";
    if (p.access !== "public") credentials = (r.credentials || []).length ? r.credentials.join(", ") : "none configured";
    const tr = el("tr", {},
      el("td", { className: "route" },
        el("div", { className: "http", textContent: (r.http || []).join(", ") }),
        el("div", { className: "method", textContent: r.method })),
      (r.steps || []).length ? el("td", { className: "backend" }, el("div", { textContent: "composite, served by the gateway" }),
        ...r.steps.map((s) => el("div", { className: "step muted", textContent: "step " + s.name + ": " + s.method +
          (s.forEach ? " for each " + s.forEach : "") + (s.optional ? " (optional)" : "") })))
        : td("backend", r.backend + (r.tag ? " tag=" + r.tag : "") + (r.datacenter ? " dc=" + r.datacenter : "")),
      td("kind", r.kind),
      el("td", { className: "policy" },
        el("div", { className: "access", textContent: access }),
        el("div", { className: "credentials muted", textContent: "credentials: " + credentials }),
        el("div", { className: "ratelimit muted", textContent: "limit " + rateLimit(p.rateLimit) })),
      td("num requests", "0"),
      td("num rps", "0.0"),
      td("num errors", "0"),
      td("num p50", "–"),
      td("num p99", "–"),
      td("recent", ""));
    tr.dataset.method = r.method;
    body.append(tr);
  }
}

function renderTraffic(t) {
  document.getElementById("window").textContent = span(seconds(t.window));
  document.getElementById("errors-window").textContent = span(seconds(t.errorsWindow));
  for (const r of t.routes || []) {
    const tr = document.querySelector('#routes tr[data-method="' + CSS.escape(r.method) + '"]');
    if (!tr) continue;
    const set = (cls, text) => { tr.querySelector("td." + cls).textContent = text; };
    set("requests", Number(r.requests));
    set("rps", r.requestsPerSecond.toFixed(1));
    const errors = Number(r.errors);
    set("errors", errors + (r.errorRatio > 0 ? " (" + (r.errorRatio * 100).toFixed(1) + "%)" : ""));
    tr.querySelector("td.errors").classList.toggle("hot", r.errorRatio > 0);
    set("p50", latency(r.p50Seconds));
    set("p99", latency(r.p99Seconds));
    set("recent", (r.recentErrors || []).map((e) => e.code + " " + e.count).join(", "));
  }
}

// resilienceLine says how calls to a backend are balanced and guarded.
function resilienceLine(r) {
  const o = r.outlierDetection;
  let line = r.loadBalancing + (r.hashHeader ? " on " + r.hashHeader : "");
  line += " · " + (o.consecutiveFailures > 0
    ? "ejects after " + o.consecutiveFailures + " failures in a row for " + o.baseEjectionTime + "+ (at most " + o.maxEjectionPercent + "%)"
    : "no outlier ejection");
  line += " · " + (r.maxConcurrentRequests > 0 ? r.inFlight + " of " + r.maxConcurrentRequests + " concurrent calls" : r.inFlight + " calls, no limit");
  if (r.healthCheck) line += " · gRPC health checked";
  return line;
}

function renderBackends(list, resilience) {
  const byName = new Map(((resilience && resilience.backends) || []).map((r) => [r.name, r]));
  const box = document.getElementById("backends");
  box.replaceChildren();
  for (const b of list) {
    const n = (b.instances || []).length;
    const pill = el("span", {
      className: "pill healthy " + (!b.resolved ? "unknown" : n > 0 ? "ok" : "bad"),
      textContent: !b.resolved ? "waiting for Consul" : n + " healthy",
    });
    let meta = "serves " + (b.services || []).join(", ");
    if (b.lastWatchOk) meta += " · Consul answered " + span((Date.now() - Date.parse(b.lastWatchOk)) / 1000) + " ago";
    if (Number(b.watchErrors) > 0) meta += " · " + b.watchErrors + " watch errors";
    if (b.lastWatchError) meta += " · last error: " + b.lastWatchError;
    const rows = (b.instances || []).map((i) => {
      const tr = el("tr", {}, td("instance-id", i.id), td("address", i.address),
        td("num calls", Number(i.calls)), td("num errors", Number(i.errors)));
      tr.dataset.instance = i.id;
      return tr;
    });
    const table = el("table", {},
      el("thead", {}, el("tr", {}, el("th", { textContent: "Instance" }), el("th", { textContent: "Address" }),
        el("th", { className: "num", textContent: "Calls" }), el("th", { className: "num", textContent: "Errors" }))),
      el("tbody", {}, ...rows));
    const r = byName.get(b.name);
    const ejected = ((r && r.ejected) || []).map((e) => {
      const li = el("li", { className: "ejected", textContent: e.id + " (" + e.address + ") ejected until " +
        new Date(e.until).toLocaleTimeString() + ": " + e.reason });
      li.dataset.instance = e.id;
      return li;
    });
    const card = el("div", { className: "backend" },
      el("h3", { textContent: b.name }), pill,
      el("div", { className: "meta muted", textContent: meta }),
      r ? el("div", { className: "meta muted resilience", textContent: resilienceLine(r) }) : "",
      ejected.length ? el("ul", { className: "ejections" }, ...ejected) : "",
      n > 0 ? table : el("p", { className: "muted", textContent: "No healthy instance: calls fail at once with UNAVAILABLE." }));
    card.dataset.backend = b.name;
    box.append(card);
  }
}

function renderConsul(c) {
  const e = document.getElementById("consul");
  if (!c || !c.since) {
    e.className = "pill unknown";
    e.textContent = "Consul: no answer yet";
    return;
  }
  const ago = span((Date.now() - Date.parse(c.since)) / 1000);
  e.className = "pill " + (c.reachable ? "ok" : "bad");
  e.textContent = c.reachable
    ? "Consul reachable" + (Number(c.outages) > 0 ? " (back " + ago + " ago)" : "")
    : "Consul unreachable for " + ago + ": routing to the last known instances" + (c.lastError ? " (" + c.lastError + ")" : "");
}

function renderReady(r) {
  const e = document.getElementById("ready");
  e.className = "pill " + (r.ready ? "ok" : "bad");
  e.textContent = r.ready ? "ready" : "not ready: " + r.reason;
}

async function poll() {
  const err = document.getElementById("error");
  try {
    const [traffic, backends, ready, resilience] = await Promise.all([
      getJSON("/admin/v1/traffic"), getJSON("/admin/v1/backends"), getJSON("/readyz"), getJSON("/admin/v1/resilience")]);
    renderTraffic(traffic);
    renderBackends(backends.backends || [], resilience);
    renderConsul(backends.consul);
    renderReady(ready);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    err.hidden = true;
  } catch (e) {
    err.hidden = false;
    err.textContent = "Cannot reach the gateway: " + e.message;
  }
}

// renderRateLimits shows the mode and, in mode redis, the shared store.
function renderRateLimits(l) {
  document.getElementById("ratelimit-mode").textContent = l.mode + (l.replicas > 1 ? " across " + l.replicas + " replicas" : "");
  const e = document.getElementById("ratelimit-store");
  e.replaceChildren();
  const st = l.store;
  if (!st) return;
  const ago = st.since ? " for " + span((Date.now() - Date.parse(st.since)) / 1000) : "";
  e.append("Store: " + st.kind + " " + (st.addresses || []).join(", ") + " ",
    el("span", { className: "pill store " + (st.state === "up" ? "ok" : st.state === "down" ? "bad" : "unknown"), textContent: st.state + ago }),
    " · failure mode " + st.failureMode + " · " + st.outages + " outages, " + st.errors + " errors" +
    (st.lastError ? " · last error: " + st.lastError : ""));
}

async function pollRateLimits() {
  try {
    renderRateLimits(await getJSON("/admin/v1/rate-limits"));
  } catch (e) {
    document.getElementById("ratelimit-store").textContent = e.message;
  }
}

// lookUpQuota shows what a consumer has left of each limited method.
async function lookUpQuota(ev) {
  ev.preventDefault();
  const consumer = document.getElementById("quota-consumer").value;
  const box = document.getElementById("quota");
  const r = await fetch("/admin/v1/quota?consumer=" + encodeURIComponent(consumer), { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) {
    box.replaceChildren(el("p", { className: "error", textContent: body.message || "HTTP " + r.status }));
    return;
  }
  const rows = (body.quotas || []).map((q) => el("tr", {}, el("td", {}, el("div", { className: "method", textContent: q.method })),
    td("", rateLimit(q.rateLimit)), td("num remaining", q.remaining), td("num", span(seconds(q.resetAfter))), td("", q.source)));
  box.replaceChildren(el("table", { id: "quota-table" },
    el("thead", {}, el("tr", {}, el("th", { textContent: "Method" }), el("th", { textContent: "Limit" }),
      el("th", { className: "num", textContent: "Remaining" }), el("th", { className: "num", textContent: "Full again in" }),
      el("th", { textContent: "From" }))),
    el("tbody", {}, ...rows)));
}

async function main() {
  const [routes, build] = await Promise.all([getJSON("/admin/v1/routes"), getJSON("/admin/v1/build")]);
  renderRoutes(routes.routes || []);
  document.getElementById("build").textContent =
    (build.version || "") + " · " + (build.goVersion || "") + (build.revision ? " · " + build.revision.slice(0, 12) : "") +
    " · up since " + new Date(build.startTime).toLocaleString();
  document.getElementById("quota-form").addEventListener("submit", lookUpQuota);
  await Promise.all([poll(), pollRateLimits()]);
  setInterval(poll, POLL_MS);
  setInterval(pollRateLimits, POLL_MS);
}

main().catch((e) => {
  const err = document.getElementById("error");
  err.hidden = false;
  err.textContent = "Cannot load the route table: " + e.message;
});
