// The OmniOPD dashboard page: fetches /api/runs, /api/run and /api/live and draws them.
// No framework and no build step: DOM built with textContent (never innerHTML with data),
// charts are plain SVG. Refreshes every LIVE_MS while the shown run is live, and every
// IDLE_MS otherwise (new runs of a work directory appear by themselves).
"use strict";

const LIVE_MS = 2000;
const IDLE_MS = 15000;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const SVG = "http://www.w3.org/2000/svg";

const state = { sources: [], selected: null, checked: new Set(), details: {}, fetched: {}, cycle: 0, timer: null };

// ------------------------------------------------------------------ formatting

const usd = (v) => (v === null || v === undefined ? "-" : "$" + Number(v).toFixed(6));
const int = (v) => (v === null || v === undefined ? "-" : String(Math.round(v)));
const pct = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + "%");
const num = (v, d = 3) => {
  if (v === null || v === undefined) return "-";
  const a = Math.abs(v);
  return a >= 1000 ? Number(v).toFixed(0) : a > 0 && a < 1e-3 ? Number(v).toExponential(1) : String(Number(Number(v).toPrecision(d)));
};

function ago(t, now) {
  if (t === null || t === undefined) return "never";
  const s = Math.max(0, now - t);
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function cell(text, field, cls) {
  const td = el("td", cls ? { class: cls } : {}, text);
  if (field) td.setAttribute("data-field", field);
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function bar(fraction, reserved, reached) {
  const outer = el("div", { class: "bar" + (reached ? " reached" : "") });
  outer.append(el("span", { class: "spent" }), el("span", { class: "held" }));
  outer.children[0].style.width = Math.min(100, 100 * fraction) + "%";
  outer.children[1].style.left = Math.min(100, 100 * fraction) + "%";
  outer.children[1].style.width = Math.min(100, 100 * reserved) + "%";
  return outer;
}

function showMessage(text) {
  const box = document.getElementById("message");
  box.hidden = !text;
  box.textContent = text || "";
}

// ------------------------------------------------------------------ charts

// series: [{name, points: [[x, y], ...], color, dash, band: [[x, lo, hi]], bars: [[x, y, lo, hi]]}]
function chart(id, series, opts = {}) {
  const host = document.getElementById(id);
  const W = 460, H = 190, L = 56, R = 10, T = 22, B = 30;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const xs = [], ys = [];
  for (const s of series) {
    for (const p of s.points || []) { xs.push(p[0]); ys.push(p[1]); }
    for (const b of s.band || []) { xs.push(b[0]); ys.push(b[1], b[2]); }
    for (const b of s.bars || []) { xs.push(b[0]); ys.push(b[1]); if (b[2] !== null) ys.push(b[2], b[3]); }
  }
  for (const h of opts.hlines || []) ys.push(h.y);
  const title = svgText(L, 14, opts.title || "", "title");
  svg.append(title);
  const finite = ys.filter((y) => y !== null && Number.isFinite(y));
  if (!xs.length || !finite.length) {
    svg.append(svgText(W / 2, H / 2, opts.empty || "nothing recorded yet", "empty"));
    host.replaceChildren(svg);
    return;
  }
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  let y0 = Math.min(0, ...finite), y1 = Math.max(...finite);
  if (opts.yMax !== undefined) y1 = Math.max(y1, opts.yMax);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) y1 = y0 + 1;
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + ((y1 - y0) * i) / 4;
    svg.append(svgLine(L, Y(yv), W - R, Y(yv), "grid"));
    svg.append(svgText(L - 4, Y(yv) + 3, (opts.yFmt || ((v) => num(v, 3)))(yv), "ytick"));
  }
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + ((x1 - x0) * i) / 4;
    svg.append(svgText(X(xv), H - B + 14, (opts.xFmt || ((v) => num(v, 3)))(xv), "xtick"));
  }
  svg.append(svgText(W - R, H - 2, opts.xLabel || "", "xlabel"));
  for (const h of opts.hlines || []) {
    const line = svgLine(L, Y(h.y), W - R, Y(h.y), "hline");
    line.setAttribute("stroke", h.color || "#999");
    svg.append(line, svgText(W - R - 2, Y(h.y) - 3, h.label, "hlabel"));
  }
  let legendX = L + 6, legendY = T + 10;
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    if (s.band && s.band.length) {
      const top = s.band.map((b) => `${X(b[0])},${Y(b[2])}`);
      const bottom = s.band.slice().reverse().map((b) => `${X(b[0])},${Y(b[1])}`);
      const poly = document.createElementNS(SVG, "polygon");
      poly.setAttribute("points", top.concat(bottom).join(" "));
      poly.setAttribute("fill", color);
      poly.setAttribute("opacity", "0.15");
      svg.append(poly);
    }
    const pts = (s.points || []).filter((p) => p[1] !== null && Number.isFinite(p[1]));
    if (pts.length) {
      const path = document.createElementNS(SVG, "polyline");
      path.setAttribute("points", pts.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "));
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", color);
      path.setAttribute("stroke-width", "1.8");
      if (s.dash) path.setAttribute("stroke-dasharray", "5 3");
      svg.append(path);
      if (pts.length === 1 && !s.bars) { // one point makes no line: show it as a dot
        const dot = document.createElementNS(SVG, "circle");
        dot.setAttribute("cx", X(pts[0][0])); dot.setAttribute("cy", Y(pts[0][1])); dot.setAttribute("r", "3");
        dot.setAttribute("fill", color);
        svg.append(dot);
      }
    }
    for (const b of s.bars || []) {
      if (b[2] !== null && b[3] !== null) {
        const whisker = svgLine(X(b[0]), Y(b[2]), X(b[0]), Y(b[3]), "whisker");
        whisker.setAttribute("stroke", color);
        svg.append(whisker);
      }
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("cx", X(b[0])); dot.setAttribute("cy", Y(b[1])); dot.setAttribute("r", "3.5");
      dot.setAttribute("fill", color);
      svg.append(dot);
    }
    if (legendX + 5.5 * s.name.length > W - R) { legendX = L + 6; legendY += 11; }
    const legend = svgText(legendX, legendY, s.name, "legend");
    legendX += 5.5 * s.name.length + 14;
    legend.setAttribute("fill", color);
    svg.append(legend);
  });
  host.replaceChildren(svg);
}

