// The compliance dashboard: reads GET dashboard/data with the read token, which stays in
// this page's memory (never in the URL, a cookie or storage), and draws it. Every value
// from the server enters the page as text (textContent), never as markup.
"use strict";

const REFRESH_MS = 5000;
let token = null; // serving.read_token, as typed; dropped on a 401
let timer = null;

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function duration(seconds) {
  const s = Math.abs(seconds);
  const sign = seconds < 0 ? "-" : "";
  if (s < 60) return sign + s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return sign + (s / 60).toFixed(1) + " min";
  if (s < 86400) return sign + (s / 3600).toFixed(1) + " h";
  return sign + (s / 86400).toFixed(1) + " d";
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
}

async function load() {
  const answer = await fetch("dashboard/data", {
    headers: { Authorization: "Bearer " + token },
    cache: "no-store",
    credentials: "omit",
  });
  if (answer.status === 401 || answer.status === 403) {
    const body = await answer.json().catch(() => ({}));
    logout(body.detail || "wrong token");
    return;
  }
  if (!answer.ok) {
    $("updated").textContent = "could not refresh (" + answer.status + "); retrying";
    return;
  }
  draw(await answer.json());
}

function logout(message) {
  token = null;
  clearInterval(timer);
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

function draw(data) {
  $("login").hidden = true;
  $("board").hidden = false;
  $("updated").textContent = "updated " + when(data.now);
  const open = data.requests.filter((r) => r.state !== "purged");
  $("open").textContent = String(open.length);
  $("oldest").textContent = open.length ? duration(Math.max(...open.map((r) => r.age_s))) : "none";
  $("deadline").textContent = duration(data.deadline_s);
  const audit = $("audit");
  audit.className = "value";
  if (!data.audit) {
    audit.textContent = "never recorded";
  } else {
    audit.textContent = (data.audit.ok ? "passed " : "FAILED ") + when(data.audit.at);
    audit.classList.add(data.audit.ok ? "ok" : "bad");
  }
  $("rolled").textContent = String(data.rolled_back.length);
  drawRequests(data.requests);
  drawShards(data.rolled_back, data.slices);
  drawPlot(data.daily);
}

function drawRequests(requests) {
  const body = $("requests").tBodies[0];
  body.replaceChildren();
  for (const r of requests.slice().reverse()) {
    const row = document.createElement("tr");
    row.dataset.request = r.id;
    row.append(el("td", r.id, "mono"));
    const state = el("td");
    state.append(el("span", r.state, "state state-" + r.state));
    row.append(state);
    row.append(el("td", duration(r.age_s), "num"));
    row.append(el("td", when(r.deadline_at)));
    const margin = duration(Math.abs(r.time_left_s));
    const left = el("td", "", "num");
    if (r.state === "purged") {
      left.textContent = r.time_left_s >= 0 ? "met, " + margin + " early" : "late by " + margin;
    } else {
      left.textContent = r.time_left_s >= 0 ? margin : "overdue by " + margin;
    }
    if (r.time_left_s < 0) left.classList.add("late");
    row.append(left);
    row.append(el("td", r.points + (r.test_points ? " + " + r.test_points + " test" : ""), "num"));
    row.append(el("td", r.reason === null ? "" : r.reason, "reason"));
    row.append(receiptCell(r.receipt));
    body.append(row);
  }
}

function receiptCell(receipt) {
  const cell = el("td");
  if (!receipt) return cell;
  const details = document.createElement("details");
  details.append(el("summary", receipt.sha256.slice(0, 16), "mono"));
  details.append(el("pre", JSON.stringify(receipt, null, 1)));
  cell.append(details);
  return cell;
}

function drawShards(rolled, slices) {
  const list = $("shards");
  list.replaceChildren();
  $("no-rollback").hidden = rolled.length > 0;
  for (const s of rolled) {
    const what = s.stage === 0 ? "left out of the vote" : "serves stage " + s.stage + " of " + slices;
    list.append(el("li", "shard " + s.shard + ": " + what + ", for request(s) " + s.pending.join(", ")));
  }
}

function drawPlot(daily) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  const W = 640, H = 220, L = 44, R = 52, T = 12, B = 34;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "deletions per day and median time to compliance");
  const text = (x, y, value, anchor) => {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", x);
    t.setAttribute("y", y);
    t.setAttribute("text-anchor", anchor || "middle");
    t.textContent = value;
    svg.append(t);
  };
  if (!daily.length) {
    text(W / 2, H / 2, "no request purged yet");
    $("plot").replaceChildren(svg);
    return;
  }
  const most = Math.max(...daily.map((d) => d.deletions));
  const slowest = Math.max(...daily.map((d) => d.median_time_to_compliance_s), 1e-3);
  const step = (W - L - R) / daily.length;
  const y = (v, top) => H - B - (v / top) * (H - T - B);
  const points = [];
  daily.forEach((d, i) => {
    const bar = document.createElementNS(NS, "rect");
    bar.setAttribute("class", "bar");
    bar.setAttribute("x", L + i * step + step * 0.15);
    bar.setAttribute("width", step * 0.7);
    bar.setAttribute("y", y(d.deletions, most));
    bar.setAttribute("height", H - B - y(d.deletions, most));
    svg.append(bar);
    const cx = L + i * step + step / 2, cy = y(d.median_time_to_compliance_s, slowest);
    points.push(cx + "," + cy);
    const dot = document.createElementNS(NS, "circle");
    dot.setAttribute("class", "dot");
    dot.setAttribute("cx", cx);
    dot.setAttribute("cy", cy);
    dot.setAttribute("r", 3);
    svg.append(dot);
    text(cx, H - B + 14, d.day.slice(5));
  });
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("class", "line");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  text(L - 6, y(most, most) + 4, String(most), "end");
  text(L - 6, H - B + 4, "0", "end");
  text(W - R + 6, y(slowest, slowest) + 4, duration(slowest), "start");
  text(L, H - 4, "bars: requests purged that day; line: their median time to compliance", "start");
  $("plot").replaceChildren(svg);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value;
    $("token").value = "";
    $("login-error").textContent = "";
    load();
    clearInterval(timer);
    timer = setInterval(() => token && load(), REFRESH_MS);
  });
});
