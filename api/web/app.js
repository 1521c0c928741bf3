// segd's built-in page: segments with sizes, enter/exit counts and a
// size-over-time sparkline (kept in the page since it opened), and a
// customer lookup. Plain JavaScript, no external resources.
"use strict";
const history = {}; // segment id -> recent sizes
const maxPoints = 60;
// The API token, if the API needs one (docs/api.md, "Security"): kept in
// this tab's sessionStorage only (gone when the tab closes), sent in the
// Authorization header, never in a URL.
const tokenInput = document.getElementById("token");
localStorage.removeItem("segd-token"); // where earlier versions kept it
tokenInput.value = sessionStorage.getItem("segd-token") || "";
tokenInput.addEventListener("change", () => { sessionStorage.setItem("segd-token", tokenInput.value); refresh(); });

// api calls the API. A POST sends a JSON body: the API refuses other body
// types on POST, which cross-site forms could send.
function api(path, method) {
  const opts = { headers: {}, method: method || "GET", credentials: "omit" };
  if (tokenInput.value) opts.headers["Authorization"] = "Bearer " + tokenInput.value;
  if (opts.method === "POST") {
    opts.headers["Content-Type"] = "application/json";
    opts.body = "{}";
  }
  return fetch(path, opts).then(async r => {
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || (r.status + " " + r.statusText));
    return body;
  });
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function sparkline(points) {
  if (points.length === 1) points = [points[0], points[0]]; // a flat line, not an invisible dot
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 120 24");
  const max = Math.max(1, ...points), min = Math.min(...points);
  const span = Math.max(1, max - min);
  const step = points.length > 1 ? 120 / (points.length - 1) : 0;
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map((v, i) => (i * step).toFixed(1) + "," + (22 - 20 * (v - min) / span).toFixed(1)).join(" "));
  svg.appendChild(line);
  return svg;
}

// showHealth warns when a partition cannot publish its changes, or waits
// at a record because the schema registry does not answer (from /readyz,
// which needs no token).
function showHealth() {
  fetch("/readyz").then(r => r.json()).then(body => {
    const el = document.getElementById("health");
    const failing = body.publish_failing || [];
    const waiting = body.decode_waiting || [];
    const parts = [];
    if (failing.length > 0) {
      parts.push("Changes are not being published: " + failing.map(f =>
        "partition " + f.partition + " since " + new Date(f.since).toLocaleTimeString() + " (" + f.error + ")").join("; "));
    }
    if (waiting.length > 0) {
      parts.push("Input waits for the schema registry: " + waiting.map(w =>
        "partition " + w.partition + " at " + w.topic + " offset " + w.offset + " since " + new Date(w.since).toLocaleTimeString() + " (" + w.error + ")").join("; "));
    }
    if (parts.length === 0) { el.hidden = true; return; }
    el.textContent = parts.join(" ");
    el.hidden = false;
  }).catch(() => {});
}

function refresh() {
  showHealth();
  api("/v1/rules").then(r => {
    document.getElementById("rules").textContent = "rules: version " + r.version + ", " + String(r.hash).slice(0, 12);
  }).catch(() => {});
  api("/v1/segments").then(data => {
    const tbody = document.querySelector("#segments tbody");
    tbody.replaceChildren();
    for (const s of data.segments) {
      const h = history[s.id] || (history[s.id] = []);
      h.push(s.size);
      if (h.length > maxPoints) h.shift();
      const tr = document.createElement("tr");
      tr.dataset.segment = s.id;
      tr.append(cell(s.id), cell(s.description || ""), cell(s.size, "num"));
      const spark = document.createElement("td");
      spark.appendChild(sparkline(h));
      tr.append(spark, cell(s.enters_1h, "num"), cell(s.exits_1h, "num"), cell(s.enters_24h, "num"), cell(s.exits_24h, "num"));
      const dl = document.createElement("td");
      const btn = document.createElement("button");
      btn.textContent = "CSV";
      btn.className = "export";
      btn.title = "download the members of " + s.id;
      btn.addEventListener("click", () => exportMembers(s.id));
      dl.appendChild(btn);
      tr.appendChild(dl);
      tbody.appendChild(tr);
    }
    document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
  }).catch(err => {
    document.getElementById("status").textContent = "cannot load segments: " + err.message;
  });
}

// exportMembers downloads a segment's members as CSV through a short-lived
// signed link that an authenticated request issues: the token stays in
// the header, out of the URL, the history and the server's logs.
function exportMembers(id) {
  api("/v1/segments/" + encodeURIComponent(id) + "/export", "POST").then(link => {
    const a = document.createElement("a");
    a.href = link.url;
    a.download = id + "-members.csv";
    document.body.appendChild(a);
    a.click();
    a.remove();
  }).catch(err => {
    document.getElementById("status").textContent = "cannot export " + id + ": " + err.message;
  });
}

document.getElementById("lookup").addEventListener("submit", ev => {
  ev.preventDefault();
  const id = document.getElementById("customer").value.trim();
  const out = document.getElementById("customer-result");
  api("/v1/customers/" + encodeURIComponent(id))
    .then(c => {
      out.textContent = (c.masked ? "(traits and profile masked: this token lacks the pii scope)\n" : "") + JSON.stringify(c, null, 2);
    })
    .catch(err => { out.textContent = err.message; });
});

refresh();
setInterval(refresh, 5000);