function svgText(x, y, text, cls) {
  const t = document.createElementNS(SVG, "text");
  t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("class", cls);
  t.textContent = text;
  return t;
}

function svgLine(x1, y1, x2, y2, cls) {
  const l = document.createElementNS(SVG, "line");
  l.setAttribute("x1", x1); l.setAttribute("y1", y1); l.setAttribute("x2", x2); l.setAttribute("y2", y2);
  l.setAttribute("class", cls);
  return l;
}

// Tick labels of a time axis that starts at t0 (epoch seconds): seconds for short runs, else minutes or hours.
const sinceStart = (t0, d) => {
  const pts = Object.values(d.spend.series).flat().map((p) => p[0]);
  const span = pts.length ? Math.max(...pts) - t0 : 0;
  if (span < 180) return { fmt: (v) => String(Math.round(v - t0)), label: "seconds since the run started" };
  if (span < 3 * 3600) return { fmt: (v) => ((v - t0) / 60).toFixed(1), label: "minutes since the run started" };
  return { fmt: (v) => ((v - t0) / 3600).toFixed(2), label: "hours since the run started" };
};

// ------------------------------------------------------------------ data

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  let body;
  try { body = await response.json(); } catch (e) { body = { error: `the server answered ${response.status} without data` }; }
  return body;
}

const key = (source, run) => source + "\u0000" + run;
const query = (source, run) => `source=${encodeURIComponent(source)}&run=${encodeURIComponent(run)}`;

async function refresh() {
  clearTimeout(state.timer);
  let live = false;
  try {
    live = await refreshAll();
  } catch (e) {
    showMessage("the dashboard server did not answer (" + e.message + "); retrying");
  }
  document.getElementById("refresh").textContent =
    `updated ${new Date().toLocaleTimeString()}` + (live ? ", live: refreshing every 2 s" : ", no live run: full history shown");
  state.timer = setTimeout(refresh, live ? LIVE_MS : IDLE_MS);
}

async function refreshAll() {
  // The shown run is asked for beside the list when it is known already (from the address,
  // or the last refresh): the page waits for the slower of the two, not for both in turn.
  const params = new URLSearchParams(location.search);
  const known = state.selected || (params.get("source") !== null ? [params.get("source"), params.get("run")] : null);
  const early = known ? fetchRun(known[0], known[1]) : null;
  const listing = await getJSON("/api/runs");
  if (listing.error) { showMessage(listing.error); return false; }
  state.sources = listing.sources;
  const all = [];
  for (const s of listing.sources) for (const r of s.runs) all.push([s.source, r]);
  if (!state.selected) {
    state.selected = known || (all.length ? [all[0][0], all[0][1].name] : null);
    for (const [s, r] of all) state.checked.add(key(s, r.name));
  }
  renderRuns(listing);
  const problems = listing.sources.filter((s) => s.error).map((s) => `${s.source}: ${s.error}`);
  if (listing.message) problems.unshift(listing.message);
  let live = all.some(([, r]) => r.status === "created" || r.status === "running");
  state.cycle = (state.cycle || 0) + 1;
  if (state.selected) {
    const [source, run] = state.selected;
    const sameRun = known && known[0] === source && known[1] === run;
    const [detail, broker] = await (sameRun ? early : fetchRun(source, run));
    if (detail.error) {
      problems.unshift(detail.error);
      document.getElementById("detail").hidden = true;
    } else {
      state.details[key(source, run)] = detail;
      state.fetched[key(source, run)] = state.cycle;
      renderDetail(detail);
      live = live || detail.run.live;
      renderLive(detail, broker);
    }
  }
  await refreshCompare(all);
  showMessage(problems.join("\n"));
  document.body.setAttribute("data-state", "loaded");
  document.body.setAttribute("data-refreshes", String(Number(document.body.getAttribute("data-refreshes") || 0) + 1));
  return live;
}

async function refreshCompare(all) {
  const wanted = all.filter(([s, r]) => state.checked.has(key(s, r.name)));
  await Promise.all(wanted.map(async ([s, r]) => {
    const k = key(s, r.name);
    const old = state.details[k];
    if (state.fetched[k] === state.cycle) return; // the shown run, fetched a moment ago
    if (old && !old.run.live && old.run.status === r.status) return; // a finished run does not change
    const d = await getJSON(`/api/run?${query(s, r.name)}`);
    if (!d.error) { state.details[k] = d; state.fetched[k] = state.cycle; }
  }));
  const shown = wanted.map(([s, r]) => [s, r, state.details[key(s, r.name)]]).filter((x) => x[2]);
  chart("cmp-loss", shown.map(([s, r, d]) => ({ name: `${s}/${r.name}`, points: d.learner.map((p) => [p.step, p.loss]) })),
    { xLabel: "step", empty: "no learner steps yet" });
  chart("cmp-pass", shown.map(([s, r, d]) => ({
    name: `${s}/${r.name}`,
    bars: d.evals.filter((e) => e.pass_at_1 !== null && e.step !== null).map((e) => [e.step, e.pass_at_1, e.ci_low, e.ci_high]),
    points: d.evals.filter((e) => e.pass_at_1 !== null && e.step !== null).map((e) => [e.step, e.pass_at_1]),
  })), { xLabel: "step", yFmt: pct, empty: "no evaluations yet" });
  chart("cmp-spend", shown.map(([s, r, d]) => ({
    name: `${s}/${r.name}`, points: totalSpend(d).map((p) => [(p[0] - d.run.created_at) / 60, p[1]]),
  })), { xLabel: "minutes", yFmt: (v) => "$" + num(v, 3), empty: "no teacher calls yet" });
}

// One run from the store, and the broker's answer (it waits for pings) in parallel.
function fetchRun(source, run) {
  return Promise.all([getJSON(`/api/run?${query(source, run)}`), getJSON(`/api/live?${query(source, run)}`)]);
}

// The run's cumulative spend over time: the per-provider running totals added up.
function totalSpend(d) {
  const times = new Set();
  for (const pts of Object.values(d.spend.series)) for (const p of pts) times.add(p[0]);
  const sorted = [...times].sort((a, b) => a - b);
  const last = {}, out = [];
  for (const t of sorted) {
    for (const [prov, pts] of Object.entries(d.spend.series)) {
      for (const p of pts) if (p[0] <= t) last[prov] = p[1];
    }
    out.push([t, Object.values(last).reduce((a, b) => a + b, 0)]);
  }
  return out;
}

// ------------------------------------------------------------------ rendering

function renderRuns(listing) {
  const rows = [];
  for (const s of listing.sources) {
    if (s.error) {
      rows.push(el("tr", { class: "error-row" }, el("td"), cell(s.source), el("td", { colSpan: 8 }, s.error)));
      continue;
    }
    for (const r of s.runs) {
      const k = key(s.source, r.name);
      const box = el("input", { type: "checkbox", checked: state.checked.has(k), title: "compare" });
      box.addEventListener("change", () => { box.checked ? state.checked.add(k) : state.checked.delete(k); refresh(); });
      const link = el("a", { href: `?${query(s.source, r.name)}` }, r.name);
      link.addEventListener("click", (ev) => {
        ev.preventDefault();
        state.selected = [s.source, r.name];
        history.replaceState(null, "", `?${query(s.source, r.name)}`);
        refresh();
      });
      const first = r.pass_first, lastE = r.pass_last;
      const passText = first ? `${pct(first.pass_at_1)} → ${pct(lastE.pass_at_1)}` : "-";
      const tr = el("tr", { "data-run": r.name, "data-source": s.source },
        el("td", {}, box), cell(s.source), el("td", {}, link), cell(r.status, "status", "status-" + r.status),
        cell(int(r.step), "step", "num"), cell(usd(r.spent_usd), "spent", "num"), cell(r.cap_usd === null ? "none" : usd(r.cap_usd), "cap", "num"),
        cell(r.reached.length ? "REACHED: " + r.reached.join(", ") : "none", "reached", r.reached.length ? "reached" : ""),
        cell(int(r.trajectories_audited), "audited", "num"), cell(passText, "pass", "num"));
      if (state.selected && state.selected[0] === s.source && state.selected[1] === r.name) tr.classList.add("selected");
      rows.push(tr);
    }
  }
  fill(document.querySelector("#runs-table tbody"), rows);
}

function renderDetail(d) {
  document.getElementById("detail").hidden = false;
  const run = d.run;
  document.getElementById("run-title").textContent = `${d.source} / ${run.name}`;
  const status = run.live ? `${run.status} (live)` : run.status;
  document.getElementById("run-line").textContent =
    `${status}; ${run.method || "method ?"} with teacher ${run.teacher || "?"}; step ${run.step}` +
    (run.max_steps ? ` of ${run.max_steps}` : "") + `, policy v${run.policy_version}; ` +
    `last activity ${ago(run.last_activity_at, run.now)}`;
  renderBudgets(d);
  renderSpend(d);
  renderProviders(d);
  renderLearner(d);
  renderEvals(d);
}

function renderBudgets(d) {
  fill(document.querySelector("#budgets tbody"), d.budgets.map((b) => {
    const used = b.cap_usd ? (b.spent_usd + b.reserved_usd) / b.cap_usd : 0;
    const useCell = el("td", {}, b.cap_usd === null ? "no cap" : bar(b.spent_usd / b.cap_usd, b.reserved_usd / b.cap_usd, b.reached),
      b.reached ? el("strong", { class: "reached", "data-field": "reached" }, " REACHED") : el("span", { class: "muted" }, " " + pct(used)));
    return el("tr", { "data-budget": b.scope, class: b.reached ? "reached-row" : "" },
      cell(b.scope === "run" ? "run total" : `teacher ${b.scope}`), cell(usd(b.spent_usd), "spent", "num"),
      cell(usd(b.reserved_usd), "reserved", "num"), cell(b.cap_usd === null ? "none" : usd(b.cap_usd), "cap", "num"),
      cell(usd(b.headroom_usd), "headroom", "num"), useCell);
  }));
  const stop = document.getElementById("budget-stop");
  stop.hidden = !d.budget_stop;
  stop.textContent = d.budget_stop ? `audits stopped: ${d.budget_stop}` : "";
}

function renderSpend(d) {
  const t0 = d.run.created_at;
  const series = Object.entries(d.spend.series).map(([p, pts]) => ({ name: `teacher ${p}`, points: pts }));
  if (series.length > 1) series.push({ name: "run total", points: totalSpend(d), color: "#333" });
  const plan = d.spend.plan;
  if (plan) {
    series.push({ name: "forecast (plan × audit bundles)", dash: true, color: "#888",
      points: d.spend.bundle_series.map(([t, n]) => [t, n * plan.per_trajectory_usd]) });
  }
  const caps = d.budgets.filter((b) => b.cap_usd !== null).map((b) => ({ y: b.cap_usd, label: `cap ${b.scope} ${usd(b.cap_usd)}`, color: b.reached ? "#c00" : "#999" }));
  const ymax = Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1])));
  // Caps far above the spend would flatten the curve: draw them only when within 5x of it.
  const axis = sinceStart(t0, d);
  chart("spend-chart", series, { xFmt: axis.fmt, xLabel: axis.label, yFmt: (v) => "$" + num(v, 3),
    hlines: caps.filter((c) => c.y <= 5 * Math.max(ymax, 1e-9)), empty: "no teacher calls yet" });
  const rows = [
    ["teacher spend (ledger)", usd(d.spend.total_usd), "total"],
    ["audited trajectories", int(d.counts.trajectories_audited), "audited"],
    ["cost per audited trajectory", usd(d.spend.cost_per_trajectory_usd), "per-trajectory"],
  ];
  if (plan) {
    rows.push(["plan: per trajectory", usd(plan.per_trajectory_usd), "plan-per-trajectory"]);
    const ratio = d.spend.cost_per_trajectory_usd !== null && plan.per_trajectory_usd ? d.spend.cost_per_trajectory_usd / plan.per_trajectory_usd : null;
    rows.push(["actual / plan per trajectory", ratio === null ? "-" : ratio.toFixed(2), "ratio"]);
    rows.push([`plan: whole run (${plan.trajectories} trajectories)`, usd(plan.run_usd), "plan-run"]);
  } else {
    rows.push(["plan", "none saved (`omniopd plan --config X` before the run)", "plan-run"]);
  }
  fill(document.querySelector("#forecast tbody"), rows.map(([label, value, field]) => el("tr", {}, cell(label), cell(value, field, "num"))));
}

function limitText(used, limit) {
  return limit ? `${int(used)} / ${int(limit)}` : `${int(used)} / none`;
}

function renderProviders(d) {
  fill(document.querySelector("#providers tbody"), d.providers.map((p) => {
    const lim = p.limits || {};
    const tokLimit = lim.tokens_per_min || lim.input_tokens_per_min;
    return el("tr", { "data-provider": p.provider },
      cell(`${p.provider} (${p.model})`), cell(int(p.calls), "calls", "num"), cell(int(p.ok), "ok", "num"),
      cell(int(p.errors), "errors", "num"), cell(int(p.unknown), "unknown", "num"), cell(int(p.in_flight), "in-flight", "num"),
      cell(int(p.rate_limited), "rate-limited", p.rate_limited ? "num warn" : "num"),
      cell(limitText(p.last_minute.calls, lim.requests_per_min), "calls-min", "num"),
      cell(limitText(p.last_minute.tokens, tokLimit), "tokens-min", "num"),
      cell(p.mean_latency_ms === null ? "-" : `${p.mean_latency_ms.toFixed(0)} ms`, "latency", "num"));
  }));
  const t0 = d.run.created_at;
  const series = [];
  for (const [prov, pts] of Object.entries(d.provider_use)) {
    series.push({ name: `${prov} calls/min`, points: pts.map((p) => [p[0], p[1]]) });
    series.push({ name: `${prov} 429s`, points: pts.map((p) => [p[0], p[2]]), color: "#c00", dash: true });
  }
  const limits = d.providers.filter((p) => p.limits && p.limits.requests_per_min).map((p) => p.limits.requests_per_min);
  const peak = Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1])));
  const axis = sinceStart(t0, d);
  chart("use-chart", series, { xFmt: axis.fmt, xLabel: axis.label, empty: "no teacher calls yet",
    hlines: limits.filter((l) => l <= 3 * Math.max(peak, 1)).map((l) => ({ y: l, label: `limit ${l}/min` })) });
  fill(document.querySelector("#errors tbody"), d.errors.length ? d.errors.map((e) => el("tr", {},
    cell(e.provider), cell(e.http_status === null ? "-" : e.http_status), cell(e.error), cell(int(e.count), "count", "num")))
    : [el("tr", {}, el("td", { colSpan: 4, class: "muted" }, "no failed attempts"))]);
}

function renderLive(d, broker) {
  const note = document.getElementById("broker-note");
  const pinged = new Set((broker && broker.pinged) || []);
  if (broker.error) {
    note.textContent = `broker: ${broker.error}`;
    fill(document.querySelector("#queue-table tbody"), []);
  } else {
    note.textContent = broker.in_flight === null ? "messages delivered and not yet acknowledged: not reported by RabbitMQ (see its management UI)"
      : `${broker.in_flight} message(s) delivered to workers and not yet acknowledged`;
    fill(document.querySelector("#queue-table tbody"), Object.entries(broker.queues).map(([q, n]) =>
      el("tr", { "data-queue": q }, cell(q), cell(int(n), "depth", "num"))));
  }
  fill(document.querySelector("#workers tbody"), d.workers.length ? d.workers.map((w) => {
    const answered = w.role === "rollout" ? pinged.has(w.name) : null;
    const pingText = broker.error ? "no broker" : w.role === "rollout" ? (answered ? "yes" : "no (busy or gone)") : "-";
    const done = w.role === "audit" ? `${w.done} calls, ${w.in_flight} in flight` : w.role === "learner" ? `${w.done} steps` : `${w.done} batches`;
    return el("tr", { "data-worker": w.name }, cell(w.role), cell(w.role === "audit" ? `audits.${w.name} (queue)` : w.name),
      cell(ago(w.last_at, d.run.now), "last"), cell(done, "done", "num"), cell(pingText, "ping"));
  }) : [el("tr", {}, el("td", { colSpan: 5, class: "muted" }, "no work recorded yet"))]);
  const others = [...pinged].filter((n) => !d.workers.some((w) => w.name === n));
  for (const n of others) {
    document.querySelector("#workers tbody").append(el("tr", { "data-worker": n }, cell("worker"), cell(n),
      cell("nothing recorded yet"), cell("-"), cell("yes", "ping")));
  }
  const lim = document.querySelector("#limiters tbody");
  const rows = [];
  for (const l of (broker.limiters || [])) {
    if (l.error) { rows.push(el("tr", {}, cell(l.teacher), el("td", { colSpan: 4 }, l.error))); continue; }
    if (!l.buckets.length) { rows.push(el("tr", {}, cell(l.teacher), el("td", { colSpan: 4, class: "muted" }, "no rate limits configured"))); continue; }
    for (const b of l.buckets) {
      rows.push(el("tr", { "data-limiter": `${l.teacher}:${b.dim}` }, cell(l.teacher), cell(b.dim), cell(int(b.per_min), "limit", "num"),
        cell(`${int(b.level)} of ${int(b.depth)}`, "level", "num"), el("td", {}, bar(Math.max(0, b.level) / b.depth, 0, b.level <= 0))));
    }
  }
  fill(lim, rows);
  const cool = (broker.limiters || []).filter((l) => l.cooldown_s > 0).map((l) => `${l.teacher}: paused ${l.cooldown_s.toFixed(1)} s after a 429`);
  document.getElementById("limiter-note").textContent = broker.error ? "the shared limiter's buckets live in the run's broker, which cannot be read now" :
    (cool.join("; ") || "no cool-down in progress (a 429 pauses every worker of a teacher together)");
  const p = d.policy;
  document.getElementById("lag-line").textContent = p.lag_now === null
    ? `policy v${p.latest_version}; no trajectory waiting for the learner`
    : `policy lag now: ${p.lag_now} version(s) (newest v${p.latest_version}, oldest waiting trajectory v${p.waiting_oldest_version}; max allowed ${p.max_policy_lag ?? "?"})`;
  chart("lag-chart", [
    { name: "max lag of consumed bundles", points: d.learner.map((x) => [x.step, x.max_lag]) },
    { name: "mean lag", points: d.learner.map((x) => [x.step, x.mean_lag]), dash: true },
  ], { xLabel: "step", hlines: p.max_policy_lag !== null ? [{ y: p.max_policy_lag, label: "max_policy_lag" }] : [], empty: "no steps yet" });
}

function renderLearner(d) {
  const L = d.learner;
  chart("loss-chart", [
    { name: "loss (Eq. 8)", points: L.map((p) => [p.step, p.loss]) },
    { name: "chunk term", points: L.map((p) => [p.step, p.chunk_loss]), dash: true },
  ], { title: "loss", xLabel: "step", empty: "no learner steps yet" });
  chart("kl-chart", [{ name: "KL(ref || student) / token", points: L.map((p) => [p.step, p.kl]) }],
    { title: "KL anchor", xLabel: "step", empty: "no KL recorded (beta = 0 or no steps yet)" });
  chart("proxy-chart", [{ name: "proxy mean (min-max band)", points: L.map((p) => [p.step, p.proxy_mean]),
    band: L.filter((p) => p.proxy_min !== null).map((p) => [p.step, p.proxy_min, p.proxy_max]) }],
  { title: "Bayesian proxy (Eq. 4-5)", xLabel: "step", empty: "no proxy statistics (no audited chunks trained yet)" });
}

function renderEvals(d) {
  const by = {};
  for (const e of d.evals) (by[e.benchmark] = by[e.benchmark] || []).push(e);
  chart("pass-chart", Object.entries(by).map(([b, es]) => {
    const done = es.filter((e) => e.pass_at_1 !== null && e.step !== null);
    return { name: b, points: done.map((e) => [e.step, e.pass_at_1]), bars: done.map((e) => [e.step, e.pass_at_1, e.ci_low, e.ci_high]) };
  }), { xLabel: "step", yFmt: pct, empty: "no evaluations of this run yet" });
  fill(document.querySelector("#eval-table tbody"), d.evals.map((e) => el("tr", { "data-eval": `${e.benchmark}@${e.step}` },
    cell(e.benchmark), cell(int(e.step), "step", "num"), cell(e.status), cell(pct(e.pass_at_1), "pass", "num"),
    cell(e.ci_low === null ? "-" : `${pct(e.ci_low)} – ${pct(e.ci_high)}`, "interval", "num"),
    cell(`${e.graded} samples`, "graded", "num"))));
}

document.addEventListener("DOMContentLoaded", refresh);
